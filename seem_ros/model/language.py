"""CLIP-style text encoder and tokenizer of SEEM v1 (`sem_seg_head.predictor.lang_encoder.*`).

Causal transformer (QuickGELU, TF-style LayerNorm with eps 1e-12 inside the square root), 77 tokens.
Token embeddings = ln_final output @ lang_proj; the phrase embedding is taken at the EOT token."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LanguageConfig

SOT, EOT = 49406, 49407
PAD = EOT  # the HF CLIP tokenizer used by SEEM pads with <|endoftext|>

# The CLIP prompt templates used when embedding a vocabulary (averaged per class name).
TEMPLATES = ( '{}.', 'a photo of a {}.', 'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.', 'a photo of the hard to see {}.', 'a low resolution photo of the {}.', 'a rendering of a {}.', 'graffiti of a {}.', 'a bad photo of the {}.', 'a cropped photo of the {}.', 'a tattoo of a {}.', 'the embroidered {}.', 'a photo of a hard to see {}.', 'a bright photo of a {}.', 'a photo of a clean {}.', 'a photo of a dirty {}.', 'a dark photo of the {}.', 'a drawing of a {}.', 'a photo of my {}.', 'the plastic {}.', 'a photo of the cool {}.', 'a close-up photo of a {}.', 'a black and white photo of the {}.', 'a painting of the {}.', 'a painting of a {}.', 'a pixelated photo of the {}.', 'a sculpture of the {}.', 'a bright photo of the {}.', 'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.', 'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.', 'a photo of the {}.', 'a good photo of the {}.', 'a rendering of the {}.', 'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.', 'a close-up photo of the {}.', 'the origami {}.', 'the {} in a video game.', 'a sketch of a {}.', 'a doodle of the {}.', 'a origami {}.', 'a low resolution photo of a {}.', 'the toy {}.', 'a rendition of the {}.', 'a photo of the clean {}.', 'a photo of a large {}.', 'a rendition of a {}.', 'a photo of a nice {}.', 'a photo of a weird {}.', 'a blurry photo of a {}.', 'a cartoon {}.', 'art of a {}.', 'a sketch of the {}.', 'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.', 'a jpeg corrupted photo of the {}.', 'a good photo of a {}.', 'a plushie {}.', 'a photo of the nice {}.', 'a photo of the small {}.', 'a photo of the weird {}.', 'the cartoon {}.', 'art of the {}.', 'a drawing of the {}.', 'a photo of the large {}.', 'a black and white photo of a {}.', 'the plushie {}.', 'a dark photo of a {}.', 'itap of a {}.', 'graffiti of the {}.', 'a toy {}.', 'itap of my {}.', 'a photo of a cool {}.', 'a photo of a small {}.', 'a tattoo of the {}.',)


class Tokenizer:
    """CLIP BPE ids (instant-clip-tokenizer ships the vocabulary), padded to the context length.
    Returns input_ids [N, L] and attention_mask [N, L] as the HF tokenizer call in SEEM does."""

    def __init__(self, context_length: int = 77):
        from instant_clip_tokenizer import Tokenizer as _Bpe
        self.bpe = _Bpe()
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> Tuple[Tensor, Tensor]:
        n, L = len(texts), self.context_length
        ids = torch.full((n, L), PAD, dtype=torch.long)
        att = torch.zeros((n, L), dtype=torch.long)
        for i, t in enumerate(texts):
            toks = [SOT] + list(self.bpe.encode(" ".join(t.lower().split())))[: L - 2] + [EOT]
            ids[i, :len(toks)] = torch.tensor(toks)
            att[i, :len(toks)] = 1
        return ids, att


class LayerNorm(nn.Module):
    """TF-style LayerNorm (epsilon inside the square root), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dt = x.dtype
        x = x.float()
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)).to(dt) + self.bias


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_1 = LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(dim, dim * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(dim * 4, dim))
        self.ln_2 = LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln_final = LayerNorm(cfg.width)
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        # Causal (AUTOGRESSIVE) mask: a plain attribute, not in the state_dict, as officially.
        self._causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)

    def forward(self, input_ids: Tensor) -> Tensor:
        L = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:L]
        mask = self._causal[:L, :L].to(x.device, x.dtype)
        for blk in self.resblocks:
            x = blk(x, mask)
        return self.ln_final(x)


class TextEncoder(nn.Module):
    """`lang_encoder` of the SEEM predictor: transformer + projection + temperature."""

    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.cfg = cfg
        self.lang_encoder = Transformer(cfg)
        self.lang_proj = nn.Parameter(torch.empty(cfg.width, cfg.proj_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)
        self._tokenizer = None

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.cfg.context_length)
        return self._tokenizer

    def encode_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """(token embeddings [N, L, D], EOT class embeddings [N, D]), both unnormalised
        (official get_text_token_embeddings with norm=False). The causal mask makes padding
        irrelevant to valid tokens, so attention_mask only selects tokens downstream."""
        x = self.lang_encoder(input_ids)
        cls = x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(-1)]
        return x @ self.lang_proj, cls @ self.lang_proj

    @torch.no_grad()
    def encode_vocabulary(self, names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> Tensor:
        """One unit vector per class name: every template embedded and normalised, averaged,
        re-normalised (official get_text_embeddings with is_eval=True, prompt=True)."""
        dev = self.lang_proj.device
        out = []
        for name in names:
            clean = name.replace("-other", "").replace("-merged", "").replace("-stuff", "")
            ids, att = self.tokenizer([t.format(clean) for t in templates])
            _, cls = self.encode_tokens(ids.to(dev), att.to(dev))
            cls = cls / (cls.norm(dim=-1, keepdim=True) + 1e-7)
            m = cls.mean(0)
            out.append(m / m.norm())
        return torch.stack(out)
