"""Corrective-click benchmark: the cost of one ObjectTracker.refine() round, with and without
honour_clicks (disobeyed clicks enforced with the model's answer to each click alone).

    python -m seem_ros.benchmarks.refine_bench [--scenes 12] [--clicks 6] [--device cpu]

On held-out scenes (seeds 950000+, the click evaluation's tuning scenes), each object is clicked
as SEEM's simulated user does (each next click at the centre of the largest error), `--clicks`
times whatever the IoU, as the node answers them (tracker add, then refine; depth given). Both
settings run on every object in turn (off, on, off, on), so the machine's drift hits both alike.
Prints a markdown table of the refine rounds' times; the ratio is on the means."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..inference import VisualPrompt
from ..tracking import ObjectPrompt, ObjectTracker
from ..training.clicks import next_click
from ..training.evaluate import DEFAULT_CHECKPOINT, eval_objects, load_predictor, make_items
from .model_bench import machine


def rounds(pred, emb, gt, depth, clicks: int, honour: bool, sync) -> list:
    """Seconds of each refine round for one object."""
    tr = ObjectTracker(pred, honour_clicks=honour)
    tr.set_depth(emb, depth)
    mask, oid, out = np.zeros_like(gt), None, []
    for _ in range(clicks):
        c = next_click(mask, gt)
        if c is None:
            break
        click = VisualPrompt(points=c[0][None], labels=[c[1]])
        if oid is None:
            t = tr.add(ObjectPrompt("point", visual=click), emb, 0.0)
        else:
            sync()
            t0 = time.perf_counter()
            t = tr.refine(oid, click, emb, 0.0)
            sync()
            out.append(time.perf_counter() - t0)
        oid, mask = t.id, (t.mask if t.mask is not None else np.zeros_like(gt))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--clicks", type=int, default=6, help="clicks per object (the first adds it)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pred = load_predictor(a.checkpoint, a.device, None)
    times = {False: [], True: []}
    for item in make_items(range(950_000, 950_000 + a.scenes), 640, 480):
        f, emb = item.frame, item.encode(pred)
        for o in eval_objects(f):
            for honour in (False, True, False, True):
                times[honour] += rounds(pred, emb, f.instance == o.id, f.depth, a.clicks, honour, sync)
    print(f"\nObjectTracker.refine() per corrective round, 640x480 images (model input short side "
          f"{pred.short_side}), {a.checkpoint}, {machine(device)}, {a.scenes} scenes, {a.clicks} clicks "
          "per object, both settings alternated:\n")
    print("| honour_clicks | rounds | median ms | mean ms | p90 ms | mean / off |")
    print("|---|---|---|---|---|---|")
    base = float(np.mean(times[False]))
    for honour, t in times.items():
        t = np.asarray(t)
        print(f"| {'on' if honour else 'off'} | {len(t)} | {1000 * np.median(t):.0f} | {1000 * t.mean():.0f} | "
              f"{1000 * np.percentile(t, 90):.0f} | {t.mean() / base:.2f} |")


if __name__ == "__main__":
    main()
