"""Procedural textures: a fixed bank of tileable noise images sampled bilinearly, and the
materials of the table, the room and the objects. Albedo comes back planar, [3, N] float32 in
[0, 1] (channel-major: numpy broadcasts over a trailing axis of 3 ten times slower)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

TEX = 256                          # noise tile size (power of two: coordinates wrap with a mask)
N_NOISE = 4


@lru_cache(maxsize=None)
def noise_tile(i: int) -> np.ndarray:
    """Tileable fractal value noise [TEX, TEX] float32, zero mean, unit std. Fixed seeds: the bank
    is the same in every process, so renders are reproducible."""
    rng = np.random.default_rng(1000 + i)
    out = np.zeros((TEX, TEX))
    amp = 1.0
    for cells in (4, 8, 16, 32, 64, 128):
        g = rng.standard_normal((cells, cells))
        x = np.arange(TEX) * cells / TEX
        i0 = np.floor(x).astype(int)
        f = x - i0
        f = f * f * (3 - 2 * f)                                  # smoothstep: no grid creases
        i1 = (i0 + 1) % cells
        rows = g[i0] * (1 - f)[:, None] + g[i1] * f[:, None]
        out += amp * (rows[:, i0] * (1 - f) + rows[:, i1] * f)
        amp *= 0.55
    out = (out - out.mean()) / out.std()
    return out.astype(np.float32)


@lru_cache(maxsize=None)
def _flat(i: int) -> np.ndarray:
    """The tile with its first row and column repeated after the last, flattened: the four
    bilinear neighbours of texel k are k, k+1, k+TEX+1, k+TEX+2 without wrapping arithmetic."""
    return np.pad(noise_tile(i), ((0, 1), (0, 1)), mode="wrap").ravel()


def _cell(x):
    """floor(x) as int32 texel index (wrapped) and the fractional part; float32 throughout."""
    f = np.floor(x)
    i = f.astype(np.int32)
    i &= TEX - 1
    x = x - f
    return i, x


def sample(i: int, u, v) -> np.ndarray:
    """Bilinear lookup of noise tile i at texel coordinates (u, v) (any shape, wrapping).
    In-place int32/float32 arithmetic: fresh large temporaries cost page faults here."""
    iu, a = _cell(np.asarray(u, np.float32))
    k, b = _cell(np.asarray(v, np.float32))
    k *= TEX + 1
    k += iu
    t = _flat(i)
    t00 = t.take(k)
    k += 1
    t01 = t.take(k)
    k += TEX
    t10 = t.take(k)
    k += 1
    t11 = t.take(k)
    t01 -= t00
    t01 *= a
    t01 += t00                                            # top row
    t11 -= t10
    t11 *= a
    t11 += t10                                            # bottom row
    t11 -= t01
    t11 *= b
    t11 += t01
    return t11


def lookup(i: int, u, v) -> np.ndarray:
    """Nearest-texel lookup: cheaper, for fine grain where filtering does not show."""
    iu = np.floor(np.asarray(u, np.float32)).astype(np.int32)
    iv = np.floor(np.asarray(v, np.float32)).astype(np.int32)
    iu &= TEX - 1
    iv &= TEX - 1
    iv *= TEX + 1
    iv += iu
    return _flat(i).take(iv)


def _parity(f):
    """f mod 2 for integer-valued float32 arrays (np.remainder is slow)."""
    return f - 2 * np.floor(f * 0.5)


def _col(c):
    return np.asarray(c, np.float32).reshape(3, 1)


def _mix(c0, c1, f):
    c0 = _col(c0)
    return c0 + (_col(c1) - c0) * f


def _f32(x):
    return np.asarray(x, np.float32)


def wood(x, y, m: dict) -> np.ndarray:
    """Planks along the grain with streaks, growth rings and dark seams; (x, y) in metres."""
    x, y = _f32(x), _f32(y)
    c, s, w = float(m["cos"]), float(m["sin"]), float(m["plank"])
    u, v = c * x + s * y, c * y - s * x                     # u along the grain
    tex = m["tex"]
    plank = np.floor(v * (1 / w))
    g = sample(tex, u * 12 + plank * 37.0, v * 140)          # stretched: streaks along the grain
    rings = np.sin((v * float(m["ring"]) + 0.8 * sample(tex, u * 3, v * 9 + 11)) * 6.2832)
    f = np.clip(0.225 * rings + 0.12 * g + 0.675 + 0.15 * np.sin(plank * 2.3), 0, 1)
    seam = np.abs(v * (1 / w) - plank - 0.5) > 0.5 - 0.004 / w
    return _mix(m["dark"], m["light"], f) * (1 - 0.45 * seam.astype(np.float32))


def checker(x, y, m: dict) -> np.ndarray:
    """Gingham-like cloth: two colours in cells, the crossings a blend, with weave noise."""
    x, y = _f32(x), _f32(y)
    k = 1 / float(m["cell"])
    f = (_parity(np.floor(x * k)) + _parity(np.floor(y * k))) * 0.5
    return _mix(m["c0"], m["c1"], f) * (1 + 0.05 * lookup(m["tex"], x * 900, y * 900))


def plain(x, y, m: dict) -> np.ndarray:
    """A flat colour with soft large-scale mottling."""
    sc, amp = float(m.get("scale", 40)), float(m.get("amp", 0.06))
    n = sample(m["tex"], _f32(x) * sc, _f32(y) * sc)
    return _col(m["c0"]) * (1 + amp * n)


def tiles(x, y, m: dict) -> np.ndarray:
    """Floor tiles in two shades with grout lines."""
    x, y = _f32(x), _f32(y)
    k = 1 / float(m["cell"])
    fx, fy = x * k, y * k
    ix, iy = np.floor(fx), np.floor(fy)
    fx, fy = fx - ix, fy - iy
    col = _mix(m["c0"], m["c1"], _parity(ix + iy)) * (1 + 0.05 * sample(m["tex"], x * 60, y * 60))
    g = 0.006 * k
    grout = (np.minimum(fx, 1 - fx) < g) | (np.minimum(fy, 1 - fy) < g)
    return col + (_col(m["grout"]) - col) * grout.astype(np.float32)


SURFACES = {"wood": wood, "checker": checker, "plain": plain, "tiles": tiles}


def surface(x, y, m: dict) -> np.ndarray:
    return SURFACES[m["kind"]](x, y, m)


def object_albedo(p: np.ndarray, n: np.ndarray, m: dict) -> np.ndarray:
    """Albedo [3,N] of an object at local surface points p [N,3] with local normals n [N,3]: its colour
    modulated by a mild pattern (so that its colour name stays right). Texture coordinates are the
    two local coordinates across the dominant normal axis, so patterns move with the object."""
    rgb = _col(m["rgb"])
    kind, amp = m["pattern"], float(m["amp"])
    p = p.astype(np.float32)
    an = np.abs(n)
    k = np.where(an[:, 0] >= an[:, 1], np.where(an[:, 0] >= an[:, 2], 0, 2),
                 np.where(an[:, 1] >= an[:, 2], 1, 2))             # dominant normal axis
    rows = np.arange(len(p))
    u = p[rows, (k + 1) % 3]
    v = p[rows, (k + 2) % 3]
    tex = m["tex"]
    if kind == "stripes":
        f = np.clip(3 * np.sin(p[:, 2] * (6.2832 / float(m["period"])) + float(m["phase"])) + 0.5, 0, 1)
        return rgb * (1 - amp * f) + (amp * 0.5) * f                        # crisp-ish bands
    if kind == "speckle":
        g = lookup(tex, u * 2500 + 17, v * 2500)
        return rgb * (1 + amp * np.clip(g, -1.5, 1.5))
    scale = 300 if kind == "noise" else 120
    g = sample(tex, u * scale + 31 * k.astype(np.float32), v * scale)
    return rgb * (1 + amp * g)
