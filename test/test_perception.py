"""Perception (the node's work without ROS) with the bundled model: reference-image prompts and
the names objects get. Real weights: these assert what a user sees."""
import numpy as np
import pytest
import torch

from seem_ros.defaults import BUNDLED_CHECKPOINT, BUNDLED_VOCABULARY
from seem_ros.inference import SeemPredictor
from seem_ros.model import SeemModel
from seem_ros.perception import MODE_REFINE, MODE_REPLACE, FrameInput, Perception, PromptRequest
from seem_ros.sim import make_scene, render
from seem_ros.training.evaluate import other_view

W, H = 320, 240


@pytest.fixture(scope="module")
def pred():
    torch.manual_seed(0)
    p = SeemPredictor(SeemModel.from_checkpoint(str(BUNDLED_CHECKPOINT)), device="cpu")
    p.set_vocabulary(list(BUNDLED_VOCABULARY))
    return p


@pytest.fixture(scope="module")
def views():
    """One scene from two cameras 15-30 degrees apart about the table."""
    sc = make_scene(11, W, H)
    return render(sc), render(other_view(sc, np.random.default_rng(11)), index=1)


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_reference_image_prompt_finds_the_object_in_the_camera_view(pred, views):
    a, b = views
    per = Perception(pred)
    cube = next(o for o in a.objects if (o.colour, o.shape_name) == ("red", "cube"))
    req = PromptRequest(boxes=box_of(a.instance == cube.id), reference=a.rgb, label="my cube")
    res = per.process(FrameInput(b.rgb, 1.0), [req])
    assert res.errors == []
    o, = res.objects
    assert (o.label, o.prompt, o.tracked) == ("my cube", "reference", True)
    assert iou(o.mask, b.instance == cube.id) > 0.8
    # Not the camera image's box: the same box on the camera image covers something else.
    assert iou(o.mask, b.instance == cube.id) > iou(a.instance == cube.id, b.instance == cube.id) + 0.3
    for t in (1.1, 1.2):
        again = per.process(FrameInput(b.rgb, t))
        assert [(x.id, x.tracked) for x in again.objects] == [(o.id, True)]
        assert iou(again.objects[0].mask, b.instance == cube.id) > 0.8
    # Replace: the same id, now the object marked on the reference is another one.
    box = next(x for x in a.objects if (x.colour, x.shape_name) == ("blue", "box"))
    res = per.process(FrameInput(b.rgb, 1.3), [PromptRequest(mode=MODE_REPLACE, target_id=o.id, reference=a.rgb,
                                                             boxes=box_of(a.instance == box.id))])
    assert res.errors == [] and [x.id for x in res.objects] == [o.id]
    assert iou(res.objects[0].mask, b.instance == box.id) > 0.8


def test_bad_reference_prompts_are_reported_and_the_frame_goes_on(pred, views):
    a, b = views
    per = Perception(pred)
    small = np.ascontiguousarray(a.rgb[:120, :160])
    good = PromptRequest(points=np.array([[W / 2, H / 2]]), point_labels=np.ones(1, np.int64))
    bad = [PromptRequest(reference=a.rgb, text="the red cube"),                        # nothing marked
           PromptRequest(points=np.array([[200.0, 100.0]]), point_labels=np.ones(1, np.int64),
                         reference=small),                                             # off the reference
           PromptRequest(boxes=np.array([[0, 0, 10, 10.0]]), reference=a.rgb.astype(np.float32)),
           PromptRequest(mode=MODE_REFINE, target_id=1, boxes=np.array([[0, 0, 10, 10.0]]), reference=a.rgb)]
    res = per.process(FrameInput(b.rgb, 1.0), bad + [good])
    assert len(res.errors) == 4, res.errors
    assert "marked" in res.errors[0]
    assert "outside the 160x120 image" in res.errors[1]
    assert "uint8" in res.errors[2]
    assert "cannot refine" in res.errors[3]
    assert [x.prompt for x in res.objects] == ["point"] and res.objects[0].tracked


def test_a_prompts_label_names_the_object(pred, views):
    a, _ = views
    per = Perception(pred)
    mug = next(o for o in a.objects if o.shape_name == "mug")
    box = box_of(a.instance == mug.id)
    res = per.process(FrameInput(a.rgb, 1.0), [
        PromptRequest(boxes=box, label="my_mug"),
        PromptRequest(boxes=box, text="the white mug"),         # text next to a box names it
        PromptRequest(text="the red cube", label="target"),
        PromptRequest(text="the blue box")])
    assert res.errors == []
    assert [(x.label, x.prompt) for x in res.objects] == [
        ("my_mug", "box"), ("the white mug", "box: the white mug"), ("target", "text: the red cube"),
        ("the blue box", "text: the blue box")]
    res = per.process(FrameInput(a.rgb, 1.1), [PromptRequest(text="a, b", label="one name")])
    assert "one label for 2 phrases" in res.errors[0]


def test_with_the_camera_pose_objects_are_placed_in_the_fixed_frame(pred):
    """With depth, K and the camera's pose in a fixed frame, each tracked object's 3D position is
    kept in that frame (what re-identification projects later), the same wherever the camera
    moved; without the pose nothing is kept (image-plane search, as before)."""
    from seem_ros.sim import make_sequence
    seq = make_sequence(3, n_frames=40, width=W, height=H)
    frames = [seq.render(i) for i in (0, 4, 8)]
    still = [o for o in frames[0].objects
             if all(np.allclose(o.T_world, f.object(o.id).T_world) for f in frames) and (frames[0].instance == o.id).sum() > 400]
    target = still[0]
    ys, xs = np.nonzero(frames[0].instance == target.id)
    req = PromptRequest(points=np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]), point_labels=np.ones(1, np.int64))
    for known in (True, False):
        per = Perception(pred)
        found = []
        for i, f in enumerate(frames):
            res = per.process(FrameInput(f.rgb, f.stamp, f.depth, f.K, f.T_world_cam if known else None),
                              [req] if i == 0 else [])
            o, = res.objects
            assert o.tracked and iou(o.mask, f.instance == target.id) > 0.7
            where = per.tracker._objects[o.id].where
            found.append(None if where is None else where.position)
        if not known:
            assert found == [None] * 3
            continue
        # The visible surface's centroid: within the object's size of its centre, and the same
        # point in the world while the camera moves (a few cm of view-dependent shift).
        for p in found:
            assert np.linalg.norm(p - target.T_world[:3, 3]) < 0.6 * np.max(target.size) + 0.01
        assert max(np.linalg.norm(p - found[0]) for p in found) < 0.03
        cam_moved = np.linalg.norm(frames[2].T_world_cam[:3, 3] - frames[0].T_world_cam[:3, 3])
        assert cam_moved > 0.05


def test_a_depth_of_another_size_is_reported_and_the_frame_goes_on(pred, views):
    a, _ = views
    per = Perception(pred)
    req = PromptRequest(points=np.array([[W / 2, H / 2]]), point_labels=np.ones(1, np.int64))
    res = per.segment(FrameInput(a.rgb, 1.0, depth=a.depth[:-8]), [req])
    assert len(res.errors) == 1 and res.errors[0].startswith("depth: depth is 320x232")
    assert [x.prompt for x in res.objects] == ["point"] and res.objects[0].tracked
    res = per.segment(FrameInput(a.rgb, 1.1, depth=a.depth), [req])     # the right size: no error
    assert res.errors == [] and len(res.objects) == 2
    # Given as a function (the node's depth may still be on its way), it is called only on a
    # frame whose prompt needs it.
    calls = []
    depth = lambda: calls.append(1) or a.depth
    per.segment(FrameInput(a.rgb, 1.2, depth=depth))
    assert calls == []
    per.segment(FrameInput(a.rgb, 1.3, depth=depth), [req])
    assert calls == [1]
