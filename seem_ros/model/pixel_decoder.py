"""Pixel decoder of SEEM v1 Focal-T/L (official `transformer_encoder_fpn`), inference only.

res5 -> 1x1 `input_proj` -> DETR post-norm transformer encoder (sine positions, no padding mask: the
official code passes None even for padded images) -> `layer_4` (3x3 conv + GN + ReLU). Then an FPN top-down
pass for res4, res3, res2: `adapter_k` (1x1 conv + GN, no ReLU) + nearest-upsampled coarser output ->
`layer_k` (3x3 conv + GN + ReLU). `mask_features` is a plain 3x3 conv on the finest (res2) output.

Module names and registration order equal the official ones, so the checkpoint's
`sem_seg_head.pixel_decoder.*` loads with strict=True; convs followed by a norm have no bias there."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .config import PixelDecoderConfig
from .position_encoding import PositionEmbeddingSine

NUM_FEATURE_LEVELS = 3  # levels handed to the SEEM decoder (official maskformer_num_feature_levels)


def _conv_init(conv: nn.Conv2d) -> None:
    # Official c2_xavier_fill; only matters for freshly built (non-checkpoint) models.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvNorm(nn.Conv2d):
    """Bias-free conv -> GroupNorm (-> ReLU). A Conv2d subclass with a `.norm` child, so the weights are
    named `<name>.weight` and `<name>.norm.{weight,bias}` like detectron2's Conv2d(norm=...)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, num_groups: int, relu: bool):
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(num_groups, cout)
        self.relu = relu
        _conv_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


class TransformerEncoderLayer(nn.Module):
    """Post-norm layer: positions are added to queries and keys only, not to values."""

    def __init__(self, d: int, nheads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nheads, batch_first=True)
        self.linear1 = nn.Linear(d, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        q = src + pos
        src = self.norm1(src + self.self_attn(q, q, src, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _Encoder(nn.Module):
    def __init__(self, num_layers: int, d: int, nheads: int, dim_feedforward: int):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(d, nheads, dim_feedforward)
                                    for _ in range(num_layers))


class TransformerEncoderOnly(nn.Module):
    """Holds the layers as `encoder.layers.N` (official names); runs on [B, C, H, W] maps."""

    def __init__(self, num_layers: int, d: int, nheads: int, dim_feedforward: int):
        super().__init__()
        self.encoder = _Encoder(num_layers, d, nheads, dim_feedforward)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        b, c, h, w = src.shape
        x = src.flatten(2).transpose(1, 2)        # [B, HW, C]
        pos = pos.flatten(2).transpose(1, 2)
        for layer in self.encoder.layers:
            x = layer(x, pos)
        return x.transpose(1, 2).reshape(b, c, h, w)


class PixelDecoder(nn.Module):
    def __init__(self, cfg: PixelDecoderConfig, in_channels: Sequence[int]):
        """in_channels: channels of res2..res5 (finest first)."""
        super().__init__()
        d, g, n = cfg.conv_dim, cfg.num_groups, len(in_channels)
        self.in_features = [f"res{i + 2}" for i in range(n)]
        # Registration order as in the official module (its layer_n is deleted and re-added last).
        for k, c in enumerate(in_channels[:-1], start=1):
            self.add_module(f"adapter_{k}", ConvNorm(c, d, 1, g, relu=False))
            self.add_module(f"layer_{k}", ConvNorm(d, d, 3, g, relu=True))
        self.mask_features = nn.Conv2d(d, cfg.mask_dim, 3, padding=1)
        self.input_proj = nn.Conv2d(in_channels[-1], d, 1)
        self.transformer = TransformerEncoderOnly(cfg.enc_layers, d, cfg.nheads, cfg.dim_feedforward)
        self.pe_layer = PositionEmbeddingSine(d // 2, normalize=True)
        self.add_module(f"layer_{n}", ConvNorm(d, d, 3, g, relu=True))
        _conv_init(self.mask_features)
        _conv_init(self.input_proj)

    def forward(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """features: res2..res5 -> (mask_features [B, mask_dim, H/4, W/4], multi_scale_features),
        multi_scale_features = [1/32 (layer_4), 1/16 (layer_3), 1/8 (layer_2)], coarsest first, as the
        official forward_features collects the first three outputs of its top-down loop."""
        n = len(self.in_features)
        x = features[self.in_features[-1]]
        y = self.transformer(self.input_proj(x), self.pe_layer(x))
        y = getattr(self, f"layer_{n}")(y)
        outs = [y]
        for k in range(n - 1, 0, -1):
            lateral = getattr(self, f"adapter_{k}")(features[self.in_features[k - 1]])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{k}")(y)
            outs.append(y)
        return self.mask_features(y), outs[:NUM_FEATURE_LEVELS]
