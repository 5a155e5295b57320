"""Object memory across frames: prompt an object once, keep it (same id) on every later frame.

SEEM v1 has no video path; this tracker builds one on SEEM's own machinery. Per frame the caller
encodes the image once (predictor.set_image); update() then runs ONE decoder pass for all objects:

- propagation: each tracked object is prompted by its mask as spatial tokens taken on the image
  where that mask was found: the first (user-prompted) frame and the previous frame, joined into
  one prompt; the previous mask is also the spatial memory (+-4 logits pooled to H/4, as the
  embedded model is trained). Measured: tokens re-sampled on the new frame at the old mask's
  place (the training's tracking recipe) segment worse, since they mix in the background the
  object moved away from;
- clean-up: only the connected parts of a mask near the previous mask (or under the user's
  prompt) are kept; the model sometimes covers a second, similar-looking object too;
- lost: a mask that is too small, unsure, grew suspiciously or no longer looks like the object
  (appearance: mean pixel feature under the mask next to its class embedding), or, with depth
  and the camera's pose, grew and moved in depth (spread onto another object), makes the object
  "lost", so an object that left the view or is hidden is not segmented somewhere else;
- found: lost objects are searched for in the same pass (their first + last mask tokens, text
  objects also by their phrase); the regions found are assigned jointly to the lost objects by
  appearance, gated by where each could be now (last box moved on at its last image velocity,
  a reach growing with time lost; with the camera's pose in a fixed frame, where its last 3D
  position projects now) and discounted by the distance from there (same-coloured objects tie
  on appearance; with depth, a region right beside a tracked object is left to it), ambiguous
  regions are left for a later frame; a found object keeps its old id;
- dropped: lost for longer than lost_timeout_s;
- output masks never overlap: a contested pixel goes to the object with the highest
  score * probability there, and masks of objects prompted on this very image win.

No ROS here; the node calls this class."""
from __future__ import annotations

import dataclasses
import functools
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..geometry.camera import backproject
from ..geometry.depth import DepthImage
from ..geometry.pose import mask_box, surface_parts
from ..inference.predictor import ImageEmbedding, SeemPredictor, Segmentation, Zoom
from ..inference.prompts import PromptError, VisualPrompt, rasterize, resize_mask
from ..model.decoder import GroundingTokens, SpatialTokens

KINDS = ("text", "point", "box", "scribble", "mask", "reference")
TRACKED, LOST = "tracked", "lost"
MEMORY_LOGIT = 4.0          # the training's memory encoding: mask * 8 - 4
PARTIAL_VIEW = 0.5          # a view showing less than this of the largest seen is a partial one (place())
PROPAGATE = ("first+last", "first", "last", "mask")


@dataclass
class ObjectPrompt:
    """What creates or refines an object."""
    kind: str                                   # "text" | "point" | "box" | "scribble" | "mask" | "reference"
    text: str = ""                              # the phrase, for kind "text" (the label unless `label` is set)
    visual: Optional[VisualPrompt] = None       # for point/box/scribble/mask
    tokens: Optional[SpatialTokens] = None      # for "reference" (predictor.reference_tokens on another image)
    label: str = ""                             # the object's name; empty: the phrase (text) or the model's label


@dataclass
class Track:
    id: int                                     # stable, starts at 1, never reused in a tracker's life
    label: str                                  # phrase for text prompts, else vocabulary label
    score: float
    state: str                                  # "tracked" | "lost"
    mask: Optional[np.ndarray]                  # [H, W] bool when tracked, None when lost
    prompt_kind: str
    prompt_text: str
    age_frames: int                             # frames since created
    lost_since: Optional[float]                 # stamp when it was lost


@dataclass
class _Object:
    id: int
    prompt: ObjectPrompt
    label: str
    created: float
    state: str = TRACKED
    mask: Optional[np.ndarray] = None           # last accepted mask, image size
    logits: Optional[Tensor] = None             # its low-res logits [h, w] (refinement memory)
    score: float = 0.0
    area: int = 0
    own_area: int = 0                           # its last mask before other objects took their pixels (>= area)
    usual_area: float = 0.0                     # own_area's running mean (halved weight each sighting)
    whole_size: float = 0.0                     # its largest visible area at 1 m (pixels * depth^2) so far
    anchor: Optional[Tensor] = None             # [C] appearance of the prompted mask (unit vector)
    recent: Optional[Tensor] = None             # [C] running appearance while confidently tracked
    colour: Optional[Tensor] = None             # [3] running mean RGB (0..1) under its mask
    ref_tokens: Optional[SpatialTokens] = None  # its first mask as a prompt, on the image it was prompted on
    last_tokens: Optional[SpatialTokens] = None  # its last accepted mask as a prompt, on that image
    text_tokens: Optional[Tensor] = None        # [T, C] grounding tokens of the phrase
    text_emb: Optional[Tensor] = None           # [C] phrase class embedding
    box: Optional[np.ndarray] = None            # x0, y0, x1, y1 of the last accepted mask
    box_stamp: float = 0.0                      # when it was seen there
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))   # of the box centre, pixels/s
    where: Optional["_Placed"] = None           # its last 3D position in the fixed frame (place())
    surface: Optional[Tuple[np.ndarray, str]] = None   # its last mask's depth median, fixed frame (max_jump)
    age_frames: int = 0
    lost_since: Optional[float] = None
    seen: Optional[weakref.ref] = None          # embedding of the last segmentation
    round_prompt: Optional[VisualPrompt] = None  # accumulated corrective clicks on `seen`
    zoom: Optional[Zoom] = None                 # the crop its corrective clicks were answered on

    def on(self, emb: ImageEmbedding) -> bool:
        return self.seen is not None and self.seen() is emb


@dataclass(frozen=True)
class CameraView:
    """The camera of one frame: intrinsics at image size and its pose in a fixed frame (ROS:
    the transform from the image's optical frame to e.g. odom or map, from tf)."""
    K: np.ndarray                               # 3x3
    T_fixed_cam: np.ndarray                     # 4x4: optical-frame point -> fixed-frame point
    frame: str = ""                             # the fixed frame's name: positions kept in another are not used

    def to_camera(self, p: np.ndarray) -> np.ndarray:
        R, t = self.T_fixed_cam[:3, :3], self.T_fixed_cam[:3, 3]
        return R.T @ (p - t)

    def pixel(self, p_cam: np.ndarray) -> np.ndarray:
        return (self.K @ p_cam)[:2] / p_cam[2]


@dataclass
class _Placed:
    position: np.ndarray                        # [3] fixed frame
    velocity: np.ndarray                        # [3] fixed frame, m/s (smoothed)
    stamp: float
    box: np.ndarray                             # its mask's box then
    pixel: np.ndarray                           # where the position projected then
    depth: float                                # its optical-frame z then
    frame: str                                  # the fixed frame it is in

    def path(self, stamp: float, horizon: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
        """Where it was placed, and where its velocity takes it by `stamp` (at most `horizon`
        seconds on): a lost object is looked for between the two."""
        return self.position, self.position + self.velocity * min(max(stamp - self.stamp, 0.0), horizon)


@dataclass
class _Candidate:
    owner: int                                  # object id
    source: str                                 # "propagate" | "reference" | "text" | "objects"
    logits: Tensor                              # [h, w] low-res
    embed: Tensor                               # [C] class embedding (unnormalised)
    mask: np.ndarray                            # [H, W] image size (parts kept, once decided)
    prob: np.ndarray                            # [H, W] foreground probability (float32)
    appearance: Optional[Tensor] = None         # unit appearance of the mask (see _pooled)
    colour: Optional[Tensor] = None             # [3] its mean RGB
    score: float = 0.0
    area: int = 0
    similarity: float = 0.0
    surface: Optional[Tuple[np.ndarray, str]] = None    # depth median of `of` (see _surface_of)
    of: Optional[np.ndarray] = None


# max_jump applies to propagated masks this many times the object's last area (see _decide).
JUMP_GROWTH = 1.5
# Two masks on the same pixels: the object whose mask's depth median moved less than this
# fraction of the other's move keeps them (see _held_by_depth).
HELD_RATIO = 0.5
# near_tracked: a region must also be this many times nearer to the tracked object than to the lost one.
BESIDE_RATIO = 0.5
# A lost object projected wholly outside the image comes back only across the border, unless it
# is projected less than this fraction of the image diagonal outside: its position, from the last
# whole view, is a few pixels off. Without it a cone 1 pixel "outside" could not take its own
# region inside, and a mug 22 cm away took it (seed 412); 0.07 let a mug known to be well out of
# view take a cylinder's region again (seed 25). Switches: unseen 368-463 190 -> 168, tuning sets
# 168 -> 177 (text only), fresh 512-559 80 -> 80 (README, tracking section).
OUTSIDE_SLACK = 0.02


class ObjectTracker:
    """Segments every added object on each new frame with one decoder pass (see module docstring).

    min_score: mean foreground probability inside a mask below which it is not trusted.
    min_similarity: cosine between a propagated mask's appearance and the object's below which
        the object is considered gone (lost). reacquire_similarity / reacquire_score: the stricter
        bar a candidate must pass to re-acquire a lost object.
    min_area: fraction of the image below which a mask counts as empty (object out of view).
    lost_timeout_s: a lost object is dropped after this long.
    memory: "mask" (the previous mask as +-4 logits in the memory queries, as trained) or "none".
    appearance_momentum: update rate of the running appearance (next to the prompted one).
    propagate: "first+last" (default), "first", "last" (mask tokens of those frames) or "mask"
        (the previous mask re-sampled as a mask prompt on the new frame, the training's recipe).
    text_guide: also decode tracked text objects' phrases and take the grounding mask when it
        agrees with the propagated one and is more confident (or replaces a failed one).
    search: where lost objects are looked for: "reference" (their first mask's spatial tokens),
        "text" (the phrase, text objects only), "objects" (SEEM's generic object queries, matched
        by appearance); all decoded in the same pass as the tracked objects.
    components: keep only the connected parts of a mask that touch the prompt / previous mask
        (the model sometimes covers a second, similar-looking object too).
    max_growth: a propagated mask more than this many times the object's usual area is a leak.
        The usual area is a running mean of its own masks' areas (before other objects took their
        overlapping pixels), each sighting weighing half. Own areas rather than what was left
        (stage-8 weights): held-out J&F 0.766 -> 0.769 and 0.799 -> 0.804, identity switches
        26 -> 26 and 24 -> 20. The running mean rather than the last area: an object coming back
        whole from behind an occluder counted as a leak, and a look-alike then took its place
        and id (README, tracking section).
    reach, reach_rate: a lost object may come back only within reach + reach_rate * (seconds
        lost) image diagonals of the path from where it was last seen along its last image
        velocity (objects and cameras move continuously; it stops a look-alike elsewhere in the
        image from taking its id right after it left). 0.07 since the model runs at input 360
        (was 0.1; with colour_gate 0.15, below: identity switches on the tuning seeds 200-247 107 ->
        71, on seeds 144-191 90 -> 90, on seeds 248-259 51 -> 46; J&F within 0.002).
    reid_margin: a region that two lost objects match within this similarity of each other is
        left for a later frame (when more of it is in view), not given to either.
    edge_margin: the same for a region cut by the image border (an object coming back into
        view): its visible part's appearance is less certain, so the winner must be this far ahead.
    position_weight: in re-identification, a region's appearance similarity to a lost object
        loses this much per image diagonal of distance from where that object could be (its swept
        box): the appearance features barely tell shapes apart, so two same-coloured objects
        coming back tie on looks, and where each left decides (held-out sequences, 0 -> 2: identity
        switches 53 -> 24 on seeds 12-23 with the stage-8 weights).
    colour_gate: in re-identification a lost object whose mean colour (RGB, 0..1 a channel) is
        farther than this beyond the closest-coloured lost object's from a region's does not
        compete for it (see _reacquire). 0.15 since input 360 (was 0.2; see reach).
    zoom: corrective prompts (`refine`) are answered on a crop around the object
        (`SeemPredictor.predict_zoomed`): one more image encoding per refinement, and corrective
        clicks then do what the user asks far more often (held-out scenes, as the node: NoC@85
        4.84 -> 2.99, NoC@90 7.68 -> 4.35).
    token_budget: prompt points per decoder pass, shared equally by the objects (SEEM samples
        512 per image, shared by its prompts, as the model was trained); self-attention cost
        grows with the square of it.
    surface_jump: depth step (metres) between neighbouring pixels that separates two surfaces,
        for images given a depth (set_depth); None: depth is not used.
    honour_clicks: a click the model's mask disobeys is enforced with the model's own answer to
        that click alone (`_honour_clicks`).
    near_tracked: with depth and the camera pose, a region whose 3D position (median of its
        depth points) lies within this many metres of a tracked object's placed position, and
        less than half as far from it as from a lost object's, does not go to that lost object:
        it is a piece of the tracked one its mask missed (wrong re-acquisitions on held-out
        sequences lay 3-8 cm from an object another track held, 10-26 cm from the lost one's
        position). None: off. Chosen on seeds 144-167, 200-211 and
        248-295 (219 -> 193 identity switches), checked on 296-319 (34 -> 30).
    max_jump: with depth and the camera pose, a propagated mask at least JUMP_GROWTH times the
        object's last area whose depth points' median lies more than this many metres from the
        last mask's is cut at depth steps to its parts within max_jump of that median (the
        object is lost this frame when none is left: `_trimmed`). None: off. Chosen from the
        logs of seeds 144-155 and 248-259 (switches 45 -> 10 and 53 -> 54 there), checked on
        156-167, 200-211 and 272-343 (-1 to +1 a set, on top of near_tracked). The same medians
        decide which of two masks covering the same pixels keeps them (_held_by_depth).
    rejoin: a tracked object whose propagated mask is refused on a frame (empty, unsure, grown
        too much, cut away by the depth test) competes on that same frame, as a lost object,
        for the regions the lost objects' searches found. Without it a lost look-alike took such
        an object's region unopposed (seed 538: a red cone coming in at the border, its mask
        shrunk to 11 pixels; its region went to a lost red mug placed 20 cm away). Identity
        switches: tuning sets 144-367 177 -> 163, unseen 368-463 168 -> 156, fresh 512-559
        80 -> 92 (one sequence, 557: +12); J&F within 0.004 everywhere (README)."""

    def __init__(self, predictor: SeemPredictor, *, max_objects: int = 20, min_score: float = 0.55,
                 lost_timeout_s: float = 10.0, min_similarity: float = 0.6, reacquire_similarity: float = 0.85,
                 reacquire_score: float = 0.7, min_area: float = 0.0005, memory: str = "mask",
                 appearance_momentum: float = 0.1, search: Sequence[str] = ("reference", "text"),
                 components: bool = True, max_growth: float = 3.0, track_margin: float = 0.02,
                 text_guide: bool = False, propagate: str = "first+last", reach: float = 0.07,
                 reach_rate: float = 0.1, reid_margin: float = 0.02, edge_margin: float = 0.15,
                 position_weight: float = 2.0, colour_gate: float = 0.15,
                 token_budget: int = 512, zoom: bool = True, surface_jump: Optional[float] = 0.02,
                 honour_clicks: bool = True, near_tracked: Optional[float] = 0.05,
                 max_jump: Optional[float] = 0.05, rejoin: bool = True):
        if memory not in ("mask", "none"):
            raise ValueError(f"memory must be 'mask' or 'none', not {memory!r}")
        if propagate not in PROPAGATE:
            raise ValueError(f"propagate must be one of {PROPAGATE}, not {propagate!r}")
        if isinstance(search, str):
            search = tuple(x for x in search.split("+") if x)
        bad = set(search) - {"reference", "text", "objects"}
        if bad:
            raise ValueError(f"unknown search source(s) {sorted(bad)}")
        self.predictor = predictor
        self.max_objects = int(max_objects)
        self.min_score = float(min_score)
        self.lost_timeout_s = float(lost_timeout_s)
        self.min_similarity = float(min_similarity)
        self.reacquire_similarity = float(reacquire_similarity)
        self.reacquire_score = float(reacquire_score)
        self.min_area = float(min_area)
        self.memory = memory
        self.momentum = float(appearance_momentum)
        self.search = tuple(search)
        self.components = bool(components)
        self.max_growth = float(max_growth)
        self.track_margin = float(track_margin)
        self.text_guide = bool(text_guide)
        self.propagate = propagate
        self.reach = float(reach)
        self.reach_rate = float(reach_rate)
        self.reid_margin = float(reid_margin)
        self.position_weight = float(position_weight)
        self.edge_margin = float(edge_margin)
        self.colour_gate = float(colour_gate)
        self.token_budget = int(token_budget)
        self.zoom = bool(zoom)
        self.surface_jump = None if surface_jump is None else float(surface_jump)
        self.honour_clicks = bool(honour_clicks)
        self.near_tracked = None if near_tracked is None else float(near_tracked)
        self.max_jump = None if max_jump is None else float(max_jump)
        self.rejoin = bool(rejoin)
        self._depth: list = [None, None, True]        # [image it belongs to, depth, resolved]
        self._alone: tuple = (None, {})                # [image, {click: the model's answer to it alone}]
        self._objects: Dict[int, _Object] = {}
        self._next_id = 1
        self.last_candidates: List[_Candidate] = []   # of the last update(), for diagnostics

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._objects)

    @property
    def tracks(self) -> List[Track]:
        return [self._track(o) for o in self._objects.values()]

    def add(self, prompt: ObjectPrompt, embedding: ImageEmbedding, stamp: float) -> Track:
        """Create an object from a prompt and segment it on this image now."""
        if len(self._objects) >= self.max_objects:
            raise ValueError(f"cannot add: already tracking max_objects={self.max_objects} objects "
                             "(remove one first)")
        self._check(prompt)
        obj = _Object(self._next_id, prompt, _name(prompt), stamp)
        self._segment(obj, prompt, embedding, stamp)     # raises before the id is taken
        self._next_id += 1
        self._objects[obj.id] = obj
        self._claim(obj, embedding, stamp)
        return self._track(obj)

    def replace(self, obj_id: int, prompt: ObjectPrompt, embedding: ImageEmbedding, stamp: float) -> Track:
        """Re-prompt an existing object from scratch; it keeps its id and age."""
        old = self._get(obj_id)
        self._check(prompt)
        obj = _Object(old.id, prompt, _name(prompt), old.created, age_frames=old.age_frames)
        self._segment(obj, prompt, embedding, stamp)
        self._objects[obj_id] = obj
        self._claim(obj, embedding, stamp)
        return self._track(obj)

    @torch.inference_mode()
    def refine(self, obj_id: int, visual: VisualPrompt, embedding: ImageEmbedding, stamp: float) -> Track:
        """Corrective clicks (or any visual prompt) on an object, SEEM multi-round style: the
        object's current mask logits are the memory. Clicks accumulate while the image stays the
        same; on a new image the current mask (minus the neighbourhood of negative clicks) is the
        positive evidence, so a lone negative click still works."""
        obj = self._get(obj_id)
        if not isinstance(visual, VisualPrompt) or visual.is_empty():
            raise ValueError("refine needs a non-empty VisualPrompt")
        same = obj.on(embedding) and obj.round_prompt is not None
        prompt = _merge(obj.round_prompt, visual) if same else visual
        if not _has_positive(prompt):
            if obj.mask is None:
                raise ValueError(f"object {obj_id} is lost: a refinement needs positive evidence (a positive click, box, ...)")
            prompt = _merge(VisualPrompt(mask=_carve(obj.mask, prompt, embedding.orig_size)), prompt)
        try:
            if self.zoom:
                mask = None if obj.mask is None else _fit(obj.mask, embedding.orig_size)
                # After a round that left nothing, the crop's logits would hold it there: start afresh.
                zoom = obj.zoom if same and mask is not None else None
                seg, obj.zoom = self.predictor.predict_zoomed(prompt, mask, embedding, zoom)
            else:
                memory = obj.logits[None] if obj.logits is not None else None
                seg = self.predictor.predict([prompt], memory=memory, embedding=embedding)
        except PromptError as e:
            raise ValueError(f"bad refine prompt for object {obj_id}: {e}") from e
        obj.round_prompt = prompt
        seg = self._honour_clicks(seg, prompt, embedding)
        self._accept(obj, seg, prompt, embedding, stamp, keep_label=True)
        if obj.state == TRACKED:
            # A corrected mask is a better reference (and appearance) for later frames.
            obj.ref_tokens = obj.last_tokens
            obj.anchor = obj.recent
        self._claim(obj, embedding, stamp)
        return self._track(obj)

    def _honour_clicks(self, seg: Segmentation, prompt: VisualPrompt, emb: ImageEmbedding) -> Segmentation:
        """The model's mask with every click obeyed. The model sometimes ignores a click (most
        often a corrective one, with the previous mask as memory), and a user who clicks the same
        pixel again gets the same answer. So each disobeyed click is answered alone, as a
        positive click on the whole image (a decoder pass of its own, once per click and image):
        a positive click's answer, its part at the click (cut at depth steps), joins the mask; a
        negative click's answer (the thing there) leaves it, or, where that answer also holds a
        positive click, its pixels nearer to this click than to every positive one (negative
        clicks only next to a positive one). Tuning scenes (950000+, 134 objects, as the node):
        NoC@85 3.16 -> 1.93, NoC@90 4.13 -> 3.02 (positive clicks only: 2.54 / 3.56)."""
        if not self.honour_clicks or prompt.points is None or not np.asarray(prompt.points).size:
            return seg
        pts = np.asarray(prompt.points, np.float64).reshape(-1, 2)
        pos = np.ones(len(pts), bool) if prompt.labels is None else np.asarray(prompt.labels).reshape(-1) > 0
        H, W = emb.orig_size
        ix, iy = np.clip(pts[:, 0].astype(int), 0, W - 1), np.clip(pts[:, 1].astype(int), 0, H - 1)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)   # the rest: nothing to answer
        mask = seg.masks[0].copy()
        cache = self._alone_answers(emb)

        def alone(ks):
            for k in ks:
                if _click_key(pts[k]) not in cache:
                    cache[_click_key(pts[k])] = self.predictor.predict([VisualPrompt(points=pts[k:k + 1])],
                                                                       embedding=emb).masks[0]
            return [cache[_click_key(pts[k])] for k in ks]

        missed = [k for k in np.flatnonzero(pos & inside) if not mask[iy[k], ix[k]]]
        for k, m in zip(missed, alone(missed) if missed else ()):
            mask |= _keep_prompted(m, VisualPrompt(points=pts[k:k + 1]), self.predictor.point_radius, *self._z(emb))
        # Without a positive click (a lone negative click on a new image, whose positive evidence
        # is the object's mask) there is nothing to tell the clicked thing from the object by.
        kept = [k for k in np.flatnonzero(~pos & inside) if mask[iy[k], ix[k]]] if pos.any() else []
        for k, m in zip(kept, alone(kept) if kept else ()):
            if m[iy[pos], ix[pos]].any():
                ys, xs = np.nonzero(m)
                near = np.hypot(xs - pts[k, 0], ys - pts[k, 1]) < np.min(
                    np.hypot(xs[:, None] - pts[pos, 0], ys[:, None] - pts[pos, 1]), 1)
                m = np.zeros_like(m)
                m[ys[near], xs[near]] = True
            mask &= ~m
        return dataclasses.replace(seg, masks=mask[None]) if missed or kept else seg

    def _alone_answers(self, emb: ImageEmbedding) -> dict:
        """{(x, y): the model's mask for that click alone} on this image. A click's answer on an
        image does not change: kept while the image is the same, so that later rounds, which check
        every click again, decode only new ones."""
        if self._alone[0] is None or self._alone[0]() is not emb:
            self._alone = (weakref.ref(emb), {})
        return self._alone[1]

    def set_depth(self, embedding: ImageEmbedding, depth) -> None:
        """The depth of the image `embedding` was computed on (metres, registered to it, NaN or 0
        where unknown): an array, a geometry.DepthImage, or a function returning either (called
        once, when a mask on that image first needs it: a node's depth may still be on its way
        while the model runs; None, or an error, from it: no depth). The masks of prompts that
        point at pixels (clicks, boxes, scribbles, masks: add, replace, refine) are then cut where
        neighbouring pixels' depths differ by surface_jump or more (a mask spilling onto an
        object in front or behind) before the parts the prompt does not point at are dropped.
        Held-out scenes, as the node: NoC@85 2.45 -> 2.23, NoC@90 2.80 -> 2.35 (tuning scenes
        3.54 -> 3.16 at 2 cm, 3.22 at 1 cm, 3.25 at 4 cm). Not for the rest, measured: a phrase's
        or reference's most confident part (text poses 1.21 -> 1.30 cm on held-out scenes),
        propagated masks (tracking seeds 200-211: switches 35 -> 59), and those with lost objects'
        regions (switches on seeds 144-191 90 -> 100, on 260-271 3 -> 6)."""
        if depth is not None and not callable(depth):
            shape = tuple(np.shape(depth) if not isinstance(depth, DepthImage) else depth.shape)
            if shape != tuple(embedding.orig_size):
                raise ValueError(f"depth is {shape[1]}x{shape[0]}, the image "
                                 f"{embedding.orig_size[1]}x{embedding.orig_size[0]}")
        self._depth = [weakref.ref(embedding), depth, False]

    def _z(self, emb: ImageEmbedding) -> Tuple[Optional[np.ndarray], float]:
        """This image's depth in metres (NaN: unknown) and the jump, or None when it has none."""
        ref, depth, ready = self._depth
        if self.surface_jump is None or ref is None or ref() is not emb:
            return None, 0.0
        if not ready:
            try:
                depth = depth() if callable(depth) else depth
                if isinstance(depth, DepthImage):
                    depth = depth.metres()
                if depth is not None:
                    depth = np.asarray(depth, np.float32)
                    if depth.shape != tuple(emb.orig_size):
                        depth = None                 # the caller's to report (the node does)
                    else:
                        depth = np.where(depth > 0, depth, np.nan)
            except Exception:                        # noqa: BLE001 (the caller reports its depth's errors)
                depth = None
            self._depth = [ref, depth, True]
        return depth, self.surface_jump

    def remove(self, obj_id: int) -> bool:
        return self._objects.pop(int(obj_id), None) is not None

    def clear(self) -> None:
        self._objects.clear()          # ids are not reused: _next_id keeps counting

    @torch.inference_mode()
    def update(self, embedding: ImageEmbedding, stamp: float, view: Optional[CameraView] = None) -> List[Track]:
        """Segment every object on a new frame (its features already computed by set_image):
        one decoder pass for all objects not yet segmented on this embedding. Returns every
        track, tracked and lost; objects lost for longer than lost_timeout_s are dropped.
        `view`: this frame's camera in a fixed frame, when known; with the positions given to
        place(), a lost object is then looked for where its last 3D position projects now."""
        for o in list(self._objects.values()):
            if o.state == LOST and o.lost_since is not None and stamp - o.lost_since > self.lost_timeout_s:
                del self._objects[o.id]
        if view is not None and self.max_jump:
            for o in self._objects.values():
                if o.surface is None and o.state == TRACKED and o.mask is not None and o.on(embedding):
                    # Prompted on this very image: the next frame's jump and shared-pixel tests
                    # then have the prompted mask's median (the frame after a prompt is where a
                    # mask spills onto a neighbour the prompt did not cover).
                    o.surface = self._surface_point(o.mask, embedding, view)
        todo = [o for o in self._objects.values() if not o.on(embedding)]
        for o in todo:
            o.age_frames += 1
            o.round_prompt = None
        self.last_candidates = []
        if todo:
            cands = self._decode(todo, embedding)
            self.last_candidates = cands
            self._decide(todo, cands, embedding, stamp, view)
        return self.tracks

    def place(self, positions: Dict[int, np.ndarray], view: CameraView, stamp: float) -> None:
        """3D positions (optical frame of `view`'s image, metres; e.g. the pose estimator's
        centroids) of objects tracked on the frame at `stamp`. Kept in the fixed frame, so that
        re-identification knows where a lost object should be after the camera has moved (image
        positions alone cannot: a pan away and back moves everything)."""
        for oid, p in positions.items():
            o = self._objects.get(int(oid))
            p = np.asarray(p, float).reshape(-1)
            if o is None or o.state != TRACKED or o.box is None or o.box_stamp != stamp or p.shape != (3,) \
                    or not np.isfinite(p).all() or p[2] <= 0:
                continue
            last = self._placed(o, view)
            size = o.area * float(p[2]) ** 2               # apparent area at 1 m: distance left out
            o.whole_size = max(o.whole_size, size)
            if last is not None and o.mask is not None and (_at_border(o.box, *o.mask.shape[::-1])
                                                            or size < PARTIAL_VIEW * o.whole_size):
                # A view cut by the image border (or half hidden) has its centroid off the object's
                # centre, moving as the object leaves: neither where it is nor how fast it goes.
                # The last whole view's stays (stage-8 weights, camera pose known, seeds 48-95 /
                # 96-119: identity switches 157 -> 93 / 64 -> 31 and J&F 0.789 -> 0.804 / 0.797 ->
                # 0.818 for the border alone; with the hidden half too 87 / 20, 0.806 / 0.821).
                continue
            q = view.T_fixed_cam[:3, :3] @ p + view.T_fixed_cam[:3, 3]
            v = np.zeros(3)
            if last is not None and stamp > last.stamp:
                v = 0.5 * last.velocity + 0.5 * (q - last.position) / (stamp - last.stamp)
            o.where = _Placed(q, v, stamp, o.box.copy(), view.pixel(p), float(p[2]), view.frame)

    # ------------------------------------------------------------------ prompting
    def _check(self, p: ObjectPrompt) -> None:
        if not isinstance(p, ObjectPrompt):
            raise ValueError(f"expected an ObjectPrompt, got {type(p).__name__}")
        if p.kind not in KINDS:
            raise ValueError(f"unknown prompt kind {p.kind!r}; expected one of {', '.join(KINDS)}")
        if p.kind == "text" and not p.text.strip():
            raise ValueError("a text prompt needs a non-empty phrase")
        if p.kind in ("point", "box", "scribble", "mask") and (
                not isinstance(p.visual, VisualPrompt) or p.visual.is_empty()):
            raise ValueError(f"a {p.kind} prompt needs a non-empty VisualPrompt in `visual`")
        if p.kind == "reference":
            if not isinstance(p.tokens, SpatialTokens):
                raise ValueError("a reference prompt needs `tokens` (predictor.reference_tokens on the reference image)")
            if p.tokens.num_prompts != 1:
                raise ValueError(f"a reference prompt must hold one object's tokens, got {p.tokens.num_prompts}")

    @torch.inference_mode()
    def _segment(self, obj: _Object, p: ObjectPrompt, emb: ImageEmbedding, stamp: float) -> None:
        pred = self.predictor
        try:
            if p.kind == "text":
                phrase = p.text.strip()
                ids, att = pred.tokenizer([phrase])
                tok, cls = pred.model.text_encoder.encode_tokens(ids.to(pred.device), att.to(pred.device))
                obj.text_tokens = tok[0][att[0].bool().to(pred.device)]
                obj.text_emb = cls[0]
                seg = pred.predict_text([phrase], emb)
                visual = None
            elif p.kind == "reference":
                obj.ref_tokens = p.tokens
                seg = pred.predict([], embedding=emb, tokens=p.tokens)
                visual = None
            else:
                seg = pred.predict([p.visual], embedding=emb)
                if _lone_click(p.visual):
                    # Its answer is that click's answer alone: nothing to enforce it with now, and
                    # later rounds on this image need not decode it again.
                    self._alone_answers(emb)[_click_key(p.visual.points)] = seg.masks[0]
                else:
                    seg = self._honour_clicks(seg, p.visual, emb)
                obj.round_prompt = visual = p.visual
        except PromptError as e:
            raise ValueError(f"bad {p.kind} prompt: {e}") from e
        self._accept(obj, seg, visual, emb, stamp, keep_label=bool(obj.label))
        if obj.state == TRACKED and p.kind != "reference":
            obj.ref_tokens = obj.last_tokens     # the segmented mask: what later frames look for
        # A click / box / scribble / mask the model found nothing at stays lost, unsearched (its
        # tokens find junk on later frames): the user sees it lost and may re-prompt or refine.

    def _accept(self, obj: _Object, seg: Segmentation, visual: Optional[VisualPrompt], emb: ImageEmbedding,
                stamp: float, keep_label: bool) -> None:
        """Take a user-prompted segmentation as the object's state on this image. The user chose
        the object, so it is kept even when the model is unsure; only an empty mask makes it lost."""
        # Exact everywhere (once per prompt): a zoomed answer's mask comes from the crop, and may
        # reach past where its full-image logits are positive.
        prob = self.predictor.upsample(seg.logits[:1].float(), emb)[0].sigmoid().cpu().numpy()
        mask = seg.masks[0]
        if self.components and mask.any():
            if visual is not None:
                mask = _keep_prompted(mask, visual, self.predictor.point_radius, *self._z(emb))
            else:
                mask = _best_component(mask, prob)
        obj.seen = weakref.ref(emb)
        if not keep_label:
            obj.label = seg.labels[0]
        area = np.count_nonzero(mask)
        obj.score = _mean_prob(prob, mask)
        if area < self._min_pixels(emb):
            # Nothing (or nothing where the user pointed): report it lost rather than track
            # something else.
            obj.state, obj.mask, obj.lost_since = LOST, None, stamp
            return
        (app,), (obj.colour,) = self._look(mask[None], seg.embeddings[:1], emb)
        obj.state, obj.mask, obj.lost_since, obj.area, obj.own_area = TRACKED, mask, None, area, area
        obj.usual_area = float(area)
        obj.box, obj.box_stamp = _box(mask), stamp
        obj.surface = None                      # the user may have pointed at another object: update() takes the new mask's
        obj.logits = self._clean_logits(seg.logits[0].float(), mask, emb)
        obj.anchor = app if obj.anchor is None else obj.anchor
        obj.recent = app
        obj.last_tokens = self._mask_tokens(mask, emb)

    def _claim(self, obj: _Object, emb: ImageEmbedding, stamp: float) -> None:
        """The user's latest prompt wins its pixels: masks on the same image stay disjoint."""
        if obj.state != TRACKED:
            return
        minpx = self._min_pixels(emb)
        for p in self._objects.values():
            if p.id != obj.id and p.state == TRACKED and p.on(emb) and p.mask is not None:
                p.mask = p.mask & ~obj.mask
                # The user gave those pixels to another object: they are not this one's own
                # either (a box around two objects must not make a later leak look like no growth).
                p.area = p.own_area = np.count_nonzero(p.mask)
                p.usual_area = min(p.usual_area, p.own_area)
                if p.area < minpx:
                    p.state, p.mask, p.lost_since = LOST, None, stamp

    def _mask_tokens(self, mask: np.ndarray, emb: ImageEmbedding) -> SpatialTokens:
        return self.predictor.spatial_tokens([VisualPrompt(mask=mask)], emb)

    def _prompt_tokens(self, o: _Object, quota: int) -> Optional[SpatialTokens]:
        """The prompt that finds the object on a new image: its mask as spatial tokens taken on
        the image where the mask was right (the first, the last, or both as one prompt), thinned
        to `quota` tokens. Tokens re-sampled on the new image at the old place segment worse:
        they mix in the background the object has moved away from."""
        first, last = o.ref_tokens, o.last_tokens
        if self.propagate == "first" or last is None:
            t = first if first is not None else last
            return None if t is None else _thin(t, quota)
        if self.propagate in ("last", "mask") or first is None:
            return _thin(last, quota)
        return _union_tokens(_thin(first, quota // 2), _thin(last, quota - quota // 2))

    # ------------------------------------------------------------------ per-frame decode
    def _decode(self, objs: List[_Object], emb: ImageEmbedding) -> List[_Candidate]:
        """One decoder pass: propagation prompts for tracked objects, reference prompts (and
        phrases) for lost ones; returns every candidate mask at image size."""
        pred = self.predictor
        model, dev = pred.model, pred.device
        feats = emb.features
        h4, w4 = feats.mask_features.shape[-2:]
        tracked = [o for o in objs if o.state == TRACKED]
        lost = [o for o in objs if o.state == LOST]
        n_prompts = len(tracked) + (len(lost) if "reference" in self.search else 0)
        quota = max(self.token_budget // max(n_prompts, 1), 8)
        pieces, mems, owners, sources = [], [], [], []
        if tracked:
            masks = [_fit(o.mask, emb.orig_size) for o in tracked]
            pos, neg = rasterize([VisualPrompt(mask=m) for m in masks], emb.orig_size, emb.input_size,
                                 emb.padded_size, pred.point_radius)
            pos_t = torch.from_numpy(pos)[None].to(dev)
            if self.propagate == "mask":
                pieces.append(model.spatial_tokens(feats, pos_t, torch.from_numpy(neg)[None].to(dev)))
            else:
                pieces += [self._prompt_tokens(o, quota) for o in tracked]
            mems.append(F.adaptive_avg_pool2d(pos_t[0].float() * (2 * MEMORY_LOGIT) - MEMORY_LOGIT, (h4, w4)))
            owners += [o.id for o in tracked]
            sources += ["propagate"] * len(tracked)
        if "reference" in self.search:
            for o in lost:
                t = self._prompt_tokens(o, quota)
                if t is not None:
                    pieces.append(t)
                    # Nothing is known about where it is now: a memory that lets it look everywhere.
                    mems.append(torch.full((1, h4, w4), MEMORY_LOGIT, device=dev))
                    owners.append(o.id)
                    sources.append("reference")
        spatial = _cat_tokens(pieces) if pieces else None
        memory = None
        if spatial is not None and self.memory != "none":
            memory = torch.cat(mems).to(pred.dtype)[None]
        texts = [o for o in objs if o.text_tokens is not None
                 and ((o.state == LOST and "text" in self.search) or (o.state == TRACKED and self.text_guide))]
        grounding = None
        if texts:
            tok = torch.cat([o.text_tokens for o in texts])[None]
            grounding = GroundingTokens(tok, torch.zeros(tok.shape[:2], dtype=torch.bool, device=dev))
        out = model.decode(feats, grounding=grounding, spatial=spatial, memory=memory)

        logits, embeds = [], []
        if spatial is not None:
            logits.append(out.prompt_masks[0])
            embeds.append(out.prompt_embeds[0])
        if texts:
            phrase = torch.stack([o.text_emb for o in texts])
            best = model.similarity(out.grounding_embeds[0], phrase).argmax(0)          # [P]
            logits.append(out.grounding_masks[0, best])
            embeds.append(out.grounding_embeds[0, best])
            owners += [o.id for o in texts]
            sources += ["text"] * len(texts)
        searching = [o for o in lost if o.anchor is not None] if "objects" in self.search else []
        if searching:
            # Generic object queries come free with every pass: the one that looks most like
            # each lost object is its candidate.
            ql = out.object_masks[0].float()
            app = self._appearance_lowres(ql, out.object_embeds[0], emb)
            sims = torch.stack([o.anchor for o in searching]) @ app.T                     # [L, Q]
            q = sims.argmax(1)
            logits.append(ql[q])
            embeds.append(out.object_embeds[0, q])
            owners += [o.id for o in searching]
            sources += ["objects"] * len(searching)
        if not logits:
            return []
        logits = torch.cat(logits).float()
        embeds = torch.cat(embeds).float()
        # Image-size masks and probabilities for every candidate (near its foreground only).
        prob, masks, _ = pred.foreground(logits, emb)
        return [_Candidate(oid, src, logits[i], embeds[i], mask=masks[i], prob=prob[i])
                for i, (oid, src) in enumerate(zip(owners, sources))]

    def _grid(self, masks: np.ndarray, emb: ImageEmbedding) -> Tensor:
        """Image-size masks [N, H, W] -> fraction covered per cell of the H/4 feature grid: area
        pooling as F.interpolate(mode="area") does it, on each mask's bounding box only (the
        whole-image pass cost 0.4 ms a mask on a CPU, several times a frame; at model input 360
        a 640x480 image is 5.33 pixels a cell, so cells are pooled by weights, not by a kernel)."""
        feats = emb.features.mask_features
        h4, w4 = feats.shape[-2:]
        ih, iw = emb.input_size
        gh, gw = min(h4, max(1, round(ih / 4))), min(w4, max(1, round(iw / 4)))
        n, H, W = masks.shape
        wy, sy, ey = _area_weights(H, gh)
        wx, sx, ex = _area_weights(W, gw)
        out = torch.zeros((n, h4, w4))
        for k in range(n):
            b = _bbox(masks[k])
            if b is None:
                continue
            (a, z), (c, d) = (b[0].start, b[0].stop), (b[1].start, b[1].stop)
            # The cells whose pixel span meets the box (spans overlap by a pixel when not whole).
            r0, r1 = int(np.searchsorted(ey, a, "right")), int(np.searchsorted(sy, z, "left"))
            c0, c1 = int(np.searchsorted(ex, c, "right")), int(np.searchsorted(sx, d, "left"))
            crop = torch.from_numpy(np.ascontiguousarray(masks[k, a:z, c:d])).float()
            out[k, r0:r1, c0:c1] = wy[r0:r1, a:z] @ crop @ wx[c0:c1, c:d].T
        return out.to(feats.device)

    def _look(self, masks: np.ndarray, embeds, emb: ImageEmbedding) -> Tuple[Tensor, list]:
        """Appearance ([N, C + D], `_pooled`) and mean colour (N of [3] RGB, 0..1; None each when
        the embedding carries no colours: then colour decides nothing) of image-size masks,
        pooled on the feature grid once for both."""
        g = self._grid(masks, emb)
        if emb.colour is None:
            cols = [None] * len(masks)
        else:
            cols = list(torch.einsum("nhw,chw->nc", g, emb.colour) / g.flatten(1).sum(1).clamp(min=1e-6)[:, None])
        return self._pooled(g, embeds, emb), cols

    def _appearance_lowres(self, logits: Tensor, embeds: Tensor, emb: ImageEmbedding) -> Tensor:
        return self._pooled((logits > 0).float(), embeds, emb)

    def _pooled(self, w: Tensor, embeds, emb: ImageEmbedding) -> Tensor:
        """[N, C + D] appearance of masks given as feature-grid coverage w [N, h, w] (`_grid`):
        what the object looks like (the mean pixel feature of the pixel decoder under it, minus
        the image's mean feature so that it tells the object from the table) next to what it is
        (the decoder's class embedding of its query), each a unit vector, weighted equally.
        Measured on held-out sequences with true masks, the pair picks the right object among a
        scene's objects more often than either part alone."""
        mf = emb.features.mask_features[0].float()                              # [C, h, w]
        ih, iw = emb.input_size
        gh, gw = max(1, round(ih / 4)), max(1, round(iw / 4))
        mean = mf[:, :gh, :gw].mean((1, 2))
        v = torch.einsum("nhw,chw->nc", w.to(mf.dtype), mf) / w.flatten(1).sum(1).clamp(min=1e-6)[:, None]
        cls = F.normalize(torch.as_tensor(embeds).to(mf.device).float(), dim=-1)
        return torch.cat([F.normalize(v - mean, dim=-1), cls], -1) / np.sqrt(2)

    def _clean_logits(self, logits: Tensor, mask: np.ndarray, emb: ImageEmbedding) -> Tensor:
        """The model's low-res logits with everything outside the kept mask pushed to background,
        so that a refinement's memory does not bring back a dropped component."""
        g = self._grid(mask[None], emb)[0].to(logits.device)
        return torch.where(g > 0, logits, torch.minimum(logits, torch.tensor(-MEMORY_LOGIT))).detach()

    # ------------------------------------------------------------------ decisions
    def _min_pixels(self, emb: ImageEmbedding) -> int:
        return max(1, int(round(self.min_area * emb.orig_size[0] * emb.orig_size[1])))

    def _similarity(self, o: _Object, app: Tensor, emb: ImageEmbedding) -> float:
        refs = [r for r in (o.anchor, o.recent) if r is not None]
        if not refs:
            return 1.0
        if o.text_tokens is not None:
            # A phrase's object was first seen through a grounding query, later through spatial
            # ones: their class embeddings are trained towards different targets (phrases vs
            # class names) and do not compare, so only the pixel part does (each part is a unit
            # vector / sqrt 2). Comparing both made text objects lost every other frame.
            d = emb.features.mask_features.shape[1]              # the pixel part comes first
            return max(2 * float(app[:d] @ r[:d]) for r in refs)
        return max(float(app @ r) for r in refs)

    def _finish(self, items: Sequence[Tuple[_Candidate, np.ndarray, _Object]], emb: ImageEmbedding) -> None:
        """Area, score, appearance and similarity to its object of each (candidate, its kept
        mask, object); the appearances in one batch (per call they cost 1 ms a mask)."""
        looked = []
        for c, mask, o in items:
            c.mask = mask
            c.area = np.count_nonzero(mask)
            c.score = _mean_prob(c.prob, mask)
            if c.area:
                looked.append((c, o))
        if not looked:
            return
        apps, cols = self._look(np.stack([c.mask for c, _ in looked]), torch.stack([c.embed for c, _ in looked]), emb)
        for (c, o), app, col in zip(looked, apps, cols):
            c.appearance, c.colour = app, col
            c.similarity = self._similarity(o, app, emb)

    def _decide(self, objs: List[_Object], cands: List[_Candidate], emb: ImageEmbedding, stamp: float,
                view: Optional[CameraView] = None) -> None:
        minpx = self._min_pixels(emb)
        H, W = emb.orig_size
        margin = max(1, int(round(self.track_margin * np.hypot(H, W))))
        by_owner: Dict[int, List[_Candidate]] = {}
        for c in cands:
            by_owner.setdefault(c.owner, []).append(c)
        chosen: Dict[int, _Candidate] = {}
        # Tracked objects: keep the propagated mask (its parts near the previous mask) unless it
        # is empty, unsure, grew suspiciously, or no longer looks like the object (it left the
        # view, or was hidden, and the prompt landed on something else).
        items, pairs = [], []
        for o in objs:
            if o.state != TRACKED:
                continue
            cs = by_owner.get(o.id, [])
            prop = next((c for c in cs if c.source == "propagate"), None)
            if prop is None:
                continue
            m = prop.mask
            if self.components and m.any():
                m = _keep_near(m, _grow(_fit(o.mask, (H, W)), margin))
            items.append((prop, m, o))
            text = next((c for c in cs if c.source == "text"), None)
            if text is not None:
                items.append((text, _best_component(text.mask, text.prob) if self.components else text.mask, o))
            pairs.append((o, prop, text))
        self._finish(items, emb)
        for o, prop, text in pairs:
            ok = (prop.area >= minpx and prop.score >= self.min_score and prop.similarity >= self.min_similarity
                  and prop.area <= self.max_growth * max(o.own_area, o.usual_area, minpx))
            if text is not None and self._text_better(prop, text, ok, minpx):
                prop, ok = text, True
            if ok and prop.area > JUMP_GROWTH * max(o.area, 1) and self._jumped(o, prop, emb, view):
                # Grown by half and moved in depth: it spread onto another object (held-out
                # sequences: 25 of 13,301 frames of a mask staying on its object do both, 14 of
                # 33 where it changed objects). Cut back to the parts where the object was; with
                # none it is lost now, and found again by re-identification.
                prop = self._trimmed(o, prop, emb, view)
                ok = prop is not None and prop.area >= minpx and prop.score >= self.min_score
            if ok:
                chosen[o.id] = prop
        # Objects prompted on this very image keep their pixels (the user's word wins).
        todo = {o.id for o in objs}
        fixed = np.zeros((H, W), bool)
        for o in self._objects.values():
            if o.id not in todo and o.on(emb) and o.state == TRACKED and o.mask is not None:
                fixed |= o.mask
        # Lost objects: only a confident, appearance-similar candidate that is not already another
        # object's mask brings it back, with its old id.
        taken = fixed.copy()
        for c in chosen.values():
            taken |= c.mask
        lost = [o for o in objs if o.state == LOST]
        if lost:
            # Objects whose mask was refused just now compete too: they were there a frame ago.
            dropped = [o for o, _, _ in pairs if o.id not in chosen] if self.rejoin else []
            chosen.update(self._reacquire(lost + dropped, [c for o in lost for c in by_owner.get(o.id, [])], taken,
                                          emb, stamp, view))
        if fixed.any():
            for c in chosen.values():
                c.mask = c.mask & ~fixed
        final = _resolve_overlaps(chosen, self._held_by_depth(chosen, emb, view))
        for o in objs:
            c = chosen.get(o.id)
            m = final.get(o.id)
            o.seen = weakref.ref(emb)
            if c is None or m is None or np.count_nonzero(m) < minpx:
                if o.state == TRACKED:
                    o.state, o.lost_since = LOST, stamp
                o.mask = None
                continue
            o.state, o.lost_since = TRACKED, None
            box = _box(m)
            # Of its own mask, before others took their pixels (as own_area): a remnant's median
            # would make the whole object, next frame, look moved.
            o.surface = self._surface_of(c, emb, view) if self.max_jump else None
            if o.box is not None and stamp > o.box_stamp:
                # Smoothed image-plane velocity between the last two sightings (across a loss
                # too): where it will come out when it is hidden next.
                v = (_centre(box) - _centre(o.box)) / (stamp - o.box_stamp)
                o.velocity = 0.5 * o.velocity + 0.5 * v
            else:
                o.velocity = np.zeros(2)
            o.box, o.box_stamp = box, stamp
            o.mask, o.score, o.area = m, c.score, np.count_nonzero(m)
            o.own_area = np.count_nonzero(c.mask)
            o.usual_area = 0.5 * (o.usual_area + o.own_area)
            o.logits = self._clean_logits(c.logits, m, emb)
            if o.anchor is None:
                o.anchor = c.appearance
            o.recent = c.appearance if o.recent is None else F.normalize(
                (1 - self.momentum) * o.recent + self.momentum * c.appearance, dim=0)
            if c.colour is not None:
                o.colour = c.colour if o.colour is None else (1 - self.momentum) * o.colour + self.momentum * c.colour
        found = [o for o in objs if o.state == TRACKED]
        if found and self.propagate != "first":
            toks = self.predictor.spatial_tokens([VisualPrompt(mask=o.mask) for o in found], emb)
            for o, t in zip(found, _split_tokens(toks)):
                o.last_tokens = t

    def _reacquire(self, lost: List[_Object], cands: List[_Candidate], taken: np.ndarray,
                   emb: ImageEmbedding, stamp: float, view: Optional[CameraView] = None) -> Dict[int, _Candidate]:
        """Re-identification of lost objects (with `rejoin`, also those whose mask was refused on
        this frame), jointly: every region any lost object's prompt found (its connected parts,
        minus pixels other objects hold) is scored against every lost object's appearance, and
        regions go to objects best match first, one each. So when two similar-looking objects
        are both lost and one comes back, it goes to the one it resembles most, not to whichever
        prompt happened to find it. A region needs a confident mask, an appearance similarity >=
        reacquire_similarity and to lie within reach of where the object was last seen; an
        object never seen yet (a phrase or a reference image that matched nothing when it was
        added) may take the region its own prompt found."""
        minpx = self._min_pixels(emb)
        regions: List[_Candidate] = []
        for c in cands:
            # A region is not dropped for lying mostly on tracked objects: such a check was here,
            # but never ran (lost objects' candidates carried no area). Made to run, on seeds 0-47:
            # dropping regions more than half taken, 142 -> 130 switches but J&F 0.795 -> 0.788;
            # more than 0.8 taken, 141 and 0.795.
            free = c.mask & ~taken
            parts = _components(free, minpx, 3) if self.components else ([free] if np.count_nonzero(free) >= minpx else [])
            for m in parts:
                r = _Candidate(c.owner, c.source, c.logits, c.embed, m, c.prob)
                r.area, r.score = np.count_nonzero(m), _mean_prob(c.prob, m)
                if r.score >= self.reacquire_score:
                    regions.append(r)
        if not regions:
            return {}
        # The same place found by several prompts counts once (the most confident).
        regions.sort(key=lambda r: -r.score)
        uniq: List[_Candidate] = []
        for r in regions:
            if all(_iou(r.mask, u.mask) < 0.5 for u in uniq):
                uniq.append(r)
        apps, cols = self._look(np.stack([r.mask for r in uniq]), torch.stack([r.embed for r in uniq]), emb)
        H, W = emb.orig_size
        diag = float(np.hypot(H, W))
        boxes = [_box(r.mask) for r in uniq]
        edge = [_at_border(b, W, H) for b in boxes]
        # Where each lost object seen before could be now (None: behind the camera), how far from
        # there it may be, and whether that comes from its 3D position: once, not per region.
        def lost_for(o: _Object) -> float:                 # 0 for an object whose mask was refused just now
            return 0.0 if o.lost_since is None else max(stamp - o.lost_since, 0.0)

        gates = {o.id: (self._expected(o, stamp, view), (self.reach + self.reach_rate * lost_for(o)) * diag,
                        self._placed(o, view) is not None)
                 for o in lost if o.box is not None}
        beside = self._beside_tracked(uniq, emb, view)
        pairs = []
        for k, r in enumerate(uniq):
            r.appearance = apps[k]
            r.colour = cols[k]
            sims = []
            for o in lost:
                gap = 0.0
                if o.id in gates:
                    expected, limit, placed = gates[o.id]
                    if expected is None:
                        continue                        # behind the camera now
                    gap = _gap(boxes[k], expected)
                    if gap > limit:
                        continue                        # it cannot be there (yet)
                    if placed and not edge[k] and _outside(expected, W, H, OUTSIDE_SLACK * diag):
                        continue                        # out of view: it can only come in across the border
                    if placed and beside[k] is not None:
                        # Right beside a tracked object and far from where this one should be:
                        # a piece of that object its mask missed, not this one coming back.
                        q, d_tracked = beside[k]
                        if d_tracked < BESIDE_RATIO * min(np.linalg.norm(q - p) for p in o.where.path(stamp)):
                            continue
                if o.anchor is not None:
                    sim = self._similarity(o, apps[k], emb)
                    # Farther from where it could be counts against it: the appearance features
                    # barely see shape, so same-coloured objects tie on looks.
                    dc = 0.0 if cols[k] is None or o.colour is None else float((cols[k] - o.colour).norm())
                    sims.append((sim - self.position_weight * gap / diag, sim, o, dc))
                elif r.owner == o.id:                    # never seen: trust its own prompt
                    pairs.append((-1.0, k, o))
            # Every object that could be there competes; the winner must be clearly ahead of all
            # of them. But one of clearly another colour than the closest-coloured object cannot
            # win (shading and partial views move a mean colour by less than colour_gate; the
            # features' appearance told a green sphere from a black cone by 0.09 of similarity
            # only, and the position term then gave the cone's region to the sphere). Between
            # objects of about the same colour nothing changes: small colour differences there
            # are noise, not identity.
            sims.sort(key=lambda x: -x[0])
            closest = min((x[3] for x in sims), default=0.0)
            win = next((x for x in sims if x[3] <= closest + self.colour_gate), None)
            margin = self.edge_margin if edge[k] else self.reid_margin
            if win is not None and win[1] >= self.reacquire_similarity:
                if all(win[0] - x[0] >= margin for x in sims if x is not win):
                    pairs.append((win[0], k, win[2]))
        out: Dict[int, _Candidate] = {}
        used = set()
        for sim, k, o in sorted(pairs, key=lambda x: -x[0]):
            if o.id in out or k in used:
                continue
            r = uniq[k]
            r.owner, r.similarity = o.id, max(sim, 0.0)
            out[o.id] = r
            used.add(k)
        return out

    def _surface_of(self, c: _Candidate, emb: ImageEmbedding,
                    view: Optional[CameraView]) -> Optional[Tuple[np.ndarray, str]]:
        """_surface_point of c's mask, kept on c while its mask stays the same object: the jump
        test, the shared-pixels test and the object's record read the same median."""
        if c.of is not c.mask:
            c.surface, c.of = self._surface_point(c.mask, emb, view), c.mask
        return c.surface

    def _surface_point(self, mask: np.ndarray, emb: ImageEmbedding,
                       view: Optional[CameraView]) -> Optional[Tuple[np.ndarray, str]]:
        """The median of the mask's depth points (about 2,000 of them at most) in the fixed frame,
        with the frame's name; None without depth, a camera pose or enough points."""
        z, _ = self._z(emb) if view is not None else (None, 0.0)
        box = None if z is None else mask_box(mask)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        step = max(1, int(np.sqrt(np.count_nonzero(mask[y0:y1, x0:x1]) / 2000)))
        K = view.K / step                           # the box's crop, every step-th pixel
        K[:2, 2] = (view.K[0, 2] - x0) / step, (view.K[1, 2] - y0) / step
        K[2] = (0.0, 0.0, 1.0)
        pts = backproject(z[y0:y1:step, x0:x1:step], K, mask[y0:y1:step, x0:x1:step])
        if len(pts) < 3:
            return None
        return view.T_fixed_cam[:3, :3] @ np.median(pts, 0) + view.T_fixed_cam[:3, 3], view.frame

    def _jumped(self, o: _Object, c: _Candidate, emb: ImageEmbedding, view: Optional[CameraView]) -> bool:
        """Whether a propagated mask's depth points lie more than max_jump from the object's last
        mask's (both medians in the fixed frame): a mask that grew onto another object."""
        if not self.max_jump or o.surface is None or view is None or o.surface[1] != view.frame:
            return False
        now = self._surface_of(c, emb, view)
        return now is not None and float(np.linalg.norm(now[0] - o.surface[0])) > self.max_jump

    def _trimmed(self, o: _Object, c: _Candidate, emb: ImageEmbedding,
                 view: Optional[CameraView]) -> Optional[_Candidate]:
        """A jumped mask (see _jumped) cut at depth steps, only its parts whose depth median lies
        within max_jump of the object's last one kept; None when nothing is left. Losing the
        object there instead left its own part to a neighbour's mask or to a lost look-alike
        (tracking sets 144-367: 194 -> 168 identity switches, J&F up to 0.02 higher; unseen
        368-463: 183 -> 190, J&F equal or higher)."""
        z, jump = self._z(emb)
        if z is None:
            return None
        lab, n = _label(c.mask, z, jump)
        if n < 2:
            return None
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = np.zeros_like(c.mask)
        for k in np.flatnonzero(sizes[1:] >= self._min_pixels(emb)) + 1:
            part = lab == k
            at = self._surface_point(part, emb, view)
            if at is not None and float(np.linalg.norm(at[0] - o.surface[0])) <= self.max_jump:
                keep |= part
        if not keep.any():
            return None
        r = _Candidate(c.owner, c.source, c.logits, c.embed, keep, c.prob)
        self._finish([(r, keep, o)], emb)
        return r

    def _held_by_depth(self, chosen: Dict[int, _Candidate], emb: ImageEmbedding,
                       view: Optional[CameraView]) -> Dict[int, np.ndarray]:
        """Pixels an object keeps where its mask and another's cover the same thing (at least half
        of the smaller): those of the object whose new mask's depth median moved clearly less from
        its last mask's (`surface`, fixed frame) than the other's did. Without it the more
        confident mask won, and a mask that slid onto a neighbour as its own object went behind
        it took that neighbour's pixels and id. Each mask's own move, not the shared pixels'
        distance to each median: those lie at one side of a large object, often nearer to its
        neighbour's median than to its own. Needs depth, the camera pose and max_jump (which
        keeps `surface`)."""
        held: Dict[int, np.ndarray] = {}
        if view is None or len(chosen) < 2:
            return held
        objs = [self._objects[i] for i in chosen]
        objs = [o for o in objs if o.surface is not None and o.surface[1] == view.frame]
        # Pairs are compared on their boxes' overlap only: every frame, most pairs have none.
        boxes = {o.id: mask_box(chosen[o.id].mask) for o in objs}
        objs = [o for o in objs if boxes[o.id] is not None]
        minpx = self._min_pixels(emb)
        moved: Dict[int, Optional[float]] = {}

        def move(o: _Object) -> Optional[float]:
            if o.id not in moved:
                now = self._surface_of(chosen[o.id], emb, view)
                moved[o.id] = None if now is None else float(np.linalg.norm(now[0] - o.surface[0]))
            return moved[o.id]

        areas: Dict[int, int] = {}

        def area(o: _Object) -> int:
            if o.id not in areas:
                areas[o.id] = np.count_nonzero(chosen[o.id].mask)
            return areas[o.id]

        for k, a in enumerate(objs):
            for b in objs[k + 1:]:
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a.id], boxes[b.id]
                x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
                if x1 <= x0 or y1 <= y0:
                    continue
                crop = chosen[a.id].mask[y0:y1, x0:x1] & chosen[b.id].mask[y0:y1, x0:x1]
                if np.count_nonzero(crop) < max(minpx, 0.5 * min(area(a), area(b))):
                    continue
                da, db = move(a), move(b)
                if da is None or db is None:
                    continue
                both = np.zeros_like(chosen[a.id].mask)
                both[y0:y1, x0:x1] = crop
                for o, d, e in ((a, da, db), (b, db, da)):
                    if d < HELD_RATIO * e:
                        held[o.id] = held[o.id] | both if o.id in held else both
        return held

    def _beside_tracked(self, regions: List[_Candidate], emb: ImageEmbedding,
                        view: Optional[CameraView]) -> List[Optional[Tuple[np.ndarray, float]]]:
        """Per region: (its position in the fixed frame, the distance from there to the nearest
        tracked object's placed position) where that distance is below near_tracked; else None
        (also without depth, a camera pose or placed tracked objects)."""
        out: List[Optional[Tuple[np.ndarray, float]]] = [None] * len(regions)
        if not self.near_tracked or view is None:
            return out
        placed = [w.position for w in (self._placed(o, view) for o in self._objects.values() if o.state == TRACKED)
                  if w is not None]
        if not placed:
            return out
        placed = np.stack(placed)
        for k, r in enumerate(regions):
            at = self._surface_of(r, emb, view)
            if at is None:
                continue
            q = at[0]
            d = float(np.linalg.norm(placed - q, axis=1).min())
            if d < self.near_tracked:
                out[k] = (q, d)
        return out

    def _expected(self, o: _Object, stamp: float, view: Optional[CameraView], horizon: float = 1.0) -> Optional[np.ndarray]:
        """Where a lost object could be on this frame: with a 3D position and this frame's camera,
        its box when placed, moved to where that position (and the position its 3D velocity leads
        to, at most `horizon` seconds on) projects now and scaled by the change in depth; None
        when that is behind the camera. Else the image-plane sweep (_swept)."""
        w = self._placed(o, view)
        if w is None:
            return self._swept(o, stamp, horizon)
        ctr = _centre(w.box)
        out = None
        for p in w.path(stamp, horizon):
            c = view.to_camera(p)
            if c[2] <= 1e-3:
                return None
            shift = view.pixel(c) - w.pixel
            s = w.depth / c[2]
            b = np.concatenate([(w.box[:2] - ctr) * s + ctr + shift, (w.box[2:] - ctr) * s + ctr + shift])
            out = b if out is None else np.concatenate([np.minimum(out[:2], b[:2]), np.maximum(out[2:], b[2:])])
        return out

    @staticmethod
    def _placed(o: _Object, view: Optional[CameraView]) -> Optional[_Placed]:
        """Its 3D position, when there is one in this frame's fixed frame."""
        return o.where if view is not None and o.where is not None and o.where.frame == view.frame else None

    @staticmethod
    def _swept(o: _Object, stamp: float, horizon: float = 1.0) -> np.ndarray:
        """The box from where the object was last seen to where it would be now at its last
        velocity (at most `horizon` seconds on): behind an occluder it comes out further along;
        after a camera pan away and back it comes back where it left."""
        d = o.velocity * min(max(stamp - o.box_stamp, 0.0), horizon)
        moved = o.box + np.array([d[0], d[1], d[0], d[1]])
        return np.concatenate([np.minimum(o.box[:2], moved[:2]), np.maximum(o.box[2:], moved[2:])])

    def _text_better(self, prop: _Candidate, text: _Candidate, prop_ok: bool, minpx: int) -> bool:
        """With text_guide, the phrase's grounding mask replaces the propagated one when the
        latter failed, or when it agrees with it and is more confident."""
        if text.area < minpx or text.score < self.reacquire_score:
            return False
        if not prop_ok:
            return text.similarity >= self.reacquire_similarity
        inter = np.count_nonzero(text.mask & prop.mask)
        iou = inter / max(np.count_nonzero(text.mask | prop.mask), 1)
        return iou > 0.5 and text.score > prop.score

    def _get(self, obj_id: int) -> _Object:
        try:
            return self._objects[int(obj_id)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"no object with id {obj_id}") from None

    @staticmethod
    def _track(o: _Object) -> Track:
        tracked = o.state == TRACKED
        return Track(o.id, o.label, float(o.score), o.state, o.mask if tracked else None, o.prompt.kind,
                     o.prompt.text, o.age_frames, o.lost_since)


# ---------------------------------------------------------------------- helpers
def _name(p: ObjectPrompt) -> str:
    """The label an object starts with: the user's, else a text prompt's phrase; empty: the
    model's label of its mask."""
    return p.label.strip() or (p.text.strip() if p.kind == "text" else "")


@functools.lru_cache(maxsize=16)
def _area_weights(n_in: int, n_out: int) -> Tuple[Tensor, np.ndarray, np.ndarray]:
    """[n_out, n_in] averaging weights of adaptive average pooling (cell i spans pixels
    floor(i * n_in / n_out) to ceil((i + 1) * n_in / n_out)), and each cell's start and end."""
    i = np.arange(n_out)
    start, end = i * n_in // n_out, -(-(i + 1) * n_in // n_out)
    w = torch.zeros((n_out, n_in))
    for k in range(n_out):
        w[k, start[k]:end[k]] = 1.0 / (end[k] - start[k])
    return w, start, end


def _bbox(mask: np.ndarray):
    """(row slice, column slice) of the mask's bounding box, None when it is empty."""
    b = mask_box(mask)
    return None if b is None else (slice(b[1], b[3]), slice(b[0], b[2]))


def _mean_prob(prob: np.ndarray, mask: np.ndarray) -> float:
    """Mean foreground probability inside a mask (computed on its bounding box: objects are small
    next to the image)."""
    bb = _bbox(mask)
    if bb is None:
        return 0.0
    return float(prob[bb][mask[bb]].mean())


def _label(mask: np.ndarray, z: Optional[np.ndarray] = None, jump: float = 0.02):
    """8-connected parts, labelled on the bounding box only (same numbering as on the image).
    With the image's depth `z` (metres, aligned): 4-connected parts whose neighbouring pixels
    differ in depth by less than `jump` (an unknown depth links), so a mask spilling across a
    depth step onto an object in front or behind becomes two parts."""
    lab = np.zeros(mask.shape, np.int32)
    bb = _bbox(mask)
    if bb is None:
        return lab, 0
    if z is None:
        lab[bb], n = ndimage.label(mask[bb], structure=np.ones((3, 3), bool))
        return lab, n
    lab[bb], n = surface_parts(mask[bb], z[bb], jump)
    return lab, n


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilation by a (2r+1)^2 square, computed on the mask's bounding box only."""
    out = np.zeros_like(mask)
    bb = _bbox(mask)
    if bb is None:
        return out
    y0, y1 = max(bb[0].start - r, 0), min(bb[0].stop + r, mask.shape[0])
    x0, x1 = max(bb[1].start - r, 0), min(bb[1].stop + r, mask.shape[1])
    out[y0:y1, x0:x1] = ndimage.maximum_filter(mask[y0:y1, x0:x1], size=2 * r + 1, mode="constant")
    return out


def _keep_near(mask: np.ndarray, near: np.ndarray, min_frac: float = 0.3) -> np.ndarray:
    """The connected parts of `mask` lying mostly (>= min_frac) in `near` (the previous mask,
    dilated by the motion allowed per frame); if none does, the one overlapping it most; if
    nothing overlaps it, nothing (the mask jumped elsewhere)."""
    bb = _bbox(mask)
    if bb is None:
        return mask
    m, nr = mask[bb], near[bb]                 # every part lies in the mask's bounding box
    lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    out = np.zeros_like(mask)
    if n <= 1:
        return mask if (m & nr).any() else out
    size = np.bincount(lab.ravel(), minlength=n + 1)
    inside = np.bincount(lab[nr].ravel(), minlength=n + 1)
    keep = inside >= min_frac * size
    keep[0] = False
    if not keep.any():
        if inside[1:].max() == 0:
            return out
        keep[1 + int(np.argmax(inside[1:]))] = True
    out[bb] = keep[lab]
    return out


def _keep_prompted(mask: np.ndarray, visual: VisualPrompt, radius: int, z: Optional[np.ndarray] = None,
                   jump: float = 0.02) -> np.ndarray:
    """The connected parts of `mask` the prompt points at: those holding at least half of the
    pixels of its clicks / scribbles, or lying mostly inside its boxes / polygons / mask; and
    nothing outside a box (a little beyond it, for loose boxes): the user said it is in there.
    Nothing when no part touches the prompt: the model answered elsewhere."""
    size_hw = mask.shape
    thin = _raster(VisualPrompt(points=_positive_points(visual), scribbles=list(visual.scribbles)), size_hw, radius)
    filled = _raster(VisualPrompt(boxes=visual.boxes, polygons=list(visual.polygons), mask=visual.mask), size_hw, radius)
    if filled is not None:
        filled = _grow(filled, max(1, int(round(0.02 * np.hypot(*size_hw)))))
    clip = None
    if visual.boxes is not None and np.asarray(visual.boxes).size:
        clip = np.zeros(size_hw, bool)
        for x0, y0, x1, y1 in np.asarray(visual.boxes, float).reshape(-1, 4):
            x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
            mx, my = 0.1 * (x1 - x0) + 1, 0.1 * (y1 - y0) + 1
            clip[max(int(y0 - my), 0):max(int(np.ceil(y1 + my)), 0), max(int(x0 - mx), 0):max(int(np.ceil(x1 + mx)), 0)] = True
        mask = mask & clip
    lab, n = _label(mask, z, jump)
    if n == 0:
        return mask
    size = np.bincount(lab.ravel(), minlength=n + 1)
    keep = np.zeros(n + 1, bool)
    touch = np.zeros(n + 1)
    if thin is not None:
        inside = np.bincount(lab[thin].ravel(), minlength=n + 1)
        keep |= (inside > 0) & (inside >= 0.5 * np.minimum(size, thin.sum()))
        touch += inside
    if filled is not None:
        inside = np.bincount(lab[filled].ravel(), minlength=n + 1)
        keep |= inside >= 0.5 * size
        touch += inside
    keep[0] = False
    if not keep.any():
        touch[0] = 0
        if touch.max() == 0:
            return np.zeros_like(mask)
        keep[int(np.argmax(touch))] = True
    return keep[lab]


def _positive_points(v: VisualPrompt) -> Optional[np.ndarray]:
    if v.points is None or not np.asarray(v.points).size:
        return None
    pts = np.asarray(v.points, float).reshape(-1, 2)
    lab = np.ones(len(pts)) if v.labels is None else np.asarray(v.labels).reshape(-1)
    pts = pts[lab > 0]
    return pts if len(pts) else None


def _raster(v: VisualPrompt, size, radius: int) -> Optional[np.ndarray]:
    """A prompt's positive pixels at image size, None when it has none inside the image."""
    if v.is_empty():
        return None
    try:
        return rasterize([v], size, size, size, radius)[0][0]
    except PromptError:
        return None


def _components(mask: np.ndarray, min_px: int, k: int) -> List[np.ndarray]:
    """The k largest connected parts of at least min_px pixels."""
    lab, n = _label(mask)
    if n == 0:
        return []
    size = np.bincount(lab.ravel(), minlength=n + 1)
    size[0] = 0
    order = [i for i in np.argsort(-size)[:k] if size[i] >= min_px]
    return [lab == i for i in order]


def _box(mask: np.ndarray) -> Optional[np.ndarray]:
    """x0, y0, x1, y1 (exclusive) of the mask, None when it is empty."""
    b = mask_box(mask)
    return None if b is None else np.array(b, float)


def _at_border(b: np.ndarray, W: int, H: int) -> bool:
    """Whether box b (x0, y0, x1, y1, exclusive) touches the border of a W x H image."""
    return bool(b[0] <= 0 or b[1] <= 0 or b[2] >= W or b[3] >= H)


def _outside(b: np.ndarray, W: int, H: int, margin: float) -> bool:
    """Whether box b lies wholly outside a W x H image, by more than margin pixels."""
    return bool(b[2] <= -margin or b[0] >= W + margin or b[3] <= -margin or b[1] >= H + margin)


def _centre(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two boxes (0 when they touch or overlap)."""
    dx = max(a[0] - b[2], b[0] - a[2], 0.0)
    dy = max(a[1] - b[3], b[1] - a[3], 0.0)
    return float(np.hypot(dx, dy))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(np.logical_or(a, b))
    return float(np.count_nonzero(np.logical_and(a, b)) / u) if u else 0.0


def _best_component(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The single connected part with the most probability mass."""
    lab, n = _label(mask)
    if n <= 1:
        return mask
    mass = np.bincount(lab.ravel(), weights=prob.ravel(), minlength=n + 1)
    mass[0] = -1
    return lab == int(np.argmax(mass))


def _cat_tokens(parts: Sequence[SpatialTokens]) -> SpatialTokens:
    """Several prompts' spatial tokens (batch 1, maybe from different images) as one prompt set."""
    if len(parts) == 1:
        return parts[0]
    idx, off = [], 0
    for p in parts:
        i = p.index.clone()
        i[i >= 0] += off
        idx.append(i)
        off += p.num_prompts
    nlev = len(parts[0].level_tokens)
    return SpatialTokens(torch.cat([p.mean_pos for p in parts], 1),
                         [torch.cat([p.level_tokens[k] for p in parts], 1) for k in range(nlev)],
                         torch.cat(idx, 1), off)


def _union_tokens(a: SpatialTokens, b: SpatialTokens) -> SpatialTokens:
    """Two one-prompt token sets (e.g. from two images) as a single prompt."""
    return SpatialTokens((a.mean_pos + b.mean_pos) / 2,
                         [torch.cat([x, y], 1) for x, y in zip(a.level_tokens, b.level_tokens)],
                         torch.cat([a.index, b.index], 1), 1)


def _thin(t: SpatialTokens, k: int) -> SpatialTokens:
    """One prompt's tokens, at most k of them, evenly spaced (the sampler's row-major order keeps
    them spread over the mask)."""
    n = t.index.shape[1]
    if n <= k:
        return t
    sel = (torch.arange(k, device=t.index.device) * n) // k
    return SpatialTokens(t.mean_pos, [lt[:, sel] for lt in t.level_tokens], t.index[:, sel], t.num_prompts)


def _split_tokens(t: SpatialTokens) -> List[SpatialTokens]:
    """A batch-1 prompt set -> one SpatialTokens per prompt."""
    out = []
    for i in range(t.num_prompts):
        sel = t.index[0] == i
        out.append(SpatialTokens(t.mean_pos[:, i:i + 1], [lt[:, sel] for lt in t.level_tokens],
                                 torch.zeros((1, int(sel.sum())), dtype=t.index.dtype, device=t.index.device), 1))
    return out


def _fit(mask: np.ndarray, size) -> np.ndarray:
    """A mask from an image of another size (camera resolution change): nearest resize."""
    return mask if mask.shape == tuple(size) else resize_mask(mask, size)


def _resolve_overlaps(chosen: Dict[int, _Candidate],
                      held: Optional[Dict[int, np.ndarray]] = None) -> Dict[int, np.ndarray]:
    """Disjoint masks: where several masks claim a pixel, one that `held` gives it to keeps it;
    otherwise the one with the highest score * probability there."""
    if not chosen:
        return {}
    ids = list(chosen)
    if len(ids) == 1:
        return {ids[0]: chosen[ids[0]].mask}
    masks = np.stack([chosen[i].mask for i in ids])
    contested = np.add.reduce(masks, axis=0, dtype=np.uint16) > 1
    if not contested.any():
        return {i: masks[k] for k, i in enumerate(ids)}
    ys, xs = np.nonzero(contested)                     # only contested pixels need weighing
    w = np.stack([chosen[i].prob[ys, xs] * chosen[i].score + (held[i][ys, xs] if held and i in held else 0.0)
                  for i in ids])
    w = np.where(masks[:, ys, xs], w, -1.0)
    owner = w.argmax(0)
    out = {}
    for k, i in enumerate(ids):
        m = masks[k].copy()
        m[ys, xs] = owner == k
        out[i] = m
    return out


def _merge(a: Optional[VisualPrompt], b: VisualPrompt) -> VisualPrompt:
    """Union of two prompts (clicks accumulate, masks are or-ed)."""
    if a is None:
        return b
    pts = [x for x in (a.points, b.points) if x is not None and np.asarray(x).size]
    labs = []
    for p in (a, b):
        if p.points is not None and np.asarray(p.points).size:
            n = len(np.asarray(p.points).reshape(-1, 2))
            labs.append(np.ones(n, np.int64) if p.labels is None else np.asarray(p.labels).reshape(-1))
    boxes = [x for x in (a.boxes, b.boxes) if x is not None and np.asarray(x).size]
    orm = lambda x, y: x if y is None else (y if x is None else (np.asarray(x, bool) | np.asarray(y, bool)))
    return VisualPrompt(
        np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in pts]) if pts else None,
        np.concatenate(labs) if labs else None,
        np.concatenate([np.asarray(x, np.float64).reshape(-1, 4) for x in boxes]) if boxes else None,
        list(a.scribbles) + list(b.scribbles), list(a.polygons) + list(b.polygons),
        orm(a.mask, b.mask), orm(a.negative_mask, b.negative_mask),
        list(a.negative_scribbles) + list(b.negative_scribbles))


def _click_key(point) -> Tuple[float, float]:
    """A click's key in the per-image cache of answers to clicks alone (_alone_answers)."""
    x, y = np.asarray(point, np.float64).reshape(2)
    return float(x), float(y)


def _lone_click(p: VisualPrompt) -> bool:
    """One positive click and nothing else."""
    pts = _positive_points(p)
    return (pts is not None and len(pts) == 1 and len(np.asarray(p.points).reshape(-1, 2)) == 1
            and dataclasses.replace(p, points=None, labels=None).is_empty())


def _has_positive(p: VisualPrompt) -> bool:
    if p.points is not None and np.asarray(p.points).size:
        lab = np.ones(len(np.asarray(p.points).reshape(-1, 2))) if p.labels is None else np.asarray(p.labels)
        if (lab > 0).any():
            return True
    return bool((p.boxes is not None and np.asarray(p.boxes).size) or p.scribbles or p.polygons or p.mask is not None)


def _carve(mask: np.ndarray, p: VisualPrompt, size, radius_frac: float = 0.03) -> np.ndarray:
    """The current mask minus a disc around each negative click (a positive mask prompt would
    otherwise override negatives inside it)."""
    mask = _fit(mask, size).copy()
    if p.points is None or p.labels is None:
        return mask
    pts = np.asarray(p.points, np.float64).reshape(-1, 2)
    lab = np.asarray(p.labels).reshape(-1)
    r = max(2.0, radius_frac * max(size))
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    for (x, y), l in zip(pts, lab):
        if not l:
            mask &= (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 > r * r
    return mask
