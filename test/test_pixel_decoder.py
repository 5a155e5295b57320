"""Pixel decoder (transformer_encoder_fpn) and sine position encoding: shapes, official names, level order,
numerics of the position encoding, determinism."""
import math

import pytest
import torch

from seem_ros.model.config import FOCAL_L, FOCAL_T, TINY
from seem_ros.model.pixel_decoder import PixelDecoder
from seem_ros.model.position_encoding import PositionEmbeddingSine

# Measured against the official TransformerEncoderPixelDecoder (transformer_encoder_fpn.py with stubbed
# detectron2, built from the SEEM v1 configs): same keys, shapes and order; outputs agreed to < 2e-5 (fp32)
# after strict-loading its weights.
FOCAL_T_KEYS, FOCAL_T_PARAMS = 97, 31_456_256
FOCAL_L_KEYS, FOCAL_L_PARAMS = 97, 32_193_536


def _features(channels, h, w, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"res{i + 2}": torch.randn(batch, c, h // (4 << i), w // (4 << i), generator=g)
            for i, c in enumerate(channels)}


@pytest.fixture(scope="module")
def focal_t():
    torch.manual_seed(0)
    return PixelDecoder(FOCAL_T.pixel_decoder, FOCAL_T.backbone.out_channels).eval()


def _check_shapes(model, cfg, h, w):
    with torch.no_grad():
        mask_features, levels = model(_features(cfg.backbone.out_channels, h, w))
    d = cfg.pixel_decoder
    assert mask_features.shape == (2, d.mask_dim, h // 4, w // 4)
    # Coarsest first: 1/32 (layer_4), 1/16 (layer_3), 1/8 (layer_2).
    assert [t.shape for t in levels] == [(2, d.conv_dim, h // s, w // s) for s in (32, 16, 8)]
    assert all(torch.isfinite(t).all() for t in [mask_features, *levels])


def test_tiny_shapes():
    torch.manual_seed(0)
    _check_shapes(PixelDecoder(TINY.pixel_decoder, TINY.backbone.out_channels).eval(), TINY, 64, 96)


def test_focal_t_shapes(focal_t):
    _check_shapes(focal_t, FOCAL_T, 64, 96)


def test_level_order(focal_t):
    """multi_scale_features are exactly the outputs of layer_4, layer_3, layer_2 in that order."""
    seen = {}
    hooks = [getattr(focal_t, f"layer_{k}").register_forward_hook(
        lambda m, i, o, k=k: seen.__setitem__(k, o)) for k in (1, 2, 3, 4)]
    try:
        with torch.no_grad():
            _, levels = focal_t(_features(FOCAL_T.backbone.out_channels, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert all(a is seen[k] for a, k in zip(levels, (4, 3, 2)))


def test_focal_t_names(focal_t):
    sd = focal_t.state_dict()
    assert len(sd) == FOCAL_T_KEYS
    assert sum(p.numel() for p in focal_t.parameters()) == FOCAL_T_PARAMS
    assert not list(focal_t.buffers())
    shapes = {
        "input_proj.weight": (512, 768, 1, 1), "input_proj.bias": (512,),
        "adapter_1.weight": (512, 96, 1, 1), "adapter_1.norm.weight": (512,), "adapter_1.norm.bias": (512,),
        "adapter_3.weight": (512, 384, 1, 1),
        "layer_1.weight": (512, 512, 3, 3), "layer_1.norm.weight": (512,), "layer_4.norm.bias": (512,),
        "mask_features.weight": (512, 512, 3, 3), "mask_features.bias": (512,),
        "transformer.encoder.layers.0.self_attn.in_proj_weight": (1536, 512),
        "transformer.encoder.layers.0.self_attn.in_proj_bias": (1536,),
        "transformer.encoder.layers.5.self_attn.out_proj.weight": (512, 512),
        "transformer.encoder.layers.5.linear1.weight": (2048, 512),
        "transformer.encoder.layers.5.linear2.bias": (512,),
        "transformer.encoder.layers.5.norm2.weight": (512,),
    }
    for k, s in shapes.items():
        assert sd[k].shape == s, k
    # Convs followed by GroupNorm have no bias; res5 has no adapter; no encoder-level norm.
    absent = ["adapter_4.weight", "adapter_1.bias", "layer_1.bias", "layer_4.bias", "transformer.encoder.norm.weight",
              "transformer.encoder.layers.6.linear1.weight"]
    assert not set(absent) & set(sd)


def test_focal_l_names():
    with torch.device("meta"):
        model = PixelDecoder(FOCAL_L.pixel_decoder, FOCAL_L.backbone.out_channels)
    sd = model.state_dict()
    assert len(sd) == FOCAL_L_KEYS and sd["input_proj.weight"].shape == (512, 1536, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == FOCAL_L_PARAMS


def test_strict_roundtrip_and_determinism(focal_t):
    torch.manual_seed(1)
    other = PixelDecoder(FOCAL_T.pixel_decoder, FOCAL_T.backbone.out_channels).eval()
    other.load_state_dict(focal_t.state_dict(), strict=True)
    feats = _features(FOCAL_T.backbone.out_channels, 64, 64)
    with torch.no_grad():
        a, la = focal_t(feats)
        b, lb = other(feats)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(la, lb))
    torch.manual_seed(0)
    sd1 = PixelDecoder(TINY.pixel_decoder, TINY.backbone.out_channels).state_dict()
    torch.manual_seed(0)
    sd2 = PixelDecoder(TINY.pixel_decoder, TINY.backbone.out_channels).state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_batch_independent():
    """No padding mask and no cross-batch mixing: each image's result is the same alone or batched."""
    torch.manual_seed(0)
    model = PixelDecoder(TINY.pixel_decoder, TINY.backbone.out_channels).eval()
    feats = _features(TINY.backbone.out_channels, 64, 96)
    with torch.no_grad():
        both, _ = model(feats)
        one, _ = model({k: v[1:] for k, v in feats.items()})
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ position encoding
def test_position_encoding_values():
    npf, h, w = 8, 5, 7
    pe = PositionEmbeddingSine(npf)(torch.zeros(2, 3, h, w))
    assert pe.shape == (2, 2 * npf, h, w) and pe.dtype == torch.float32
    assert torch.equal(pe[0], pe[1])
    eps = 1e-6
    for i, j, k in [(0, 0, 0), (2, 3, 1), (4, 6, 5), (1, 5, 7)]:
        y = (i + 1) / (h + eps) * 2 * math.pi       # 1-based cumulative position, normalised to (0, 2pi]
        x = (j + 1) / (w + eps) * 2 * math.pi
        freq = 10000 ** (2 * (k // 2) / npf)
        fn = math.sin if k % 2 == 0 else math.cos
        assert pe[0, k, i, j].item() == pytest.approx(fn(y / freq), abs=1e-5)          # y first
        assert pe[0, npf + k, i, j].item() == pytest.approx(fn(x / freq), abs=1e-5)    # then x


def test_position_encoding_mask():
    """Padded pixels do not count: the valid region gets the encoding of the unpadded map."""
    layer = PositionEmbeddingSine(16)
    x = torch.zeros(1, 1, 9, 12)
    mask = torch.zeros(1, 9, 12, dtype=torch.bool)
    mask[:, 6:] = True
    mask[:, :, 10:] = True
    torch.testing.assert_close(layer(x, mask)[..., :6, :10], layer(x[..., :6, :10]), atol=1e-6, rtol=0)
    assert layer(x.double()).dtype == torch.float64
