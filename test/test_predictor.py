"""Every prompt path of the inference layer, on the tiny config and the full Focal-T.

Weights are seeded random init: these tests check shapes, determinism and structural invariants
(caching, prompt isolation, negative clicks, memory), not segmentation quality."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from seem_ros.inference import PromptError, VisualPrompt
from model_fixtures import predictor, scene

VOCAB = ["red cube", "blue sphere", "green cylinder"]


@pytest.fixture(params=["tiny", "focalt"])
def pred(request):
    return predictor(request.param, short_side=96 if request.param == "focalt" else 128, vocabulary=VOCAB)


def test_set_image_geometry(pred):
    emb = pred.set_image(scene(120, 160))
    assert emb.orig_size == (120, 160)
    assert emb.input_size == (pred.short_side, round(160 * pred.short_side / 120))
    assert emb.padded_size[0] % 32 == 0 and emb.padded_size[1] % 32 == 0
    assert emb.padded_size[0] >= emb.input_size[0] and emb.padded_size[1] >= emb.input_size[1]


def test_extreme_aspect_is_encoded_at_a_bounded_size(pred):
    """A strip is scaled so that its long side is at most MAX_ASPECT short sides: bounded work
    (a 2x5000 image once took minutes), and clicks still map onto it."""
    from seem_ros.inference.predictor import MAX_ASPECT
    strip = np.ascontiguousarray(np.tile(scene(120, 160)[59:61], (1, 30, 1)))      # 2 x 4800
    assert pred.input_size(2, 4800) == (1, int(MAX_ASPECT * pred.short_side))
    assert pred.input_size(120, 160) == (pred.short_side, round(160 * pred.short_side / 120))
    assert pred.input_size(100, 400) == (pred.short_side, 4 * pred.short_side)      # 4:1 untouched
    emb = pred.set_image(strip)
    assert emb.orig_size == (2, 4800) and max(emb.padded_size) <= MAX_ASPECT * pred.short_side + 32
    seg = pred.predict([VisualPrompt(points=np.array([[2400.0, 1.0]]))], embedding=emb)
    assert seg.masks.shape == (1, 2, 4800)


def test_text_one_mask_per_phrase(pred):
    pred.set_image(scene())
    r = pred.predict_text(["the red mug", "blue sphere"])
    assert r.masks.shape == (2, 120, 160) and r.masks.dtype == bool
    assert r.labels == ["the red mug", "blue sphere"]
    assert np.all((r.scores >= 0) & (r.scores <= 1))
    assert r.embeddings.shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1, rtol=1e-4)
    with pytest.raises(ValueError):
        pred.predict_text([""])


def test_points_boxes_scribbles_polygons_masks(pred):
    pred.set_image(scene())
    m = np.zeros((120, 160), bool)
    m[10:30, 10:40] = True
    prompts = [
        VisualPrompt(points=[[50, 40]], labels=[1]),
        VisualPrompt(boxes=[[20, 20, 60, 70]]),
        VisualPrompt(scribbles=[np.array([[90, 60], [120, 80], [140, 70]])]),
        VisualPrompt(polygons=[np.array([[100, 10], [150, 10], [125, 50]])]),
        VisualPrompt(mask=m),
    ]
    r = pred.predict(prompts)
    assert r.masks.shape == (5, 120, 160)
    assert len(r.labels) == 5 and all(l in VOCAB + ["others"] for l in r.labels)
    assert np.all((r.label_scores >= 0) & (r.label_scores <= 1))
    assert r.logits.shape[0] == 5
    # Chosen candidate of prompt k is one of its own 3 spatial queries.
    assert all(3 * k <= q < 3 * k + 3 for k, q in enumerate(r.query_index))


def test_negative_click_changes_mask(pred):
    pred.set_image(scene())
    a = pred.predict([VisualPrompt(points=[[60, 50]])])
    b = pred.predict([VisualPrompt(points=[[60, 50], [70, 55]], labels=[1, 0])])
    assert not np.array_equal(a.logits.numpy(), b.logits.numpy())


def test_deterministic_and_cache_equals_fresh_encode(pred):
    img = scene()
    emb = pred.set_image(img)
    prompts = [VisualPrompt(points=[[30, 30], [100, 90]], labels=[1, 0]), VisualPrompt(boxes=[[80, 10, 150, 60]])]
    r1 = pred.predict(prompts)
    pred.predict_text(["something else"])           # other prompts in between use the same cache
    r2 = pred.predict(prompts, embedding=emb)
    pred.set_image(img)                              # fresh encode
    r3 = pred.predict(prompts)
    for r in (r2, r3):
        assert torch.equal(r1.logits, r.logits)
        assert np.array_equal(r1.masks, r.masks)


def test_prompt_isolation_in_a_batch(pred):
    """Spatial queries only see their own prompt's tokens, so prompt 0 alone equals prompt 0 in a batch."""
    pred.set_image(scene())
    p0 = VisualPrompt(points=[[40, 40], [45, 42]], labels=[1, 0])
    alone = pred.predict([p0])
    batch = pred.predict([p0, VisualPrompt(boxes=[[90, 20, 150, 100]]), VisualPrompt(points=[[120, 100]])])
    torch.testing.assert_close(alone.logits[0], batch.logits[0], atol=1e-4, rtol=1e-4)


def test_memory_round(pred):
    pred.set_image(scene())
    p = VisualPrompt(points=[[60, 50]])
    r1 = pred.predict([p])
    p2 = p.with_points([[64, 52]], [0])
    r2 = pred.predict([p2], memory=r1.logits)
    assert r2.masks.shape == r1.masks.shape
    assert not torch.equal(r2.logits, pred.predict([p2]).logits)      # memory takes part
    with pytest.raises(ValueError):
        pred.predict([p2, p], memory=r1.logits)                       # one memory mask per prompt


def test_referring_image(pred):
    a, b = scene(seed=1), scene(seed=2)
    emb_a = pred.set_image(a)
    prompts = [VisualPrompt(points=[[50, 50]]), VisualPrompt(boxes=[[90, 20, 150, 90]])]
    tokens = pred.reference_tokens(prompts, emb_a)
    same = pred.predict([], tokens=tokens, embedding=emb_a)
    torch.testing.assert_close(same.logits, pred.predict(prompts, embedding=emb_a).logits)
    emb_b = pred.set_image(b)
    other = pred.predict([], tokens=tokens, embedding=emb_b)
    assert other.masks.shape == (2, 120, 160)
    assert not torch.equal(other.logits, same.logits)


def test_clicks_outside_and_empty_prompts(pred):
    pred.set_image(scene())
    with pytest.raises(PromptError):
        pred.predict([VisualPrompt(points=[[500, 500]])])
    with pytest.raises(PromptError):
        pred.predict([VisualPrompt(points=[[float("nan"), 3]])])
    with pytest.raises(ValueError):
        pred.predict([])
    # Partly outside: clipped, still works.
    r = pred.predict([VisualPrompt(boxes=[[-50, -50, 30, 30]])])
    assert r.masks.shape == (1, 120, 160)


def test_generic_segmentation(pred):
    pred.set_image(scene())
    pan = pred.panoptic(score_threshold=0.0, overlap_threshold=0.0)
    assert pan.segments.shape == (120, 160)
    assert set(np.unique(pan.segments)) <= set([0] + pan.ids.tolist())
    assert all(l in VOCAB for l in pan.labels)
    sem, conf = pred.semantic()
    assert sem.shape == conf.shape == (120, 160)
    assert sem.max() < len(VOCAB) and np.all((conf >= 0) & (conf <= 1))
    # No threshold given: the checkpoint's; every segment kept at 0 is still kept at it when no
    # class score reaches it, none when it is above every score.
    scores = pred._object_queries(pred._emb(None))[0].softmax(-1).max(-1)[0]
    cfg = pred.model.cfg                                   # the model is shared between tests
    try:
        pred.model.cfg = replace(cfg, panoptic_threshold=float(scores.max()) + 1e-3)
        assert len(pred.panoptic(overlap_threshold=0.0).ids) == 0
        pred.model.cfg = replace(cfg, panoptic_threshold=0.0)
        assert pred.panoptic(overlap_threshold=0.0).ids.tolist() == pan.ids.tolist()
    finally:
        pred.model.cfg = cfg
    inst = pred.instances(topk=5)
    assert len(inst) == 5 and inst.masks.shape == (5, 120, 160)
    assert np.all(np.diff(inst.label_scores) <= 1e-6)                  # sorted by class probability


def test_vocabulary_is_cached(pred):
    pred.set_vocabulary(["a", "b"])
    cached = dict(pred._vocab_cache)
    pred.set_vocabulary(["b", "a"])
    assert pred.vocabulary == ["b", "a"]
    assert all(torch.equal(cached[k], pred._vocab_cache[k]) for k in cached)
    assert pred._vocab_emb.shape[0] == 3                               # + background


def test_wrong_image_rejected(pred):
    with pytest.raises(ValueError):
        pred.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        pred.set_image(np.zeros((10, 10, 3), np.float32))


def test_read_only_image_buffer_is_encoded_without_warnings():
    """Images from ROS messages are read-only buffers; encoding one must not print torch's
    non-writable-array warning into the node's log. In a fresh process: torch shows that
    warning once per process, so another test may already have used it up here."""
    import subprocess
    import sys
    from pathlib import Path
    code = (
        "import warnings, numpy as np\n"
        "warnings.simplefilter('error')\n"
        "from model_fixtures import predictor, scene\n"
        "p = predictor('tiny', short_side=128)\n"
        "img = np.frombuffer(scene(120, 160).tobytes(), np.uint8).reshape(120, 160, 3)\n"
        "assert not img.flags.writeable\n"
        "emb = p.set_image(img)\n"
        "print('ok', emb.orig_size)\n")
    here = Path(__file__).resolve().parent
    r = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok (120, 160)" in r.stdout, r.stderr[-2000:]


def test_zoom_box_covers_mask_and_prompt_with_the_image_aspect():
    from seem_ros.inference import zoom_box
    m = np.zeros((120, 160), bool)
    m[50:60, 70:90] = True
    p = VisualPrompt(points=[[100, 65]], labels=[0])
    x0, y0, x1, y1 = zoom_box(m, p, (120, 160))
    assert x0 <= 70 and y0 <= 50 and x1 >= 100 and y1 >= 66          # mask and click inside
    assert abs((x1 - x0) / (y1 - y0) - 160 / 120) < 0.05
    assert x1 - x0 >= 160 / 3 - 1 and 0 <= x0 and 0 <= y0 and x1 <= 160 and y1 <= 120
    big = np.ones((120, 160), bool)
    assert zoom_box(big, p, (120, 160)) == (0, 0, 160, 120)          # never past the image
    corner = np.zeros((120, 160), bool)
    corner[:5, :5] = True
    bx = zoom_box(corner, VisualPrompt(points=[[2, 2]]), (120, 160))
    assert bx[:2] == (0, 0) and bx[2] - bx[0] >= 53                  # moved inside, not shrunk
    with pytest.raises(PromptError):
        zoom_box(None, VisualPrompt(), (120, 160))


def test_zoomed_prediction_is_the_crop_prediction_pasted(pred):
    emb = pred.set_image(scene())
    m = np.zeros((120, 160), bool)
    m[40:70, 60:100] = True
    p = VisualPrompt(points=[[80, 55]], labels=[1])
    seg, z = pred.predict_zoomed(p, m, emb)
    assert pred.embedding is emb                                      # the current image is unchanged
    x0, y0, x1, y1 = z.box
    assert seg.masks.shape == (1, 120, 160)
    outside = np.ones((120, 160), bool)
    outside[y0:y1, x0:x1] = False
    assert not seg.masks[0][outside].any()
    crop = pred.encode(scene()[y0:y1, x0:x1])
    ref = pred.predict([p.cropped(z.box)], memory=pred.mask_memory(m[y0:y1, x0:x1], crop), embedding=crop)
    assert (seg.masks[0, y0:y1, x0:x1] == ref.masks[0]).all()
    assert seg.logits.shape == (1, *emb.features.mask_features.shape[-2:])   # the full image's grid
    # The next round on the same image and crop reuses the crop's encoding and its logits.
    p2 = p.with_points([[75, 50]], [0])
    orig = pred.encode
    pred.encode = lambda *a: pytest.fail("the crop was encoded again")
    try:
        seg2, z2 = pred.predict_zoomed(p2, m, emb, z)
    finally:
        pred.encode = orig
    assert z2.box == z.box and z2.embedding is z.embedding
    ref2 = pred.predict([p2.cropped(z.box)], memory=z.logits[None], embedding=z.embedding)
    assert (seg2.masks[0, y0:y1, x0:x1] == ref2.masks[0]).all()
    # a zoom made on another image is not reused
    other = pred.set_image(scene()[::-1].copy())
    _, z3 = pred.predict_zoomed(p2, m, other, z)
    assert z3.embedding is not z.embedding


@pytest.mark.parametrize("orig, inp, pad", [
    ((480, 640), (240, 320), (256, 320)),      # camera image: upscaled 2x
    ((160, 214), (240, 321), (256, 352)),      # a zoom crop: downscaled with antialias
    ((720, 1280), (240, 427), (256, 448)),
    ((96, 96), (96, 96), (96, 96)),            # no resize at all
])
def test_foreground_equals_the_full_upsampling_near_the_masks(orig, inp, pad):
    """`foreground` computes only near positive low-res logits, by separable matrices: the
    same masks and probabilities as the whole-image `upsample` (random logits, so that masks
    reach the borders too), zero far from every mask."""
    from seem_ros.inference.predictor import ImageEmbedding, SeemPredictor
    p = SeemPredictor.__new__(SeemPredictor)            # the geometry alone: no model needed
    p._axes = {}
    emb = ImageEmbedding(None, orig, inp, pad)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((3, pad[0] // 4, pad[1] // 4), generator=g) * 5
    logits[2] = -5.0
    logits[2, 10:14, 7:9] = 3.0                         # one small blob
    full = p.upsample(logits, emb)
    prob, masks, scores = p.foreground(logits, emb)
    np.testing.assert_array_equal(masks, (full > 0).numpy())
    np.testing.assert_allclose(prob[masks], full.sigmoid().numpy()[masks], atol=1e-5)
    ys, xs = np.nonzero(masks[2])
    r = int(np.ceil(4 * orig[0] / (pad[0] // 4)))          # 4 low-res cells, in output pixels
    far = np.ones(orig, bool)
    far[max(ys.min() - r, 0):ys.max() + r + 1, max(xs.min() - r, 0):xs.max() + r + 1] = False
    assert far.any() and np.all(prob[2][far] == 0)
    ref = [(full[k].sigmoid()[full[k] > 0]).mean().item() for k in range(3)]
    np.testing.assert_allclose(scores, ref, rtol=1e-5)


def test_largest_part_of_a_panoptic_segment():
    """The node's panoptic keeps a thing segment's largest connected part; other segments and
    background are untouched."""
    from seem_ros.inference.predictor import _keep_largest_part
    seg = np.zeros((40, 60), np.int32)
    seg[5:20, 5:25] = 1            # the segment's body
    seg[30:34, 40:44] = 1          # a blob elsewhere
    seg[5:20, 30:38] = 2           # another segment, in one piece
    before = seg.copy()
    _keep_largest_part(seg, 1)
    assert np.all(seg[30:34, 40:44] == 0)
    assert np.all(seg[5:20, 5:25] == 1)
    np.testing.assert_array_equal(seg == 2, before == 2)
    _keep_largest_part(seg, 3)     # no such segment: nothing happens
    assert (seg == 1).sum() == 15 * 20
