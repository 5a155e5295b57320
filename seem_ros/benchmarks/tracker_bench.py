"""Tracker benchmark: per-frame cost of ObjectTracker.update() with N objects.

    python -m seem_ros.benchmarks.tracker_bench [--checkpoint seem_ros/weights/seem_tiny.pt]
        [--objects 1,5,10,20] [--width 640 --height 480] [--frames 6] [--device cpu] [--camera-pose]

A generated sequence with many objects; N objects are prompted (by box) on the first frame, then
every later frame costs one image encode (set_image) and one update(): one batched decoder pass
for all N objects ("decode") plus the tracker's own work ("post": masks at image size, connected
parts, appearance, lost/found decisions, overlap resolution, the next frame's prompt tokens).
When the scene has fewer than N visible objects, the remaining prompts are boxes on other parts of
the image, so every N really has N objects in the decoder pass (tracked or being searched for).
With --camera-pose, update() is also given each frame's camera pose and the objects are placed
(pose centroids, untimed, as the node's locate step) as the node does with tf: the tracker's depth
tests against identity switches then run too (`near_tracked`, `max_jump`).
Prints a markdown table of medians over the frames; the encode does not depend on N, so its
column shows the noise of the machine."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..geometry import estimate_pose
from ..inference import SeemPredictor, VisualPrompt
from ..model import SeemModel
from ..sim import make_sequence
from ..tracking import CameraView, ObjectPrompt, ObjectTracker
from .model_bench import machine


def boxes_for(frame, n: int, rng: np.random.Generator) -> list:
    """n boxes: the visible objects' boxes first (largest first), then random boxes."""
    objs = sorted((o for o in frame.objects if o.visible_pixels >= 50), key=lambda o: -o.visible_pixels)
    out = []
    for o in objs[:n]:
        ys, xs = np.nonzero(frame.instance == o.id)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    h, w = frame.instance.shape
    while len(out) < n:
        x, y = rng.uniform(0, w * 0.9), rng.uniform(0, h * 0.9)
        s = rng.uniform(0.04, 0.1) * w
        out.append([x, y, min(x + s, w), min(y + s, h)])
    return [np.asarray(b, float)[None] for b in out]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="seem_ros/weights/seem_tiny.pt")
    ap.add_argument("--objects", default="1,5,10,20")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=6, help="timed frames per N (after one warm-up frame)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--short-side", type=int, default=None,
                    help="model input short side in pixels (default: the checkpoint's)")
    ap.add_argument("--camera-pose", action="store_true",
                    help="give update() each frame's camera pose and place the objects (as the node with tf)")
    ap.add_argument("--engine", default="torch", choices=["torch", "onnxruntime"],
                    help="image encoder (onnxruntime: the node's default on the CPU; its graph is exported first)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pred = SeemPredictor(SeemModel.from_checkpoint(a.checkpoint), device=device, engine=a.engine,
                         short_side=a.short_side)
    # Time spent in the model's decoder pass, separately from the tracker's own work.
    in_decoder = [0.0]
    decode = pred.model.decode

    def timed_decode(*args, **kw):
        sync()
        t = time.perf_counter()
        out = decode(*args, **kw)
        sync()
        in_decoder[0] += time.perf_counter() - t
        return out
    pred.model.decode = timed_decode
    ns = [int(x) for x in a.objects.split(",")]
    # The first frames of a 60-frame sequence: motion per frame as in the evaluation's sequences.
    seq = make_sequence(a.seed, n_frames=60, width=a.width, height=a.height, n_objects=20)
    frames = [seq.render(i) for i in range(a.frames + 2)]
    rng = np.random.default_rng(0)
    rows = []
    for n in ns:
        tr = ObjectTracker(pred, max_objects=max(ns))
        emb = pred.set_image(frames[0].rgb)
        tr.set_depth(emb, frames[0].depth)          # as the node does: new masks are cut at depth steps
        for b in boxes_for(frames[0], n, rng):
            tr.add(ObjectPrompt("box", visual=VisualPrompt(boxes=b)), emb, frames[0].stamp)
        enc, dec, dpass, tracked = [], [], [], []
        for k, f in enumerate(frames[1:]):
            sync()
            t0 = time.perf_counter()
            emb = pred.set_image(f.rgb)
            sync()
            t1 = time.perf_counter()
            in_decoder[0] = 0.0
            tr.set_depth(emb, f.depth)
            view = CameraView(f.K, f.T_world_cam, "world") if a.camera_pose else None
            tracks = tr.update(emb, f.stamp, view)
            sync()
            t2 = time.perf_counter()
            if view is not None:
                poses = {t.id: estimate_pose(f.depth, f.K, t.mask) for t in tracks if t.mask is not None}
                tr.place({i: p.centroid for i, p in poses.items() if p is not None}, view, f.stamp)
            if k:                                    # the first frame warms up
                enc.append(t1 - t0)
                dec.append(t2 - t1)
                dpass.append(in_decoder[0])
                tracked.append(sum(t.state == "tracked" for t in tracks))
        rows.append((n, 1000 * np.median(enc), 1000 * np.median(dpass), 1000 * np.median(np.subtract(dec, dpass)),
                     1000 * np.median(np.add(enc, dec)), float(np.mean(tracked))))
    base = rows[0][4]
    print(f"\nObjectTracker.update() per frame, {a.width}x{a.height} images (model input short side "
          f"{pred.short_side}), {a.checkpoint}, {machine(device)}, {a.engine} encoder, "
          f"{'with' if a.camera_pose else 'without'} the camera pose, median of {a.frames} frames:\n")
    print("| N objects | tracked (mean) | encode ms | decode ms (one pass) | tracker post ms | total ms | total / N=1 |")
    print("|---|---|---|---|---|---|---|")
    for n, e, d, p, t, k in rows:
        print(f"| {n} | {k:.1f} | {e:.0f} | {d:.0f} | {p:.0f} | {t:.0f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
