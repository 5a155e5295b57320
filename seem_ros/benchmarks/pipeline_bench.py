"""The node's pipeline without ROS (seem_ros.perception): per-frame time by stage, per device,
precision and input size, with N tracked objects and depth (poses). Not a test.

    python -m seem_ros.benchmarks.pipeline_bench [--device cuda] [--precision fp32 fp16] [--objects 1 5]"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from ..defaults import BUNDLED_CHECKPOINT, BUNDLED_VOCABULARY
from ..inference import SeemPredictor
from ..model.checkpoint import load_model
from ..perception import FrameInput, Perception, PromptRequest
from ..sim import make_sequence

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def run(device: str, precision: str, size, n_objects: int, frames: int, checkpoint: str) -> dict:
    w, h = size
    model = load_model(checkpoint)
    per = Perception(SeemPredictor(model, device=device, vocabulary=BUNDLED_VOCABULARY, dtype=DTYPES[precision]),
                     max_objects=max(n_objects, 1), min_score=0.0)
    seq = make_sequence(3, n_frames=frames + 3, width=w, height=h)
    f0 = seq.render(0)
    K = np.asarray(f0.camera_info["k"]).reshape(3, 3)
    objs = sorted(f0.objects, key=lambda o: -o.visible_pixels)
    prompts = []
    for k in range(n_objects):            # clicks on the visible objects, then anywhere
        o = objs[k % len(objs)]
        ys, xs = np.nonzero(f0.instance == o.id)
        j = (len(ys) * (k // len(objs) + 1)) // (k // len(objs) + 2) if len(ys) else 0
        pt = [[xs[j] + 0.5, ys[j] + 0.5]] if len(ys) else [[w / 2 + k, h / 2]]
        prompts.append(PromptRequest(points=np.array(pt), point_labels=np.ones(1)))
    per.process(FrameInput(f0.rgb, 0.0, f0.depth, K), prompts)
    rendered = [seq.render(i) for i in range(1, frames + 3)]
    times = []
    for i, f in enumerate(rendered):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        r = per.process(FrameInput(f.rgb, float(i + 1), f.depth, K))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:                        # warm-up frames
            times.append(r.timings)
    return {k: float(np.median([t[k] for t in times])) for k in times[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    ap.add_argument("--objects", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--checkpoint", default=str(BUNDLED_CHECKPOINT))
    ap.add_argument("--untuned", action="store_true",
                    help="without the node's process settings (ros.process_tuning: BLAS threads, allocator)")
    a = ap.parse_args(argv)
    if not a.untuned:                       # as the node runs
        from ..ros.process_tuning import tune_process
        tune_process()
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"{os.cpu_count()}-core CPU ({platform.machine()})"
    print(f"seem_ros pipeline (encode, tracker decode, poses), bundled model, {a.device}: {dev}\n")
    print("| input | precision | objects | encode ms | decode ms | pose ms | model ms | total ms | fps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in a.sizes:
        wh = tuple(int(v) for v in size.split("x"))
        for prec in a.precision:
            for n in a.objects:
                try:
                    t = run(a.device, prec, wh, n, a.frames, a.checkpoint)
                except Exception as e:          # report, and go on with the other rows
                    print(f"| {size} | {prec} | {n} | failed: {type(e).__name__}: {e} |||||")
                    continue
                print(f"| {size} | {prec} | {n} | {t['encode']:.1f} | {t['decode']:.1f} | {t['pose']:.1f} | "
                      f"{t['model']:.1f} | {t['total']:.1f} | {1000 / t['total']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
