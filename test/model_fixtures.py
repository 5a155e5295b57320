"""Shared builders for model tests: seeded random-init models (test doubles for trained weights)."""
import functools

import numpy as np
import torch

from seem_ros.model import FOCAL_T, TINY, SeemModel
from seem_ros.inference import SeemPredictor


@functools.lru_cache(maxsize=None)
def model(name: str = "tiny") -> SeemModel:
    torch.manual_seed(0)
    m = SeemModel({"tiny": TINY, "focalt": FOCAL_T}[name]).eval()
    # Random init leaves logit_scale at an arbitrary value; pin it to CLIP's usual ln(100) region.
    with torch.no_grad():
        m.text_encoder.logit_scale.fill_(np.log(50.0))
    return m


_VOCAB_CACHES: dict = {}


def predictor(name: str = "tiny", short_side: int = 128, vocabulary=(), **kw) -> SeemPredictor:
    p = SeemPredictor(model(name), short_side=short_side, **kw)
    # Vocabulary embeddings (80 templates per name through the text encoder: ~45 s for Focal-T on
    # 2 cores) depend only on the model: share them between the tests' predictors.
    p._vocab_cache = _VOCAB_CACHES.setdefault(name, {})
    if vocabulary:
        p.set_vocabulary(vocabulary)
    return p


def scene(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A simple picture: coloured rectangles on a gradient, so features vary across the image."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    for _ in range(4):
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        img[y:y + 30, x:x + 30] = rng.integers(0, 256, 3)
    return img
