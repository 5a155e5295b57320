"""Position accuracy of `estimate_pose` against the synthetic world's ground truth.

    python -m seem_ros.geometry.evaluate            # held-out seeds 1000..1039, 640x480

Uses the true instance mask (optionally eroded / dilated by `mask_fn`, since a predicted mask is
never perfect) and the rendered depth, with the scene's support plane as the node uses it (or
without: `--no-plane`); the reference is `ObjectState.position`, the centre of the object's own
bounding box in the optical frame."""
from __future__ import annotations

import argparse

import numpy as np

from .plane import fit_support_plane
from .pose import dilate_disc, estimate_pose


def dilate(mask: np.ndarray, r: int = 2) -> np.ndarray:
    return dilate_disc(mask, r)


def erode(mask: np.ndarray, r: int = 1) -> np.ndarray:
    return ~dilate_disc(~np.asarray(mask, bool), r)


MASK_VARIANTS = {"true": None, "eroded 1px": lambda m: erode(m, 1), "eroded 2px": lambda m: erode(m, 2),
                 "dilated 2px": lambda m: dilate(m, 2)}


def pose_errors(seeds, mask_fn=None, min_visible: int = 400, width: int = 640, height: int = 480,
                frames=None, plane: bool = True) -> dict:
    """Position errors (metres) of `estimate_pose` on sim scenes.

    Every object with >= min_visible visible pixels counts; mask_fn(mask) -> mask perturbs its
    true mask. A failed estimate (None) counts as an infinite error. `frames` (rendered frames,
    optional) skips rendering. Returns {"errors": [N], "shapes": [N] names, "seeds", "ids",
    "failures", "summary": {"all" | shape: {"n", "median", "mean", "p90"}}}."""
    from seem_ros.sim import make_scene, render          # only the evaluation needs the sim

    errs, shapes, seed_of, ids = [], [], [], []
    if frames is None:
        frames = (render(make_scene(int(s), width, height), shadows=False, noise=False)
                  for s in seeds)                        # depth is unaffected by shading
    for seed, f in zip(seeds, frames):
        support = fit_support_plane(f.depth, f.K) if plane else None
        for o in f.objects:
            if o.visible_pixels < min_visible:
                continue
            m = f.instance == o.id
            if mask_fn is not None:
                m = mask_fn(m)
            est = estimate_pose(f.depth, f.K, m, support=support)
            errs.append(np.inf if est is None else float(np.linalg.norm(est.position - o.position)))
            shapes.append(o.shape_name)
            seed_of.append(int(seed))
            ids.append(o.id)
    errs = np.asarray(errs, float)
    shapes_arr = np.asarray(shapes)

    def stats(e):
        return {"n": int(len(e)), "median": float(np.median(e)) if len(e) else np.nan,
                "mean": float(np.mean(e)) if len(e) else np.nan,
                "p90": float(np.percentile(e, 90)) if len(e) else np.nan}

    summary = {"all": stats(errs)}
    for s in sorted(set(shapes)):
        summary[s] = stats(errs[shapes_arr == s])
    return {"errors": errs, "shapes": shapes, "seeds": seed_of, "ids": ids,
            "failures": int(np.sum(~np.isfinite(errs))), "summary": summary}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--no-plane", action="store_true", help="without the support plane")
    args = ap.parse_args(argv)
    from seem_ros.sim import make_scene, render
    seeds = list(range(args.first, args.first + args.n))
    frames = [render(make_scene(s, args.width, args.height), shadows=False, noise=False) for s in seeds]
    print(f"position error (cm) of estimate_pose, seeds {seeds[0]}..{seeds[-1]}, "
          f"{args.width}x{args.height}, objects with >= 400 visible pixels")
    print(f"{'mask':12s} {'class':9s} {'n':>4s} {'median':>7s} {'mean':>7s} {'p90':>7s}")
    for name, fn in MASK_VARIANTS.items():
        res = pose_errors(seeds, fn, width=args.width, height=args.height, frames=frames, plane=not args.no_plane)
        for cls, s in res["summary"].items():
            print(f"{name:12s} {cls:9s} {s['n']:4d} {100 * s['median']:7.2f} {100 * s['mean']:7.2f} "
                  f"{100 * s['p90']:7.2f}")
        if res["failures"]:
            print(f"{name:12s} failures (None): {res['failures']}")


if __name__ == "__main__":
    main()
