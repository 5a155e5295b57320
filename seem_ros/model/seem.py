"""The whole SEEM v1 model, laid out as the official checkpoints are:
`backbone.*`, `sem_seg_head.pixel_decoder.*`, `sem_seg_head.predictor.*` (text encoder inside the
predictor as `lang_encoder`)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import build_backbone
from .config import CONFIGS, SeemConfig
from .decoder import DecoderOutput, GroundingTokens, ImageFeatures, SeemDecoder, SpatialTokens
from .language import TextEncoder
from .pixel_decoder import PixelDecoder


class SemSegHead(nn.Module):
    """Container only, so parameter names match the official `sem_seg_head.*`."""

    def __init__(self, cfg: SeemConfig, in_channels: Sequence[int]):
        super().__init__()
        self.pixel_decoder = PixelDecoder(cfg.pixel_decoder, in_channels)
        self.predictor = SeemDecoder(cfg.decoder, TextEncoder(cfg.language), cfg.language.proj_dim)


class SeemModel(nn.Module):
    """SEEM v1. Encode an image once (`encode_image`), then decode any number of prompts on the
    cached features (`decode`). Inputs are float RGB in 0..255, [B, 3, H, W], any size: they are
    normalised and padded to a multiple of 32 here. Resizing to a short side is the caller's
    (see seem_ros.inference), because only the caller knows the original resolution it wants back."""

    def __init__(self, cfg: SeemConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.sem_seg_head = SemSegHead(cfg, cfg.backbone.out_channels)
        # Not stored in checkpoints (the official model registers them as non-persistent too).
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def decoder(self) -> SeemDecoder:
        return self.sem_seg_head.predictor

    @property
    def text_encoder(self) -> TextEncoder:
        return self.sem_seg_head.predictor.lang_encoder

    # ------------------------------------------------------------------ image
    def preprocess(self, images: Tensor) -> Tensor:
        """Normalise, then pad bottom/right with zeros to a multiple of size_divisibility."""
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        d = self.cfg.size_divisibility
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % d, 0, (-h) % d))

    def encode_image(self, images: Tensor) -> ImageFeatures:
        x = self.preprocess(images)
        x = x.to(next(self.parameters()).dtype)
        mask_features, multi_scale = self.sem_seg_head.pixel_decoder(self.backbone(x))
        return self.decoder.prepare_features(multi_scale, mask_features)

    # ------------------------------------------------------------------ prompts
    def grounding_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[GroundingTokens, Tensor]:
        """Text phrases [N, 77] -> grounding tokens for one image (all valid tokens of all phrases,
        concatenated, as the official grounding path feeds them) and per-phrase class embeddings."""
        token_emb, class_emb = self.text_encoder.encode_tokens(input_ids, attention_mask)
        tokens = token_emb[attention_mask.bool()][None]                     # [1, T, C]
        padding = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return GroundingTokens(tokens, padding), class_emb

    def spatial_tokens(self, feats: ImageFeatures, pos_masks: Tensor, neg_masks: Tensor) -> SpatialTokens:
        return self.decoder.spatial_tokens(feats, pos_masks, neg_masks)

    def decode(self, feats: ImageFeatures, grounding: Optional[GroundingTokens] = None,
               spatial: Optional[SpatialTokens] = None, memory: Optional[Tensor] = None) -> DecoderOutput:
        return self.decoder(feats, grounding=grounding, spatial=spatial, memory=memory)

    def similarity(self, embeds: Tensor, text_embeds: Tensor, clamp: bool = True) -> Tensor:
        """Scaled cosine similarity of query class embeddings [.., Q, C] and text embeddings [K, C].
        Grounding clamps the temperature at 100 (official vl_similarity); classification does not
        (official compute_similarity)."""
        scale = self.text_encoder.logit_scale.exp()
        if clamp:
            scale = scale.clamp(max=100)
        v = embeds / (embeds.norm(dim=-1, keepdim=True) + 1e-7)
        t = text_embeds / (text_embeds.norm(dim=-1, keepdim=True) + 1e-7)
        return scale * v @ t.transpose(-1, -2)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], config: Optional[SeemConfig] = None) -> "SeemModel":
        from .checkpoint import load_model
        return load_model(path, config)

    def save(self, path: Union[str, Path], **metadata) -> None:
        """Save as the official layout (flat state_dict under 'model') plus our config, so that our
        own small variants load without guessing."""
        torch.save({"model": self.state_dict(), "seem_ros_config": config_to_dict(self.cfg), **metadata}, path)


def config_to_dict(cfg: SeemConfig) -> dict:
    return asdict(cfg)


def config_from_dict(d: dict) -> SeemConfig:
    from .config import BackboneConfig, DecoderConfig, LanguageConfig, PixelDecoderConfig

    def tup(x):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}
    return SeemConfig(
        name=d["name"], backbone=BackboneConfig(**tup(d["backbone"])),
        pixel_decoder=PixelDecoderConfig(**d["pixel_decoder"]), language=LanguageConfig(**d["language"]),
        decoder=DecoderConfig(**d["decoder"]), pixel_mean=tuple(d["pixel_mean"]), pixel_std=tuple(d["pixel_std"]),
        size_divisibility=d["size_divisibility"], short_side=d["short_side"],
        panoptic_threshold=float(d.get("panoptic_threshold", 0.8)))


__all__ = ["SeemModel", "CONFIGS", "config_to_dict", "config_from_dict"]
