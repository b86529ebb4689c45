"""Vectorised shape primitives for the synthetic radiograph renderer (private to `anatomy`).

Coordinates are "frame units": 1.0 is the image's short side, the origin is the image centre
and y points down. Every function takes broadcastable coordinates (a row `x` of shape (1, w)
and a column `y` of shape (h, 1)) so a caller evaluates it on a small window of the image
only; that, not clever maths, is what keeps one render in the millisecond range.
"""

from __future__ import annotations

import math

import numpy as np

Point = tuple[float, float]


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


def chord(radius, dist):
    """Path length / 2 through a cylinder (or sphere) of `radius` at distance `dist` from
    its axis: why a projected bone has bright walls and a darker middle."""
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
        d2 = ex * ex + ey * ey
        side = ux * py - uy * px
        if best_d2 is None:
            best_d2, best_u, best_side = d2, t + cum, side
        else:
            closer = d2 < best_d2
            best_d2 = np.where(closer, d2, best_d2)
            best_u = np.where(closer, t + cum, best_u)
            best_side = np.where(closer, side, best_side)
        cum += seg
    return np.sqrt(best_d2), best_u, best_side, cum


def along(pts: list[Point], s: float) -> tuple[Point, Point]:
    """Point and unit tangent at fraction `s` of a polyline's arc length."""
    lens = [math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(pts[:-1], pts[1:], strict=True)]
    goal = min(max(s, 0.0), 1.0) * sum(lens)
    for (a, b), seg in zip(zip(pts[:-1], pts[1:], strict=True), lens, strict=True):
        if goal <= seg or b is pts[-1]:
            t = goal / (seg or 1e-9)
            tan = ((b[0] - a[0]) / (seg or 1e-9), (b[1] - a[1]) / (seg or 1e-9))
            return (a[0] + t * tan[0] * seg, a[1] + t * tan[1] * seg), tan
        goal -= seg
    raise AssertionError("unreachable")


def ellipse_q(x, y, c: Point, inv: tuple[float, float, float, float]):
    """Normalised radius of an ellipse whose inverse shape matrix is `inv` (1 on its rim)."""
    px, py = x - c[0], y - c[1]
    lx, ly = inv[0] * px + inv[1] * py, inv[2] * px + inv[3] * py
    return np.sqrt(lx * lx + ly * ly)


def box(x, y, c: Point, u: Point, half_len: float, half_wid: float):
    """Signed distance to a rectangle along unit axis `u`; also the along/across coordinates."""
    px, py = x - c[0], y - c[1]
    a, b = px * u[0] + py * u[1], py * u[0] - px * u[1]
    qa, qb = np.abs(a) - half_len, np.abs(b) - half_wid
    out = np.hypot(np.maximum(qa, 0.0), np.maximum(qb, 0.0))
    return out + np.minimum(np.maximum(qa, qb), 0.0), a, b


def polygon(x, y, verts: list[Point]):
    """Signed distance (exact inside, a lower bound outside) to a convex polygon."""
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(verts, verts[1:] + verts[:1]))
    orient = 1.0 if area > 0 else -1.0
    dist = None
    for a, b in zip(verts, verts[1:] + verts[:1], strict=True):
        seg = math.hypot(b[0] - a[0], b[1] - a[1]) or 1e-9
        nx, ny = orient * (b[1] - a[1]) / seg, -orient * (b[0] - a[0]) / seg
        d = (x - a[0]) * nx + (y - a[1]) * ny
        dist = d if dist is None else np.maximum(dist, d)
    return dist
