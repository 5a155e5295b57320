"""Training samples for the embedded SEEM, generated from the synthetic world.

Every sample is one rendered scene with the targets of every prompt type the node uses:
panoptic segments over the world's vocabulary, referring phrases ("the red cube") with their masks,
and visual prompts (click, box, scribble, previous-frame mask) with their objects. Deterministic:
sample k of a run is rendered from seed (base_seed, k), so a resumed run sees the same data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from scipy import ndimage

from ..inference.prompts import VisualPrompt
from ..sim import CLASS_NAMES, TABLE_CLASS, make_scene, make_sequence, render
from .clicks import border_distance

# The vocabulary the node uses by default: every class of the world except walls/floor, which
# are "no object" (unlabeled in the semantic output).
VOCABULARY = tuple(CLASS_NAMES[1:])
# Seeds at or above this are training data; evaluation uses seeds below it.
TRAIN_SEED_BASE = 1_000_000

# How a user names an object: "red cube", "the red cube", "pick up the red cube", ...
PREFIXES = ("", "", "the ", "a ", "pick up the ", "grasp the ", "find the ", "segment the ", "the small ")


@dataclass
class Target:
    """One object (or the table) in one image."""
    mask: np.ndarray                  # [H, W] bool
    vocab_id: int                     # index into VOCABULARY
    phrase: Optional[str] = None      # unambiguous referring phrase, None when there is none


@dataclass
class Sample:
    rgb: np.ndarray                   # [H, W, 3] uint8
    targets: List[Target]             # panoptic segments: objects then the table
    phrases: List[tuple] = field(default_factory=list)      # (text, target index)
    prompts: List[VisualPrompt] = field(default_factory=list)
    prompt_targets: List[int] = field(default_factory=list)  # target index per prompt
    track_prompts: List[VisualPrompt] = field(default_factory=list)   # previous-frame masks
    track_memory: List[np.ndarray] = field(default_factory=list)      # [H, W] bool, memory mask
    track_targets: List[int] = field(default_factory=list)


def core_phrase(text: str) -> str:
    """The object words of a training phrase, without its prefix ("pick up the red cube" -> "red cube")."""
    for p in sorted(PREFIXES, key=len, reverse=True):
        if p and text.startswith(p):
            return text[len(p):]
    return text


def referring_phrases(objs, rng: np.random.Generator) -> List[tuple]:
    """(phrase, object index) for objects a phrase names unambiguously among the visible ones."""
    colour_shape = [(o.colour, o.shape_name) for o in objs]
    out = []
    for i, o in enumerate(objs):
        forms = []
        if colour_shape.count((o.colour, o.shape_name)) == 1:
            forms += [f"{o.colour} {o.shape_name}"] * 3
        if sum(s == o.shape_name for _, s in colour_shape) == 1:
            forms.append(o.shape_name)
        if sum(c == o.colour for c, _ in colour_shape) == 1:
            forms.append(f"{o.colour} object")
        if forms:
            out.append((str(rng.choice(PREFIXES)) + str(rng.choice(forms)), i))
    return out


def interior_point(mask: np.ndarray, rng: Optional[np.random.Generator] = None, centre: bool = True) -> np.ndarray:
    """(x, y) of a click inside mask: its most interior pixel (SEEM's first click) or a random one
    away from the border."""
    dt = border_distance(mask)
    if centre:
        y, x = np.unravel_index(np.argmax(dt), dt.shape)
    else:
        ys, xs = np.nonzero(dt >= max(1.0, 0.3 * dt.max()))
        k = rng.integers(len(ys))
        y, x = ys[k], xs[k]
    return np.array([x + 0.5, y + 0.5])


def random_prompt(mask: np.ndarray, rng: np.random.Generator, others: np.ndarray) -> VisualPrompt:
    """A click, box, scribble or polygon-free mask prompt on one object, sometimes with a negative click."""
    kind = rng.choice(["click", "click", "box", "scribble", "mask"])
    ys, xs = np.nonzero(mask)
    if kind == "click":
        p = VisualPrompt(points=interior_point(mask, rng, rng.random() < 0.5)[None])
    elif kind == "box":
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        j = 0.08 * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]) * rng.standard_normal(4)
        p = VisualPrompt(boxes=(np.array([x0, y0, x1, y1], float) + j)[None])
    elif kind == "scribble":
        k = int(rng.integers(2, 5))
        pts = np.stack([interior_point(mask, rng, False) for _ in range(k)])
        axis = pts - pts.mean(0)
        order = np.argsort(axis @ np.linalg.svd(axis, full_matrices=False)[2][0]) if k > 2 else np.arange(k)
        p = VisualPrompt(scribbles=[pts[order]])
    else:
        p = VisualPrompt(mask=perturb_mask(mask, rng, strength=0.5))
    if rng.random() < 0.25 and others.any():
        oy, ox = np.nonzero(others)
        k = rng.integers(len(oy))
        p = p.with_points([[ox[k] + 0.5, oy[k] + 0.5]], [0])
    return p


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The object's mask as a previous frame or a rough hand-drawn mask would give it: shifted,
    scaled, eroded or dilated. Never empty."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    size = max(np.ptp(ys), np.ptp(xs)) + 1
    s = 1 + strength * rng.uniform(-0.12, 0.12)
    dy, dx = strength * rng.uniform(-0.2, 0.2, 2) * size
    # Inverse map: output pixel -> source pixel (nearest).
    yy, xx = np.mgrid[0:h, 0:w]
    sy = np.clip(np.round((yy - cy - dy) / s + cy), 0, h - 1).astype(int)
    sx = np.clip(np.round((xx - cx - dx) / s + cx), 0, w - 1).astype(int)
    out = mask[sy, sx]
    it = int(rng.integers(0, 3))
    if it:
        out = (ndimage.binary_erosion if rng.random() < 0.5 else ndimage.binary_dilation)(out, iterations=it)
    return out if out.any() else mask.copy()


def make_sample(seed: int, width: int = 320, height: int = 240, max_prompts: int = 3,
                min_pixels: int = 40) -> Sample:
    """One training sample from one seed. A quarter of the samples are frames of a moving
    sequence, whose previous frame gives the memory mask of the tracking targets."""
    rng = np.random.default_rng([seed, 0x7A1])
    prev = None
    if rng.random() < 0.25:
        seq = make_sequence(seed, n_frames=40, width=width, height=height)
        k = int(rng.integers(2, 40))
        prev, frame = seq.render(k - int(rng.integers(1, 3))), seq.render(k)
    else:
        frame = render(make_scene(seed, width, height))
    objs = [o for o in frame.objects if o.visible_pixels >= min_pixels]
    targets = [Target(frame.instance == o.id, o.class_id - 1) for o in objs]
    table = frame.semantic == TABLE_CLASS
    if table.sum() >= min_pixels:
        targets.append(Target(table, TABLE_CLASS - 1))
    s = Sample(frame.rgb, targets)
    for text, i in referring_phrases(objs, rng):
        targets[i].phrase = text
        s.phrases.append((text, i))
    if not targets:
        return s
    order = rng.permutation(len(targets))[:max_prompts]
    for i in order:
        s.prompts.append(random_prompt(targets[i].mask, rng, _near(targets[i].mask)))
        s.prompt_targets.append(int(i))
    # Tracking: the previous frame's mask (real when this is a sequence, else perturbed) is both
    # the mask prompt and the memory, as the tracker gives them.
    for i in order:
        m = targets[i].mask
        if prev is not None and i < len(objs) and (prev.instance == objs[i].id).sum() >= min_pixels:
            pm = prev.instance == objs[i].id
            pm = perturb_mask(pm, rng, strength=0.2)
        else:
            pm = perturb_mask(m, rng, strength=1.0)
        s.track_prompts.append(VisualPrompt(mask=pm))
        s.track_memory.append(pm)
        s.track_targets.append(int(i))
    return s


def _near(mask: np.ndarray) -> np.ndarray:
    """Pixels around (not on) the object: where a user's negative click lands."""
    return ndimage.binary_dilation(mask, iterations=12) & ~mask


class SampleStream:
    """Iterable of batches: batch b holds samples (base_seed + b*batch + i), so a run resumed at
    step b sees exactly the data it would have seen."""

    def __init__(self, base_seed: int, batch: int, start_step: int, width: int, height: int):
        self.base_seed, self.batch, self.start, self.width, self.height = base_seed, batch, start_step, width, height

    def __iter__(self):
        return self.steps(0, 1)

    def steps(self, offset: int, stride: int):
        """Batches start+offset, start+offset+stride, ...: worker `offset` of `stride` loader
        workers. PyTorch's loader takes batches from its workers in turn, so the training loop
        still sees steps in order, whatever the number of workers."""
        step = self.start + offset
        while True:
            yield step, [make_sample(TRAIN_SEED_BASE + self.base_seed * 10_000_000 + step * self.batch + i,
                                     self.width, self.height) for i in range(self.batch)]
            step += stride
