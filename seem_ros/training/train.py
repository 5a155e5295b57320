"""Train the embedded SEEM (TINY config) on the synthetic world.

    python -m seem_ros.training.train --out runs/tiny            # resumes from runs/tiny/last.pt
    python -m seem_ros.training.train --out runs/tiny --export seem_ros/weights/seem_tiny.pt

Every step trains every prompt the node uses, on one shared image encoding:
  - generic panoptic over the world's vocabulary (object queries, Hungarian matching);
  - referring text ("the red cube": grounding queries);
  - clicks, boxes, scribbles and masks (spatial queries), then one corrective round: a click at
    the centre of the largest error, with the first round's mask as memory;
  - tracking: the previous frame's mask as both mask prompt and memory.
Data is rendered on the fly in a worker process, deterministically from (seed, step), so a resumed
run sees exactly the data of an uninterrupted one. Uses CUDA when present."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.prompts import VisualPrompt, rasterize
from ..model.config import TINY
from ..model.decoder import GroundingTokens
from ..model.language import TEMPLATES, Tokenizer
from ..model.seem import SeemModel
from .clicks import next_click
from .data import PREFIXES, VOCABULARY, Sample, SampleStream, core_phrase
from .losses import downsample, hungarian_all, mask_loss_items, pairwise_mask_cost
from .shape_crops import ShapeCrops

NO_OBJECT_WEIGHT = 0.1
W_CLS, W_MASK = 2.0, 5.0


# The exported weights are run at this many times the training short side (written into their
# SeemConfig.short_side): objects then span more feature cells than in training, and the masks'
# logit grid is finer. Measured on the bundled weights (trained at 240), tuning seeds 950000+
# and tracking seeds 200-247 (README, "Model input size").
EXPORT_SCALE = 1.5


def embedded_config(width: int = 320, height: int = 240):
    """TINY at the training resolution's short side (export() writes the larger size the weights
    are to be run at)."""
    return dataclasses.replace(TINY, short_side=min(width, height))


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, stream: SampleStream):
        self.stream = stream

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        return self.stream.steps(info.id, info.num_workers) if info else iter(self.stream)


def _pad_masks(prompts: List[VisualPrompt], ns: int, size, padded):
    """Rasterised (pos, neg) [ns, Hp, Wp]; prompt slots beyond len(prompts) stay empty."""
    pos = np.zeros((ns, *padded), bool)
    neg = np.zeros((ns, *padded), bool)
    if prompts:
        p, n = rasterize(prompts, size, size, padded)
        pos[:len(prompts)], neg[:len(prompts)] = p, n
    return pos, neg


class Trainer:
    def __init__(self, model: SeemModel, device: torch.device, templates_per_step: int = 4):
        self.model = model
        self.device = device
        self.tok = Tokenizer(model.cfg.language.context_length)
        self.templates_per_step = templates_per_step
        # The vocabulary tokens never change: tokenise once per template.
        names = list(VOCABULARY) + ["background"]
        self.vocab_ids = [self.tok([t.format(n) for n in names]) for t in TEMPLATES]

    def vocab_embeddings(self, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """([K+1, C] class embeddings as inference computes them (normalised template average), over
        a random subset of templates so the encoder learns not to depend on the template; their
        separation loss)."""
        idx = rng.choice(len(self.vocab_ids), self.templates_per_step, replace=False)
        embs = []
        for i in idx:
            ids, att = self.vocab_ids[i]
            _, cls = self.model.text_encoder.encode_tokens(ids.to(self.device), att.to(self.device))
            embs.append(F.normalize(cls, dim=-1))
        embs = torch.stack(embs)                                          # [T, K+1, C]
        return F.normalize(embs.mean(0), dim=-1), self._separation(embs)

    def _separation(self, embs: torch.Tensor) -> torch.Tensor:
        """Each class name under one template must pick itself among all names under another.
        Without it the text encoder, trained from scratch, can collapse names the image side does
        not yet tell apart (the shapes did: cosine 1.00), and a collapsed vocabulary gives the
        image side no gradient to learn them: a trap the class losses alone never leave."""
        t, k = embs.shape[:2]
        scale = self.model.text_encoder.logit_scale.exp().clamp(max=100)
        target = torch.arange(k, device=embs.device)
        loss = [F.cross_entropy(scale * embs[a] @ embs[b].T, target) for a in range(t) for b in range(t) if a != b]
        return torch.stack(loss).mean()

    def _phrase_separation(self, texts: List[str], emb: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The phrases' own separation loss: each phrase must pick its own object words said with
        another prefix ("grasp the red cube" -> "the red cube") among the batch's phrases."""
        cores = [core_phrase(t) for t in texts]
        uniq = sorted(set(cores))
        views = [str(rng.choice(PREFIXES)) + c for c in uniq]
        ids, att = self.tok(views)
        _, v = self.model.text_encoder.encode_tokens(ids.to(self.device), att.to(self.device))
        scale = self.model.text_encoder.logit_scale.exp().clamp(max=100)
        logits = scale * F.normalize(emb, dim=-1) @ F.normalize(v, dim=-1).T
        return F.cross_entropy(logits, torch.tensor([uniq.index(c) for c in cores], device=self.device))

    def losses(self, batch: List[Sample], rng: np.random.Generator) -> dict:
        m, dev = self.model, self.device
        size = batch[0].rgb.shape[:2]
        imgs = torch.from_numpy(np.stack([s.rgb for s in batch])).to(dev).permute(0, 3, 1, 2).float()
        feats = m.encode_image(imgs)
        h4, w4 = feats.mask_features.shape[-2:]
        padded = (h4 * 4, w4 * 4)
        pad = lambda x: F.pad(x, (0, padded[1] - size[1], 0, padded[0] - size[0]))
        # The class losses see the vocabulary detached: they teach the image side to match the
        # names, and never pull names together that the image side cannot yet tell apart (that
        # collapsed the seven shape names into one vector); the text side learns from the
        # separation losses only (the phrases are detached below for the same reason).
        vocab, vocab_sep = self.vocab_embeddings(rng)
        vocab = vocab.detach()
        K = len(VOCABULARY)
        gts = [torch.from_numpy(np.stack([t.mask for t in s.targets])).to(dev) if s.targets
               else torch.zeros((0, *size), dtype=torch.bool, device=dev) for s in batch]
        out = {}

        # ---- text: grounding tokens of every phrase of each image, in the same pass as panoptic
        phrases = [(b, text, ti) for b, s in enumerate(batch) for text, ti in s.phrases]
        grounding = None
        if phrases:
            ids, att = self.tok([p[1] for p in phrases])
            tok_emb, phr_emb = m.text_encoder.encode_tokens(ids.to(dev), att.to(dev))
            out["phrase_sep"] = self._phrase_separation([p[1] for p in phrases], phr_emb, rng)
            # Detached for the reason the vocabulary is (see vocab_embeddings' caller).
            tok_emb, phr_emb = tok_emb.detach(), phr_emb.detach()
            per_img = [[] for _ in batch]
            for j, (b, _, _) in enumerate(phrases):
                per_img[b].append(tok_emb[j][att[j].bool().to(dev)])
            seqs = [torch.cat(x) if x else tok_emb.new_zeros((1, tok_emb.shape[-1])) for x in per_img]
            lens = [sum(len(y) for y in x) for x in per_img]
            tokens = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
            padding = torch.arange(tokens.shape[1], device=dev)[None] >= torch.tensor(lens, device=dev)[:, None]
            grounding = GroundingTokens(tokens, padding)
        dec = m.decode(feats, grounding=grounding)

        # ---- panoptic: object queries matched to objects + table
        cls_logits = m.similarity(dec.object_embeds, vocab, clamp=False)          # [B, Q, K+1]
        labels_of = [torch.tensor([t.vocab_id for t in s.targets], device=dev, dtype=torch.long) for s in batch]
        with torch.no_grad():
            costs = [W_MASK * pairwise_mask_cost(dec.object_masks[b], downsample(pad(gts[b]), (h4, w4)))
                     - W_CLS * cls_logits[b].softmax(-1)[:, labels_of[b]] if s.targets else None
                     for b, s in enumerate(batch)]
        matches = hungarian_all(costs)
        # All images' matched masks in one loss call and all queries' classes in one: on a GPU
        # the step is bound by kernel launches, not arithmetic.
        target_cls = torch.full(cls_logits.shape[:2], K, dtype=torch.long, device=dev)
        sel_logits, sel_targets = [], []
        for b, s in enumerate(batch):
            if s.targets:
                qi, ti = matches[b]
                target_cls[b, qi] = labels_of[b][ti]
                sel_logits.append(dec.object_masks[b, qi])
                sel_targets.append(gts[b][ti])
        n_t = sum(len(x) for x in sel_logits)
        l_mask = (mask_loss_items(torch.cat(sel_logits), torch.cat(sel_targets), padded, size).sum() if n_t
                  else dec.object_masks.sum() * 0)
        weight = torch.ones(K + 1, device=dev)
        weight[K] = NO_OBJECT_WEIGHT
        ce = F.cross_entropy(cls_logits.flatten(0, 1), target_cls.flatten(), reduction="none").view(target_cls.shape)
        w = weight[target_cls]
        l_cls = ((ce * w).sum(1) / w.sum(1)).sum()             # each image's weighted mean, summed
        out["pan_cls"] = W_CLS * l_cls / len(batch)
        out["vocab_sep"] = vocab_sep
        out["pan_mask"] = W_MASK * l_mask / max(n_t, 1)

        # ---- referring text: grounding queries matched to phrases
        if phrases:
            phr_n = F.normalize(phr_emb, dim=-1)
            texts = sorted({p[1] for p in phrases})
            uniq = torch.stack([phr_n[[p[1] for p in phrases].index(t)] for t in texts])
            j0 = 0
            per = []                                    # (b, tmask, sim) of images with phrases
            for b, s in enumerate(batch):
                n = len(s.phrases)
                if not n:
                    continue
                tmask = gts[b][[ti for _, ti in s.phrases]]
                per.append((b, tmask, m.similarity(dec.grounding_embeds[b], phr_emb[j0:j0 + n])))   # [Q, P]
                j0 += n
            with torch.no_grad():
                costs = [W_MASK * pairwise_mask_cost(dec.grounding_masks[b], downsample(pad(tmask), (h4, w4)))
                         - W_CLS * sim.softmax(0) for b, tmask, sim in per]
            scale = m.text_encoder.logit_scale.exp().clamp(max=100)
            g_logits, g_targets, q_rows, q_tgt, p_rows, p_tgt, wts = [], [], [], [], [], [], []
            for (b, tmask, sim), (qi, pi) in zip(per, hungarian_all(costs)):
                s = batch[b]
                g_logits.append(dec.grounding_masks[b, qi])
                g_targets.append(tmask[pi])
                # Inference picks, per phrase, the query most similar to it: train exactly that ...
                q_rows.append(sim[:, pi].T)
                q_tgt.append(torch.as_tensor(qi, device=dev))
                # ... and tell phrases apart ("red cube" vs "blue cube") across the batch.
                p_rows.append(scale * F.normalize(dec.grounding_embeds[b, qi], dim=-1) @ uniq.T)
                p_tgt.append(torch.tensor([texts.index(s.phrases[p][0]) for p in pi], device=dev))
                wts.append(torch.full((len(qi),), 1.0 / len(qi), device=dev))   # each image's mean
            wts = torch.cat(wts)
            l_g = (mask_loss_items(torch.cat(g_logits), torch.cat(g_targets), padded, size) * wts).sum()
            l_gq = (F.cross_entropy(torch.cat(q_rows), torch.cat(q_tgt), reduction="none") * wts).sum()
            l_gp = (F.cross_entropy(torch.cat(p_rows), torch.cat(p_tgt), reduction="none") * wts).sum()
            nb = sum(1 for s in batch if s.phrases)
            out["text_mask"] = W_MASK * l_g / nb
            out["text_cls"] = W_CLS * (l_gq + l_gp) / nb

        # ---- visual prompts, two rounds, then tracking
        ns = max(len(s.prompts) for s in batch)
        if ns:
            tgt = [gts[b][s.prompt_targets] for b, s in enumerate(batch)]
            pos, neg = zip(*[_pad_masks(s.prompts, ns, size, padded) for s in batch])
            spatial = m.spatial_tokens(feats, torch.from_numpy(np.stack(pos)).to(dev),
                                       torch.from_numpy(np.stack(neg)).to(dev))
            r1 = m.decode(feats, spatial=spatial)
            out["click_mask"], out["click_cls"] = self._spatial_losses(r1, batch, tgt, vocab, padded, size, "prompt_targets")

            # Corrective round: SEEM's simulated user clicks the centre of the largest error.
            with torch.no_grad():
                up = F.interpolate(r1.prompt_masks.float(), size=padded, mode="bilinear",
                                   align_corners=False)[..., :size[0], :size[1]] > 0
            up = up.cpu().numpy()                      # one transfer, not one per prompt
            prompts2 = []
            for b, s in enumerate(batch):
                ps = []
                for i, p in enumerate(s.prompts):
                    c = next_click(up[b, i], s.targets[s.prompt_targets[i]].mask)
                    ps.append(p if c is None else p.with_points([c[0]], [c[1]]))
                prompts2.append(ps)
            pos, neg = zip(*[_pad_masks(ps, ns, size, padded) for ps in prompts2])
            spatial2 = m.spatial_tokens(feats, torch.from_numpy(np.stack(pos)).to(dev),
                                        torch.from_numpy(np.stack(neg)).to(dev))
            r2 = m.decode(feats, spatial=spatial2, memory=r1.prompt_masks.detach())
            out["refine_mask"], out["refine_cls"] = self._spatial_losses(r2, batch, tgt, vocab, padded, size, "prompt_targets")

            # Tracking: previous mask as prompt and as memory.
            tt = [gts[b][s.track_targets] for b, s in enumerate(batch)]
            pos, neg = zip(*[_pad_masks(s.track_prompts, ns, size, padded) for s in batch])
            spatial3 = m.spatial_tokens(feats, torch.from_numpy(np.stack(pos)).to(dev),
                                        torch.from_numpy(np.stack(neg)).to(dev))
            mem = torch.from_numpy(np.stack(pos)).to(dev).float() * 8 - 4          # +-4 logits
            mem = F.adaptive_avg_pool2d(mem, (h4, w4))
            r3 = m.decode(feats, spatial=spatial3, memory=mem)
            out["track_mask"], out["track_cls"] = self._spatial_losses(r3, batch, tt, vocab, padded, size, "track_targets")
        return out

    def _spatial_losses(self, r, batch, tgt, vocab, padded, size, attr):
        """All three candidates of each prompt learn the target (SEEM's candidates are chosen at
        inference by their overlap with the prompt; our world has no part/whole ambiguity)."""
        m = self.model
        qpp = m.cfg.decoder.queries_per_prompt
        logits, targets, embeds, labels = [], [], [], []
        for b, s in enumerate(batch):
            k = len(getattr(s, attr))
            if not k:
                continue
            logits.append(r.spatial_masks[b, :k * qpp])
            targets.append(tgt[b].repeat_interleave(qpp, 0))
            embeds.append(r.spatial_embeds[b, :k * qpp])
            labels.append(torch.tensor([s.targets[i].vocab_id for i in getattr(s, attr)],
                                       device=r.spatial_masks.device).repeat_interleave(qpp))
        n = sum(len(x) for x in labels) // qpp
        if not n:
            return r.spatial_masks.sum() * 0, r.spatial_masks.sum() * 0
        # One call for all images; each prompt's qpp candidates count as one prompt.
        l_mask = mask_loss_items(torch.cat(logits), torch.cat(targets), padded, size).sum() / qpp
        cls = m.similarity(torch.cat(embeds), vocab, clamp=False)
        l_cls = F.cross_entropy(cls, torch.cat(labels), reduction="sum") / qpp
        return W_MASK * l_mask / max(n, 1), l_cls / max(n, 1)


def lr_at(step: int, warmup: int, progress: float, base: float) -> float:
    """Linear warm-up over the first `warmup` steps, then cosine to 0 at progress 1."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# Logged next to the losses, never added to them.
LOGGED_ONLY = ("shape_acc",)


def _total(losses: dict):
    return sum(v for k, v in losses.items() if k not in LOGGED_ONLY)


def _bar(step: int, steps: int, t0: float, logs: dict, max_minutes: float = 0.0) -> str:
    el = time.time() - t0
    done = (step + 1) / steps
    if max_minutes:                     # whichever budget ends first
        done = max(done, el / (60 * max_minutes))
    done = min(done, 1.0)
    eta = el / max(done, 1e-9) * (1 - done)
    n = int(30 * done)
    loss = _total(logs)
    parts = " ".join(f"{k}={v:.3f}" for k, v in logs.items())
    return (f"\r[{'#' * n}{'.' * (30 - n)}] step {step + 1} ({100 * done:.0f}%) loss {loss:.3f} "
            f"{el / 60:.1f} min, eta {eta / 60:.1f} min | {parts}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/tiny", help="run directory (checkpoints, log)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--workers", type=int, default=0,
                    help="data workers rendering scenes (0: 1 on the CPU, cores-2 with a GPU)")
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--export", default=None, help="also write the final weights (fp16, inference only) here")
    ap.add_argument("--export-short-side", type=int, default=0,
                    help="model input short side written into the exported weights, what the node and "
                         f"the evaluations run them at (0: {EXPORT_SCALE:.3g} times the training short side)")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--init", default=None,
                    help="start from these weights (an exported checkpoint, or a run's last.pt) instead of from scratch")
    ap.add_argument("--shape-crops", type=int, default=0,
                    help="object crops classified by shape per step, a training-only loss on the "
                         "backbone (0: off)")
    ap.add_argument("--shape-scenes", type=int, default=3000, help="scenes the crops are cut from")
    ap.add_argument("--shape-weight", type=float, default=1.0)
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop (and export) after this much training time, even short of --steps; the "
                         "learning-rate schedule then ends with whichever budget runs out first")
    ap.add_argument("--reset-language", action="store_true",
                    help="with --init: start the text encoder afresh (weights trained before the "
                         "separation losses had collapsed the shape names into one vector)")
    a = ap.parse_args(argv)
    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if a.device == "auto" else a.device))
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    model = SeemModel(embedded_config(a.width, a.height)).to(dev)
    with torch.no_grad():          # CLIP's temperature at init (1/0.07), not e^1
        model.text_encoder.logit_scale.fill_(math.log(1 / 0.07))
    if a.init:
        init = torch.load(a.init, map_location=dev, weights_only=False)
        sd = init["model"]
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
        if a.reset_language:
            fresh = SeemModel(model.cfg).text_encoder.to(dev)
            fresh.logit_scale.data.fill_(math.log(1 / 0.07))
            model.text_encoder.load_state_dict(fresh.state_dict())
        print(f"initialised from {a.init}" + (", text encoder reset" if a.reset_language else ""), file=sys.stderr)
    shape = None
    groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    if a.shape_crops:
        shape = ShapeCrops(model, a.seed, a.shape_scenes, a.shape_crops, dev, a.width, a.height)
        print(f"shape crops: {len(shape.labels)} from {a.shape_scenes} scenes", file=sys.stderr)
        if a.init and init.get("shape_head"):       # a run's last.pt as --init carries its head
            shape.head.load_state_dict(init["shape_head"])
        # A fresh linear head learns faster than the weights under it.
        groups.append({"params": list(shape.head.parameters()), "lr_scale": 5.0})
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=0.05)
    start, elapsed = 0, 0.0
    last = out / "last.pt"
    if last.exists() and not a.no_resume:
        ck = torch.load(last, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        if shape is not None and ck.get("shape_head"):
            shape.head.load_state_dict(ck["shape_head"])
        opt.load_state_dict(ck["opt"])
        start, elapsed = ck["step"], ck.get("elapsed", 0.0)
        torch.set_rng_state(ck["torch_rng"])
        print(f"resuming {last} at step {start} ({elapsed / 60:.1f} min so far)", file=sys.stderr)
    trainer = Trainer(model, dev)
    # On the CPU the model needs the cores; with a GPU, rendering is the bottleneck.
    workers = a.workers or (max(1, (os.cpu_count() or 2) - 2) if dev.type == "cuda" else 1)
    loader = torch.utils.data.DataLoader(
        Stream(SampleStream(a.seed, a.batch, start, a.width, a.height)), batch_size=None,
        num_workers=workers, prefetch_factor=4, persistent_workers=False, collate_fn=lambda x: x)
    model.train()
    t0 = time.time() - elapsed
    avg: dict = {}
    log = open(out / "log.csv", "a")

    def save(step: int):
        tmp = out / "last.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "shape_head": shape.head.state_dict() if shape is not None else None,
                    "elapsed": time.time() - t0, "torch_rng": torch.get_rng_state(), "args": vars(a)}, tmp)
        os.replace(tmp, last)                  # never leave a half-written checkpoint

    step = start
    for step, batch in loader:
        if step >= a.steps or (a.max_minutes and time.time() - t0 > 60 * a.max_minutes):
            break
        # With a time budget the cosine follows the clock, so a run always ends annealed (at the
        # cost of bit-reproducibility: the step at which each LR is used depends on the machine).
        progress = step / a.steps
        if a.max_minutes:
            progress = max(progress, (time.time() - t0) / (60 * a.max_minutes))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.warmup, progress, a.lr) * g.get("lr_scale", 1.0)
        rng = np.random.default_rng([a.seed, step, 0xC0])
        losses = trainer.losses(batch, rng)
        if shape is not None:
            sl, acc = shape.loss(np.random.default_rng([a.seed, step, 0x5A]))
            losses["shape"] = a.shape_weight * sl
            losses["shape_acc"] = acc.detach()
        loss = _total(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for k, v in losses.items():
            avg[k] = 0.95 * avg.get(k, v.item()) + 0.05 * v.item()
        print(_bar(step, a.steps, t0, avg, a.max_minutes), end="", file=sys.stderr, flush=True)
        log.write(f"{step},{time.time() - t0:.1f},{loss.item():.4f}," +
                  ",".join(f"{k}={v.item():.4f}" for k, v in losses.items()) + "\n")
        if (step + 1) % a.save_every == 0:
            save(step + 1)
            log.flush()
    final = step if step < a.steps and a.max_minutes else min(step, a.steps)
    save(final)
    print(f"\ntrained {final} steps in {(time.time() - t0) / 60:.1f} min on {dev}", file=sys.stderr)
    if a.export and (final >= a.steps or a.max_minutes):
        export(model, a.export, a.export_short_side or round(EXPORT_SCALE * model.cfg.short_side), steps=final,
               planned_steps=a.steps, batch=a.batch, device=str(dev), init=a.init,
               minutes=round((time.time() - t0) / 60, 1), seed=a.seed)
    return 0


def export(model: SeemModel, path, short_side: Optional[int] = None, **meta) -> None:
    """Inference weights only, in fp16 (a few MB); loaded back to fp32 by from_checkpoint.
    short_side: the model input they are to be run at (SeemConfig.short_side; None: as trained)."""
    sd = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    from ..model.seem import config_to_dict
    cfg = dataclasses.replace(model.cfg, short_side=int(short_side)) if short_side else model.cfg
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd, "seem_ros_config": config_to_dict(cfg), "training": meta}, path)
    print(f"exported {path} ({Path(path).stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
