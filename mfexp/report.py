"""`python -m mfexp.report <multirun folder>... [--out DIR]`: a sweep's run folders -> one table and plots.

Every folder below the given ones (symbolic links followed) that holds `.hydra/overrides.yaml` is a run. A key that
some runs override and others do not takes, in those others, the value the run actually used (from its
`.hydra/config.yaml`, or its config-group choice in `.hydra/hydra.yaml`), so runs of different sweeps compare: e.g. the
`augmenter=mosaicfusion` runs (default N=4) join a `generator.num_objects=1,2` sweep. The *swept keys* are then the
keys whose values differ between runs, `seed`, `generate.reuse` (a copied synthetic set is the same data) and the logger/paths keys excluded; runs are grouped by their values of the
swept keys and each metric of `metrics.json` is summarised over the group (over seeds) as mean, sample standard
deviation (ddof=1; 0 for a single run) and n. Runs without `metrics.json` are listed as incomplete (and counted per
group), never dropped silently. Written to DIR (default: the folder itself, `report/`):

    summary.csv, summary.md     one row per group: swept keys, n, incomplete, <metric>_mean, <metric>_std
    runs.csv                    one row per run: folder, status, swept keys, seed, metrics, seconds per stage
    <metric>_vs_<key>.png       a numeric swept key: metric vs key with error bars (one line per other-key setting)
    <metric>_by_<key>.png       a categorical swept key: grouped bars with error bars
    <metric>_paired.png         with --baseline: each row's per-seed differences from its baseline, mean and 95% CI

`--baseline KEY=VALUE` (repeat it, or join pairs with commas: `--baseline augmenter=none,generator.num_objects=4`)
names the baseline: the groups whose values of those swept keys match. A row is compared with the baseline
group if there is one, else with the baseline group equal to the row on every swept key the baseline does not name
(none: an error; name more keys). Runs are paired by `seed` (seeds complete in both groups; a pair where a metric is
missing is left out of that metric): d_i = metric(row, seed i) - metric(baseline, seed i); the summary gains, per
metric, `<metric>_delta` (mean of d), `<metric>_ci_low`, `<metric>_ci_high` (the 95% t-interval
mean ± t(0.975, n-1) * sd(d) / sqrt(n); empty below 2 pairs), plus `n_pairs` and `baseline` (the row compared with,
`(this row)` for a baseline row, whose delta cells stay empty).

Units: metrics.json holds lvis-api fractions (0.226 = 22.6 AP); the CSVs keep them as they are, summary.md and the
plots show AP/AR metrics in % (x100, one decimal).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METRICS = ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP")
PLOT_METRICS = ("APr", "AP")
# the pairing key; where a synthetic set was copied from (the same data); where results are logged and stored
IGNORED_KEYS = ("seed", "generate.reuse", "logger", "logger.mode", "logger.enabled", "paths.log_dir", "paths.cache_dir")


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


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def is_percent(metric: str) -> bool:
    """AP/AR metrics (lvis-api fractions in metrics.json) are shown in % in summary.md and the plots."""
    return metric.removeprefix("bbox_").startswith(("AP", "AR"))


def shown(metric: str, x: float) -> float:
    return 100 * x if is_percent(metric) else x


def summarise(runs: list[Run], keys: list[str], metrics: list[str]) -> list[dict]:
    """One row per setting of the swept keys: the key values, n (complete runs), incomplete, seeds, mean/std
    (and, not written out, `_runs`: the complete runs)."""
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
        row["_runs"] = done
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ paired statistics

def parse_baseline(specs) -> dict:
    """`--baseline` values -> {key: value}: KEY=VALUE, several joined by commas or given by repeating the option.
    A comma splits only before another `KEY=`, so list values such as `[8,4]` stay whole."""
    spec = {}
    for text in [specs] if isinstance(specs, str) else (specs or []):
        for part in re.split(r",(?=[\w.@/+-]+=)", text):
            key, sep, value = part.partition("=")
            key, value = key.strip().lstrip("+"), value.strip()
            if not sep or not key or not value:
                raise ReportError(f"malformed --baseline {text!r}: expected KEY=VALUE[,KEY=VALUE...], "
                                  "e.g. --baseline augmenter=none")
            spec[key] = value
    return spec


def same(a: str, b: str) -> bool:
    """Two override values are the same setting (`0.5` and `0.50`, `[8,4]` and `[8, 4]` are; `true` and `1` not)."""
    x, y = typed(str(a)), typed(str(b))
    return str(a) == str(b) or (x == y and isinstance(x, bool) == isinstance(y, bool))


def label(row: dict, keys) -> str:
    return ",".join(f"{k}={row[k]}" for k in keys)


def assign_baselines(rows: list[dict], keys: list[str], spec: dict) -> None:
    """row["_base"]: the row each row is compared with (None for a baseline row itself); see the module docstring."""
    unknown = [k for k in spec if k not in keys]
    if unknown:
        raise ReportError(f"--baseline names {', '.join(unknown)}, not a swept key "
                          f"(swept: {', '.join(keys) or 'nothing'})")
    bases = [r for r in rows if all(same(r[k], v) for k, v in spec.items())]
    if not bases:
        seen = "; ".join(f"{k}: {', '.join(sorted({r[k] for r in rows}, key=sort_key))}" for k in spec)
        raise ReportError(f"--baseline {label(spec, spec)}: no group has these values (values seen: {seen})")
    others = [k for k in keys if k not in spec]
    for row in rows:
        if any(row is b for b in bases):
            row["_base"] = None
            continue
        match = bases if len(bases) == 1 else [b for b in bases if all(b[k] == row[k] for k in others)]
        if not match:
            raise ReportError(f"no baseline for the row {label(row, keys)}: --baseline {label(spec, spec)} matches "
                              f"{len(bases)} groups and none has the row's {label(row, others)}; "
                              "name more keys in --baseline")
        row["_base"] = match[0]


def by_seed(row: dict, keys: list[str]) -> dict:
    out = {}
    for run in row["_runs"]:
        seed = run.overrides.get("seed")
        if seed in out:
            raise ReportError(f"{label(row, keys)}: two complete runs with seed={seed} ({out[seed].path}, {run.path}); "
                              "pairing by seed needs one run per seed and setting")
        out[seed] = run
    return out


def t_interval(d: list[float]) -> tuple[float, float, float]:
    """The mean of paired differences and its 95% t-interval, mean ± t(0.975, n-1) * sd / sqrt(n) (sd: ddof=1);
    NaN bounds below 2 pairs, NaN mean for none."""
    from scipy import stats

    mean, sd = mean_std(d)
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
    return mean, mean - half, mean + half


def pair(rows: list[dict], keys: list[str], metrics: list[str], spec: dict) -> None:
    """Per row: `baseline`, `n_pairs` (seeds complete in the row and its baseline), and per metric the per-seed
    differences (`_diffs[metric]`: [(seed, d)]), `<metric>_delta`, `<metric>_ci_low`, `<metric>_ci_high`."""
    assign_baselines(rows, keys, spec)
    for row in rows:
        row["_diffs"] = {}
        base = row["_base"]
        if base is None:
            row["baseline"] = "(this row)"
            continue
        mine, theirs = by_seed(row, keys), by_seed(base, keys)
        seeds = sorted(set(mine) & set(theirs), key=sort_key)
        row["baseline"], row["n_pairs"] = label(base, keys), len(seeds)
        for m in metrics:
            diffs = [(s, float(mine[s].metrics[m]) - float(theirs[s].metrics[m])) for s in seeds
                     if is_number(mine[s].metrics.get(m)) and is_number(theirs[s].metrics.get(m))]
            row["_diffs"][m] = diffs
            row[f"{m}_delta"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = t_interval([d for _, d in diffs])


def significant(row: dict, metric: str) -> bool:
    """The 95% interval excludes 0."""
    low, high = row.get(f"{metric}_ci_low", math.nan), row.get(f"{metric}_ci_high", math.nan)
    return not math.isnan(low) and (low > 0 or high < 0)


# ------------------------------------------------------------------------------------------------ output

def fmt(x: float, metric: str | None = None, sign: str = "") -> str:
    """A number for summary.md: AP/AR metrics in % with one decimal, others with three."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:{sign}.1f}" if metric and is_percent(metric) else f"{x:{sign}.3f}"


def cell(row: dict, m: str) -> str:
    """`mean ± std`, with a baseline `; Δ delta [low, high]` (bold when the interval excludes 0)."""
    if not row["n"]:
        return "-"
    text = f"{fmt(row[f'{m}_mean'], m)} ± {fmt(row[f'{m}_std'], m)}"
    diffs = row.get("_diffs", {}).get(m)
    if not diffs:
        return text
    delta = f"Δ {fmt(row[f'{m}_delta'], m, '+')}"
    if len(diffs) < 2:
        return f"{text}; {delta}"
    delta += f" [{fmt(row[f'{m}_ci_low'], m, '+')}, {fmt(row[f'{m}_ci_high'], m, '+')}]"
    return f"{text}; **{delta}**" if significant(row, m) else f"{text}; {delta}"


def markdown(rows: list[dict], keys: list[str], metrics: list[str], runs: list[Run], folder: str,
             spec: dict | None = None) -> str:
    head = keys + ["n"] + (["pairs"] if spec else []) + metrics + ["incomplete"]
    units = "AP/AR in % (metrics.json's fractions x100)" if any(map(is_percent, metrics)) else ""
    lines = [f"# Sweep report: {folder}", "",
             f"{sum(r.complete for r in runs)} complete of {len(runs)} runs; swept: {', '.join(keys) or '(nothing)'}; "
             f"cells are mean ± std over seeds (sample std, ddof=1){'; ' + units if units else ''}.", ""]
    if spec:
        others = [k for k in keys if k not in spec]
        several = sum(r["_base"] is None for r in rows) > 1
        own = f"; each row's is the one with its own {', '.join(others)}" if several else ""
        lines += [f"Δ [low, high]: paired difference from the baseline ({label(spec, spec)}{own}), mean over the "
                  "seeds both ran (pairs) with its 95% t-interval, mean ± t(0.975, n-1)·sd/√n (none below 2 pairs);"
                  " **bold**: the interval excludes 0.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [f"`{row[k]}`" for k in keys] + [str(row["n"])]
        if spec:
            cells.append("baseline" if row["_base"] is None else str(row["n_pairs"]))
        cells += [cell(row, m) for m in metrics]
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
    from mfexp.fileio import atomic_write_bytes, csv_bytes

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


def spread(k: int, width: float = 0.3) -> list[float]:
    """x offsets that spread k per-seed points around their position."""
    return [(j - (k - 1) / 2) * width / max(k - 1, 1) for j in range(k)]


def per_seed(row: dict, m: str) -> list[float]:
    return [shown(m, float(r.metrics[m])) for r in row["_runs"] if is_number(r.metrics.get(m))]


def unit(m: str) -> str:
    return " (%)" if is_percent(m) else ""


def plot(rows: list[dict], keys: list[str], metrics: list[str], out: Path) -> list[Path]:
    """metric vs each numeric swept key (error bars), grouped bars for each categorical one; per-seed points."""
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
            for s, (lab, members) in enumerate(sorted(series.items(), key=lambda kv: [sort_key(v) for v in kv[0]])):
                members = sorted(members, key=lambda r: sort_key(r[key]))
                name = ", ".join(f"{k}={v}" for k, v in zip(others, lab)) or m
                means = [shown(m, r[f"{m}_mean"]) for r in members]
                stds = [shown(m, r[f"{m}_std"]) for r in members]
                if numeric:
                    pos = [float(typed(r[key])) for r in members]
                    ax.errorbar(pos, means, yerr=stds, marker="o", capsize=4, label=name, color=f"C{s}")
                else:
                    pos = [xs.index(r[key]) + (s - (len(series) - 1) / 2) * width for r in members]
                    ax.bar(pos, means, width, yerr=stds, capsize=4, label=name, color=f"C{s}", alpha=0.7)
                step = 0.5 * width if not numeric else 0.03 * (float(typed(xs[-1])) - float(typed(xs[0])))
                for x, r in zip(pos, members):
                    points = per_seed(r, m)
                    ax.scatter([x + o for o in spread(len(points), step)], points, s=14, color=f"C{s}",
                               edgecolors="k", linewidths=0.5, zorder=3)
            if numeric:
                ax.set_xticks([float(typed(x)) for x in xs])
            else:
                ax.set_xticks(range(len(xs)))
                ax.set_xticklabels([str(x) for x in xs], rotation=15)
            ax.set_xlabel(key)
            ax.set_ylabel(f"{m}{unit(m)}: mean ± std over seeds, dots: seeds")
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


def plot_paired(rows: list[dict], keys: list[str], metrics: list[str], spec: dict, out: Path) -> list[Path]:
    """Per metric: each compared row's per-seed differences from its baseline (dots), their mean and 95% t-interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    compared = [r for r in rows if r["_base"] is not None]
    for m in metrics:
        if not any(r["_diffs"].get(m) for r in compared):
            continue
        fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(compared) + 2), 4))
        for i, r in enumerate(compared):
            d = [shown(m, v) for _, v in r["_diffs"].get(m, [])]
            if not d:
                continue
            ax.scatter([i - 0.12 + o / 3 for o in spread(len(d))], d, s=14, color="C0", alpha=0.7, zorder=3)
            mean, low, high = (shown(m, r[f"{m}_{s}"]) for s in ("delta", "ci_low", "ci_high"))
            yerr = None if math.isnan(low) else [[mean - low], [high - mean]]
            ax.errorbar([i + 0.12], [mean], yerr=yerr, fmt="D", color="C3" if significant(r, m) else "k", capsize=5)
        ax.axhline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(compared)))
        ax.set_xlim(-0.6, len(compared) - 0.4)
        ax.set_xticklabels(["\n".join(f"{k}={r[k]}" for k in keys) for r in compared], fontsize=8)
        ax.set_ylabel(f"Δ {m}{' (AP points)' if is_percent(m) else ''}")
        ax.set_title(f"{m} minus baseline, paired by seed\n({label(spec, spec)})\n"
                     "dots: seeds; diamond: mean, 95% t-interval (red: excludes 0)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        path = out / f"{m}_paired.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def report(folder: str | Path | list, out: str | Path | None = None, metrics=None, baseline=None) -> dict:
    """Read the run folders below one or more folders and write the table (CSV + Markdown) and plots; with
    `baseline` (KEY=VALUE strings, see parse_baseline) also the paired differences from the baseline row."""
    spec = parse_baseline(baseline)
    folders = [Path(f) for f in (folder if isinstance(folder, (list, tuple)) else [folder])]
    runs = find_runs(*folders)
    if out is None and len(folders) > 1:
        raise ReportError("several folders: say where the report goes with --out")
    out = Path(out) if out else folders[0] / "report"
    folder = ", ".join(map(str, folders))
    keys = swept_keys(runs)
    all_metrics = metric_keys(runs) or list(METRICS)
    rows = summarise(runs, keys, all_metrics)
    columns = keys + ["n", "incomplete", "seeds"] + [f"{m}_{s}" for m in all_metrics for s in ("mean", "std")]
    if spec:
        pair(rows, keys, all_metrics, spec)
        columns += ["baseline", "n_pairs"] + [f"{m}_{s}" for m in all_metrics for s in ("delta", "ci_low", "ci_high")]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", rows, columns)
    per_run, run_columns = run_rows(runs, keys, all_metrics)
    write_csv(out / "runs.csv", per_run, run_columns)
    headline = [m for m in METRICS if m in all_metrics] or all_metrics   # the table; the CSVs keep every metric
    text = markdown(rows, keys, headline, runs, folder, spec)
    (out / "summary.md").write_text(text)
    plot_metrics = [m for m in (metrics or PLOT_METRICS) if m in all_metrics]
    figures = plot(rows, keys, plot_metrics, out) if keys else []
    if spec:
        figures += plot_paired(rows, keys, plot_metrics, spec, out)
    return {"runs": len(runs), "complete": sum(r.complete for r in runs), "swept": keys, "rows": rows,
            "markdown": text, "out": out, "figures": figures, "baseline": spec,
            "incomplete": [str(r.path) for r in runs if not r.complete]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfexp.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="+", help="multirun/sweep folders (run folders hold .hydra/ and metrics.json)")
    parser.add_argument("--out", default=None, help="where to write the table and plots (default: FOLDER/report)")
    parser.add_argument("--metrics", default=",".join(PLOT_METRICS), help="metrics to plot, comma-separated")
    parser.add_argument("--baseline", action="append", metavar="KEY=VALUE",
                        help="the baseline group by its swept-key values (repeat, or KEY=V,KEY2=V2): adds per-seed "
                             "paired differences with 95%% t-intervals to the table and plots")
    args = parser.parse_args(argv)
    try:
        result = report(args.folder, args.out, [m for m in args.metrics.split(",") if m], args.baseline)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"written to {result['out']}: summary.csv, summary.md, runs.csv"
          + "".join(f", {p.name}" for p in result["figures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
