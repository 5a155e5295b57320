"""One frame in, everything the node publishes out, without ROS.

    frame (RGB, optional depth and K) + prompts -> predictor (one encode) -> tracker (one batched
    decode for every object) -> [panoptic of the vocabulary] -> geometry (poses) -> FrameResult

The node converts messages to these arrays and the result back to messages; everything else is
here, so it can be tested and benchmarked without a robot. Bad prompts never raise out of
`process`: each becomes an entry of `FrameResult.errors` and the frame goes on."""
from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np

from .geometry.plane import fit_support_plane
from .geometry.pose import POSE_RIM_PX, estimate_pose, mask_box, rim_px
from .inference.predictor import ImageEmbedding, SeemPredictor
from .inference.prompts import PromptError, VisualPrompt
from .tracking import CameraView, ObjectPrompt, ObjectTracker, Track

MODE_ADD, MODE_REFINE, MODE_REPLACE, MODE_REMOVE = 0, 1, 2, 3
MODES = ("add", "refine", "replace", "remove")
MAX_TEXT_CHARS = 1000          # a command, not a document: longer texts are refused, not truncated
MAX_PHRASES = 20
PANOPTIC_ID_BASE = 50_000      # panoptic segments get ids above tracked objects' (uint16 image)
FIT = object()                 # Perception.locate: fit the support plane there
NO_REFERENCE_REFINE = ("a reference image cannot refine an object (its clicks are on another image): "
                       "use mode replace, or refine with clicks on the camera image")


@dataclass
class PromptRequest:
    """One prompt as the node received it, in pixels of the image it refers to."""
    mode: int = MODE_ADD
    target_id: int = 0
    text: str = ""
    points: Optional[np.ndarray] = None        # [K, 2] x, y
    point_labels: Optional[np.ndarray] = None  # [K] 1 positive, 0 negative
    boxes: Optional[np.ndarray] = None         # [M, 4]
    scribbles: List[np.ndarray] = field(default_factory=list)
    polygons: List[np.ndarray] = field(default_factory=list)
    negative_scribbles: List[np.ndarray] = field(default_factory=list)
    mask: Optional[np.ndarray] = None
    negative_mask: Optional[np.ndarray] = None
    label: str = ""
    stamp: Optional[float] = None              # seconds; None = the newest frame
    source: str = "prompt"                     # where it came from, for messages and `prompt`
    reference: Optional[np.ndarray] = None     # [h, w, 3] uint8: the visual prompt is drawn on this
    #                                            image, and the object is looked for by its look there

    def has_visual(self) -> bool:
        return any(x is not None and len(x) for x in (self.points, self.boxes)) or bool(
            self.scribbles or self.polygons or self.negative_scribbles) or self.mask is not None

    def kind(self) -> str:
        if self.reference is not None:
            return "reference"
        if self.mask is not None:
            return "mask"
        if self.scribbles or self.polygons:
            return "scribble"
        if self.boxes is not None and len(self.boxes):
            return "box"
        return "point"


@dataclass
class ObjectResult:
    id: int
    label: str
    label_id: int                 # index into the vocabulary, -1 = none
    score: float
    label_score: float
    prompt: str
    tracked: bool
    mask: Optional[np.ndarray]    # [H, W] bool when tracked
    box: Tuple[int, int, int, int] = (0, 0, 0, 0)   # x_min, y_min, x_max (excl.), y_max (excl.)
    area: int = 0
    last_seen: float = 0.0
    pose: Optional[object] = None  # geometry.pose.ObjectPose
    instance_value: int = 0


class FrameResult:
    """One frame's objects, and its label images: instances ([H, W] uint16 object id, 0 =
    background), semantic ([H, W] uint8 class index + 1, 0 = unlabeled), confidence ([H, W]
    uint8 0..255). Those are painted from the objects' masks when first read: a node publishes
    ~/objects before them, and builds none while nobody subscribes."""

    def __init__(self, stamp: float, size: Tuple[int, int], objects: List[ObjectResult], errors: List[str],
                 timings: dict, labels: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None):
        self.stamp, self.size, self.objects, self.errors, self.timings = stamp, size, objects, errors, timings
        self._labels = labels
        self.view: Optional[CameraView] = None    # the camera in a fixed frame, when the frame had one

    @property
    def instances(self) -> np.ndarray:
        return self.labels()[0]

    @property
    def semantic(self) -> np.ndarray:
        return self.labels()[1]

    @property
    def confidence(self) -> np.ndarray:
        return self.labels()[2]

    def labels(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._labels is None:
            self._labels = paint_labels(self.objects, self.size)
        return self._labels


def paint_labels(objects: Sequence[ObjectResult], size: Tuple[int, int]):
    """(instances, semantic, confidence) images of the tracked objects' masks, each drawn with its
    instance_value; lowest score first, so that a better mask wins any pixel two claim."""
    instances = np.zeros(size, np.uint16)
    semantic = np.zeros(size, np.uint8)
    confidence = np.zeros(size, np.uint8)
    for o in sorted((o for o in objects if o.tracked), key=lambda o: o.score):
        instances[o.mask] = o.instance_value
        if o.label_id >= 0:
            semantic[o.mask] = o.label_id + 1
            confidence[o.mask] = int(round(255 * min(max(o.score, 0.0), 1.0)))
    return instances, semantic, confidence


@dataclass
class FrameInput:
    rgb: np.ndarray                        # [H, W, 3] uint8
    stamp: float
    depth: Optional[object] = None         # [H, W] float32 metres (NaN = no reading) or a DepthImage
    # (segment() also takes a function returning either, called only if a mask needs it)
    K: Optional[np.ndarray] = None         # [3, 3] of this image's size
    T_fixed_cam: Optional[np.ndarray] = None   # [4, 4] the camera in a fixed frame (tf), when known
    fixed_frame: str = ""                  # that frame's name


def split_phrases(text: str) -> List[str]:
    """"the red mug and the blue cube, a sphere" -> three phrases (commas, ';' and the word 'and')."""
    parts = re.split(r"\s*(?:,|;|\band\b)\s*", text.strip(), flags=re.IGNORECASE)
    return [p.strip() for p in parts if p and p.strip()]


def validate_text(text: str) -> List[str]:
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text prompt of {len(text)} characters refused (at most {MAX_TEXT_CHARS})")
    phrases = split_phrases(text)
    if not phrases:
        raise ValueError("empty text prompt")
    if len(phrases) > MAX_PHRASES:
        raise ValueError(f"{len(phrases)} phrases in one text prompt (at most {MAX_PHRASES})")
    return phrases


def _own_threshold(v: Optional[float]) -> Optional[float]:
    """None (or negative, the node parameter's way of saying it): the checkpoint's threshold."""
    return None if v is None or v < 0 else float(v)


class Perception:
    """Keeps the model, the objects and the last few frames' features (for prompts stamped on an
    earlier frame). Not thread-safe: the node calls it from its one worker thread."""

    def __init__(self, predictor: SeemPredictor, *, mode: str = "prompted", max_objects: int = 20,
                 min_score: float = 0.5, panoptic_threshold: Optional[float] = None, lost_timeout_s: float = 10.0,
                 history: int = 4, min_pose_points: int = 20, pose_rim_px: float = POSE_RIM_PX,
                 zoom_refine: bool = True, support_plane: bool = True, track_tokens: int = 512,
                 honour_clicks: bool = True):
        self.predictor = predictor
        self.tracker = ObjectTracker(predictor, max_objects=max_objects, min_score=min_score,
                                     lost_timeout_s=lost_timeout_s, zoom=zoom_refine, token_budget=track_tokens,
                                     honour_clicks=honour_clicks)
        self.mode = mode
        self.panoptic_threshold = _own_threshold(panoptic_threshold)
        self.min_pose_points = min_pose_points
        self.pose_rim_px = pose_rim_px          # see geometry.pose.POSE_RIM_PX
        self.support_plane = support_plane      # poses in the frame of the table / floor (geometry.plane)
        self.plane = None                       # the last frame's support plane
        self.history: Deque[Tuple[float, ImageEmbedding]] = deque(maxlen=max(1, history))
        self._panoptic_prev: List[Tuple[int, str, np.ndarray]] = []
        self._next_panoptic = PANOPTIC_ID_BASE
        self._last_seen: dict = {}

    # ------------------------------------------------------------------ settings
    @property
    def vocabulary(self) -> List[str]:
        return self.predictor.vocabulary

    def set_vocabulary(self, names: Sequence[str]) -> None:
        self.predictor.set_vocabulary(names)

    def configure(self, **kw) -> None:
        """Runtime changes (the node's parameters): mode, thresholds, maximum objects, timeout,
        zoomed refinement, enforced clicks, tracking prompt points."""
        if "mode" in kw:
            if kw["mode"] not in ("prompted", "panoptic"):
                raise ValueError(f"mode must be 'prompted' or 'panoptic', not {kw['mode']!r}")
            self.mode = kw["mode"]
        if "panoptic_threshold" in kw:
            self.panoptic_threshold = _own_threshold(kw["panoptic_threshold"])
        if "zoom_refine" in kw:
            self.tracker.zoom = bool(kw["zoom_refine"])
        if "honour_clicks" in kw:
            self.tracker.honour_clicks = bool(kw["honour_clicks"])
        if "track_tokens" in kw:
            if int(kw["track_tokens"]) < 8:
                raise ValueError(f"track_tokens must be at least 8, not {kw['track_tokens']}")
            self.tracker.token_budget = int(kw["track_tokens"])
        for k in ("max_objects", "min_score", "lost_timeout_s"):
            if k in kw:
                setattr(self.tracker, k, type(getattr(self.tracker, k))(kw[k]))

    # ------------------------------------------------------------------ objects
    def remove(self, obj_id: int) -> bool:
        return self.tracker.remove(obj_id)

    def clear(self) -> None:
        self.tracker.clear()
        self._panoptic_prev = []

    # ------------------------------------------------------------------ one frame
    def process(self, frame: FrameInput, prompts: Sequence[PromptRequest] = ()) -> FrameResult:
        """segment, then locate with the frame's depth and K."""
        res = self.segment(frame, prompts)
        self.locate(res, frame.depth, frame.K)
        return res

    def segment(self, frame: FrameInput, prompts: Sequence[PromptRequest] = ()) -> FrameResult:
        """Prompts applied, objects tracked (label images painted now only in panoptic mode, where
        the segments fill what the objects leave); no poses. frame.depth, when given, cuts new
        masks at depth steps (ObjectTracker.set_depth); it may be a function, called only when a
        mask needs it, so that a node can run this while the frame's depth is still on its way."""
        t0 = time.perf_counter()
        emb = self.predictor.set_image(frame.rgb)
        self.history.append((frame.stamp, emb))
        t1 = time.perf_counter()
        errors = []
        try:
            self.tracker.set_depth(emb, frame.depth)
        except ValueError as e:             # a depth of another size: masks without it
            errors.append(f"depth: {e}")
            self.tracker.set_depth(emb, None)
        for p in prompts:
            try:
                self.apply(p, frame.stamp, emb)
            except (ValueError, KeyError, PromptError, RuntimeError) as e:
                errors.append(f"{p.source}: {e.args[0] if e.args else e}")
        view = None
        if frame.K is not None and frame.T_fixed_cam is not None:
            view = CameraView(np.asarray(frame.K, float), np.asarray(frame.T_fixed_cam, float), frame.fixed_frame)
        tracks = self.tracker.update(emb, frame.stamp, view)
        t2 = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        objects = [self._object(t, frame.stamp) for t in tracks]
        for o in objects:
            o.instance_value = o.id if o.tracked and o.id < 65535 else 0
        labels = None
        if self.mode == "panoptic" and self.vocabulary:      # segments where no object is
            labels = paint_labels(objects, (h, w))
            objects += self._panoptic(emb, *labels, frame.stamp)
        t3 = time.perf_counter()
        ms = lambda a, b: 1000 * (b - a)
        res = FrameResult(frame.stamp, (h, w), objects, errors,
                          {"encode": ms(t0, t1), "decode": ms(t1, t2), "panoptic": ms(t2, t3),
                           "model": ms(t0, t3), "pose": 0.0, "total": ms(t0, t3)}, labels)
        res.view = view
        return res

    def needs_support(self, n_prompts: int) -> bool:
        """Whether the next frame's poses will want the support plane (before segmenting it)."""
        return self.support_plane and (n_prompts > 0 or self.mode == "panoptic" or len(self.tracker) > 0)

    def fit_support(self, depth, K):
        """This frame's support plane (geometry.plane; the last one is the search's prior), or None
        when it is off or depth or K is missing. It needs depth alone, so a node can fit it while
        the model runs; pass it on to `locate`."""
        if not self.support_plane or depth is None or K is None:
            return None
        self.plane = fit_support_plane(depth, K, prior=self.plane)
        return self.plane

    def locate(self, res: FrameResult, depth, K, plane=FIT) -> None:
        """Poses of res's tracked objects from depth ([H,W] metres or a DepthImage) and K; no-op
        when either is missing. `plane`: what `fit_support` gave for this frame's depth (None
        included); by default it is fitted here, and only when there is an object to locate."""
        t0 = time.perf_counter()
        if depth is not None and K is not None:
            objects = [o for o in res.objects if o.tracked and o.mask is not None]
            if objects and plane is FIT:
                plane = self.fit_support(depth, K)
            for o in objects:
                o.pose = estimate_pose(depth, K, o.mask, min_points=self.min_pose_points, box=o.box,
                                       erode_px=rim_px(o.mask.shape[0], self.pose_rim_px),
                                       support=plane)
            if res.view is not None:
                # Where each object is in the fixed frame: a lost one is looked for there later.
                self.tracker.place({o.id: o.pose.centroid for o in objects if o.pose is not None and o.prompt != "panoptic"},
                                   res.view, res.stamp)
        res.timings["pose"] = 1000 * (time.perf_counter() - t0)
        res.timings["total"] += res.timings["pose"]

    def apply(self, p: PromptRequest, stamp: float, emb: ImageEmbedding) -> None:
        """One prompt on the frame it refers to (the newest, or the one nearest its stamp)."""
        if p.mode == MODE_REMOVE:
            if not self.tracker.remove(int(p.target_id)):
                raise KeyError(f"no object with id {p.target_id}")
            return
        if p.stamp is not None and len(self.history) > 1:
            stamp, emb = min(self.history, key=lambda se: abs(se[0] - p.stamp))
        if p.mode == MODE_ADD:
            if p.target_id:
                raise ValueError("mode add makes a new object: target_id must be 0")
            for op in self._object_prompts(p, emb):
                self.tracker.add(op, emb, stamp)
        elif p.mode == MODE_REFINE:
            if p.reference is not None:
                raise ValueError(NO_REFERENCE_REFINE)
            if not p.has_visual():
                raise ValueError("refine needs clicks, boxes, scribbles or a mask")
            self.tracker.refine(int(p.target_id), self._visual(p, emb), emb, stamp)
        elif p.mode == MODE_REPLACE:
            ops = self._object_prompts(p, emb)
            if len(ops) != 1:
                raise ValueError("replace takes one object's prompt (one phrase or one visual prompt)")
            self.tracker.replace(int(p.target_id), ops[0], emb, stamp)
        else:
            raise ValueError(f"unknown mode {p.mode} (0 add, 1 refine, 2 replace, 3 remove)")

    def _object_prompts(self, p: PromptRequest, emb: ImageEmbedding) -> List[ObjectPrompt]:
        # Text alongside clicks (or a reference image) names the object: its label, unless the
        # prompt gives one.
        name = p.label.strip() or p.text.strip()
        if p.reference is not None:
            return [self._reference_prompt(p, name)]
        if p.has_visual():
            return [ObjectPrompt(kind=p.kind(), text=p.text.strip(), visual=self._visual(p, emb), label=name)]
        if p.text.strip():
            phrases = validate_text(p.text)
            if len(phrases) == 1:
                return [ObjectPrompt(kind="text", text=phrases[0], label=p.label.strip())]
            if p.label.strip():
                raise ValueError(f"one label for {len(phrases)} phrases: give each object its own prompt")
            return [ObjectPrompt(kind="text", text=ph) for ph in phrases]
        raise ValueError("empty prompt: no text, clicks, boxes, scribbles or mask")

    def _reference_prompt(self, p: PromptRequest, name: str) -> ObjectPrompt:
        """The object as marked on a reference image: that image is encoded (one more encoding,
        once per prompt) and the mark's prompt tokens taken there; the tracker then looks for
        them in the camera's frames, as SEEM's referring across images does."""
        ref = p.reference
        if not isinstance(ref, np.ndarray) or ref.dtype != np.uint8 or ref.ndim != 3 or ref.shape[2] != 3 \
                or min(ref.shape[:2]) < 1:
            raise ValueError("reference image must be [h, w, 3] uint8 RGB")
        if not p.has_visual():
            raise ValueError("a reference image needs the object marked on it (clicks, boxes, scribbles or a mask)")
        ref_emb = self.predictor.encode(ref)
        tokens = self.predictor.reference_tokens([self._visual(p, ref_emb)], ref_emb)
        return ObjectPrompt(kind="reference", text=p.text.strip(), tokens=tokens, label=name)

    @staticmethod
    def _visual(p: PromptRequest, emb: ImageEmbedding) -> VisualPrompt:
        h, w = emb.orig_size
        if p.points is not None and len(p.points):
            pts = np.asarray(p.points, np.float64).reshape(-1, 2)
            if not np.isfinite(pts).all():
                raise ValueError("click with a NaN or infinite coordinate")
            out = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
            if out.any():
                x, y = pts[np.argmax(out)]
                raise ValueError(f"click ({x:.1f}, {y:.1f}) is outside the {w}x{h} image")
        for m, what in ((p.mask, "mask"), (p.negative_mask, "negative mask")):
            if m is not None and m.shape != (h, w):
                p_resized = _resize_nearest(m, (h, w))
                if what == "mask":
                    p.mask = p_resized
                else:
                    p.negative_mask = p_resized
        if p.mask is not None and not p.mask.any():
            raise ValueError("mask prompt is empty (no nonzero pixel)")
        return VisualPrompt(points=p.points, labels=p.point_labels, boxes=p.boxes, scribbles=list(p.scribbles),
                            polygons=list(p.polygons), mask=p.mask, negative_mask=p.negative_mask,
                            negative_scribbles=list(p.negative_scribbles))

    # ------------------------------------------------------------------ outputs
    def _vocab_id(self, label: str) -> int:
        """Vocabulary index of a label or phrase ("pick up the red mug" -> "mug"), -1 if none."""
        vocab = self.vocabulary
        if label in vocab:
            return vocab.index(label)
        words = f" {label.lower()} "
        best = -1
        for i, name in enumerate(vocab):
            if f" {name.lower()} " in words and (best < 0 or len(name) > len(vocab[best])):
                best = i
        return best

    def _object(self, t: Track, stamp: float) -> ObjectResult:
        tracked = t.state == "tracked" and t.mask is not None and bool(t.mask.any())
        if tracked:
            self._last_seen[t.id] = stamp
        o = ObjectResult(t.id, t.label, self._vocab_id(t.label), float(t.score), float(t.score),
                         f"{t.prompt_kind}: {t.prompt_text}" if t.prompt_text else t.prompt_kind,
                         tracked, t.mask if tracked else None, last_seen=self._last_seen.get(t.id, stamp))
        if tracked:
            o.box, o.area = mask_box(t.mask), np.count_nonzero(t.mask)
        return o

    def _panoptic(self, emb, instances, semantic, confidence, stamp) -> List[ObjectResult]:
        """Segments of the vocabulary where no prompted object is; ids kept across frames by
        overlap with the previous frame's segment of the same class."""
        sem, conf = self.predictor.semantic(emb)
        free = instances == 0
        semantic[free] = (sem[free] + 1).astype(np.uint8)
        confidence[free] = np.clip(np.round(conf[free] * 255), 0, 255).astype(np.uint8)
        pan = self.predictor.panoptic(emb, score_threshold=self.panoptic_threshold, largest_part=True)
        out, cur = [], []
        for k, sid in enumerate(pan.ids):
            m = (pan.segments == sid) & free
            if not m.any():
                continue
            oid = self._match_panoptic(pan.labels[k], m)
            cur.append((oid, pan.labels[k], m))
            o = ObjectResult(oid, pan.labels[k], int(pan.label_ids[k]), float(pan.scores[k]), float(pan.scores[k]),
                             "panoptic", True, m, mask_box(m), np.count_nonzero(m), stamp)
            o.instance_value = oid if oid < 65535 else 0
            instances[m] = o.instance_value
            out.append(o)
        self._panoptic_prev = cur
        return out

    def _match_panoptic(self, label: str, m: np.ndarray) -> int:
        best, best_iou = None, 0.3
        for oid, lab, pm in self._panoptic_prev:
            if lab != label:
                continue
            inter = np.count_nonzero(np.logical_and(m, pm))
            iou = inter / max(np.count_nonzero(np.logical_or(m, pm)), 1)
            if iou > best_iou:
                best, best_iou = oid, iou
        if best is not None:
            self._panoptic_prev = [x for x in self._panoptic_prev if x[0] != best]
            return best
        self._next_panoptic += 1
        if self._next_panoptic >= 65535:
            self._next_panoptic = PANOPTIC_ID_BASE + 1
        return self._next_panoptic


def _resize_nearest(m: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    ys = (np.arange(h) * m.shape[0] / h).astype(int)
    xs = (np.arange(w) * m.shape[1] / w).astype(int)
    return np.asarray(m)[ys[:, None], xs[None, :]]
