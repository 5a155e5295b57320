"""Shape supervision for the backbone: objects cut out of rendered scenes, classified by shape.

The small backbone learns colour from the SEEM losses alone but barely learns shape (a linear
probe on its features tells the seven shapes apart about 40 % of the time), which is what shape
phrases ("the cone") and panoptic classes need. Classifying many object crops per step, each
pooled in its own mask at every backbone level, gives the backbone a dense shape signal cheaply:
a 96x96 crop costs an eighth of a training image. The head is training-only: not part of the
model and never exported."""
from __future__ import annotations

from multiprocessing import Pool
from typing import Iterable, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sim import SHAPES, make_scene, render
from .losses import downsample

CROP = 96                  # at the training resolution (320x240) nearly every object fits in it
MIN_AREA = 40              # pixels; smaller objects say little about their shape
# Crop seeds: apart from the SEEM training data (1_000_000 + ...) and the held-out scenes (< 1_000_000).
CROP_SEED_BASE = 3_000_000


def scene_crops(seed: int, width: int = 320, height: int = 240):
    """(rgb [S, S, 3] uint8, mask [S, S] bool, shape index) for every visible object of one scene,
    each centred on its mask's centroid (zero-padded at the image border)."""
    fr = render(make_scene(seed=seed, width=width, height=height))
    s = CROP
    img = np.pad(fr.rgb, ((s, s), (s, s), (0, 0)))
    inst = np.pad(fr.instance, s)
    out = []
    for o in fr.objects:
        m = inst == o.id
        if m.sum() < MIN_AREA:
            continue
        ys, xs = np.nonzero(m)
        y0, x0 = int(ys.mean()) - s // 2, int(xs.mean()) - s // 2
        out.append((img[y0:y0 + s, x0:x0 + s], m[y0:y0 + s, x0:x0 + s], SHAPES.index(o.shape_name)))
    return out


def crop_bank(seeds: Iterable[int], width: int = 320, height: int = 240,
              processes: int = 2) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops of many scenes: uint8 [N, 3, S, S], bool [N, S, S], int64 [N]."""
    seeds = list(seeds)
    jobs = [(s, width, height) for s in seeds]
    if processes > 1 and len(seeds) >= 64:
        with Pool(processes) as p:
            per_scene = p.starmap(scene_crops, jobs, chunksize=16)
    else:
        per_scene = [scene_crops(*j) for j in jobs]
    crops = [c for cs in per_scene for c in cs]
    rgb = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).contiguous()
    return rgb, torch.from_numpy(np.stack([c[1] for c in crops])), torch.tensor([c[2] for c in crops])


class ShapeHead(nn.Module):
    """Linear shape classifier on the backbone's levels, each mean-pooled in the object's mask and
    layer-normalised (so that no level's scale dominates)."""

    def __init__(self, channels: Tuple[int, ...], n_classes: int = len(SHAPES)):
        super().__init__()
        self.channels = tuple(channels)
        self.linear = nn.Linear(sum(self.channels), n_classes)

    def forward(self, levels: dict, masks: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, c in enumerate(self.channels):
            x = levels[f"res{i + 2}"]
            w = downsample(masks, x.shape[-2:])[:, None].to(x.dtype)
            feats.append(F.layer_norm((x * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-6), (c,)))
        return self.linear(torch.cat(feats, 1))


class ShapeCrops:
    """A bank of crops and the loss of one batch of them, with flips and shifts."""

    def __init__(self, model, seed: int, scenes: int, batch: int, device: torch.device,
                 width: int = 320, height: int = 240):
        self.model, self.batch, self.device = model, batch, device
        base = CROP_SEED_BASE + 100_000 * (seed % 10)      # ten banks; the README's runs used these
        self.rgb, self.masks, self.labels = crop_bank(range(base, base + scenes), width, height)
        self.head = ShapeHead(model.backbone.out_channels).to(device)

    def loss(self, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of one batch and its accuracy (for the log)."""
        idx = torch.from_numpy(rng.integers(0, len(self.labels), self.batch))
        x, m, y = self.rgb[idx].to(self.device), self.masks[idx].to(self.device), self.labels[idx].to(self.device)
        flip = torch.from_numpy(rng.random(self.batch) < 0.5).to(self.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        m = torch.where(flip[:, None, None], m.flip(-1), m)
        shift = tuple(int(v) for v in rng.integers(-8, 9, 2))
        x, m = x.roll(shift, (2, 3)), m.roll(shift, (1, 2))
        levels = self.model.backbone(self.model.preprocess(x))     # CROP is a multiple of 32: no padding
        logits = self.head(levels, m)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()
