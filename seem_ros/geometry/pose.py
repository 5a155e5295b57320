"""Object pose (centre, orientation, size) from a depth image and an instance mask.

Only the front surface of an object is seen, so the centroid of its points is biased towards the
camera by up to its half-depth (2-3 cm for tabletop objects). `estimate_pose` instead:

1. Outliers: optionally leaves out the mask's rim (`erode_px`: thin leaks onto a neighbour or
   the table at the object's own depth), drops mask pixels whose depth jumps far behind a masked
   neighbour (background or table leaking into a dilated mask edge), keeps only the largest
   surface (`surface_jump`: mask pixels joined by neighbours whose depths differ by less than
   that; a predicted mask's blobs on other objects, and its leaks across an object's depth
   edge, are other surfaces), then points whose distance along the viewing ray is more than 3
   scaled MADs (+1 cm) from the median: a mask is never perfect.
2. Centre: in the plane perpendicular to the viewing ray r (the direction of the robust centroid),
   the midpoint of the points' extent: exact for centrally symmetric objects (boxes, cylinders,
   spheres) whose silhouette is symmetric about the centre. Along r: the front-most surface plus
   half of the object's depth, assumed equal to its largest lateral extent ("as deep as it is
   wide": exact for a sphere, within a few mm for boxes, cylinders and mugs seen from above;
   cones and flat tori, whose thin parts inflate the width, come out 1-2 cm too far).
   With the scene's support plane (`support`, geometry.plane: the table or floor the objects
   stand on) the centre is found in the plane's frame instead, as for an upright object that is
   as deep as it is wide: across the view, the midpoint of the points' horizontal extent; along
   the horizontal viewing direction, the front-most point plus half that width; vertically, the
   midpoint of the top and the bottom, the bottom on the plane when the lowest visible point is
   within SUPPORT_SNAP of it (the bottom of a sphere or the back of a box's base is unseen).
   Cones, tori and cylinders, whose silhouettes are not as deep as they are wide along the
   viewing ray, come out right; held-out true masks: median 0.88 -> 0.54 cm.
3. Orientation: principal axes (PCA) of the inlier points, with the convention below (`up` is
   the support plane's normal when there is one).
4. Size: extent along those axes of the inliers completed by their reflection through the centre
   (the unseen back of a centrally symmetric object), 99.5th percentile of |offset| x 2.

Axis convention (deterministic; a ROS user can rely on it):
  z = the principal axis closest to `up` (default -y optical, i.e. image up; pass the gravity
      "up" direction in the optical frame, e.g. from tf, to get z along the object's vertical
      axis), pointing the same way as `up`;
  x = of the two remaining axes, the one of larger variance, pointing towards the camera's right
      (+x optical; ties -> towards the camera, -z optical);
  y = z cross x (right-handed); the quaternion (x, y, z, w) is unit length with w >= 0."""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from scipy import ndimage

from .depth import DepthImage

if TYPE_CHECKING:
    from .plane import SupportPlane

UP_OPTICAL = np.array([0.0, -1.0, 0.0])     # image "up" in the optical frame (y points down)
MAX_POINTS = 4096
# Predicted masks leak a few pixels onto neighbours and the table at the object's depth, which no
# depth test can reject: the node leaves a rim this wide out of poses (pixels at 480 image rows;
# held-out scenes: median error of 1-click masks 1.79 -> 1.40 cm, text masks 2.80 -> 2.48, true
# masks 0.82 -> 0.88).
POSE_RIM_PX = 4.0
# Depth step (metres) between neighbouring grid pixels that separates two surfaces. Chosen on
# tuning scenes (seeds 950000+), 1-click / text / true masks: median error 1.72 / 2.27 / 1.08 cm
# with every surface, 1.48 / 1.79 / 1.12 at 1 cm, 1.37 / 1.66 / 1.12 at 2 cm, 1.38 / 1.66 / 1.17
# at 3 cm (true masks lose an occluded object's far part or a mug's handle). Also keeping the
# other surfaces at the largest's median depth (+-1 or 2 cm) was worse on predicted masks.
SURFACE_JUMP = 0.02
# An object whose lowest visible point is this close to the support plane stands on it. Seen from
# above, a sphere's or a mug's lowest visible point lies well above where it touches (a 5 cm ball
# at 65 degrees: 3 cm), and so does an object whose foot is hidden behind another. Tuning scenes
# (950000+, 134 objects), median error from true / 1-click / text masks: 0.48 / 0.92 / 1.39 cm at
# 2 cm, 0.39 / 0.51 / 1.25 at 4 cm (spheres 1.65 -> 0.36), 0.39 / 0.48 / 1.08 at 5 cm. An object
# stacked on one lower than this is placed on the table instead: at 5 cm a torus on a 3.7 cm box
# (test seeds 1000+) went 0.5 -> 1.9 cm, hence 4.
SUPPORT_SNAP = 0.04


def rim_px(height: int, px_at_480: float = POSE_RIM_PX) -> float:
    """The rim width for an image of `height` rows (leaks scale with the image: the model's
    masks come from a grid of fixed size)."""
    return px_at_480 * height / 480


@dataclass
class ObjectPose:
    position: np.ndarray     # [3] estimated object centre, optical frame (metres)
    quaternion: np.ndarray   # [4] x, y, z, w; unit, w >= 0
    rotation: np.ndarray     # [3,3] columns = object x, y, z axes in the optical frame
    size: np.ndarray         # [3] extent along the object's x, y, z axes (metres)
    valid_points: int        # inlier points used
    centroid: np.ndarray     # [3] robust centroid of the visible surface points


def quat_from_R(R) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, w >= 0 (ROS order)."""
    m = np.asarray(R, float)
    tr = np.trace(m)
    if tr > 0:
        s = 2 * np.sqrt(tr + 1)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4])
    else:                                    # Shepperd: divide by the largest diagonal term
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(max(1 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = np.zeros(4)
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def _jump_outliers(z, rel=0.03, abs_=0.01):
    """Pixels of z ([h,w] float64, inf = not the object's or no reading) lying far behind a
    neighbour (z - min over the 3x3 neighbours > abs_ + rel * z): a background or table reading
    leaking into the mask edge. Object surfaces, even at grazing angles, change much less than
    that between neighbouring pixels."""
    h, w = z.shape
    p = np.full((h + 2, w + 2), np.inf)
    p[1:-1, 1:-1] = z
    nmin = np.minimum(p[:-2, :-2], p[:-2, 1:-1])
    for dy, dx in ((0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)):
        np.minimum(nmin, p[dy:dy + h, dx:dx + w], out=nmin)
    with np.errstate(invalid="ignore"):
        return np.isfinite(z) & (z - nmin > abs_ + rel * z)


def surface_parts(sel: np.ndarray, z: np.ndarray, jump: float):
    """(labels, count) of the 4-connected parts of `sel` ([h,w] bool) whose neighbouring pixels'
    depths `z` differ by less than `jump` (a pixel without a reading links to its neighbours).
    Labelled on a grid of twice the resolution whose odd cells are the links between pixels, so
    that one C labelling pass cuts the depth steps."""
    h, w = sel.shape
    g = np.zeros((2 * h - 1, 2 * w - 1), bool)
    g[::2, ::2] = sel
    with np.errstate(invalid="ignore"):
        g[::2, 1::2] = sel[:, :-1] & sel[:, 1:] & ~(np.abs(z[:, :-1] - z[:, 1:]) >= jump)
        g[1::2, ::2] = sel[:-1] & sel[1:] & ~(np.abs(z[:-1] - z[1:]) >= jump)
    lab, n = ndimage.label(g)         # a link is set only between two set pixels: no part is links alone
    return lab[::2, ::2], n


def largest_surface(sel: np.ndarray, z: np.ndarray, jump: float) -> np.ndarray:
    """The largest part of `sel` ([h,w] bool) in surface_parts."""
    lab, n = surface_parts(sel, z, jump)
    if n <= 1:
        return sel
    return lab == np.argmax(np.bincount(lab[sel], minlength=n + 1)[1:]) + 1


def dilate_disc(mask: np.ndarray, r: int, outside: bool = False) -> np.ndarray:
    """Binary dilation by a disc of radius r pixels (numpy only); `outside`: what lies beyond
    the array. Erosion is ~dilate_disc(~m, r, outside=True) (nothing outside the image)."""
    m = np.asarray(mask, bool)
    if r <= 0:
        return m.copy()
    h, w = m.shape
    p = np.pad(m, r, constant_values=outside)
    out = np.zeros_like(m)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= p[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def _cross(a, b) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross costs ~100 us a call; a pose makes four)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _quantiles(x, qs) -> np.ndarray:
    """np.quantile(x, qs, axis=-1).T for 1-D or 2-D x (linear interpolation, the same values),
    with one partition for all of qs and the index arithmetic in plain Python: np.median /
    np.percentile spend 50-150 us a call in bookkeeping, and a pose needs seven. Points are kept
    as [3, N] rows so that each partition runs over contiguous memory."""
    x = np.asarray(x)
    n = x.shape[-1]
    pos = [q * (n - 1) for q in qs]
    lo = [int(math.floor(p)) for p in pos]
    hi = [min(i + 1, n - 1) for i in lo]
    part = np.partition(x, sorted(set(lo + hi)), axis=-1)
    a, b = part[..., lo], part[..., hi]
    return (a + (b - a) * np.array([p - i for p, i in zip(pos, lo)])).T


def _median(x):
    return _quantiles(x, [0.5])[0]


def _lateral_basis(r):
    a = np.array([1.0, 0.0, 0.0]) if abs(r[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _cross(r, a)
    e1 /= np.linalg.norm(e1)
    return e1, _cross(r, e1)


def _axes(X, centre, up):
    """Principal axes of points X [3,N] with the module's sign/order convention: columns x, y, z."""
    q = X - centre[:, None]
    cov = q @ q.T / q.shape[1]
    var, vec = np.linalg.eigh(cov)           # ascending variance
    up = np.asarray(up, float)
    up = up / np.linalg.norm(up)
    iz = int(np.argmax(np.abs(vec.T @ up)))
    z = vec[:, iz] * (1.0 if vec[:, iz] @ up >= 0 else -1.0)
    rest = [i for i in (2, 1, 0) if i != iz]  # larger variance first
    x = vec[:, rest[0]]
    s = x[0] if abs(x[0]) > 1e-9 else -x[2]   # towards the camera's right, else towards the camera
    x = x * (1.0 if s >= 0 else -1.0)
    y = _cross(z, x)
    x = _cross(y, z)                         # re-orthogonalise against rounding
    R = np.empty((3, 3))
    R[:, 0], R[:, 1], R[:, 2] = x / np.sqrt(x @ x), y / np.sqrt(y @ y), z
    return R


def mask_box(mask: np.ndarray):
    """(x_min, y_min, x_max, y_max) of a [H,W] bool mask, max exclusive; None when empty."""
    ys = np.flatnonzero(mask.any(1))
    if not len(ys):
        return None
    xs = np.flatnonzero(mask[ys[0]:ys[-1] + 1].any(0))     # only the rows it spans
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def estimate_pose(depth_m, K, mask, min_points: int = 20, up=UP_OPTICAL, box=None,
                  erode_px: float = 0.0, surface_jump: float = SURFACE_JUMP,
                  support: Optional["SupportPlane"] = None) -> ObjectPose | None:
    """Pose of the object under `mask` ([H,W] bool) from `depth_m` and intrinsics K. depth_m is
    [H,W] metres (NaN or <= 0 = no reading) or a `DepthImage` (raw encoding, converted here for
    the mask's box only). `box`, the mask's (x_min, y_min, x_max, y_max) when the caller has it,
    saves two scans of the whole image. `erode_px`: the mask's rim this wide is not used (a
    predicted mask leaks a few pixels onto neighbours and the table at the same depth, which no
    depth test can reject); the extent it removes is added back to the centre's depth and to the
    size. `surface_jump`: only the largest surface of the mask is used (see the module
    docstring; 0 = every surface). `support`: the scene's support plane (fit_support_plane), which
    gives up and the bottom (see the module docstring). None when fewer than `min_points` usable points remain
    (empty mask, no valid depth, everything rejected as outliers). See the module docstring."""
    lazy = isinstance(depth_m, DepthImage)
    depth = depth_m if lazy else np.asarray(depth_m)
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(depth.shape):
        raise ValueError(f"mask shape {mask.shape} != depth shape {tuple(depth.shape)}")
    box = mask_box(mask) if box is None else box
    if box is None:
        return None
    # Work on the mask's bounding box only (an object is a small part of the image): the same
    # camera with the principal point shifted.
    x0, y0, x1, y1 = box
    m = mask[y0:y1, x0:x1]
    n_mask = int(np.count_nonzero(m))
    if n_mask < min_points:
        return None
    # Medians and percentiles of a few thousand points are as good as of all of them, and the
    # node computes a pose per object per frame: a large mask is read on a pixel grid of stride
    # s (the same camera with focal lengths / s), so no step costs more than ~MAX_POINTS pixels.
    s = max(1, math.ceil(math.sqrt(n_mask / MAX_POINTS)))
    if _kernel is not None:
        pose = _kernel_pose(depth, lazy, mask, box, n_mask, s, int(round(erode_px / s)), min_points,
                            surface_jump, K, up, support)
        if pose is not NotImplemented:
            return pose
    rows, cols = slice(y0, y1, s), slice(x0, x1, s)
    m = m[::s, ::s]
    rim = 0                                   # grid cells eroded
    for rg in range(int(round(erode_px / s)), 0, -1):
        e = ~dilate_disc(~m, rg, outside=True)
        if np.count_nonzero(e) >= max(min_points, 0.3 * np.count_nonzero(m)):   # keep small masks
            m, rim = e, rg
            break
    z = depth.metres(rows, cols) if lazy else depth[rows, cols]
    K = np.array(K, np.float64, copy=True)
    K[0, 2] -= x0
    K[1, 2] -= y0
    K[:2] /= s
    with np.errstate(invalid="ignore"):
        z = np.where(m & (z > 0), z, np.inf).astype(np.float64)   # NaN > 0 is False
    sel = np.isfinite(z)
    sel &= ~_jump_outliers(z)
    if surface_jump > 0:
        sel = largest_surface(sel, z, surface_jump)
    v, u = np.nonzero(sel)
    n = len(v)
    if n < min_points:
        return None
    X = np.empty((3, n))                      # optical-frame points as rows x, y, z
    X[2] = z[v, u]
    X[1] = (v - K[1, 2]) * X[2] / K[1, 1]
    X[0] = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) * X[2] / K[0, 0]   # skew is usually 0
    n_valid = n_mask * n / max(int(np.count_nonzero(m)), 1)      # in full-resolution pixels

    # along the viewing ray through the robust centroid: MAD rejection of leaks and stray pixels
    med = _median(X)
    r = med / np.sqrt(med @ med)
    d = np.einsum("i,ij->j", r, X)           # not BLAS: see ros.process_tuning.limit_openblas_threads
    md = _median(d)
    dev = np.abs(d - md)
    mad = 1.4826 * _median(dev)
    keep = dev <= 3 * mad + 0.01
    X, d = X[:, keep], d[keep]
    if X.shape[1] < min_points:
        return None
    centroid = _median(X)

    # centre: in the support plane's frame when there is one, else along the viewing ray
    front = _quantiles(d, [0.01])[0]
    rim_m = rim * front / (0.5 * (K[0, 0] + K[1, 1]))     # the eroded rim, in metres at the front
    position = None
    if support is not None:
        up = support.normal
        fw = r - (r @ up) * up                # the viewing direction, horizontal
        if fw @ fw > 1e-6:                    # (not looking straight down at the plane)
            fw /= np.sqrt(fw @ fw)
            side = _cross(up, fw)
            (s_lo, h_lo), (s_hi, h_hi) = _quantiles(np.stack([side, up]) @ X, [0.005, 0.995])
            f_front = _quantiles(np.einsum("i,ij->j", fw, X), [0.01])[0]
            floor = -support.offset           # up . x on the plane
            bottom = floor if h_lo - floor < SUPPORT_SNAP else h_lo - rim_m
            position = ((s_lo + s_hi) / 2 * side + (f_front + (s_hi - s_lo) / 2 + rim_m) * fw
                        + (bottom + h_hi + rim_m) / 2 * up)
    if position is None:
        # centre: lateral midpoint of the extent, front surface + half the largest lateral extent
        e1, e2 = _lateral_basis(r)
        (a_lo, b_lo), (a_hi, b_hi) = _quantiles(np.stack([e1, e2]) @ X, [0.005, 0.995])
        half_depth = max(a_hi - a_lo, b_hi - b_lo) / 2 + rim_m
        position = (a_lo + a_hi) / 2 * e1 + (b_lo + b_hi) / 2 * e2 + (front + half_depth) * r

    R = _axes(X, centroid, up)
    # size: the visible points plus their reflection through the centre (the unseen back)
    size = 2 * _quantiles(np.abs(R.T @ (X - position[:, None])), [0.995])[0]
    if rim:                                   # the rim, on each axis as far as it is lateral
        size = size + 2 * rim_m * np.sqrt(np.clip(1 - (R.T @ r) ** 2, 0.0, 1.0))
    return ObjectPose(position=position, quaternion=quat_from_R(R), rotation=R, size=size,
                      valid_points=int(round(n_valid * X.shape[1] / n)), centroid=centroid)


# ---------------------------------------------------------------------------------------------
# The same pose in C (pose_kernel.c, built by pip install / colcon next to this file), loaded with
# ctypes; estimate_pose falls back to the numpy code above where it is missing or cannot read
# the depth's type. Set `use_kernel(False)` to compare the two.

_KINDS = {np.dtype(np.uint16): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2}


def _load_kernel():
    for path in sorted(Path(__file__).parent.glob("_pose_kernel*.so")):
        try:
            f = ctypes.CDLL(str(path)).seem_pose
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_void_p] * 5      # parameters travel in two arrays: ctypes is slow per argument
        return f
    return None


_loaded = _load_kernel()
_kernel = _loaded


def use_kernel(on: bool = True) -> bool:
    """Use the C pose where it was built (the default); returns whether it is in use now."""
    global _kernel
    _kernel = _loaded if on else None
    return _kernel is not None


def _kernel_pose(depth, lazy, mask, box, n_mask, s, rg0, min_points, surface_jump, K, up, support):
    raw = depth.raw if lazy else depth
    kind = _KINDS.get(raw.dtype)
    if kind is None or (not lazy and kind == 0) or raw.ndim != 2 or mask.dtype != np.bool_:
        return NotImplemented                 # e.g. a big-endian depth view: numpy reads it
    sup = support is not None
    ip = np.array((kind, *raw.strides, int(lazy), *mask.strides, *box, n_mask, s, rg0, min_points, int(sup)),
                  np.int64)
    normal = support.normal if sup else up
    dp = np.array((*np.asarray(K, np.float64).ravel().tolist(), *up, *normal,
                   support.offset if sup else 0.0, SUPPORT_SNAP, depth.scale if lazy else 1.0,
                   depth.min_range if lazy else 0.0, depth.max_range if lazy else math.inf, surface_jump),
                  np.float64)
    out = np.empty(24)
    n = _kernel(raw.ctypes.data, mask.ctypes.data, ip.ctypes.data, dp.ctypes.data, out.ctypes.data)
    if n < 0:
        raise MemoryError("estimate_pose: out of memory")
    if n == 0:
        return None
    return ObjectPose(position=out[0:3], quaternion=out[20:24], rotation=out[3:12].reshape(3, 3),
                      size=out[12:15], valid_points=int(round(out[18])), centroid=out[15:18])
