"""The onnxruntime engine: the image encoder exported to ONNX gives torch's features and masks,
is exported once per input size and weights and then loaded from its cache, recovers from a
damaged cached file, and refuses what it cannot run."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from seem_ros.defaults import BUNDLED_CHECKPOINT  # noqa: E402
from seem_ros.inference import SeemPredictor, VisualPrompt  # noqa: E402
from seem_ros.inference import onnx_encoder  # noqa: E402
from seem_ros.model import SeemModel  # noqa: E402

W, H = 320, 240


def _model():
    return SeemModel.from_checkpoint(str(BUNDLED_CHECKPOINT))


@pytest.fixture(scope="module")
def frame():
    from seem_ros.sim import make_scene, render
    return render(make_scene(900003, W, H))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


def _onnx_predictor(cache_dir, notes=None):
    p = SeemPredictor(_model(), engine="onnxruntime")
    p.onnx_encoder.directory = cache_dir
    if notes is not None:
        p.onnx_encoder.notify = notes.append
    return p


def _object_click(frame):
    from seem_ros.training.data import interior_point
    o = max(frame.objects, key=lambda o: o.visible_pixels)
    x, y = interior_point(frame.instance == o.id)
    return VisualPrompt(points=[[x, y]])


def test_onnx_features_and_masks_match_torch(frame, cache):
    notes = []
    ort_pred, torch_pred = _onnx_predictor(cache, notes), SeemPredictor(_model())
    a, b = torch_pred.set_image(frame.rgb).features, ort_pred.set_image(frame.rgb).features
    assert any("exporting" in n for n in notes)
    assert list(cache.glob("*.onnx")), "the exported graph is kept"
    assert a.sizes == b.sizes
    for x, y in zip([a.mask_features, *a.src, *a.pos, *a.level_mask_features],
                    [b.mask_features, *b.src, *b.pos, *b.level_mask_features]):
        assert x.shape == y.shape and torch.allclose(x, y, atol=1e-4), float((x - y).abs().max())
    click = _object_click(frame)
    gt = frame.instance == max(frame.objects, key=lambda o: o.visible_pixels).id
    for ask in (lambda p: p.predict([click]), lambda p: p.predict_text(["red cube", "mug"])):
        ra, rb = ask(torch_pred), ask(ort_pred)
        assert ra.masks.any()
        if len(ra) == 1:             # the click: the object's own mask, so the comparison means something
            assert (ra.masks[0] & gt).sum() / (ra.masks[0] | gt).sum() > 0.7
        assert (ra.masks != rb.masks).sum() <= 0.001 * ra.masks.size
        assert np.allclose(ra.scores, rb.scores, atol=1e-3)


def test_cached_graph_is_loaded_not_exported_again(frame, cache, monkeypatch):
    """A second predictor (a restarted node) with the same weights and input size takes the
    cached graph; other weights do not get it."""
    _onnx_predictor(cache).set_image(frame.rgb)            # exported here if run alone

    def refuse(*a, **k):
        raise AssertionError("exported again")
    monkeypatch.setattr(onnx_encoder, "export_image_encoder", refuse)
    p = _onnx_predictor(cache)
    assert p.set_image(frame.rgb).features.mask_features.abs().sum() > 0
    other = _model()
    with torch.no_grad():
        other.backbone.patch_embed.proj.weight.mul_(1.01)
    q = SeemPredictor(other, engine="onnxruntime")
    q.onnx_encoder.directory = cache
    assert q.onnx_encoder.graph_path((H, W)) != p.onnx_encoder.graph_path((H, W))
    with pytest.raises(RuntimeError, match="exported again"):
        q.set_image(frame.rgb)


def test_damaged_cached_graph_is_exported_again(frame, tmp_path):
    p = _onnx_predictor(tmp_path)
    path = p.onnx_encoder.graph_path(p.input_size(H, W))
    path.write_bytes(b"not an onnx graph")
    notes = []
    p.onnx_encoder.notify = notes.append
    ref = SeemPredictor(_model()).set_image(frame.rgb).features.mask_features
    got = p.set_image(frame.rgb).features.mask_features
    assert any("unreadable" in n for n in notes) and torch.allclose(ref, got, atol=1e-4)


def test_failed_export_is_reported_once_per_size(frame, tmp_path, monkeypatch):
    calls = []

    def fail(*a, **k):
        calls.append(1)
        raise RuntimeError("exporter broke")
    monkeypatch.setattr(onnx_encoder, "export_image_encoder", fail)
    p = _onnx_predictor(tmp_path)
    for _ in range(3):               # every later frame gets the error without another export
        with pytest.raises(RuntimeError, match="exporter broke"):
            p.set_image(frame.rgb)
    assert len(calls) == 1


def test_engines_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="engine must be one of"):
        SeemPredictor(_model(), engine="tensorrt")
    with pytest.raises(ValueError, match="float32"):
        SeemPredictor(_model(), engine="onnxruntime", dtype=torch.bfloat16)
