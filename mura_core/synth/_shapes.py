"""Shape primitives for the synthetic radiographs: signed distances and their projections.

Private to `anatomy`. Coordinates are "frame units": 1.0 is the image's short side, the origin
is the image centre, y points down. Every field is evaluated on broadcastable coordinates (a
row `x` of shape (1, w) and a column `y` of shape (h, 1)) cut to the window a shape covers;
that, not clever maths, keeps a 512x512 render in the tens of milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

Point = tuple[float, float]
FAR = 1e9


class Grid:
    """Pixel-centre coordinates of one image, with cheap windowed views onto them."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.s = float(min(height, width))
        self.px = 1.0 / self.s
        self.hw, self.hh = width / self.s / 2.0, height / self.s / 2.0
        self.x = ((np.arange(width, dtype=np.float32) + 0.5) / self.s - self.hw)[None, :]
        self.y = ((np.arange(height, dtype=np.float32) + 0.5) / self.s - self.hh)[:, None]

    def window(self, pts: list[Point], pad: float):
        """(slices, x, y) of the box around `pts` grown by `pad`, or None when off the image."""
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        j0 = max(math.floor((min(xs) - pad + self.hw) * self.s), 0)
        j1 = min(math.ceil((max(xs) + pad + self.hw) * self.s) + 1, self.w)
        i0 = max(math.floor((min(ys) - pad + self.hh) * self.s), 0)
        i1 = min(math.ceil((max(ys) + pad + self.hh) * self.s) + 1, self.h)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1)), self.x[:, j0:j1], self.y[i0:i1, :]

    def inside(self, p: Point, margin: float = 0.0) -> bool:
        """Whether frame point `p` lies in the image, `margin` frame units from every edge."""
        return abs(p[0]) < self.hw - margin and abs(p[1]) < self.hh - margin


class Line(NamedTuple):
    """A thin lucent line (fracture gap, nutrient canal, growth plate) with a slight wiggle."""

    c: Point
    n: Point  # unit normal
    width: float
    depth: float
    amp: float = 0.0
    freq: float = 0.0
    phase: float = 0.0
    a0: float = -FAR  # extent along the line
    a1: float = FAR


class Fracture(NamedTuple):
    """A fracture line whose far fragment is shifted and angulated."""

    line: Line
    shift: Point
    angle: float


class Perio(NamedTuple):
    """Periosteal new bone along arc lengths u0..u1 of a shaft; lam>0 lamellae, <0 spicules."""

    u0: float
    u1: float
    thick: float
    side: int  # -1, +1: one side of the shaft; 0: both
    dens: float
    lam: float


class Metal(NamedTuple):
    """Hardware or lead: kind box (optionally threaded), disk, hole (cut-out) or rod."""

    kind: str
    c: Point | list  # centre, or the points of a rod
    size: float  # half length, or radius
    u: Point = (1.0, 0.0)
    hw: float = 0.0
    pitch: float = 0.0
    thread: float = 0.0
    val: float = 1.0


@dataclass
class Tube:
    """A bone (or soft-tissue cylinder) along a polyline; its radius flares at the ends."""

    pts: list
    r: float
    f0: float = 0.0  # relative flare (epiphysis) at the start / the end
    f1: float = 0.0
    w0: float = 2.0  # flare lengths, in shaft radii
    w1: float = 2.0
    dens: float = 1.0
    cort: float = 0.35  # cortical thickness as a fraction of the shaft radius
    caps: Point = (1.0, 1.0)  # end-cap flatness at start / end (1 round, 2 plateau)
    bone: str = ""  # pieces of one named bone combine by max; different bones add up
    long: bool = True  # a shaft that may carry a sign or a normal variant
    grp: int = 0  # 1: distal to the elbow (flexes in lateral elbow views)
    digit: int = 0
    r_end: float | None = None  # soft tissue: radius at the far end (taper)
    feats: list = field(default_factory=list)


@dataclass
class Ellipse:
    """An ellipsoidal bone or soft-tissue mass; `m` (2x2, row-major) maps the unit circle."""

    c: Point
    m: tuple
    dens: float = 1.0  # < 0: a lucency cut into the named bone
    k: float = 0.8  # inner/outer radius of the cortical shell
    bone: str = ""
    flat: bool = False  # flat things (palm, scapula) foreshorten in lateral views
    grp: int = 0
    digit: int = 0


def at(p: Point, d: Point, k: float = 1.0) -> Point:
    """The point `p + k * d`."""
    return p[0] + k * d[0], p[1] + k * d[1]


def direction(deg: float) -> Point:
    """Unit vector `deg` degrees from +y (down the limb) towards +x."""
    return math.sin(math.radians(deg)), math.cos(math.radians(deg))


def rmat(deg: float) -> np.ndarray:
    """2x2 rotation matrix."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


def rot(v: Point, ang: float) -> Point:
    """`v` rotated by `ang` radians."""
    c, s = math.cos(ang), math.sin(ang)
    return c * v[0] - s * v[1], s * v[0] + c * v[1]


def chord(radius, dist):
    """Half the path length through a cylinder (or sphere) of `radius` at `dist` from its
    axis: why a projected bone has bright walls and a darker middle."""
    return np.sqrt(np.maximum(radius * radius - dist * dist, 0.0))


def polyline(x, y, pts: list[Point]):
    """Distance to a polyline, arc length of the closest point, signed side, total length."""
    best_d2 = best_u = best_side = None
    cum = 0.0
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:], strict=True):
        seg = math.hypot(bx - ax, by - ay) or 1e-9
        ux, uy = (bx - ax) / seg, (by - ay) / seg
        px, py = x - ax, y - ay
        t = np.clip(px * ux + py * uy, 0.0, seg)
        ex, ey = px - t * ux, py - t * uy
        d2, side = ex * ex + ey * ey, ux * py - uy * px
        if best_d2 is None:
            best_d2, best_u, best_side = d2, t + cum, side
        else:
            closer = d2 < best_d2
            best_d2 = np.where(closer, d2, best_d2)
            best_u = np.where(closer, t + cum, best_u)
            best_side = np.where(closer, side, best_side)
        cum += seg
    return np.sqrt(best_d2), best_u, best_side, cum


def length(pts: list[Point]) -> float:
    return sum(math.dist(a, b) for a, b in zip(pts[:-1], pts[1:], strict=True))


def along(pts: list[Point], s: float) -> tuple[Point, Point]:
    """Point and unit tangent at fraction `s` of a polyline's arc length."""
    goal = min(max(float(s), 0.0), 1.0) * length(pts)
    for i, (a, b) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
        seg = math.dist(a, b) or 1e-9
        if goal <= seg or i == len(pts) - 2:
            tan = ((b[0] - a[0]) / seg, (b[1] - a[1]) / seg)
            return (a[0] + goal * tan[0], a[1] + goal * tan[1]), tan
        goal -= seg
    raise ValueError("a polyline needs two or more points")


def box(x, y, c: Point, u: Point, half_len: float, half_wid: float):
    """Signed distance to a rectangle along unit axis `u`, and the coordinate along it."""
    px, py = x - c[0], y - c[1]
    a, b = px * u[0] + py * u[1], py * u[0] - px * u[1]
    qa, qb = np.abs(a) - half_len, np.abs(b) - half_wid
    out = np.hypot(np.maximum(qa, 0.0), np.maximum(qb, 0.0))
    return out + np.minimum(np.maximum(qa, qb), 0.0), a


def polygon(x, y, verts: list[Point]):
    """Signed distance (exact inside, a lower bound outside) to a convex polygon."""
    edges = list(zip(verts, verts[1:] + verts[:1], strict=True))
    orient = 1.0 if sum(a[0] * b[1] - b[0] * a[1] for a, b in edges) > 0 else -1.0
    dist = None
    for a, b in edges:
        seg = math.dist(a, b) or 1e-9
        nx, ny = orient * (b[1] - a[1]) / seg, -orient * (b[0] - a[0]) / seg
        d = (x - a[0]) * nx + (y - a[1]) * ny
        dist = d if dist is None else np.maximum(dist, d)
    return dist


def ellipse_q2(g: Grid, e: Ellipse):
    """(slices, squared normalised radius) of an ellipse's window; (None, None) off-image."""
    m = e.m
    win = g.window([e.c], max(math.hypot(m[0], m[1]), math.hypot(m[2], m[3])) + 2 * g.px)
    if win is None:
        return None, None
    det = m[0] * m[3] - m[1] * m[2]
    px, py = win[1] - e.c[0], win[2] - e.c[1]
    lx, ly = (m[3] * px - m[1] * py) / det, (m[0] * py - m[2] * px) / det
    return win[0], lx * lx + ly * ly


def put(dst, sl, a, use_max: bool) -> None:
    """Combine a windowed field into `dst`: max (one bone's pieces) or sum (overlap)."""
    if use_max:
        np.maximum(dst[sl], a, out=dst[sl])
    else:
        dst[sl] += a


def _line_field(x, y, f: Line):
    px, py = x - f.c[0], y - f.c[1]
    al = py * f.n[0] - px * f.n[1]
    return px * f.n[0] + py * f.n[1] + f.amp * np.sin(f.freq * al + f.phase), al


def draw_bone(dst, g: Grid, t: Tube, tex, amp: float) -> None:
    """Projected hollow bone: dense cortical shell, marrow (trabecular near the ends)."""
    pad = t.r * (1 + max(t.f0, t.f1)) + 2 * g.px
    pad += sum(f.thick for f in t.feats if isinstance(f, Perio))
    pad += sum(math.hypot(*f.shift) + 0.3 * t.r for f in t.feats if isinstance(f, Fracture))
    win = g.window(t.pts, pad)
    if win is None:
        return
    sl, x0, y0 = win
    x, y = x0, y0
    for f in t.feats:
        if isinstance(f, Fracture):  # the far side shifted and rotated, fading over ~4 radii
            sd, c, (dx, dy) = _line_field(x0, y0, f.line)[0], f.line.c, f.shift
            fade = np.exp(-((sd / (4 * t.r)) ** 2)) * (sd > 0)
            ca, sa = np.cos(f.angle * fade), np.sin(f.angle * fade)
            px, py = x0 - c[0], y0 - c[1]
            x = c[0] + ca * px + sa * py - dx * fade
            y = c[1] - sa * px + ca * py - dy * fade
    d, u, side, total = polyline(x, y, t.pts)
    k2 = np.where(u < 0.5 * total, np.float32(t.caps[0] ** 2), np.float32(t.caps[1] ** 2))
    over2 = np.maximum(d * d - side * side, 0) * ((u <= 0) | (u >= total))
    d = np.sqrt(d * d + (k2 - 1) * over2)  # flattened end caps
    e0 = np.exp(-((u / (t.w0 * t.r)) ** 2))
    e1 = np.exp(-(((total - u) / (t.w1 * t.r)) ** 2))
    rad = t.r * (1 + t.f0 * e0 + t.f1 * e1)
    end = np.maximum(e0, e1)
    inner = chord(rad - t.r * t.cort * (1 - 0.7 * end), d)
    marrow = (0.1 + 0.3 * end) * (1 + amp * tex[sl])
    # flat-ish epiphyses: brighter than the shaft, but not as much as a cylinder that wide
    a = (chord(rad, d) - inner + marrow * inner) * (t.dens / np.sqrt(rad * t.r))
    for f in t.feats:
        if isinstance(f, Line | Fracture):
            ln = f if isinstance(f, Line) else f.line
            sd, al = _line_field(x0, y0, ln)
            span = np.clip((al - ln.a0) / ln.width, 0, 1) * np.clip((ln.a1 - al) / ln.width, 0, 1)
            a = a * (1 - ln.depth * np.exp(-((sd / ln.width) ** 2)) * span)
        elif isinstance(f, Perio):  # new bone laid down just outside the cortex
            out = d - rad
            band = np.sqrt(np.clip(1 - out / f.thick, 0, 1)) * (out > 0.1 * f.thick)
            taper = np.clip(np.minimum(u - f.u0, f.u1 - u) / (0.25 * (f.u1 - f.u0)), 0, 1)
            if f.side:
                taper = taper * (side * f.side > 0)
            wave = out / f.thick if f.lam > 0 else u / f.thick
            a = a + f.dens * band * (0.65 + 0.35 * np.cos(2 * np.pi * abs(f.lam) * wave)) * taper
    put(dst, sl, a, bool(t.bone))


def draw_ellipse(dst, g: Grid, e: Ellipse, tex, amp: float, soft: bool = False) -> None:
    """A projected ellipsoid: cortical shell and cancellous inside; soft tissue is solid.

    A negative density thins the bone already in `dst` instead (e.g. the olecranon fossa)."""
    sl, q2 = ellipse_q2(g, e)
    if sl is None:
        return
    outer = np.sqrt(np.maximum(1 - q2, 0))
    if soft or e.dens < 0:
        dst[sl] = np.maximum(dst[sl], outer * e.dens) if soft else dst[sl] * (1 + e.dens * outer)
        return
    inner = np.sqrt(np.maximum(e.k * e.k - q2, 0))
    put(dst, sl, e.dens * (outer - inner + 0.45 * inner * (1 + amp * tex[sl])), bool(e.bone))


def draw_plate(dst, g: Grid, verts: list[Point], dens: float, rim: float, tex, amp) -> None:
    """A thin plate of bone (scapula) with thicker, brighter borders."""
    win = g.window(verts, rim * 2)
    if win is not None:
        sd = polygon(win[1], win[2], verts)
        inside = np.clip(-sd / rim, 0, 1) * (1 + 0.5 * amp * tex[win[0]])
        put(dst, win[0], dens * (inside + 0.6 * np.exp(-((sd / rim) ** 2))), True)


def draw_soft(dst, g: Grid, t: Tube) -> None:
    """Soft tissue: a (tapered) cylinder's thickness; the envelope is the max of its parts."""
    win = g.window(t.pts, max(t.r, t.r_end or 0.0) + 2 * g.px)
    if win is not None:
        d, u, _, total = polyline(win[1], win[2], t.pts)
        rad = t.r + ((t.r_end or t.r) - t.r) * (u / total)
        put(dst, win[0], chord(rad, d) / rad * t.dens, True)


def draw_metal(dst, g: Grid, m: Metal) -> None:
    """Orthopaedic hardware and lead markers: sharp-edged and (nearly) opaque."""
    pts = m.c if m.kind == "rod" else [m.c]
    win = g.window(pts, m.size + m.hw + 2 * g.px)
    if win is None:
        return
    sl, x, y = win
    if m.kind == "box":
        sd, al = box(x, y, m.c, m.u, m.size, m.hw)
        if m.pitch:  # screw threads
            sd = sd + m.thread * np.abs((al / m.pitch) % 1.0 - 0.5) * 2
    elif m.kind == "rod":
        sd = polyline(x, y, m.c)[0] - m.size
    else:
        sd = np.hypot(x - m.c[0], y - m.c[1]) - m.size
    cov = np.clip(0.5 - sd / g.px, 0.0, 1.0)
    if m.kind == "hole":
        dst[sl] *= 1 - cov
    else:
        put(dst, sl, cov * m.val, True)
