"""Mask2Former/SEEM losses: Hungarian matching of queries to targets, sigmoid BCE + dice on masks,
cross-entropy on classes (through the text embeddings, as SEEM classifies)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def pairwise_mask_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """[Q, N] BCE + dice cost of every query mask [Q, h, w] against every soft target [T, h, w]."""
    x = logits.flatten(1).float()
    t = targets.flatten(1).float()
    n = x.shape[1]
    bce = (F.softplus(-x) @ t.T + F.softplus(x) @ (1 - t).T) / n
    p = x.sigmoid()
    dice = 1 - (2 * p @ t.T + 1) / (p.sum(1)[:, None] + t.sum(1)[None] + 1)
    return bce + dice


@torch.no_grad()
def hungarian(cost: Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """(query indices, target indices) minimising the total cost [Q, T]."""
    return hungarian_all([cost])[0]


@torch.no_grad()
def hungarian_all(costs: List[Optional[Tensor]]) -> List[Optional[Tuple[np.ndarray, np.ndarray]]]:
    """`hungarian` of several cost matrices (None: no match), with one device-to-host copy for
    all of them: on a GPU each copy waits for the queue to drain."""
    real = [c for c in costs if c is not None]
    if not real:
        return [None] * len(costs)
    flat = torch.cat([c.float().flatten() for c in real]).cpu().numpy()
    out, k = [], 0
    for c in costs:
        if c is None:
            out.append(None)
            continue
        n = c.numel()
        out.append(linear_sum_assignment(flat[k:k + n].reshape(c.shape)))
        k += n
    return out


def mask_loss_items(logits: Tensor, targets: Tensor, size: Tuple[int, int], crop: Tuple[int, int]) -> Tensor:
    """[N] BCE + dice of low-res logits [N, h, w] against full-resolution bool targets [N, H, W]:
    logits are upsampled to the padded input size and cropped, as inference does."""
    if logits.shape[0] == 0:
        return logits.sum((1, 2)) * 0
    x = F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    x = x[:, :crop[0], :crop[1]].flatten(1)
    t = targets.flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1)
    p = x.sigmoid()
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice


def mask_loss(logits: Tensor, targets: Tensor, size: Tuple[int, int], crop: Tuple[int, int]) -> Tensor:
    """Mean of `mask_loss_items` (0 with a graph when there is nothing)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0
    return mask_loss_items(logits, targets, size, crop).mean()


def downsample(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bool masks [N, H, W] (already padded) -> soft masks at `size` by area averaging."""
    return F.adaptive_avg_pool2d(masks.float()[None], size)[0]
