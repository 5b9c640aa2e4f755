"""`python -m mfexp.report <multirun folder>... [--out DIR]`: a sweep's run folders -> one table and plots.

Every folder below the given ones (symbolic links followed) that holds `.hydra/overrides.yaml` is a run. A key that
some runs override and others do not takes, in those others, the value the run actually used (from its
`.hydra/config.yaml`, or its config-group choice in `.hydra/hydra.yaml`), so runs of different sweeps compare: e.g. the
`augmenter=mosaicfusion` runs (default N=4) join a `generator.num_objects=1,2` sweep. The *swept keys* are then the
keys whose values differ between runs, `seed` excluded; runs are grouped by their values of the
swept keys and each metric of `metrics.json` is summarised over the group (over seeds) as mean, sample standard
deviation (ddof=1; 0 for a single run) and n. Runs without `metrics.json` are listed as incomplete (and counted per
group), never dropped silently. Written to DIR (default: the folder itself, `report/`):

    summary.csv, summary.md     one row per group: swept keys, n, incomplete, <metric>_mean, <metric>_std
    runs.csv                    one row per run: folder, status, swept keys, seed, metrics, seconds per stage
    <metric>_vs_<key>.png       a numeric swept key: metric vs key with error bars (one line per other-key setting)
    <metric>_by_<key>.png       a categorical swept key: grouped bars with error bars
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import os

import yaml

METRICS = ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP")
PLOT_METRICS = ("APr", "AP")
IGNORED_KEYS = ("seed",)


class ReportError(ValueError):
    pass


@dataclass
class Run:
    path: Path
    overrides: dict                       # key -> value string, as given on the command line (no + / ++ prefix)
    metrics: dict | None                  # None: incomplete
    stage_times: dict = field(default_factory=dict)
    wandb: str | None = None              # the offline wandb run folder, when there is one

    @property
    def complete(self) -> bool:
        return self.metrics is not None


def parse_overrides(lines: list[str]) -> dict:
    """Hydra override strings -> {key: value string}; `+key=v`/`++key=v` count as `key=v`, deletions are skipped."""
    out = {}
    for line in lines:
        line = str(line)
        if line.startswith("~") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.lstrip("+")] = value
    return out


def load_run(path: Path) -> Run:
    overrides = parse_overrides(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or [])
    metrics = None
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except json.JSONDecodeError:
            metrics = None
    times = {}
    if (path / "stage_times.json").is_file():
        try:
            times = json.loads((path / "stage_times.json").read_text())
        except json.JSONDecodeError:
            times = {}
    wandb_runs = sorted((path / "wandb").glob("offline-run-*")) if (path / "wandb").is_dir() else []
    return Run(path, overrides, metrics, times, str(wandb_runs[-1]) if wandb_runs else None)


def find_runs(*folders: str | Path) -> list[Run]:
    """Every run folder (one with `.hydra/overrides.yaml`) below the folders, links followed, once each, by path."""
    paths: dict[Path, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ReportError(f"not a folder: {folder}")
        for root, _, files in os.walk(folder, followlinks=True):
            if Path(root).name == ".hydra" and "overrides.yaml" in files:
                paths.setdefault(Path(root).parent.resolve(), Path(root).parent)
    runs = [load_run(p) for p in sorted(paths.values())]
    if not runs:
        raise ReportError(f"no run folders below {', '.join(map(str, folders))} "
                          "(a run folder holds .hydra/overrides.yaml)")
    fill_missing_keys(runs)
    return runs


def override_string(value) -> str:
    """A config value written the way it is given on the command line (4, 0.5, true, null, [8,4], mosaicfusion)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_string(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).splitlines()[0]
    return str(value)


def resolved_value(path: Path, key: str) -> str | None:
    """The value a run used for an override key it did not give: its config-group choice or its config value."""
    from omegaconf import OmegaConf

    hydra_file, config_file = path / ".hydra" / "hydra.yaml", path / ".hydra" / "config.yaml"
    if hydra_file.is_file():
        choices = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
        if key in choices:
            return override_string(choices[key])
    if config_file.is_file():
        try:
            found = OmegaConf.select(OmegaConf.load(config_file), key, default=None, throw_on_missing=False)
            if OmegaConf.is_config(found):
                found = OmegaConf.to_container(found, resolve=True)
        except Exception:  # an interpolation that needs the app's resolvers: leave the value unknown
            return None
        if found is not None:
            return override_string(found)
    return None


def fill_missing_keys(runs: list[Run]) -> None:
    """Give every run a value for every key some run overrides (see the module docstring); None if unknowable."""
    keys = {k for r in runs for k in r.overrides}
    for run in runs:
        for key in sorted(keys - set(run.overrides)):
            value = resolved_value(run.path, key)
            if value is not None:
                run.overrides[key] = value


def swept_keys(runs: list[Run], ignore=IGNORED_KEYS) -> list[str]:
    """Override keys whose value differs between runs (a key missing in some runs counts as differing)."""
    keys = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if k not in ignore and len({r.overrides.get(k) for r in runs}) > 1]


def typed(value: str | None):
    """An override value as YAML reads it (4 -> int, 0.5 -> float, [0,0] -> list); None stays None."""
    if value is None:
        return None
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def is_numeric(values) -> bool:
    vals = [typed(v) for v in values if v is not None]
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def sort_key(value: str | None):
    v = typed(value)
    if v is None:
        return (0, 0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(value))


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if not n:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def metric_keys(runs: list[Run]) -> list[str]:
    present = {k for r in runs if r.complete for k, v in r.metrics.items() if isinstance(v, (int, float))}
    return [k for k in METRICS if k in present] + sorted(present - set(METRICS))


def summarise(runs: list[Run], keys: list[str], metrics: list[str]) -> list[dict]:
    """One row per setting of the swept keys: the key values, n (complete runs), incomplete, seeds, mean/std."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.overrides.get(k) for k in keys), []).append(run)
    rows = []
    for setting in sorted(groups, key=lambda s: tuple(sort_key(v) for v in s)):
        members = groups[setting]
        done = [r for r in members if r.complete]
        row = {k: ("(default)" if v is None else v) for k, v in zip(keys, setting)}
        row["n"] = len(done)
        row["incomplete"] = len(members) - len(done)
        row["seeds"] = " ".join(sorted((r.overrides.get("seed", "-") for r in done), key=sort_key))
        for m in metrics:
            vals = [float(r.metrics[m]) for r in done if isinstance(r.metrics.get(m), (int, float))]
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(vals)
        rows.append(row)
    return rows


def fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def markdown(rows: list[dict], keys: list[str], metrics: list[str], runs: list[Run], folder: str) -> str:
    head = keys + ["n"] + metrics + ["incomplete"]
    lines = [f"# Sweep report: {folder}", "",
             f"{sum(r.complete for r in runs)} complete of {len(runs)} runs; swept: {', '.join(keys) or '(nothing)'}; "
             "cells are mean ± std over seeds (sample std, ddof=1).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [f"`{row[k]}`" for k in keys] + [str(row["n"])]
        cells += [f"{fmt(row[f'{m}_mean'])} ± {fmt(row[f'{m}_std'])}" if row["n"] else "-" for m in metrics]
        cells.append(str(row["incomplete"]))
        lines.append("| " + " | ".join(cells) + " |")
    incomplete = [r for r in runs if not r.complete]
    if incomplete:
        lines += ["", f"## Incomplete runs ({len(incomplete)}: no metrics.json)", ""]
        for r in incomplete:
            stages = ", ".join(r.stage_times) or "none"
            lines.append(f"- `{r.path}` (stages done: {stages})")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    from mfexp.lvis_io import atomic_write_bytes, csv_bytes

    atomic_write_bytes(path, csv_bytes(rows, columns))


def run_rows(runs: list[Run], keys: list[str], metrics: list[str]) -> tuple[list[dict], list[str]]:
    stages = []
    for r in runs:
        stages += [s for s in r.stage_times if s not in stages]
    rows = []
    for r in runs:
        row = {"run": str(r.path), "status": "complete" if r.complete else "incomplete",
               "seed": r.overrides.get("seed", ""), "wandb": r.wandb or ""}
        row.update({k: r.overrides.get(k, "(default)") for k in keys})
        row.update({m: (r.metrics or {}).get(m, "") for m in metrics})
        row.update({f"seconds_{s}": r.stage_times.get(s, "") for s in stages})
        rows.append(row)
    return rows, ["run", "status", *keys, "seed", *metrics, *(f"seconds_{s}" for s in stages), "wandb"]


def plot(rows: list[dict], keys: list[str], metrics: list[str], out: Path) -> list[Path]:
    """metric vs each numeric swept key (error bars), grouped bars for each categorical one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = [r for r in rows if r["n"]]
    for key in keys:
        others = [k for k in keys if k != key]
        series: dict[tuple, list[dict]] = {}
        for r in rows:
            series.setdefault(tuple(r[k] for k in others), []).append(r)
        xs = sorted({r[key] for r in rows}, key=sort_key)
        numeric = is_numeric([x for x in xs if x != "(default)"]) and "(default)" not in xs
        for m in metrics:
            if not any(not math.isnan(r[f"{m}_mean"]) for r in rows):
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            width = 0.8 / max(len(series), 1)
            for s, (label, members) in enumerate(sorted(series.items(), key=lambda kv: [sort_key(v) for v in kv[0]])):
                members = sorted(members, key=lambda r: sort_key(r[key]))
                name = ", ".join(f"{k}={v}" for k, v in zip(others, label)) or m
                if numeric:
                    ax.errorbar([float(typed(r[key])) for r in members], [r[f"{m}_mean"] for r in members],
                                yerr=[r[f"{m}_std"] for r in members], marker="o", capsize=4, label=name)
                else:
                    pos = [xs.index(r[key]) + (s - (len(series) - 1) / 2) * width for r in members]
                    ax.bar(pos, [r[f"{m}_mean"] for r in members], width, yerr=[r[f"{m}_std"] for r in members],
                           capsize=4, label=name)
            if numeric:
                ax.set_xticks([float(typed(x)) for x in xs])
            else:
                ax.set_xticks(range(len(xs)))
                ax.set_xticklabels([str(x) for x in xs], rotation=15)
            ax.set_xlabel(key)
            ax.set_ylabel(f"{m} (mean ± std over seeds)")
            ax.set_title(f"{m} vs {key}")
            ax.grid(alpha=0.3)
            if others:
                ax.legend(fontsize=8)
            fig.tight_layout()
            path = out / f"{m}_{'vs' if numeric else 'by'}_{key.replace('/', '_')}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written


def report(folder: str | Path | list, out: str | Path | None = None, metrics=None) -> dict:
    """Read the run folders below one or more folders and write the table (CSV + Markdown) and plots."""
    folders = [Path(f) for f in (folder if isinstance(folder, (list, tuple)) else [folder])]
    runs = find_runs(*folders)
    if out is None and len(folders) > 1:
        raise ReportError("several folders: say where the report goes with --out")
    out = Path(out) if out else folders[0] / "report"
    folder = ", ".join(map(str, folders))
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(runs)
    all_metrics = metric_keys(runs) or list(METRICS)
    rows = summarise(runs, keys, all_metrics)
    columns = keys + ["n", "incomplete", "seeds"] + [f"{m}_{s}" for m in all_metrics for s in ("mean", "std")]
    write_csv(out / "summary.csv", rows, columns)
    per_run, run_columns = run_rows(runs, keys, all_metrics)
    write_csv(out / "runs.csv", per_run, run_columns)
    headline = [m for m in METRICS if m in all_metrics] or all_metrics   # the table; the CSVs keep every metric
    text = markdown(rows, keys, headline, runs, folder)
    (out / "summary.md").write_text(text)
    plot_metrics = [m for m in (metrics or PLOT_METRICS) if m in all_metrics]
    figures = plot(rows, keys, plot_metrics, out) if keys else []
    return {"runs": len(runs), "complete": sum(r.complete for r in runs), "swept": keys, "rows": rows,
            "markdown": text, "out": out, "figures": figures,
            "incomplete": [str(r.path) for r in runs if not r.complete]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfexp.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="+", help="multirun/sweep folders (run folders hold .hydra/ and metrics.json)")
    parser.add_argument("--out", default=None, help="where to write the table and plots (default: FOLDER/report)")
    parser.add_argument("--metrics", default=",".join(PLOT_METRICS), help="metrics to plot, comma-separated")
    args = parser.parse_args(argv)
    try:
        result = report(args.folder, args.out, [m for m in args.metrics.split(",") if m])
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"written to {result['out']}: summary.csv, summary.md, runs.csv"
          + "".join(f", {p.name}" for p in result["figures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
