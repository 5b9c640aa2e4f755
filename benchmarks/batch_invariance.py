"""How much a mosaic depends on the batch it was denoised in: the same plans at several `generator.batch_size`s.

A mosaic's plan (layout, prompts, noise) never depends on the batch; its pixels may, by the float rounding of batched
kernels (a bucket of 3 crops and one of 30 take different code paths). This measures that bound on real mosaics:
for each batch size against the first, the largest grey-level difference, the share of pixels that differ at all,
whether the kept set is the same, and the IoU of the masks of mosaics kept under both.

    python benchmarks/batch_invariance.py [--model toy] [--mosaics 20] [--sizes 1,20] [--set generator.dtype=fp32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(gen, plans, batch: int) -> dict:
    out = {}
    for i in range(0, len(plans), batch):
        for res in gen(plans[i : i + batch]):
            out[res.plan.index] = res
    return out


def compare(reference: dict, other: dict) -> dict:
    """Pixels of every mosaic (decoded either way), kept sets, and masks of the mosaics kept by both."""
    diffs, changed, pixels, ious = [], 0, 0, []
    for index, ref in reference.items():
        res = other[index]
        if ref.image is not None and res.image is not None:
            d = np.abs(ref.image.astype(np.int16) - res.image.astype(np.int16))
            diffs.append(int(d.max()))
            changed += int((d > 0).any(-1).sum())
            pixels += d.shape[0] * d.shape[1]
        if ref.kept and res.kept:
            for a, b in zip(ref.masks, res.masks):
                union = np.logical_or(a, b).sum()
                ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    kept_ref = {i for i, r in reference.items() if r.kept}
    kept_other = {i for i, r in other.items() if r.kept}
    return {
        "max_grey_level_difference": max(diffs, default=0),
        "pixels_differing_percent": 100.0 * changed / max(pixels, 1),
        "kept": [len(kept_ref), len(kept_other)],
        "kept_set_identical": kept_ref == kept_other,
        "masks_compared": len(ious),
        "masks_identical": sum(iou == 1.0 for iou in ious),
        "mask_iou_min": min(ious, default=1.0),
        "mask_iou_mean": float(np.mean(ious)) if ious else 1.0,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="generator/model choice")
    p.add_argument("--mosaics", type=int, default=20)
    p.add_argument("--sizes", default="1,20", help="batch sizes; the first is the reference")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the report as JSON here")
    args = p.parse_args(argv)

    import torch

    from mfexp.compose import compose
    from mfexp.mosaicfusion.models import load_pipeline, resolve_dtype, set_scheduler
    from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator
    from mfexp.toyworld.world import build_categories

    torch.set_num_threads(args.threads)
    cfg = compose([f"generator/model={args.model}", *args.set])
    gcfg = cfg.generator
    dtype = resolve_dtype(gcfg.dtype, "cpu")
    gen = MosaicFusionGenerator(set_scheduler(load_pipeline(gcfg.model, dtype), gcfg.scheduler), gcfg, cfg.synthetic)
    cats = build_categories()
    mains = [cats[i % len(cats)] for i in range(args.mosaics)]
    plans = [gen.plan(i, mains, cats, args.seed) for i in range(args.mosaics)]
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {b: generate(gen, plans, b) for b in sizes}
    report = {
        "model": args.model,
        "dtype": dtype,
        "overrides": args.set,
        "mosaics": args.mosaics,
        "reference_batch_size": sizes[0],
        "against": {str(b): compare(results[sizes[0]], results[b]) for b in sizes[1:]},
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
