"""Image backbones, looked up by `BackboneConfig.name` (the official `MODEL.BACKBONE.NAME`).

Each factory takes a BackboneConfig and returns a module whose forward maps a normalised
[B, 3, H, W] tensor (H, W multiples of 32) to {"res2", "res3", "res4", "res5"} at strides 4..32.
SAM-ViT variants can be added later by registering another factory here."""
from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from ..config import BackboneConfig

BackboneFactory = Callable[[BackboneConfig], nn.Module]
BACKBONES: Dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def deco(fn: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        BACKBONES[name] = fn
        return fn
    return deco


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    try:
        factory = BACKBONES[cfg.name]
    except KeyError:
        raise ValueError(f"unknown backbone {cfg.name!r}; known: {sorted(BACKBONES)}") from None
    return factory(cfg)


# Imported last: these modules register themselves via register_backbone above.
from . import focal  # noqa: E402,F401

__all__ = ["BACKBONES", "register_backbone", "build_backbone"]
