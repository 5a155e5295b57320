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
    p.set_image(frame.rgb)
    assert p.onnx_encoder.status() == "onnxruntime"
    other = _model()
    with torch.no_grad():
        other.backbone.patch_embed.proj.weight.mul_(1.01)
    q = SeemPredictor(other, engine="onnxruntime")
    q.onnx_encoder.directory = cache
    size = p.input_size(H, W)
    assert q.onnx_encoder.graph_path(size) != p.onnx_encoder.graph_path(size)
    q.set_image(frame.rgb)
    assert "exported again" in q.onnx_encoder.failed(size)


def test_damaged_cached_graph_is_exported_again(frame, tmp_path):
    p = _onnx_predictor(tmp_path)
    path = p.onnx_encoder.graph_path(p.input_size(H, W))
    path.write_bytes(b"not an onnx graph")
    notes = []
    p.onnx_encoder.warn = notes.append
    ref = SeemPredictor(_model()).set_image(frame.rgb).features.mask_features
    got = p.set_image(frame.rgb).features.mask_features
    assert any("unreadable" in n for n in notes) and torch.allclose(ref, got, atol=1e-4)
    assert p.onnx_encoder.status() == "onnxruntime"


def test_failed_export_leaves_the_size_to_torch_and_is_reported_once(frame, tmp_path, monkeypatch):
    calls, warnings = [], []

    def fail(*a, **k):
        calls.append(1)
        raise RuntimeError("exporter broke")
    monkeypatch.setattr(onnx_encoder, "export_image_encoder", fail)
    p = _onnx_predictor(tmp_path)
    p.onnx_encoder.warn = warnings.append
    ref = SeemPredictor(_model()).set_image(frame.rgb).features.mask_features
    for _ in range(3):               # every frame still answered, by torch, without another export
        assert torch.equal(p.set_image(frame.rgb).features.mask_features, ref)
    assert len(calls) == 1 and len(warnings) == 1 and "exporter broke" in warnings[0]
    assert p.onnx_encoder.status().startswith("torch")


def test_background_export_keeps_frames_flowing(frame, tmp_path):
    """The node's way: the first frames of a new size are encoded by torch while a child process
    exports the graph; then onnxruntime takes over, and the child's files are gone."""
    p = SeemPredictor(_model(), engine="onnxruntime", background_export=True)
    p.onnx_encoder.directory = tmp_path
    ref = SeemPredictor(_model()).set_image(frame.rgb).features.mask_features
    assert torch.equal(p.set_image(frame.rgb).features.mask_features, ref)     # torch's, at once
    assert not p.onnx_encoder._exports, "a size seen once (a reference image) is not exported"
    assert torch.equal(p.set_image(frame.rgb).features.mask_features, ref)     # the second: export starts
    assert p.onnx_encoder.status().startswith("torch while")
    p.onnx_encoder.wait(timeout=300)
    got = p.set_image(frame.rgb).features.mask_features
    assert p.onnx_encoder.status() == "onnxruntime" and torch.allclose(got, ref, atol=1e-4)
    assert [f.suffix for f in tmp_path.iterdir()] == [".onnx"]


def test_background_export_failure_and_close(frame, tmp_path, monkeypatch):
    p = SeemPredictor(_model(), engine="onnxruntime", background_export=True)
    enc = p.onnx_encoder
    enc.directory, warnings = tmp_path, []
    enc.warn = warnings.append
    monkeypatch.setattr(onnx_encoder.sys, "executable", "/bin/false")    # the child exits 1 at once
    p.set_image(frame.rgb)
    p.set_image(frame.rgb)
    enc.wait(timeout=60)
    assert len(warnings) == 1 and "export failed" in warnings[0] and enc.failed(p.input_size(H, W))
    monkeypatch.undo()
    q = SeemPredictor(_model(), engine="onnxruntime", background_export=True)
    q.onnx_encoder.directory = tmp_path / "q"
    q.set_image(frame.rgb)
    q.set_image(frame.rgb)
    (proc, *_), = q.onnx_encoder._exports.values()
    q.onnx_encoder.close()                                                 # the node's cleanup
    assert proc.poll() is not None and not list((tmp_path / "q").iterdir())


def test_engines_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="engine must be one of"):
        SeemPredictor(_model(), engine="tensorrt")
    with pytest.raises(ValueError, match="float32"):
        SeemPredictor(_model(), engine="onnxruntime", dtype=torch.bfloat16)
