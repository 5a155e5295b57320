"""The support plane (table top, floor) of a depth image: what objects rest on.

A pose needs to know which way is up and where an object's unseen bottom is. The camera rarely
says (no tf on a pip install, and image-up tilts with the camera's pitch), but the depth image
does: the largest plane facing roughly image-up is the surface the objects stand on. Found by
RANSAC on a strided sample of the image's points, then refined by least squares on its inliers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .depth import DepthImage
from .pose import UP_OPTICAL


@dataclass
class SupportPlane:
    normal: np.ndarray      # [3] unit, optical frame, pointing to the side the objects stand on
    offset: float           # normal . x + offset = 0 on the plane (metres)
    inliers: float          # fraction of the sampled points on it

    def height(self, X: np.ndarray) -> np.ndarray:
        """Signed distance above the plane of points X [3, N] (or one [3])."""
        return self.normal @ X + self.offset


def fit_support_plane(depth, K, up=UP_OPTICAL, max_tilt_deg: float = 85.0, tolerance: float = 0.006,
                      stride: int = 16, iterations: int = 128, min_inliers: float = 0.1,
                      seed: int = 0, prior: Optional[SupportPlane] = None) -> Optional[SupportPlane]:
    """The plane with the most points within `tolerance` metres among those whose normal is
    within `max_tilt_deg` of `up` (a wall or the objects' sides never qualify); `depth` in
    metres [H, W] (NaN / <= 0 = no reading) or a DepthImage, read every `stride` pixels. None
    when no plane holds `min_inliers` of the points. Deterministic: the hypotheses come from a
    fixed seed, all scored in one matrix product. `prior` (the last frame's plane) is tried
    first: while it still holds 90 % of the points it held, it is only refined (a fifth of the
    cost)."""
    if isinstance(depth, DepthImage):
        z = depth.metres(slice(None, None, stride), slice(None, None, stride))
    else:
        z = np.asarray(depth)[::stride, ::stride]
    z = np.asarray(z, np.float64)
    v, u = np.nonzero(np.isfinite(z) & (z > 0))
    if len(v) < 50:
        return None
    z = z[v, u]
    K = np.asarray(K, np.float64)
    X = np.stack([(u * stride - K[0, 2]) * z / K[0, 0], (v * stride - K[1, 2]) * z / K[1, 1], z])   # [3, N]
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    # Products over the points by einsum, not BLAS: a parallel BLAS call leaves threads spinning
    # next to the model's (see ros.process_tuning.limit_openblas_threads).
    if prior is not None:
        inl = np.abs(np.einsum("i,ij->j", prior.normal, X) + prior.offset) < tolerance
        if inl.mean() >= max(min_inliers, 0.9 * prior.inliers):
            return _refined(X[:, inl], X.shape[1], up)
    rng = np.random.default_rng(seed)
    a, b, c = (X[:, rng.integers(0, X.shape[1], iterations)] for _ in range(3))
    n = np.cross((b - a).T, (c - a).T)                                  # [I, 3]
    norm = np.linalg.norm(n, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm[:, None]
    n *= np.where(n @ up < 0, -1.0, 1.0)[:, None]
    ok = (norm > 1e-12) & (n @ up >= np.cos(np.radians(max_tilt_deg)))
    if not ok.any():
        return None
    n, a = n[ok], a[:, ok]
    d = -np.einsum("ij,ji->i", n, a)
    # Every hypothesis scored at once, in float32 (a tenth of the float64 time; 6 mm at a few
    # metres is far above its precision).
    r = np.einsum("ij,jk->ik", n.astype(np.float32), X.astype(np.float32))
    r += d.astype(np.float32)[:, None]
    count = np.count_nonzero(np.abs(r, out=r) < tolerance, axis=1)
    best = int(np.argmax(count))
    if count[best] < min_inliers * X.shape[1]:
        return None
    return _refined(X[:, np.abs(np.einsum("i,ij->j", n[best], X) + d[best]) < tolerance], X.shape[1], up)


def _refined(inl: np.ndarray, n_points: int, up: np.ndarray) -> SupportPlane:
    """Least-squares plane through the inlier points [3, M]."""
    centre = inl.mean(1)
    q = inl - centre[:, None]
    normal = np.linalg.eigh(np.einsum("ij,kj->ik", q, q))[1][:, 0]             # least variance
    normal = normal if normal @ up >= 0 else -normal
    return SupportPlane(normal, float(-normal @ centre), float(inl.shape[1] / n_points))
