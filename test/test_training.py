"""Training data, the click simulator, the losses and the evaluation metrics (fast, CPU only)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seem_ros.inference.predictor import Panoptic
from seem_ros.inference.prompts import rasterize
from seem_ros.sim import TABLE_CLASS, make_scene, render
from seem_ros.training import evaluate as ev
from seem_ros.training.clicks import iou, next_click
from seem_ros.training.data import (PREFIXES, core_phrase, TRAIN_SEED_BASE, VOCABULARY, interior_point, make_sample,
                                    perturb_mask, random_prompt, referring_phrases)
from seem_ros.training.losses import downsample, hungarian, hungarian_all, mask_loss, pairwise_mask_cost

W, H = 160, 120
SEEDS = [TRAIN_SEED_BASE + s for s in (3, 11, 17, 29, 40)]


_strip = core_phrase


def _named(text, objs):
    """Objects a referring phrase fits: "<colour> <shape>", "<shape>" or "<colour> object"."""
    w = _strip(text).split()
    if len(w) == 2 and w[1] == "object":
        return [o for o in objs if o.colour == w[0]]
    if len(w) == 2:
        return [o for o in objs if (o.colour, o.shape_name) == (w[0], w[1])]
    assert len(w) == 1, text
    return [o for o in objs if o.shape_name == w[0]]


def _prompt_arrays(p):
    return [p.points, p.labels, p.boxes, p.mask, *p.scribbles, *p.polygons]


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------------ data
def test_make_sample_is_deterministic_and_seed_dependent():
    for seed in SEEDS[:3]:
        a, b = make_sample(seed, W, H), make_sample(seed, W, H)
        assert np.array_equal(a.rgb, b.rgb)
        assert [t.vocab_id for t in a.targets] == [t.vocab_id for t in b.targets]
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.targets, b.targets))
        assert a.phrases == b.phrases and a.prompt_targets == b.prompt_targets
        for pa, pb in zip(a.prompts + a.track_prompts, b.prompts + b.track_prompts):
            for x, y in zip(_prompt_arrays(pa), _prompt_arrays(pb)):
                assert (x is None and y is None) or np.array_equal(x, y)
    assert not np.array_equal(make_sample(SEEDS[0], W, H).rgb, make_sample(SEEDS[1], W, H).rgb)


def test_sample_targets_phrases_and_prompts_are_consistent():
    min_px = 40
    for seed in SEEDS:
        s = make_sample(seed, W, H, min_pixels=min_px)
        assert s.targets and s.targets[-1].vocab_id == TABLE_CLASS - 1       # the table comes last
        masks = np.stack([t.mask for t in s.targets])
        assert (masks.sum((1, 2)) >= min_px).all()
        assert masks.sum(0).max() == 1                                        # segments never overlap
        for text, i in s.phrases:
            assert s.targets[i].phrase == text
            shape = _strip(text).split()[-1]
            if shape != "object":                                             # the phrase names its class
                assert VOCABULARY[s.targets[i].vocab_id] == shape
        for p, i in zip(s.prompts, s.prompt_targets):
            pos, _ = rasterize([p], (H, W), (H, W), (H, W))
            assert (pos[0] & s.targets[i].mask).any()                         # every prompt touches its object
        for p, m in zip(s.track_prompts, s.track_memory):
            assert np.array_equal(p.mask, m)
        if np.random.default_rng([seed, 0x7A1]).random() >= 0.25:            # a still scene: re-render it
            f = render(make_scene(seed, W, H))
            objs = [o for o in f.objects if o.visible_pixels >= min_px]
            visible = [o for o in f.objects if o.visible_pixels > 0]
            for text, i in s.phrases:
                assert np.array_equal(s.targets[i].mask, f.instance == objs[i].id)
                assert _named(text, visible) == [objs[i]], text               # exactly one visible object fits


def test_referring_phrases_only_name_unambiguous_objects():
    o = lambda c, s: SimpleNamespace(colour=c, shape_name=s)
    objs = [o("red", "cube"), o("red", "cube"), o("blue", "cube"), o("green", "sphere")]
    expected = {2: {"blue cube", "blue object"}, 3: {"green sphere", "sphere", "green object"}}
    seen = {}
    for k in range(200):
        for text, i in referring_phrases(objs, np.random.default_rng(k)):
            seen.setdefault(i, set()).add(_strip(text))
            assert _named(text, objs) == [objs[i]]
    assert seen == expected                      # the two red cubes get no phrase at all
    assert {i: {p for _, p in ev.phrase_forms(x, objs)} for i, x in enumerate(objs) if ev.phrase_forms(x, objs)} \
        == expected                              # the evaluation uses the same forms


def test_interior_point_perturb_mask_and_random_prompt():
    m = _box(60, 80, 10, 41, 20, 51)             # 31x31 square: centre pixel (35, 25)
    rng = np.random.default_rng(0)
    assert np.allclose(interior_point(m, rng, centre=True), [35.5, 25.5])
    for _ in range(20):
        x, y = interior_point(m, rng, centre=False)
        assert m[int(y), int(x)]
        p = perturb_mask(m, rng)
        assert p.any() and iou(p, m) > 0.3
        pr = random_prompt(m, rng, ~m)
        pos, neg = rasterize([pr], m.shape, m.shape, m.shape)
        assert (pos[0] & m).any() and not (neg[0] & m).any()


# ------------------------------------------------------------------------------------ clicks
def test_next_click_positive_in_the_missed_region_centre():
    gt = _box(60, 80, 5, 25, 5, 25) | _box(60, 80, 30, 51, 40, 61)     # second square: centre (50, 40)
    pred = _box(60, 80, 5, 25, 5, 25)
    (x, y), label = next_click(pred, gt)
    assert label == 1 and (x, y) == (50.5, 40.5)


def test_next_click_negative_in_a_false_positive_region():
    gt = _box(60, 80, 5, 25, 5, 25)
    pred = gt | _box(60, 80, 30, 45, 50, 65)                           # false positive: centre (57, 37)
    (x, y), label = next_click(pred, gt)
    assert label == 0 and (x, y) == (57.5, 37.5)
    # The larger (more interior) error wins: a thin miss loses to the thick false positive.
    gt2 = gt | _box(60, 80, 5, 7, 30, 60)
    assert next_click(pred, gt2)[1] == 0


def test_next_click_none_when_perfect_and_first_click_is_most_interior():
    gt = _box(60, 80, 10, 41, 20, 51)
    assert next_click(gt.copy(), gt) is None
    (x, y), label = next_click(np.zeros_like(gt), gt)
    assert label == 1 and np.allclose([x, y], interior_point(gt, None, centre=True))


def _next_click_whole_image(pred, gt):
    """The simulator's definition, on the whole image (next_click works on the errors' box)."""
    from scipy import ndimage
    fn, fp = gt & ~pred, pred & ~gt
    d_fn = ndimage.distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1]
    d_fp = ndimage.distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1]
    if max(d_fn.max(), d_fp.max()) <= 0:
        return None
    positive = d_fn.max() >= d_fp.max()
    y, x = np.unravel_index(np.argmax(d_fn if positive else d_fp), fn.shape)
    return np.array([x + 0.5, y + 0.5]), int(positive)


def test_next_click_equals_the_whole_image_definition():
    rng = np.random.default_rng(1)
    for _ in range(60):
        gt = np.zeros((48, 64), bool)
        pred = np.zeros((48, 64), bool)
        for m in (gt, pred):
            for _ in range(rng.integers(1, 3)):
                y, x = rng.integers(0, 46), rng.integers(0, 62)
                m[y:y + rng.integers(2, 20), x:x + rng.integers(2, 20)] = True
        a, b = _next_click_whole_image(pred, gt), next_click(pred, gt)
        assert (a is None) == (b is None)
        if a is not None:
            assert np.allclose(a[0], b[0]) and a[1] == b[1]


# ------------------------------------------------------------------------------------ losses
def test_hungarian_finds_the_optimal_assignment():
    cost = torch.tensor([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]])    # optimum 1 + 2 + 2 = 5, unique
    q, t = hungarian(cost)
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0, 2: 2}
    q, t = hungarian(torch.tensor([[5.0, 5], [0, 9], [9, 9], [9, 0]]))   # more queries than targets
    assert dict(zip(q.tolist(), t.tolist())) == {1: 0, 3: 1}


def test_hungarian_all_equals_one_by_one():
    rng = np.random.default_rng(0)
    costs = [torch.from_numpy(rng.random((7, k))) for k in (3, 1, 5)]
    got = hungarian_all([costs[0], None, costs[1], costs[2]])
    assert got[1] is None
    for c, (q, t) in zip(costs, [got[0], got[2], got[3]]):
        q0, t0 = hungarian(c)
        assert q.tolist() == q0.tolist() and t.tolist() == t0.tolist()


# ------------------------------------------------------------------------------------ training
def _trainer(seed=0):
    from seem_ros.model.seem import SeemModel
    from seem_ros.training.train import Trainer, embedded_config
    torch.manual_seed(seed)
    model = SeemModel(embedded_config(W, H))
    return model, Trainer(model, torch.device("cpu"))


def test_training_step_trains_every_prompt_and_keeps_class_losses_off_the_text_encoder():
    model, tr = _trainer()
    batch = [make_sample(s, W, H) for s in SEEDS[:2]]
    losses = tr.losses(batch, np.random.default_rng(0))
    assert set(losses) == {"pan_cls", "pan_mask", "vocab_sep", "phrase_sep", "text_mask", "text_cls",
                           "click_mask", "click_cls", "refine_mask", "refine_cls", "track_mask", "track_cls"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    text = list(model.text_encoder.lang_encoder.parameters())
    # The class and grounding losses must not reach the text encoder (that collapsed the shape
    # names); the separation losses must.
    for key, reaches in (("pan_cls", False), ("click_cls", False), ("text_cls", False), ("vocab_sep", True),
                         ("phrase_sep", True)):
        model.zero_grad(set_to_none=True)
        losses[key].backward(retain_graph=True)
        got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in text)
        assert got == reaches, key
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    assert model.backbone is not None and all(
        p.grad is not None for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad)


def test_vocabulary_separation_pulls_names_apart():
    model, tr = _trainer()
    opt = torch.optim.Adam(model.text_encoder.parameters(), 3e-3)
    first = None
    for i in range(30):
        v, loss = tr.vocab_embeddings(np.random.default_rng(i))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = tr.vocab_embeddings(np.random.default_rng(99))[0].detach()
    off = (v @ v.T)[~torch.eye(len(v), dtype=bool)]
    assert loss.item() < 0.5 * first and off.max() < 0.9


def test_lr_schedule_warms_up_and_ends_at_zero():
    from seem_ros.training.train import lr_at
    assert lr_at(0, 10, 0.0, 1.0) == pytest.approx(0.1) and lr_at(9, 10, 0.0, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 10, 0.0, 1.0) == pytest.approx(1.0) and lr_at(50, 10, 0.5, 1.0) == pytest.approx(0.5)
    assert lr_at(99, 10, 1.0, 1.0) == pytest.approx(0.0, abs=1e-12) and lr_at(99, 10, 3.0, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_train_cli_resumes_and_exports_loadable_weights(tmp_path):
    from seem_ros.model.seem import SeemModel
    from seem_ros.training.train import EXPORT_SCALE, main
    args = ["--out", str(tmp_path / "run"), "--batch", "1", "--width", str(W), "--height", str(H),
            "--threads", "1", "--save-every", "1", "--warmup", "1", "--shape-crops", "2", "--shape-scenes", "2"]
    assert main(args + ["--steps", "2"]) == 0
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["step"] == 2 and set(ck["shape_head"]) == {"linear.weight", "linear.bias"}
    out = tmp_path / "w.pt"
    assert main(args + ["--steps", "3", "--export", str(out)]) == 0            # resumes at step 2
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 3
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [int(l.split(",")[0]) for l in log] == [0, 1, 2]                       # step 2 once: resumed
    model = SeemModel.from_checkpoint(out)
    # Written to be run larger than trained (the node and the evaluations read it from the file).
    assert model.cfg.short_side == round(EXPORT_SCALE * min(W, H)) > min(W, H)
    meta = torch.load(out, weights_only=False)["training"]
    assert meta["steps"] == 3 and meta["batch"] == 1
    assert "shape=" in log[0]                                                     # the crops' loss ran
    assert not any("shape" in k or k.startswith("linear") for k in torch.load(out, weights_only=False)["model"])


def test_mask_cost_matches_queries_to_their_masks_and_mask_loss_prefers_the_right_mask():
    a, b = _box(32, 32, 0, 16, 0, 32), _box(32, 32, 16, 32, 0, 16)
    targets = torch.from_numpy(np.stack([a, b]))
    logit = lambda m: torch.from_numpy(np.where(m, 6.0, -6.0)).float()
    queries = torch.stack([logit(~(a | b)), logit(b), logit(a)])              # query 1 is b, query 2 is a
    q, t = hungarian(pairwise_mask_cost(queries, targets))
    assert dict(zip(q.tolist(), t.tolist())) == {2: 0, 1: 1}
    low = lambda m: downsample(torch.from_numpy(m)[None], (8, 8))[0] * 12 - 6  # logits at 1/4 size
    right = mask_loss(low(a)[None], targets[:1], (32, 32), (32, 32))
    wrong = mask_loss(low(b)[None], targets[:1], (32, 32), (32, 32))
    assert right < 0.5 * wrong
    assert mask_loss(torch.zeros(0, 8, 8), torch.zeros(0, 32, 32, dtype=torch.bool), (32, 32), (32, 32)) == 0
    # Zero logits (p = 0.5 everywhere): BCE log 2, dice 1 - (2 * 0.5 * |t| + 1) / (0.5 * N + |t| + 1).
    n, k = 32 * 32, int(b.sum())
    expected = np.log(2) + 1 - (k + 1) / (0.5 * n + k + 1)
    assert float(mask_loss(torch.zeros(1, 8, 8), targets[1:], (32, 32), (32, 32))) == pytest.approx(expected, rel=1e-5)
    d = downsample(torch.from_numpy(_box(4, 4, 0, 2, 0, 1))[None], (2, 2))[0]
    assert torch.allclose(d, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


# ------------------------------------------------------------------------------------ metrics
def test_noc_counts_clicks_to_threshold():
    ious = [0.5, 0.86, 0.91]
    assert ev.noc(ious, 0.85) == 2 and ev.noc(ious, 0.9) == 3 and ev.noc(ious, 0.5) == 1
    assert ev.noc([0.2] * 20, 0.85) == 20 and ev.noc([0.2, 0.4], 0.85) == 20     # never reached
    assert ev.noc([0.2, 0.95], 0.9, max_clicks=1) == 1


def test_panoptic_quality_on_hand_made_maps():
    A, B = 0, 1
    gt = np.zeros((10, 10), int)
    gt[:, :5] = 1                    # A, 50 px
    gt[:5, 5:] = 2                   # B, 25 px; the rest is no-object
    pred = np.zeros((10, 10), int)
    pred[:, :4] = 1                  # A: IoU 40/50 = 0.8 -> TP
    pred[:5, 5:] = 2                 # right place, wrong class (A): FP for A, and B's object is an FN
    pred[5:, 5:] = 3                 # B on no-object: FP
    st = ev.pq_stats(gt, {1: A, 2: B}, pred, {1: A, 2: A, 3: B})
    assert np.allclose(st[A], [1, 1, 0, 0.8]) and np.allclose(st[B], [0, 1, 1, 0])
    r = ev.pq_summary(st, ["a", "b"])
    assert r["classes"]["a"]["pq"] == pytest.approx(0.8 * 2 / 3)
    assert r["classes"]["b"]["pq"] == 0
    assert r["pq"] == pytest.approx(0.8 / 3)
    # Same class but IoU 0.4 (not > 0.5): no match, one FP and one FN.
    half = np.zeros((10, 10), int)
    half[:4, :5] = 1
    assert np.allclose(ev.pq_stats(gt, {1: A, 2: B}, half, {1: A})[A], [0, 1, 1, 0])
    perfect = ev.pq_summary(ev.pq_stats(gt, {1: A, 2: B}, gt, {1: A, 2: B}), ["a", "b"])
    assert perfect["pq"] == 1 and perfect["sq"] == 1 and perfect["rq"] == 1


def test_panoptic_quality_ignores_void():
    gt = np.zeros((10, 10), int)
    gt[:4, :5] = 1                   # 20 px
    void = np.zeros((10, 10), bool)
    void[4:6, :5] = True             # e.g. a too-small object below it
    void[8:, 8:] = True
    pred = np.zeros((10, 10), int)
    pred[:6, :5] = 1                 # 30 px, 10 of them void: IoU 20 / 20 = 1 (not 0.67)
    pred[8:, 8:] = 2                 # entirely on void: not a false positive
    st = ev.pq_stats(gt, {1: 0}, pred, {1: 0, 2: 0}, void)
    assert np.allclose(st[0], [1, 0, 0, 1.0])
    st = ev.pq_stats(gt, {1: 0}, pred, {1: 0, 2: 0})            # without void both mistakes count
    assert np.allclose(st[0], [1, 1, 0, 20 / 30])


def test_semantic_miou_over_classes_in_the_ground_truth():
    se = ev.SemanticEval()
    se.conf[0, 0], se.conf[0, 1], se.conf[2, 2] = 10, 5, 4     # rows: truth, columns: prediction
    r = se.result()
    # class 0: 10 / (10 + 5); class 2: 1; class 1 was only predicted, not present: left out.
    assert r["miou"] == pytest.approx((10 / 15 + 1) / 2) and set(r["classes"]) == {VOCABULARY[0], VOCABULARY[2]}


def test_prompt_geometry_helpers():
    m = _box(60, 80, 10, 30, 10, 70)                      # wide: the stroke runs along x
    s = ev.stroke(m)
    assert np.ptp(s[:, 0]) > 20 and np.ptp(s[:, 1]) < 1
    assert all(m[int(y), int(x)] for x, y in s)
    poly = ev.outline(m)
    filled, _ = rasterize([ev.VisualPrompt(polygons=[poly])], m.shape, m.shape, m.shape)
    assert np.array_equal(filled[0], m)                   # a convex mask is its own hull
    assert np.array_equal(ev.tight_box(m), [10, 10, 70, 30])


def test_other_view_moves_the_camera_but_keeps_the_scene():
    scene = make_scene(123, W, H)
    moved = ev.other_view(scene, np.random.default_rng(0))
    yaw = lambda c: np.degrees(np.arctan2(c.T_world_cam[1, 2], c.T_world_cam[0, 2]))   # optical axis
    turn = abs((yaw(moved.camera) - yaw(scene.camera) + 180) % 360 - 180)
    assert 14 < turn < 31 and abs(moved.camera.position[2] - scene.camera.position[2]) < 1e-9
    assert [o.id for o in moved.objects] == [o.id for o in scene.objects]
    a, b = render(scene), render(moved)
    assert {o.id for o in a.objects if o.visible} & {o.id for o in b.objects if o.visible}


# ------------------------------------------------------------------------------------ evaluation
class Oracle:
    """A predictor answering every prompt with the true mask of the object the prompt names;
    the evaluation must then report perfect scores."""

    def __init__(self, frames, wrong=False):
        self.frames = {f.rgb.tobytes(): f for f in frames}
        self.wrong = wrong               # answer with an empty mask instead

    def set_image(self, rgb):
        f = self.frames[rgb.tobytes()]
        feats = SimpleNamespace(mask_features=torch.zeros(1, 4, H // 4, W // 4))
        return SimpleNamespace(frame=f, orig_size=(H, W), input_size=(H, W), padded_size=(H, W), features=feats)

    def _seg(self, f, oid):
        m = (f.instance == oid) & (not self.wrong)
        return SimpleNamespace(masks=m[None], logits=torch.zeros(1, H // 4, W // 4))

    def predict_text(self, phrases, embedding):
        f = embedding.frame
        (o,) = _named(phrases[0], [o for o in f.objects if o.visible])
        return self._seg(f, o.id)

    def predict(self, prompts, memory=None, embedding=None, tokens=None):
        f = embedding.frame
        pos, _ = rasterize(prompts, (H, W), (H, W), (H, W))
        ids = f.instance[pos[0] & (f.instance > 0)]
        return self._seg(f, np.bincount(ids).argmax())   # the object under most of the prompt

    def mask_memory(self, masks, embedding):
        return torch.zeros(1, H // 4, W // 4)

    def panoptic(self, embedding, score_threshold=0.8, stuff=(), largest_part=False):
        f = embedding.frame
        seg, classes, _ = ev.panoptic_gt(f)
        ids = sorted(classes)
        return Panoptic(seg, np.array(ids), np.array([classes[i] for i in ids]), [], np.ones(len(ids)))

    def semantic(self, embedding):
        s = embedding.frame.semantic.astype(np.int32) - 1
        return np.maximum(s, 0), np.ones(s.shape, np.float32)


def test_evaluation_of_a_perfect_and_an_empty_predictor():
    items = list(ev.make_items(range(7, 10), W, H))
    frames = [i.frame for i in items]
    # The oracle answers the model's calls; the node's path (the tracker) is tested in test_tracking.
    evs = [ev.TextEval(node=False), ev.ClickEval(node=False, zoom=False),
           *[ev.PromptEval(k, node=False) for k in ev.PromptEval.KINDS],
           ev.PanopticEval(), ev.SemanticEval(), ev.PoseEval(node=False)]
    r = ev.run(Oracle(frames), items, evs)
    assert r["text"]["n"] > 0 and r["text"]["miou"] == 1 and r["text"]["acc50"] == 1
    assert r["clicks"]["noc85"] == 1 and r["clicks"]["noc90"] == 1 and r["clicks"]["miou1"] == 1
    assert all(r[k]["miou"] == 1 for k in ev.PromptEval.KINDS)
    assert r["mask"]["input_miou"] < 1                       # the prompt itself was perturbed
    assert r["panoptic"]["pq"] == 1 and r["semantic"]["miou"] == 1
    p = r["pose"]
    assert p["click"]["median_cm"] == p["true mask"]["median_cm"] and 0 < p["text"]["n"] <= p["true mask"]["n"]
    table = ev.format_table(r, markdown=True)
    assert "| text | mIoU | 1.00 | >= 0.85 | pass |" in table and "| clicks | NoC@90 | 1.00 | <= 3 | pass |" in table

    items = list(ev.make_items(range(7, 10), W, H))
    r = ev.run(Oracle(frames, wrong=True), items, [ev.TextEval(node=False), ev.ClickEval(max_clicks=5, node=False, zoom=False),
                                                   ev.PoseEval(node=False)])
    assert r["text"]["miou"] == 0 and r["text"]["acc50"] == 0
    assert r["clicks"]["noc85"] == 5 and r["clicks"]["fail90"] == 1
    assert r["pose"]["text"]["failures"] == r["pose"]["text"]["n"] > 0      # no mask, no pose
    assert "FAIL" in ev.format_table(r)


def test_pose_row_alone_on_bare_frames():
    frames = [i.frame for i in ev.make_items(range(7, 9), W, H)]
    r = ev.evaluate_pose(Oracle(frames), frames, node=False)   # predicts its own text and click masks
    assert r["click"]["n"] == r["true mask"]["n"] > 0 and r["click"]["median_cm"] == r["true mask"]["median_cm"]
    assert 0 < r["text"]["n"] <= r["true mask"]["n"] and r["text"]["failures"] == 0
    assert ev.evaluate_reference(Oracle(frames), frames)["n"] == 0     # needs the scene: skipped


def test_held_out_seeds_only():
    with pytest.raises(ValueError):
        next(ev.make_items([TRAIN_SEED_BASE]))
    with pytest.raises(SystemExit):
        ev.main(["--seed-start", str(TRAIN_SEED_BASE - 5), "--scenes", "10"])


@pytest.mark.skipif(not ev.DEFAULT_CHECKPOINT.exists(), reason="bundled weights not present")
def test_cli_runs_on_the_bundled_checkpoint(capsys):
    assert ev.main(["--scenes", "1", "--width", str(W), "--height", str(H), "--seed-start", "5"]) == 0
    out = capsys.readouterr().out
    for row in ("text", "clicks", "box", "scribble", "polygon", "mask+memory", "reference image", "panoptic",
                "semantic", "pose (text mask)"):
        assert f"\n{row} " in out, row
    assert "min on cpu" in out


# ------------------------------------------------------------------------------ shape crops
def test_scene_crops_centre_each_visible_object_with_its_shape():
    from seem_ros.sim import SHAPES
    from seem_ros.training.shape_crops import CROP, MIN_AREA, scene_crops
    seed = SEEDS[0]
    crops = scene_crops(seed, W, H)
    fr = render(make_scene(seed=seed, width=W, height=H))
    visible = [o for o in fr.objects if (fr.instance == o.id).sum() >= MIN_AREA]
    assert len(crops) == len(visible) > 0
    for (rgb, mask, label), o in zip(crops, visible):
        assert rgb.shape == (CROP, CROP, 3) and mask.shape == (CROP, CROP)
        assert SHAPES[label] == o.shape_name
        # Whole object in the crop (it fits at this size), its centroid at the centre.
        assert mask.sum() == (fr.instance == o.id).sum()
        ys, xs = np.nonzero(mask)
        assert abs(ys.mean() - CROP / 2) <= 1 and abs(xs.mean() - CROP / 2) <= 1
        assert (rgb[mask] == fr.rgb[fr.instance == o.id]).all()
    again = scene_crops(seed, W, H)
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(crops, again))


def test_shape_head_pools_only_inside_the_mask():
    from seem_ros.training.shape_crops import ShapeHead
    head = ShapeHead((4, 8))
    levels = {"res2": torch.randn(2, 4, 8, 8), "res3": torch.randn(2, 8, 4, 4)}
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, :16, :16] = True                       # the top-left quarter at every level
    other = {k: v.clone() for k, v in levels.items()}
    other["res2"][:, :, 4:, :] = 99.0
    other["res3"][:, :, :, 2:] = -99.0
    assert torch.allclose(head(levels, masks), head(other, masks))
    other["res2"][:, :, 0, 0] += torch.arange(4.0)  # inside the mask: the output moves
    assert not torch.allclose(head(levels, masks), head(other, masks))


def test_shape_crops_loss_trains_the_backbone():
    from seem_ros.training.shape_crops import ShapeCrops
    model, _ = _trainer()
    shape = ShapeCrops(model, seed=0, scenes=6, batch=8, device=torch.device("cpu"), width=W, height=H)
    assert len(shape.labels) >= 8
    params = list(model.backbone.parameters()) + list(shape.head.parameters())
    before = [p.detach().clone() for p in model.backbone.parameters()]
    opt = torch.optim.Adam(params, 3e-3)
    losses = []
    for _ in range(25):                             # one fixed batch: the loss must fall
        loss, acc = shape.loss(np.random.default_rng(0))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.3 * losses[0] and acc.item() >= 0.75
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
