"""SEEM v1 decoder (`sem_seg_head.predictor` in the official checkpoints).

One pass of masked-attention decoding over up to four query groups:
object queries, grounding queries (text), spatial queries (visual prompts) and spatial memory
(previous mask). Parameter names follow the official `SEEMDecoder` so checkpoints load strictly.

Determinism (the official code draws these at random):
- spatial query i (i = 0 .. 3*ns-1) starts as a copy of object query i mod num_queries;
- memory slot j (j = 0 .. M-1) belongs to prompt floor(j * ns / M);
- when a prompt image has more than `max_spatial_points` pixels, points are taken evenly spaced in
  row-major order, each prompt getting an equal share (as the official weighted draw does on average);
  below the limit every pixel is used, exactly as in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DecoderConfig
from .position_encoding import PositionEmbeddingSine


class Attention(nn.Module):
    """Multi-head attention with the parameter layout of nn.MultiheadAttention.

    `blocked` is a bool mask [B, Lq, Lk] (True = may not attend). Rows with every key blocked give
    a zero attention output, as the official `softmax(...).nan_to_num()` does."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, blocked: Optional[Tensor] = None) -> Tensor:
        b, lq, d = q.shape
        lk = k.shape[1]
        h = self.heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(q, wq, bq).view(b, lq, h, d // h).transpose(1, 2)
        k = F.linear(k, wk, bk).view(b, lk, h, d // h).transpose(1, 2)
        v = F.linear(v, wv, bv).view(b, lk, h, d // h).transpose(1, 2)
        empty = None
        mask = None
        if blocked is not None:
            empty = blocked.all(-1)                                   # [B, Lq]
            allowed = ~blocked | empty[..., None]                     # keep softmax finite
            mask = allowed[:, None]                                   # broadcast over heads
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, lq, d)
        if empty is not None and bool(empty.any()):
            out = out.masked_fill(empty[..., None], 0.0)
        return self.out_proj(out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, blocked: Tensor) -> Tensor:
        qk = x + pos
        return self.norm(x + self.self_attn(qk, qk, x, blocked))


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.multihead_attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, src: Tensor, src_pos: Tensor, blocked: Tensor) -> Tensor:
        return self.norm(x + self.multihead_attn(x + pos, src + src_pos, src, blocked))


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int, num_layers: int):
        super().__init__()
        dims = [dim_in] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dim_out]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@dataclass
class ImageFeatures:
    """Per-image decoder inputs, computed once and reused by every prompt."""
    mask_features: Tensor            # [B, C, H/4, W/4]
    src: List[Tensor]                # per level [B, h*w, C] (level embed added)
    pos: List[Tensor]                # per level [B, h*w, C]
    sizes: List[tuple]               # per level (h, w)
    level_mask_features: List[Tensor]  # mask_features resized to each level, for attention masks

    @property
    def batch(self) -> int:
        return self.mask_features.shape[0]

    def to(self, device) -> "ImageFeatures":
        mv = lambda xs: [x.to(device) for x in xs]
        return ImageFeatures(self.mask_features.to(device), mv(self.src), mv(self.pos), self.sizes,
                             mv(self.level_mask_features))


@dataclass
class GroundingTokens:
    """Text tokens fed as grounding tokens: all valid tokens of all phrases, concatenated."""
    tokens: Tensor                   # [B, T, C]
    padding: Tensor                  # [B, T] bool, True = padding


@dataclass
class SpatialTokens:
    """Visual-prompt tokens. Built on one image; may be applied to another (referring image)."""
    mean_pos: Tensor                 # [B, ns, C] mean mask feature under each prompt's positive mask
    level_tokens: List[Tensor]       # per level [B, K, C]
    index: Tensor                    # [B, K] long, prompt index of each token, -1 = padding
    num_prompts: int


@dataclass
class DecoderOutput:
    object_masks: Tensor             # [B, Q, H/4, W/4] logits
    object_embeds: Tensor            # [B, Q, C] class embeddings (before normalisation)
    grounding_masks: Optional[Tensor] = None
    grounding_embeds: Optional[Tensor] = None
    spatial_masks: Optional[Tensor] = None       # [B, 3*ns, H/4, W/4]
    spatial_embeds: Optional[Tensor] = None      # [B, 3*ns, C] class embeddings
    spatial_mask_embeds: Optional[Tensor] = None  # [B, 3*ns, C] mask embeddings
    prompt_masks: Optional[Tensor] = None        # [B, ns, H/4, W/4] chosen candidate per prompt
    prompt_embeds: Optional[Tensor] = None       # [B, ns, C] class embedding of that candidate
    prompt_choice: Optional[Tensor] = None       # [B, ns] index of the chosen query in 0..3*ns-1


def sample_points(masks: Tensor, max_points: int) -> tuple[Tensor, Tensor]:
    """Nonzero pixels of prompt masks [ns, H, W] as normalised (y/H, x/W) and prompt index.

    At most `max_points`, shared equally between prompts (see module docstring)."""
    ns, h, w = masks.shape
    nz = masks.nonzero()                                           # row-major, prompt-major
    if nz.shape[0] > max_points:
        counts = torch.bincount(nz[:, 0], minlength=ns).tolist()
        quota = _equal_shares(counts, max_points)
        keep, start = [], 0
        for c, q in zip(counts, quota):
            if q:
                keep.append(start + (torch.arange(q, device=nz.device) * c) // q)
            start += c
        nz = nz[torch.cat(keep)]
    scale = torch.tensor([h, w], device=masks.device, dtype=torch.float32)
    return nz[:, 1:].float() / scale, nz[:, 0]


def _equal_shares(counts: List[int], budget: int) -> List[int]:
    """Water-filling: every prompt gets the same number of points unless it has fewer."""
    quota = [0] * len(counts)
    open_ = [i for i, c in enumerate(counts) if c > 0]
    while open_ and budget > 0:
        share = max(budget // len(open_), 1)
        still = []
        for i in open_:
            take = min(share, counts[i] - quota[i], budget)
            quota[i] += take
            budget -= take
            if quota[i] < counts[i]:
                still.append(i)
        open_ = still
    return quota


def point_sample(features: Tensor, yx: Tensor) -> Tensor:
    """Bilinear sample [B, C, H, W] at normalised (y, x) points [B, K, 2] -> [B, K, C].
    Same convention as the official point_sample (align_corners=True on x/W, y/H)."""
    grid = yx.flip(-1)[:, :, None] * 2.0 - 1.0
    return F.grid_sample(features, grid.to(features.dtype), align_corners=True)[..., 0].transpose(1, 2)


class SeemDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, lang_encoder: nn.Module, dim_proj: int):
        super().__init__()
        d = cfg.hidden_dim
        self.cfg = cfg
        self.num_heads = cfg.nheads
        self.num_queries = cfg.num_queries
        self.pe_layer = PositionEmbeddingSine(d // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d, cfg.nheads) for _ in range(cfg.dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d, cfg.nheads) for _ in range(cfg.dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d, cfg.dim_feedforward) for _ in range(cfg.dec_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_feat = nn.Embedding(cfg.num_queries, d)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.level_embed = nn.Embedding(cfg.num_feature_levels, d)
        self.lang_encoder = lang_encoder
        self.mask_embed = MLP(d, d, cfg.mask_dim, 3)
        self.class_embed = nn.Parameter(torch.empty(d, dim_proj))
        self.mask_sptial_embed = nn.ParameterList(                      # (sic) official name
            nn.Parameter(torch.empty(d, d)) for _ in range(cfg.num_feature_levels))
        self.spatial_embed = nn.Embedding(cfg.num_spatial_memory, d)
        self.spatial_featured = nn.Embedding(cfg.num_spatial_memory, d)
        self.pn_indicator = nn.Embedding(2, d)
        for p in [self.class_embed, *self.mask_sptial_embed]:
            nn.init.trunc_normal_(p, std=0.02)

    # ----------------------------------------------------------------------------- features
    def prepare_features(self, multi_scale: List[Tensor], mask_features: Tensor) -> ImageFeatures:
        """Flatten the pixel decoder's levels for attention (input_proj is identity in SEEM v1)."""
        src, pos, sizes, level_mf = [], [], [], []
        for i, x in enumerate(multi_scale):
            sizes.append(tuple(x.shape[-2:]))
            pos.append(self.pe_layer(x).flatten(2).transpose(1, 2))
            src.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            # Bilinear resizing is linear, so resizing mask features once per level gives the
            # official "predict at H/4 then resize" attention masks at a fraction of the cost.
            level_mf.append(F.interpolate(mask_features, size=sizes[-1], mode="bilinear", align_corners=False))
        return ImageFeatures(mask_features, src, pos, sizes, level_mf)

    # ----------------------------------------------------------------------------- prompts
    def spatial_tokens(self, feats: ImageFeatures, pos_masks: Tensor, neg_masks: Tensor) -> SpatialTokens:
        """Tokens for visual prompts given as positive / negative masks [B, ns, H, W] at padded
        input size (any resolution works: coordinates are normalised)."""
        b, ns = pos_masks.shape[:2]
        c = feats.mask_features.shape[1]
        maxp = self.cfg.max_spatial_points
        means, pts_pos, pts_neg = [], [], []
        for i in range(b):
            yx_p, idx_p = sample_points(pos_masks[i], maxp)
            yx_n, idx_n = sample_points(neg_masks[i], maxp)
            pts_pos.append((yx_p, idx_p))
            pts_neg.append((yx_n, idx_n))
            f = point_sample(feats.mask_features[i:i + 1], yx_p[None])[0]          # [K, C]
            mean = torch.full((ns, c), -1.0, dtype=f.dtype, device=f.device)    # official: -1 if empty
            cnt = torch.bincount(idx_p, minlength=ns)
            if len(idx_p):
                s = torch.zeros((ns, c), dtype=f.dtype, device=f.device).index_add_(0, idx_p, f)
                mean = torch.where(cnt[:, None] > 0, s / cnt.clamp(min=1)[:, None].to(f.dtype), mean)
            means.append(mean)
        level_tokens = []
        for lvl, (src, (h, w)) in enumerate(zip(feats.src, feats.sizes)):
            fmap = (src @ self.mask_sptial_embed[lvl]).transpose(1, 2).reshape(b, -1, h, w)
            toks = []
            for i in range(b):
                yx = torch.cat([pts_pos[i][0], pts_neg[i][0]])
                t = point_sample(fmap[i:i + 1], yx[None])[0]
                npos = len(pts_pos[i][0])
                t = t + torch.where(torch.arange(len(yx), device=t.device)[:, None] < npos,
                                    self.pn_indicator.weight[0], self.pn_indicator.weight[1])
                toks.append(t)
            level_tokens.append(nn.utils.rnn.pad_sequence(toks, batch_first=True))
        # Sampling is deterministic, so every level uses the same points and the same index.
        index = nn.utils.rnn.pad_sequence([torch.cat([p[1], n[1]]) for p, n in zip(pts_pos, pts_neg)],
                                          batch_first=True, padding_value=-1)
        return SpatialTokens(torch.stack(means), level_tokens, index, ns)

    # ----------------------------------------------------------------------------- decoding
    def forward(self, feats: ImageFeatures, grounding: Optional[GroundingTokens] = None,
                spatial: Optional[SpatialTokens] = None, memory: Optional[Tensor] = None) -> DecoderOutput:
        """Decode on cached image features.

        memory: previous mask logits [B, ns, h, w] (any size), one per visual prompt; enables the
        32 memory queries (multi-round refinement, or the previous frame's mask in tracking)."""
        b = feats.batch
        q = self.num_queries
        qf = self.query_feat.weight.expand(b, -1, -1)
        qe = self.query_embed.weight.expand(b, -1, -1)
        if memory is not None and spatial is None:
            raise ValueError("a memory mask needs visual prompts (one previous mask per prompt)")

        # Cross-attention sequence: object | grounding queries | spatial queries | memory.
        outs, poss, groups = [qf], [qe], [("object", q)]
        ns = spatial.num_prompts if spatial is not None else 0
        if grounding is not None:
            outs.append(qf), poss.append(qe), groups.append(("grounding", q))
        if spatial is not None:
            sel = torch.arange(self.cfg.queries_per_prompt * ns, device=qf.device) % q
            outs.append(qf[:, sel]), poss.append(qe[:, sel]), groups.append(("spatial", len(sel)))
        mem_owner = None
        if memory is not None:
            m = self.cfg.num_spatial_memory
            mem_owner = (torch.arange(m, device=qf.device) * ns) // m
            outs.append(self.spatial_featured.weight.expand(b, -1, -1))
            poss.append(self.spatial_embed.weight.expand(b, -1, -1))
            groups.append(("memory", m))
        x = torch.cat(outs, 1)
        x_pos = torch.cat(poss, 1)
        n_cross = x.shape[1]
        # Grounding tokens carry their self-attention/FFN output to the next layer (their position
        # stays the input tokens); spatial tokens are re-set from the current level every layer.
        g_tok = grounding.tokens if grounding is not None else None

        self_blocked = self._self_attention_mask(b, groups, grounding, spatial, mem_owner)
        blocked = self._cross_mask(x, feats, 0, memory, mem_owner, groups)
        nlev = len(feats.src)
        for i in range(self.cfg.dec_layers):
            lvl = i % nlev
            x = self.transformer_cross_attention_layers[i](x, x_pos, feats.src[lvl], feats.pos[lvl], blocked)
            seq, seq_pos = [x], [x_pos]
            if grounding is not None:
                seq.append(g_tok), seq_pos.append(grounding.tokens.detach())
            if spatial is not None:
                st = spatial.level_tokens[lvl]
                seq.append(st), seq_pos.append(st.detach())
            y = torch.cat(seq, 1)
            y = self.transformer_self_attention_layers[i](y, torch.cat(seq_pos, 1), self_blocked)
            y = self.transformer_ffn_layers[i](y)
            x = y[:, :n_cross]
            if g_tok is not None:
                g_tok = y[:, n_cross:n_cross + g_tok.shape[1]]
            if i < self.cfg.dec_layers - 1:
                blocked = self._cross_mask(x, feats, (i + 1) % nlev, memory, mem_owner, groups)
        return self._outputs(x, feats, groups, spatial)

    def _cross_mask(self, x, feats, lvl, memory, mem_owner, groups) -> Tensor:
        """Masked attention: a query sees only where its current mask is >= 0.5."""
        emb = self.mask_embed(self.decoder_norm(x))
        logits = torch.einsum("bqc,bchw->bqhw", emb, feats.level_mask_features[lvl])
        blocked = logits.flatten(2) < 0                      # sigmoid < 0.5
        if memory is not None:
            mem = F.interpolate(memory.to(logits.dtype), size=feats.sizes[lvl], mode="bilinear",
                                align_corners=False)
            start = sum(n for g, n in groups if g != "memory")
            blocked[:, start:] = mem[:, mem_owner].flatten(2) < 0
        return blocked & ~blocked.all(-1, keepdim=True)   # fully blocked rows see everything

    def _self_attention_mask(self, b, groups, grounding, spatial, mem_owner) -> Tensor:
        """Allowed pairs (see the reference's 'who may attend whom'), returned as blocked.
        Sequence order: the cross-attention queries, then grounding tokens, then spatial tokens
        (the official order differs, which attention does not see: it is permutation-equivariant)."""
        q = self.num_queries
        qpp = self.cfg.queries_per_prompt
        sizes = dict(groups)
        gt = grounding.tokens.shape[1] if grounding is not None else 0
        st = spatial.index.shape[1] if spatial is not None else 0
        order = [("object", q), ("grounding", sizes.get("grounding", 0)), ("spatial", sizes.get("spatial", 0)),
                 ("memory", sizes.get("memory", 0)), ("gtokens", gt), ("stokens", st)]
        off, o = {}, 0
        for name, n in order:
            off[name] = slice(o, o + n)
            o += n
        dev = self.query_feat.weight.device
        allowed = torch.zeros((b, o, o), dtype=torch.bool, device=dev)
        allowed[:, off["object"], off["object"]] = True
        if grounding is not None:
            valid = ~grounding.padding                                    # [B, T]
            allowed[:, off["grounding"], off["grounding"]] = True
            allowed[:, off["grounding"], off["gtokens"]] = valid[:, None, :]
            allowed[:, off["gtokens"], off["grounding"]] = valid[:, :, None]
            allowed[:, off["gtokens"], off["gtokens"]] = valid[:, :, None] & valid[:, None, :]
        if spatial is not None:
            owner = torch.arange(sizes["spatial"], device=dev) // qpp          # prompt of each query
            idx = spatial.index                                                # [B, K]
            allowed[:, off["spatial"], off["spatial"]] = owner[:, None] == owner[None, :]
            allowed[:, off["spatial"], off["stokens"]] = owner[None, :, None] == idx[:, None, :]
            # Padding tokens (-1) see each other, as in the official layout; nothing sees them.
            allowed[:, off["stokens"], off["stokens"]] = idx[:, :, None] == idx[:, None, :]
            if mem_owner is not None:
                allowed[:, off["spatial"], off["memory"]] = owner[:, None] == mem_owner[None, :]
                allowed[:, off["memory"], off["memory"]] = mem_owner[:, None] == mem_owner[None, :]
        return ~allowed

    def _outputs(self, x, feats, groups, spatial) -> DecoderOutput:
        h = self.decoder_norm(x)
        cls = h @ self.class_embed
        memb = self.mask_embed(h)
        o, parts = 0, {}
        for name, n in groups:
            parts[name] = slice(o, o + n)
            o += n
        mf = feats.mask_features
        masks = lambda s: torch.einsum("bqc,bchw->bqhw", memb[:, s], mf)
        out = DecoderOutput(object_masks=masks(parts["object"]), object_embeds=cls[:, parts["object"]])
        if "grounding" in parts:
            out.grounding_masks = masks(parts["grounding"])
            out.grounding_embeds = cls[:, parts["grounding"]]
        if "spatial" in parts:
            s = parts["spatial"]
            out.spatial_masks = masks(s)
            out.spatial_embeds = cls[:, s]
            out.spatial_mask_embeds = memb[:, s]
            # Per prompt, the candidate whose mask embedding best matches the prompt's mean feature.
            ns, qpp = spatial.num_prompts, self.cfg.queries_per_prompt
            score = torch.einsum("bqc,bnc->bqn", out.spatial_mask_embeds, spatial.mean_pos.to(memb.dtype))
            owner = torch.arange(ns * qpp, device=x.device) // qpp
            score = score.masked_fill(owner[:, None] != torch.arange(ns, device=x.device)[None], float("-inf"))
            choice = score.argmax(1)                                           # [B, ns]
            bi = torch.arange(x.shape[0], device=x.device)[:, None]
            out.prompt_choice = choice
            out.prompt_masks = out.spatial_masks[bi, choice]
            out.prompt_embeds = out.spatial_embeds[bi, choice]
        return out

