"""Procedural tabletop scenes, deterministic from a seed.

World frame: z up, the floor at z = 0, the table centred on the z axis with its top at
``scene.table.height``. Objects rest on the table (or on top of a box, cube or upright cylinder)
with exact contact; their footprints do not overlap but they may hide one another from the camera.

Classes: ``CLASS_NAMES[0]`` is "background" (walls, floor, ceiling), ``CLASS_NAMES[1..7]`` are
the shapes (``SHAPES``), ``CLASS_NAMES[8]`` is "table". The semantic image holds these indices; an
object's phrase ("red mug") combines its colour name and shape."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .camera import Camera, intrinsics, look_at, make_T, rot_x, rot_z
from .shapes import SHAPES, Box, Cylinder, Shape, random_shape

CLASS_NAMES = ("background",) + SHAPES + ("table",)
TABLE_CLASS = len(CLASS_NAMES) - 1
COLOURS = {                                        # name -> reference albedo (sRGB, 0..1)
    "red": (0.78, 0.08, 0.07), "green": (0.12, 0.58, 0.16), "blue": (0.08, 0.22, 0.78),
    "yellow": (0.95, 0.82, 0.10), "orange": (0.97, 0.45, 0.06), "purple": (0.45, 0.13, 0.62),
    "white": (0.90, 0.90, 0.88), "black": (0.07, 0.07, 0.08),
}
COLOUR_NAMES = tuple(COLOURS)


def class_id(shape_name: str) -> int:
    return CLASS_NAMES.index(shape_name)


def phrase(obj) -> str:
    """Natural-language name of an object, e.g. "red mug" (accepts a SceneObject or ObjectState)."""
    return f"{obj.colour} {obj.shape_name}"


@dataclass
class SceneObject:
    id: int                          # instance id in renders (1..)
    shape: Shape
    colour: str
    material: dict                   # rgb, pattern, amp, tex, ks, shininess, ...
    T_world: np.ndarray              # object frame -> world (object frame: bbox centre, z up)
    support: int = 0                 # 0: on the table, else the id of the object it stands on

    @property
    def shape_name(self) -> str:
        return self.shape.name

    @property
    def class_id(self) -> int:
        return class_id(self.shape.name)

    @property
    def phrase(self) -> str:
        return phrase(self)

    @property
    def size(self) -> np.ndarray:
        return self.shape.size

    def world_aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box of the object's bounding box (exact for upright or 90-degree
        tipped objects, which is how scenes place them)."""
        half = np.abs(self.T_world[:3, :3]) @ (self.shape.size / 2)
        c = self.T_world[:3, 3]
        return c - half, c + half

    def corners(self) -> np.ndarray:
        """The 8 world corners [8,3] of the object's bounding box."""
        s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
        return (s * self.shape.size / 2) @ self.T_world[:3, :3].T + self.T_world[:3, 3]


@dataclass
class Table:
    size: tuple = (1.4, 0.9)         # x, y extents of the top (metres)
    height: float = 0.75             # z of the top surface
    thickness: float = 0.035
    leg: float = 0.05                # leg cross-section
    material: dict = field(default_factory=lambda: {"kind": "plain", "c0": (0.6, 0.45, 0.3), "tex": 0})
    side_rgb: tuple = (0.4, 0.3, 0.2)

    def parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(lo, hi) world corners of the top slab and the four legs."""
        sx, sy = self.size[0] / 2, self.size[1] / 2
        h, th, lg = self.height, self.thickness, self.leg
        out = [(np.array([-sx, -sy, h - th]), np.array([sx, sy, h]))]
        for ix in (-1, 1):
            for iy in (-1, 1):
                cx, cy = ix * (sx - 0.06), iy * (sy - 0.06)
                out.append((np.array([cx - lg / 2, cy - lg / 2, 0.0]),
                            np.array([cx + lg / 2, cy + lg / 2, h - th])))
        return out


@dataclass
class Room:
    half: tuple = (2.5, 2.2)         # half extents in x, y: walls at +-half
    height: float = 2.6
    wall: dict = field(default_factory=lambda: {"kind": "plain", "c0": (0.8, 0.78, 0.72), "tex": 1})
    floor: dict = field(default_factory=lambda: {"kind": "plain", "c0": (0.5, 0.5, 0.5), "tex": 2})
    ceiling_rgb: tuple = (0.92, 0.92, 0.9)


@dataclass
class Light:
    direction: np.ndarray = field(default_factory=lambda: np.array([0.3, -0.4, 0.87]))  # towards the light
    colour: tuple = (1.0, 0.97, 0.92)
    intensity: float = 0.8
    ambient: float = 0.35
    fill: float = 0.15               # unshadowed light from the opposite side, half way up

    @property
    def fill_direction(self) -> np.ndarray:
        f = np.array([-self.direction[0], -self.direction[1], 0.0])
        n = np.linalg.norm(f)
        f = f / n if n > 1e-9 else np.array([1.0, 0, 0])
        return (f + np.array([0, 0, 1.0])) / np.sqrt(2)


@dataclass
class Scene:
    camera: Camera
    objects: list[SceneObject]
    table: Table = field(default_factory=Table)
    room: Room = field(default_factory=Room)
    light: Light = field(default_factory=Light)
    seed: int = 0
    noise_sigma: float = 1.5         # sensor noise, 8-bit units
    vignette: float = 0.1
    exposure: float = 1.0

    def object(self, oid: int) -> SceneObject:
        return next(o for o in self.objects if o.id == oid)

    def copy(self) -> "Scene":
        return copy.deepcopy(self)

    def render(self, **kw):
        from .render import render
        return render(self, **kw)


# --------------------------------------------------------------------------------------------
# random generation

_UPRIGHT_ROUND = ("sphere", "cylinder", "cone", "torus")
_WOODS = [((0.45, 0.28, 0.15), (0.66, 0.46, 0.27)), ((0.30, 0.18, 0.10), (0.47, 0.30, 0.17)),
          ((0.62, 0.48, 0.32), (0.80, 0.66, 0.47)), ((0.52, 0.36, 0.22), (0.72, 0.55, 0.36))]
_LAMINATES = [(0.85, 0.85, 0.83), (0.62, 0.63, 0.64), (0.78, 0.72, 0.60), (0.55, 0.62, 0.66),
              (0.35, 0.36, 0.38)]
_CLOTHS = [((0.92, 0.92, 0.9), (0.25, 0.35, 0.60)), ((0.92, 0.92, 0.9), (0.30, 0.50, 0.35)),
           ((0.90, 0.88, 0.80), (0.55, 0.50, 0.42))]
_WALLS = [(0.82, 0.80, 0.74), (0.75, 0.78, 0.80), (0.74, 0.79, 0.72), (0.86, 0.84, 0.80),
          (0.62, 0.60, 0.58)]


def footprint_radius(shape: Shape, R: np.ndarray) -> float:
    """Radius of a vertical cylinder around the object centre that contains it."""
    if shape.name in _UPRIGHT_ROUND and abs(R[2, 2]) > 0.99:
        return shape.size[0] / 2
    ext = np.abs(R) @ (shape.size / 2)
    return float(np.hypot(ext[0], ext[1]))


def random_material(colour: str, rng: np.random.Generator) -> dict:
    rgb = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.88, 1.1) + rng.uniform(-0.03, 0.03, 3), 0, 1)
    pattern = rng.choice(["plain", "plain", "noise", "stripes", "speckle"])
    amp = {"plain": 0.04, "noise": 0.12, "stripes": 0.22, "speckle": 0.1}[pattern] * rng.uniform(0.6, 1.2)
    return {"rgb": tuple(float(c) for c in rgb), "pattern": str(pattern), "amp": float(amp),
            "tex": int(rng.integers(4)), "period": float(rng.uniform(0.012, 0.03)),
            "phase": float(rng.uniform(0, 6.28)), "ks": float(rng.uniform(0.02, 0.45)),
            "shininess": float(2 ** rng.integers(3, 7))}


def random_table(rng: np.random.Generator) -> Table:
    kind = rng.choice(["wood", "wood", "wood", "plain", "checker"], p=[0.2, 0.2, 0.2, 0.25, 0.15])
    a = rng.uniform(0, np.pi)
    if kind == "wood":
        dark, light = _WOODS[rng.integers(len(_WOODS))]
        m = {"kind": "wood", "dark": dark, "light": light, "plank": float(rng.uniform(0.09, 0.25)),
             "ring": float(rng.uniform(8, 30)), "cos": float(np.cos(a)), "sin": float(np.sin(a))}
        side = tuple(0.8 * c for c in dark)
    elif kind == "plain":
        c0 = _LAMINATES[rng.integers(len(_LAMINATES))]
        m = {"kind": "plain", "c0": c0, "amp": float(rng.uniform(0.02, 0.08)),
             "scale": float(rng.uniform(10, 60))}
        side = tuple(0.8 * c for c in c0)
    else:
        c0, c1 = _CLOTHS[rng.integers(len(_CLOTHS))]
        m = {"kind": "checker", "c0": c0, "c1": c1, "cell": float(rng.uniform(0.015, 0.05))}
        side = tuple(0.9 * c for c in c0)
    m["tex"] = int(rng.integers(4))
    return Table(size=(float(rng.uniform(1.1, 1.8)), float(rng.uniform(0.75, 1.0))),
                 height=float(rng.uniform(0.70, 0.80)), thickness=float(rng.uniform(0.025, 0.05)),
                 material=m, side_rgb=side)


def random_room(rng: np.random.Generator) -> Room:
    wall = {"kind": "plain", "c0": _WALLS[rng.integers(len(_WALLS))], "amp": 0.04, "scale": 8,
            "tex": int(rng.integers(4))}
    if rng.random() < 0.5:
        dark, light = _WOODS[rng.integers(len(_WOODS))]
        floor = {"kind": "wood", "dark": dark, "light": light, "plank": 0.15, "ring": 6.0,
                 "cos": 1.0, "sin": 0.0, "tex": int(rng.integers(4))}
    else:
        g = float(rng.uniform(0.35, 0.75))
        floor = {"kind": "tiles", "c0": (g, g, g * 0.95), "c1": (g * 0.85, g * 0.83, g * 0.8),
                 "cell": float(rng.uniform(0.3, 0.6)), "grout": (0.75, 0.75, 0.72),
                 "tex": int(rng.integers(4))}
    return Room(half=(float(rng.uniform(2.0, 3.0)), float(rng.uniform(1.8, 2.8))),
                height=float(rng.uniform(2.4, 3.0)), wall=wall, floor=floor)


def random_light(rng: np.random.Generator) -> Light:
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(35), np.radians(80))
    warm = rng.uniform(-1, 1)                        # colour temperature: < 0 cool, > 0 warm
    if warm > 0:
        colour = (1.0, 1.0 - 0.05 * warm, 1.0 - 0.15 * warm)
    else:
        colour = (1.0 + 0.1 * warm, 1.0 + 0.03 * warm, 1.0)
    return Light(np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]),
                 tuple(float(c) for c in colour), float(rng.uniform(0.55, 0.95)),
                 float(rng.uniform(0.25, 0.45)), float(rng.uniform(0.08, 0.25)))


def random_camera(rng: np.random.Generator, width: int, height: int, target_xy, table_h: float,
                  hfov_deg: float | None = None) -> Camera:
    hfov = rng.uniform(50, 70) if hfov_deg is None else hfov_deg
    az = rng.uniform(0, 2 * np.pi)
    el = rng.uniform(np.radians(25), np.radians(65))
    dist = rng.uniform(0.5, 1.0)
    target = np.array([target_xy[0], target_xy[1], table_h + 0.03])
    eye = target + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return Camera(intrinsics(width, height, hfov), width, height,
                  look_at(eye, target, roll=rng.uniform(-0.06, 0.06)))


def place_objects(rng: np.random.Generator, table: Table, names, spread: float,
                  stack_prob: float = 0.25, centre=(0.0, 0.0)) -> list[SceneObject]:
    """Rejection-sample resting poses: footprints inside the table and apart from one another;
    some flat-bottomed objects are stacked on a box, cube or upright cylinder instead."""
    objs: list[SceneObject] = []
    foot: dict[int, tuple[np.ndarray, float]] = {}
    for name in names:
        shape = random_shape(name, rng)
        tip = np.eye(3)
        if name == "cylinder" and rng.random() < 0.25:
            tip = rot_x(np.pi / 2)                               # lying on its side
        R = rot_z(rng.uniform(0, 2 * np.pi)) @ tip
        r = footprint_radius(shape, R)
        half_z = (np.abs(R) @ (shape.size / 2))[2]
        colour = str(rng.choice(COLOUR_NAMES))
        oid = len(objs) + 1
        pos = support = None
        if name != "sphere" and rng.random() < stack_prob:
            # on top of an upright box, cube or cylinder: centre over its top face, and inside the
            # circle reserved for the support so that it cannot reach a neighbour
            bases = [o for o in objs if o.id in foot and isinstance(o.shape, (Box, Cylinder))
                     and abs(o.T_world[2, 2]) > 0.99 and not any(p.support == o.id for p in objs)
                     and foot[o.id][1] >= r + 0.003]
            if bases:
                b = bases[rng.integers(len(bases))]
                for _ in range(20):
                    if isinstance(b.shape, Box):
                        off = rng.uniform(-0.8, 0.8, 2) * b.shape.size[:2] / 2
                    else:
                        off = rng.uniform(-0.5, 0.5, 2) * b.shape.r
                    off = b.T_world[:2, :2] @ off
                    if np.linalg.norm(off) + r <= foot[b.id][1]:
                        top = b.world_aabb()[1][2]
                        pos, support = np.array([*(b.T_world[:2, 3] + off), top + half_z]), b.id
                        break
        if pos is None:
            lim = np.array(table.size) / 2 - r - 0.02
            for _ in range(200):
                xy = np.asarray(centre) + rng.uniform(-spread, spread, 2)
                if np.any(np.abs(xy) > lim):
                    continue
                gap = rng.uniform(0.004, 0.03)
                if all(np.linalg.norm(xy - c) >= r + rc + gap for c, rc in foot.values()):
                    pos, support = np.array([*xy, table.height + half_z]), 0
                    foot[oid] = (xy, r)
                    break
        if pos is None:
            continue
        objs.append(SceneObject(oid, shape, colour, random_material(colour, rng), make_T(R, pos), support))
    return objs


def _clearance(p, obj: SceneObject) -> float:
    lo, hi = obj.world_aabb()
    return float(np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0)))


def make_scene(seed: int, width: int = 640, height: int = 480, n_objects: int | None = None,
               shapes=None, hfov_deg: float | None = None, stack_prob: float = 0.25) -> Scene:
    """A random tabletop scene. Same arguments, same scene (bit for bit in renders).

    n_objects: 2..8 at random when None; shapes: restrict the shapes drawn (names from SHAPES)."""
    rng = np.random.default_rng([seed, 0x5EE])
    n = int(rng.integers(2, 9)) if n_objects is None else n_objects
    names = [str(s) for s in rng.choice(SHAPES if shapes is None else shapes, n)]
    table, room, light = random_table(rng), random_room(rng), random_light(rng)
    spread = rng.uniform(0.15, 0.3)
    centre = rng.uniform(-0.1, 0.1, 2)
    objs = place_objects(rng, table, names, spread, stack_prob, centre)
    target = centre + rng.uniform(-0.05, 0.05, 2)
    for _ in range(50):                          # keep the camera clear of every object
        cam = random_camera(rng, width, height, target, table.height, hfov_deg)
        if all(_clearance(cam.position, o) > 0.15 for o in objs):
            break
    return Scene(cam, objs, table, room, light, seed, noise_sigma=float(rng.uniform(0.5, 3.0)),
                 vignette=float(rng.uniform(0.0, 0.2)), exposure=float(rng.uniform(0.9, 1.15)))
