"""Evaluate a SEEM checkpoint on held-out scenes of the synthetic world: one row per prompt type
the node accepts, each with its metric, target and pass/fail.

    python -m seem_ros.training.evaluate                         # bundled weights, 100 scenes, 640x480
    python -m seem_ros.training.evaluate --scenes 20 --markdown --checkpoint runs/x/seem_tiny.pt

Held out: scenes use seeds seed_start.. < TRAIN_SEED_BASE (training renders seeds >= it).
Objects count when >= 400 pixels are visible (scaled with the image area); smaller ones are void.

Protocols (every prompt names one object, as the node's Prompt message does). Masks are the ones
the node publishes (the tracker's: of the model's mask only the connected parts that touch the
prompt, for text the best part; corrective clicks refine the object on a crop around it);
`--model-only` scores the model's masks alone, corrective clicks on the whole image with the
previous round's logits as memory (`--no-zoom` keeps the node's path but not its crop):
  text       every unambiguous form of referring_phrases ("<colour> <shape>", "<shape>",
             "<colour> object"; ambiguous = another visible object fits it), random prefix
             ("pick up the ..."), one phrase per call: mIoU and accuracy@0.5.
  clicks     SEEM/RITM: first click at the most interior pixel, each next one at the most interior
             pixel of the largest error, positive or negative, clicks accumulate; stop at IoU 0.9
             or 20 clicks. NoC@85/90 (20 when never reached) and 1-click mIoU.
  box, scribble, polygon: the tight box; a straight stroke along the object's main axis through
             its most interior pixel; the convex hull outline.
  mask       a perturbed ground-truth mask (shifted, scaled, eroded/dilated: a previous frame's or a
             rough hand-drawn mask) as the prompt; "+ memory" also gives it as memory, as tracking does.
  reference  prompt tokens from the object's mask in one render, applied to a render of the same
             scene from a camera orbited 15-30 degrees about the table point it looks at.
  panoptic   PQ over the vocabulary (standard: same class and IoU > 0.5 match, PQ = SQ * RQ per
             class, averaged over classes present; the table is a class, walls/floor are no-object,
             objects below the size limit are void; as the node, each thing segment's largest
             connected part); semantic mIoU with walls/floor unlabeled.
  pose       estimate_pose on the predicted mask (text "<colour> <shape>", or one click) + depth,
             as the node computes it (its rim left out, the scene's support plane): median
             position error; the ground-truth mask's error is shown for reference."""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull

from ..geometry.plane import fit_support_plane
from ..geometry.pose import estimate_pose, rim_px
from ..inference.predictor import ImageEmbedding, SeemPredictor
from ..inference.prompts import VisualPrompt
from ..sim import TABLE_CLASS, Frame, Scene, look_at, make_scene, render
from ..sim.camera import rot_z
from ..tracking.tracker import ObjectPrompt, ObjectTracker
from .clicks import border_distance, iou, next_click
from .data import PREFIXES, TRAIN_SEED_BASE, VOCABULARY, perturb_mask

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "seem_tiny.pt"
SEED_START = 900_000          # held out: training seeds start at TRAIN_SEED_BASE
MAX_CLICKS = 20
MIN_PIXELS_640 = 400          # an object counts when this many pixels of a 640x480 image show it
TABLE_VOCAB = TABLE_CLASS - 1  # vocabulary index of "table" (VOCABULARY = CLASS_NAMES[1:])


# ============================================================================ scenes
@dataclass
class Item:
    """One held-out scene: its render, its image encoding (made once, shared by every evaluator)
    and a cache through which evaluators share results (e.g. masks for the pose row)."""
    seed: int
    scene: Optional[Scene]            # None for a bare Frame: no second view for the reference row
    frame: Frame
    embedding: Optional[ImageEmbedding] = None
    cache: dict = field(default_factory=dict)

    def encode(self, predictor: SeemPredictor) -> ImageEmbedding:
        if self.embedding is None:
            self.embedding = predictor.set_image(self.frame.rgb)
        return self.embedding


def make_items(seeds: Iterable[int], width: int = 640, height: int = 480) -> Iterator[Item]:
    """Rendered lazily: only one scene's images need to be in memory at a time."""
    for s in seeds:
        if s >= TRAIN_SEED_BASE:
            raise ValueError(f"seed {s} is a training seed (>= {TRAIN_SEED_BASE})")
        scene = make_scene(int(s), width, height)
        yield Item(int(s), scene, render(scene))


def min_pixels_at(width: int, height: int) -> int:
    return max(1, int(round(MIN_PIXELS_640 * width * height / (640 * 480))))


def min_pixels(frame: Frame) -> int:
    return min_pixels_at(frame.width, frame.height)


def eval_objects(frame: Frame) -> list:
    return [o for o in frame.objects if o.visible_pixels >= min_pixels(frame)]


# ============================================================================ metrics
def noc(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Number of clicks to reach `threshold` IoU (ious[k] = IoU after k+1 clicks); max_clicks
    when never reached, as RITM/SEEM count a failure."""
    for k, v in enumerate(ious[:max_clicks]):
        if v >= threshold:
            return k + 1
    return max_clicks


def pq_stats(gt: np.ndarray, gt_classes: Dict[int, int], pred: np.ndarray, pred_classes: Dict[int, int],
             void: Optional[np.ndarray] = None) -> Dict[int, np.ndarray]:
    """Per-class [TP, FP, FN, sum of TP IoUs] of one image (COCO panopticapi rules).

    gt / pred: [H, W] segment ids, 0 = no segment; *_classes: segment id -> class. Void pixels
    (ignored regions) are left out of every union, and an unmatched prediction lying mostly on
    void is not a false positive. Pixels in no segment are no-object: predictions there count."""
    void = np.zeros(gt.shape, bool) if void is None else void
    gt = np.where(void, 0, gt)
    g, p = gt.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    pairs, inter = np.unique(g * (int(p.max(initial=0)) + 1) + p, return_counts=True)
    gi, pi = np.divmod(pairs, int(p.max(initial=0)) + 1)
    area_g = dict(zip(*np.unique(g, return_counts=True)))
    area_p = dict(zip(*np.unique(p, return_counts=True)))
    pv_ids, pv_n = np.unique(p[void.ravel()], return_counts=True)
    void_p = dict(zip(pv_ids, pv_n))
    stats: Dict[int, np.ndarray] = {}
    st = lambda c: stats.setdefault(int(c), np.zeros(4))
    matched_g, matched_p = set(), set()
    for a, b, n in zip(gi, pi, inter):
        if a == 0 or b == 0 or gt_classes[a] != pred_classes[b]:
            continue
        u = area_g[a] + area_p[b] - n - void_p.get(b, 0)
        v = n / u
        if v > 0.5:                     # > 0.5 makes the match unique
            matched_g.add(a), matched_p.add(b)
            s = st(gt_classes[a])
            s[0] += 1
            s[3] += v
    for a, c in gt_classes.items():
        if a not in matched_g and area_g.get(a, 0) > 0:
            st(c)[2] += 1
    for b, c in pred_classes.items():
        if b in matched_p or area_p.get(b, 0) == 0:
            continue
        if void_p.get(b, 0) / area_p[b] > 0.5:
            continue
        st(c)[1] += 1
    return stats


def pq_summary(stats: Dict[int, np.ndarray], names: Sequence[str] = VOCABULARY) -> dict:
    """PQ, SQ, RQ averaged over the classes with any TP, FP or FN."""
    per = {}
    for c, (tp, fp, fn, s) in sorted(stats.items()):
        if tp + fp + fn == 0:
            continue
        sq = s / tp if tp else 0.0
        rq = tp / (tp + 0.5 * fp + 0.5 * fn)
        per[names[c] if c < len(names) else str(c)] = {"pq": sq * rq, "sq": sq, "rq": rq,
                                                       "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    mean = lambda k: float(np.mean([v[k] for v in per.values()])) if per else float("nan")
    return {"pq": mean("pq"), "sq": mean("sq"), "rq": mean("rq"), "classes": per}


def add_stats(total: Dict[int, np.ndarray], one: Dict[int, np.ndarray]) -> None:
    for c, v in one.items():
        total[c] = total.get(c, np.zeros(4)) + v


def miou(ious) -> float:
    return float(np.mean(ious)) if len(ious) else float("nan")


# ============================================================================ prompts
def phrase_forms(obj, visible) -> List[Tuple[str, str]]:
    """(form, phrase) of every way referring_phrases may name obj that names no other visible object."""
    cs = [(o.colour, o.shape_name) for o in visible]
    out = []
    if cs.count((obj.colour, obj.shape_name)) == 1:
        out.append(("colour shape", f"{obj.colour} {obj.shape_name}"))
    if sum(s == obj.shape_name for _, s in cs) == 1:
        out.append(("shape", obj.shape_name))
    if sum(c == obj.colour for c, _ in cs) == 1:
        out.append(("colour object", f"{obj.colour} object"))
    return out


def stroke(mask: np.ndarray) -> np.ndarray:
    """A straight scribble [3, 2] (x, y): along the mask's main axis through its most interior
    pixel, as far as it stays well inside (a user draws away from the edges)."""
    dt = border_distance(mask)
    cy, cx = np.unravel_index(np.argmax(dt), dt.shape)
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(float)
    pts -= pts.mean(0)
    axis = np.linalg.eigh(pts.T @ pts)[1][:, -1] if len(pts) > 1 else np.array([1.0, 0.0])
    inside = dt >= max(1.0, 0.3 * dt.max())
    h, w = mask.shape
    ends = []
    for sgn in (-1, 1):
        t = 0
        while True:
            x, y = np.round(np.array([cx, cy]) + sgn * (t + 1) * axis).astype(int)
            if not (0 <= x < w and 0 <= y < h and inside[y, x]):
                break
            t += 1
        ends.append(np.array([cx, cy]) + sgn * t * axis)
    return np.stack([ends[0], [cx, cy], ends[1]]) + 0.5


def outline(mask: np.ndarray) -> np.ndarray:
    """Convex hull [K, 2] (x, y) of the mask's pixel squares: a careful hand-drawn polygon."""
    edge = mask & ~ndimage.binary_erosion(mask)
    ys, xs = np.nonzero(edge)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(float)
    try:
        return corners[ConvexHull(corners).vertices]
    except Exception:                  # degenerate (a line of pixels): its box
        return np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.max() + 1, ys.max() + 1],
                         [xs.min(), ys.max() + 1]], float)


def tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def other_view(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene from a camera orbited 15-30 degrees (either way) about the table point the
    camera looks at, its height kept; the first orbit clear of every object."""
    T = scene.camera.T_world_cam
    eye, fwd = T[:3, 3], T[:3, 2]
    target = eye + fwd * ((eye[2] - scene.table.height) / max(-fwd[2], 1e-3))
    sign = rng.choice([-1, 1])
    cams = []
    for deg in rng.uniform(15, 30, 8):
        for s in (sign, -sign):
            e = target + rot_z(np.radians(s * deg)) @ (eye - target)
            cams.append(dataclasses.replace(scene.camera, T_world_cam=look_at(e, target)))
    def clear(c):                     # as make_scene keeps its camera: 15 cm from every object box
        return all(np.linalg.norm(np.maximum(np.maximum(lo - c.position, c.position - hi), 0)) > 0.15
                   for lo, hi in (o.world_aabb() for o in scene.objects))
    cam = next((c for c in cams if clear(c)), cams[0])
    return dataclasses.replace(scene, camera=cam)


# ============================================================================ evaluators
class Evaluator:
    """Accumulates one row group over scenes: add(predictor, item) per scene, then result()."""
    name = ""

    def __init__(self):
        self.seconds = 0.0

    def add(self, predictor: SeemPredictor, item: Item) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        raise NotImplementedError


def node_mask(predictor: SeemPredictor, emb: ImageEmbedding, prompt: ObjectPrompt,
              depth: Optional[np.ndarray] = None) -> np.ndarray:
    """The mask the node publishes for a new object with this prompt: the tracker's (the model's
    mask, only its connected parts that touch the prompt kept, cut at depth steps for clicks,
    boxes, scribbles and masks when depth is given; for text the best part)."""
    tracker = ObjectTracker(predictor)
    tracker.set_depth(emb, depth)
    t = tracker.add(prompt, emb, 0.0)
    return t.mask if t.mask is not None else np.zeros(emb.orig_size, bool)


class TextEval(Evaluator):
    name = "text"

    def __init__(self, node: bool = True):
        super().__init__()
        self.ious, self.forms, self.node = [], [], node

    def add(self, predictor, item):
        f, emb = item.frame, item.encode(predictor)
        rng = np.random.default_rng([item.seed, 0x7E47])
        visible = [o for o in f.objects if o.visible_pixels > 0]
        masks = item.cache.setdefault("text", {})
        for o in eval_objects(f):
            gt = f.instance == o.id
            for form, text in phrase_forms(o, visible):
                phrase = str(rng.choice(PREFIXES)) + text
                m = (node_mask(predictor, emb, ObjectPrompt("text", text=phrase), f.depth) if self.node
                     else predictor.predict_text([phrase], embedding=emb).masks[0])
                self.ious.append(iou(m, gt))
                self.forms.append(form)
                if form == "colour shape":
                    masks[o.id] = m

    def result(self):
        ious, forms = np.asarray(self.ious), np.asarray(self.forms)
        per = {k: {"miou": miou(ious[forms == k]), "n": int((forms == k).sum())} for k in dict.fromkeys(self.forms)}
        return {"miou": miou(ious), "acc50": float(np.mean(ious > 0.5)) if len(ious) else float("nan"),
                "n": len(ious), "forms": per}


def click_ious(predictor: SeemPredictor, emb: ImageEmbedding, gt: np.ndarray, max_clicks: int = MAX_CLICKS,
               stop_at: float = 0.9, zoom: bool = True, node: bool = True,
               depth: Optional[np.ndarray] = None) -> Tuple[List[float], np.ndarray]:
    """IoU after each click of SEEM's simulated user (stops once IoU >= stop_at), and the
    first click's mask. `node`: as the node answers them (the tracker: add the object, then
    refine it with each corrective click); else the model's masks alone. `zoom`: corrective
    clicks on a crop around the mask (`SeemPredictor.predict_zoomed`, the node's default); else
    on the whole image, as SEEM does."""
    pred = np.zeros_like(gt)
    prompt, memory, ious, first, crop = None, None, [], None, None
    tracker, oid = ObjectTracker(predictor, zoom=zoom) if node else None, None
    if node:
        tracker.set_depth(emb, depth)
    for _ in range(max_clicks):
        c = next_click(pred, gt)
        if c is None:                   # exact: every further click keeps it so
            break
        xy, label = c
        if node:
            click = VisualPrompt(points=xy[None], labels=[label])
            t = (tracker.add(ObjectPrompt("point", visual=click), emb, 0.0) if oid is None
                 else tracker.refine(oid, click, emb, 0.0))
            oid, pred = t.id, (t.mask if t.mask is not None else np.zeros_like(gt))
        else:
            prompt = (VisualPrompt(points=xy[None], labels=[label]) if prompt is None
                      else prompt.with_points([xy], [label]))
            if zoom and first is not None:
                seg, crop = predictor.predict_zoomed(prompt, pred, emb, crop)
            else:
                seg = predictor.predict([prompt], memory=memory, embedding=emb)
            memory, pred = seg.logits, seg.masks[0]
        first = pred if first is None else first
        ious.append(iou(pred, gt))
        if ious[-1] >= stop_at:
            break
    return ious, first


class ClickEval(Evaluator):
    name = "clicks"

    def __init__(self, max_clicks: int = MAX_CLICKS, thresholds=(0.85, 0.9), zoom: bool = True, node: bool = True):
        super().__init__()
        self.max_clicks, self.thresholds, self.zoom, self.node = max_clicks, thresholds, zoom, node
        self.runs: List[List[float]] = []

    def add(self, predictor, item):
        f, emb = item.frame, item.encode(predictor)
        masks = item.cache.setdefault("click", {})
        for o in eval_objects(f):
            ious, first = click_ious(predictor, emb, f.instance == o.id, self.max_clicks, max(self.thresholds),
                                     zoom=self.zoom, node=self.node, depth=f.depth)
            self.runs.append(ious)
            masks[o.id] = first

    def result(self):
        out = {"n": len(self.runs), "miou1": miou([r[0] for r in self.runs]), "zoom": self.zoom, "node": self.node}
        for t in self.thresholds:
            n = [noc(r, t, self.max_clicks) for r in self.runs]
            out[f"noc{round(100 * t)}"] = float(np.mean(n)) if n else float("nan")
            out[f"fail{round(100 * t)}"] = float(np.mean([not any(v >= t for v in r) for r in self.runs])) if n else float("nan")
        return out


class PromptEval(Evaluator):
    """mIoU of one visual prompt per object: kind in box, scribble, polygon, mask, mask+memory."""
    KINDS = ("box", "scribble", "polygon", "mask", "mask+memory")

    def __init__(self, kind: str, strength: float = 0.5, node: bool = True):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown prompt kind {kind!r}")
        self.kind, self.name, self.strength = kind, kind, strength
        self.node = node and kind != "mask+memory"     # memory is the tracker's own, not a prompt
        self.ious, self.input_ious = [], []

    def add(self, predictor, item):
        f, emb = item.frame, item.encode(predictor)
        rng = np.random.default_rng([item.seed, 0x3A5C])      # same perturbed masks for both mask rows
        for o in eval_objects(f):
            gt = f.instance == o.id
            memory = None
            if self.kind == "box":
                p = VisualPrompt(boxes=tight_box(gt)[None])
            elif self.kind == "scribble":
                p = VisualPrompt(scribbles=[stroke(gt)])
            elif self.kind == "polygon":
                p = VisualPrompt(polygons=[outline(gt)])
            else:
                pm = perturb_mask(gt, rng, self.strength)
                self.input_ious.append(iou(pm, gt))
                p = VisualPrompt(mask=pm)
                memory = predictor.mask_memory(pm, emb) if self.kind == "mask+memory" else None
            if self.node:
                kind = {"polygon": "scribble"}.get(self.kind, self.kind)   # as the node names a polygon
                m = node_mask(predictor, emb, ObjectPrompt(kind, visual=p), f.depth)
            else:
                m = predictor.predict([p], memory=memory, embedding=emb).masks[0]
            self.ious.append(iou(m, gt))

    def result(self):
        out = {"miou": miou(self.ious), "n": len(self.ious)}
        if self.input_ious:
            out["input_miou"] = miou(self.input_ious)
        return out


class ReferenceEval(Evaluator):
    """Tokens of the object's mask on one render, applied to another view of the same scene (as
    the node answers a Prompt with a reference image: a new object from those tokens)."""
    name = "reference"

    def __init__(self, node: bool = True):
        super().__init__()
        self.ious, self.node = [], node

    def add(self, predictor, item):
        if item.scene is None:
            return
        rng = np.random.default_rng([item.seed, 0x2EF])
        other = render(other_view(item.scene, rng), index=1)       # index 1: fresh sensor noise
        emb_ref, emb = item.encode(predictor), predictor.set_image(other.rgb)
        keep = {o.id for o in eval_objects(other)}
        for o in eval_objects(item.frame):
            if o.id not in keep:
                continue
            tokens = predictor.reference_tokens([VisualPrompt(mask=item.frame.instance == o.id)], emb_ref)
            m = (node_mask(predictor, emb, ObjectPrompt("reference", tokens=tokens), other.depth) if self.node
                 else predictor.predict([], embedding=emb, tokens=tokens).masks[0])
            self.ious.append(iou(m, other.instance == o.id))

    def result(self):
        return {"miou": miou(self.ious), "n": len(self.ious)}


def panoptic_gt(frame: Frame) -> Tuple[np.ndarray, Dict[int, int], np.ndarray]:
    """(segment ids, id -> vocabulary class, void) of a frame: objects above the size limit, the
    table as one segment; smaller objects are void."""
    big = {o.id: o.class_id - 1 for o in eval_objects(frame)}
    seg = np.where(np.isin(frame.instance, list(big)), frame.instance, 0).astype(np.int64)
    void = (frame.instance > 0) & (seg == 0)
    table_id = int(frame.instance.max()) + 1
    table = frame.semantic == TABLE_CLASS
    if table.any():
        seg[table] = table_id
        big[table_id] = TABLE_VOCAB
    return seg, big, void


class PanopticEval(Evaluator):
    name = "panoptic"

    def __init__(self, score_threshold: Optional[float] = None, node: bool = False):
        super().__init__()
        self.score_threshold, self.node = score_threshold, node
        self.stats: Dict[int, np.ndarray] = {}

    def add(self, predictor, item):
        # As the node publishes it: each thing segment's largest connected part.
        pan = predictor.panoptic(item.encode(predictor), score_threshold=self.score_threshold,
                                 stuff=(VOCABULARY[TABLE_VOCAB],), largest_part=self.node)
        gt, gcls, void = panoptic_gt(item.frame)
        add_stats(self.stats, pq_stats(gt, gcls, pan.segments, dict(zip(pan.ids.tolist(), pan.label_ids.tolist())), void))

    def result(self):
        return pq_summary(self.stats)


class SemanticEval(Evaluator):
    """Per-class IoU over the dataset's pixels; walls/floor are unlabeled (ignored)."""
    name = "semantic"

    def __init__(self):
        super().__init__()
        k = len(VOCABULARY)
        self.conf = np.zeros((k, k), np.int64)

    def add(self, predictor, item):
        sem, _ = predictor.semantic(item.encode(predictor))
        lab = item.frame.semantic.astype(np.int64) - 1
        keep = lab >= 0
        k = len(VOCABULARY)
        self.conf += np.bincount(lab[keep] * k + sem[keep], minlength=k * k).reshape(k, k)

    def result(self):
        tp = np.diag(self.conf)
        union = self.conf.sum(0) + self.conf.sum(1) - tp
        present = self.conf.sum(1) > 0               # classes in the ground truth
        ious = tp[present] / np.maximum(union[present], 1)
        return {"miou": float(ious.mean()) if len(ious) else float("nan"),
                "classes": {VOCABULARY[c]: float(v) for c, v in zip(np.nonzero(present)[0], ious)}}


class PoseEval(Evaluator):
    """Position error of estimate_pose on predicted masks, taken from the text and click rows
    when they ran on the same scene (else predicted here), and on the true mask."""
    name = "pose"

    def __init__(self, node: bool = True):
        super().__init__()
        self.errors = {"text": [], "click": [], "true mask": []}
        self.node = node

    def add(self, predictor, item):
        f = item.frame
        visible = [o for o in f.objects if o.visible_pixels > 0]
        emb = None
        plane = fit_support_plane(f.depth, f.K)                   # as the node
        for o in eval_objects(f):
            gt = f.instance == o.id
            masks = {"true mask": gt}
            m = item.cache.get("text", {}).get(o.id)
            if m is None and "text" not in item.cache and any(k == "colour shape" for k, _ in phrase_forms(o, visible)):
                emb = emb or item.encode(predictor)
                phrase = f"{o.colour} {o.shape_name}"
                m = (node_mask(predictor, emb, ObjectPrompt("text", text=phrase), f.depth) if self.node
                     else predictor.predict_text([phrase], embedding=emb).masks[0])
            if m is not None:
                masks["text"] = m
            m = item.cache.get("click", {}).get(o.id)
            if m is None and "click" not in item.cache:
                emb = emb or item.encode(predictor)
                m = click_ious(predictor, emb, gt, max_clicks=1, node=self.node, depth=f.depth)[1]
            if m is not None:
                masks["click"] = m
            for k, m in masks.items():
                est = (estimate_pose(f.depth, f.K, m, erode_px=rim_px(f.height), support=plane)   # as the node
                       if m.any() else None)
                self.errors[k].append(np.inf if est is None else float(np.linalg.norm(est.position - o.position)))

    def result(self):
        out = {}
        for k, e in self.errors.items():
            e = np.asarray(e)
            out[k] = {"median_cm": 100 * float(np.median(e)) if len(e) else float("nan"),
                      # inverted_cdf: no interpolation, which would turn failures (inf) into nan
                      "p90_cm": 100 * float(np.percentile(e, 90, method="inverted_cdf")) if len(e) else float("nan"),
                      "failures": int(np.sum(~np.isfinite(e))), "n": len(e)}
        return out


def default_evaluators(score_threshold: Optional[float] = None, zoom: bool = True,
                       node: bool = True) -> List[Evaluator]:
    # Text and clicks before pose: pose reuses their masks.
    return [TextEval(node), ClickEval(zoom=zoom, node=node), *[PromptEval(k, node=node) for k in PromptEval.KINDS],
            ReferenceEval(node),
            PanopticEval(score_threshold, node), SemanticEval(), PoseEval(node)]


def run(predictor: SeemPredictor, items: Iterable, evaluators: Sequence[Evaluator],
        progress: Optional[Callable[[int, Item], None]] = None) -> Dict[str, dict]:
    """Every evaluator on every scene (each scene encoded once); {name: result}. items: Items
    (make_items) or bare rendered Frames (then the reference row, which needs the scene, is
    skipped, and the index seeds the random prompt choices)."""
    for i, item in enumerate(items):
        if not isinstance(item, Item):
            item = Item(i, None, item)
        for ev in evaluators:
            t = time.perf_counter()
            ev.add(predictor, item)
            ev.seconds += time.perf_counter() - t
        item.embedding, item.cache = None, {}      # free the features once a scene is done
        if progress:
            progress(i, item)
    return {ev.name: ev.result() for ev in evaluators}


# Importable one-liners: frames are Items (make_items) or bare rendered Frames.
def evaluate_text(predictor, frames, node: bool = True) -> dict:
    return run(predictor, frames, [TextEval(node)])["text"]


def evaluate_clicks(predictor, frames, max_clicks: int = MAX_CLICKS, node: bool = True) -> dict:
    return run(predictor, frames, [ClickEval(max_clicks, node=node)])["clicks"]


def evaluate_prompt(predictor, frames, kind: str, node: bool = True) -> dict:
    return run(predictor, frames, [PromptEval(kind, node=node)])[kind]


def evaluate_reference(predictor, frames) -> dict:
    return run(predictor, frames, [ReferenceEval()])["reference"]


def evaluate_panoptic(predictor, frames, score_threshold: Optional[float] = None) -> dict:
    return run(predictor, frames, [PanopticEval(score_threshold)])["panoptic"]


def evaluate_semantic(predictor, frames) -> dict:
    return run(predictor, frames, [SemanticEval()])["semantic"]


def evaluate_pose(predictor, frames, node: bool = True) -> dict:
    return run(predictor, frames, [PoseEval(node)])["pose"]


# ============================================================================ table
TARGETS = {("text", "mIoU"): (">=", 0.85), ("clicks", "NoC@85"): ("<=", 2.0), ("clicks", "NoC@90"): ("<=", 3.0),
           ("panoptic", "PQ"): (">=", 0.70), ("pose (text mask)", "median error (cm)"): ("<=", 1.0),
           ("pose (1-click mask)", "median error (cm)"): ("<=", 1.0)}


def table_rows(res: Dict[str, dict]) -> List[Tuple[str, str, float, str, str]]:
    """(prompt, metric, value, n, note) for every result present."""
    rows = []
    if "text" in res:
        r = res["text"]
        forms = ", ".join(f"{k} {v['miou']:.2f} (n={v['n']})" for k, v in r["forms"].items())
        rows += [("text", "mIoU", r["miou"], r["n"], forms), ("text", "acc@0.5", r["acc50"], r["n"], "")]
    if "clicks" in res:
        r = res["clicks"]
        how = ("; as the node" if r.get("node") else "; model only") + (", corrective clicks zoomed" if r.get("zoom") else "")
        rows += [("clicks", "NoC@85", r["noc85"], r["n"], f"not reached in {MAX_CLICKS}: {100 * r['fail85']:.0f}%{how}"),
                 ("clicks", "NoC@90", r["noc90"], r["n"], f"not reached in {MAX_CLICKS}: {100 * r['fail90']:.0f}%"),
                 ("clicks", "1-click mIoU", r["miou1"], r["n"], "")]
    for k in PromptEval.KINDS:
        if k in res:
            r = res[k]
            note = f"prompt mask's own mIoU {r['input_miou']:.2f}" if "input_miou" in r else ""
            rows.append((k, "mIoU", r["miou"], r["n"], note))
    if "reference" in res:
        rows.append(("reference image", "mIoU", res["reference"]["miou"], res["reference"]["n"], "other view, 15-30 deg orbit"))
    if "panoptic" in res:
        r = res["panoptic"]
        rows.append(("panoptic", "PQ", r["pq"], sum(v["tp"] + v["fn"] for v in r["classes"].values()),
                     f"SQ {r['sq']:.2f}, RQ {r['rq']:.2f}, {len(r['classes'])} classes"))
    if "semantic" in res:
        rows.append(("semantic", "mIoU", res["semantic"]["miou"], len(res["semantic"]["classes"]), "classes; walls/floor unlabeled"))
    if "pose" in res:
        for k, label in (("text", "pose (text mask)"), ("click", "pose (1-click mask)"), ("true mask", "pose (true mask)")):
            r = res["pose"][k]
            if r["n"]:
                rows.append((label, "median error (cm)", r["median_cm"], r["n"],
                             f"p90 {r['p90_cm']:.2f} cm, {r['failures']} failed"))
    return rows


def format_table(res: Dict[str, dict], markdown: bool = False) -> str:
    head = ("prompt", "metric", "value", "target", "pass", "n", "notes")
    lines = []
    for prompt, metric, v, n, note in table_rows(res):
        tgt = TARGETS.get((prompt, metric))
        if tgt is None:
            t, ok = "", ""
        else:
            op, x = tgt
            t = f"{op} {x:g}"
            ok = "pass" if (v >= x if op == ">=" else v <= x) else "FAIL"
        lines.append((prompt, metric, f"{v:.2f}", t, ok, str(n), note))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] + ["---"] * 2 + ["---:", "---"]) + "|"]
        out += ["| " + " | ".join(l) + " |" for l in lines]
        return "\n".join(out)
    w = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w[i]) if i != 2 else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
    return "\n".join([fmt(head), fmt(tuple("-" * x for x in w))] + [fmt(l) for l in lines])


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f"{torch.cuda.get_device_name()}; " if torch.cuda.is_available() else ""
    return (f"{gpu}{cpu or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average {load:.1f} at start")


def load_predictor(checkpoint, device: str = "cpu", short_side: Optional[int] = None) -> SeemPredictor:
    from ..model.seem import SeemModel
    return SeemPredictor(SeemModel.from_checkpoint(checkpoint), device=device, vocabulary=VOCABULARY,
                         short_side=short_side)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seed-start", type=int, default=SEED_START, help=f"first held-out seed (< {TRAIN_SEED_BASE})")
    ap.add_argument("--score-threshold", type=float, default=None,
                    help="panoptic confidence threshold (default: the checkpoint's)")
    ap.add_argument("--short-side", type=int, default=None,
                    help="model input short side in pixels (default: the checkpoint's, as the node)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (README)")
    ap.add_argument("--no-zoom", action="store_true",
                    help="corrective clicks on the whole image (SEEM's way), not on a crop (the node's)")
    ap.add_argument("--model-only", action="store_true",
                    help="the model's masks alone, not as the node publishes them (its tracker keeps "
                         "only the parts of a mask that touch the prompt; its panoptic segments only "
                         "their largest part)")
    a = ap.parse_args(argv)
    if a.seed_start < 0 or a.seed_start + a.scenes > TRAIN_SEED_BASE:
        ap.error(f"seeds must lie in [0, {TRAIN_SEED_BASE}): those above are training data")
    dev = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    predictor = load_predictor(a.checkpoint, dev, a.short_side)
    evaluators = default_evaluators(a.score_threshold, zoom=not a.no_zoom, node=not a.model_only)
    host = machine()
    t0 = time.time()

    def progress(i, item):
        el = time.time() - t0
        print(f"\rscene {i + 1}/{a.scenes}  {el / 60:.1f} min, eta {el / (i + 1) * (a.scenes - i - 1) / 60:.1f} min",
              end="", file=sys.stderr, flush=True)

    seeds = range(a.seed_start, a.seed_start + a.scenes)
    res = run(predictor, make_items(seeds, a.width, a.height), evaluators, progress)
    minutes = (time.time() - t0) / 60
    print(file=sys.stderr)
    print(f"checkpoint {a.checkpoint}; {a.scenes} held-out scenes (seeds {seeds[0]}..{seeds[-1]}), "
          f"{a.width}x{a.height}, model input short side {predictor.short_side}; objects with >= {min_pixels_at(a.width, a.height)} visible pixels\n")
    print(format_table(res, a.markdown))
    print(f"\n{minutes:.1f} min on {dev}: {host}")
    print("seconds per row group: " + ", ".join(f"{ev.name} {ev.seconds:.0f}" for ev in evaluators))
    return 0


if __name__ == "__main__":
    sys.exit(main())
