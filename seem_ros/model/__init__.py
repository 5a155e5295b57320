"""SEEM v1 in pure PyTorch (no ROS): checkpoint-compatible with the official Focal-T / Focal-L files.

    model = SeemModel.from_checkpoint("seem_focalt_v1.pt")   # or SeemModel(TINY) for a fresh one
    feats = model.encode_image(images)                       # once per image
    out = model.decode(feats, grounding=..., spatial=..., memory=...)   # per prompt batch

seem_ros.inference.SeemPredictor wraps this with resizing, prompt rasterisation and
post-processing back to the original resolution."""
from .checkpoint import CheckpointError
from .config import CONFIGS, FOCAL_L, FOCAL_T, TINY, SeemConfig
from .decoder import DecoderOutput, GroundingTokens, ImageFeatures, SpatialTokens
from .seem import SeemModel

__all__ = ["SeemModel", "SeemConfig", "CONFIGS", "FOCAL_T", "FOCAL_L", "TINY", "CheckpointError",
           "DecoderOutput", "GroundingTokens", "ImageFeatures", "SpatialTokens"]
