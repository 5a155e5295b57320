"""Video object segmentation and tracking metrics (pure numpy / scipy).

- region similarity J: IoU of a predicted and a ground-truth mask (DAVIS; 1 when both are empty);
- boundary F: DAVIS boundary F-measure, boundaries matched within a tolerance of
  `bound_th` * image diagonal pixels (0.008, DAVIS's default);
- identity switches (CLEAR-MOT style, counted from both sides, see `identity_switches`);
- re-acquisition rate: of the times an object comes back into view, how often its track is
  back on it (same id) within a few frames."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J = |pred & gt| / |pred | gt|; 1 when both are empty (nothing to find, nothing found)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a mask, as DAVIS's seg2bmap at the mask's own size: pixels whose
    right, lower or lower-right neighbour differs (the last row/column compare along the border)."""
    seg = np.asarray(mask, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure. bound_th < 1: fraction of the image diagonal; >= 1: pixels."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    r = int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape)))
    # Only the masks' common box matters (the tolerance is set by the full image's diagonal
    # above): two pixels of margin keep seg2bmap's last-row/column rule where it applies at full
    # size, and every dilation source lies inside. Same value, a fraction of the work.
    both = pred | gt
    rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    if len(rows):
        y0, y1 = max(rows[0] - 2, 0), rows[-1] + 3
        x0, x1 = max(cols[0] - 2, 0), cols[-1] + 3
        pred, gt = pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]
    bp, bg = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    disk = _disk(r)
    precision = float((bp & ndimage.binary_dilation(bg, disk)).sum()) / n_p
    recall = float((bg & ndimage.binary_dilation(bp, disk)).sum()) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def match(gt: Mapping[int, np.ndarray], hyp: Mapping[int, np.ndarray], min_iou: float = 0.5) -> Dict[int, int]:
    """One-to-one matching {gt id: hyp id} of ground-truth and predicted masks of one frame,
    maximising total IoU (Hungarian), pairs below min_iou left unmatched."""
    g_ids, h_ids = list(gt), list(hyp)
    if not g_ids or not h_ids:
        return {}
    iou = np.array([[region_similarity(hyp[h], gt[g]) if np.asarray(gt[g]).any() or np.asarray(hyp[h]).any()
                     else 0.0 for h in h_ids] for g in g_ids])
    rows, cols = linear_sum_assignment(-iou)
    return {g_ids[r]: h_ids[c] for r, c in zip(rows, cols) if iou[r, c] >= min_iou}


def identity_switches(matches: Iterable[Mapping[int, int]], tracks: bool = True) -> int:
    """Identity switches over a sequence of per-frame matches {gt id: hyp id}.

    A ground-truth object matched to a different hypothesis than the last one it was matched to
    (CLEAR-MOT's IDSW, the only kind counted with tracks=False), or a hypothesis matched to a
    different object than the last one it was matched to (a track that jumped onto another
    object: what a grasp on that id would get wrong), counts one switch; a swap of two tracks
    counts per object and per track involved. Frames where either is unmatched do not reset memory."""
    last_h: Dict[int, int] = {}
    last_g: Dict[int, int] = {}
    n = 0
    for m in matches:
        for g, h in m.items():
            if g in last_h and last_h[g] != h:
                n += 1
            if tracks and h in last_g and last_g[h] != g:
                n += 1
            last_h[g], last_g[h] = h, g
    return n


def reacquisition(present: Sequence[bool], correct: Sequence[bool], window: int = 5) -> Tuple[int, int]:
    """(events, successes) for one object: an event is a frame where the object is present again
    after at least one absent frame (returning to view, or coming out of full occlusion); it is a
    success when `correct` (its own track on it) holds on some frame within `window` frames from
    the return, while it stays present."""
    events = successes = 0
    was_absent = False
    n = len(present)
    for i in range(n):
        if not present[i]:
            was_absent = True
            continue
        if was_absent:
            events += 1
            j = i
            while j < min(n, i + window) and present[j]:
                if correct[j]:
                    successes += 1
                    break
                j += 1
        was_absent = False
    return events, successes


def rate(num: float, den: float) -> Optional[float]:
    return None if den == 0 else num / den


__all__ = ["region_similarity", "boundary_f", "boundary_map", "match", "identity_switches", "reacquisition", "rate"]
