"""Sequences: a scene over time with a moving camera and moving objects, deterministic per seed.

The camera orbits a little and pans sideways and back, far enough that a chosen object
(``exit_object``) leaves the view completely around the middle of the sequence and comes back.
Some objects slide back and forth on the table (spheres roll), without touching anything. All
motions are periodic over the sequence: its last frame repeats the geometry of its first."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .camera import Camera, intrinsics, look_at, make_T, rot_axis, rot_z
from .render import Frame, render
from .scene import Scene, SceneObject, footprint_radius, make_scene


@dataclass
class Motion:
    """Object motion: position p0 + axis * amp * sin(2 pi cycles s), s = i / (n - 1) in [0, 1];
    yaw spins `turns` full turns; a rolling sphere turns about the horizontal axis instead."""
    amp: float
    axis: np.ndarray                 # unit xy direction (3-vector, z = 0)
    cycles: int = 1
    turns: int = 0
    roll_radius: float = 0.0         # > 0: rolls without slipping (spheres)

    def offset(self, s: float) -> float:
        return self.amp * np.sin(2 * np.pi * self.cycles * s)

    def pose(self, T0: np.ndarray, s: float) -> np.ndarray:
        x = self.offset(s)
        R = T0[:3, :3]
        if self.roll_radius > 0:
            R = rot_axis(np.cross([0, 0, 1.0], self.axis), x / self.roll_radius) @ R
        elif self.turns:
            R = rot_z(2 * np.pi * self.turns * s) @ R
        return make_T(R, T0[:3, 3] + x * self.axis)


@dataclass
class CameraPath:
    """Orbit about the look-at target (azimuth and elevation wobble, periodic) plus a sideways pan
    that rises from 0 to `pan` metres at the middle and back (sin^2 profile); the eye moves with
    the target by `follow` (0: the camera turns in place, 1: it slides)."""
    eye: np.ndarray
    target: np.ndarray
    lateral: np.ndarray              # unit horizontal pan direction
    pan: float = 0.0
    follow: float = 0.5
    d_az: float = 0.0                # radians, amplitude
    d_el: float = 0.0
    roll: float = 0.0

    def pose(self, s: float) -> np.ndarray:
        w = np.sin(2 * np.pi * s)
        rel = self.eye - self.target
        rel = rot_z(self.d_az * w) @ rel
        horiz = np.hypot(rel[0], rel[1])
        el = np.arctan2(rel[2], horiz) + self.d_el * np.sin(4 * np.pi * s)
        r = np.linalg.norm(rel)
        az = np.arctan2(rel[1], rel[0])
        rel = r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        shift = self.pan * np.sin(np.pi * s) ** 2 * self.lateral
        target = self.target + shift
        return look_at(target + rel - (1 - self.follow) * shift, target, roll=self.roll)


@dataclass
class Sequence:
    scene: Scene                     # the scene at frame 0
    n_frames: int
    camera_path: CameraPath
    motions: dict = field(default_factory=dict)     # object id -> Motion
    fps: float = 10.0
    exit_object: int | None = None   # id of an object that leaves the view and comes back

    def __len__(self) -> int:
        return self.n_frames

    def _s(self, i: int) -> float:
        return i / max(self.n_frames - 1, 1)

    def camera_at(self, i: int) -> Camera:
        return dataclasses.replace(self.scene.camera, T_world_cam=self.camera_path.pose(self._s(i)))

    def scene_at(self, i: int) -> Scene:
        s = self._s(i)
        objs = [dataclasses.replace(o, T_world=self.motions[o.id].pose(o.T_world, s))
                if o.id in self.motions else o for o in self.scene.objects]
        return dataclasses.replace(self.scene, camera=self.camera_at(i), objects=objs)

    def render(self, i: int, **kw) -> Frame:
        return render(self.scene_at(i), index=i, stamp=i / self.fps, **kw)

    def __getitem__(self, i: int) -> Frame:
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(i)
        return self.render(i % self.n_frames)

    def __iter__(self):
        return (self.render(i) for i in range(self.n_frames))


def _out_of_view(cam: Camera, obj: SceneObject, margin: float = 2.0) -> bool:
    """True when the whole bounding box projects outside the image (or behind the camera)."""
    uv, z = cam.project(obj.corners())
    if np.all(z <= 1e-3):
        return True
    if np.any(z <= 1e-3):
        return False
    u, v = uv[:, 0], uv[:, 1]
    return bool(np.all(u < -margin) or np.all(u > cam.width - 1 + margin)
                or np.all(v < -margin) or np.all(v > cam.height - 1 + margin))


def _plan_motions(rng, scene: Scene, n_movers: int, exclude: set, n_frames: int) -> dict:
    """Slides (and rolls) that keep every footprint on the table and apart at every frame."""
    table = scene.table
    free = [o for o in scene.objects if o.support == 0 and o.id not in exclude
            and not any(p.support == o.id for p in scene.objects)]
    rng.shuffle(free)
    resting = [o for o in scene.objects if o.support == 0]
    radius = {o.id: footprint_radius(o.shape, o.T_world[:3, :3]) for o in resting}
    s = np.linspace(0, 1, min(n_frames, 41))
    motions: dict = {}
    for o in free[:n_movers]:
        for _ in range(20):
            a = rng.uniform(0, 2 * np.pi)
            m = Motion(float(rng.uniform(0.05, 0.2)), np.array([np.cos(a), np.sin(a), 0.0]),
                       int(rng.integers(1, 3)), int(rng.integers(-1, 2)) if o.shape.name != "sphere" else 0,
                       o.shape.size[0] / 2 if o.shape.name == "sphere" else 0.0)
            trial = {**motions, o.id: m}
            xy = {p.id: np.array([p.T_world[:2, 3] + (trial[p.id].offset(si) * trial[p.id].axis[:2]
                                                      if p.id in trial else 0) for si in s])
                  for p in resting}
            lim = np.array(table.size) / 2 - 0.01
            ok = np.all(np.abs(xy[o.id]) <= lim - radius[o.id])
            for p in resting:
                if ok and p.id != o.id:
                    gap = np.linalg.norm(xy[o.id] - xy[p.id], axis=1)
                    ok = bool(np.all(gap >= radius[o.id] + radius[p.id] + 0.003))
            if ok:
                motions[o.id] = m
                break
    return motions


def _path_ok(path: CameraPath, scene: Scene) -> bool:
    """The eye stays inside the room and clear of the objects along the whole path."""
    half = np.array(scene.room.half) - 0.1
    for s in np.linspace(0, 1, 21):
        eye = path.pose(s)[:3, 3]
        if np.any(np.abs(eye[:2]) > half) or not 0.1 < eye[2] < scene.room.height - 0.1:
            return False
        for o in scene.objects:
            lo, hi = o.world_aabb()
            if np.linalg.norm(np.maximum(np.maximum(lo - eye, eye - hi), 0)) < 0.1:
                return False
    return True


def make_sequence(seed: int, n_frames: int = 60, width: int = 640, height: int = 480, fps: float = 10.0,
                  n_movers: int | None = None, **scene_kw) -> Sequence:
    """A random scene (as make_scene(seed, ...)) animated over n_frames; deterministic per seed."""
    scene = make_scene(seed, width, height, **scene_kw)
    rng = np.random.default_rng([seed, 0x5E0])
    cam = scene.camera
    T = cam.T_world_cam
    eye = T[:3, 3].copy()
    fwd = T[:3, 2]
    target = eye + fwd * ((eye[2] - scene.table.height - 0.03) / max(-fwd[2], 1e-3))  # on the table
    right = np.array([T[0, 0], T[1, 0], 0.0])
    right /= np.linalg.norm(right)
    Rz = look_at(eye, target)[:3, :3].T @ T[:3, :3]       # the scene camera's roll about its axis
    roll = float(np.arctan2(Rz[1, 0], Rz[0, 0]))
    path = CameraPath(eye, target, right, 0.0, float(rng.uniform(0.2, 0.9)),
                      float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.08, 0.08)), roll)

    # The exit object: visible in frame 0 (checked on a small render), closest to a side of the
    # image; it stays still and the camera pans away from it until it is out of view.
    hfov = 2 * np.degrees(np.arctan(width / 2 / cam.K[0, 0]))
    small = dataclasses.replace(scene, camera=Camera(intrinsics(160, 120, hfov), 160, 120, cam.T_world_cam))
    seen = {o.id: o.visible_pixels for o in render(small, shadows=False, noise=False).objects}
    cands = [o for o in scene.objects if seen[o.id] >= 12]
    exit_obj = None
    if cands:
        uv = {o.id: cam.project(o.T_world[:3, 3][None])[0][0, 0] for o in cands}
        exit_obj = min(cands, key=lambda o: min(uv[o.id], width - uv[o.id]))
        path.lateral = right if uv[exit_obj.id] < width / 2 else -right   # pan away from it
        for follow in (path.follow, 0.0):          # 0: turn in place if sliding leaves the room
            path.follow = follow
            for pan in np.arange(0.05, 2.0, 0.05):
                path.pan = pan
                if _out_of_view(dataclasses.replace(cam, T_world_cam=path.pose(0.5)), exit_obj):
                    path.pan = float(pan * 1.3)    # out of view for a stretch, not just one frame
                    break
            if _path_ok(path, scene):
                break
        else:
            path.pan, exit_obj = 0.0, None
    if not _path_ok(path, scene):
        path.d_az = path.d_el = 0.0
    n = int(rng.integers(1, 4)) if n_movers is None else n_movers
    exclude = {exit_obj.id} if exit_obj else set()
    motions = _plan_motions(rng, scene, n, exclude, n_frames)
    return Sequence(scene, n_frames, path, motions, fps, exit_obj.id if exit_obj else None)
