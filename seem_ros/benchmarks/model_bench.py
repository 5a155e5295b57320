"""Model benchmark: what "encode once, prompt many times" buys, per prompt type.

    python -m seem_ros.benchmarks.model_bench [--config focalt] [--short-side 512] [--device cpu]

Prints a markdown table. Weights are random (timing does not depend on their values) unless
--checkpoint is given. All ratios are measured in the same run."""
from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch

from ..inference import SeemPredictor, VisualPrompt
from ..model import CONFIGS, SeemModel


def _timed(fn, repeats: int, sync) -> float:
    fn()                                                     # warm-up (allocations, kernels)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="focalt", choices=sorted(CONFIGS))
    ap.add_argument("--checkpoint")
    ap.add_argument("--short-side", type=int, default=512)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = SeemModel.from_checkpoint(a.checkpoint) if a.checkpoint else SeemModel(CONFIGS[a.config])
    pred = SeemPredictor(model, device=device, short_side=a.short_side, dtype=getattr(torch, a.dtype),
                         vocabulary=["red cube", "blue cylinder", "mug", "table"])
    img = np.random.default_rng(0).integers(0, 256, (a.height, a.width, 3), dtype=np.uint8)
    h, w = a.height, a.width
    rows = []

    enc = _timed(lambda: pred.set_image(img), a.repeats, sync)
    rows.append(("image encode (backbone + pixel decoder)", enc))
    ids, att = pred.tokenizer(["the red mug"])
    rows.append(("text encode (1 phrase, 77 tokens)", _timed(
        lambda: model.grounding_tokens(ids.to(device), att.to(device)), a.repeats, sync)))
    click = [VisualPrompt(points=[[w / 2, h / 2]])]
    prompts = {
        "decode: text (1 phrase)": lambda: pred.predict_text(["the red mug"]),
        "decode: text (3 phrases)": lambda: pred.predict_text(["red cube", "blue cylinder", "mug"]),
        "decode: click": lambda: pred.predict(click),
        "decode: box": lambda: pred.predict([VisualPrompt(boxes=[[w * .3, h * .3, w * .6, h * .7]])]),
        "decode: scribble": lambda: pred.predict([VisualPrompt(scribbles=[np.array([[w * .2, h * .5], [w * .5, h * .6], [w * .7, h * .4]])])]),
        "decode: 5 clicks, 5 objects, one pass": lambda: pred.predict(
            [VisualPrompt(points=[[w * (i + 1) / 6, h / 2]]) for i in range(5)]),
        "decode: panoptic (vocabulary of 4)": lambda: pred.panoptic(),
    }
    for name, fn in prompts.items():
        rows.append((name, _timed(fn, a.repeats, sync)))
    first = pred.predict(click)
    refined = click[0].with_points([[w / 2 + 20, h / 2]], [0])
    rows.append(("decode: memory round (prev mask + 2 clicks)",
                 _timed(lambda: pred.predict([refined], memory=first.logits), a.repeats, sync)))

    # Ten prompts: encode once + 10 decodes vs the full model for each prompt.
    ten = [VisualPrompt(points=[[w * (i + 1) / 11, h / 2]]) for i in range(10)]

    def once():
        pred.set_image(img)
        for p in ten:
            pred.predict([p])

    def each():
        for p in ten:
            pred.set_image(img)
            pred.predict([p])
    t_once = _timed(once, 1, sync)
    t_each = _timed(each, 1, sync)
    rows.append(("encode once + 10 click prompts", t_once))
    rows.append(("full model for each of 10 click prompts", t_each))

    e = pred.embedding
    print(f"\nSEEM {model.cfg.name}, input {w}x{h} -> {e.input_size[1]}x{e.input_size[0]} "
          f"(padded {e.padded_size[1]}x{e.padded_size[0]}), {a.dtype}, device: {machine(device)}, "
          f"torch {torch.__version__}, median of {a.repeats}\n")
    print("| step | ms |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    print(f"| ratio: (encode once + 10 prompts) / (full model x 10) | {t_once / t_each:.3f} |")
    print(f"| peak memory (MB, {'CUDA allocated' if device.type == 'cuda' else 'process RSS'}) | {_peak_mb(device):.0f} |")


if __name__ == "__main__":
    main()
