"""FocalNet backbones: shapes, official parameter names, determinism."""
import pytest
import torch

from seem_ros.model.backbone import BACKBONES, build_backbone
from seem_ros.model.config import FOCAL_L, FOCAL_T, TINY, replace

# Measured against the official modules (focal_dw.py / focal.py built from the SEEM v1 configs through
# get_focal_backbone); state dicts matched key for key, shape for shape, in the same order.
FOCAL_T_KEYS, FOCAL_T_PARAMS = 300, 29_922_288
FOCAL_L_KEYS, FOCAL_L_PARAMS = 504, 205_746_936


@pytest.fixture(scope="module")
def focal_t():
    torch.manual_seed(0)
    return build_backbone(FOCAL_T.backbone).eval()


@pytest.fixture(scope="module")
def focal_l():
    with torch.device("meta"):  # 206 M parameters: names and shapes only, no memory
        return build_backbone(FOCAL_L.backbone)


def _check_outputs(model, cfg, h=64, w=96):
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for i, (key, c) in enumerate(zip(out, cfg.out_channels)):
        s = 4 * 2 ** i
        assert out[key].shape == (2, c, h // s, w // s)
        assert torch.isfinite(out[key]).all()


def test_registry():
    assert {"focal", "focal_dw"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="focal_dw"):
        build_backbone(replace(TINY.backbone, name="nope"))


def test_tiny_shapes():
    torch.manual_seed(0)
    _check_outputs(build_backbone(TINY.backbone).eval(), TINY.backbone)


def test_focal_t_shapes(focal_t):
    assert FOCAL_T.backbone.out_channels == (96, 192, 384, 768)
    _check_outputs(focal_t, FOCAL_T.backbone)


def test_focal_t_names(focal_t):
    sd = focal_t.state_dict()
    assert len(sd) == FOCAL_T_KEYS
    assert sum(p.numel() for p in focal_t.parameters()) == FOCAL_T_PARAMS
    assert not list(focal_t.buffers())
    shapes = {
        "patch_embed.proj.weight": (96, 3, 7, 7),
        "patch_embed.norm.weight": (96,),
        "layers.0.blocks.0.dw1.weight": (96, 1, 3, 3),
        "layers.0.blocks.0.dw2.bias": (96,),
        "layers.0.blocks.0.modulation.f.weight": (2 * 96 + 4, 96),
        "layers.0.blocks.0.modulation.h.weight": (96, 96, 1, 1),
        "layers.0.blocks.0.modulation.focal_layers.2.0.weight": (96, 1, 7, 7),
        "layers.0.blocks.0.mlp.fc1.weight": (384, 96),
        "layers.0.downsample.proj.weight": (192, 96, 3, 3),
        "layers.2.blocks.5.gamma_1": (384,),
        "layers.3.blocks.1.gamma_2": (768,),
        "norm3.weight": (768,),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert "layers.0.blocks.0.modulation.focal_layers.0.0.bias" not in sd
    assert not any(k.startswith("layers.3.downsample") for k in sd)
    assert focal_t.patch_embed.proj.padding == (3, 3)


def test_focal_l_names(focal_l):
    sd = focal_l.state_dict()
    assert len(sd) == FOCAL_L_KEYS
    assert sum(p.numel() for p in focal_l.parameters()) == FOCAL_L_PARAMS
    assert len(focal_l.layers[2].blocks) == 18
    assert not any(".dw1." in k or ".dw2." in k for k in sd)
    assert tuple(sd["layers.0.blocks.0.modulation.focal_layers.3.0.weight"].shape) == (192, 1, 9, 9)
    assert tuple(sd["norm3.weight"].shape) == (1536,)
    assert focal_l.patch_embed.proj.padding == (2, 2)


def test_deterministic(focal_t):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = focal_t(x), focal_t(x.clone())
    assert all(torch.equal(a[k], b[k]) for k in a)
