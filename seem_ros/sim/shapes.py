"""Shape catalogue: analytic solids ray-cast exactly in their own frame.

Every shape lives in its *object frame*: origin at the centre of its axis-aligned bounding box,
z up along the symmetry axis (a mug's handle points to +x), so it rests on a plane at
z = -size[2] / 2. Ray casting is analytic (quadrics, slabs, a quartic for the torus), so depth is
exact to float64 rounding, not limited by a tessellation.

Interface: ``first_hit(o, d)`` -> t [N] (np.inf where missed) for rays o + t d, o [3] or [N,3],
d [N,3] (any length; t is in units of d); ``normal(p)`` -> outward unit normals [N,3] at surface
points p [N,3]."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("cube", "box", "sphere", "cylinder", "cone", "torus", "mug")
_BIG = 1e6                     # stands in for infinite slab bounds, keeps arithmetic finite
NPOL = 1                       # Newton steps polishing the torus quartic's roots


def _xyz(a):
    return a[..., 0], a[..., 1], a[..., 2]


def _slab(o, d, lo, hi):
    """Parameter interval of a ray inside lo <= x <= hi (clipped to +-_BIG)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        a, b = (lo - o) * inv, (hi - o) * inv
    t0, t1 = np.minimum(a, b), np.maximum(a, b)
    return np.clip(t0, -_BIG, _BIG), np.clip(t1, -_BIG, _BIG)


def _roots(a, b, c):
    """Real roots (t0 <= t1) of a t^2 + 2 b t + c = 0; NaN where there are none."""
    h = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(h)
        q = -(b + np.copysign(s, b))        # numerically stable form (no cancellation)
        r0, r1 = q / a, c / q
    return np.minimum(r0, r1), np.maximum(r0, r1)


def _first(t_in, t_out):
    """First entry point of a convex solid seen from outside, inf where missed."""
    return np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf)


def _cyl_interval(o, d, r, z0, z1):
    """Interval inside the solid cylinder x^2 + y^2 <= r^2, z0 <= z <= z1."""
    ox, oy, oz = _xyz(o)
    dx, dy, dz = _xyz(d)
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    s0, s1 = _roots(a, b, c)
    axial = a < 1e-18                    # ray parallel to the axis: inside the tube or not at all
    s0 = np.where(axial, np.where(c <= 0, -_BIG, np.nan), s0)
    s1 = np.where(axial, np.where(c <= 0, _BIG, np.nan), s1)
    z_in, z_out = _slab(oz, dz, z0, z1)
    return np.maximum(s0, z_in), np.minimum(s1, z_out)   # NaN compares false: a miss


@dataclass
class Shape:
    name: str = field(init=False, default="")

    @property
    def size(self) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        return {k: float(v) for k, v in self.__dict__.items() if k != "name"}


@dataclass
class Box(Shape):
    sx: float = 0.06
    sy: float = 0.06
    sz: float = 0.06

    def __post_init__(self):
        self.name = "cube" if self.sx == self.sy == self.sz else "box"

    @property
    def size(self):
        return np.array([self.sx, self.sy, self.sz])

    def interval(self, o, d):
        h = self.size / 2
        t_in, t_out = _slab(o[..., 0], d[..., 0], -h[0], h[0])
        for k in (1, 2):
            a, b = _slab(o[..., k], d[..., k], -h[k], h[k])
            t_in, t_out = np.maximum(t_in, a), np.minimum(t_out, b)
        return t_in, t_out

    def first_hit(self, o, d):
        return _first(*self.interval(o, d))

    def normal(self, p):
        h = self.size / 2
        qx, qy, qz = np.abs(p[:, 0]) / h[0], np.abs(p[:, 1]) / h[1], np.abs(p[:, 2]) / h[2]
        fx = (qx >= qy) & (qx >= qz)                    # the face whose slab the point is on
        fy = ~fx & (qy >= qz)
        fz = ~(fx | fy)
        return np.stack([fx * np.sign(p[:, 0]), fy * np.sign(p[:, 1]), fz * np.sign(p[:, 2])], axis=1)


def Cube(s: float = 0.06) -> Box:
    return Box(s, s, s)


@dataclass
class Sphere(Shape):
    r: float = 0.04

    def __post_init__(self):
        self.name = "sphere"

    @property
    def size(self):
        return np.full(3, 2 * self.r)

    def first_hit(self, o, d):
        a = np.einsum("...i,...i->...", d, d)
        t0, t1 = _roots(a, np.einsum("...i,...i->...", o, d), np.einsum("...i,...i->...", o, o) - self.r ** 2)
        return _first(t0, t1)

    def normal(self, p):
        return p / np.linalg.norm(p, axis=1, keepdims=True)


@dataclass
class Cylinder(Shape):
    r: float = 0.03
    h: float = 0.1

    def __post_init__(self):
        self.name = "cylinder"

    @property
    def size(self):
        return np.array([2 * self.r, 2 * self.r, self.h])

    def first_hit(self, o, d):
        return _first(*_cyl_interval(o, d, self.r, -self.h / 2, self.h / 2))

    def normal(self, p):
        rho = np.hypot(p[:, 0], p[:, 1])
        side = np.abs(rho - self.r) < np.abs(np.abs(p[:, 2]) - self.h / 2)
        n = np.zeros_like(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            n[:, 0], n[:, 1] = np.where(side, p[:, 0] / rho, 0), np.where(side, p[:, 1] / rho, 0)
        n[:, 2] = np.where(side, 0, np.sign(p[:, 2]))
        return n


@dataclass
class Cone(Shape):
    r: float = 0.04          # base radius (base down, apex up)
    h: float = 0.1

    def __post_init__(self):
        self.name = "cone"

    @property
    def size(self):
        return np.array([2 * self.r, 2 * self.r, self.h])

    def first_hit(self, o, d):
        # Solid = {rho <= k (hz - z)} within the slab |z| <= hz; below the apex the quadric's double
        # cone coincides with the single nappe, so the solid is that quadric's inside within the slab.
        hz, k2 = self.h / 2, (self.r / self.h) ** 2
        ox, oy, oz = _xyz(o)
        dx, dy, dz = _xyz(d)
        w = hz - oz
        a = dx * dx + dy * dy - k2 * dz * dz
        b = ox * dx + oy * dy + k2 * w * dz
        c = ox * ox + oy * oy - k2 * w * w
        s0, s1 = _slab(oz, dz, -hz, hz)
        r0, r1 = _roots(a, b, c)
        lin = np.abs(a) < 1e-18
        with np.errstate(divide="ignore", invalid="ignore"):
            rl = -c / (2 * b)
        r0, r1 = np.where(lin, rl, r0), np.where(lin, rl, r1)

        def inside(s):
            return a * s * s + 2 * b * s + c <= 0

        t_in = np.where(inside(s0), s0, np.inf)
        for r in (r0, r1):                              # NaN roots fail the range test
            t_in = np.where((r >= s0) & (r <= s1) & (r < t_in), r, t_in)
        return np.where((t_in > 0) & (t_in <= s1), t_in, np.inf)

    def normal(self, p):
        hz, k = self.h / 2, self.r / self.h
        rho = np.hypot(p[:, 0], p[:, 1])
        d_side = np.abs(rho - k * (hz - p[:, 2])) / np.hypot(1, k)
        base = np.abs(p[:, 2] + hz) < d_side
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.stack([p[:, 0] / rho, p[:, 1] / rho, np.full(len(p), k)], axis=1)
        n = np.nan_to_num(n) / np.hypot(1, k)
        n[base] = (0, 0, -1)
        return n


def torus_roots(ox, oy, oz, dx, dy, dz, R: float, r: float):
    """All real roots [4,N] (NaN where absent) of the rays o + t d (components; o may be scalars)
    with the torus of major radius R and tube radius r around the z axis, t in units of d.
    Ferrari's closed form in a frame moved to the bounding sphere and scaled to R = 1 (for
    conditioning), then Newton steps on the quartic. Root-major layout: numpy broadcasts over a
    leading axis much faster than over a trailing one."""
    ox, oy, oz = (np.broadcast_to(c, np.shape(dx)) for c in (ox, oy, oz))
    ln = np.sqrt(dx * dx + dy * dy + dz * dz)
    dx, dy, dz = dx / ln, dy / ln, dz / ln
    n0 = ox * dx + oy * dy + oz * dz
    hb = n0 * n0 - (ox * ox + oy * oy + oz * oz) + (R + r) ** 2
    out = np.full((4, len(dx)), np.nan)
    sel = np.flatnonzero(hb > 0)                        # only rays through the bounding sphere
    if not len(sel):
        return out
    ox, oy, oz, dx, dy, dz, n0 = (c[sel] for c in (ox, oy, oz, dx, dy, dz, n0))
    t0 = np.maximum(-n0 - np.sqrt(hb[sel]), 0.0)        # start at the sphere: better conditioning
    px, py, pz = (ox + t0 * dx) / R, (oy + t0 * dy) / R, (oz + t0 * dz) / R
    ra2 = (r / R) ** 2
    n = px * dx + py * dy + pz * dz
    k = px * px + py * py + pz * pz - 1 - ra2
    # (|q|^2 - 1 - ra2)^2 + 4 qz^2 - 4 ra2 = t^4 + a t^3 + b t^2 + c t + e
    a = 4 * n
    b = 4 * n * n + 2 * k + 4 * dz * dz
    c = 4 * n * k + 8 * pz * dz
    e = k * k + 4 * pz * pz - 4 * ra2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # depressed quartic y^4 + P y^2 + Q y + S, t = y - a/4
        a4 = a / 4
        a42 = a4 * a4
        P = b - 6 * a42
        Q = c - 2 * b * a4 + 8 * a42 * a4
        S = e - c * a4 + b * a42 - 3 * a42 * a42
        # resolvent cubic m^3 + P m^2 + (P^2/4 - S) m - Q^2/8 = 0: its largest root (> 0 if Q != 0)
        c2, c1, c0 = P, P * P / 4 - S, -Q * Q / 8
        pp = c1 - c2 * c2 / 3
        qq = 2 * c2 * c2 * c2 / 27 - c2 * c1 / 3 + c0
        # closed form in float32 (float64 transcendentals are ~10x slower), then Newton in float64
        D = qq * qq / 4 + pp * pp * pp / 27
        q2, p3 = (qq / 2).astype(np.float32), (pp / 3).astype(np.float32)
        sD = np.sqrt(np.maximum(D, 0)).astype(np.float32)
        x1 = np.cbrt(sD - q2) - np.cbrt(sD + q2)
        rr = np.sqrt(np.maximum(-p3, 0))
        x3 = 2 * rr * np.cos(np.arccos(np.clip(-q2 / np.maximum(rr * rr * rr, 1e-30), -1, 1)) / 3)
        mm = np.where(D > 0, x1, x3) - c2 / 3
        for _ in range(3):                              # polish the resolvent root
            f = ((mm + c2) * mm + c1) * mm + c0
            df = (3 * mm + 2 * c2) * mm + c1
            mm = np.where(np.abs(df) > 1e-300, mm - f / df, mm)
        mm = np.maximum(mm, 0)
        s = np.sqrt(2 * mm)
        bi = s < 1e-7                                   # Q ~ 0: biquadratic, y^2 = (-P +- sqrt(P^2-4S))/2
        w = np.sqrt(P * P - 4 * S)
        u1, u2 = np.sqrt((-P + w) / 2), np.sqrt((-P - w) / 2)
        qs = Q / (2 * s)
        g1, g2 = P / 2 + mm + qs, P / 2 + mm - qs       # y^2 - s y + g1 = 0, y^2 + s y + g2 = 0
        h1, h2 = np.sqrt(s * s / 4 - g1), np.sqrt(s * s / 4 - g2)
        ts = np.stack([np.where(bi, -u1, s / 2 - h1), np.where(bi, u1, s / 2 + h1),
                       np.where(bi, -u2, -s / 2 - h2), np.where(bi, u2, -s / 2 + h2)]) - a4
        for _ in range(NPOL):                           # polish on the quartic itself
            f = (((ts + a) * ts + b) * ts + c) * ts + e
            df = ((4 * ts + 3 * a) * ts + 2 * b) * ts + c
            ts = ts - np.clip(f / df, -0.01, 0.01)     # NaN where df = 0 and no root: stays NaN
    out[:, sel] = (t0 + R * ts) / ln[sel]
    return out


def _torus_normal(p, R):
    rho = np.maximum(np.hypot(p[:, 0], p[:, 1]), 1e-12)
    n = p.copy()
    n[:, 0] -= R * p[:, 0] / rho
    n[:, 1] -= R * p[:, 1] / rho
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _torus_sdf(p, R, r):
    return np.hypot(np.hypot(p[:, 0], p[:, 1]) - R, p[:, 2]) - r


@dataclass
class Torus(Shape):
    R: float = 0.04          # major radius (lying flat: axis vertical)
    r: float = 0.012         # tube radius

    def __post_init__(self):
        self.name = "torus"

    @property
    def size(self):
        return np.array([2 * (self.R + self.r), 2 * (self.R + self.r), 2 * self.r])

    def first_hit(self, o, d):
        ts = torus_roots(o[..., 0], o[..., 1], o[..., 2], d[:, 0], d[:, 1], d[:, 2], self.R, self.r)
        with np.errstate(invalid="ignore"):
            ts = np.where(ts > 1e-9, ts, np.inf)
        return np.minimum(np.minimum(ts[0], ts[1]), np.minimum(ts[2], ts[3]))

    def normal(self, p):
        return _torus_normal(p, self.R)


@dataclass
class Mug(Shape):
    R: float = 0.04          # outer radius of the body
    h: float = 0.095         # body height
    wall: float = 0.005      # wall thickness
    base: float = 0.008      # thickness of the bottom
    Rh: float = 0.028        # handle: major radius of its torus (in the xz plane, centred on the wall)
    rh: float = 0.007        # handle tube radius
    zh: float = 0.004        # handle centre height above the body centre

    def __post_init__(self):
        self.name = "mug"

    @property
    def _xmax(self):
        return self.R + self.Rh + self.rh

    @property
    def _off(self):
        """Body-axis frame minus object (bbox-centred) frame, along x."""
        return (self._xmax - self.R) / 2

    @property
    def size(self):
        return np.array([self.R + self._xmax, 2 * self.R, self.h])

    def _body(self, o, d):
        hz = self.h / 2
        a0, a1 = _cyl_interval(o, d, self.R, -hz, hz)
        b0, b1 = _cyl_interval(o, d, self.R - self.wall, -hz + self.base, _BIG)   # the open hollow
        hit_a = (a0 <= a1) & (a1 > 0)
        in_b = (b0 <= a0) & (a0 <= b1)                   # entered through the opening
        t = np.where(in_b, np.where(b1 < a1, b1, np.inf), a0)
        return np.where(hit_a & (t > 0), t, np.inf)

    def _handle(self, o, d):
        # Torus in the xz plane around (R, 0, zh); only its part outside mid-wall is kept, the rest
        # is inside the wall (Rh, rh are sized so), hence hidden by the body.
        ox = o[..., 0] - self.R
        ts = torus_roots(ox, o[..., 2] - self.zh, o[..., 1], d[:, 0], d[:, 2], d[:, 1], self.Rh, self.rh)
        with np.errstate(invalid="ignore"):
            ok = (ts > 1e-9) & (ox + ts * d[:, 0] >= -self.wall / 2)
        ts = np.where(ok, ts, np.inf)
        return np.minimum(np.minimum(ts[0], ts[1]), np.minimum(ts[2], ts[3]))

    def first_hit(self, o, d):
        o = np.asarray(o, float) + (self._off, 0, 0)
        t = self._body(o, d)
        # the quartic only for rays that reach the handle's box before the body
        lo = np.array([self.R - self.wall / 2, -self.rh, self.zh - self.Rh - self.rh])
        hi = np.array([self._xmax, self.rh, self.zh + self.Rh + self.rh])
        t_in, t_out = _slab(o[..., 0], d[:, 0], lo[0], hi[0])
        for k in (1, 2):
            a, b = _slab(o[..., k], d[:, k], lo[k], hi[k])
            t_in, t_out = np.maximum(t_in, a), np.minimum(t_out, b)
        sel = np.flatnonzero((t_in <= t_out) & (t_out > 0) & (t_in < t))
        if len(sel):
            t[sel] = np.minimum(t[sel], self._handle(o[sel] if o.ndim == 2 else o, d[sel]))
        return t

    def normal(self, p):
        p = p + (self._off, 0, 0)
        hz, Ri = self.h / 2, self.R - self.wall
        zb = -hz + self.base
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        rho = np.maximum(np.hypot(x, y), 1e-12)
        inf = np.inf
        # the surface nearest to the point: outer wall, inner wall, rim, bottom, inner floor, handle
        dists = [np.abs(rho - self.R),
                 np.where(z > zb, np.abs(rho - Ri), inf),
                 np.where(rho >= Ri - 1e-9, np.abs(z - hz), inf),
                 np.abs(z + hz),
                 np.where(rho <= Ri + 1e-9, np.abs(z - zb), inf),
                 np.where(x >= self.R - self.wall / 2,
                          np.abs(np.hypot(np.hypot(x - self.R, z - self.zh) - self.Rh, y) - self.rh), inf)]
        best, k = dists[0], np.zeros(len(p), np.int8)
        for i, di in enumerate(dists[1:], 1):
            better = di < best
            best = np.minimum(best, di)
            k[better] = i
        n = np.zeros_like(p)
        n[:, 0], n[:, 1] = x / rho, y / rho                 # outer wall
        inner = k == 1
        n[inner, 0] *= -1
        n[inner, 1] *= -1
        flat = (k >= 2) & (k <= 4)
        n[flat] = 0
        n[flat, 2] = np.where(k[flat] == 3, -1.0, 1.0)
        hnd = np.flatnonzero(k == 5)
        if len(hnd):                                        # torus in the xz plane around (R, 0, zh)
            q = np.stack([x[hnd] - self.R, z[hnd] - self.zh, y[hnd]], axis=1)
            n[hnd] = _torus_normal(q, self.Rh)[:, [0, 2, 1]]
        return n


def random_shape(name: str, rng: np.random.Generator) -> Shape:
    """A shape of the given kind with random, plausible tabletop dimensions (metres)."""
    u = rng.uniform
    if name == "cube":
        return Cube(u(0.04, 0.09))
    if name == "box":
        while True:                                     # clearly not a cube
            s = u(0.03, 0.16, 3)
            if s.max() / s.min() > 1.4:
                return Box(*s)
    if name == "sphere":
        return Sphere(u(0.025, 0.055))
    if name == "cylinder":
        return Cylinder(u(0.02, 0.045), u(0.05, 0.16))
    if name == "cone":
        return Cone(u(0.025, 0.05), u(0.06, 0.14))
    if name == "torus":
        R = u(0.03, 0.05)
        return Torus(R, R * u(0.2, 0.42))
    if name == "mug":
        R, h = u(0.03, 0.045), u(0.075, 0.11)
        wall = u(0.0035, 0.005)
        rh = min(u(0.0055, 0.008), 0.9 * np.sqrt(R * wall))   # keeps the cut end of the handle in the wall
        Rh = u(0.26, 0.32) * h
        zh = min(u(0.0, 0.06) * h, h / 2 - Rh - rh - 0.003)
        return Mug(R, h, wall, u(0.006, 0.01), Rh, rh, zh)
    raise ValueError(f"unknown shape {name!r}; choose from {SHAPES}")


def make_shape(name: str, **params) -> Shape:
    """A shape by name with explicit parameters, e.g. make_shape('sphere', r=0.04)."""
    cls = {"cube": Cube, "box": Box, "sphere": Sphere, "cylinder": Cylinder, "cone": Cone,
           "torus": Torus, "mug": Mug}[name]
    if name == "cube":
        return Cube(params.get("s", params.get("sx", 0.06)))
    return cls(**params)
