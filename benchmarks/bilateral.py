"""Seconds per region of the mask refinements: the fast bilateral solver (`bilateral`, numpy/scipy) vs OpenCV's fast
global smoother (`fgs`), on synthetic region crops at SD's region size.

Each image is a smooth random colour field with a textured elliptic object in its own colour and pixel noise; the
mask to refine is the object's ellipse seen through a coarse, shifted "attention map" (as Otsu would give it). Also
reported: the bilateral grid's vertex count, CG iterations per pass, and the IoU of each refined mask with the
object (a sanity check, not a quality benchmark).

    python benchmarks/bilateral.py                    # 384x512, 4 images x 3 repeats
    python benchmarks/bilateral.py --size 512 512 --images 2 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from mfexp.mosaicfusion.bilateral import DEFAULTS, BilateralGrid, solve
from mfexp.mosaicfusion.masks import refine


def synthetic_region(h: int, w: int, seed: int):
    """(rgb uint8, coarse mask, true object mask) for one structured random region."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.uniform(40, 215, (6, 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    obj = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    texture = 12 * np.sin(xx / rng.uniform(3, 9)) * np.cos(yy / rng.uniform(3, 9))
    field[obj] = rng.uniform(0, 255, 3) + texture[obj, None]
    rgb = np.clip(field + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)
    # the mask to refine: the object at 1/16, shifted a few pixels, bicubic back up, thresholded
    small = cv2.resize(obj.astype(np.float32), (w // 16, h // 16), interpolation=cv2.INTER_AREA)
    shifted = np.roll(small, (1, -1), axis=(0, 1))
    coarse = cv2.resize(shifted, (w, h), interpolation=cv2.INTER_CUBIC) > 0.5
    return rgb, coarse, obj


def timed(fn, repeats: int):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=[384, 512], metavar=("H", "W"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    h, w = args.size
    rows = {"bilateral": [], "fgs": []}
    ious = {"coarse": [], "bilateral": [], "fgs": []}
    vertices, iterations = [], []
    for seed in range(args.images):
        rgb, coarse, obj = synthetic_region(h, w, seed)
        ious["coarse"].append((coarse & obj).sum() / (coarse | obj).sum())
        for method in rows:
            out, times = timed(lambda: refine(coarse, rgb, method, bilateral=DEFAULTS), args.repeats)  # noqa: B023
            rows[method] += times
            ious[method].append((out & obj).sum() / (out | obj).sum())
        grid = BilateralGrid(rgb, DEFAULTS["sigma_spatial"], DEFAULTS["sigma_luma"], DEFAULTS["sigma_chroma"])
        vertices.append(grid.num_vertices)
        target = coarse.astype(float)
        for _ in range(DEFAULTS["passes"]):
            target, info = solve(grid, target, DEFAULTS["confidence"], DEFAULTS["lam"])
            iterations.append(info.iterations)
    print(f"region {h}x{w}, {args.images} images x {args.repeats} repeats; bilateral settings {DEFAULTS}")
    print(
        f"bilateral grid: {int(np.mean(vertices))} vertices on average ({h * w} pixels); "
        f"CG iterations per pass {min(iterations)}-{max(iterations)} (tol 1e-5)"
    )
    print(f"{'method':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'IoU vs object':>14}")
    for method, times in rows.items():
        print(
            f"{method:<10} {np.median(times):9.3f} {np.min(times):7.3f} {np.max(times):7.3f} "
            f"{np.mean(ious[method]):14.3f}"
        )
    print(f"{'(coarse)':<10} {'':>9} {'':>7} {'':>7} {np.mean(ious['coarse']):14.3f}")


if __name__ == "__main__":
    main()
