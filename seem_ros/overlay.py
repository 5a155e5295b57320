"""A picture of the results for people: masks tinted over the image, boxes and labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def colour_of(obj_id: int) -> np.ndarray:
    """A stable, saturated colour per id (golden-angle hue walk), so an object keeps its colour."""
    h = (obj_id * 0.618033988749895) % 1.0
    i, f = int(h * 6), h * 6 - int(h * 6)
    v, s = 1.0, 0.85
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return (np.array(rgb) * 255).astype(np.uint8)


def draw_overlay(rgb: np.ndarray, objects: Sequence, alpha: float = 0.5) -> np.ndarray:
    """objects: anything with id, label, score, tracked, mask, box (perception.ObjectResult)."""
    out = rgb.astype(np.float32).copy()
    shown = [o for o in objects if o.tracked and o.mask is not None]
    for o in shown:
        out[o.mask] = (1 - alpha) * out[o.mask] + alpha * colour_of(o.id)
    img = out.clip(0, 255).astype(np.uint8)
    try:
        from PIL import Image, ImageDraw
    except ImportError:                      # labels are a nicety; the masks are the content
        return img
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    for o in shown:
        c = tuple(int(x) for x in colour_of(o.id))
        x0, y0, x1, y1 = o.box
        d.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=c, width=2)
        text = f"{o.id} {o.label} {o.score:.2f}"
        ty = max(0, y0 - 12)
        d.rectangle([x0, ty, x0 + 6 * len(text) + 4, ty + 11], fill=(0, 0, 0))
        d.text((x0 + 2, ty), text, fill=c)
    return np.asarray(pil)
