"""Pinhole camera helpers (OpenCV / ROS optical frame: x right, y down, z forward; pixel (u, v) =
(column, row) with integer pixel centres). No distortion: use rectified images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    K: np.ndarray      # 3x3 intrinsics
    width: int
    height: int

    def __post_init__(self):
        K = np.asarray(self.K, float).reshape(3, 3)
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            raise ValueError(f"invalid intrinsics: fx={K[0, 0]}, fy={K[1, 1]} (uncalibrated camera?)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_camera_info_fields(cls, k, width: int, height: int) -> "PinholeCamera":
        """From sensor_msgs/CameraInfo's `k` (9 floats, row-major), `width` and `height`."""
        return cls(np.asarray(k, float).reshape(3, 3), width, height)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def scaled(self, width: int, height: int) -> "PinholeCamera":
        """The same camera for an image resized to width x height (e.g. a mask predicted at a
        lower resolution). Pixel centres map as u' = (u + 0.5) * sx - 0.5, hence the
        principal-point shift, so that integer pixel centres stay consistent."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return PinholeCamera(K, width, height)

    def backproject(self, depth_m, mask=None) -> np.ndarray:
        return backproject(depth_m, self.K, mask)

    def project(self, points):
        return project(points, self.K)


def backproject(depth_m, K, mask=None) -> np.ndarray:
    """Optical-frame points [N,3] (float64) of the pixels of `mask` (default: all) whose depth is
    finite and > 0, in row-major pixel order. depth_m is z along the optical axis (metres)."""
    d = np.asarray(depth_m)
    K = np.asarray(K, float)
    with np.errstate(invalid="ignore"):
        sel = np.isfinite(d) & (d > 0)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != d.shape:
            raise ValueError(f"mask shape {m.shape} != depth shape {d.shape}")
        sel &= m
    v, u = np.nonzero(sel)
    z = d[v, u].astype(np.float64)
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) * z / K[0, 0]   # skew is usually 0
    return np.stack([x, (v - K[1, 2]) * z / K[1, 1], z], axis=1)


def project(points, K):
    """Pixel coordinates of optical-frame points [N,3]: returns (uv [N,2], valid [N]) where valid
    means in front of the camera (z > 0); uv of invalid points is NaN (never a wrapped-around
    pixel from a point behind the camera)."""
    p = np.asarray(points, float).reshape(-1, 3)
    K = np.asarray(K, float)
    z = p[:, 2]
    valid = np.isfinite(p).all(axis=1) & (z > 0)
    uv = np.full((len(p), 2), np.nan)
    zv = z[valid]
    uv[valid, 0] = K[0, 0] * p[valid, 0] / zv + K[0, 1] * p[valid, 1] / zv + K[0, 2]
    uv[valid, 1] = K[1, 1] * p[valid, 1] / zv + K[1, 2]
    return uv, valid


def pixel_in_image(u, v, width: int, height: int):
    """True where (u, v) falls on a pixel of a width x height image: pixel centres are integers,
    so pixel i covers [i - 0.5, i + 0.5). NaN is outside. Works on scalars and arrays."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    with np.errstate(invalid="ignore"):
        r = (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    return bool(r) if r.ndim == 0 else r
