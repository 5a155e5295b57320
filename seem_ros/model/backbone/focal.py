"""FocalNet image backbones of SEEM v1 (focal modulation, arXiv 2203.11926), inference only.

The two official variants share parameter names but differ in block wiring:
  * "focal_dw" (Focal-T checkpoints): every block adds a 3x3 depthwise-conv residual (dw1, dw2) before
    each sub-block; with post-LN, LayerNorm is applied to the residual *sum*; stem conv padding 3.
  * "focal" (Focal-L checkpoints): no depthwise convs; with post-LN, LayerNorm is applied to the branch
    output (before layer scale); stem conv padding 2.
Drop path and dropout are identity at eval and left out. Module names equal the official ones so that
official state dicts load with strict=True. Features are kept channels-last ([B, H, W, C]) inside,
because LayerNorm and the Linear layers act on the last dim; convs get a temporary NCHW view."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import BackboneConfig
from . import register_backbone

LAYERSCALE_INIT = 1e-4  # official layerscale_value; overwritten by checkpoints anyway


def _nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FocalModulation(nn.Module):
    """q * h(sum_l gate_l * ctx_l + gate_L * global ctx): contexts come from a stack of depthwise convs,
    each level convolving the previous level's output, so the receptive field grows level by level."""

    def __init__(self, dim: int, focal_level: int, focal_window: int, scaling_modulator: bool):
        super().__init__()
        self.focal_level = focal_level
        self.scaling_modulator = scaling_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)   # -> q, ctx, L+1 gates
        self.h = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        kernels = [focal_window + 2 * k for k in range(focal_level)]  # focal_factor 2
        # Sequential(conv, GELU) so that weights are named focal_layers.K.0.weight as in checkpoints.
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in kernels)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[-1]
        q, ctx, gates = _nchw(self.f(x)).split((c, c, self.focal_level + 1), 1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.scaling_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.proj(_nhwc(q * self.h(ctx_all)))


class FocalBlock(nn.Module):
    def __init__(self, dim: int, cfg: BackboneConfig, focal_level: int, focal_window: int, depthwise: bool):
        super().__init__()
        self.use_postln = cfg.use_postln
        self.depthwise = depthwise
        # Official order of attributes, so that state_dict key order matches too.
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if depthwise else None
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, focal_level, focal_window, cfg.scaling_modulator)
        self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if depthwise else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        if cfg.use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), LAYERSCALE_INIT))
            self.gamma_2 = nn.Parameter(torch.full((dim,), LAYERSCALE_INIT))
        else:
            self.gamma_1 = self.gamma_2 = 1.0

    @staticmethod
    def _dw(conv: Optional[nn.Conv2d], x: Tensor) -> Tensor:
        return x if conv is None else x + _nhwc(conv(_nchw(x)))

    def _residual(self, x: Tensor, fn: nn.Module, norm: nn.LayerNorm, gamma) -> Tensor:
        if not self.use_postln:
            return x + gamma * fn(norm(x))
        if self.depthwise:
            return norm(x + gamma * fn(x))   # focal_dw: LN of the residual sum
        return x + gamma * norm(fn(x))       # focal: LN of the branch, inside the layer scale

    def forward(self, x: Tensor) -> Tensor:
        x = self._dw(self.dw1, x)
        x = self._residual(x, self.modulation, self.norm1, self.gamma_1)
        x = self._dw(self.dw2, x)
        return self._residual(x, self.mlp, self.norm2, self.gamma_2)


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm; NCHW in, channels-last out."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:  # official pads bottom/right to a multiple of the patch size (no-op for /32 inputs)
            x = F.pad(x, (0, -w % p, 0, -h % p))
        return self.norm(_nhwc(self.proj(x)))


class FocalStage(nn.Module):
    def __init__(self, dim: int, depth: int, cfg: BackboneConfig, focal_level: int, focal_window: int,
                 depthwise: bool, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, cfg, focal_level, focal_window, depthwise)
                                    for _ in range(depth))
        # Stage i ends with the patch merging into stage i+1 (official layout: layers.i.downsample).
        if not downsample:
            self.downsample = None
        elif cfg.use_conv_embed:
            self.downsample = PatchEmbed(dim, 2 * dim, 2, kernel=3, stride=2, padding=1)
        else:
            self.downsample = PatchEmbed(dim, 2 * dim, 2, kernel=2, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class FocalNet(nn.Module):
    """[B, 3, H, W] -> {"res2".."res5"}: NCHW features with embed_dim * 2**i channels at stride 4 * 2**i."""

    def __init__(self, cfg: BackboneConfig, depthwise: bool):
        super().__init__()
        n = len(cfg.depths)
        self.out_channels = cfg.out_channels
        if cfg.use_conv_embed:
            # The Focal-L file uses padding 2 for the 7x7 stem, Focal-T padding 3; same output size for /4 inputs.
            self.patch_embed = PatchEmbed(3, cfg.embed_dim, cfg.patch_size, kernel=7, stride=4,
                                          padding=3 if depthwise else 2)
        else:
            p = cfg.patch_size
            self.patch_embed = PatchEmbed(3, cfg.embed_dim, p, kernel=p, stride=p, padding=0)
        self.layers = nn.ModuleList(
            FocalStage(cfg.embed_dim * 2 ** i, cfg.depths[i], cfg, cfg.focal_levels[i], cfg.focal_windows[i],
                       depthwise, downsample=i < n - 1)
            for i in range(n))
        for i, c in enumerate(self.out_channels):  # one output LayerNorm per level: norm0..norm3
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        x = self.patch_embed(x)
        outs = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            norm = getattr(self, f"norm{i}")
            outs[f"res{i + 2}"] = _nchw(norm(x)).contiguous()
            if layer.downsample is not None:
                x = layer.downsample(_nchw(x))  # un-normalised stage output feeds the next stage
        return outs


@register_backbone("focal_dw")
def build_focal_dw(cfg: BackboneConfig) -> FocalNet:
    return FocalNet(cfg, depthwise=True)


@register_backbone("focal")
def build_focal(cfg: BackboneConfig) -> FocalNet:
    return FocalNet(cfg, depthwise=False)


__all__ = ["FocalNet", "FocalBlock", "FocalModulation", "PatchEmbed", "build_focal_dw", "build_focal"]
