"""Encode an image once, then answer any number of prompts on the cached features.

Modelled on SAM's predictor: `set_image` runs the backbone and pixel decoder (the expensive part)
and keeps the result; every `predict_*` call runs only the prompt decoder. Results come back at the
original image resolution."""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..geometry.pose import mask_box
from ..model.decoder import DecoderOutput, ImageFeatures, SpatialTokens
from ..model.language import Tokenizer
from ..model.seem import SeemModel
from .prompts import PromptError, VisualPrompt, rasterize, resize_mask

BACKGROUND = "background"
ENGINES = ("torch", "onnxruntime")
OTHERS = "others"


@dataclass
class ImageEmbedding:
    """Cached features of one image plus the geometry needed to map results back."""
    features: ImageFeatures
    orig_size: Tuple[int, int]        # (H, W) of the input image
    input_size: Tuple[int, int]       # after resizing to the short side
    padded_size: Tuple[int, int]      # after padding to a multiple of 32
    colour: Optional[Tensor] = None   # [3, h, w] mean RGB (0..1) per cell of the mask-feature grid
    image: Optional[np.ndarray] = None  # [H, W, 3] the image itself, not copied (zoomed predictions crop it)


@dataclass
class Segmentation:
    """N masks at the original resolution, with everything the node and the tracker need."""
    masks: np.ndarray                 # [N, H, W] bool
    scores: np.ndarray                # [N] mask confidence: mean foreground probability inside the mask
    labels: List[str]                 # [N] vocabulary label ("others" when no class fits), or phrase
    label_ids: np.ndarray             # [N] index into the vocabulary, -1 for "others"/phrases
    label_scores: np.ndarray          # [N] probability of the label (text: cosine similarity)
    embeddings: np.ndarray            # [N, C] normalised query class embedding (appearance/identity)
    logits: Tensor                    # [N, H/4, W/4] low-res mask logits: memory for the next round
    query_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.masks)


@dataclass
class Zoom:
    """A crop of an image encoded on its own (`SeemPredictor.predict_zoomed`): one object seen
    larger. The caller keeps it between corrective rounds on the same image, so that the crop is
    encoded once while it still covers the object and the clicks."""
    box: Tuple[int, int, int, int]    # x0, y0, x1, y1 (exclusive) in the full image
    source: "weakref.ref"             # the full image's ImageEmbedding
    embedding: ImageEmbedding         # the crop's
    logits: Tensor                    # [h, w] the last round's logits on the crop's grid: its memory


# Crop of a zoomed prediction: the object's and the prompt's box grown this much, at least this
# fraction of the image's width, with the image's aspect ratio. Chosen on tuning scenes (seeds
# 950000+), clicks with the bundled model: NoC@85 10.39 -> 6.41 (1.6, 1/3); 6.94 (1.3, 1/4),
# 6.67 (2.0, 1/3), 6.73 (1.6, 1/2).
ZOOM_EXPAND = 1.6
ZOOM_MIN_FRACTION = 1 / 3


def zoom_box(mask: Optional[np.ndarray], prompt: VisualPrompt, size: Tuple[int, int],
             expand: float = ZOOM_EXPAND, min_fraction: float = ZOOM_MIN_FRACTION) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the crop around `mask` ([H, W] bool, may be None) and everything
    `prompt` marks, grown by `expand`, at least `min_fraction` of the image wide, with the
    image's aspect ratio, moved inside the image."""
    h, w = size
    pts = prompt.extent()
    pts = np.zeros((0, 2)) if pts is None else np.clip(pts, 0, (w, h))
    b = None if mask is None else mask_box(mask)
    if b is not None:
        pts = np.concatenate([pts, np.reshape(b, (2, 2))])
    if not len(pts):
        raise PromptError("nothing to zoom on: an empty mask and a prompt that marks nothing")
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    cw = min(max((x1 - x0) * expand, (y1 - y0) * expand * w / h, min_fraction * w), w)
    ch = cw * h / w
    cx, cy = np.clip((x0 + x1) / 2, cw / 2, w - cw / 2), np.clip((y0 + y1) / 2, ch / 2, h - ch / 2)
    return (max(0, int(np.floor(cx - cw / 2))), max(0, int(np.floor(cy - ch / 2))),
            min(w, int(np.ceil(cx + cw / 2))), min(h, int(np.ceil(cy + ch / 2))))


def _keep_largest_part(seg: np.ndarray, sid: int) -> None:
    """Sets to 0 every 4-connected part of segment `sid` in `seg` but its largest (on the
    segment's bounding box)."""
    m = seg == sid
    b = mask_box(m)
    if b is None:
        return
    box = (slice(b[1], b[3]), slice(b[0], b[2]))
    lab, n = ndimage.label(m[box])
    if n > 1:
        big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        seg[box][(lab > 0) & (lab != big)] = 0


@dataclass
class Panoptic:
    segments: np.ndarray              # [H, W] int32, 0 = no segment, k = segments[k-1]
    ids: np.ndarray                   # [S] segment ids 1..S
    label_ids: np.ndarray             # [S] vocabulary index
    labels: List[str]
    scores: np.ndarray                # [S]


MAX_ASPECT = 4.0     # longest model input side, in short sides (see SeemPredictor.input_size)


class SeemPredictor:
    def __init__(self, model: SeemModel, device: str | torch.device = "cpu", short_side: Optional[int] = None,
                 vocabulary: Sequence[str] = (), point_radius: int = 1, dtype: torch.dtype = torch.float32,
                 engine: str = "torch", background_export: bool = False):
        """engine: what runs the image encoder, "torch" or "onnxruntime" (CPU, float32: an ONNX
        graph per input size, exported on first use and cached; `onnx_encoder`). With
        background_export a size's first frames are encoded by torch while its graph is
        exported by another process."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.onnx_encoder = None      # OnnxImageEncoder with engine "onnxruntime"
        if engine == "onnxruntime":
            if self.device.type != "cpu" or dtype != torch.float32:
                raise ValueError("engine 'onnxruntime' runs on the CPU in float32: use device cpu and fp32")
            from .onnx_encoder import OnnxImageEncoder
            self.onnx_encoder = OnnxImageEncoder(self.model, background=background_export)
        self.engine = engine
        # On the CPU the backbone's convolutions run on channels-last tensors without the layout
        # copies around each one (encoder 6-10 % faster on this 2-core machine, same values to 1e-5).
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dtype = dtype
        self.short_side = short_side or model.cfg.short_side
        self.point_radius = point_radius
        self.tokenizer = Tokenizer(model.cfg.language.context_length)
        self.embedding: Optional[ImageEmbedding] = None
        self.vocabulary: List[str] = []
        self._vocab_emb: Optional[Tensor] = None
        self._vocab_cache: dict = {}
        self._queries = None          # (embedding, vocabulary, result) of the last object-query decode
        self._axes: dict = {}         # upsampling weights per axis geometry (`foreground`)
        if vocabulary:
            self.set_vocabulary(vocabulary)

    # ----------------------------------------------------------------- image
    def input_size(self, h: int, w: int) -> Tuple[int, int]:
        """The short side to `short_side`, the long side at most MAX_ASPECT times that (as
        Detectron2's max_size): a 2x5000 strip would otherwise become 240 x 600,000 pixels, minutes
        of encoding. Cameras (4:3, 16:9, 2:1 panoramas) are not affected."""
        s = min(self.short_side / min(h, w), MAX_ASPECT * self.short_side / max(h, w))
        return max(int(round(h * s)), 1), max(int(round(w * s)), 1)

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        """image: [H, W, 3] uint8 RGB. Runs the image encoder once and caches the result."""
        self.embedding = self.encode(image)
        return self.embedding

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """set_image without making the result the current image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        ih, iw = self.input_size(h, w)
        # A ROS message's pixels are a read-only buffer, which torch warns about; copying it
        # (33 us at 640x480, next to 240 us for .float()) is thread-safe, unlike muting warnings.
        image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        if (ih, iw) != (h, w):
            # Bicubic with antialias on the uint8 image, on the CPU, as the official demo's PIL
            # resize (torch's uint8 kernel follows PIL's arithmetic): 0.9 ms at 640x480 where
            # the float32 kernel took 5.4 (1.7 and 8.8 ms at 1280x720), and a smaller image to
            # move to the device.
            x = F.interpolate(x, size=(ih, iw), mode="bicubic", antialias=True, align_corners=False)
        x = x.to(self.device).float()
        feats = None if self.onnx_encoder is None else self.onnx_encoder.encode(x)
        if feats is None:             # torch engine, or no ONNX graph for this size (yet)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.model.encode_image(x)
        h4, w4 = feats.mask_features.shape[-2:]
        # The image's own colours on the feature grid: the tracker tells a green object from a
        # black one by them (the features' appearance barely does).
        col = F.avg_pool2d(x[0] / 255.0, 4, ceil_mode=True)[:, :h4, :w4]
        col = F.pad(col, (0, w4 - col.shape[-1], 0, h4 - col.shape[-2]))
        return ImageEmbedding(feats, (h, w), (ih, iw), (h4 * 4, w4 * 4), col, image)

    def _emb(self, embedding: Optional[ImageEmbedding]) -> ImageEmbedding:
        emb = embedding or self.embedding
        if emb is None:
            raise RuntimeError("no image: call set_image first")
        return emb

    # ----------------------------------------------------------------- vocabulary
    @torch.inference_mode()
    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Class names for labels, panoptic and semantic output. Embeddings are computed once per
        name (prompt templates averaged) and cached; "background" is appended as no-object."""
        names = [n.strip() for n in names if n and n.strip()]
        missing = [n for n in names + [BACKGROUND] if n not in self._vocab_cache]
        if missing:
            emb = self.model.text_encoder.encode_vocabulary(missing)
            self._vocab_cache.update(zip(missing, emb))
        self.vocabulary = list(names)
        self._vocab_emb = torch.stack([self._vocab_cache[n] for n in names + [BACKGROUND]])

    def _labels(self, embeds: Tensor) -> Tuple[List[str], np.ndarray, np.ndarray]:
        if self._vocab_emb is None or not self.vocabulary:
            n = len(embeds)
            return [OTHERS] * n, np.full(n, -1), np.zeros(n, np.float32)
        prob = self.model.similarity(embeds, self._vocab_emb, clamp=False).softmax(-1)
        score, idx = prob.max(-1)
        idx = idx.cpu().numpy()
        nv = len(self.vocabulary)
        labels = [self.vocabulary[i] if i < nv else OTHERS for i in idx]
        return labels, np.where(idx < nv, idx, -1), score.float().cpu().numpy()

    # ----------------------------------------------------------------- outputs
    def upsample(self, logits: Tensor, emb: ImageEmbedding) -> Tensor:
        """Low-res logits [N, h, w] -> logits at the original size [N, H, W], as the official
        post-processing: bilinear to padded size, crop, bicubic to the original size."""
        if logits.shape[0] == 0:
            return logits.new_zeros((0, *emb.orig_size))
        x = F.interpolate(logits[None].float(), size=emb.padded_size, mode="bilinear", align_corners=False)
        x = x[..., :emb.input_size[0], :emb.input_size[1]]
        if emb.input_size != emb.orig_size:
            x = F.interpolate(x, size=emb.orig_size, mode="bicubic", align_corners=False,
                              antialias=emb.orig_size[0] < emb.input_size[0])
        return x[0]

    def _axis_weights(self, n_low: int, n_pad: int, n_in: int, n_out: int) -> Tuple[Tensor, np.ndarray, np.ndarray]:
        """`upsample` along one axis as a matrix [n_out, n_low] (both of its interpolations are
        separable and linear), with, per low-res index, the first and last output index it
        reaches, and per output index the low-res span it reads (cached per geometry)."""
        key = (n_low, n_pad, n_in, n_out)
        hit = self._axes.get(key)
        if hit is None:
            # One channel per low-res index, constant along a second axis that is not resized
            # (of size 8: the antialiased kernel mishandles a second axis of size 1).
            e = torch.eye(n_low)[None, :, :, None].expand(1, n_low, n_low, 8).contiguous()
            x = F.interpolate(e, size=(n_pad, 8), mode="bilinear", align_corners=False)[:, :, :n_in]
            if n_in != n_out:
                x = F.interpolate(x, size=(n_out, 8), mode="bicubic", align_corners=False, antialias=n_out < n_in)
            a = x[0, :, :, 0].T.contiguous()                                     # [n_out, n_low]
            nz = (a != 0).numpy()
            reach = np.stack([nz.argmax(0), n_out - nz[::-1].argmax(0)], 1)    # [n_low, 2] output span
            reads = np.stack([nz.argmax(1), n_low - nz[:, ::-1].argmax(1)], 1)  # [n_out, 2] low-res span
            hit = self._axes[key] = (a, reach, reads)
        return hit

    def foreground(self, logits: Tensor, emb: ImageEmbedding) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foreground probability [N, H, W] float32, masks (logit > 0, [N, H, W] bool) and each
        mask's mean probability [N] at the original size: the values of `upsample` (to ~1e-5),
        computed only where the upsampling reads a positive low-res logit (one cell of margin),
        elsewhere 0 and False. An object covers a small part of the image, and the whole-image
        bicubic pass cost 2.6 ms a mask on a 2-core CPU. Measured on tracked sequences: none of
        958,000 foreground pixels lay outside (bicubic overshoot could in principle make one; it
        never did). Not for panoptic or semantic output, where every pixel's argmax counts."""
        n = logits.shape[0]
        H, W = emb.orig_size
        prob = np.zeros((n, H, W), np.float32)    # zeroing it is most of the rest (1.6 ms at N = 10)
        masks = np.zeros((n, H, W), bool)
        scores = np.zeros(n, np.float32)
        if n == 0:
            return prob, masks, scores
        h4, w4 = logits.shape[-2:]
        ay, ry, ly = self._axis_weights(h4, emb.padded_size[0], emb.input_size[0], H)
        ax, rx, lx = self._axis_weights(w4, emb.padded_size[1], emb.input_size[1], W)
        # On the CPU, in torch: numpy's BLAS would start a second thread pool next to torch's,
        # and on a 2-core machine the two pools then spin against each other.
        low = logits.detach().float().cpu()
        pos = (low > 0).numpy()
        rows, cols = pos.any(2), pos.any(1)
        for i in range(n):
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            if not len(ys):
                continue
            # output rows / columns any positive cell (+1 of margin) reaches, and what they read
            r0, r1 = ry[max(ys[0] - 1, 0), 0], ry[min(ys[-1] + 1, h4 - 1), 1]
            c0, c1 = rx[max(xs[0] - 1, 0), 0], rx[min(xs[-1] + 1, w4 - 1), 1]
            a0, a1 = ly[r0, 0], ly[r1 - 1, 1]
            b0, b1 = lx[c0, 0], lx[c1 - 1, 1]
            block = (ay[r0:r1, a0:a1] @ low[i, a0:a1, b0:b1] @ ax[c0:c1, b0:b1].T).numpy()
            m = block > 0
            with np.errstate(over="ignore"):
                p = 1.0 / (1.0 + np.exp(-block))
            prob[i, r0:r1, c0:c1] = p
            masks[i, r0:r1, c0:c1] = m
            scores[i] = p[m].mean() if m.any() else 0.0
        return prob, masks, scores

    def _result(self, logits: Tensor, embeds: Tensor, emb: ImageEmbedding, query_index: Tensor,
                labels=None, label_ids=None, label_scores=None) -> Segmentation:
        _, masks, scores = self.foreground(logits, emb)
        if labels is None:
            labels, label_ids, label_scores = self._labels(embeds)
        e = embeds / (embeds.norm(dim=-1, keepdim=True) + 1e-7)
        return Segmentation(masks, scores.astype(np.float32), list(labels), np.asarray(label_ids),
                            np.asarray(label_scores, np.float32), e.float().cpu().numpy(), logits.detach(),
                            query_index.cpu().numpy())

    # ----------------------------------------------------------------- text
    @torch.inference_mode()
    def predict_text(self, phrases: Sequence[str], embedding: Optional[ImageEmbedding] = None) -> Segmentation:
        """One mask per phrase: the grounding query whose embedding best matches the phrase."""
        emb = self._emb(embedding)
        phrases = [p.strip() for p in phrases]
        if not phrases or not all(phrases):
            raise ValueError("text prompt needs at least one non-empty phrase")
        ids, att = self.tokenizer(phrases)
        grounding, class_emb = self.model.grounding_tokens(ids.to(self.device), att.to(self.device))
        out = self.model.decode(emb.features, grounding=grounding)
        sim = self.model.similarity(out.grounding_embeds[0], class_emb)        # [Q, P]
        best = sim.argmax(0)                                                   # [P]
        v = out.grounding_embeds[0, best]
        cos = F.cosine_similarity(v, class_emb, dim=-1)
        return self._result(out.grounding_masks[0, best], v, emb, best, labels=phrases,
                            label_ids=np.full(len(phrases), -1), label_scores=cos.float().cpu().numpy())

    # ----------------------------------------------------------------- visual prompts
    def spatial_tokens(self, prompts: Sequence[VisualPrompt], embedding: Optional[ImageEmbedding] = None) -> SpatialTokens:
        emb = self._emb(embedding)
        if not prompts:
            raise ValueError("no visual prompt given")
        pos, neg = rasterize(prompts, emb.orig_size, emb.input_size, emb.padded_size, self.point_radius)
        pos = torch.from_numpy(pos)[None].to(self.device)
        neg = torch.from_numpy(neg)[None].to(self.device)
        return self.model.spatial_tokens(emb.features, pos, neg)

    @torch.inference_mode()
    def predict(self, prompts: Sequence[VisualPrompt], memory: Optional[Tensor] = None,
                embedding: Optional[ImageEmbedding] = None, tokens: Optional[SpatialTokens] = None) -> Segmentation:
        """One mask per visual prompt, all prompts in one decoder pass.

        memory: previous low-res logits [ns, h, w] (a Segmentation's `logits`) for multi-round
        refinement, or the previous frame's masks when tracking. tokens: precomputed spatial tokens,
        e.g. from a reference image (then `prompts` may be empty)."""
        emb = self._emb(embedding)
        if tokens is None:
            tokens = self.spatial_tokens(prompts, emb)
        if memory is not None:
            memory = memory.to(self.device, self.dtype)
            if memory.dim() == 2:
                memory = memory[None]
            if memory.shape[0] != tokens.num_prompts:
                raise ValueError(f"{memory.shape[0]} memory masks for {tokens.num_prompts} prompts")
            memory = memory[None]
        out = self.model.decode(emb.features, spatial=tokens, memory=memory)
        return self._result(out.prompt_masks[0], out.prompt_embeds[0], emb, out.prompt_choice[0])

    @torch.inference_mode()
    def mask_memory(self, masks: np.ndarray, embedding: Optional[ImageEmbedding] = None) -> Tensor:
        """Masks [N, H, W] (or one [H, W]) as memory logits [N, h, w] on the embedding's grid,
        as training feeds a previous mask: rasterised at the padded input size, +-4, averaged
        down to the mask-feature grid."""
        emb = self._emb(embedding)
        masks = np.asarray(masks, bool).reshape(-1, *emb.orig_size)
        (ih, iw), (ph, pw) = emb.input_size, emb.padded_size
        pos = np.zeros((len(masks), ph, pw), bool)
        for p, m in zip(pos, masks):
            p[:ih, :iw] = resize_mask(m, (ih, iw))
        mem = torch.from_numpy(pos).to(self.device).float() * 8 - 4
        return F.adaptive_avg_pool2d(mem, emb.features.mask_features.shape[-2:])

    @torch.inference_mode()
    def predict_zoomed(self, prompt: VisualPrompt, mask: Optional[np.ndarray] = None,
                       embedding: Optional[ImageEmbedding] = None,
                       zoom: Optional[Zoom] = None) -> Tuple[Segmentation, Zoom]:
        """One object's prompt answered on a crop around its current `mask` and the prompt
        (`zoom_box`), the crop encoded at the model's input size: the object is seen up to three
        times larger. For corrective clicks, where it counts: at full size later clicks barely
        change the mask (tuning scenes, NoC@85 10.39 -> 6.41), while a first prompt gains
        nothing. `mask` (the result of the round before, at full size) is the memory prompt;
        pass the returned `Zoom` back with the next round on the same image, which reuses the
        crop's encoding and its logits as memory while the crop still covers everything. One
        more image encoding per new crop. The result is at full size: masks pasted, logits on
        the full image's grid (the next frame's memory)."""
        emb = self._emb(embedding)
        if emb.image is None:
            raise ValueError("predict_zoomed needs the embedding's image (made by set_image / encode)")
        box = zoom_box(mask, prompt, emb.orig_size)
        x0, y0, x1, y1 = box
        if zoom is not None and zoom.source() is emb and zoom.box == box:
            crop, memory = zoom.embedding, zoom.logits[None]
        else:
            crop = self.encode(emb.image[y0:y1, x0:x1])
            inside = None if mask is None else np.asarray(mask, bool)[y0:y1, x0:x1]
            memory = self.mask_memory(inside, crop) if inside is not None and inside.any() else None
        seg = self.predict([prompt.cropped(box)], memory=memory, embedding=crop)
        # Outside the crop: background, below the memory encoding's -4 so that it stays so.
        full = torch.full((1, *emb.orig_size), -8.0, device=self.device)
        full[:, y0:y1, x0:x1] = self.upsample(seg.logits.float(), crop)
        masks = np.zeros((1, *emb.orig_size), bool)
        masks[:, y0:y1, x0:x1] = seg.masks
        out = Segmentation(masks, seg.scores, seg.labels, seg.label_ids, seg.label_scores, seg.embeddings,
                           self._downsample(full, emb), seg.query_index)
        return out, Zoom(box, weakref.ref(emb), crop, seg.logits[0])

    def _downsample(self, full: Tensor, emb: ImageEmbedding) -> Tensor:
        """Logits at the original size [N, H, W] -> the embedding's grid [N, h, w] (the inverse
        of `upsample`, padding as background)."""
        x = F.interpolate(full[None], size=emb.input_size, mode="bilinear", align_corners=False,
                          antialias=True)
        ph, pw = emb.padded_size
        x = F.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2]), value=float(full.min()))
        return F.adaptive_avg_pool2d(x, emb.features.mask_features.shape[-2:])[0].to(self.dtype)

    @torch.inference_mode()
    def reference_tokens(self, prompts: Sequence[VisualPrompt], embedding: ImageEmbedding) -> SpatialTokens:
        """Prompt tokens taken on a reference image, to segment the same things on other images
        (pass them as `predict(tokens=...)`)."""
        return self.spatial_tokens(prompts, embedding)

    # ----------------------------------------------------------------- generic segmentation
    @torch.inference_mode()
    def _object_queries(self, emb: ImageEmbedding) -> Tuple[Tensor, Tensor, Tensor]:
        """Class logits [Q, K+1] (compute_similarity: unclamped temperature), mask logits, embeds."""
        if self._vocab_emb is None or not self.vocabulary:
            raise RuntimeError("generic segmentation needs a vocabulary: call set_vocabulary")
        # panoptic(), semantic() and instances() of one image share one decoder pass (the node
        # asks for both panoptic and semantic every frame); keyed by image and vocabulary.
        q = self._queries
        if q is not None and q[0] is emb and q[1] is self._vocab_emb:
            return q[2]
        out = self.model.decode(emb.features)
        cls = self.model.similarity(out.object_embeds[0], self._vocab_emb, clamp=False)
        res = (cls, out.object_masks[0], out.object_embeds[0])
        self._queries = (emb, self._vocab_emb, res)
        return res

    @torch.inference_mode()
    def panoptic(self, embedding: Optional[ImageEmbedding] = None, score_threshold: Optional[float] = None,
                 overlap_threshold: float = 0.8, stuff: Sequence[str] = (), largest_part: bool = False) -> Panoptic:
        """Official panoptic inference over the current vocabulary: keep confident non-background
        queries, assign each pixel to argmax(score * prob), drop mostly-hidden segments, merge stuff.
        score_threshold None: the checkpoint's (`SeemConfig.panoptic_threshold`). `largest_part`
        (not in the official code; the node sets it): a thing segment keeps only its largest
        connected part, the rest is no segment (a query's mask often holds blobs on other objects;
        held-out PQ 0.26 -> 0.28, SQ 0.64 -> 0.72 with the bundled model)."""
        if score_threshold is None:
            score_threshold = self.model.cfg.panoptic_threshold
        emb = self._emb(embedding)
        cls, masks, _ = self._object_queries(emb)
        scores, labels = cls.softmax(-1).max(-1)
        keep = (labels != len(self.vocabulary)) & (scores > score_threshold)
        h, w = emb.orig_size
        seg = np.zeros((h, w), np.int32)
        ids, lids, names, scs = [], [], [], []
        if keep.any():
            prob = self.upsample(masks[keep], emb).sigmoid()
            sc, lab = scores[keep], labels[keep]
            owner = (sc[:, None, None] * prob).argmax(0)
            stuff_ids: dict = {}
            segt = torch.zeros((h, w), dtype=torch.int32, device=prob.device)
            for k in range(len(sc)):
                own = owner == k
                orig = prob[k] >= 0.5
                m = own & orig
                area, oarea = int(own.sum()), int(orig.sum())
                if area == 0 or oarea == 0 or int(m.sum()) == 0 or area / oarea < overlap_threshold:
                    continue
                name = self.vocabulary[int(lab[k])]
                if name in stuff and name in stuff_ids:
                    segt[m] = stuff_ids[name]
                    continue
                sid = len(ids) + 1
                stuff_ids.setdefault(name, sid) if name in stuff else None
                segt[m] = sid
                ids.append(sid), lids.append(int(lab[k])), names.append(name), scs.append(float(sc[k]))
            seg = segt.cpu().numpy()
            if largest_part:
                for sid, name in zip(ids, names):
                    if name not in stuff:
                        _keep_largest_part(seg, sid)
        return Panoptic(seg, np.asarray(ids, np.int32), np.asarray(lids, np.int64), names, np.asarray(scs, np.float32))

    @torch.inference_mode()
    def semantic(self, embedding: Optional[ImageEmbedding] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Per-pixel class index (into the vocabulary) and its confidence in 0..1."""
        emb = self._emb(embedding)
        cls, masks, _ = self._object_queries(emb)
        prob = cls.softmax(-1)[:, :-1]
        sem = torch.einsum("qc,qhw->chw", prob, masks.sigmoid())              # low-res, then upsample
        full = self.upsample(sem.logit(eps=1e-6), emb).sigmoid()
        conf, idx = full.max(0)
        return idx.cpu().numpy().astype(np.int32), conf.float().cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def instances(self, embedding: Optional[ImageEmbedding] = None, topk: int = 20,
                  min_score: float = 0.0) -> Segmentation:
        """Official instance inference: top-k (query, class) pairs, score = class prob * mask score."""
        emb = self._emb(embedding)
        cls, masks, embeds = self._object_queries(emb)
        prob = cls.softmax(-1)[:, :-1]
        nc = prob.shape[1]
        sc, flat = prob.flatten().topk(min(topk, prob.numel()))
        q, c = flat // nc, flat % nc
        res = self._result(masks[q], embeds[q], emb, q,
                           labels=[self.vocabulary[i] for i in c.tolist()], label_ids=c.cpu().numpy(),
                           label_scores=sc.float().cpu().numpy())
        res.scores = res.scores * res.label_scores
        keep = res.scores >= min_score
        return _select(res, keep)


def _select(r: Segmentation, keep: np.ndarray) -> Segmentation:
    idx = np.nonzero(keep)[0]
    return Segmentation(r.masks[idx], r.scores[idx], [r.labels[i] for i in idx], r.label_ids[idx],
                        r.label_scores[idx], r.embeddings[idx], r.logits[torch.from_numpy(idx)],
                        r.query_index[idx] if len(r.query_index) else r.query_index)
