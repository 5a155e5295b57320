"""Checkpoint compatibility: strict round trips of full-size models in the official layout, variant
detection from keys and shapes, and a distinct error for each malformed file."""
import numpy as np
import pytest
import torch

from seem_ros.model import FOCAL_L, FOCAL_T, TINY, CheckpointError, SeemModel
from seem_ros.model.checkpoint import expected_shapes

# Official Focal-T checkpoints hold 729 keys: ours plus criterion.empty_weight and dilation_kernel.
FOCAL_T_KEYS = 727


def official_layout(model, path, wrap=None, prefix=""):
    """Write a state_dict as the official files are: flat, no config, training-only extras."""
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    sd[prefix + "criterion.empty_weight"] = torch.ones(134)
    sd[prefix + "dilation_kernel"] = torch.ones(1, 1, 3, 3)
    torch.save({wrap: sd} if wrap else sd, path)


def test_focalt_key_count_and_names():
    shapes = expected_shapes(FOCAL_T)
    assert len(shapes) == FOCAL_T_KEYS
    for k, s in {"sem_seg_head.predictor.class_embed": (512, 512),
                 "sem_seg_head.predictor.query_feat.weight": (101, 512),
                 "sem_seg_head.predictor.mask_sptial_embed.2": (512, 512),
                 "sem_seg_head.predictor.pn_indicator.weight": (2, 512),
                 "sem_seg_head.predictor.spatial_featured.weight": (32, 512),
                 "sem_seg_head.predictor.lang_encoder.lang_encoder.token_embedding.weight": (49408, 512),
                 "sem_seg_head.predictor.lang_encoder.lang_encoder.positional_embedding": (77, 512),
                 "sem_seg_head.predictor.transformer_self_attention_layers.8.self_attn.in_proj_weight": (1536, 512),
                 "sem_seg_head.predictor.transformer_ffn_layers.8.linear1.weight": (2048, 512),
                 "sem_seg_head.pixel_decoder.input_proj.weight": (512, 768, 1, 1),
                 "sem_seg_head.pixel_decoder.mask_features.weight": (512, 512, 3, 3),
                 "backbone.patch_embed.proj.weight": (96, 3, 7, 7)}.items():
        assert tuple(shapes[k]) == s, k
    assert "pixel_mean" not in shapes and "pixel_std" not in shapes


def test_param_counts_match_reference():
    """Reference: Focal-T 164.6 M, Focal-L 341.2 M parameters."""
    for cfg, ref in ((FOCAL_T, 164.6e6), (FOCAL_L, 341.2e6)):
        n = sum(int(np.prod(s)) for s in expected_shapes(cfg).values())
        assert abs(n - ref) / ref < 0.002, (cfg.name, n)


@pytest.mark.parametrize("cfg,wrap,prefix", [(FOCAL_T, None, ""), (FOCAL_L, "model", "module.")])
def test_full_size_round_trip_strict(tmp_path, cfg, wrap, prefix):
    torch.manual_seed(1)
    m = SeemModel(cfg)
    path = tmp_path / "ckpt.pt"
    official_layout(m, path, wrap, prefix)
    loaded = SeemModel.from_checkpoint(path)           # variant detected from keys and shapes
    assert loaded.cfg.name == cfg.name
    a, b = m.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_own_checkpoint_keeps_config(tmp_path):
    m = SeemModel(TINY)
    m.save(tmp_path / "t.pt")
    assert SeemModel.from_checkpoint(tmp_path / "t.pt").cfg == TINY


def test_config_saved_before_panoptic_threshold_reads_the_official_one(tmp_path):
    m = SeemModel(TINY)
    m.save(tmp_path / "t.pt")
    d = torch.load(tmp_path / "t.pt", weights_only=False)
    assert d["seem_ros_config"].pop("panoptic_threshold") == TINY.panoptic_threshold != 0.8
    torch.save(d, tmp_path / "old.pt")
    assert SeemModel.from_checkpoint(tmp_path / "old.pt").cfg.panoptic_threshold == 0.8


@pytest.fixture(scope="module")
def tiny_sd():
    torch.manual_seed(0)
    return SeemModel(TINY).state_dict()


def _err(tmp_path, obj=None, raw=None):
    p = tmp_path / "bad.pt"
    if raw is not None:
        p.write_bytes(raw)
    else:
        torch.save(obj, p)
    with pytest.raises(CheckpointError) as e:
        SeemModel.from_checkpoint(p, config=TINY if isinstance(obj, dict) else None)
    return str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        SeemModel.from_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, tiny_sd):
    p = tmp_path / "full.pt"
    torch.save(tiny_sd, p)
    msg = _err(tmp_path, raw=p.read_bytes()[: p.stat().st_size // 2])
    assert "not a readable PyTorch checkpoint" in msg


def test_garbage_file(tmp_path):
    assert "not a readable PyTorch checkpoint" in _err(tmp_path, raw=b"\x80\x04garbage" * 100)


def test_not_a_state_dict(tmp_path):
    assert "holds no state_dict" in _err(tmp_path, obj=[1, 2, 3])


def test_missing_unexpected_misshaped_keys_all_named(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd["sem_seg_head.predictor.pn_indicator.weight"]
    sd["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(3)
    sd["sem_seg_head.predictor.query_feat.weight"] = torch.zeros(7, 64)
    msg = _err(tmp_path, obj=sd)
    assert "1 missing keys" in msg and "pn_indicator.weight" in msg
    assert "1 unexpected keys" in msg and "extra_head.weight" in msg
    assert "1 mis-shaped keys" in msg and "query_feat.weight: file (7, 64)" in msg


def test_non_finite_weights(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd["sem_seg_head.predictor.class_embed"] = torch.full_like(sd["sem_seg_head.predictor.class_embed"], float("nan"))
    assert "non-finite" in _err(tmp_path, obj=sd)


def test_pickled_code_refused(tmp_path):
    """weights_only loading: a file that would run code on unpickling is refused, not executed."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(CheckpointError):
        SeemModel.from_checkpoint(p)
