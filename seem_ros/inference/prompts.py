"""Visual prompts and their rasterisation into SEEM's positive / negative prompt masks.

Every visual prompt becomes a binary mask at the model's padded input size, one positive and one
negative mask per object, as SEEM takes them. Coordinates are pixels of the original image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..geometry.pose import mask_box


@dataclass
class VisualPrompt:
    """One object's prompt. Any combination of the fields may be given; all are positive evidence
    except points labelled 0 and `negative_mask`."""
    points: Optional[np.ndarray] = None        # [K, 2] (x, y) pixels
    labels: Optional[np.ndarray] = None        # [K] 1 = positive, 0 = negative (default all positive)
    boxes: Optional[np.ndarray] = None         # [M, 4] x0, y0, x1, y1 pixels; filled
    scribbles: List[np.ndarray] = field(default_factory=list)   # polylines [K, 2] (x, y)
    polygons: List[np.ndarray] = field(default_factory=list)    # closed, filled [K, 2] (x, y)
    mask: Optional[np.ndarray] = None          # [H, W] bool, original image size
    negative_mask: Optional[np.ndarray] = None  # [H, W] bool
    negative_scribbles: List[np.ndarray] = field(default_factory=list)

    def is_empty(self) -> bool:
        return (not _n(self.points) and not _n(self.boxes) and not self.scribbles and not self.polygons
                and self.mask is None and self.negative_mask is None and not self.negative_scribbles)

    def with_points(self, points, labels) -> "VisualPrompt":
        """A copy with more clicks added (corrective rounds accumulate clicks)."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        lab = np.asarray(labels, np.int64).reshape(-1)
        old_p = np.zeros((0, 2)) if self.points is None else np.asarray(self.points, np.float64).reshape(-1, 2)
        old_l = np.ones(len(old_p), np.int64) if self.labels is None else np.asarray(self.labels).reshape(-1)
        return VisualPrompt(np.concatenate([old_p, pts]), np.concatenate([old_l, lab]), self.boxes,
                            list(self.scribbles), list(self.polygons), self.mask, self.negative_mask,
                            list(self.negative_scribbles))

    def cropped(self, box: Tuple[int, int, int, int]) -> "VisualPrompt":
        """The same prompt in the pixels of the crop box = (x0, y0, x1, y1) of its image."""
        x0, y0, x1, y1 = box
        xy = lambda a: None if a is None else np.asarray(a, np.float64).reshape(-1, 2) - (x0, y0)
        crop = lambda m: None if m is None else np.asarray(m)[y0:y1, x0:x1]
        return VisualPrompt(xy(self.points), self.labels,
                            None if self.boxes is None else np.asarray(self.boxes, np.float64).reshape(-1, 4) - (x0, y0, x0, y0),
                            [xy(s) for s in self.scribbles], [xy(p) for p in self.polygons],
                            crop(self.mask), crop(self.negative_mask), [xy(s) for s in self.negative_scribbles])

    def extent(self) -> Optional[np.ndarray]:
        """[K, 2] (x, y) corners of everything the prompt marks (points of either label, boxes,
        lines, the masks' bounding boxes); None when it marks nothing."""
        parts = [np.asarray(a, np.float64).reshape(-1, 2) for a in (self.points, self.boxes) if _n(a)]
        parts += [np.asarray(s, np.float64).reshape(-1, 2)
                  for s in (*self.scribbles, *self.polygons, *self.negative_scribbles)]
        for m in (self.mask, self.negative_mask):
            b = None if m is None else mask_box(np.asarray(m))
            if b is not None:
                parts.append(np.array(b, np.float64).reshape(2, 2))
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else None


def _n(a) -> int:
    return 0 if a is None else int(np.asarray(a).size)


class PromptError(ValueError):
    """A prompt that cannot be used (e.g. every point outside the image)."""


def rasterize(prompts: Sequence[VisualPrompt], orig_size: Tuple[int, int], input_size: Tuple[int, int],
              padded_size: Tuple[int, int], point_radius: int = 1, line_width: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """Prompts -> (positive, negative) bool masks [ns, Hp, Wp] at padded input size.

    A click is a (2r+1)^2 square (SEEM's 3x3 dilation of a click for r=1), a scribble a polyline of
    `line_width`, a box and a polygon are filled. Parts outside the image are clipped; a prompt that
    leaves no positive pixel raises PromptError."""
    oh, ow = orig_size
    ih, iw = input_size
    sx, sy = iw / ow, ih / oh
    ns = len(prompts)
    pos = np.zeros((ns, *padded_size), bool)
    neg = np.zeros((ns, *padded_size), bool)
    for i, p in enumerate(prompts):
        P, N = pos[i, :ih, :iw], neg[i, :ih, :iw]      # views: drawing stays inside the image
        if _n(p.points):
            pts = np.asarray(p.points, np.float64).reshape(-1, 2)
            lab = np.ones(len(pts), np.int64) if p.labels is None else np.asarray(p.labels).reshape(-1)
            if len(lab) != len(pts):
                raise PromptError(f"prompt {i}: {len(pts)} points but {len(lab)} labels")
            for (x, y), l in zip(pts, lab):
                _square(P if l else N, x * sx, y * sy, point_radius)
        if _n(p.boxes):
            for x0, y0, x1, y1 in np.asarray(p.boxes, np.float64).reshape(-1, 4):
                x0, x1 = sorted((x0 * sx, x1 * sx))
                y0, y1 = sorted((y0 * sy, y1 * sy))
                c0, c1 = int(np.clip(np.floor(x0), 0, iw)), int(np.clip(np.ceil(x1), 0, iw))
                r0, r1 = int(np.clip(np.floor(y0), 0, ih)), int(np.clip(np.ceil(y1), 0, ih))
                P[r0:r1, c0:c1] = True
        for line in p.scribbles:
            _polyline(P, np.asarray(line, np.float64).reshape(-1, 2) * (sx, sy), line_width)
        for line in p.negative_scribbles:
            _polyline(N, np.asarray(line, np.float64).reshape(-1, 2) * (sx, sy), line_width)
        for poly in p.polygons:
            P |= _fill_polygon(np.asarray(poly, np.float64).reshape(-1, 2) * (sx, sy), (ih, iw))
        if p.mask is not None:
            P |= resize_mask(_check_mask(p.mask, orig_size, i), (ih, iw))
        if p.negative_mask is not None:
            N |= resize_mask(_check_mask(p.negative_mask, orig_size, i), (ih, iw))
        if not P.any():
            raise PromptError(f"prompt {i}: no positive pixel inside the image")
        N &= ~P                                           # a pixel cannot be both
    return pos, neg


def _check_mask(m, size, i) -> np.ndarray:
    m = np.asarray(m)
    if m.shape != tuple(size):
        raise PromptError(f"prompt {i}: mask of shape {m.shape}, image is {tuple(size)}")
    return m.astype(bool)


def _square(canvas: np.ndarray, x: float, y: float, r: int) -> None:
    if not (np.isfinite(x) and np.isfinite(y)):
        return
    h, w = canvas.shape
    cx, cy = int(np.floor(x)), int(np.floor(y))
    canvas[max(cy - r, 0):max(min(cy + r + 1, h), 0), max(cx - r, 0):max(min(cx + r + 1, w), 0)] = True


def _polyline(canvas: np.ndarray, pts: np.ndarray, width: int, chunk: int = 1 << 18) -> None:
    """Squares of radius width // 2 at points every pixel or less along each segment, drawn at
    once per chunk of points (one Python call per point took 8 s for a 10,000-vertex scribble).
    Each segment is first clipped to the canvas grown by the radius: a vertex far outside adds no
    points. Non-finite vertices draw nothing."""
    r = max(width // 2, 0)
    h, w = canvas.shape
    if len(pts) == 1:
        _square(canvas, pts[0, 0], pts[0, 1], r)
        return
    a, b = pts[:-1], pts[1:]
    d = b - a
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b, d = a[ok], b[ok], d[ok]
    # Liang-Barsky: the part of each segment within [-r-1, w+r] x [-r-1, h+r] (t in [t0, t1]).
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    for k, lo, hi in ((0, -r - 1.0, w + r), (1, -r - 1.0, h + r)):
        p, q = d[:, k], a[:, k]
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (lo - q) / p, (hi - q) / p
        flat = p == 0
        t0 = np.where(flat, t0, np.maximum(t0, np.minimum(ta, tb)))
        t1 = np.where(flat, t1, np.minimum(t1, np.maximum(ta, tb)))
        inside = (q >= lo) & (q <= hi)
        t1 = np.where(flat & ~inside, -1.0, t1)
    keep = t0 <= t1
    whole = ((t0 == 0) & (t1 == 1))[:, None]   # unclipped: the same points as np.linspace(a, b, n)
    a0 = np.where(whole, a, a + t0[:, None] * d)[keep]
    b0 = np.where(whole, b, a + t1[:, None] * d)[keep]
    d0 = b0 - a0
    n = np.ceil(np.abs(d0).max(1)).astype(np.int64) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        step = d0 / (n - 1)[:, None]
    even = (step == 0).any(1) | (n == 1)       # np.linspace's own two ways of spacing points
    # Centres marked on a canvas grown by r + 1 (every clipped point lands on it), then each
    # square drawn as (2r+1)^2 shifted copies of that canvas.
    g = r + 1
    centres = np.zeros((h + 2 * g, w + 2 * g), bool)
    start = 0
    while start < len(n):                      # bounded memory whatever the scribble's length
        stop = start + max(1, int(np.searchsorted(np.cumsum(n[start:]), chunk)))
        m = n[start:stop]
        seg = np.repeat(np.arange(start, stop), m)
        k = np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m)
        kk = k[:, None].astype(np.float64)
        xy = np.where(even[seg, None], kk / np.maximum(m - 1, 1).repeat(m)[:, None] * d0[seg], kk * step[seg])
        xy += a0[seg]
        last = np.cumsum(m) - 1
        xy[last[m > 1]] = b0[start:stop][m > 1]
        xy = np.floor(xy).astype(np.int64) + g
        np.clip(xy, 0, [w + 2 * g - 1, h + 2 * g - 1], out=xy)    # rounding at the grown edge
        centres[xy[:, 1], xy[:, 0]] = True
        start = stop
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            canvas |= centres[g + dy:g + dy + h, g + dx:g + dx + w]


def _fill_polygon(poly: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Even-odd fill, testing pixel centres, row by row over the polygon's bounding box: a pixel
    is inside when an odd number of edges cross its row to its right (one pass over the edges per
    row; one pass over the box per edge took seconds for a 10,000-vertex polygon)."""
    h, w = size
    out = np.zeros(size, bool)
    if len(poly) < 3 or not np.isfinite(poly).all():
        return out
    x0, y0 = np.clip(np.floor(poly.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int) + 1, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    xs = np.arange(x0, x1) + 0.5
    for row in range(y0, y1):
        y = row + 0.5
        c = (ay > y) != (by > y)
        xi = np.sort(ax[c] + (y - ay[c]) * (bx[c] - ax[c]) / (by[c] - ay[c]))
        right = len(xi) - np.searchsorted(xi, xs, side="right")      # crossings with xi > x
        out[row, x0:x1] = (right & 1).astype(bool)
    return out


def resize_mask(m: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by index arithmetic (no image library needed): output pixel i
    takes input pixel floor((i + 0.5) * h / size)."""
    h, w = m.shape
    if h % size[0] == 0 and w % size[1] == 0:
        # Whole factors (640x480 -> 320x240): the same pixels as a strided slice, 10x faster
        # than fancy indexing, which the tracker pays per object per frame.
        ky, kx = h // size[0], w // size[1]
        return m[ky // 2::ky, kx // 2::kx].copy()
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return m[rows][:, cols]
