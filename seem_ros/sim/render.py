"""Ray-casting renderer: exact analytic hits per pixel centre, z-buffered, shaded with a
directional light (Lambert + Blinn-Phong), hard cast shadows, textures, vignetting and noise.

Each primitive is cast only on the pixels of its projected bounding box, in its own frame, with
whole-array numpy operations, so a frame costs a few full-image passes (room, table top, shading)
plus work proportional to the objects' screen area."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import Camera, backproject, inv_T, quat_from_R
from .scene import CLASS_NAMES, TABLE_CLASS, Scene, phrase
from .textures import object_albedo, surface

# Internal surface ids of the visibility pass. Room and table faces are axis-aligned: their id says
# which axis their normal lies on; objects are OBJ0 + index.
FLOOR, CEILING, WALL_X, WALL_Y, TOP, SIDE_X, SIDE_Y, BOTTOM, OBJ0 = 1, 2, 3, 4, 5, 6, 7, 8, 10
_AXIS = {FLOOR: 2, CEILING: 2, WALL_X: 0, WALL_Y: 1, TOP: 2, SIDE_X: 0, SIDE_Y: 1, BOTTOM: 2}
_CONVEX = ("cube", "box", "sphere", "cylinder", "cone")
F32 = np.float32


@dataclass
class ObjectState:
    """Ground truth for one object in one frame (present whether visible or not).

    Poses map the object frame (origin at the centre of the object's own bounding box, z up along
    its symmetry axis, a mug's handle towards +x) to the world (T_world) or camera optical frame
    (T_cam). Quaternions are (x, y, z, w)."""
    id: int
    shape_name: str
    class_id: int
    colour: str
    phrase: str
    size: np.ndarray                 # bounding-box extents in the object frame (metres)
    params: dict                     # the shape's own dimensions (radii, heights, ...)
    support: int                     # 0: on the table, else the id of the object below
    T_world: np.ndarray
    T_cam: np.ndarray
    visible_pixels: int = 0
    bbox: tuple | None = None        # (x_min, y_min, x_max, y_max) of the visible mask, inclusive

    @property
    def position(self) -> np.ndarray:
        return self.T_cam[:3, 3].copy()

    @property
    def quaternion(self) -> np.ndarray:
        return quat_from_R(self.T_cam[:3, :3])

    @property
    def position_world(self) -> np.ndarray:
        return self.T_world[:3, 3].copy()

    @property
    def quaternion_world(self) -> np.ndarray:
        return quat_from_R(self.T_world[:3, :3])

    @property
    def visible(self) -> bool:
        return self.visible_pixels > 0

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id]


@dataclass
class Frame:
    rgb: np.ndarray                  # [H,W,3] uint8
    depth: np.ndarray                # [H,W] float32 metres, z along the optical axis; 0 = no reading
    instance: np.ndarray             # [H,W] uint16: 0 background and table, k = object id
    semantic: np.ndarray             # [H,W] uint8: index into CLASS_NAMES
    K: np.ndarray                    # 3x3 intrinsics
    width: int
    height: int
    T_world_cam: np.ndarray          # camera optical frame -> world
    objects: list[ObjectState]
    camera_info: dict = field(default_factory=dict)   # sensor_msgs/CameraInfo fields
    table_height: float = 0.0        # world z of the table top
    index: int = 0
    stamp: float = 0.0               # seconds
    class_names: tuple = CLASS_NAMES

    def object(self, oid: int) -> ObjectState:
        return next(o for o in self.objects if o.id == oid)

    def mask(self, oid: int) -> np.ndarray:
        return self.instance == oid

    def points(self, oid: int) -> np.ndarray:
        """Optical-frame 3D points [N,3] of the visible pixels of object `oid`."""
        return backproject(self.depth, self.K, self.instance == oid)


def _screen_box(cam: Camera, T_cw: np.ndarray, pts: np.ndarray):
    """Pixel rows/cols (y0, y1, x0, x1) whose centres may see the convex hull of `pts`."""
    pc = pts @ T_cw[:3, :3].T + T_cw[:3, 3]
    front = pc[:, 2] > 1e-3
    if not front.any():
        return None
    if not front.all():
        return 0, cam.height, 0, cam.width
    K = cam.K
    u = pc[:, 0] / pc[:, 2] * K[0, 0] + K[0, 2]
    v = pc[:, 1] / pc[:, 2] * K[1, 1] + K[1, 2]
    x0, x1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, cam.width)
    y0, y1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, cam.height)
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


def _corners(size, T):
    s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    return (s * size / 2) @ T[:3, :3].T + T[:3, 3]


def _pow2(x, shininess):
    """x ** shininess for a power-of-two shininess by repeated squaring (np.power is slow)."""
    for _ in range(int(round(np.log2(max(shininess, 1))))):
        x = x * x
    return x


# Work is done in blocks of about this many pixels: temporaries that small are recycled by malloc,
# whereas full-image ones are mapped fresh each time, and those page faults cost more than the
# arithmetic (about half the frame time, measured, on the 2-core benchmark machine).
CHUNK = 32768


def _bands(y0, y1, w):
    step = max(1, CHUNK // max(w, 1))
    for a in range(y0, y1, step):
        yield a, min(a + step, y1)


def _chunks(start, stop, step=CHUNK):
    for a in range(start, stop, step):
        yield slice(a, min(a + step, stop))


def _room(room, eye, d, inv, zbuf, mat):
    """Exit distance and face of every pixel's ray from inside the room box (float32 is ample:
    walls are metres away, rounding is below a micrometre per metre)."""
    half = [F32(room.half[0]), F32(room.half[1]), F32(room.height / 2)]
    off = [F32(-eye[0]), F32(-eye[1]), F32(room.height / 2 - eye[2])]
    for y0, y1 in _bands(0, zbuf.shape[0], zbuf.shape[1]):
        t = [(np.copysign(half[k], d[k][y0:y1]) + off[k]) * inv[k][y0:y1] for k in range(3)]
        ty_first = t[1] < t[0]
        txy = np.minimum(t[0], t[1])
        z_first = t[2] < txy
        m = WALL_X + ty_first.astype(np.int16)              # ids by arithmetic: np.where is slow
        m += z_first * ((FLOOR - m) + (d[2][y0:y1] >= 0) * np.int16(CEILING - FLOOR))
        mat[y0:y1] = m
        zbuf[y0:y1] = np.minimum(txy, t[2])


def _world_box(lo, hi, box, eye, d, inv, zbuf, mat):
    """z-buffer an axis-aligned world box (table top, legs) on its screen box: slab method."""
    by0, by1, x0, x1 = box
    for y0, y1 in _bands(by0, by1, x1 - x0):
        sl = np.s_[y0:y1, x0:x1]
        tmin, tmax = [], []
        for k in range(3):
            a = F32(lo[k] - eye[k]) * inv[k][sl]
            b = F32(hi[k] - eye[k]) * inv[k][sl]
            tmin.append(np.minimum(a, b))
            tmax.append(np.maximum(a, b))
        t_out = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
        t_xy = np.maximum(tmin[0], tmin[1])
        t_in = np.maximum(t_xy, tmin[2])
        zv, mv = zbuf[sl], mat[sl]
        hit = (t_in <= t_out) & (t_in > 0) & (t_in < zv)
        # face id: the slab entered last; z -> TOP (seen from above) or BOTTOM
        fz, fy, up = tmin[2] >= t_xy, tmin[1] >= tmin[0], d[2][sl] >= 0
        face = SIDE_X + fy.astype(np.int16)
        face += fz * ((TOP - face) + up * np.int16(BOTTOM - TOP))
        np.putmask(zv, hit, t_in)
        np.putmask(mv, hit, face)


_CACHE: dict = {}


def _noise_image(h, w):
    """A fixed planar [3, h+64, w+64] noise field; frames use shifted windows of it (cheap)."""
    key = ("noise", h, w)
    if key not in _CACHE:
        _CACHE[key] = np.random.default_rng(7).standard_normal((3, h + 64, w + 64), F32)
    return _CACHE[key]


def _radius2(h, w):
    """Squared distance from the image centre, 1 at the corners: the vignetting profile."""
    key = ("r2", h, w)
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        y, x = np.ogrid[:h, :w]
        r2 = ((x - (w - 1) / 2) ** 2 + (y - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2)
        _CACHE[key] = r2.astype(F32)
    return _CACHE[key]


def render(scene: Scene, index: int = 0, stamp: float = 0.0, shadows: bool = True,
           noise: bool = True, max_depth: float | None = None) -> Frame:
    """Render one frame of `scene`. Deterministic: same scene and index, same bits.

    index and stamp label the frame (the index also shifts the sensor noise pattern); shadows and
    noise switch off cast shadows and sensor noise; max_depth simulates a range limit (depth 0
    beyond it; by default every pixel has a reading, the room being closed)."""
    cam = scene.camera
    H, W, K = cam.height, cam.width, cam.K
    N = H * W
    T_wc = cam.T_world_cam
    T_cw = inv_T(T_wc)
    Rwc, eye = T_wc[:3, :3], T_wc[:3, 3]
    u = (np.arange(W) - K[0, 2]) / K[0, 0]                  # optical-frame ray (u, v, 1): its
    v = (np.arange(H) - K[1, 2]) / K[1, 1]                  # parameter t is the z-depth
    u32, v32, Rf = u.astype(F32), v.astype(F32), Rwc.astype(F32)
    d = [(Rf[k, 0] * u32)[None, :] + (Rf[k, 1] * v32 + Rf[k, 2])[:, None] for k in range(3)]
    with np.errstate(divide="ignore"):
        inv = [1 / dk for dk in d]

    # --- visibility: room, table, then objects in their own frames, z-buffered
    zbuf, mat = np.empty((H, W)), np.empty((H, W), np.int16)
    _room(scene.room, eye, d, inv, zbuf, mat)
    for lo, hi in scene.table.parts():
        box = _screen_box(cam, T_cw, np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                                for z in (lo[2], hi[2])]))
        if box is not None:
            _world_box(lo, hi, box, eye, d, inv, zbuf, mat)
    prims = []                                              # (M, o): camera ray -> object frame
    for k, o in enumerate(scene.objects):
        box = _screen_box(cam, T_cw, _corners(o.shape.size, o.T_world))
        R = o.T_world[:3, :3]
        M, oc = R.T @ Rwc, R.T @ (eye - o.T_world[:3, 3])
        prims.append((M, oc))
        if box is None:
            continue
        by0, by1, x0, x1 = box
        for y0, y1 in _bands(by0, by1, 2 * (x1 - x0)):     # float64 here: half-size blocks
            dl = u[None, x0:x1, None] * M[:, 0] + (v[y0:y1, None, None] * M[:, 1] + M[:, 2])
            t = o.shape.first_hit(oc, dl.reshape(-1, 3)).reshape(y1 - y0, x1 - x0)
            zv, mv = zbuf[y0:y1, x0:x1], mat[y0:y1, x0:x1]
            win = t < zv
            zv[win] = t[win]
            mv[win] = OBJ0 + k

    # --- surfaces: albedo and light terms per pixel, computed on pixels sorted by surface id so
    # that every surface is one contiguous slice (planar [3, N] colour: fast broadcasting)
    zflat, mflat = zbuf.reshape(-1), mat.reshape(-1)
    order = np.argsort(mflat, kind="stable")
    inv_order = np.empty(N, np.intp)
    inv_order[order] = np.arange(N)
    ends = np.cumsum(np.bincount(mflat, minlength=OBJ0 + len(scene.objects)))
    span = lambda m: slice(int(ends[m - 1]) if m else 0, int(ends[m]))
    light, table, room = scene.light, scene.table, scene.room
    L, Fd = light.direction, light.fill_direction
    I, amb0, fill = light.intensity, light.ambient, light.fill
    alb = np.empty((3, N), F32)                            # all in sorted order
    amb = np.empty(N, F32)
    direct = np.empty(N, F32)
    spec = np.zeros(N, F32)
    shadow = np.ones(N, F32)                               # image order
    dflat = [dk.reshape(-1) for dk in d]
    for m in (FLOOR, CEILING, WALL_X, WALL_Y, TOP, SIDE_X, SIDE_Y, BOTTOM):
        a = _AXIS[m]
        for sl in _chunks(*span(m).indices(N)[:2]):
            idx = order[sl]
            z = zflat.take(idx).astype(F32)
            dd = [dk.take(idx) for dk in dflat]
            P = [F32(eye[k]) + z * dd[k] for k in range(3)]
            sgn = -np.sign(dd[a])                          # faces point back towards the camera
            direct[sl] = I * np.maximum(sgn * F32(L[a]), 0)
            hemi = amb0 * (0.8 + 0.2 * sgn) if a == 2 else F32(amb0 * 0.8)   # brighter facing up
            amb[sl] = hemi + fill * np.maximum(sgn * F32(Fd[a]), 0)
            if m == FLOOR:
                alb[:, sl] = surface(P[0], P[1], room.floor)
                if shadows:                                # the table top's shadow on the floor
                    s_ = (table.height - P[2]) / F32(L[2])
                    inside = ((np.abs(P[0] + s_ * F32(L[0])) <= table.size[0] / 2)
                              & (np.abs(P[1] + s_ * F32(L[1])) <= table.size[1] / 2))
                    shadow[idx[inside]] = 0
            elif m == CEILING:
                alb[:, sl] = np.asarray(room.ceiling_rgb, F32)[:, None]
            elif m in (WALL_X, WALL_Y):
                alb[:, sl] = surface(P[1] if m == WALL_X else P[0], P[2], room.wall)
            elif m == TOP:
                alb[:, sl] = surface(P[0], P[1], table.material)
                if table.material["kind"] != "checker":  # varnish: a broad highlight
                    inv_n = 1 / np.sqrt(dd[0] * dd[0] + dd[1] * dd[1] + dd[2] * dd[2])
                    hx, hy, hz = (F32(L[j]) - dd[j] * inv_n for j in range(3))   # half vector
                    c = np.maximum(hz / np.sqrt(hx * hx + hy * hy + hz * hz), 0)
                    spec[sl] = (0.12 * I) * _pow2(c, 32)
            else:
                alb[:, sl] = np.asarray(table.side_rgb, F32)[:, None]

    states = []
    for k, o in enumerate(scene.objects):
        st = ObjectState(o.id, o.shape.name, o.class_id, o.colour, phrase(o), o.shape.size.copy(),
                         o.shape.params(), o.support, o.T_world.copy(), T_cw @ o.T_world)
        states.append(st)
        sl = span(OBJ0 + k)
        if sl.start == sl.stop:
            continue
        idx = order[sl]
        rr, cc = np.divmod(idx, W)
        st.visible_pixels = int(len(idx))
        st.bbox = (int(cc.min()), int(rr.min()), int(cc.max()), int(rr.max()))
        M, oc = prims[k]
        dcam = np.stack([u[cc], v[rr], np.ones(len(idx))], axis=1)
        pl = oc + zflat.take(idx)[:, None] * (dcam @ M.T)
        nl = o.shape.normal(pl)
        n = (nl @ o.T_world[:3, :3].T).astype(F32)
        alb[:, sl] = object_albedo(pl, nl, o.material)
        ndl = np.maximum(n @ L.astype(F32), 0)
        direct[sl] = I * ndl
        amb[sl] = amb0 * (0.8 + 0.2 * n[:, 2]) + fill * np.maximum(n @ Fd.astype(F32), 0)
        vd = (dcam @ Rwc.T).astype(F32)
        h = L.astype(F32) - vd / np.sqrt(np.einsum("ij,ij->i", vd, vd))[:, None]
        c = np.maximum(np.einsum("ij,ij->i", n, h) / np.sqrt(np.einsum("ij,ij->i", h, h)), 0)
        spec[sl] = (o.material["ks"] * I) * _pow2(c, o.material["shininess"]) * (ndl > 0)

    # --- hard cast shadows: rays towards the light from lit pixels in each object's shadow volume
    if shadows:
        lit_img = direct.take(inv_order).reshape(H, W) > 0
        h_t = table.height
        for k, o in enumerate(scene.objects):
            c = _corners(o.shape.size, o.T_world)
            box = _screen_box(cam, T_cw, np.vstack([c, c - L * ((c[:, 2] - h_t) / L[2])[:, None]]))
            if box is None:
                continue
            y0, y1, x0, x1 = box
            cand = lit_img[y0:y1, x0:x1] & (shadow.reshape(H, W)[y0:y1, x0:x1] > 0)
            if o.shape.name in _CONVEX:                    # a convex solid cannot shadow itself
                cand &= mat[y0:y1, x0:x1] != OBJ0 + k
            rr, cc = np.nonzero(cand)
            rr += y0
            cc += x0
            R, rb = o.T_world[:3, :3], np.linalg.norm(o.shape.size) / 2
            for sl in _chunks(0, len(rr), CHUNK // 2):      # float64 here: half-size blocks
                r_, c_ = rr[sl], cc[sl]
                idx = r_ * W + c_
                z = zflat.take(idx) - 1e-4                 # start just off the surface
                uc, vr = u.take(c_), v.take(r_)
                P = [z * (Rwc[j, 0] * uc + Rwc[j, 1] * vr + Rwc[j, 2]) + (eye[j] - o.T_world[j, 3])
                     for j in range(3)]                    # relative to the object's centre
                proj = P[0] * L[0] + P[1] * L[1] + P[2] * L[2]   # bounding-sphere test first: cheap
                miss2 = P[0] * P[0] + P[1] * P[1] + P[2] * P[2] - proj * proj
                near = np.flatnonzero((miss2 < rb * rb) & (proj < rb))
                if not len(near):
                    continue
                ol = np.stack([p.take(near) for p in P], axis=1) @ R
                hit = np.isfinite(o.shape.first_hit(ol, np.broadcast_to(L @ R, ol.shape)))
                shadow[idx.take(near[hit])] = 0

    # --- compositing (back to image order), camera response
    sh = shadow.take(order)
    for sl in _chunks(0, N):                               # alb becomes the colour, in place
        alb[:, sl] *= amb[sl] + direct[sl] * sh[sl]
        alb[:, sl] += spec[sl] * sh[sl]
    img = alb.take(inv_order, axis=1).reshape(3, H, W)
    gain = (255 * scene.exposure * np.asarray(light.colour, F32))[:, None, None]
    oy, ox = (index * 37) % 64, (index * 101 + scene.seed * 13) % 64
    for y0, y1 in _bands(0, H, W):
        band = img[:, y0:y1]
        if scene.vignette > 0:
            band *= 1 - F32(scene.vignette) * _radius2(H, W)[y0:y1]
        band *= gain
        if noise and scene.noise_sigma > 0:
            band += F32(scene.noise_sigma) * _noise_image(H, W)[:, oy + y0:oy + y1, ox:ox + W]
        band += 0.5                                        # round in the cast below
        np.clip(band, 0, 255, out=band)
    rgb = img.transpose(1, 2, 0).astype(np.uint8)

    n_ids = OBJ0 + len(scene.objects)
    lut_sem, lut_inst = np.zeros(n_ids, np.uint8), np.zeros(n_ids, np.uint16)
    lut_sem[TOP:BOTTOM + 1] = TABLE_CLASS
    for k, o in enumerate(scene.objects):
        lut_sem[OBJ0 + k], lut_inst[OBJ0 + k] = o.class_id, o.id
    depth = zbuf.astype(F32)
    if max_depth is not None:
        depth[depth > max_depth] = 0
    return Frame(rgb=rgb, depth=depth, instance=lut_inst[mat], semantic=lut_sem[mat],
                 K=K.copy(), width=W, height=H, T_world_cam=T_wc.copy(), objects=states,
                 camera_info=cam.camera_info(), table_height=table.height, index=index, stamp=stamp)
