"""`make demo`: the model pipeline on a rendered synthetic scene.

Renders a tabletop scene, encodes it once and answers every prompt type (text, click, corrective
click with memory, box, scribble, referring image, panoptic), printing timings and writing an
overlay PNG. The bundled trained weights come with the embedded-defaults issue; until they exist
(or without --checkpoint) the model is randomly initialised and the masks are meaningless: the run
shows the pipeline and its cost, and says so."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .inference import SeemPredictor, VisualPrompt
from .model import TINY, SeemModel
from .sim import make_scene, render
from .sim.png import write_png

BUNDLED = Path(__file__).parent / "weights" / "seem_tiny.pt"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=str(BUNDLED) if BUNDLED.exists() else None)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default="demo_overlay.png")
    a = ap.parse_args(argv)
    if a.checkpoint:
        model = SeemModel.from_checkpoint(a.checkpoint)
    else:
        print("*** UNTRAINED: no checkpoint bundled yet; random TINY weights, masks are meaningless ***")
        torch.manual_seed(0)
        model = SeemModel(TINY)
    frame = render(make_scene(a.seed))
    obj = max(frame.objects, key=lambda o: o.visible_pixels)
    ys, xs = np.nonzero(frame.instance == obj.id)
    cx, cy = float(xs.mean()), float(ys.mean())
    pred = SeemPredictor(model, vocabulary=[o.phrase for o in frame.objects])
    t = time.perf_counter()
    emb = pred.set_image(frame.rgb)
    print(f"image encode {1000 * (time.perf_counter() - t):.0f} ms  ({frame.width}x{frame.height} -> {emb.input_size[::-1]})")
    steps = {
        f"text '{obj.phrase}'": lambda: pred.predict_text([obj.phrase]),
        "click": lambda: pred.predict([VisualPrompt(points=[[cx, cy]])]),
        "box": lambda: pred.predict([VisualPrompt(boxes=[[xs.min(), ys.min(), xs.max(), ys.max()]])]),
        "scribble": lambda: pred.predict([VisualPrompt(scribbles=[np.array([[cx - 5, cy], [cx + 5, cy + 3]])])]),
        "panoptic": lambda: pred.panoptic(score_threshold=0.0),
    }
    results = {}
    for name, fn in steps.items():
        t = time.perf_counter()
        results[name] = fn()
        print(f"{name:<28s} {1000 * (time.perf_counter() - t):6.0f} ms")
    click = results["click"]
    t = time.perf_counter()
    pred.predict([VisualPrompt(points=[[cx, cy], [cx + 10, cy]], labels=[1, 0])], memory=click.logits)
    print(f"{'corrective click (memory)':<28s} {1000 * (time.perf_counter() - t):6.0f} ms")
    gt = frame.instance == obj.id
    m = click.masks[0]
    iou = (m & gt).sum() / max((m | gt).sum(), 1)
    print(f"click mask IoU with ground truth of '{obj.phrase}': {iou:.2f}")
    overlay = frame.rgb.copy()
    overlay[m] = (0.5 * overlay[m] + [0, 127, 0]).astype(np.uint8)
    write_png(a.out, np.concatenate([frame.rgb, overlay], 1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
