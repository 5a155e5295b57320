"""SEEM's (and RITM's) click simulator for interactive evaluation and corrective training rounds:
the next click goes to the most interior pixel of the largest error region, positive when the
model missed object there, negative when it covered background."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


def border_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each mask pixel to the nearest pixel outside it, the image border counting as
    outside (SEEM's and RITM's clicks go where this is largest)."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None) -> Optional[Tuple[np.ndarray, int]]:
    """((x, y) pixel centre, label 1/0) of the next click, or None when the prediction is exact."""
    fn = gt & ~pred
    fp = pred & ~gt
    if valid is not None:
        fn, fp = fn & valid, fp & valid
    err = fn | fp
    rows, cols = np.flatnonzero(err.any(1)), np.flatnonzero(err.any(0))
    if not len(rows):
        return None
    # Distance to the region border, on the errors' bounding box padded with one empty pixel: the
    # same distances as on the whole image (the padding is the nearest empty pixel outside, and
    # makes the image border count as border too), in a fraction of the time.
    y0, x0 = rows[0], cols[0]
    box = (slice(y0, rows[-1] + 1), slice(x0, cols[-1] + 1))
    d_fn, d_fp = border_distance(fn[box]), border_distance(fp[box])
    m_fn, m_fp = d_fn.max(initial=0), d_fp.max(initial=0)
    positive = m_fn >= m_fp
    d = d_fn if positive else d_fp
    y, x = np.unravel_index(np.argmax(d), d.shape)
    return np.array([x0 + x + 0.5, y0 + y + 0.5]), int(positive)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0
