"""Inference layer: encode an image once, answer many prompts (SAM-predictor style)."""
from .predictor import ImageEmbedding, Panoptic, SeemPredictor, Segmentation, Zoom, zoom_box
from .prompts import PromptError, VisualPrompt, rasterize

__all__ = ["SeemPredictor", "ImageEmbedding", "Segmentation", "Panoptic", "Zoom", "zoom_box", "VisualPrompt",
           "PromptError", "rasterize"]
