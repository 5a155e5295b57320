"""The synthetic world renderer (seem_ros.sim): exact geometry, determinism, ground truth."""
import numpy as np
import pytest

from seem_ros.sim import (CLASS_NAMES, COLOUR_NAMES, SHAPES, TABLE_CLASS, Camera, Scene, SceneObject,
                          backproject, make_scene, make_shape, phrase, render)
from seem_ros.sim.camera import inv_T, look_at, make_T, quat_from_R, R_from_quat, rot_z
from seem_ros.sim.scene import Light, Table
from seem_ros.sim.sequence import make_sequence

W, H = 320, 240


@pytest.fixture(scope="module")
def frames():
    return [render(make_scene(s, W, H)) for s in range(4)]


def _inside(shape, p, eps=0.0):
    """Independent solid membership (object frame) for every shape, grown by eps."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    name, q = shape.name, shape.params()
    if name in ("cube", "box"):
        return np.all(np.abs(p) <= shape.size / 2 + eps, axis=1)
    if name == "sphere":
        return np.linalg.norm(p, axis=1) <= q["r"] + eps
    if name == "cylinder":
        return (np.hypot(x, y) <= q["r"] + eps) & (np.abs(z) <= q["h"] / 2 + eps)
    if name == "cone":
        return (np.hypot(x, y) <= q["r"] / q["h"] * (q["h"] / 2 - z) + eps) & (np.abs(z) <= q["h"] / 2 + eps)
    if name == "torus":
        return np.hypot(np.hypot(x, y) - q["R"], z) <= q["r"] + eps
    if name == "mug":
        R, h, wall, Rh, rh = q["R"], q["h"], q["wall"], q["Rh"], q["rh"]
        x = x + (Rh + rh) / 2                           # body axis from the bbox centre
        rho = np.hypot(x, y)
        hollow = (rho < R - wall - eps) & (z > -h / 2 + q["base"] + eps)
        body = (rho <= R + eps) & (np.abs(z) <= h / 2 + eps) & ~hollow
        handle = (np.hypot(np.hypot(x - R, z - q["zh"]) - Rh, y) <= rh + eps) & (x >= R - wall / 2 - eps)
        return body | handle
    raise AssertionError(name)


def test_deterministic_from_seed():
    a, b = render(make_scene(11, W, H)), render(make_scene(11, W, H))
    for k in ("rgb", "depth", "instance", "semantic"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert [o.phrase for o in a.objects] == [o.phrase for o in b.objects]
    assert all(np.array_equal(p.T_cam, q.T_cam) for p, q in zip(a.objects, b.objects))
    c = render(make_scene(12, W, H))
    assert not np.array_equal(a.rgb, c.rgb)


def test_frame_types_and_camera(frames):
    for f in frames:
        assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
        assert f.instance.dtype == np.uint16 and f.semantic.dtype == np.uint8
        assert np.all(np.isfinite(f.depth)) and np.all(f.depth > 0)      # a closed room: all hits
        assert f.rgb.std() > 10                                          # not a blank image
        info = f.camera_info
        assert (info["width"], info["height"]) == (W, H)
        assert np.allclose(np.reshape(info["k"], (3, 3)), f.K) and info["distortion_model"] == "plumb_bob"
        for o in f.objects:
            assert np.allclose(o.T_cam, inv_T(f.T_world_cam) @ o.T_world)
            assert np.allclose(R_from_quat(o.quaternion), o.T_cam[:3, :3])
            assert np.allclose(o.position, o.T_cam[:3, 3]) and o.phrase == phrase(o)
            assert o.phrase == f"{o.colour} {o.shape_name}" and o.class_id == CLASS_NAMES.index(o.shape_name)


def test_instance_and_semantic_agree(frames):
    for f in frames:
        counts = np.bincount(f.instance.ravel(), minlength=len(f.objects) + 1)
        for o in f.objects:
            m = f.instance == o.id
            assert counts[o.id] == o.visible_pixels
            assert np.all(f.semantic[m] == o.class_id)
            if o.visible_pixels:
                v, u = np.nonzero(m)
                assert o.bbox == (u.min(), v.min(), u.max(), v.max())
        assert set(np.unique(f.semantic[f.instance == 0])) <= {0, TABLE_CLASS}
        assert (f.semantic == TABLE_CLASS).mean() > 0.05                  # the table is in view


def _sphere_scene(r=0.04, dist=0.6):
    centre = np.array([0.0, 0.0, 0.75 + r])
    material = {"rgb": (0.8, 0.1, 0.1), "pattern": "plain", "amp": 0.0, "tex": 0, "ks": 0.2,
                "shininess": 16.0}
    sph = SceneObject(1, make_shape("sphere", r=r), "red", material, make_T(np.eye(3), centre))
    view = np.array([np.cos(0.7), 0.3, np.sin(0.7)])
    eye = centre + dist * view / np.linalg.norm(view)
    cam = Camera.looking_at(eye, centre, 321, 241, hfov_deg=50)
    return Scene(cam, [sph], Table(), light=Light()), centre, eye


def test_sphere_depth_is_exact():
    scene, centre, eye = _sphere_scene()
    f = render(scene)
    # The optical axis passes through the centre: z-depth there is distance - r.
    assert abs(f.depth[120, 160] - (np.linalg.norm(eye - centre) - 0.04)) < 1e-5
    # Every sphere pixel against an independent ray-sphere intersection.
    v, u = np.nonzero(f.instance == 1)
    rays = np.stack([(u - f.K[0, 2]) / f.K[0, 0], (v - f.K[1, 2]) / f.K[1, 1], np.ones(len(u))], 1)
    c = (inv_T(f.T_world_cam) @ np.append(centre, 1))[:3]
    a, b, cc = np.sum(rays * rays, 1), rays @ c, c @ c - 0.04 ** 2
    t = (b - np.sqrt(b * b - a * cc)) / a
    assert len(u) > 1000 and np.abs(f.depth[v, u] - t).max() < 1e-5


@pytest.mark.parametrize("seed", range(6))
def test_depth_lies_on_the_true_surfaces(seed):
    """Back-projected mask pixels, moved into each object's frame by its true pose, lie on its
    surface (just inside when pushed 0.2 mm further along the ray) and inside its size."""
    f = render(make_scene(100 + seed, W, H))
    for o in f.objects:
        if o.visible_pixels < 30:
            continue
        pts = f.points(o.id)
        Tinv = inv_T(o.T_cam)
        p = pts @ Tinv[:3, :3].T + Tinv[:3, 3]
        d = (pts / np.linalg.norm(pts, axis=1, keepdims=True)) @ Tinv[:3, :3].T
        shape = make_shape(o.shape_name, **o.params)
        assert np.all(_inside(shape, p, eps=1e-4)), o.phrase                     # on or in
        assert not np.any(_inside(shape, p - 2e-4 * d)), o.phrase                # not before the hit
        assert _inside(shape, p + 2e-4 * d).mean() > 0.97, o.phrase             # entering (bar grazing rays)
        assert np.all(np.abs(p) <= o.size / 2 + 1e-4), o.phrase


def test_every_shape_and_colour_appears():
    objs = [o for s in range(12) for o in make_scene(s).objects]
    assert {o.shape_name for o in objs} == set(SHAPES)
    assert {o.colour for o in objs} == set(COLOUR_NAMES)
    assert all(2 <= len(make_scene(s).objects) <= 8 for s in range(12))


@pytest.mark.parametrize("seed", range(8))
def test_objects_rest_on_their_support(seed):
    scene = make_scene(seed)
    tops = {o.id: o.world_aabb()[1][2] for o in scene.objects}
    for o in scene.objects:
        base = scene.table.height if o.support == 0 else tops[o.support]
        assert abs(o.world_aabb()[0][2] - base) < 1e-9
        # independently: rays cast straight up through the footprint first meet the object at `base`
        g = np.linspace(-1, 1, 41)
        ext = np.abs(o.T_world[:3, :3]) @ o.size / 2
        xy = np.stack(np.meshgrid(g * ext[0], g * ext[1]), -1).reshape(-1, 2) + o.T_world[:2, 3]
        start = np.column_stack([xy, np.full(len(xy), base - 0.05)])
        R, c = o.T_world[:3, :3], o.T_world[:3, 3]
        t = o.shape.first_hit((start - c) @ R, np.tile(R[2], (len(xy), 1)))
        assert abs((base - 0.05 + t.min()) - base) < 1e-3, o.phrase
    # footprints on the table do not overlap
    flat = [o for o in scene.objects if o.support == 0]
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            la, ha = a.world_aabb()
            lb, hb = b.world_aabb()
            assert np.any(ha[:2] < lb[:2]) or np.any(hb[:2] < la[:2]) or \
                np.linalg.norm(a.T_world[:2, 3] - b.T_world[:2, 3]) > 0.01


def test_sequence_object_leaves_and_returns():
    seq = make_sequence(3, n_frames=31, width=160, height=120)
    assert seq.exit_object is not None
    counts = [seq.render(i, shadows=False).object(seq.exit_object).visible_pixels for i in (0, 15, 30)]
    assert counts[0] > 0 and counts[1] == 0 and counts[2] > 0
    assert np.allclose(seq.camera_at(0).T_world_cam, seq.scene.camera.T_world_cam)   # starts as the scene
    assert np.allclose(seq.camera_at(30).T_world_cam, seq.scene.camera.T_world_cam)  # periodic
    f0, f1 = seq[0], seq[1]
    assert f1.stamp == pytest.approx(0.1) and f1.index == 1
    assert not np.allclose(f0.T_world_cam, f1.T_world_cam)                 # the camera moves
    moved = [o.id for o in f0.objects if not np.allclose(o.T_world, f1.object(o.id).T_world)]
    assert moved == sorted(seq.motions) and moved                           # and so do some objects
    again = make_sequence(3, n_frames=31, width=160, height=120)
    assert np.array_equal(again[7].rgb, seq[7].rgb)


def test_backproject_and_quaternions():
    K = np.array([[500.0, 0, 159.5], [0, 500, 119.5], [0, 0, 1]])
    depth = np.zeros((240, 320), np.float32)
    depth[100, 200] = 2.0
    p = backproject(depth, K)
    assert p.shape == (1, 3) and np.allclose(p[0], [(200 - 159.5) * 2 / 500, (100 - 119.5) * 2 / 500, 2])
    R = rot_z(0.3) @ look_at([1, 2, 3], [0, 0, 0])[:3, :3]
    q = quat_from_R(R)
    assert np.isclose(np.linalg.norm(q), 1) and np.allclose(R_from_quat(q), R)


def test_preview_png(tmp_path):
    from seem_ros.sim.png import read_png
    from seem_ros.sim.preview import main
    out = tmp_path / "p.png"
    main(["--seed", "2", "--width", "160", "--height", "120", "--out", str(out)])
    img = read_png(str(out))
    assert img.shape == (120, 3 * 160 + 8, 3)
    assert np.array_equal(img[:, :160], render(make_scene(2, 160, 120)).rgb)
