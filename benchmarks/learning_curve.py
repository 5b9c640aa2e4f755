"""Class fidelity over training steps, one line per training run, from `toy_quality.py --out` files.

Each `--series` is a label and the run's measurements as STEP=FILE; each point is the single-object class fidelity
at the configured guidance with its 95 % Clopper-Pearson interval (48 samples: about +-14 points), beside the issue's
90 % target. Writes the figure and, next to it, the points as CSV (the figure's data, small enough to keep).

    python benchmarks/toy_quality.py --model toy_mmdit --model-path DEST --out s3000.json ...   # per snapshot
    python benchmarks/learning_curve.py --series "patch 2" 3000=s3000.json 5000=s5000.json \\
        --series "patch 1" 1500=p1_s1500.json 3000=p1_s3000.json --out curve.png
    python benchmarks/learning_curve.py --previous curve.csv --series "patch 1, new" 2000=n_s2000.json --out curve.png

`--previous CSV` starts from the points of an earlier figure (its CSV), so a series can be added once the earlier
runs' JSON files are gone; a label given again with `--series` replaces that series.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import binomtest


def point(step: int, path: Path) -> dict:
    """One measurement: samples and class fidelity at the file's configured guidance, with its interval."""
    report = json.loads(path.read_text())
    at = report["fidelity"][str(float(report["guidance"]))]
    n = int(at["samples"])
    k = round(at["class_fidelity"] * n)
    ci = binomtest(k, n).proportion_ci(0.95)
    return {
        "step": step,
        "samples": n,
        "correct": k,
        "fidelity": 100 * k / n,
        "low": 100 * ci.low,
        "high": 100 * ci.high,
        "file": path.name,
    }


def parse_series(items: list[str]) -> tuple[str, list[tuple[int, Path]]]:
    label, *pairs = items
    out = []
    for pair in pairs:
        step, sep, file = pair.partition("=")
        if not sep or not step.isdigit():
            raise SystemExit(f"--series {label!r}: expected STEP=FILE, got {pair!r}")
        if not Path(file).is_file():
            raise SystemExit(f"--series {label!r}: no such file {file}")
        out.append((int(step), Path(file)))
    if not out:
        raise SystemExit(f"--series {label!r}: give at least one STEP=FILE")
    return label, sorted(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", nargs="+", action="append", default=[], metavar="LABEL STEP=FILE")
    p.add_argument("--previous", type=Path, help="an earlier figure's CSV: its points come first")
    p.add_argument("--target", type=float, default=90.0, help="a horizontal line at this fidelity (%%)")
    p.add_argument("--title", default="toy MM-DiT: single-object class fidelity")
    p.add_argument("--out", type=Path, required=True, help="the figure (.png); the points go to the same name .csv")
    args = p.parse_args(argv)
    if not args.series and not args.previous:
        p.error("give --series LABEL STEP=FILE... and/or --previous CSV")
    rows = []
    for items in args.series:
        label, pairs = parse_series(items)
        rows += [{"series": label, **point(step, path)} for step, path in pairs]
    table = pd.DataFrame(rows)
    if args.previous:
        if not args.previous.is_file():
            p.error(f"--previous {args.previous}: no such file")
        earlier = pd.read_csv(args.previous)
        if not table.empty:
            earlier = earlier[~earlier.series.isin(table.series)]
        table = pd.concat([earlier, table], ignore_index=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for label, d in table.groupby("series", sort=False):
        ax.errorbar(
            d.step, d.fidelity, yerr=[d.fidelity - d.low, d.high - d.fidelity], marker="o", capsize=3, label=label
        )
    ax.axhline(args.target, color="grey", linestyle="--", label=f"target {args.target:g} %")
    ax.set(xlabel="training step", ylabel="class fidelity (%), 95 % interval", ylim=(0, 100), title=args.title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")  # the legend below the axes grows with the series
    table.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.1f")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
