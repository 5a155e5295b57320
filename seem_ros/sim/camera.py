"""Pinhole camera, rigid transforms and look-at poses (no ROS).

Frames: the world is z-up with the floor at z = 0. The camera frame is the OpenCV / ROS *optical*
frame: x right, y down, z forward. ``T_a_b`` maps points from frame b to frame a (4x4).
Pixel (u, v) is column u, row v; its centre has integer coordinates (OpenCV convention)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rot_axis(axis, a: float) -> np.ndarray:
    """Rodrigues rotation about a (not necessarily unit) axis."""
    k = np.asarray(axis, float)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def make_T(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def quat_from_R(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -- ROS order -- with w >= 0."""
    m = np.asarray(R, float)
    tr = np.trace(m)
    if tr > 0:
        s = 2 * np.sqrt(tr + 1)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = s / 4
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def R_from_quat(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """K for square pixels and the principal point at the image centre."""
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def look_at(eye, target, up=(0, 0, 1), roll: float = 0.0) -> np.ndarray:
    """T_world_cam of an optical-frame camera at `eye` looking at `target`, rolled about its
    viewing axis by `roll` radians (positive turns the image clockwise)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:                      # looking straight up/down: any right vector
        x = np.cross(z, (0, 1, 0))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1) @ rot_z(roll)
    return make_T(R, eye)


@dataclass
class Camera:
    """Intrinsics and pose of a pinhole camera (no distortion)."""
    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray
    frame_id: str = "camera_optical_frame"

    @classmethod
    def looking_at(cls, eye, target, width=640, height=480, hfov_deg=60.0, roll=0.0):
        return cls(intrinsics(width, height, hfov_deg), width, height, look_at(eye, target, roll=roll))

    @property
    def T_cam_world(self) -> np.ndarray:
        return inv_T(self.T_world_cam)

    @property
    def position(self) -> np.ndarray:
        return self.T_world_cam[:3, 3].copy()

    def project(self, p_world) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [N,2] and optical-frame depth z [N] of world points [N,3]."""
        T = self.T_cam_world
        pc = np.asarray(p_world, float).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (pc[:, :2] / z[:, None]) * np.diag(self.K)[:2] + self.K[:2, 2]
        return uv, z

    def rays(self) -> np.ndarray:
        """[H,W,3] optical-frame ray directions scaled so that their z is 1: a hit at parameter t
        along one of them has z-depth exactly t."""
        return pixel_rays(self.K, self.width, self.height)

    def camera_info(self) -> dict:
        return camera_info(self.K, self.width, self.height, self.frame_id)


_RAYS: dict = {}


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    key = (width, height, tuple(np.asarray(K, float).ravel()))
    r = _RAYS.get(key)
    if r is None:
        u = (np.arange(width) - K[0, 2]) / K[0, 0]
        v = (np.arange(height) - K[1, 2]) / K[1, 1]
        r = np.empty((height, width, 3))
        r[..., 0], r[..., 1], r[..., 2] = u[None, :], v[:, None], 1.0
        r.flags.writeable = False
        if len(_RAYS) > 8:
            _RAYS.clear()
        _RAYS[key] = r
    return r


def camera_info(K, width: int, height: int, frame_id: str = "camera_optical_frame") -> dict:
    """The fields of sensor_msgs/CameraInfo (plumb_bob, no distortion), as plain Python values."""
    K = np.asarray(K, float)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {"header": {"frame_id": frame_id}, "width": int(width), "height": int(height),
            "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": K.ravel().tolist(),
            "r": np.eye(3).ravel().tolist(), "p": P.ravel().tolist(),
            "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


def backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Optical-frame 3D points [N,3] of the pixels of `mask` (default: all) with depth > 0."""
    sel = depth > 0 if mask is None else (mask & (depth > 0))
    v, u = np.nonzero(sel)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
