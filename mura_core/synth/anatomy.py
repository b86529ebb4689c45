"""Procedurally rendered radiographs of the seven MURA upper-extremity study types.

Why: the system is trained, tested and demonstrated without the licensed MURA images, so the
synthetic archive needs pictures that look like the named study (a hand is told from a
shoulder) and abnormal views whose sign is learnable but not trivial. One arm model (shoulder
girdle to fingertips, in cm) is posed per body part (a field of view) and per view index
(foreshortening, rotation, elbow flexion). Bones are projected hollow cylinders and ellipsoids
(see `_shapes`), so cortex comes out bright and the medullary canal darker by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mura_core.synth import _shapes as sh
from mura_core.synth._shapes import Ellipse, Fracture, Line, Metal, Perio, Tube

BODY_PARTS: tuple[str, ...] = (
    "XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST",
)  # fmt: skip
SIGNS: tuple[str, ...] = ("fracture", "periosteal", "hardware")

# carpal bones (dx, dy, a, b, degrees), cm from the radius' articular surface
_CARPALS = (
    (-1.75, 1.0, 1.2, 0.62, -55), (-0.15, 0.8, 0.78, 0.72, 0), (1.3, 1.15, 0.66, 0.6, 20),
    (1.55, 1.45, 0.45, 0.45, 0), (-2.35, 2.65, 0.68, 0.72, -20), (-1.25, 2.7, 0.52, 0.62, 0),
    (-0.05, 2.45, 0.68, 1.0, 0), (1.3, 2.55, 0.72, 0.9, 10),
)  # fmt: skip
# rays thumb..little: base x, base y, degrees, bone lengths (metacarpal first), shaft radius
_RAYS = (
    (-2.6, 3.4, -40, (4.4, 3.0, 2.3), 0.45), (-1.3, 3.55, -7, (6.6, 4.0, 2.3, 1.7), 0.42),
    (0.0, 3.55, 0, (6.3, 4.4, 2.7, 1.8), 0.43), (1.2, 3.55, 6, (5.8, 4.1, 2.5, 1.75), 0.37),
    (2.3, 3.55, 13, (5.3, 3.3, 1.8, 1.6), 0.35),
)  # fmt: skip


@dataclass
class _Scene:
    """Everything to draw, first in cm (the arm model), then posed into frame units."""

    bones: list = field(default_factory=list)
    ells: list = field(default_factory=list)
    plates: list = field(default_factory=list)  # (verts, density, rim width, bone)
    soft: list = field(default_factory=list)
    soft_ells: list = field(default_factory=list)
    folds: list = field(default_factory=list)
    metal: list = field(default_factory=list)
    marks: dict = field(default_factory=dict)


def _ell(c, a, b, deg, **kw) -> Ellipse:
    ca, sa = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return Ellipse((float(c[0]), float(c[1])), (a * ca, -b * sa, a * sa, b * ca), **kw)


def _ray(sc: _Scene, rng, p, deg: float, bones, digit: int, fan: float) -> sh.Point:
    """Bones laid end to end along one ray of the hand, with joint gaps; returns the tip."""
    for i, (length, r, f0, f1, gap) in enumerate(bones):
        d, r0, r1 = sh.direction(deg), r * (1 + f0), r * (1 + f1)
        pts = [sh.at(p, d, r0), sh.at(p, d, length - r1)]
        sc.bones.append(Tube(pts, r, f0, f1, 1.1, 1.0, grp=1, digit=digit, caps=(1.8, 1.0)))
        p = sh.at(p, d, length + gap)
        deg += float(rng.normal(0.0, 2.0)) + (fan if i == 0 else 0.0)
    return p


def _arm(rng: np.random.Generator) -> _Scene:
    """The whole arm in cm (x: lateral -> medial, y: shoulder -> fingertips), jittered."""
    sc, th = _Scene(), float(rng.uniform(0.85, 1.15))

    def j() -> float:
        return float(rng.uniform(0.93, 1.07))

    B, E = sc.bones.append, sc.ells.append
    # shoulder girdle and chest wall
    E(_ell((0.9, 0.9), 2.3 * th, 2.3 * th, 0, dens=0.8, k=0.93, bone="hum"))
    E(_ell((-1.3, 1.0), 1.0 * th, 1.5 * th, 15, dens=0.6, k=0.9, bone="hum"))
    E(_ell((4.0, 1.0), 0.7, 2.0, 8, dens=0.9, k=0.7, bone="scap"))
    E(_ell((3.3, -0.9), 0.75, 0.85, 0, dens=0.9, k=0.7, bone="scap"))
    sc.plates.append(([(3.6, -1.0), (11.0, -2.6), (9.6, 12.5), (4.6, 3.2)], 0.3, 0.3, "scap"))
    spine = [(11.0, -1.0), (6.0, -2.4), (2.8, -2.9), (-1.0, -2.7)]
    B(Tube(spine, 0.5 * th, 0.0, 0.5, dens=0.8, bone="scap", long=False))
    clav = [(-0.8, -3.6), (3.0, -4.3), (8.0, -3.9), (12.5, -4.8), (16.0, -6.2)]
    B(Tube(clav, 0.6 * th, 0.6, 0.5, 3.0, 3.0))
    y = float(rng.uniform(-2.0, 0.0))
    for i in range(8):  # ribs: back, arching down the lateral chest wall, front (to cartilage)
        arc = [(3.5 + 18 * k, y + 7.0 * (1 - k) ** 3 - 1.5 * k) for k in np.linspace(1, 0, 8)]
        arc += [(3.0, y + 8.6), (3.8, y + 10.3), (6.5, y + 11.8), (10.0, y + 13.0)]
        B(Tube(arc, 0.55, dens=0.18, cort=0.3, bone=f"rib{i}", long=False))
        y += float(rng.uniform(2.3, 3.0))
    # humerus and elbow
    lh = 27.0 * j()
    B(Tube([(0.0, 2.0), (0.1, lh)], 1.0 * th, 0.9, 1.1, 4.0, 3.5, bone="hum", caps=(1.0, 2.5)))
    for x, dy, a, b, deg in ((-1.2, 0.7, 0.95, 0.85, 0), (0.8, 0.75, 1.15, 0.85, 0)):  # condyles
        E(_ell((x * th, lh + dy), a * th, b * th, deg, dens=0.55, k=0.93, bone="hum"))
    for x, dy, a, b, deg in ((2.3, -0.3, 0.85, 0.6, -10), (-2.1, -0.1, 0.6, 0.6, 0)):
        E(_ell((x * th, lh + dy), a, b, deg, dens=0.7, k=0.85, bone="hum"))  # epicondyles
    E(_ell((0.2, lh - 0.6), 1.0 * th, 0.9, 0, dens=-0.45, bone="hum"))  # olecranon fossa
    yj = lh + 0.5 + 1.0 * th + 0.3
    lr, rr, ru = 23.0 * j(), 0.62 * th, 0.5 * th
    yr = yj + lr
    radius = [(-1.7, yj + rr * 1.6), (-2.4, yj + 0.45 * lr), (-2.1, yr)]
    B(Tube(radius, rr, 0.6, 1.4, 1.3, 3.5, bone="rad", grp=1, caps=(2.0, 2.2)))
    ulna = [(1.3, lh - 0.8), (1.6, yj + 0.4 * lr), (1.5, yr - 0.2)]
    B(Tube(ulna, ru, 0.9, 0.5, 5.0, 1.5, dens=0.8, bone="uln", grp=1))
    E(_ell((-3.0 * th, yr + 0.6), 0.5, 0.7, -20, dens=0.8, bone="rad", grp=1))
    E(_ell((1.5 + 0.55 * th, yr + 0.8), 0.25, 0.5, 0, dens=0.8, bone="uln", grp=1))
    # carpus, then the rays: metacarpal and phalanges (length, radius, flare0, flare1, gap)
    yw, cs = yr + rr * 2.4 / 2.2 + 0.2, math.sqrt(th)
    for dx, dy, a, b, deg in _CARPALS:
        c, deg = (dx * cs, yw + dy * cs), deg + rng.normal(0, 5)
        E(_ell(c, 1.08 * a * cs * j(), 1.08 * b * cs * j(), deg, dens=0.75, k=0.82, grp=1))
    spread, tips, rays = float(rng.uniform(0.8, 1.5)), [], []
    for digit, (x, dy, deg, lens, r) in enumerate(_RAYS, 1):
        deg = deg * (spread if digit > 1 else 1.0) + float(rng.normal(0.0, 2.0))
        shape = [(0.45, 0.55, 0.25)] + [(0.65, 0.35, 0.18)] * (len(lens) - 2) + [(0.5, 0.25, 0)]
        radii = [r * th, 0.8 * r * th] + [0.68 * r * th, 0.56 * r * th][4 - len(lens) :]
        bones = [(n * j(), rad, *f) for n, rad, f in zip(lens, radii, shape, strict=True)]
        tip = _ray(sc, rng, (x * cs, yw + dy * cs), deg, bones, digit, 0.5 * deg or -5.0)
        head = sc.bones[-len(lens)].pts[1]
        sc.soft.append(Tube([head, tip], 0.9 * r / 0.42, dens=0.8, digit=digit))
        tips.append(tip)
        rays.append((head, deg))
    # soft tissue: arm, forearm, then chest, neck, shoulder, elbow, wrist, palm, thenar
    sc.soft.append(Tube([(0.0, 3.0), (0.0, lh + 0.5)], 4.5, dens=1.0, r_end=3.8))
    sc.soft.append(Tube([(-0.3, yj), (-0.3, yw)], 3.8, dens=1.0, r_end=2.6, grp=1))
    sc.soft_ells += [
        _ell((16.0, 9.0), 13.0, 20.0, 0, dens=0.5), _ell((9.0, -6.0), 9.0, 3.5, 8, dens=0.85),
        _ell((0.5, 2.5), 5.2, 7.5, 0, dens=1.0), _ell((0.0, lh + 1.0), 4.3, 4.3, 0, dens=1.0),
        _ell((-0.1, yw + 1.8), 3.0, 2.6, 0, dens=0.95, grp=1),
        _ell((0.2, yw + 7.0), 4.3, 4.8, 0, dens=0.9, flat=True, grp=1),
        _ell((-2.6, yw + 4.8), 1.8, 3.0, -35, dens=0.9, flat=True, grp=1),
    ]  # fmt: skip
    sc.marks = {"lh": lh, "yj": yj, "yr": yr, "yw": yw, "tips": tips, "rays": rays}
    return sc


def _fov(part: str, sc: _Scene, rng: np.random.Generator, view: int):
    """Field of view: box corners (cm) and the rotation (deg) that puts it upright."""
    m = sc.marks
    lh, yj, yr, yw, tip = m["lh"], m["yj"], m["yr"], m["yw"], max(t[1] for t in m["tips"])
    box = {
        "XR_SHOULDER": (-5.5, 11.0, -7.0, 8.0, 0),
        "XR_HUMERUS": (-4.0, 5.0, -3.0, lh + 3.0, 0),
        "XR_ELBOW": (-4.5, 4.5, lh - 7.0, yj + 7.0, 0),
        "XR_FOREARM": (-4.0, 4.0, lh - 1.0, yr + 3.0, 180 * (rng.random() < 0.25)),
        "XR_WRIST": (-4.5, 4.5, yr - 5.0, yw + 7.0, 180),
        "XR_HAND": (-7.0, 5.0, yr - 1.0, tip + 1.0, 180),
    }.get(part)
    if box is not None:
        x0, x1, y0, y1, rot = box
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], rot
    digit = int(rng.choice(5, p=[0.15, 0.25, 0.22, 0.2, 0.18])) + 1
    (head, deg), tip = m["rays"][digit - 1], m["tips"][digit - 1]
    d, n = sh.direction(deg), sh.direction(deg + 90)
    a, b = sh.at(head, d, -2.0), sh.at(tip, d, 0.8)
    corners = [sh.at(a, n, -1.8), sh.at(b, n, -1.8), sh.at(b, n, 1.8), sh.at(a, n, 1.8)]
    if view % 4 == 1:  # a lateral finger film: the other fingers are flexed out of the way
        sc.bones = [t for t in sc.bones if t.digit in (0, digit)]
        sc.soft = [t for t in sc.soft if t.digit in (0, digit)]
    return corners, 180 + deg


def _pose(sc: _Scene, part: str, view: int, rng: np.random.Generator, g: sh.Grid) -> None:
    """Project the cm model into frame units: view foreshortening, flexion, pose jitter, fit."""
    corners, base = _fov(part, sc, rng, view)
    v = view % 4
    cx = (1.0, rng.uniform(0.22, 0.38), rng.uniform(0.6, 0.75), rng.uniform(0.8, 0.9))[v]
    flex = (rng.uniform(0, 10), rng.uniform(70, 100), rng.uniform(15, 35), rng.uniform(0, 15))[v]
    flex *= part == "XR_ELBOW"
    rot = rng.normal(0.0, 6.0) + (v == 3) * rng.uniform(-15, 15)
    c0, pre, fl = np.mean(np.array(corners), axis=0), sh.rmat(base), sh.rmat(flex)
    upright = (pre @ (np.array(corners) - c0).T).T
    tall = np.ptp(upright[:, 1]) > 1.1 * np.ptp(upright[:, 0])
    if tall and g.w > 1.15 * g.h:  # a landscape film of a long part: turn the limb across
        rot += 90 if rng.random() < 0.5 else -90
    mirror = -1.0 if rng.random() < 0.5 else 1.0  # left or right arm
    comp = np.diag([cx, 1.0]) @ pre
    pivot = comp @ (np.array([0.0, sc.marks["yj"] - 0.3]) - c0)
    post = sh.rmat(rot) @ np.diag([mirror, 1.0])

    def point(p, grp, scale=1.0, shift=(0.0, 0.0)):
        q = comp @ (np.array(p) - c0)
        q = scale * (post @ (fl @ (q - pivot) + pivot if grp else q))
        return float(q[0] + shift[0]), float(q[1] + shift[1])

    pts = np.array([point(p, flex and p[1] > sc.marks["yj"]) for p in corners])
    ext = pts.max(axis=0) - pts.min(axis=0)
    scale = float(min(2 * g.hw / ext[0], 2 * g.hh / ext[1]) * rng.uniform(0.88, 1.12))
    mid = pts.mean(axis=0) * scale
    shift = (-mid[0] + rng.uniform(-0.04, 0.04), -mid[1] + rng.uniform(-0.04, 0.04))
    for t in sc.bones + sc.soft:
        # the big flares (distal humerus, radius, olecranon) are wide, not deep
        t.f0, t.f1 = (f * (0.4 + 0.6 * cx) if f >= 1 else f for f in (t.f0, t.f1))
        t.pts = [point(p, t.grp, scale, shift) for p in t.pts]
        t.r *= scale
        t.r_end = t.r_end * scale if t.r_end is not None else None
    for e in sc.ells + sc.soft_ells:
        lin = scale * post @ (fl if e.grp else np.eye(2)) @ (comp if e.flat else pre)
        e.m = tuple(float(x) for x in (lin @ np.array(e.m).reshape(2, 2)).ravel())
        e.c = point(e.c, e.grp, scale, shift)
    sc.plates = [
        ([point(p, 0, scale, shift) for p in vs], d, w * scale, b) for vs, d, w, b in sc.plates
    ]


# --- signs and normal variants ---------------------------------------------------------------


def _pick(sc: _Scene, g: sh.Grid, rng: np.random.Generator, lo=0.1, hi=0.9):
    """A random long bone (thicker ones likelier) and a point on its shaft inside the image."""
    grid = np.linspace(lo, hi, 9)
    cands = [
        t for t in sc.bones if t.long and any(g.inside(sh.along(t.pts, s)[0], 0.06) for s in grid)
    ]
    cands = cands or [t for t in sc.bones if t.long]
    weights = np.array([t.r for t in cands]) / sum(t.r for t in cands)
    for _ in range(60):
        t, s = cands[int(rng.choice(len(cands), p=weights))], float(rng.uniform(lo, hi))
        p, tan = sh.along(t.pts, s)
        if g.inside(p, 0.06):
            break
    return t, s, p, tan


def _line(c, n, width, depth, rng, a0=-sh.FAR, a1=sh.FAR, r=0.0) -> Line:
    """A lucent line wiggling on the length scale `r` (0: straight)."""
    amp, freq = rng.uniform(0.03, 0.1) * r, 2 * math.pi / (rng.uniform(0.5, 1.3) * max(r, 1e-6))
    return Line(c, n, width, depth, amp, freq, rng.uniform(0, 2 * math.pi), a0, a1)


def _fracture(sc: _Scene, g: sh.Grid, rng: np.random.Generator, strength: float = 1.0) -> None:
    """A thin oblique lucent line across a shaft; often a step-off and/or angulation."""
    t, _, p, tan = _pick(sc, g, rng, 0.12, 0.88)
    n = sh.rot(tan, rng.uniform(-0.9, 0.9))
    width = max(rng.uniform(0.0018, 0.0038), 0.6 * g.px) * strength
    shift, ang = (0.0, 0.0), 0.0
    if rng.random() < (0.55 if t.r > 0.03 else 0.85):  # thin bones: mostly displaced
        k = rng.uniform(0.1, 0.45) * t.r * float(rng.choice([-1, 1]))
        shift = (-tan[1] * k + tan[0] * 0.1 * k, tan[0] * k + tan[1] * 0.1 * k)
    if rng.random() < 0.35:
        ang = math.radians(rng.uniform(3, 9) * float(rng.choice([-1, 1])))
    a0 = rng.uniform(-0.3, 0.5) * t.r if rng.random() < 0.3 else -sh.FAR  # incomplete
    depth = min(0.95, rng.uniform(0.45, 0.85) * strength**0.5)
    line = _line(p, n, width, depth, rng, a0, sh.FAR, t.r)
    t.feats.append(Fracture(line, (shift[0] * strength, shift[1] * strength), ang * strength))


def _periosteal(sc: _Scene, g: sh.Grid, rng: np.random.Generator, strength: float = 1.0) -> None:
    """A faint solid, lamellated or spiculated band just outside a stretch of cortex."""
    t, s, _, _ = _pick(sc, g, rng, 0.2, 0.8)
    total = sh.length(t.pts)
    half = max(rng.uniform(0.15, 0.3) * total, rng.uniform(0.04, 0.08))
    u0, u1 = max(s * total - half, 0.1 * total), min(s * total + half, 0.9 * total)
    side = int(rng.choice([-1, 0, 1], p=[0.35, 0.3, 0.35]))
    lam = float(rng.choice([-1.5, 0, 1.5, 2]))
    thick = max(rng.uniform(0.35, 0.8) * t.r, rng.uniform(0.008, 0.014))  # >= ~2 px at 224
    density = min(1.0, rng.uniform(0.45, 0.75) * strength**0.5)
    t.feats.append(Perio(u0, u1, thick * strength, side, density, lam))


def _hardware(sc: _Scene, g: sh.Grid, rng: np.random.Generator, strength: float = 1.0) -> None:
    """A plate with screws, loose screws, K-wires or an intramedullary nail."""
    t, _, p, tan = _pick(sc, g, rng, 0.2, 0.8)
    nrm, r, put = (-tan[1], tan[0]), t.r, sc.metal.append
    hw = max(0.15 * r, 1.2 * g.px)
    kind = rng.choice(["plate", "screws", "wires", "nail"], p=[0.4, 0.25, 0.2, 0.15])

    def screw(c, u, half, head=True):
        put(Metal("box", c, half, u, hw, 2.4 * hw, 0.35 * hw))
        if head:
            put(Metal("box", sh.at(c, u, -half), 1.8 * hw, (-u[1], u[0]), 0.9 * hw))

    if kind == "plate":
        n, gap, side = (
            int(rng.integers(3, 7)),
            rng.uniform(1.5, 2.2) * r,
            float(rng.choice([-1, 1])),
        )
        centres = [sh.at(p, tan, (i - (n - 1) / 2) * gap) for i in range(n)]
        half_len = (n - 1) / 2 * gap + 0.9 * r
        if rng.random() < 0.6:  # plate seen edge-on, screws crossing the shaft
            pt = max(0.14 * r, 1.2 * g.px)
            off = r * 1.05 + pt
            put(Metal("box", sh.at(p, nrm, off * side), half_len, tan, pt))
            for c in centres:  # from the plate across the shaft
                u = sh.rot((-nrm[0] * side, -nrm[1] * side), rng.normal(0, 0.12))
                half = r * rng.uniform(1.05, 1.25)
                screw(sh.at(c, u, half - off), u, half, head=False)
        else:  # plate seen en face over the bone, screw heads in its holes
            put(Metal("box", p, half_len, tan, rng.uniform(0.55, 0.75) * r))
            for c in centres:
                put(Metal("hole", c, 0.32 * r))
                put(Metal("disk", c, 0.24 * r))
    elif kind in ("screws", "wires"):
        wires = kind == "wires"
        for _ in range(int(rng.integers(1, 4 if wires else 3))):
            u = sh.rot(nrm, rng.uniform(-0.9, 0.9) * (1.0 if wires else 0.6))
            c = sh.at(p, tan, rng.uniform(-1, 1) * r)
            if wires:
                put(Metal("box", c, r * rng.uniform(2.0, 3.5), u, max(0.06 * r, 0.9 * g.px)))
            else:
                screw(c, u, r * rng.uniform(1.1, 1.4))
    else:  # intramedullary nail with locking screws
        s0, s1 = rng.uniform(0.04, 0.15), rng.uniform(0.8, 0.95)
        put(Metal("rod", [sh.along(t.pts, x)[0] for x in np.linspace(s0, s1, 8)], 0.38 * r))
        for x in (s0 + 0.05, s1 - 0.05):
            q, tq = sh.along(t.pts, x)
            screw(q, sh.rot((-tq[1], tq[0]), rng.normal(0, 0.1)), 1.2 * r)


def _variants(sc: _Scene, g: sh.Grid, rng: np.random.Generator) -> None:
    """Normal findings and distractors, drawn regardless of the label."""
    if rng.random() < 0.4:  # nutrient canal: an oblique lucency through one cortex
        t, _, p, tan = _pick(sc, g, rng)
        side = float(rng.choice([-1.0, 1.0]))
        c = sh.at(p, (-tan[1], tan[0]), side * 0.85 * t.r)
        n, depth = sh.rot(tan, side * rng.uniform(0.6, 1.0)), rng.uniform(0.3, 0.6)
        t.feats.append(_line(c, n, max(0.0018, 0.5 * g.px), depth, rng, -0.4 * t.r, 0.4 * t.r))
    if rng.random() < 0.2:  # a child: open growth plates near the ends of the long bones
        for t in (t for t in sc.bones if t.long):
            total = sh.length(t.pts)
            for u, f in ((0.8 * t.r * (1 + t.f0), t.f0), (total - 0.8 * t.r * (1 + t.f1), t.f1)):
                if f >= 0.3 and total > 3 * t.r:
                    c, tan = sh.along(t.pts, u / total)
                    width, depth = max(0.003, 0.8 * g.px), rng.uniform(0.3, 0.55)
                    t.feats.append(_line(c, tan, width, depth, rng, r=t.r))
    for _ in range(int(rng.integers(0, 3))):  # soft-tissue folds and skin creases
        c = (rng.uniform(-g.hw, g.hw), rng.uniform(-g.hh, g.hh))
        d = sh.rot((1.0, 0.0), rng.uniform(0, 2 * math.pi))
        ln, bend = rng.uniform(0.15, 0.5), rng.uniform(-0.08, 0.08)
        ks = (-1.0, -0.5, 0.0, 0.5, 1.0)  # a gently bent line
        pts = [sh.at(sh.at(c, d, ln * k), (-d[1], d[0]), bend * (1 - k * k)) for k in ks]
        sc.folds.append((pts, rng.uniform(0.002, 0.006), rng.uniform(-0.12, 0.12)))


def _marker(sc: _Scene, g: sh.Grid, rng: np.random.Generator) -> None:
    """A lead 'L' or 'R' in a random corner (films carry one; unrelated to the label)."""
    if rng.random() < 0.3:
        return
    hgt = rng.uniform(0.04, 0.07)
    wid, st = 0.7 * hgt, 0.1 * hgt
    sx, sy = (float(v) for v in rng.choice([-1, 1], size=2))
    x0 = sx * (g.hw - rng.uniform(0.03, 0.08)) - (wid if sx > 0 else 0)
    y0 = sy * (g.hh - rng.uniform(0.03, 0.08)) - (hgt if sy > 0 else 0)
    h, v = (1.0, 0.0), (0.0, 1.0)
    strokes = [((x0 + st, y0 + hgt / 2), v, hgt / 2)]
    if rng.random() < 0.5:  # L
        strokes.append(((x0 + wid / 2, y0 + hgt - st), h, wid / 2))
    else:  # R: stem, bowl (top, middle, right) and leg
        leg = sh.rot(h, math.atan2(hgt / 2, wid * 0.6))
        strokes += [
            ((x0 + wid * 0.4, y0 + st), h, wid * 0.4),
            ((x0 + wid * 0.4, y0 + hgt / 2), h, wid * 0.4),
            ((x0 + wid - st, y0 + hgt / 4), v, hgt / 4),
            ((x0 + wid * 0.7, y0 + hgt * 0.75), leg, math.hypot(hgt / 4, wid * 0.3)),
        ]
    val = rng.uniform(0.5, 1.0)
    sc.metal += [Metal("box", c, half, u, st, val=val) for c, u, half in strokes]


# --- rendering -------------------------------------------------------------------------------


def _film(g: sh.Grid, rng: np.random.Generator) -> dict:
    """Every exposure / detector random draw, taken before any sign is painted so that the
    same generator state renders the same film with or without a sign (it differs locally)."""
    shape = (g.h, g.w)
    return {
        "tex": ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.5) * 5.3,
        "amp": rng.uniform(0.06, 0.18),  # trabecular texture amplitude (tex has unit std)
        "gains": (rng.uniform(0.22, 0.36), rng.uniform(0.8, 1.15)),  # soft tissue, bone
        "heel": tuple(float(v) for v in rng.uniform(-0.12, 0.12, size=2)),
        "blur": rng.uniform(0.5, 1.0) * max(g.s / 512, 0.5),
        "noise": rng.standard_normal(shape, dtype=np.float32) * rng.uniform(0.01, 0.025),
        "gamma": rng.uniform(0.85, 1.15),
    }


def _develop(sc: _Scene, g: sh.Grid, film: dict) -> np.ndarray:
    """Attenuation maps -> exposure (heel effect) -> detector blur -> quantum noise."""
    shape, tex, amp = (g.h, g.w), film["tex"], film["amp"]
    soft, bone, metal = (np.zeros(shape, np.float32) for _ in range(3))
    pieces: dict[str, np.ndarray] = {}

    def piece(name: str) -> np.ndarray:
        return pieces.setdefault(name, np.zeros(shape, np.float32)) if name else bone

    for t in sc.soft:
        sh.draw_soft(soft, g, t)
    for e in sc.soft_ells:
        sh.draw_ellipse(soft, g, e, tex, amp, soft=True)
    for pts, width, dens in sc.folds:
        win = g.window(pts, 3 * width)
        if win is not None:
            soft[win[0]] += dens * np.exp(-((sh.polyline(win[1], win[2], pts)[0] / width) ** 2))
    for t in sc.bones:
        sh.draw_bone(piece(t.bone), g, t, tex, amp)
    for e in sorted(sc.ells, key=lambda e: e.dens < 0):  # lucencies last
        sh.draw_ellipse(piece(e.bone), g, e, tex, amp)
    for verts, dens, rim, name in sc.plates:
        sh.draw_plate(piece(name), g, verts, dens, rim, tex, amp)
    for m in sc.metal:
        sh.draw_metal(metal, g, m)
    for arr in pieces.values():
        bone += arr
    (gs, gb), (gx, gy) = film["gains"], film["heel"]
    atten = (0.04 + gs * soft + gb * bone + 5.0 * metal) * (1.0 + gx * g.x + gy * g.y)
    img = ndimage.gaussian_filter(1.0 - np.exp(-1.4 * atten), film["blur"])
    img += film["noise"] * (0.4 + img)  # quantum noise, stronger where fewer photons arrive
    np.clip(img, 0.0, 1.0, out=img)
    return (img ** film["gamma"]).astype(np.float32)


def render_view(
    body_part: str,
    *,
    rng: np.random.Generator,
    height: int,
    width: int,
    sign: str | None = None,
    view: int = 0,
    anatomy_seed: int | None = None,
    sign_strength: float = 1.0,
) -> np.ndarray:
    """One synthetic radiograph as float32 (height, width) in [0, 1]: 0 air, 1 metal.

    All randomness comes from `rng`, so the same generator state gives the same bytes; `view`
    picks the projection (0 PA/AP, 1 lateral, 2 oblique, 3 another); `sign` (one of SIGNS)
    draws that abnormality on a random bone in view. Views of one study pass the same
    `anatomy_seed`, so they show the same patient's bones from different angles.
    `sign_strength` > 1 widens and deepens fractures and thickens periosteal reaction (hardware
    is already plain), so a sign stays visible after downsizing to a small training size.
    """
    if body_part not in BODY_PARTS:
        raise ValueError(f"unknown body part {body_part!r}; expected one of {BODY_PARTS}")
    if sign is not None and sign not in SIGNS:
        raise ValueError(f"unknown sign {sign!r}; expected None or one of {SIGNS}")
    if not 0.5 <= sign_strength <= 10.0:
        raise ValueError(f"sign_strength must be in [0.5, 10], got {sign_strength}")
    if height < 8 or width < 8:
        raise ValueError(f"image must be at least 8x8 px, got {height}x{width}")
    g = sh.Grid(int(height), int(width))
    sc = _arm(rng if anatomy_seed is None else np.random.default_rng(anatomy_seed))
    _pose(sc, str(body_part), int(view), rng, g)
    _variants(sc, g, rng)
    _marker(sc, g, rng)
    film = _film(g, rng)
    if sign is not None:  # drawn last: the same rng state renders the same film without it
        painter = {"fracture": _fracture, "periosteal": _periosteal, "hardware": _hardware}
        painter[sign](sc, g, rng, sign_strength)
    return _develop(sc, g, film)
