"""Does a category's AP follow its synthetic label fidelity? Per rare category, two settings compared by seed.

Reads the per-category fidelity that benchmarks/synthetic_fidelity.py wrote (``--out``) for both settings' runs, and
each run's evaluate/per_category.csv; pairs ``--baseline`` and ``--other`` runs by position (the same seed), and per
rare category averages over the pairs the change in fidelity and in mask AP. Prints the table and the Spearman rank
correlation across categories, and with ``--plot`` draws one point per category.

    python benchmarks/synthetic_fidelity.py RUNS... --out fid.json
    python benchmarks/fidelity_vs_ap.py --fidelity fid.json --baseline A0 A1 A2 --other B0 B1 B2 [--plot p.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr


def per_category(run: Path, fidelity: dict) -> pd.DataFrame:
    """Rare categories of one run: name, mask AP (%) and label fidelity of its synthetic instances (%)."""
    ap = pd.read_csv(run / "evaluate" / "per_category.csv")
    ap = ap[ap.frequency == "r"][["name", "AP"]].assign(AP=lambda d: 100 * d.AP)
    fid = {name: 100 * r["fidelity"] for name, r in fidelity[str(run)]["per_category"].items() if r["instances"]}
    return ap.assign(fidelity=ap.name.map(fid)).dropna()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fidelity", type=Path, required=True, help="synthetic_fidelity.py --out file with all runs")
    p.add_argument("--baseline", type=Path, nargs="+", required=True)
    p.add_argument("--other", type=Path, nargs="+", required=True)
    p.add_argument("--plot", type=Path)
    args = p.parse_args()
    if len(args.baseline) != len(args.other):
        p.error("--baseline and --other pair by position: give as many of each")
    fidelity = {r["run"]: r for r in json.loads(args.fidelity.read_text())["runs"]}
    missing = [str(r) for r in args.baseline + args.other if str(r) not in fidelity]
    if missing:
        p.error(f"not in {args.fidelity}: {', '.join(missing)} (score them with synthetic_fidelity.py, same paths)")
    pairs = []
    for a, b in zip(args.baseline, args.other):
        d = per_category(a, fidelity).merge(per_category(b, fidelity), on="name", suffixes=("_base", "_other"))
        pairs.append(d.assign(d_AP=d.AP_other - d.AP_base, d_fidelity=d.fidelity_other - d.fidelity_base))
    table = pd.concat(pairs).groupby("name")[["fidelity_base", "fidelity_other", "d_fidelity", "AP_base", "d_AP"]]
    table = table.mean().sort_values("d_fidelity").round(1)
    rho, pval = spearmanr(table.d_fidelity, table.d_AP)
    print(table.to_string())
    print(
        f"{len(table)} rare categories, {len(pairs)} pairs: Spearman rho(d_fidelity, d_AP) = {rho:.2f} (p = {pval:.3f})"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.scatter(table.d_fidelity, table.d_AP)
        for name, row in table.iterrows():
            ax.annotate(name, (row.d_fidelity, row.d_AP), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("change in synthetic label fidelity, points (other - baseline)")
        ax.set_ylabel("change in mask AP, points")
        ax.set_title(f"rare categories, mean over {len(pairs)} seeds; Spearman rho = {rho:.2f}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
