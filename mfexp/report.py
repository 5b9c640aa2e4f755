"""`mfexp-report <multirun folder>... [--out DIR]`: a sweep's run folders -> one table and plots.

Every folder below the given ones (symbolic links followed) that holds `.hydra/overrides.yaml` is a run; the runs are
read into a pandas DataFrame, one row per run (`load_runs`), and every table and plot is built from it. A key that
some runs override and others do not takes, in those others, the value the run actually used (from its
`.hydra/config.yaml`, or its config-group choice in `.hydra/hydra.yaml`), so runs of different sweeps compare: e.g. the
`augmenter=mosaicfusion` runs (default N=4) join a `generator.num_objects=1,2` sweep. The *swept keys* are then the
keys whose values differ between runs, `seed`, `generate.reuse` (a copied synthetic set is the same data) and the
logger/paths keys excluded; runs are grouped by their values of the swept keys and each metric of `metrics.json` is
summarised over the group (over seeds) as mean, sample standard deviation (ddof=1; 0 for a single run) and n. A run
is *complete* with `metrics.json`, *failed* when its folder holds `failed.json` (the stage, exception type, message
and traceback of the error that stopped it), else *incomplete*; failed and incomplete runs are listed apart and
counted per group, never averaged nor dropped silently. Rows and categorical bars follow the config order of each
key's values (the baseline's value first, then the order the sweep lists them, then first seen), numeric keys
ascend. Written to DIR (default: the folder itself, `report/`):

    summary.csv, summary.md     one row per group: swept keys, n, incomplete, failed, <metric>_mean, <metric>_std
    runs.csv                    one row per run: folder, status, swept keys, seed, metrics, seconds per stage, failure,
                                the versions it ran with (version_<package>, mfexp_commit, mfexp_dirty)
    <metric>_vs_<key>.png       a numeric swept key: metric vs key with error bars (one line per other-key setting)
    <metric>_by_<key>.png       a categorical swept key: grouped bars with error bars
    <metric>_paired.png         with --baseline: each row's per-seed differences from its baseline, mean and 95% CI
(every plot shows the seeds as dots).

`--baseline KEY=VALUE` (repeat it, or join pairs with commas: `--baseline augmenter=none,generator.num_objects=4`)
names the baseline: the groups whose values of those swept keys match. A row is compared with the baseline
group if there is one, else with the baseline group equal to the row on every swept key the baseline does not name
(none: an error; name more keys). Runs are paired by `seed` (seeds complete in both groups; a pair where a metric is
missing is left out of that metric): d_i = metric(row, seed i) - metric(baseline, seed i); the summary gains, per
metric, `<metric>_delta` (mean of d), `<metric>_ci_low`, `<metric>_ci_high` (the 95% t-interval
mean ± t(0.975, n-1) * sd(d) / sqrt(n); empty below 2 pairs), plus `n_pairs` and `baseline` (the row compared with,
`(this row)` for a baseline row, whose delta cells stay empty).

`--previous runs.csv` (repeatable) adds the rows of an earlier report's runs.csv: runs whose folders are gone (a
deleted scratch folder, another machine) still join the table and the pairing, as they were recorded (status,
keys, metrics in %, seconds). A run folder read now replaces a row of the same run path. A key the earlier report
did not list takes, in its rows, `(default)` (its value is unknown there); a key only the earlier report lists is
resolved in the runs read now as above.

`--paper conf/paper/<sweep>.yaml` adds the paper's numbers for one swept key: dashed reference lines in the plots and
a table in summary.md (the file: `source`, `key`, `values: {swept value: {metric: AP in %}}`).

Units: metrics.json holds lvis-api fractions (0.226 = 22.6 AP); everything the report writes (CSVs, summary.md,
plots) shows AP/AR metrics in % (x100; one decimal in summary.md), other metrics as they are.
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
from typing import Any

import pandas as pd
import yaml

from mfexp.environment import RECORDED

METRICS = ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP")
PLOT_METRICS = ("APr", "AP")
# the pairing key; where a synthetic set was copied from (the same data); where results are logged and stored
IGNORED_KEYS = ("seed", "generate.reuse", "logger", "logger.mode", "logger.enabled", "paths.log_dir", "paths.cache_dir")
DEFAULT = "(default)"  # a key's value in a run that neither overrode it nor records it
FAILURE = ("stage", "type", "message")  # the failed.json fields the report shows
# versions.json's fields as runs.csv columns: version_<package> for the packages, the commit fields as they are
VERSION_COLUMNS = {
    **{name: f"version_{name}" for name in RECORDED},
    "mfexp_commit": "mfexp_commit",
    "mfexp_dirty": "mfexp_dirty",
}
# keys that moved: run folders made under the old name are read as the new one (one column)
RENAMED = {"synthetic.num_objects": "generator.num_objects"}


def canonical(key: str) -> str:
    """An override key under its current name (`synthetic.num_objects` -> `generator.num_objects`)."""
    key = key.lstrip("+~")
    return RENAMED.get(key, key)


class ReportError(ValueError):
    pass


@dataclass
class Runs:
    """The run folders as one DataFrame (columns: run, status, the override keys, the metrics, seconds_<stage>,
    wandb, failed_<field>, the version columns) and what its columns are."""

    frame: pd.DataFrame
    keys: list[str]  # override keys, first seen first
    metrics: list[str]  # numeric metrics.json keys: METRICS first
    stages: list[str]
    orders: dict[str, list[str]] = field(default_factory=dict)  # a key's values in the order its sweep lists them

    @property
    def done(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "complete"]


# ------------------------------------------------------------------------------------------------ reading runs


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """Hydra override strings -> {key: value string}; `+key=v`/`++key=v` count as `key=v`, deletions are skipped."""
    out = {}
    for line in lines:
        line = str(line)
        if line.startswith("~") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[canonical(key)] = value
    return out


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None when the file is missing or unreadable (a run stopped while writing it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def read_run(path: Path) -> dict[str, Any]:
    """One run folder: its overrides, metrics (None: not complete), seconds per stage, wandb folder, failure."""
    wandb_runs = sorted((path / "wandb").glob("offline-run-*")) if (path / "wandb").is_dir() else []
    return {
        "path": path,
        "overrides": parse_overrides(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []),
        "metrics": read_json(path / "metrics.json"),
        "stage_times": read_json(path / "stage_times.json") or {},
        "wandb": str(wandb_runs[-1]) if wandb_runs else "",
        "failure": read_json(path / "failed.json"),
        "versions": read_json(path / "versions.json") or {},
    }


def versions_of(recorded: dict) -> dict[str, str]:
    """versions.json ({stage: {field: value}}) as runs.csv's version columns: a field's value, or its stages' distinct
    values joined by " | " where stages ran under different versions; empty where unrecorded."""
    out = {}
    for field_name, column in VERSION_COLUMNS.items():
        values: list[str] = []
        for stage in recorded.values():
            value = stage.get(field_name) if isinstance(stage, dict) else None
            if value is not None and str(value) not in values:
                values.append(str(value))
        out[column] = " | ".join(values)
    return out


def run_folders(*folders: str | Path) -> list[Path]:
    """Every run folder (one with `.hydra/overrides.yaml`) below the folders, links followed, once each, by path."""
    paths: dict[Path, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ReportError(f"not a folder: {folder}")
        for root, _, files in os.walk(folder, followlinks=True):
            if Path(root).name == ".hydra" and "overrides.yaml" in files:
                paths.setdefault(Path(root).parent.resolve(), Path(root).parent)
    if not paths:
        raise ReportError(
            f"no run folders below {', '.join(map(str, folders))} (a run folder holds .hydra/overrides.yaml)"
        )
    return sorted(paths.values())


def override_string(value: Any) -> str:
    """A config value written the way it is given on the command line (4, 0.5, true, null, [8,4], mosaicfusion)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_string(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).splitlines()[0]
    return str(value)


def resolved_value(path: Path, key: str) -> str | None:
    """The value a run used for an override key it did not give: its config-group choice or its config value."""
    from omegaconf import OmegaConf

    choices = read_yaml(path / ".hydra" / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    if key in choices:
        return override_string(choices[key])
    config_file = path / ".hydra" / "config.yaml"
    if config_file.is_file():
        try:
            config = OmegaConf.load(config_file)
            names = [key, *(old for old, new in RENAMED.items() if new == key)]
            found = next(
                (
                    v
                    for v in (OmegaConf.select(config, k, default=None, throw_on_missing=False) for k in names)
                    if v is not None
                ),
                None,
            )
            if OmegaConf.is_config(found):
                found = OmegaConf.to_container(found, resolve=True)
        except Exception:  # an interpolation that needs the app's resolvers: leave the value unknown
            return None
        if found is not None:
            return override_string(found)
    return None


def fill_missing_keys(runs: list[dict]) -> None:
    """Give every run a value for every key some run overrides (see the module docstring); none if unknowable."""
    keys = {k for r in runs for k in r["overrides"]}
    for run in runs:
        for key in sorted(keys - set(run["overrides"])):
            value = resolved_value(run["path"], key)
            if value is not None:
                run["overrides"][key] = value


def sweep_orders(path: Path) -> dict[str, list[str]]:
    """The values of each key a run's sweep varies, in the order the sweep lists them: `hydra.sweeper.params` of the
    run's `.hydra/hydra.yaml`, and the sweep's `multirun.yaml` (its params and its command-line sweep overrides)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = []
    for file in (path / ".hydra" / "hydra.yaml", path.parent / "multirun.yaml"):
        hydra = read_yaml(file).get("hydra") or {}
        texts += [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
        if file.name == "multirun.yaml":
            texts += [str(t) for t in (hydra.get("overrides") or {}).get("task") or []]
    parser = OverridesParser.create()
    listed: dict[str, list[str]] = {}
    for text in texts:
        try:
            (override,) = parser.parse_overrides([text])
            if override.is_sweep_override():
                listed.setdefault(canonical(override.get_key_element()), list(override.sweep_string_iterator()))
        except Exception:  # a sweep the parser cannot list (glob): first-seen order
            continue
    return listed


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def is_percent(metric: str) -> bool:
    """AP/AR metrics (lvis-api fractions in metrics.json) are shown in %."""
    return metric.removeprefix("bbox_").startswith(("AP", "AR"))


def load_runs(*folders: str | Path) -> Runs:
    """Every run below the folders as one DataFrame row: run, status (complete / failed / incomplete), each override
    key (filled in as the module docstring says; DEFAULT where unknown), each metric (AP/AR in %), seconds_<stage>,
    wandb, failed_stage / failed_type / failed_message, version_<package> / mfexp_commit / mfexp_dirty."""
    runs = [read_run(p) for p in run_folders(*folders)]
    fill_missing_keys(runs)
    keys: list[str] = []
    stages: list[str] = []
    for r in runs:
        keys += [k for k in r["overrides"] if k not in keys]
        stages += [s for s in r["stage_times"] if s not in stages]
    present = {k for r in runs if r["metrics"] for k, v in r["metrics"].items() if is_number(v)}
    metrics = [k for k in METRICS if k in present] + sorted(present - set(METRICS))
    records = []
    for r in runs:
        status = "failed" if r["failure"] is not None else "complete" if r["metrics"] is not None else "incomplete"
        values = r["metrics"] or {}
        record: dict[str, Any] = {"run": str(r["path"]), "status": status}
        record.update({k: r["overrides"].get(k, DEFAULT) for k in keys})
        record.update(
            {
                m: (100 if is_percent(m) else 1) * float(values[m]) if is_number(values.get(m)) else math.nan
                for m in metrics
            }
        )
        record.update({f"seconds_{s}": r["stage_times"].get(s, math.nan) for s in stages})
        record["wandb"] = r["wandb"]
        record.update({f"failed_{f}": str((r["failure"] or {}).get(f, "")) for f in FAILURE})
        record.update(versions_of(r["versions"]))
        records.append(record)
    listed: dict[str, list[str]] = {}
    for r in runs:
        for key, sweep in sweep_orders(r["path"]).items():
            listed.setdefault(key, sweep)
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "run",
            "status",
            *keys,
            *metrics,
            *(f"seconds_{s}" for s in stages),
            "wandb",
            *(f"failed_{f}" for f in FAILURE),
            *VERSION_COLUMNS.values(),
        ],
    )
    return Runs(frame, keys, metrics, stages, listed)


def with_previous(runs: Runs, csv: str | Path) -> Runs:
    """`runs` and the rows of an earlier report's runs.csv (see the module docstring). Its columns: run, status, the
    keys, seed, the metrics, seconds_<stage>..., wandb and what follows (`run_columns`)."""
    path = Path(csv)
    if not path.is_file():
        raise ReportError(f"--previous {path}: no such file")
    earlier = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = list(earlier.columns)
    if columns[:2] != ["run", "status"] or "seed" not in columns or "wandb" not in columns:
        raise ReportError(f"--previous {path}: not a runs.csv written by mfexp.report (run, status, ..., seed, ...)")
    seed, wandb = columns.index("seed"), columns.index("wandb")
    keys = [*columns[2:seed], "seed"]
    measured = columns[seed + 1 : wandb]
    stages = [c.removeprefix("seconds_") for c in measured if c.startswith("seconds_")]
    metrics = [c for c in measured if not c.startswith("seconds_")]
    for c in measured:
        earlier[c] = pd.to_numeric(earlier[c].replace("", math.nan))
    earlier = earlier[~earlier["run"].isin(set(runs.frame["run"]))].copy()
    frame = runs.frame.copy()
    for key in keys:  # a key the earlier runs list and these do not: what these runs used, where it is known
        if key not in frame.columns:
            frame[key] = [resolved_value(Path(run), key) or DEFAULT for run in frame["run"]]
    for key in runs.keys:
        if key not in earlier.columns:
            earlier[key] = DEFAULT
    all_keys = runs.keys + [k for k in keys if k not in runs.keys]
    all_metrics = list(dict.fromkeys([m for m in METRICS if m in runs.metrics + metrics] + runs.metrics + metrics))
    all_stages = list(dict.fromkeys(runs.stages + stages))
    return Runs(pd.concat([earlier, frame], ignore_index=True), all_keys, all_metrics, all_stages, runs.orders)


# ------------------------------------------------------------------------------------------------ grouping


def swept_keys(runs: Runs, ignore: tuple[str, ...] = IGNORED_KEYS) -> list[str]:
    """Override keys whose value differs between runs (a key missing in some runs counts as differing)."""
    return [k for k in runs.keys if k not in ignore and runs.frame[k].nunique() > 1]


def typed(value: str | None) -> Any:
    """An override value as YAML reads it (4 -> int, 0.5 -> float, [0,0] -> list); None stays None."""
    if value is None:
        return None
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def is_numeric(values: list[str]) -> bool:
    vals = [typed(v) for v in values]
    return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def same(a: str, b: str) -> bool:
    """Two override values are the same setting (`0.5` and `0.50`, `[8,4]` and `[8, 4]` are; `true` and `1` not)."""
    x, y = typed(str(a)), typed(str(b))
    return str(a) == str(b) or (x == y and isinstance(x, bool) == isinstance(y, bool))


def sort_key(value: str) -> tuple[int, float, str]:
    v = typed(value)
    if value == DEFAULT or v is None:
        return (0, 0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, str(value))


def value_order(values: list[str], listed: list[str]) -> list[str]:
    """A key's values in config order: DEFAULT first; numbers ascending; else as the sweep lists them, then the
    others in the order given (first seen)."""
    values = list(dict.fromkeys(values))
    if is_numeric([v for v in values if v != DEFAULT]):
        return sorted(values, key=sort_key)
    rank = {v: next((i for i, s in enumerate(listed) if same(v, s)), len(listed)) for v in values}
    return sorted(values, key=lambda v: (v != DEFAULT, rank[v]))  # sorted() is stable: first seen among the rest


def orders(runs: Runs, keys: list[str]) -> dict[str, list[str]]:
    return {k: value_order(list(runs.frame[k]), runs.orders.get(k, [])) for k in keys}


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if not n:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(runs: Runs, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per setting of the swept keys, in config order: the key values, n (complete runs), incomplete,
    failed, seeds, <metric>_mean/_std over the complete runs."""
    ranks = {k: {v: i for i, v in enumerate(vs)} for k, vs in orders(runs, keys).items()}
    rows = []
    for setting, group in runs.frame.groupby(keys, sort=False) if keys else [((), runs.frame)]:
        done = group[group["status"] == "complete"]
        row: dict[str, Any] = dict(zip(keys, setting))
        row["n"] = len(done)
        row["incomplete"] = int((group["status"] == "incomplete").sum())
        row["failed"] = int((group["status"] == "failed").sum())
        row["seeds"] = " ".join(sorted(done["seed"] if "seed" in done else ["-"] * len(done), key=sort_key))
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(list(done[m].dropna()))
        rows.append(row)
    rows.sort(key=lambda row: [ranks[k][row[k]] for k in keys])
    return pd.DataFrame(rows)


def members(runs: Runs, row: pd.Series, keys: list[str]) -> pd.DataFrame:
    """The complete runs of a summary row."""
    done = runs.done
    return done[(done[keys] == row[keys]).all(axis=1)] if keys else done


# ------------------------------------------------------------------------------------------------ paired statistics


def parse_baseline(specs: str | list[str] | None) -> dict[str, str]:
    """`--baseline` values -> {key: value}: KEY=VALUE, several joined by commas or given by repeating the option.
    A comma splits only before another `KEY=`, so list values such as `[8,4]` stay whole."""
    spec = {}
    for text in [specs] if isinstance(specs, str) else (specs or []):
        for part in re.split(r",(?=[\w.@/+-]+=)", text):
            key, sep, value = part.partition("=")
            key, value = canonical(key.strip()), value.strip()
            if not sep or not key or not value:
                raise ReportError(
                    f"malformed --baseline {text!r}: expected KEY=VALUE[,KEY=VALUE...], e.g. --baseline augmenter=none"
                )
            spec[key] = value
    return spec


def label(row: Any, keys: Any) -> str:
    return ",".join(f"{k}={row[k]}" for k in keys)


def assign_baselines(summary: pd.DataFrame, keys: list[str], spec: dict[str, str]) -> list[int | None]:
    """Per summary row, the index of the row it is compared with (None for a baseline row); see the module
    docstring."""
    unknown = [k for k in spec if k not in keys]
    if unknown:
        raise ReportError(
            f"--baseline names {', '.join(unknown)}, not a swept key (swept: {', '.join(keys) or 'nothing'})"
        )
    bases = [i for i, row in summary.iterrows() if all(same(row[k], v) for k, v in spec.items())]
    if not bases:
        seen = "; ".join(f"{k}: {', '.join(sorted(set(summary[k]), key=sort_key))}" for k in spec)
        raise ReportError(f"--baseline {label(spec, spec)}: no group has these values (values seen: {seen})")
    others = [k for k in keys if k not in spec]
    out: list[int | None] = []
    for i, row in summary.iterrows():
        if i in bases:
            out.append(None)
            continue
        match = bases if len(bases) == 1 else [b for b in bases if all(summary.at[b, k] == row[k] for k in others)]
        if not match:
            raise ReportError(
                f"no baseline for the row {label(row, keys)}: --baseline {label(spec, spec)} matches "
                f"{len(bases)} groups and none has the row's {label(row, others)}; "
                "name more keys in --baseline"
            )
        out.append(match[0])
    return out


def by_seed(runs: pd.DataFrame, row: pd.Series, keys: list[str]) -> pd.DataFrame:
    """A row's complete runs indexed by seed (one run per seed, or an error)."""
    twice = runs[runs["seed"].duplicated(keep=False)]
    if len(twice):
        first, second = twice["run"].iloc[:2]
        raise ReportError(
            f"{label(row, keys)}: two complete runs with seed={twice['seed'].iloc[0]} ({first}, "
            f"{second}); pairing by seed needs one run per seed and setting"
        )
    return runs.set_index("seed")


def t_interval(d: list[float]) -> tuple[float, float, float]:
    """The mean of paired differences and its 95% t-interval, mean ± t(0.975, n-1) * sd / sqrt(n) (sd: ddof=1);
    NaN bounds below 2 pairs, NaN mean for none."""
    from scipy import stats

    mean, sd = mean_std(d)
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
    return mean, mean - half, mean + half


def pair(runs: Runs, summary: pd.DataFrame, keys: list[str], metrics: list[str], spec: dict[str, str]) -> pd.DataFrame:
    """Adds `baseline`, `n_pairs` (seeds complete in the row and its baseline) and per metric `<metric>_delta`,
    `_ci_low`, `_ci_high` to the summary; returns the per-seed differences (columns row, seed, metric, d)."""
    bases = assign_baselines(summary, keys, spec)  # first: a key --baseline names that is not swept
    if "seed" not in runs.frame:
        raise ReportError("--baseline pairs runs by seed, and no run names its seed")
    summary["baseline"] = [label(summary.loc[b], keys) if b is not None else "(this row)" for b in bases]
    summary["n_pairs"] = pd.array([pd.NA] * len(summary), dtype="Int64")
    for column in (f"{m}_{s}" for m in metrics for s in ("delta", "ci_low", "ci_high")):
        summary[column] = math.nan
    diffs = []
    for i, b in zip(summary.index, bases):
        if b is None:
            continue
        mine = by_seed(members(runs, summary.loc[i], keys), summary.loc[i], keys)
        theirs = by_seed(members(runs, summary.loc[b], keys), summary.loc[b], keys)
        seeds = sorted(set(mine.index) & set(theirs.index), key=sort_key)
        summary.loc[i, "n_pairs"] = len(seeds)
        for m in metrics:
            d = (mine.loc[seeds, m] - theirs.loc[seeds, m]).dropna()
            diffs += [{"row": i, "seed": s, "metric": m, "d": v} for s, v in d.items()]
            summary.loc[i, [f"{m}_delta", f"{m}_ci_low", f"{m}_ci_high"]] = t_interval(list(d))
    return pd.DataFrame(diffs, columns=["row", "seed", "metric", "d"])


def significant(row: pd.Series, metric: str) -> bool:
    """The 95% interval excludes 0."""
    low, high = row.get(f"{metric}_ci_low", math.nan), row.get(f"{metric}_ci_high", math.nan)
    return not math.isnan(low) and (low > 0 or high < 0)


# ------------------------------------------------------------------------------------------------ paper numbers


@dataclass
class Paper:
    """The paper's numbers for one swept key (a conf/paper/*.yaml file): value -> {metric: AP in %}."""

    source: str
    key: str
    values: dict[str, dict[str, float]]

    def find(self, value: str) -> dict[str, float] | None:
        """The paper's numbers at a swept value (quotes around a string value do not matter)."""
        return next((n for v, n in self.values.items() if same(v, value) or unquote(v) == unquote(value)), None)

    def at(self, value: str, metric: str) -> float | None:
        return (self.find(value) or {}).get(metric)


def unquote(text: str) -> str:
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def load_paper(path: str | Path | None) -> Paper | None:
    if path is None:
        return None
    try:
        raw = yaml.safe_load(Path(path).read_text())
        paper = Paper(
            str(raw["source"]),
            str(raw["key"]),
            {
                override_string(v): {str(m): float(x) for m, x in numbers.items()}
                for v, numbers in raw["values"].items()
            },
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise ReportError(
            f"--paper {path}: expected a YAML file with source, key and values: {{value: {{metric: "
            f"number}}}} ({type(e).__name__}: {e})"
        ) from None
    return paper


# ------------------------------------------------------------------------------------------------ output


def fmt(x: float, metric: str | None = None, sign: str = "") -> str:
    """A number for summary.md: AP/AR metrics (in %) with one decimal, others with three."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{sign}.1f}" if metric and is_percent(metric) else f"{x:{sign}.3f}"


def cell(row: pd.Series, m: str) -> str:
    """`mean ± std`, with a baseline `; Δ delta [low, high]` (bold when the interval excludes 0)."""
    if not row["n"]:
        return "-"
    text = f"{fmt(row[f'{m}_mean'], m)} ± {fmt(row[f'{m}_std'], m)}"
    delta = row.get(f"{m}_delta", math.nan)
    if math.isnan(delta):
        return text
    shown = f"Δ {fmt(delta, m, '+')}"
    if math.isnan(row[f"{m}_ci_low"]):
        return f"{text}; {shown}"
    shown += f" [{fmt(row[f'{m}_ci_low'], m, '+')}, {fmt(row[f'{m}_ci_high'], m, '+')}]"
    return f"{text}; **{shown}**" if significant(row, m) else f"{text}; {shown}"


def markdown(
    runs: Runs,
    summary: pd.DataFrame,
    keys: list[str],
    metrics: list[str],
    folder: str,
    spec: dict[str, str] | None = None,
    paper: Paper | None = None,
) -> str:
    frame = runs.frame
    failed, incomplete = frame[frame["status"] == "failed"], frame[frame["status"] == "incomplete"]
    head = keys + ["n"] + (["pairs"] if spec else []) + metrics + ["incomplete"] + (["failed"] if len(failed) else [])
    units = "AP/AR in % (metrics.json's fractions x100)" if any(map(is_percent, metrics)) else ""
    lines = [
        f"# Sweep report: {folder}",
        "",
        f"{len(runs.done)} complete of {len(frame)} runs; swept: {', '.join(keys) or '(nothing)'}; "
        f"cells are mean ± std over seeds (sample std, ddof=1){'; ' + units if units else ''}.",
        "",
    ]
    if spec:
        others = [k for k in keys if k not in spec]
        several = (summary["baseline"] == "(this row)").sum() > 1
        own = f"; each row's is the one with its own {', '.join(others)}" if several else ""
        lines += [
            f"Δ [low, high]: paired difference from the baseline ({label(spec, spec)}{own}), mean over the "
            "seeds both ran (pairs) with its 95% t-interval, mean ± t(0.975, n-1)·sd/√n (none below 2 pairs);"
            " **bold**: the interval excludes 0.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in summary.iterrows():
        cells = [f"`{row[k]}`" for k in keys] + [str(row["n"])]
        if spec:
            cells.append("baseline" if row["baseline"] == "(this row)" else str(row["n_pairs"]))
        cells += [cell(row, m) for m in metrics]
        cells += [str(row["incomplete"])] + ([str(row["failed"])] if len(failed) else [])
        lines.append("| " + " | ".join(cells) + " |")
    if paper is not None:
        shown = [m for m in metrics if any(m in numbers for numbers in paper.values.values())]
        lines += [
            "",
            f"## Paper: {paper.source}",
            "",
            f"| {paper.key} | " + " | ".join(shown) + " |",
            "|" + "|".join("---" for _ in range(len(shown) + 1)) + "|",
        ]
        lines += [
            f"| `{v}` | " + " | ".join(fmt(numbers.get(m, math.nan), m) for m in shown) + " |"
            for v, numbers in paper.values.items()
        ]
    if len(failed):
        lines += ["", f"## Failed runs ({len(failed)}: failed.json)", ""]
        for _, r in failed.iterrows():
            message = r["failed_message"].strip().splitlines()[0] if r["failed_message"].strip() else ""
            lines.append(f"- `{r['run']}`: stage {r['failed_stage'] or '?'}, {r['failed_type'] or '?'}: {message}")
    if len(incomplete):
        lines += ["", f"## Incomplete runs ({len(incomplete)}: no metrics.json)", ""]
        for _, r in incomplete.iterrows():
            stages = ", ".join(s for s in runs.stages if not math.isnan(r[f"seconds_{s}"])) or "none"
            lines.append(f"- `{r['run']}` (stages done: {stages})")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    from mfexp.fileio import atomic_write_bytes

    atomic_write_bytes(path, frame.reindex(columns=columns).to_csv(index=False, lineterminator="\n").encode())


def run_columns(runs: Runs, keys: list[str]) -> list[str]:
    return [
        "run",
        "status",
        *keys,
        "seed",
        *runs.metrics,
        *(f"seconds_{s}" for s in runs.stages),
        "wandb",
        *(f"failed_{f}" for f in FAILURE),
        *VERSION_COLUMNS.values(),
    ]


def unit(m: str) -> str:
    return " (%)" if is_percent(m) else ""


def plot(
    runs: Runs, summary: pd.DataFrame, keys: list[str], metrics: list[str], out: Path, paper: Paper | None = None
) -> list[Path]:
    """One figure per swept key and metric (see `figure`), written to `out`."""
    import matplotlib.pyplot as plt

    written = []
    for key in keys:
        for m in metrics:
            drawn = figure(runs, summary, keys, key, m, paper)
            if drawn is None:
                continue
            fig, name = drawn
            fig.savefig(out / name, dpi=120)
            plt.close(fig)
            written.append(out / name)
    return written


def figure(
    runs: Runs, summary: pd.DataFrame, keys: list[str], key: str, m: str, paper: Paper | None = None
) -> tuple[Any, str] | None:
    """Metric m vs a numeric swept key (mean ± std, a line per other-key setting), or grouped bars in config order
    for a categorical one; the seeds as dots; the paper's numbers as dashed lines. (figure, file name), or None
    when no complete run has the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    others = [k for k in keys if k != key]
    xs = [x for x in orders(runs, keys)[key] if x in set(summary.loc[summary["n"] > 0, key])]
    numeric = DEFAULT not in xs and is_numeric(xs)
    done = runs.done
    if done[m].isna().all():
        return None
    data = done.assign(
        _series=[label(r, others) for _, r in done.iterrows()] if others else "",
        _x=[float(typed(x)) if numeric else x for x in done[key]],
    )
    series = [label(r, others) for _, r in summary[summary["n"] > 0].iterrows()] if others else []
    hue: dict[str, Any] = dict(hue="_series", hue_order=list(dict.fromkeys(series))) if others else dict(color="C0")
    fig, ax = plt.subplots(figsize=(6, 4))
    if numeric:
        sns.lineplot(
            data, x="_x", y=m, **hue, marker="o", errorbar="sd", err_style="bars", err_kws={"capsize": 4}, ax=ax
        )
        sns.scatterplot(data, x="_x", y=m, **hue, s=16, edgecolor="k", legend=False, ax=ax, zorder=3)
        ax.set_xticks([float(typed(x)) for x in xs])
    else:
        sns.barplot(data, x="_x", y=m, order=xs, **hue, errorbar="sd", capsize=0.1, alpha=0.7, ax=ax)
        sns.stripplot(
            data,
            x="_x",
            y=m,
            order=xs,
            **hue,
            dodge=bool(others),
            jitter=False,
            size=4,
            edgecolor="k",
            linewidth=0.5,
            legend=False,
            ax=ax,
        )
        ax.tick_params(axis="x", labelrotation=15)
    legend = ax.get_legend()  # seaborn's, one entry per other-key setting
    handles = list(legend.legend_handles) if legend else []
    labels = [t.get_text() for t in legend.get_texts()] if legend else []
    if paper is not None and paper.key == key and reference(ax, paper, xs, m, numeric):
        handles, labels = handles + [ax.get_lines()[-1] if numeric else ax.collections[-1]], labels + ["paper"]
    if handles:
        ax.legend(handles, labels, fontsize=8, title=", ".join(others) or None, title_fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{m}{unit(m)}: mean ± std over seeds, dots: seeds")
    ax.set_title(f"{m} vs {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig, f"{m}_{'vs' if numeric else 'by'}_{key.replace('/', '_')}.png"


def reference(ax: Any, paper: Paper, xs: list[str], metric: str, numeric: bool) -> bool:
    """Draws the paper's numbers at the plotted values (a dashed line through them, or one dashed segment over each
    bar); False if the paper has none."""
    found = [(float(typed(x)) if numeric else i, paper.at(x, metric)) for i, x in enumerate(xs)]
    points = [(x, y) for x, y in found if y is not None]
    if not points:
        return False
    if numeric:
        ax.plot([x for x, _ in points], [y for _, y in points], "k--", marker="x")
    else:
        ax.hlines(
            [y for _, y in points],
            [x - 0.45 for x, _ in points],
            [x + 0.45 for x, _ in points],
            colors="k",
            linestyles="--",
        )
    return True


def plot_paired(
    summary: pd.DataFrame, diffs: pd.DataFrame, keys: list[str], metrics: list[str], spec: dict[str, str], out: Path
) -> list[Path]:
    """Per metric: each compared row's per-seed differences from its baseline (dots), their mean and 95% t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    compared = summary[summary["baseline"] != "(this row)"]
    for m in metrics:
        ours = diffs[diffs["metric"] == m]
        if not len(ours):
            continue
        ticks = [tick_label(r, keys) for _, r in compared.iterrows()]
        column = max(1.2, 0.075 * max((len(line) for t in ticks for line in t.split("\n")), default=0) + 0.3)
        rotate = column * len(compared) + 2 > MAX_FIGURE_WIDTH  # too many rows for side-by-side labels
        width = 1.2 * len(compared) + 2 if rotate else column * len(compared) + 2
        fig, ax = plt.subplots(figsize=(min(max(5.5, width), MAX_FIGURE_WIDTH), 4))
        for i, (index, r) in enumerate(compared.iterrows()):
            d = list(ours.loc[ours["row"] == index, "d"])
            if not d:
                continue
            ax.scatter([i - 0.12 + o / 3 for o in spread(len(d))], d, s=14, color="C0", alpha=0.7, zorder=3)
            mean, low, high = (r[f"{m}_{s}"] for s in ("delta", "ci_low", "ci_high"))
            yerr = None if math.isnan(low) else [[mean - low], [high - mean]]
            ax.errorbar([i + 0.12], [mean], yerr=yerr, fmt="D", color="C3" if significant(r, m) else "k", capsize=5)
        ax.axhline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(compared)))
        ax.set_xlim(-0.6, len(compared) - 0.4)
        ax.set_xticklabels(ticks, fontsize=8, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylabel(f"Δ {m}{' (AP points)' if is_percent(m) else ''}")
        ax.set_title(
            f"{m} minus baseline, paired by seed\n({label(spec, spec)})\n"
            "dots: seeds; diamond: mean, 95% t-interval (red: excludes 0)",
            fontsize=8,
        )
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        path = out / f"{m}_paired.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


MAX_FIGURE_WIDTH = 14.0  # inches


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key by its last dotted part (``generator.num_objects`` -> ``num_objects``) where no other key ends the
    same, else in full."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


def tick_label(row: Any, keys: list[str]) -> str:
    """A row's x label: one ``key=value`` line per swept key, keys shortened by short_keys."""
    return "\n".join(f"{short}={row[k]}" for k, short in short_keys(keys).items())


def spread(k: int, width: float = 0.3) -> list[float]:
    """x offsets that spread k per-seed points around their position."""
    return [(j - (k - 1) / 2) * width / max(k - 1, 1) for j in range(k)]


def report(
    folder: str | Path | list[str | Path],
    out: str | Path | None = None,
    metrics: list[str] | None = None,
    baseline: str | list[str] | None = None,
    paper: str | Path | None = None,
    previous: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Read the run folders below one or more folders and write the table (CSV + Markdown) and plots; with
    `baseline` (KEY=VALUE strings, see parse_baseline) also the paired differences from the baseline row; with
    `paper` (a conf/paper/*.yaml file) the paper's numbers; with `previous` (runs.csv files) the runs they list."""
    spec = parse_baseline(baseline)
    reference_numbers = load_paper(paper)
    folders = [Path(f) for f in (folder if isinstance(folder, (list, tuple)) else [folder])]
    runs = load_runs(*folders)
    for csv in previous or []:
        runs = with_previous(runs, csv)
    if out is None and len(folders) > 1:
        raise ReportError("several folders: say where the report goes with --out")
    out = Path(out) if out else folders[0] / "report"
    keys = swept_keys(runs)
    for key, value in spec.items():  # the baseline's value leads its key's values (after "(default)")
        runs.orders[key] = [value, *runs.orders.get(key, [])]
    if reference_numbers is not None and reference_numbers.key not in keys:
        raise ReportError(
            f"--paper {paper} gives numbers for {reference_numbers.key}, not a swept key "
            f"(swept: {', '.join(keys) or 'nothing'})"
        )
    all_metrics = runs.metrics or list(METRICS)
    for m in all_metrics:
        runs.frame[m] = runs.frame.get(m, math.nan)
    summary = summarise(runs, keys, all_metrics)
    columns = keys + ["n", "incomplete", "failed", "seeds"] + [f"{m}_{s}" for m in all_metrics for s in ("mean", "std")]
    diffs = pd.DataFrame(columns=["row", "seed", "metric", "d"])
    if spec:
        diffs = pair(runs, summary, keys, all_metrics, spec)
        columns += ["baseline", "n_pairs"] + [f"{m}_{s}" for m in all_metrics for s in ("delta", "ci_low", "ci_high")]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", summary, columns)
    write_csv(out / "runs.csv", runs.frame, run_columns(runs, keys))
    headline = [m for m in METRICS if m in all_metrics] or all_metrics  # the table; the CSVs keep every metric
    text = markdown(runs, summary, keys, headline, ", ".join(map(str, folders)), spec, reference_numbers)
    (out / "summary.md").write_text(text)
    plot_metrics = [m for m in (metrics or PLOT_METRICS) if m in all_metrics]
    figures = plot(runs, summary, keys, plot_metrics, out, reference_numbers) if keys else []
    if spec:
        figures += plot_paired(summary, diffs, keys, plot_metrics, spec, out)
    status = runs.frame["status"]
    return {
        "runs": len(runs.frame),
        "complete": int((status == "complete").sum()),
        "swept": keys,
        "rows": summary.to_dict("records"),
        "summary": summary,
        "frame": runs.frame,
        "markdown": text,
        "out": out,
        "figures": figures,
        "baseline": spec,
        "incomplete": list(runs.frame.loc[status == "incomplete", "run"]),
        "failed": list(runs.frame.loc[status == "failed", "run"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mfexp-report", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("folder", nargs="+", help="multirun/sweep folders (run folders hold .hydra/ and metrics.json)")
    parser.add_argument("--out", default=None, help="where to write the table and plots (default: FOLDER/report)")
    parser.add_argument("--metrics", default=",".join(PLOT_METRICS), help="metrics to plot, comma-separated")
    parser.add_argument(
        "--baseline",
        action="append",
        metavar="KEY=VALUE",
        help="the baseline group by its swept-key values (repeat, or KEY=V,KEY2=V2): adds per-seed "
        "paired differences with 95%% t-intervals to the table and plots",
    )
    parser.add_argument(
        "--paper",
        default=None,
        metavar="FILE",
        help="the paper's numbers for a swept key (conf/paper/<sweep>.yaml): reference lines in the "
        "plots and a table in summary.md",
    )
    parser.add_argument(
        "--previous",
        action="append",
        metavar="RUNS_CSV",
        help="an earlier report's runs.csv (repeatable): its runs join these, as recorded (their folders may be gone)",
    )
    args = parser.parse_args(argv)
    try:
        metrics = [m for m in args.metrics.split(",") if m]
        result = report(args.folder, args.out, metrics, args.baseline, args.paper, args.previous)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(
        f"written to {result['out']}: summary.csv, summary.md, runs.csv"
        + "".join(f", {p.name}" for p in result["figures"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
