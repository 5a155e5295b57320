"""Renderer benchmark, single thread on one core:

    python -m seem_ros.sim.bench [--scenes 20] [--repeats 3]

Prints a markdown table of ms/frame and frames/s at 640x480 and 1280x720 for random scenes (each
scene rendered `repeats` times, its fastest time kept, which filters out other processes), for
sequence frames, and without shadows. Scene generation is timed separately."""
from __future__ import annotations

import argparse
import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _single_thread() -> None:
    """Re-exec with one BLAS/OpenMP thread (must be set before numpy loads) and pin to one core."""
    if any(os.environ.get(v) != "1" for v in _THREAD_VARS):
        os.environ.update({v: "1" for v in _THREAD_VARS})
        os.execv(sys.executable, [sys.executable, "-m", "seem_ros.sim.bench", *sys.argv[1:]])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    _single_thread()
    import platform
    import time

    import numpy as np

    from .render import render
    from .scene import make_scene
    from .sequence import make_sequence

    def best(fn) -> float:
        ts = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts) * 1000

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"pinned to core {min(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}, "
          f"1 thread; numpy {np.__version__}\n")
    print("| case | resolution | ms/frame (median) | ms/frame (mean) | ms/frame (max) | frames/s (median) |")
    print("|---|---|---|---|---|---|")
    for w, h in ((640, 480), (1280, 720)):
        scenes = [make_scene(s, w, h) for s in range(a.scenes)]
        render(scenes[0])                                   # warm caches (noise, vignette)
        seq = make_sequence(0, a.scenes, w, h)
        cases = {"random scenes": [best(lambda s=s: render(s)) for s in scenes],
                 "random scenes, no shadows": [best(lambda s=s: render(s, shadows=False)) for s in scenes],
                 "sequence frames": [best(lambda i=i: seq.render(i)) for i in range(a.scenes)]}
        for name, t in cases.items():
            t = np.array(t)
            print(f"| {name} | {w}x{h} | {np.median(t):.1f} | {t.mean():.1f} | {t.max():.1f} "
                  f"| {1000 / np.median(t):.1f} |")
    t = np.array([best(lambda s=s: make_scene(s)) for s in range(a.scenes)])
    print(f"\nscene generation (make_scene): {np.median(t):.2f} ms median")


if __name__ == "__main__":
    main()
