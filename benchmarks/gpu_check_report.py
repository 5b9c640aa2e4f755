"""Merge the parts of benchmarks/gpu_check.sh (generate.py reports) into one JSON and print a summary.

    python benchmarks/gpu_check_report.py PARTS_DIR OUT.json [--setup-seconds S] [--start EPOCH]

Per precision (fp32, bf16, bf16_compiled): seconds per mosaic with masks (`after`), plain diffusers' seconds per
mosaic's worth of region images, the generator's throughput over plain's (and, in bf16, over plain diffusers
making the mosaic's own crop shapes: `generator_vs_plain_crops`), the capture overhead (after / nocapture
- 1) and peak memory (MiB) of each variant; the bf16 batch-size sweep (mosaics/s, peak memory); what was skipped.
A field whose part did not run is null.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "bf16_compiled")


def load_parts(folder: Path) -> dict[str, dict]:
    """Part name -> its report; the compiled variants, run one per part, merged into `bf16_compiled`."""
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    compiled = [parts.pop(k) for k in sorted(parts) if k.startswith("bf16_compiled_")]
    if compiled:
        merged = dict(compiled[0], variants={})
        for rep in compiled:
            merged["variants"].update(rep["variants"])
        parts["bf16_compiled"] = merged
    return parts


def precision_summary(report: dict | None) -> dict:
    variants = (report or {}).get("variants", {})

    def seconds(name: str) -> float | None:
        return variants[name]["seconds_per_mosaic"] if name in variants else None

    after, plain, nocap, crops = seconds("after"), seconds("plain"), seconds("nocapture"), seconds("plain_crops")
    return {
        "seconds_per_mosaic": after,
        "plain_seconds_per_mosaic": plain,
        "generator_vs_plain": plain / after if after and plain else None,
        "generator_vs_plain_crops": crops / after if after and crops else None,
        "capture_overhead": after / nocap - 1 if after and nocap else None,
        "peak_mb": {name: v["peak_mb"] for name, v in variants.items()} or None,
    }


def summarise(parts: dict[str, dict], skipped: list[str], setup_seconds: float, total_seconds: float) -> dict:
    any_part = next(iter(parts.values()), {})
    return {
        "device": any_part.get("device"),
        "model": any_part.get("model"),
        "canvas": any_part.get("canvas"),
        "regions_per_mosaic": any_part.get("regions_per_mosaic"),
        "steps": any_part.get("steps"),
        "mosaics_per_variant": any_part.get("mosaics_per_variant"),
        **{p: precision_summary(parts.get(p)) for p in PRECISIONS},
        "bf16_batch_sweep": parts.get("bf16_sweep", {}).get("sweep"),
        "skipped": skipped,
        "setup_seconds": setup_seconds,
        "total_seconds": total_seconds,
        "parts": parts,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--setup-seconds", type=float, default=0.0)
    p.add_argument("--start", type=float, help="the check's start (seconds since the epoch)")
    args = p.parse_args(argv)
    skipped_file = args.parts / "skipped.txt"
    skipped = skipped_file.read_text().split() if skipped_file.exists() else []
    total = time.time() - args.start if args.start else 0.0
    report = summarise(load_parts(args.parts), skipped, args.setup_seconds, round(total, 1))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"gpu_check: {report['device']}, {report['canvas']} N={report['regions_per_mosaic']}, {report['steps']} steps"
    )
    for prec in PRECISIONS:
        s = report[prec]
        cells = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k != "peak_mb"]
        print(f"  {prec:<14} " + " ".join(cells) + f" peak_mb={s['peak_mb']}")
    for b, s in (report["bf16_batch_sweep"] or {}).items():
        print(f"  bf16 batch {b}: {s['mosaics_per_second']:.3f} mosaics/s, peak {s['peak_mb']:.0f} MiB")
    print(f"  skipped: {skipped or 'none'}; setup {args.setup_seconds:.0f} s, total {total:.0f} s -> {args.out}")
    return report


if __name__ == "__main__":
    main()
