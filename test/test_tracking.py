"""Object tracking (seem_ros.tracking): tracker logic on an oracle test double, one end-to-end run
with the bundled model on a generated sequence, and the metrics on hand-made masks."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from seem_ros.inference import SeemPredictor, VisualPrompt
from seem_ros.inference.predictor import ImageEmbedding
from seem_ros.model.decoder import DecoderOutput, GroundingTokens, ImageFeatures, SpatialTokens
from seem_ros.tracking import ObjectPrompt, ObjectTracker, Track
from seem_ros.tracking import metrics

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "seem_ros" / "weights" / "seem_tiny.pt"

# ----------------------------------------------------------------------------- oracle test double
# Images carry object ids in the red channel (id * 10). The double's "features" are the one-hot ids
# at 1/4 resolution, so a prompt's tokens name the object under it and decoding returns exactly
# that object's pixels, on any image: a perfect segmenter, so the tests see only tracker logic.
C = 16                      # feature channels = max ids (0 = background)
H, W = 96, 128


class FakeTokenizer:
    def __call__(self, texts):
        ids = [int(re.search(r"\d+", t).group()) if re.search(r"\d+", t) else 0 for t in texts]
        return torch.tensor(ids)[:, None], torch.ones(len(ids), 1, dtype=torch.long)


class FakeTextEncoder:
    def encode_tokens(self, ids, att):
        oh = F.one_hot(ids.clamp(0, C - 1), C).float()           # [N, L, C]
        return oh, oh[:, 0]


class FakeModel:
    def __init__(self, bleed: bool = False):
        self.text_encoder = FakeTextEncoder()
        self.bleed = bleed          # masks spill one feature cell over their border
        self.calls = []             # (spatial prompts, memory given, grounding phrases) per decode

    def encode_image(self, rgb: np.ndarray) -> ImageFeatures:
        ids = torch.from_numpy(np.rint(rgb[..., 0] / 10.0).astype(np.int64)).clamp(0, C - 1)
        oh = F.one_hot(ids, C).permute(2, 0, 1).float()[None]     # [1, C, H, W]
        return ImageFeatures(F.avg_pool2d(oh, 4), [], [], [], [])

    def grounding_tokens(self, ids, att):
        tok, cls = self.text_encoder.encode_tokens(ids, att)
        t = tok[att.bool()][None]
        return GroundingTokens(t, torch.zeros(t.shape[:2], dtype=torch.bool)), cls

    def spatial_tokens(self, feats, pos, neg) -> SpatialTokens:
        mf = feats.mask_features                                   # [1, C, h, w]
        w = F.adaptive_avg_pool2d(pos.float(), mf.shape[-2:])      # [1, ns, h, w]
        mean = torch.einsum("bnhw,bchw->bnc", w, mf) / w.flatten(2).sum(-1).clamp(min=1e-6)[..., None]
        ns = pos.shape[1]
        return SpatialTokens(mean, [mean.clone()], torch.arange(ns)[None], ns)

    def _masks(self, feats, ids: torch.Tensor) -> torch.Tensor:
        mf = feats.mask_features[0]
        m = mf[ids.clamp(min=0)]                                   # [n, h, w] coverage of each id
        if self.bleed:
            m = F.max_pool2d(m[None], 3, 1, 1)[0]
        logits = 20 * (m - 0.5)
        logits[ids <= 0] = -10.0                                   # nothing named: empty mask
        return logits

    def decode(self, feats, grounding=None, spatial=None, memory=None) -> DecoderOutput:
        self.calls.append((0 if spatial is None else spatial.num_prompts, memory is not None,
                           0 if grounding is None else grounding.tokens.shape[1]))
        q = torch.arange(C)
        eye = torch.eye(C)
        out = DecoderOutput(self._masks(feats, q)[None], eye[None])
        if grounding is not None:
            out.grounding_masks, out.grounding_embeds = self._masks(feats, q)[None], eye[None]
        if spatial is not None:
            ns = spatial.num_prompts
            tok = spatial.level_tokens[0][0]
            idx = spatial.index[0]
            v = torch.zeros(ns, C).index_add_(0, idx, tok) / torch.bincount(idx, minlength=ns).clamp(min=1)[:, None]
            ids = v[:, 1:].argmax(1) + 1
            ids[v[:, 1:].max(1).values < 0.05] = 0
            masks = self._masks(feats, ids)
            out.prompt_masks, out.prompt_embeds = masks[None], eye[ids][None]
            out.spatial_masks = masks.repeat_interleave(3, 0)[None]
            out.prompt_choice = torch.zeros(1, ns, dtype=torch.long)
        return out

    def similarity(self, embeds, text, clamp=True):
        return 10 * F.normalize(embeds, dim=-1) @ F.normalize(text, dim=-1).transpose(-1, -2)


class FakePredictor(SeemPredictor):
    """SeemPredictor's own predict / predict_text / upsample code on the oracle model."""

    def __init__(self, bleed: bool = False):         # no super().__init__: no real model to move
        self.model = FakeModel(bleed)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.short_side, self.point_radius = H, 1
        self.tokenizer = FakeTokenizer()
        self.embedding, self.vocabulary, self._vocab_emb, self._vocab_cache = None, [], None, {}
        self._axes = {}

    def encode(self, image):
        return ImageEmbedding(self.model.encode_image(image), image.shape[:2], image.shape[:2],
                              image.shape[:2], image=image)


def draw(boxes) -> np.ndarray:
    """id -> (x, y, w, h) rectangles, later ones on top; parts outside the image are clipped."""
    img = np.zeros((H, W, 3), np.uint8)
    for oid, (x, y, w, h) in boxes.items():
        img[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0), 0] = oid * 10
    return img


def ids_of(img) -> np.ndarray:
    return np.rint(img[..., 0] / 10.0).astype(int)


def click(img, oid) -> ObjectPrompt:
    ys, xs = np.nonzero(ids_of(img) == oid)
    return ObjectPrompt("point", visual=VisualPrompt(points=[[xs.mean() + 0.5, ys.mean() + 0.5]]))


def exit_sequence(n=16):
    """Object 1 still; object 2 slides right out of view (frames 5-9) and comes back; object 3
    still. 10 frames per second."""
    frames = []
    for i in range(n):
        x2 = 70 + 12 * i if i < 5 else (200 if i < 10 else 96)
        frames.append(draw({1: (8, 8, 20, 16), 2: (x2, 40, 20, 20), 3: (30, 64, 24, 16)}))
    return frames


def iou(a, b):
    return metrics.region_similarity(a, b)


# ----------------------------------------------------------------------------- tracker logic
def test_stable_ids_lost_and_reacquired_with_old_id():
    pred = FakePredictor()
    tr = ObjectTracker(pred)
    frames = exit_sequence()
    emb = pred.set_image(frames[0])
    added = [tr.add(click(frames[0], o), emb, 0.0) for o in (1, 2, 3)]
    assert all(isinstance(t, Track) and t.state == "tracked" and t.age_frames == 0 for t in added)
    ids = [t.id for t in added]
    assert ids == [1, 2, 3]
    for i, img in enumerate(frames[1:], 1):
        tracks = {t.id: t for t in tr.update(pred.set_image(img), i * 0.1)}
        assert set(tracks) == {1, 2, 3}                             # nothing dropped, no new ids
        truth = ids_of(img)
        for tid, gid in zip(ids, (1, 2, 3)):
            t = tracks[tid]
            if (truth == gid).sum() == 0:
                assert t.state == "lost" and t.mask is None, (i, tid)
                assert t.lost_since == pytest.approx(0.5)          # stamp of the first frame without it
            else:
                assert t.state == "tracked" and t.lost_since is None, (i, tid)
                assert iou(t.mask, truth == gid) > 0.9, (i, tid)
        assert tracks[1].age_frames == i


def test_growth_is_measured_against_the_objects_own_mask_not_what_overlaps_left_it():
    """An object whose last output was cut down by a neighbour's claim on its pixels is not
    "grown suspiciously" when its own mask comes back whole; with no record of its own mask
    the same frame makes it lost (the max_growth rule is what is being tested)."""
    pred = FakePredictor()
    img = draw({1: (20, 20, 30, 30)})
    states = []
    for own in (900, 0):
        tr = ObjectTracker(pred)
        emb = pred.set_image(img)
        t = tr.add(click(img, 1), emb, 0.0)
        o = tr._get(t.id)
        o.mask = ids_of(img) == 1
        o.mask[25:, :] = False                          # a neighbour took all but 5 rows (150 px)
        o.area, o.own_area, o.usual_area = int(o.mask.sum()), own, own
        assert o.area == 150
        states.append(tr.update(pred.set_image(img), 0.1)[0].state)
    assert states == ["tracked", "lost"]


def test_lost_object_is_not_segmented_elsewhere_and_dropped_after_timeout():
    pred = FakePredictor()
    tr = ObjectTracker(pred, lost_timeout_s=0.25)
    frames = exit_sequence()
    emb = pred.set_image(frames[0])
    tr.add(click(frames[0], 1), emb, 0.0)
    tr.add(click(frames[0], 2), emb, 0.0)
    seen = []
    for i, img in enumerate(frames[1:10], 1):
        tracks = {t.id: t for t in tr.update(pred.set_image(img), i * 0.1)}
        seen.append(set(tracks))
        if 2 in tracks and tracks[2].state == "lost":
            assert iou(tracks[1].mask, ids_of(img) == 1) > 0.9      # object 1 did not take its place
    assert {1, 2} in seen
    assert seen[-1] == {1}                                          # lost 0.5 s > 0.25 s: dropped
    t = tr.add(click(frames[12], 2), pred.set_image(frames[12]), 1.2)
    assert t.id == 3                                                # ids are never reused


def test_full_occlusion_is_lost_then_reacquired():
    """Object 2 slides behind object 3 (drawn on top), is hidden for four frames, comes out."""
    pred = FakePredictor()
    tr = ObjectTracker(pred)
    xs = [20, 32, 44, 56, 60, 60, 60, 76, 88, 100]
    frames = [draw({2: (x, 40, 16, 16), 3: (50, 30, 36, 36)}) for x in xs]
    emb = pred.set_image(frames[0])
    a, b = (tr.add(click(frames[0], o), emb, 0.0).id for o in (2, 3))
    states = []
    for i, img in enumerate(frames[1:], 1):
        t = {x.id: x for x in tr.update(pred.set_image(img), i * 0.1)}
        hidden = not (ids_of(img) == 2).any()
        states.append(t[a].state)
        assert t[a].state == ("lost" if hidden else "tracked"), i
        assert t[b].state == "tracked" and iou(t[b].mask, ids_of(img) == 3) > 0.9
        if not hidden:
            assert iou(t[a].mask, ids_of(img) == 2) > 0.8
    assert states.count("lost") == 4 and states[-1] == "tracked"


def test_text_object_out_of_view_when_added_is_found_later():
    pred = FakePredictor()
    tr = ObjectTracker(pred)
    frames = exit_sequence()
    t = tr.add(ObjectPrompt("text", text="thing 2"), pred.set_image(frames[6]), 0.6)   # not in view
    assert t.state == "lost" and t.mask is None and t.lost_since == 0.6
    for i in range(7, 12):
        tracks = tr.update(pred.set_image(frames[i]), i * 0.1)
    assert [x.id for x in tracks] == [t.id]
    assert tracks[0].state == "tracked" and iou(tracks[0].mask, ids_of(frames[11]) == 2) > 0.9


def test_one_decoder_pass_per_frame_and_no_redecode_after_add():
    pred = FakePredictor()
    tr = ObjectTracker(pred)
    img = draw({1: (8, 8, 20, 16), 2: (60, 40, 20, 20), 3: (30, 64, 24, 16), 4: (90, 10, 16, 16)})
    emb = pred.set_image(img)
    for o in (1, 2, 3):
        tr.add(click(img, o), emb, 0.0)
    emb2 = pred.set_image(img)
    tr.add(click(img, 4), emb2, 0.1)                  # added on the new frame: not decoded again
    pred.model.calls.clear()
    tracks = tr.update(emb2, 0.1)
    assert len(pred.model.calls) == 1
    assert pred.model.calls[0][0] == 3               # three objects, one pass
    assert all(t.state == "tracked" for t in tracks)
    pred.model.calls.clear()
    tr.update(emb2, 0.1)                              # everything already done on this image
    assert pred.model.calls == []


def test_masks_never_overlap():
    pred = FakePredictor(bleed=True)                  # each mask spills onto its neighbour
    tr = ObjectTracker(pred, components=False)
    img = draw({1: (20, 20, 24, 24), 2: (44, 20, 24, 24), 3: (44, 44, 24, 24)})
    emb = pred.set_image(img)
    for o in (1, 2, 3):
        tr.add(click(img, o), emb, 0.0)
    for i in range(1, 3):
        tracks = tr.update(pred.set_image(img), i * 0.1)
        stack = np.stack([t.mask for t in tracks if t.mask is not None])
        assert len(stack) == 3
        assert stack.sum(0).max() == 1
        for t in tracks:
            assert iou(t.mask, ids_of(img) == t.id) > 0.6


def test_region_at_the_image_border_needs_a_clearer_appearance_winner():
    """Two lost look-alikes and one region coming back: inside the image the more similar object
    takes it at a small lead; cut by the border (partly out of view, less certain appearance) the
    same lead is not enough and the region waits for a later frame."""
    from seem_ros.tracking.tracker import LOST, _Candidate, _Object
    pred = FakePredictor()
    tr = ObjectTracker(pred, reid_margin=0.02, edge_margin=0.15)
    emb = pred.set_image(draw({2: (50, 40, 20, 20)}))
    sims = {1: 0.97, 2: 0.88}                         # ahead by 0.09: above reid_margin, below edge_margin
    tr._similarity = lambda o, app, e: sims[o.id]

    def lost_object(oid):                             # both left the view on the right
        return _Object(oid, click(draw({2: (50, 40, 20, 20)}), 2), "", 0.0, state=LOST,
                       anchor=torch.ones(2 * C) / np.sqrt(2 * C), box=np.array([90.0, 30, 128, 70]),
                       box_stamp=0.9, lost_since=1.0)

    def region(x, y):
        m = np.zeros((H, W), bool)
        m[y:y + 20, x:x + 20] = True
        return _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))

    lost = [lost_object(1), lost_object(2)]
    taken = np.zeros((H, W), bool)
    inside = tr._reacquire(lost, [region(80, 40)], taken, emb, 1.2)
    assert set(inside) == {1}
    at_edge = tr._reacquire(lost, [region(W - 20, 40)], taken, emb, 1.2)
    assert at_edge == {}
    sims[2] = 0.80                                    # a clear winner is taken at the border too
    assert set(tr._reacquire(lost, [region(W - 20, 40)], taken, emb, 1.2)) == {1}


def test_look_alikes_coming_back_go_to_the_one_that_left_there():
    """Two lost objects that look the same to the model (same colour, shapes it cannot tell
    apart): a region coming back where the second one left goes to it, even when the first
    one's appearance is a little closer; without the position term it went to the first."""
    from seem_ros.tracking.tracker import LOST, _Candidate, _Object
    pred = FakePredictor()
    emb = pred.set_image(draw({2: (40, 60, 20, 20)}))

    def lost_object(oid, box):
        return _Object(oid, click(draw({2: (40, 60, 20, 20)}), 2), "", 0.0, state=LOST,
                       anchor=torch.ones(2 * C) / np.sqrt(2 * C), box=np.array(box, float),
                       box_stamp=0.9, lost_since=1.0)

    m = np.zeros((H, W), bool)
    m[60:80, 40:60] = True
    back = _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))
    lost = [lost_object(1, [40, 8, 60, 28]), lost_object(2, [40, 58, 60, 78])]
    sims = {1: 0.97, 2: 0.93}
    taken = np.zeros((H, W), bool)
    for weight, owner in ((0.0, 1), (2.0, 2)):
        tr = ObjectTracker(pred, position_weight=weight)
        tr._similarity = lambda o, app, e: sims[o.id]
        assert set(tr._reacquire(lost, [back], taken, emb, 3.0)) == {owner}
    assert ObjectTracker(pred).position_weight == 2.0          # the default


def test_with_the_camera_pose_a_lost_object_is_looked_for_where_its_3d_position_projects():
    """The camera moved while two look-alikes were lost: a region now shows where the first one
    was left in the image, but it is where the second one's 3D position projects. With each
    frame's camera pose (CameraView) and the objects' placed positions it goes to the second;
    on image positions alone, to the first. The first, whose position now projects far outside
    the image, cannot take it."""
    from seem_ros.tracking import CameraView
    from seem_ros.tracking.tracker import LOST, TRACKED, _Candidate, _Object
    pred = FakePredictor()
    emb = pred.set_image(draw({2: (54, 8, 20, 20)}))
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    then = CameraView(K, np.eye(4))
    now_T = np.eye(4)
    now_T[:3, 3] = (0.6, 0.5, 0.0)              # the camera slid right and down
    now = CameraView(K, now_T)
    xyz = {1: np.array([0.0, -0.3, 1.0]), 2: np.array([0.6, 0.2, 1.0])}   # pixels (64, 18), (124, 68)
    boxes = {1: [54, 8, 74, 28], 2: [114, 58, 134, 78]}

    def tracker(view_known):
        tr = ObjectTracker(pred)
        for oid in (1, 2):
            tr._objects[oid] = _Object(oid, click(draw({2: (54, 8, 20, 20)}), 2), "", 0.0, state=TRACKED,
                                       anchor=torch.ones(2 * C) / np.sqrt(2 * C), box=np.array(boxes[oid], float),
                                       box_stamp=0.9)
        tr.place(xyz, then, 0.9)
        tr.place({1: [np.nan, 0, 1], 3: [0, 0, 1]}, then, 0.9)   # bad and unknown entries are skipped
        for o in tr._objects.values():
            o.state, o.lost_since = LOST, 1.0
        tr._similarity = lambda o, app, e: 0.95
        return tr, list(tr._objects.values()), (now if view_known else None)

    m = np.zeros((H, W), bool)
    m[8:28, 54:74] = True
    back = _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))
    taken = np.zeros((H, W), bool)
    for known, owner in ((False, 1), (True, 2)):
        tr, lost, view = tracker(known)
        np.testing.assert_allclose(tr._objects[2].where.position, xyz[2])
        assert set(tr._reacquire(lost, [back], taken, emb, 1.5, view)) == {owner}
    # Only the first is lost now: on the image alone it takes the region, with the pose it cannot.
    for known, owners in ((False, {1}), (True, set())):
        tr, lost, view = tracker(known)
        assert set(tr._reacquire(lost[:1], [back], taken, emb, 1.5, view)) == owners
    # Positions kept in another fixed frame (fixed_frame changed) are not used: the image decides.
    tr, lost, _ = tracker(True)
    assert set(tr._reacquire(lost, [back], taken, emb, 1.5, CameraView(K, now_T, "map"))) == {1}
    # Behind the camera: not looked for at all.
    behind = np.eye(4)
    behind[:3, 3] = (0.0, 0.0, 2.0)
    tr, lost, _ = tracker(True)
    assert tr._expected(lost[0], 1.5, CameraView(K, behind)) is None


def test_an_object_expected_just_outside_the_image_may_already_be_in_view():
    """A lost object whose 3D position projects just past the left border (a placed position is
    a few pixels off) competes for a region inside the image next to that border, and takes it
    from a look-alike left farther away. Projected farther out than OUTSIDE_SLACK (0.02 of the
    image diagonal: 3 pixels here), it can only come back across the border, and the look-alike
    takes the region."""
    from seem_ros.tracking.tracker import LOST, TRACKED, _Candidate, _Object
    pred, img, emb, view, m = square_in_view(4)                 # 4 pixels from the border
    region = _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))

    def winner(x_left, stamp):
        tr = ObjectTracker(pred)
        for oid, x in ((1, x_left), (2, 30)):                   # 2: inside, 10 pixels to the right
            box = np.array([x, 40, x + 16, 56], float)
            tr._objects[oid] = _Object(oid, click(img, 2), "", 0.0, state=TRACKED,
                                       anchor=torch.ones(2 * C) / np.sqrt(2 * C), box=box, box_stamp=0.9)
            tr.place({oid: np.array([(x + 8 - 64) / 100, 0.0, 1.0])}, view, 0.9)
            tr._objects[oid].state, tr._objects[oid].lost_since = LOST, 1.0
        tr._similarity = lambda o, app, e: 0.95
        return set(tr._reacquire(list(tr._objects.values()), [region], np.zeros((H, W), bool), emb, stamp, view))

    assert winner(-18, 1.5) == {1}             # 2 pixels outside: the nearer one
    assert winner(-21, 1.5) == {2}             # 5 pixels outside
    assert winner(-31, 2.0) == {2}             # 15 pixels outside (within its reach by then)


def test_a_partial_view_does_not_move_the_placed_position():
    """An object leaving the image (or going behind another) shows less and less of itself: its
    visible part's centroid creeps away from its centre, which is neither where it is nor a
    velocity. Its placed position (where it is looked for once lost) stays the last whole view's;
    a whole view moves it again."""
    from seem_ros.tracking.tracker import TRACKED, _Object
    tr = ObjectTracker(FakePredictor())
    view = camera_at_origin()
    o = _Object(1, click(draw({2: (54, 8, 20, 20)}), 2), "", 0.0, state=TRACKED)
    tr._objects[1] = o

    def seen(x0, x1, stamp, p, y1=28):
        o.mask = np.zeros((H, W), bool)
        o.mask[8:y1, x0:x1] = True
        o.area = int(o.mask.sum())
        o.box, o.box_stamp = np.array([x0, 8, x1, y1], float), stamp
        tr.place({1: np.array(p)}, view, stamp)

    seen(54, 74, 0.0, [0.0, -0.3, 1.0])
    seen(60, 80, 0.1, [0.06, -0.3, 1.0])            # whole: moved 0.6 m/s
    moving = o.where
    assert moving.velocity[0] > 0 and moving.stamp == 0.1
    seen(110, W, 0.2, [0.55, -0.3, 1.0])            # cut by the right border
    assert o.where is moving
    seen(80, 100, 0.25, [0.3, -0.35, 1.0], y1=16)   # its lower 60 % hidden
    assert o.where is moving
    seen(80, 100, 0.25, [0.3, -0.35, 2.0], y1=16)   # as much shown from twice as far: whole
    assert o.where.stamp == 0.25
    seen(100, 120, 0.3, [0.46, -0.3, 1.0])          # whole again
    assert o.where.stamp == 0.3
    np.testing.assert_allclose(o.where.position, [0.46, -0.3, 1.0])


def camera_at_origin():
    """A camera (f = 100 px, centre (64, 48)) at the fixed frame's origin."""
    from seem_ros.tracking import CameraView
    return CameraView(np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]]), np.eye(4))


def spread_onto_deeper():
    """Object 1 (a 16-pixel square) alone; the next image, where a same-coloured look-alike
    touches it on the right; and that image's depth: 1 m, the look-alike 30 cm behind."""
    first = draw({1: (30, 40, 16, 16)})
    spread = draw({1: (30, 40, 16, 16), 2: (0, 0, 1, 1)})
    spread[40:56, 46:62, 0] = 10
    deep = np.full((H, W), 1.0, np.float32)
    deep[40:56, 46:62] = 1.3
    return first, spread, deep


def test_a_mask_that_grows_onto_something_deeper_is_not_taken():
    """With depth and the camera pose, a propagated mask that doubled by spreading onto a
    look-alike standing 30 cm behind the object (the oracle holds same-id pixels as one object,
    as the bundled model holds touching same-coloured ones) is not taken whole: it is cut back to
    the object's own surface. Where no part is left at the object's depth (the whole mask moved
    30 cm back), the object is lost on that frame. The same spread with no depth difference in
    the median's way (depth off, or max_jump off) is taken whole; a 10 cm move with no growth is
    taken too."""
    view = camera_at_origin()
    first, spread, deep = spread_onto_deeper()
    depth0 = np.full((H, W), 1.0, np.float32)

    def second_frame(img, depth, **kw):
        pred = FakePredictor()
        tr = ObjectTracker(pred, **kw)
        emb = pred.set_image(first)
        tr.set_depth(emb, depth0)
        tid = tr.add(click(first, 1), emb, 0.0).id
        for stamp, (image, z) in ((0.1, (first, depth0)), (0.2, (img, depth))):
            emb = pred.set_image(image)
            tr.set_depth(emb, z)
            track = {t.id: t for t in tr.update(emb, stamp, view)}[tid]    # its depth median is kept
        return track

    own = ids_of(first) == 1
    cut = second_frame(spread, deep).mask
    assert not (cut & ~own).any() and cut.sum() > 0.95 * own.sum()              # the object, not the look-alike
    assert second_frame(spread, np.where(own, 1.3, deep)).state == "lost"      # nothing left where it was
    assert second_frame(spread, deep, max_jump=None).mask.sum() > 1.9 * own.sum()
    assert second_frame(spread, deep, surface_jump=None).mask.sum() > 1.9 * own.sum()   # no depth used
    moved = draw({1: (40, 40, 16, 16)})                # 10 px = 10 cm at 1 m, same size
    assert second_frame(moved, depth0).state == "tracked"
    assert ObjectTracker(FakePredictor()).max_jump == 0.05


def test_the_frame_right_after_a_prompt_has_the_jump_test():
    """As the node does it: the prompt and the frame's update on the same image, then the next
    frame. The prompted mask's depth median is kept on that update (the object was not
    propagated there), so a spread onto a look-alike 30 cm behind on the very next frame is not
    taken whole (it is cut back to the object); without the camera pose on the prompt's frame
    there is no median to compare with."""
    view = camera_at_origin()
    first, spread, deep = spread_onto_deeper()

    def next_frame(prompt_view):
        pred = FakePredictor()
        tr = ObjectTracker(pred)
        emb = pred.set_image(first)
        tr.set_depth(emb, np.ones((H, W), np.float32))
        tid = tr.add(click(first, 1), emb, 0.0).id
        tr.update(emb, 0.0, prompt_view)
        emb = pred.set_image(spread)
        tr.set_depth(emb, deep)
        return {t.id: t for t in tr.update(emb, 0.1, view)}[tid]

    own = ids_of(first) == 1
    cut = next_frame(view).mask
    assert not (cut & ~own).any() and cut.sum() > 0.95 * own.sum()
    assert next_frame(None).mask.sum() > 1.9 * own.sum()


def square_in_view(x):
    """A 16-pixel square of object 2 at column x, its image encoded, a camera (f = 100 px) at the
    fixed frame's origin, and the square's mask."""
    pred = FakePredictor()
    img = draw({2: (x, 40, 16, 16)})
    view = camera_at_origin()
    return pred, img, pred.set_image(img), view, ids_of(img) == 2


def test_two_masks_on_one_object_go_to_the_object_whose_depth_is_there():
    """Object 1 went behind its look-alike 2, 30 cm nearer, and both propagated masks now cover 2
    equally confidently (as the bundled model's do for same-coloured objects). With depth and the
    camera pose, 2 keeps the pixels: its mask's depth median moved 1 cm from its last one, 1's
    35 cm (1 is left with nothing: lost). Without depth medians the tie goes to the first
    added; where neither moved clearly less, depth decides nothing."""
    from seem_ros.tracking.tracker import TRACKED, _Candidate, _Object, _resolve_overlaps
    pred, img, emb, view, m = square_in_view(50)
    tr = ObjectTracker(pred)
    tr.set_depth(emb, np.where(m, 1.0, 2.0).astype(np.float32))
    here = tr._surface_point(m, emb, view)[0]

    def owners(surfaces):
        for oid, p in surfaces.items():
            tr._objects[oid] = _Object(oid, click(img, 2), "", 0.0, state=TRACKED,
                                       surface=None if p is None else (p, view.frame))
        chosen = {oid: _Candidate(oid, "propagate", torch.zeros(H // 4, W // 4), torch.ones(C), m,
                                  np.full((H, W), 0.9, np.float32), score=0.9) for oid in surfaces}
        return {oid: int(k.sum()) for oid, k in _resolve_overlaps(chosen, tr._held_by_depth(chosen, emb, view)).items()}

    n = int(m.sum())
    assert owners({1: here + [-0.17, 0.0, 0.3], 2: here + [0.01, 0.0, 0.0]}) == {1: 0, 2: n}
    assert owners({1: here + [0.01, 0.0, 0.0], 2: here + [-0.17, 0.0, 0.3]}) == {1: n, 2: 0}
    assert owners({1: here + [0.05, 0.0, 0.0], 2: here + [-0.05, 0.0, 0.0]}) == {1: n, 2: 0}   # a tie: the first
    assert ObjectTracker(pred, max_jump=None).max_jump is None       # then no depth median is kept ...
    assert owners({1: None, 2: None}) == {1: n, 2: 0}                 # ... and the tie goes to the first


def test_a_mask_coming_back_whole_after_a_partial_view_is_not_a_leak():
    """An object cut to a sixth of its size by an occluder for one frame comes back whole (six
    times its last mask): growth is measured against its usual size, so it stays tracked. A
    mask four times its steady size (spread onto a touching look-alike) is still a leak."""
    pred = FakePredictor()
    whole = draw({1: (20, 40, 16, 16)})
    cut = draw({1: (20, 40, 16, 16), 2: (20, 40, 16, 13)})          # 3 rows of 16 left in view
    spread = whole.copy()
    spread[40:56, 36:84, 0] = 10                                     # a look-alike three times as large

    def states(frames):
        tr = ObjectTracker(pred)
        tid = tr.add(click(whole, 1), pred.set_image(whole), 0.0).id
        return [{t.id: t for t in tr.update(pred.set_image(f), 0.1 * (i + 1))}[tid].state
                for i, f in enumerate(frames)]

    assert states([whole, cut, whole]) == ["tracked"] * 3
    assert states([whole, whole, spread]) == ["tracked", "tracked", "lost"]


def test_an_object_whose_mask_fails_on_a_frame_still_competes_for_its_region():
    """Object 1, three frames mostly hidden, comes back whole: five times its last mask, more
    than max_growth of its recent size, so its propagated mask is refused on that frame. Its
    look-alike 2, hidden just beside it, finds that region. The region goes to the object
    that was just there: before, only objects lost on earlier frames competed, and 2 took it."""
    pred = FakePredictor()

    def frame(hide1: bool, hide2: bool = True) -> np.ndarray:
        img = draw({1: (40, 40, 20, 20)})
        img[40:60, 64:84, 0] = 10                                    # 2: a look-alike of 1 (same colour)
        if hide2:
            img[38:62, 62:86, 0] = 30                                # ... hidden from frame 1 on
        if hide1:
            img[40:60, 40:56, 0] = 40                                # 1: 4 of its 20 columns in view
        return img

    first = frame(False, hide2=False)
    frames = [frame(True)] * 3 + [frame(False)]

    def owner(rejoin: bool):
        tr = ObjectTracker(pred, rejoin=rejoin)
        emb = pred.set_image(first)
        a = tr.add(ObjectPrompt("point", visual=VisualPrompt(points=[[50.5, 50.5]])), emb, 0.0).id
        b = tr.add(ObjectPrompt("point", visual=VisualPrompt(points=[[74.5, 50.5]])), emb, 0.0).id
        for i, img in enumerate(frames, 1):
            tracks = {t.id: t for t in tr.update(pred.set_image(img), 0.1 * i)}
        whole = ids_of(frames[-1]) == 1
        return {tid: (t.state, 0.0 if t.mask is None else iou(t.mask, whole)) for tid, t in tracks.items()}, a, b

    got, a, b = owner(True)
    assert got[a][0] == "tracked" and got[a][1] > 0.95 and got[b][0] == "lost"
    assert ObjectTracker(pred).rejoin                                 # the default
    got, a, b = owner(False)
    assert got[b][0] == "tracked" and got[b][1] > 0.95 and got[a][0] == "lost"   # the switch it prevents


def test_a_region_beside_a_tracked_object_does_not_go_to_a_lost_one_from_farther_away():
    """With depth and the camera pose, a region 3 cm from where a tracked object stands and 30 cm
    from where a lost look-alike was placed is a piece of the tracked one its mask missed: the
    lost one does not take it. Where no tracked object stands near it, or with near_tracked off,
    it does; and a lost object placed right there still does, next to a tracked one."""
    from seem_ros.tracking.tracker import LOST, TRACKED, _Candidate, _Object
    pred, img, emb, view, m = square_in_view(70)
    K = view.K
    region = _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))
    at = np.median(np.stack(np.nonzero(m), 1), 0)                 # (row, column) of its middle
    centre = np.array([(at[1] + 0.5 - 64) / 100, (at[0] + 0.5 - 48) / 100, 1.0])

    def winner(lost_at, tracked_at, **kw):
        tr = ObjectTracker(pred, **kw)
        tr.set_depth(emb, np.ones((H, W), np.float32))             # everything 1 m away
        for oid, p in ((1, lost_at), (3, tracked_at)):
            uv = K @ p / p[2]
            tr._objects[oid] = _Object(oid, click(img, 2), "", 0.0, state=TRACKED,
                                       anchor=torch.ones(2 * C) / np.sqrt(2 * C),
                                       box=np.array([uv[0] - 8, uv[1] - 8, uv[0] + 8, uv[1] + 8]), box_stamp=0.9)
            tr.place({oid: p}, view, 0.9)
        lost = tr._objects[1]
        lost.state, lost.lost_since = LOST, 1.0
        tr._similarity = lambda o, app, e: 0.95
        return set(tr._reacquire([lost], [region], np.zeros((H, W), bool), emb, 1.2, view))

    behind = centre * 1.3                                          # on the same ray, 30 cm farther
    beside = centre + [0.03, 0.0, 0.0]
    assert winner(behind, beside) == set()
    assert winner(behind, centre + [0.3, 0.0, 0.0]) == {1}        # no tracked object near it
    assert winner(behind, beside, near_tracked=None) == {1}
    assert winner(centre + [0.0, 0.0, 0.01], beside) == {1}        # the lost one was placed right there
    assert ObjectTracker(pred).near_tracked == 0.05


def test_a_region_does_not_go_to_an_object_of_another_colour():
    """A black region comes back next to where a green object left, far from where the black
    one left, and the model's appearance finds it almost as green-object-like (0.90 against
    0.99): position alone gives it to the green object. With colours the green one cannot win;
    the black one is not clearly ahead of it there, so the region waits; where the green one is
    no nearer, the black one takes it. Colour differences between same-coloured objects change
    nothing."""
    from seem_ros.tracking.tracker import LOST, _Candidate, _Object
    pred = FakePredictor()
    emb = pred.set_image(draw({2: (40, 60, 20, 20)}))
    h4, w4 = emb.features.mask_features.shape[-2:]
    black, green = torch.tensor([0.05, 0.05, 0.06]), torch.tensor([0.1, 0.6, 0.1])
    emb.colour = black[:, None, None].expand(3, h4, w4).clone()

    def lost_object(oid, box, colour):
        return _Object(oid, click(draw({2: (40, 60, 20, 20)}), 2), "", 0.0, state=LOST,
                       anchor=torch.ones(2 * C) / np.sqrt(2 * C), box=np.array(box, float),
                       box_stamp=0.9, lost_since=1.0, colour=colour)

    m = np.zeros((H, W), bool)
    m[60:80, 40:60] = True
    back = _Candidate(1, "reference", torch.zeros(H // 4, W // 4), torch.ones(C), m, torch.ones(H, W))
    sims = {1: 0.90, 2: 0.99}                          # 1 green, 2 black
    taken = np.zeros((H, W), bool)

    def winner(gate, green_box, colour_1=green):
        tr = ObjectTracker(pred, colour_gate=gate)
        tr._similarity = lambda o, app, e: sims[o.id]
        lost = [lost_object(1, green_box, colour_1), lost_object(2, [40, 8, 60, 28], black)]
        return set(tr._reacquire(lost, [back], taken, emb, 3.0))

    near, far = [40, 58, 60, 78], [40, 0, 60, 20]
    assert winner(100.0, near) == {1}                  # position alone: the wrong object
    assert winner(0.2, near) == set()                  # not the green one; the black one waits
    assert winner(0.2, far) == {2}
    assert winner(0.2, near, colour_1=black + 0.05) == {1}   # same colour: as before
    assert ObjectTracker(pred).colour_gate == 0.15             # the default


def test_embedding_carries_the_image_colours_on_the_feature_grid():
    from model_fixtures import predictor
    p = predictor("tiny", short_side=64)
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, 48:] = (255, 0, 0)                          # right half red
    emb = p.set_image(img)
    h4, w4 = emb.features.mask_features.shape[-2:]
    assert emb.colour.shape == (3, h4, w4)
    np.testing.assert_allclose(emb.colour[:, :16, :12].numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(emb.colour[0, :16, 12:24].numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(emb.colour[1:, :16, 12:24].numpy(), 0, atol=1e-6)


def test_text_and_reference_prompts_and_refind_by_phrase():
    pred = FakePredictor()
    tr = ObjectTracker(pred)
    frames = exit_sequence()
    emb = pred.set_image(frames[0])
    t = tr.add(ObjectPrompt("text", text="thing 2"), emb, 0.0)
    assert (t.label, t.prompt_kind, t.prompt_text) == ("thing 2", "text", "thing 2")
    assert iou(t.mask, ids_of(frames[0]) == 2) > 0.9
    tokens = pred.reference_tokens([click(frames[0], 3).visual], emb)
    r = tr.add(ObjectPrompt("reference", tokens=tokens), pred.set_image(frames[3]), 0.3)
    assert iou(r.mask, ids_of(frames[3]) == 3) > 0.9
    states = []
    for i in range(4, 13):
        states.append({x.id: x.state for x in tr.update(pred.set_image(frames[i]), i * 0.1)}[t.id])
    assert "lost" in states and states[-1] == "tracked"


def test_add_refine_replace_remove_clear_and_errors():
    pred = FakePredictor()
    tr = ObjectTracker(pred, max_objects=2)
    img = draw({1: (8, 8, 20, 16), 2: (60, 40, 20, 20), 3: (30, 64, 24, 16)})
    emb = pred.set_image(img)
    for bad in (ObjectPrompt("laser"), ObjectPrompt("text", text="  "), ObjectPrompt("box"),
                ObjectPrompt("point", visual=VisualPrompt()), ObjectPrompt("reference")):
        with pytest.raises(ValueError):
            tr.add(bad, emb, 0.0)
    with pytest.raises(ValueError, match="no positive pixel"):   # click outside the image
        tr.add(ObjectPrompt("point", visual=VisualPrompt(points=[[500, 500]])), emb, 0.0)
    a = tr.add(click(img, 1), emb, 0.0)
    b = tr.add(ObjectPrompt("box", visual=VisualPrompt(boxes=[[60, 40, 80, 60]])), emb, 0.0)
    assert (a.id, b.id) == (1, 2)                                # failed adds took no id
    with pytest.raises(ValueError, match="max_objects"):
        tr.add(click(img, 3), emb, 0.0)
    # Refine: the object's current logits are the memory; a lone negative click works on a new frame.
    emb2 = pred.set_image(img)
    pred.model.calls.clear()
    r = tr.refine(2, VisualPrompt(points=[[70, 50]], labels=[0]), emb2, 0.1)
    assert r.id == 2 and pred.model.calls[-1][1] is True
    with pytest.raises(KeyError):
        tr.refine(99, VisualPrompt(points=[[5, 5]]), emb2, 0.1)
    # Replace keeps the id and takes the new object.
    t = tr.replace(1, click(img, 3), emb2, 0.1)
    assert t.id == 1 and iou(t.mask, ids_of(img) == 3) > 0.9
    with pytest.raises(KeyError):
        tr.replace(7, click(img, 3), emb2, 0.1)
    assert tr.remove(1) is True and tr.remove(1) is False
    assert [t.id for t in tr.tracks] == [2]
    tr.clear()
    assert tr.tracks == [] and tr.update(emb2, 0.2) == []
    assert tr.add(click(img, 1), emb2, 0.2).id == 3              # ids keep counting after clear


@pytest.mark.parametrize("zoom", [True, False])
def test_refine_answers_on_a_crop_encoded_once_per_image(zoom):
    pred = FakePredictor()
    tr = ObjectTracker(pred, zoom=zoom)
    img = draw({1: (8, 8, 20, 16), 2: (60, 40, 20, 20)})
    emb = pred.set_image(img)
    tr.add(click(img, 2), emb, 0.0)
    crops = []
    enc = pred.encode
    pred.encode = lambda im: (crops.append(im.shape) if im.shape[:2] != (H, W) else None) or enc(im)
    t = tr.refine(1, VisualPrompt(points=[[70, 50]], labels=[1]), emb, 0.0)
    t = tr.refine(1, VisualPrompt(points=[[65, 45]], labels=[1]), emb, 0.0)     # same image, same crop
    assert iou(t.mask, ids_of(img) == 2) > 0.9
    if zoom:
        assert len(crops) == 1 and crops[0][0] < H and crops[0][1] < W
        tr.refine(1, VisualPrompt(points=[[70, 50]], labels=[1]), pred.set_image(img), 0.1)
        assert len(crops) == 2                                    # a new image: a new crop
    else:
        assert crops == []


def test_evaluation_scores_clicks_as_the_node_answers_them():
    """The model covers a second, identical-looking object too (same id colour, apart in the
    image); the node's tracker keeps only the part the user clicked, and the evaluation's
    default path must score that mask, the model-only path the model's."""
    from seem_ros.training.evaluate import click_ious, node_mask
    pred = FakePredictor()
    img = draw({1: (8, 8, 20, 16), 2: (60, 40, 20, 20)})
    img[70:90, 100:120, 0] = 10                              # a look-alike of object 1
    gt = np.zeros(img.shape[:2], bool)
    gt[8:24, 8:28] = True
    emb = pred.set_image(img)
    node, first = click_ious(pred, emb, gt, max_clicks=1)
    model, _ = click_ious(pred, emb, gt, max_clicks=1, node=False)
    assert node[0] > 0.95 and iou(first, gt) == node[0]
    assert model[0] < 0.5                                    # 320 of its 720 pixels are the object
    m = node_mask(pred, emb, ObjectPrompt("box", visual=VisualPrompt(boxes=[[8, 8, 28, 24]])))
    assert iou(m, gt) > 0.95


def test_user_prompt_wins_pixels_on_its_image():
    pred = FakePredictor(bleed=True)                             # neighbours' masks overlap
    tr = ObjectTracker(pred, components=False)
    img = draw({1: (20, 20, 24, 24), 2: (44, 20, 24, 24)})
    emb = pred.set_image(img)
    first = tr.add(click(img, 1), emb, 0.0)
    assert first.mask[20:44, 44].any()                          # spills onto object 2
    second = tr.add(click(img, 2), emb, 0.0)
    masks = {t.id: t.mask for t in tr.tracks}
    assert not (masks[1] & masks[2]).any()
    assert masks[2][ids_of(img) == 2].all()                     # the latest prompt keeps all its pixels
    assert second.mask.sum() == masks[2].sum()
    # What the user gave object 2 is not object 1's own either: its growth is measured from
    # what it kept (a box around two objects must not license a later leak onto the second).
    assert tr._get(first.id).own_area == masks[1].sum()


def test_prompted_parts_of_a_mask_are_kept():
    """The model sometimes covers a second object, or the table: only what the prompt points at
    stays (a click's part, the parts inside a box, and nothing beyond the box)."""
    from seem_ros.tracking.tracker import _keep_prompted
    m = np.zeros((H, W), bool)
    m[10:30, 10:30] = True                                       # the object
    m[10:30, 60:90] = True                                       # a look-alike beside it
    on = lambda x, y: VisualPrompt(points=[[x, y]])
    assert (_keep_prompted(m, on(20, 20), 1) == (m & (np.arange(W) < 40))).all()
    assert not _keep_prompted(m, on(45, 60), 1).any()            # the click hit neither: nothing
    box = VisualPrompt(boxes=[[8, 8, 32, 32]])
    assert (_keep_prompted(m, box, 1) == (m & (np.arange(W) < 40))).all()
    table = np.zeros((H, W), bool)
    table[5:90, 0:120] = True                                    # one part spilling far out of the box
    kept = _keep_prompted(table, box, 1)
    ys, xs = np.nonzero(kept)
    assert kept.any() and xs.max() < 36 and ys.max() < 36       # within the box plus a 10 % margin


def test_a_mask_spilling_across_a_depth_step_keeps_the_prompted_surface_only():
    """With the image's depth, the parts of a mask are cut where depth jumps: a click keeps its
    object, not the object behind it that the model's mask also covered; unknown depth links."""
    from seem_ros.tracking.tracker import _keep_prompted, _label
    m = np.zeros((H, W), bool)
    m[20:40, 20:60] = True
    z = np.full((H, W), 1.0, np.float32)
    z[:, 40:] = 1.10                                             # the right half is 10 cm farther away
    front = m & (np.arange(W) < 40)
    assert _label(m)[1] == 1 and _label(m, z, 0.02)[1] == 2
    assert _label(m, np.where(np.arange(W) == 40, np.nan, z).astype(np.float32), 0.02)[1] == 1
    assert _label(m, np.full((H, W), 1.0, np.float32) + 0.001 * np.arange(W), 0.02)[1] == 1   # a slope
    click = VisualPrompt(points=[[30, 30]])
    assert (_keep_prompted(m, click, 1) == m).all()
    assert (_keep_prompted(m, click, 1, z, 0.02) == front).all()


def test_clicks_the_model_disobeys_are_enforced_with_its_answer_to_each_click_alone():
    """The oracle model here ignores negative clicks and answers two positive clicks with one
    object: a negative click on a spill removes the thing clicked, a second positive click adds
    its object; neither happens with honour_clicks off."""
    pred = FakePredictor(bleed=True)                             # masks spill one cell over
    img = draw({1: (20, 20, 24, 24), 2: (44, 20, 24, 24), 3: (90, 60, 16, 16)})
    ids = ids_of(img)
    emb = pred.set_image(img)
    for honour in (False, True):
        tr = ObjectTracker(pred, honour_clicks=honour)
        t = tr.add(click(img, 1), emb, 0.0)
        assert t.mask[ids == 2].any() and t.mask[ids == 1].all()
        t = tr.refine(t.id, VisualPrompt(points=[[45.5, 30.5]], labels=[0]), emb, 0.0)
        assert t.mask[ids == 2].any() != honour
        assert t.mask[ids == 1].mean() > 0.8 and not (honour and t.mask[30, 45])
        t = tr.refine(t.id, VisualPrompt(points=[[98.5, 68.5]], labels=[1]), emb, 0.0)
        assert t.mask[ids == 3].all() == honour and t.mask[ids == 2].any() != honour
        assert t.mask[ids == 1].mean() > 0.8
        # A click outside the image among the round's clicks: nothing to answer, no error.
        t = tr.refine(t.id, VisualPrompt(points=[[500.0, 30.0], [-4.0, 30.0]], labels=[1, 0]), emb, 0.0)
        assert t.mask[ids == 1].mean() > 0.8


def test_depth_is_read_only_when_a_new_mask_needs_it():
    """The tracker cuts a new object's mask at depth steps; a depth given as a function is
    fetched once per image and only when a mask needs it (a propagated mask does not)."""
    pred = FakePredictor(bleed=True)                             # masks spill one cell over
    img = draw({1: (20, 20, 24, 24), 2: (44, 20, 24, 24)})
    z = np.full((H, W), 1.0, np.float32)
    z[ids_of(img) == 2] = 1.2
    calls = []

    def depth():
        calls.append(1)
        return z

    plain, cut = ObjectTracker(pred), ObjectTracker(pred)
    emb = pred.set_image(img)
    cut.set_depth(emb, depth)
    assert not calls
    a, b = plain.add(click(img, 1), emb, 0.0), cut.add(click(img, 1), emb, 0.0)
    assert a.mask[ids_of(img) == 2].any()                        # the spill, 8-connected to the object
    assert not b.mask[ids_of(img) == 2].any() and b.mask[ids_of(img) == 1].all()
    cut.add(click(img, 2), emb, 0.0)
    assert len(calls) == 1
    emb2 = pred.set_image(img.copy())
    cut.set_depth(emb2, depth)
    cut.update(emb2, 0.1)
    assert len(calls) == 1                                       # tracked objects: no depth needed
    with pytest.raises(ValueError, match="depth is"):
        cut.set_depth(emb2, z[:-1])
    cut.set_depth(emb2, lambda: z[:-1])                          # late and wrong: ignored, not fatal
    assert cut.add(click(img, 1), emb2, 0.2).mask is not None


def test_tracking_package_has_no_ros_imports():
    src = "\n".join(p.read_text() for p in (ROOT / "seem_ros" / "tracking").glob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(rclpy|sensor_msgs|std_msgs|builtin_interfaces)", src, re.M)


# ----------------------------------------------------------------------------- bundled model
@pytest.mark.skipif(not WEIGHTS.exists(), reason="bundled weights missing")
def test_bundled_model_keeps_ids_and_reacquires_exit_object():
    """A generated sequence: the camera pans until exit_object leaves the view, then back."""
    from seem_ros.model import SeemModel
    from seem_ros.sim import make_sequence
    from seem_ros.training.data import interior_point

    torch.manual_seed(0)
    pred = SeemPredictor(SeemModel.from_checkpoint(WEIGHTS))
    seq = make_sequence(0, n_frames=30, width=320, height=240)
    f0 = seq.render(0)
    ex = seq.exit_object
    other = max((o for o in f0.objects if o.id != ex), key=lambda o: o.visible_pixels).id
    emb = pred.set_image(f0.rgb)
    tr = ObjectTracker(pred)
    tid = {g: tr.add(ObjectPrompt("point", visual=VisualPrompt(points=[interior_point(f0.instance == g)])), emb, 0.0).id
           for g in (ex, other)}
    was_lost, back, other_ok = False, False, []
    for i in range(1, 30):
        f = seq.render(i)
        tracks = {t.id: t for t in tr.update(pred.set_image(f.rgb), f.stamp)}
        assert set(tracks) == set(tid.values())
        t = tracks[tid[ex]]
        gt = f.instance == ex
        if gt.sum() == 0:
            assert t.state == "lost", f"frame {i}: exit object out of view but tracked"
            was_lost = True
        elif was_lost and t.state == "tracked":
            back = back or iou(t.mask, gt) > 0.5
        o = tracks[tid[other]]
        other_ok.append(o.state == "tracked" and iou(o.mask, f.instance == other) > 0.5)
    assert was_lost and back
    assert np.mean(other_ok) >= 0.8


@pytest.mark.skipif(not WEIGHTS.exists(), reason="bundled weights missing")
def test_bundled_model_with_the_camera_pose_brings_objects_back_under_their_own_ids():
    """Held-out sequence 31, every object clicked once, scored by the evaluation's own code: on
    the image alone, objects coming back after the camera's pan are taken by look-alikes
    (7 identity switches, 2 of 4 returns right); with each frame's camera pose and the objects'
    3D positions, 3 of 4 returns go to their own tracks and 2 switches are left (at model input
    240, the size this case was found at: every return right, no switch). Depth cuts off (the
    pose alone is under test; with them, 5 switches and 2 of 4 returns on the image alone, 2 and
    2 of 4 with the pose)."""
    from seem_ros.model import SeemModel
    from seem_ros.tracking.evaluate import evaluate_sequence

    torch.manual_seed(0)
    pred = SeemPredictor(SeemModel.from_checkpoint(WEIGHTS))
    alone, posed = (evaluate_sequence(pred, 31, 40, 320, 240, kinds=("point",), camera_pose=cp,
                                      tracker_kw={"surface_jump": None})["point"]
                    for cp in (False, True))
    assert alone.switches > 0 and alone.reacq_ok < alone.reacq_events      # the case the pose is for
    assert posed.switches <= alone.switches // 2 and posed.reacq_ok > alone.reacq_ok
    assert posed.row()["J&F"] > alone.row()["J&F"] + 0.05


@pytest.mark.skipif(not WEIGHTS.exists(), reason="bundled weights missing")
def test_bundled_model_tracks_objects_marked_on_another_view():
    """The evaluation's reference kind: each object boxed on a render from a camera 15-30 degrees
    away, then tracked in the sequence's own frames."""
    from seem_ros.model import SeemModel
    from seem_ros.tracking.evaluate import evaluate_sequence

    torch.manual_seed(0)
    pred = SeemPredictor(SeemModel.from_checkpoint(WEIGHTS))
    st = evaluate_sequence(pred, 0, 12, 320, 240, kinds=("reference",))["reference"]
    assert st.objects >= 3 and st.failed_prompts <= 1
    assert np.mean(st.j) > 0.6 and st.row()["J_shown"] > 0.7


@pytest.mark.skipif(not WEIGHTS.exists(), reason="bundled weights missing")
def test_bundled_model_text_object_stays_tracked():
    """A phrase's object is found through a grounding query and then followed through spatial
    ones; comparing their class embeddings made it lost on every other frame."""
    from seem_ros.model import SeemModel
    from seem_ros.sim import make_sequence

    pred = SeemPredictor(SeemModel.from_checkpoint(WEIGHTS))
    seq = make_sequence(0, n_frames=16, width=320, height=240)
    f0 = seq.render(0)
    obj = next(o for o in f0.objects if (o.colour, o.shape_name) == ("green", "torus"))
    tr = ObjectTracker(pred)
    tid = tr.add(ObjectPrompt("text", text="green torus"), pred.set_image(f0.rgb), 0.0).id
    on = []
    for i in range(1, 16):
        f = seq.render(i)
        t = {t.id: t for t in tr.update(pred.set_image(f.rgb), f.stamp)}[tid]
        gt = f.instance == obj.id
        if gt.sum() >= 200:
            on.append(t.state == "tracked" and iou(t.mask, gt) > 0.5)
    assert len(on) >= 10 and np.mean(on) >= 0.8, on


# ----------------------------------------------------------------------------- metrics
def square(y, x, s=10, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y:y + s, x:x + s] = True
    return m


def test_region_similarity():
    assert metrics.region_similarity(square(5, 5), square(5, 10)) == pytest.approx(50 / 150)
    assert metrics.region_similarity(square(5, 5), square(5, 5)) == 1.0
    empty = np.zeros((40, 40), bool)
    assert metrics.region_similarity(empty, empty) == 1.0
    assert metrics.region_similarity(square(5, 5), empty) == 0.0


def test_boundary_f():
    a = square(10, 10, 12, (100, 100))
    assert metrics.boundary_f(a, a) == 1.0
    # Tolerance ceil(0.008 * diagonal) = 2 px at 100x100: a 1 px shift is a perfect match ...
    assert metrics.boundary_f(np.roll(a, 1, 1), a) == 1.0
    # ... a 6 px shift matches only the horizontal edges partly.
    f6 = metrics.boundary_f(np.roll(a, 6, 1), a)
    assert 0.2 < f6 < 0.8
    assert metrics.boundary_f(square(60, 60, 12, (100, 100)), a) == 0.0
    empty = np.zeros((100, 100), bool)
    assert metrics.boundary_f(empty, empty) == 1.0
    assert metrics.boundary_f(empty, a) == 0.0 and metrics.boundary_f(a, empty) == 0.0
    # In pixels (bound_th >= 1): a 3 px shift is outside a 2 px tolerance on the vertical edges.
    assert metrics.boundary_f(np.roll(a, 3, 1), a, bound_th=2) < metrics.boundary_f(np.roll(a, 3, 1), a, bound_th=3) == 1.0


def _boundary_f_whole_image(pred, gt, r):
    """DAVIS's F on the whole image, no cropping: what metrics.boundary_f must equal."""
    bp, bg = metrics.boundary_map(pred), metrics.boundary_map(gt)
    n_p, n_g = bp.sum(), bg.sum()
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    disk = x * x + y * y <= r * r
    p = (bp & ndimage.binary_dilation(bg, disk)).sum() / n_p
    rc = (bg & ndimage.binary_dilation(bp, disk)).sum() / n_g
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def test_boundary_f_on_the_masks_box_equals_the_whole_image():
    rng = np.random.default_rng(3)
    for trial in range(60):
        h, w = 60, 80
        # Blobs anywhere, touching the borders in some trials (seg2bmap treats the last row/column apart).
        masks = []
        for _ in range(2):
            m = np.zeros((h, w), bool)
            y0, x0 = rng.integers(-5, h - 3), rng.integers(-5, w - 3)
            m[max(y0, 0):y0 + rng.integers(2, 30), max(x0, 0):x0 + rng.integers(2, 30)] = True
            m ^= rng.random((h, w)) < 0.02 * (trial % 3)       # speckle in a third of them
            masks.append(m)
        for th in (0.008, 2, 5):
            r = int(th if th >= 1 else np.ceil(th * np.linalg.norm((h, w))))
            assert metrics.boundary_f(*masks, bound_th=th) == pytest.approx(_boundary_f_whole_image(*masks, r), abs=1e-12)


def test_match_and_identity_switches():
    g1, g2 = square(0, 0), square(20, 20)
    assert metrics.match({1: g1, 2: g2}, {7: g2, 8: g1}) == {1: 8, 2: 7}
    assert metrics.match({1: g1}, {7: square(0, 8)}) == {}          # IoU 0.25 < 0.5
    steady = [{1: 7, 2: 8}] * 5
    assert metrics.identity_switches(steady) == 0
    swapped = [{1: 7, 2: 8}, {1: 7, 2: 8}, {1: 8, 2: 7}, {1: 8, 2: 7}]
    assert metrics.identity_switches(swapped) == 4                  # two objects and two tracks changed
    assert metrics.identity_switches(swapped, tracks=False) == 2     # CLEAR-MOT: the two objects
    jump = [{1: 7}, {}, {2: 7}]                                       # track 7 jumped onto object 2
    assert metrics.identity_switches(jump) == 1
    assert metrics.identity_switches(jump, tracks=False) == 0        # object 2 had no track before
    gap = [{1: 7}, {}, {1: 7}]                                       # unmatched in between: no switch
    assert metrics.identity_switches(gap) == 0


def test_reacquisition():
    present = [True, True, False, False, True, True, True, False, True, True]
    correct = [True, True, False, False, False, True, True, False, False, False]
    assert metrics.reacquisition(present, correct, window=5) == (2, 1)
    assert metrics.reacquisition(present, correct, window=1) == (2, 0)
    assert metrics.reacquisition([True] * 4, [True] * 4) == (0, 0)


def test_evaluation_table_splits_misses_from_mask_quality():
    from seem_ros.tracking.evaluate import KindStats, table
    a = KindStats(objects=1, object_frames=10, j=[0.5], f=[0.6], visible_frames=8, visible_missed=2,
                  j_shown=[0.9, 0.7], switches=3, mot_switches=1)
    b = KindStats(objects=1, object_frames=10, j=[0.7], f=[0.8], visible_frames=2, visible_missed=0, j_shown=[0.2],
                  switches=1, mot_switches=1)
    assert a.row()["missed"] == pytest.approx(0.25) and a.row()["J_shown"] == pytest.approx(0.8)
    rows = {line.split("|")[1].strip(): line for line in table({"point": a, "box": b}).splitlines()[2:]}
    cells = [c.strip() for c in rows["**all**"].split("|")[1:-1]]
    assert cells[-2] == "0.200 (2/10)"                    # pooled over the kinds' frames
    assert cells[-1] == "0.600"                           # mean over all shown frames
    assert cells[3] == "0.600"                            # J: mean over objects
    assert cells[6:8] == ["200.0 (4)", "100.0 (2)"]       # both-sides switches, then CLEAR-MOT's, per 1000


@pytest.mark.parametrize("size,inp,feat", [((480, 640), (240, 320), (64, 80)), ((240, 320), (240, 320), (64, 80)),
                                           ((720, 1280), (240, 427), (64, 112)), ((480, 640), (360, 480), (96, 128)),
                                           ((720, 1280), (360, 640), (96, 160))])
def test_mask_grid_is_the_area_fraction_per_feature_cell(size, inp, feat):
    """The fraction of each feature-grid cell a mask covers, computed on the masks' boxes, whole
    cell sizes or not: the same values as area-pooling the whole image."""
    import types
    rng = np.random.default_rng(1)
    (H, W), (h4, w4) = size, feat
    gh, gw = min(h4, round(inp[0] / 4)), min(w4, round(inp[1] / 4))
    masks = np.zeros((4, H, W), bool)
    for k in range(3):
        y, x = rng.integers(0, H - 40), rng.integers(0, W - 40)
        masks[k, y:y + rng.integers(1, 40), x:x + rng.integers(1, 40)] = True
    masks[3] = rng.random((H, W)) > 0.5                  # one covering the whole image, none empty...
    masks[1] = False                                     # ...and one empty
    emb = types.SimpleNamespace(features=types.SimpleNamespace(mask_features=torch.zeros(1, 4, h4, w4)),
                                input_size=inp)
    got = ObjectTracker._grid(None, masks, emb)
    want = F.pad(F.interpolate(torch.from_numpy(masks).float()[:, None], size=(gh, gw), mode="area")[:, 0],
                 (0, w4 - gw, 0, h4 - gh))
    assert got.shape == (4, h4, w4) and torch.allclose(got, want, atol=1e-6, rtol=0)
    assert torch.equal(got == 0, want == 0)              # no cell the mask misses is touched
