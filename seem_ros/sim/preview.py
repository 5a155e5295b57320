"""Preview a scene or sequence as PNG: RGB | depth | instances side by side.

    python -m seem_ros.sim.preview --seed 3 --out scene.png
    python -m seem_ros.sim.preview --seed 3 --sequence 40 --every 8 --out seq.png   (one row per frame)
"""
from __future__ import annotations

import argparse

import numpy as np

from .png import write_png
from .render import Frame, render
from .scene import make_scene

_PALETTE = np.random.default_rng(3).integers(60, 256, (256, 3)).astype(np.uint8)
_PALETTE[0] = 0


def colour_depth(depth: np.ndarray) -> np.ndarray:
    """Near bright, far dark, 0 (no reading) black; range from the frame's own percentiles."""
    valid = depth > 0
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    lo, hi = np.percentile(depth[valid], [1, 99])
    g = 1 - np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    g = (40 + 215 * g) * valid
    return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)


def colour_instances(instance: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    img = _PALETTE[instance % 256].copy()
    img[(instance == 0) & (semantic > 0)] = (90, 70, 50)          # the table, dark brown
    return img


def panel(frame: Frame) -> np.ndarray:
    sep = np.full((frame.height, 4, 3), 255, np.uint8)
    return np.concatenate([frame.rgb, sep, colour_depth(frame.depth), sep,
                           colour_instances(frame.instance, frame.semantic)], axis=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="sim_preview.png")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--sequence", type=int, default=0, help="render a sequence of this many frames")
    ap.add_argument("--every", type=int, default=5, help="with --sequence: show every n-th frame")
    a = ap.parse_args(argv)
    if a.sequence:
        from .sequence import make_sequence
        seq = make_sequence(a.seed, a.sequence, a.width, a.height)
        frames = [seq.render(i) for i in range(0, a.sequence, a.every)]
    else:
        frames = [render(make_scene(a.seed, a.width, a.height))]
    rows = []
    for f in frames:
        rows += [panel(f), np.full((4, panel(f).shape[1], 3), 255, np.uint8)]
        print(f"frame {f.index}: " + ", ".join(f"{o.id}:{o.phrase}({o.visible_pixels}px)" for o in f.objects))
    write_png(a.out, np.concatenate(rows[:-1], axis=0))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
