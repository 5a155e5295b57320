"""Tracking evaluation on held-out synthetic sequences (seeds below the training base).

    python -m seem_ros.tracking.evaluate [--checkpoint seem_ros/weights/seem_tiny.pt]
        [--sequences 8] [--frames 40] [--size 320x240] [--kinds point,text,box,scribble[,reference]]
        [--set propagate=mask --set memory=none ...] [--workers 4] [--json out.json]

--set passes ObjectTracker keyword arguments (the ablations); --workers runs sequences in
parallel processes. Seeds start at --first-seed (default 0); all are below the training seeds.

Every object of a sequence is prompted once, on its first well-visible frame (at least 60 % of its
largest visible area in the sequence): by one click at its most interior pixel, by the text
"<colour> <shape>" when no other object of the scene shares it, by its box, or by a scribble; or
(`--kinds reference`, not in the default set) by its box drawn on another view of that moment (the
camera orbited 15-30 degrees), as a Prompt with a reference image; one tracker per prompt kind,
all on the same image encodings. Then it is tracked to the end, and

- J, F: DAVIS region similarity and boundary F per object-frame after the prompt frame (frames
  where it is out of view count as 1 when the tracker reports it lost, else 0), averaged per
  object, then over objects; frames where it shows fewer than `min_px` pixels (0.05 % of the
  image) are skipped;
- ID switches per 1000 object-frames: per-frame Hungarian matching (IoU >= 0.5) of the tracks
  to every object of the scene, switches counted from both sides (metrics.identity_switches):
  an object that changed track, or a track that moved to another object; and CLEAR-MOT's IDSW
  (the object side only), for comparison with published trackers;
- re-acquisition: of the times an object comes back (>= min_px pixels after being at fewer), the
  fraction where its own track (same id) is on it (>= 50 % of the mask on the object) within 5
  frames;
- false positives while lost: fraction of the frames where the object is completely out of
  view or hidden in which its track still outputs a mask.
- missed while visible: fraction of the frames where the object shows >= min_px pixels and its
  track outputs no mask (reported lost), and J when shown: J over the visible frames where it
  does; together they say whether J is lost to lost/found decisions or to mask quality.

Prints a markdown table (and optionally writes JSON)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

import numpy as np
import torch

from ..geometry import estimate_pose
from ..inference import SeemPredictor, VisualPrompt
from ..model import SeemModel
from ..sim import make_sequence, render
from ..training.clicks import border_distance
from ..training.data import TRAIN_SEED_BASE, interior_point
from . import metrics
from .tracker import CameraView, ObjectPrompt, ObjectTracker

EVAL_KINDS = ("point", "text", "box", "scribble")
KINDS = EVAL_KINDS + ("reference",)     # reference: `--kinds reference`, reported on its own


def scribble(mask: np.ndarray, rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """A polyline through k interior points, ordered along the object's main axis."""
    dt = border_distance(mask)
    ys, xs = np.nonzero(dt >= max(1.0, 0.3 * dt.max()))
    pick = rng.choice(len(ys), size=min(k, len(ys)), replace=False)
    pts = np.stack([xs[pick] + 0.5, ys[pick] + 0.5], 1)
    if len(pts) > 2:
        d = pts - pts.mean(0)
        pts = pts[np.argsort(d @ np.linalg.svd(d, full_matrices=False)[2][0])]
    return pts


def reference_prompt(predictor: SeemPredictor, seq, i: int, obj: int, seed: int, min_px: int) -> Optional[ObjectPrompt]:
    """A box around the object drawn on another view of frame i's scene (the camera orbited 15-30
    degrees, as the held-out reference row), as the node's Prompt with a reference image; None
    when it shows fewer than min_px pixels there."""
    from ..training.evaluate import other_view
    view = render(other_view(seq.scene_at(i), np.random.default_rng([seed, obj, 0x2EF])), index=i)
    m = view.instance == obj
    if np.count_nonzero(m) < min_px:
        return None
    box = make_prompt("box", m, None, None).visual
    return ObjectPrompt("reference", tokens=predictor.reference_tokens([box], predictor.encode(view.rgb)))


def make_prompt(kind: str, mask: np.ndarray, phrase: Optional[str], rng: np.random.Generator) -> Optional[ObjectPrompt]:
    if kind == "point":
        return ObjectPrompt("point", visual=VisualPrompt(points=interior_point(mask)[None]))
    if kind == "text":
        return None if phrase is None else ObjectPrompt("text", text=phrase)
    if kind == "box":
        ys, xs = np.nonzero(mask)
        return ObjectPrompt("box", visual=VisualPrompt(boxes=np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)))
    if kind == "scribble":
        return ObjectPrompt("scribble", visual=VisualPrompt(scribbles=[scribble(mask, rng)]))
    raise ValueError(kind)


@dataclass
class KindStats:
    objects: int = 0
    object_frames: int = 0
    j: List[float] = field(default_factory=list)         # per object
    f: List[float] = field(default_factory=list)
    switches: int = 0
    mot_switches: int = 0                               # CLEAR-MOT IDSW: the object side only
    reacq_events: int = 0
    reacq_ok: int = 0
    absent_frames: int = 0
    absent_fp: int = 0
    failed_prompts: int = 0
    visible_frames: int = 0                             # frames the object shows >= min_px pixels
    visible_missed: int = 0                             # ... and its track outputs no mask
    j_shown: List[float] = field(default_factory=list)  # J on visible frames with a mask, per frame

    def add(self, other: "KindStats") -> None:
        """Pool another's objects and frames into this one (counts add, per-object lists join)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def row(self) -> Dict[str, Optional[float]]:
        J = float(np.mean(self.j)) if self.j else None
        Fm = float(np.mean(self.f)) if self.f else None
        return {"objects": self.objects, "object_frames": self.object_frames, "J": J, "F": Fm,
                "J&F": None if J is None else (J + Fm) / 2,
                "id_switches_per_1000": metrics.rate(1000 * self.switches, self.object_frames),
                "id_switches": self.switches,
                "mot_idsw_per_1000": metrics.rate(1000 * self.mot_switches, self.object_frames),
                "mot_idsw": self.mot_switches,
                "reacquisition": metrics.rate(self.reacq_ok, self.reacq_events), "reacq_events": self.reacq_events,
                "fp_while_lost": metrics.rate(self.absent_fp, self.absent_frames), "absent_frames": self.absent_frames,
                "missed": metrics.rate(self.visible_missed, self.visible_frames), "visible_frames": self.visible_frames,
                "J_shown": float(np.mean(self.j_shown)) if self.j_shown else None}


def evaluate_sequence(predictor: SeemPredictor, seed: int, n_frames: int, width: int, height: int,
                      kinds=EVAL_KINDS, tracker_kw: Optional[dict] = None, stats: Optional[Dict[str, KindStats]] = None,
                      min_px: Optional[int] = None, window: int = 5, log=None,
                      camera_pose: bool = False) -> Dict[str, KindStats]:
    if seed >= TRAIN_SEED_BASE:
        raise ValueError(f"seed {seed} is training data (>= {TRAIN_SEED_BASE})")
    stats = stats if stats is not None else {k: KindStats() for k in kinds}
    min_px = min_px or max(1, int(0.0005 * width * height))
    seq = make_sequence(seed, n_frames=n_frames, width=width, height=height)
    frames = [seq.render(i) for i in range(n_frames)]
    ids = [o.id for o in frames[0].objects]
    vis = {o: np.array([(f.instance == o).sum() for f in frames]) for o in ids}
    objs0 = {o.id: o for o in frames[0].objects}
    pairs = [(o.colour, o.shape_name) for o in frames[0].objects]
    phrase = {o.id: (f"{o.colour} {o.shape_name}" if pairs.count((o.colour, o.shape_name)) == 1 else None)
              for o in frames[0].objects}
    well = max(int(0.002 * width * height), 4 * min_px)
    start = {}
    for o in ids:
        ok = np.nonzero((vis[o] >= 0.6 * vis[o].max()) & (vis[o] >= well))[0]
        if len(ok) and ok[0] < n_frames - 1:
            start[o] = int(ok[0])
    rng = np.random.default_rng([seed, 0xE7A1])
    trackers = {k: ObjectTracker(predictor, **(tracker_kw or {})) for k in kinds}
    track_of = {k: {} for k in kinds}                           # gt id -> track id
    out_masks = {k: {o: [None] * n_frames for o in start} for k in kinds}
    matches = {k: [] for k in kinds}
    for i, fr in enumerate(frames):
        emb = predictor.set_image(fr.rgb)
        stamp = fr.stamp
        gts = {o: fr.instance == o for o in ids}
        present = {o: gts[o] for o in ids if vis[o][i] >= min_px}
        for k in kinds:
            tr = trackers[k]
            tr.set_depth(emb, fr.depth)             # as the node does with its depth image
            for o, s in start.items():
                if s == i:
                    if k == "reference":
                        p = reference_prompt(predictor, seq, i, o, seed, well)
                        stats[k].failed_prompts += p is None
                    else:
                        p = make_prompt(k, gts[o], phrase[o], rng)
                    if p is None:
                        continue
                    try:
                        track_of[k][o] = tr.add(p, emb, stamp).id
                    except ValueError:
                        stats[k].failed_prompts += 1
            view = CameraView(fr.K, fr.T_world_cam, "world") if camera_pose else None
            tracks = tr.update(emb, stamp, view)
            if view is not None:
                # As the node does with tf: the objects' pose centroids, kept in the world frame.
                poses = {t.id: estimate_pose(fr.depth, fr.K, t.mask) for t in tracks if t.mask is not None}
                tr.place({i: p.centroid for i, p in poses.items() if p is not None}, view, stamp)
            by_id = {t.id: t for t in tracks}
            hyp = {t.id: t.mask for t in tracks if t.mask is not None}
            matches[k].append(metrics.match(present, hyp))
            for o, tid in track_of[k].items():
                t = by_id.get(tid)
                out_masks[k][o][i] = None if t is None else t.mask
    for k in kinds:
        st = stats[k]
        st.switches += metrics.identity_switches(matches[k])
        st.mot_switches += metrics.identity_switches(matches[k], tracks=False)
        for o, tid in track_of[k].items():
            s = start[o]
            js, fs, pres, corr = [], [], [], []
            for i in range(s + 1, n_frames):
                gt = frames[i].instance == o
                pm = out_masks[k][o][i]
                pred = pm if pm is not None else np.zeros_like(gt)
                npx = int(vis[o][i])
                pres.append(npx >= min_px)
                corr.append(pm is not None and (pm & gt).sum() >= 0.5 * max(pm.sum(), 1))
                if npx == 0:
                    st.absent_frames += 1
                    st.absent_fp += int(pm is not None)
                if 0 < npx < min_px:
                    continue
                js.append(metrics.region_similarity(pred, gt))
                if npx >= min_px:
                    st.visible_frames += 1
                    if pm is None:
                        st.visible_missed += 1
                    else:
                        st.j_shown.append(js[-1])
                fs.append(metrics.boundary_f(pred, gt))
            st.objects += 1
            st.object_frames += n_frames - s - 1
            if js:
                st.j.append(float(np.mean(js)))
                st.f.append(float(np.mean(fs)))
            e, ok = metrics.reacquisition(pres, corr, window)
            st.reacq_events += e
            st.reacq_ok += ok
    if log:
        log(f"seed {seed}: " + _brief({k: stats[k] for k in kinds}))
    return stats


def _brief(stats: Dict[str, "KindStats"]) -> str:
    """Per-sequence log line: where the switches and the misses come from."""
    out = []
    for k, st in stats.items():
        r = st.row()
        jf = "-" if r["J&F"] is None else f"{r['J&F']:.3f}"
        out.append(f"{k} J&F {jf} sw {st.switches}")
    return ", ".join(out)


def merge(into: Dict[str, KindStats], part: Dict[str, KindStats]) -> None:
    for k, st in part.items():
        into.setdefault(k, KindStats()).add(st)


_WORKER: dict = {}


def _work(job):
    """One sequence in a worker process (model loaded once per process)."""
    ckpt, device, threads, seed, frames, w, h, kinds, kw, camera_pose, short = job
    if "pred" not in _WORKER:
        torch.set_num_threads(threads)
        _WORKER["pred"] = SeemPredictor(SeemModel.from_checkpoint(ckpt), device=device, short_side=short)
    t = time.time()
    st = evaluate_sequence(_WORKER["pred"], seed, frames, w, h, kinds, kw, camera_pose=camera_pose)
    return seed, st, time.time() - t


def table(stats: Dict[str, KindStats]) -> str:
    fmt = lambda v, p=3: "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))

    def line(name: str, st: KindStats) -> str:
        r = st.row()
        return (f"| {name} | {r['objects']} | {r['object_frames']} | {fmt(r['J'])} | {fmt(r['F'])} | {fmt(r['J&F'])} | "
                f"{fmt(r['id_switches_per_1000'], 1)} ({r['id_switches']}) | "
                f"{fmt(r['mot_idsw_per_1000'], 1)} ({r['mot_idsw']}) | "
                f"{fmt(r['reacquisition'], 2)} ({st.reacq_ok}/{st.reacq_events}) | "
                f"{fmt(r['fp_while_lost'], 3)} ({st.absent_fp}/{st.absent_frames}) | "
                f"{fmt(r['missed'], 3)} ({st.visible_missed}/{st.visible_frames}) | {fmt(r['J_shown'])} |")

    lines = ["| prompt | objects | object-frames | J | F | J&F | ID switches / 1000 obj-frames | CLEAR-MOT IDSW / 1000 "
             "| re-acquisition | FP while lost | missed while visible | J when shown |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [line(k, st) for k, st in stats.items()]
    if len(stats) > 1:
        allst = KindStats()
        for st in stats.values():
            allst.add(st)
        lines.append(line("**all**", allst))
    return "\n".join(lines)


def _value(v: str):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="seem_ros/weights/seem_tiny.pt")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", default="320x240", help="WxH of the rendered frames")
    ap.add_argument("--short-side", type=int, default=None,
                    help="model input short side in pixels (default: the checkpoint's, as the node)")
    ap.add_argument("--kinds", default=",".join(EVAL_KINDS), help=f"of {', '.join(KINDS)}")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="processes, one sequence each at a time (CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ObjectTracker keyword argument")
    ap.add_argument("--camera-pose", action="store_true",
                    help="give the tracker each frame's camera pose and the objects' 3D centroids (as the node "
                         "does with tf and depth)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop after this long and report the sequences finished by then")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    w, h = (int(x) for x in a.size.lower().split("x"))
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    kw = {}
    for s in a.set:
        k, _, v = s.partition("=")
        kw[k.strip()] = _value(v.strip())
    stats = {k: KindStats() for k in kinds}
    t0 = time.time()
    seeds = range(a.first_seed, a.first_seed + a.sequences)
    log = lambda m: print(f"{m} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    deadline = t0 + 60 * a.max_minutes if a.max_minutes else float("inf")
    done = []
    if a.workers > 1:
        import multiprocessing as mp
        jobs = [(a.checkpoint, a.device, a.threads or 1, s, a.frames, w, h, kinds, kw, a.camera_pose, a.short_side)
                for s in seeds]
        pool = mp.get_context("spawn").Pool(a.workers)
        it = pool.imap_unordered(_work, jobs)
        try:
            for _ in jobs:
                seed, st, dt = it.next(timeout=max(deadline - time.time(), 0.01) if deadline < float("inf") else None)
                merge(stats, st)
                done.append(seed)
                log(f"seed {seed} done in {dt:.0f} s: " + _brief(st))
        except mp.TimeoutError:
            log("time budget spent")
        pool.terminate()
    else:
        pred = SeemPredictor(SeemModel.from_checkpoint(a.checkpoint), device=a.device, short_side=a.short_side)
        for seed in seeds:
            if time.time() > deadline:
                log("time budget spent")
                break
            evaluate_sequence(pred, seed, a.frames, w, h, kinds, kw, stats, log=log, camera_pose=a.camera_pose)
            done.append(seed)
    part = "" if len(done) == len(seeds) else f" (finished {len(done)}: {sorted(done)})"
    print(f"\nTracking on {a.sequences} held-out sequences (seeds {seeds.start}-{seeds.stop - 1}){part}, {a.frames} frames "
          f"at {w}x{h}, checkpoint {a.checkpoint}, model input short side {a.short_side or 'of the checkpoint'}, "
          f"device {a.device}, tracker {kw or 'defaults'}"
          f"{', camera pose known' if a.camera_pose else ''}:\n")
    print(table(stats))
    for k, st in stats.items():
        if st.failed_prompts:
            print(f"\n{k}: {st.failed_prompts} object(s) not prompted (the prompt could not be placed, e.g. "
                  "hidden in the reference view)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "tracker": kw, "seeds_done": sorted(done),
                       "kinds": {k: st.row() for k, st in stats.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
