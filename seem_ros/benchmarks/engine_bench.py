"""Engine benchmark: the image encoder in torch against ONNX Runtime, in one run.

    python -m seem_ros.benchmarks.engine_bench [--models bundled,focalt] [--width 640 --height 480]

For each model: the ONNX export (first encode at a new input size; later runs load the cached
graph), `set_image` median time per engine and their ratio, and how far the ONNX features and
a click's mask are from torch's. Focal-T has random weights (timing does not depend on them)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import BUNDLED_CHECKPOINT
from ..inference import SeemPredictor, VisualPrompt
from ..model import CONFIGS, SeemModel
from ..sim import make_scene, render
from ..training.data import interior_point
from .model_bench import machine


def _alternating(preds, img, repeats: int) -> dict:
    """Median set_image time per engine, the engines taking turns: this shared CPU's speed
    drifts by 20 % within a minute, which separate runs would read as an engine difference."""
    times = {e: [] for e in preds}
    for p in preds.values():
        p.set_image(img)                                     # warm-up
    for _ in range(repeats):
        for e, p in preds.items():
            t = time.perf_counter()
            p.set_image(img)
            times[e].append(time.perf_counter() - t)
    return {e: 1000 * float(np.median(v)) for e, v in times.items()}


def _model(name: str) -> SeemModel:
    if name == "bundled":
        return SeemModel.from_checkpoint(str(BUNDLED_CHECKPOINT))
    torch.manual_seed(0)
    return SeemModel(CONFIGS[name])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="bundled,focalt")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args(argv)
    frame = render(make_scene(900001, a.width, a.height))
    img = frame.rgb
    target = max(frame.objects, key=lambda o: o.visible_pixels)
    x, y = interior_point(frame.instance == target.id)
    click = [VisualPrompt(points=[[x, y]])]
    rows = []
    with tempfile.TemporaryDirectory() as cache:      # a fresh cache: the export is measured
        for name in a.models.split(","):
            preds = {"torch": SeemPredictor(_model(name))}
            onnx = SeemPredictor(_model(name), engine="onnxruntime")
            onnx.onnx_encoder.directory = Path(cache)
            preds["onnxruntime"] = onnx
            t = time.perf_counter()
            onnx.set_image(img)
            export_s = time.perf_counter() - t
            ms = _alternating(preds, img, a.repeats)
            fa, fb = (p.set_image(img).features for p in preds.values())
            diff = max(float((x - y).abs().max()) for x, y in
                       zip([fa.mask_features, *fa.src], [fb.mask_features, *fb.src]))
            ma, mb = (p.predict(click).masks[0] for p in preds.values())
            ih, iw = preds["torch"].input_size(a.height, a.width)
            rows.append((name, f"{iw}x{ih}", export_s, ms["torch"], ms["onnxruntime"], diff,
                         int((ma != mb).sum()), int(ma.sum())))
    print(f"\nImage encode (`set_image`), {a.width}x{a.height} input, {machine(torch.device('cpu'))}, "
          f"torch {torch.__version__}, median of {a.repeats}\n")
    print("| model | model input | ONNX export + first encode (s) | torch (ms) | onnxruntime (ms) | "
          "torch / onnxruntime | max feature difference | click mask pixels differing |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, size, ex, t, o, d, px, area in rows:
        print(f"| {name} | {size} | {ex:.1f} | {t:.1f} | {o:.1f} | {t / o:.2f} | {d:.1e} | {px} of {area} |")


if __name__ == "__main__":
    main()
