"""Sweep configs compose, the SLURM launcher config and the sweep report."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, compose
from omegaconf import OmegaConf

SWEEPS = sorted((ROOT / "sweeps" / "sweep").glob("*.yaml"))
SEARCHPATH = f"hydra.searchpath=[file://{ROOT / 'sweeps'}]"


def primary_has_searchpath() -> bool:
    raw = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    return bool((raw.get("hydra") or {}).get("searchpath"))


def compose_sweep(overrides=()):
    """Compose as `python -m mfexp <overrides>` does; until conf/config.yaml names sweeps/ in hydra.searchpath, pass
    the search path on the command line (which Hydra also honours)."""
    extra = [] if primary_has_searchpath() else [SEARCHPATH]
    return compose(list(overrides) + extra)


def sweep_values(params) -> list[list[str]]:
    """Every override combination of a `hydra.sweeper.params` node (as the basic sweeper expands it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    combos = [[]]
    for key, value in params.items():
        (ov,) = parser.parse_overrides([f"{key}={value}"])
        options = (
            [f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()]
            if ov.is_sweep_override()
            else [f"{key}={value}"]
        )
        combos = [c + [o] for c in combos for o in options]
    return combos


# ------------------------------------------------------------------------------------------------ sweeps


def test_there_are_sweeps_for_the_papers_ablations():
    names = {p.stem for p in SWEEPS}
    assert {
        "num_objects",
        "overlap",
        "attention_resolutions",
        "attention_blocks",
        "step_window",
        "images_per_category",
        "augmenter",
        "seeds",
    } <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_composes_and_every_setting_composes(path):
    name = path.stem
    assert path.read_text().startswith("# @package _global_")
    base = ["experiment=lvis_mosaicfusion"] if name.startswith("lvis_") else []
    cfg = compose_sweep(base + [f"+sweep={name}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.logger.group == name
    assert cfg.hydra.sweep.dir.endswith(f"sweeps/{name}")
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert "seed" in params and len(str(params["seed"]).split(",")) >= 3
    combos = sweep_values(params)
    assert len(combos) >= 3
    for combo in combos:
        run = compose_sweep(base + [f"+sweep={name}"] + combo)
        res = OmegaConf.select(run, "generator.attention.resolutions")
        assert set(res) <= set(run.generator.model.attention_resolutions), combo
        steps = run.generator.attention.steps
        assert steps[1] is None or steps[1] <= run.generator.num_inference_steps, combo
        assert all(v % 8 == 0 for v in run.generator.overlap), combo
        if "augmenter=" in " ".join(combo):
            OmegaConf.to_container(run.augmenter, resolve=True)


def test_sweep_search_path_in_primary_config():
    """Once the lead adds sweeps/ to conf/config.yaml's hydra.searchpath, `+sweep=<name>` needs no extra override."""
    if not primary_has_searchpath():
        pytest.skip("conf/config.yaml has no hydra.searchpath yet (see the report's requested change)")
    cfg = compose(["+sweep=num_objects", "generator.num_objects=2", "seed=1"])
    assert cfg.logger.group == "num_objects"
    # the sweep's name is the sweep folder's, not part of each run folder's name
    assert cfg.hydra.job.override_dirname == "generator.num_objects=2,seed=1"  # sorted by key


def test_slurm_launcher_config():
    path = ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml"
    text = path.read_text()
    assert text.startswith("# @package hydra.launcher") and "pip install hydra-submitit-launcher" in text
    raw = yaml.safe_load(text)
    assert raw["defaults"] == ["submitit_slurm"]
    for key in (
        "submitit_folder",
        "timeout_min",
        "nodes",
        "tasks_per_node",
        "gpus_per_node",
        "cpus_per_task",
        "mem_gb",
        "partition",
        "array_parallelism",
        "setup",
        "additional_parameters",
    ):
        assert key in raw, key
    assert raw["tasks_per_node"] == raw["gpus_per_node"]
    if (
        importlib.util.find_spec("hydra_plugins") is None
        or importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None
    ):
        return  # the plugin is optional: pip install hydra-submitit-launcher
    cfg = compose_sweep(["+sweep=augmenter", "hydra/launcher=slurm"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == raw["gpus_per_node"]


# ------------------------------------------------------------------------------------------------ report


def fake_run(root: Path, name: str, overrides: list[str], metrics: dict | None, times=None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))
    (run / "stage_times.json").write_text(json.dumps(times or {"generate": 1.0}))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def metrics(ap, apr):
    """metrics.json as the evaluate stage writes it: lvis-api fractions (0.226 = 22.6 AP), plus counts."""
    return {
        "AP": ap,
        "APr": apr,
        "APc": 0.1,
        "APf": 0.2,
        "AP_novel": 0.05,
        "bbox_AP": ap + 0.01,
        "num_predictions": 300,
    }


def test_report_groups_by_swept_keys_with_mean_std_over_seeds(tmp_path):
    from mfexp.report import report

    sweep = tmp_path / "sweep"
    fake_run(sweep, "a0", ["+sweep=augmenter", "augmenter=none", "seed=0"], metrics(0.20, 0.09))
    fake_run(sweep, "a1", ["+sweep=augmenter", "augmenter=none", "seed=1"], metrics(0.22, 0.10))
    fake_run(sweep, "b0", ["+sweep=augmenter", "augmenter=cut_paste", "seed=0"], metrics(0.23, 0.125))
    fake_run(sweep, "b1", ["+sweep=augmenter", "augmenter=cut_paste", "seed=1"], None, {"generate": 2.0})
    out = report(sweep, tmp_path / "out")
    assert out["swept"] == ["augmenter"]  # seed and the constant +sweep are not swept
    assert out["runs"] == 4 and out["complete"] == 3
    rows = {r["augmenter"]: r for r in out["rows"]}
    none, cp = rows["none"], rows["cut_paste"]
    assert none["n"] == 2 and none["incomplete"] == 0 and none["seeds"] == "0 1"
    assert none["AP_mean"] == pytest.approx(21.0)  # AP in % (metrics.json: fractions)
    assert none["AP_std"] == pytest.approx(math.sqrt(((20 - 21) ** 2 + (22 - 21) ** 2) / 1))  # sample std
    assert none["APr_mean"] == pytest.approx(9.5) and none["APr_std"] == pytest.approx(math.sqrt(0.5))
    assert cp["n"] == 1 and cp["incomplete"] == 1 and cp["APr_mean"] == pytest.approx(12.5) and cp["APr_std"] == 0.0
    assert [str(p) for p in out["incomplete"]] == [str(sweep / "b1")]

    with open(tmp_path / "out" / "summary.csv") as f:
        import csv

        table = {r["augmenter"]: r for r in csv.DictReader(f)}
    assert float(table["none"]["APr_mean"]) == pytest.approx(9.5) and table["cut_paste"]["incomplete"] == "1"
    assert "AP_delta" not in table["none"]  # no --baseline: no paired columns
    md = (tmp_path / "out" / "summary.md").read_text()  # AP in %, one decimal, as in the CSV
    assert "21.0 ± 1.4" in md and "AP/AR in %" in md and "Incomplete runs (1" in md and "b1" in md
    runs_csv = (tmp_path / "out" / "runs.csv").read_text()
    assert "incomplete" in runs_csv and runs_csv.count("\n") == 5
    assert (tmp_path / "out" / "APr_by_augmenter.png").stat().st_size > 1000  # categorical: grouped bars


def test_report_numeric_key_plots_metric_vs_key(tmp_path):
    from mfexp.report import main

    sweep = tmp_path / "sweep"
    for n, aps in ((1, (14.0, 15.0)), (4, (15.0, 16.0)), (2, (13.0, 13.5))):
        for seed, apr in enumerate(aps):
            fake_run(sweep, f"n{n}s{seed}", [f"generator.num_objects={n}", f"seed={seed}"], metrics(22.0, apr))
    assert main([str(sweep)]) == 0
    out = sweep / "report"
    assert (out / "APr_vs_generator.num_objects.png").is_file() and (out / "AP_vs_generator.num_objects.png").is_file()
    lines = (out / "summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "4"]  # numeric order


def failed_json(run: Path, stage: str, kind: str, message: str) -> None:
    """failed.json as the runtime writes it when a stage raises (stage, type, message, traceback, time)."""
    (run / "failed.json").write_text(
        json.dumps(
            {
                "stage": stage,
                "type": kind,
                "message": message,
                "traceback": f"Traceback (most recent call last):\n{kind}: {message}",
                "time": "2026-11-29T21:00:00",
            }
        )
    )


def test_report_lists_failed_runs_apart_and_does_not_average_them(tmp_path):
    from mfexp.report import report

    sweep = tmp_path / "sweep"
    fake_run(sweep, "a0", ["augmenter=none", "seed=0"], metrics(0.20, 0.10))
    fake_run(sweep, "a1", ["augmenter=none", "seed=1"], metrics(0.22, 0.12))
    # a failed run keeps whatever it wrote before (here even a metrics.json): it is not averaged
    failed_json(
        fake_run(sweep, "a2", ["augmenter=none", "seed=2"], metrics(0.90, 0.90)),
        "train",
        "torch.OutOfMemoryError",
        "CUDA out of memory. Tried to allocate 2.00 GiB\n(more detail)",
    )
    failed_json(
        fake_run(sweep, "b0", ["augmenter=mosaicfusion", "seed=0"], None),
        "generate",
        "RuntimeError",
        "kept 0 of 10 mosaics",
    )
    fake_run(sweep, "b1", ["augmenter=mosaicfusion", "seed=1"], None, {"generate": 3.0})  # killed during train
    fake_run(sweep, "b2", ["augmenter=mosaicfusion", "seed=2"], metrics(0.30, 0.25))
    out = report(sweep, tmp_path / "out")
    assert out["complete"] == 3 and out["failed"] == [str(sweep / "a2"), str(sweep / "b0")]
    assert out["incomplete"] == [str(sweep / "b1")]
    rows = {r["augmenter"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert (rows["none"]["n"], rows["none"]["failed"], rows["none"]["incomplete"]) == ("2", "1", "0")
    assert float(rows["none"]["AP_mean"]) == pytest.approx(21.0) and rows["none"]["seeds"] == "0 1"
    assert (rows["mosaicfusion"]["n"], rows["mosaicfusion"]["failed"], rows["mosaicfusion"]["incomplete"]) == (
        "1",
        "1",
        "1",
    )
    md = (tmp_path / "out" / "summary.md").read_text()
    failed = md.split("## Failed runs (2: failed.json)")[1].split("##")[0]
    assert (
        f"`{sweep / 'a2'}`: stage train, torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
        in failed
        and "more detail" not in failed
    )
    assert f"`{sweep / 'b0'}`: stage generate, RuntimeError: kept 0 of 10 mosaics" in failed
    incomplete = md.split("## Incomplete runs (1: no metrics.json)")[1]
    assert f"`{sweep / 'b1'}` (stages done: generate)" in incomplete and "a2" not in incomplete
    assert next(line for line in md.splitlines() if line.startswith("| augmenter")).endswith("| incomplete | failed |")
    per_run = {Path(r["run"]).name: r for r in read_csv(tmp_path / "out" / "runs.csv")}
    assert [per_run[n]["status"] for n in ("a0", "a2", "b0", "b1")] == ["complete", "failed", "failed", "incomplete"]
    assert per_run["a2"]["failed_type"] == "torch.OutOfMemoryError" and per_run["a0"]["failed_stage"] == ""
    assert float(per_run["a0"]["APr"]) == pytest.approx(10.0)  # runs.csv: AP in % too


def write_sweep_params(run: Path, params: dict) -> None:
    """The `hydra.sweeper.params` a +sweep=<name> run records in .hydra/hydra.yaml."""
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": params}}}))


def test_report_orders_categorical_values_as_the_sweep_lists_them(tmp_path):
    from mfexp.report import report, value_order

    # folder names sort mosaicfusion < none; the sweep lists none first
    sweep = tmp_path / "augmenter"
    for aug in ("mosaicfusion", "cut_paste", "none"):
        for seed in (0, 1):
            run = fake_run(sweep, f"{aug}{seed}", [f"augmenter={aug}", f"seed={seed}"], metrics(0.2, 0.1))
            write_sweep_params(run, {"augmenter": "none,mosaicfusion,cut_paste", "seed": "0,1"})
    out = report(sweep, tmp_path / "out")
    assert [r["augmenter"] for r in out["rows"]] == ["none", "mosaicfusion", "cut_paste"]
    assert [r["augmenter"] for r in read_csv(tmp_path / "out" / "summary.csv")] == ["none", "mosaicfusion", "cut_paste"]

    # a command-line sweep (python -m mfexp -m 'generator.attention.blocks=[up],[down]'): the order is in the sweep
    # folder's multirun.yaml; list values match however they are spaced
    cli = tmp_path / "blocks"
    for blocks in ("[down]", "[up]"):
        fake_run(cli, f"b{blocks}", [f"generator.attention.blocks={blocks}", "seed=0"], metrics(0.2, 0.1))
    (cli / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["generator.attention.blocks=[up],[down]", "seed=0"]}}})
    )
    assert [r["generator.attention.blocks"] for r in report(cli, tmp_path / "o2")["rows"]] == ["[up]", "[down]"]
    (cli / "multirun.yaml").unlink()  # no sweep recorded: first seen (by folder)
    assert [r["generator.attention.blocks"] for r in report(cli, tmp_path / "o3")["rows"]] == ["[down]", "[up]"]

    assert value_order(["b", "(default)", "[8, 4]", "a"], ["[8,4]", "a"]) == ["(default)", "[8, 4]", "a", "b"]
    assert value_order(["10", "2", "(default)"], ["10", "2"]) == ["(default)", "2", "10"]  # numbers ascend


def test_report_figures_follow_config_order_and_show_every_seed(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from mfexp.report import figure, load_runs, summarise, swept_keys

    def seeds_drawn(ax) -> list[float]:
        return sorted(y for c in ax.collections if isinstance(c, PathCollection) for _, y in c.get_offsets())

    sweep = tmp_path / "grid"
    for aug in ("mosaicfusion", "cut_paste", "none"):
        for n in (4, 1):
            for seed in (0, 1, 2):
                run = fake_run(
                    sweep,
                    f"{aug}{n}s{seed}",
                    [f"augmenter={aug}", f"generator.num_objects={n}", f"seed={seed}"],
                    metrics(0.2, 0.1 + seed / 100),
                )
                write_sweep_params(run, {"augmenter": "none,mosaicfusion,cut_paste", "generator.num_objects": "4,1"})
    runs = load_runs(sweep)
    keys = swept_keys(runs)
    summary = summarise(runs, keys, runs.metrics)

    fig, name = figure(runs, summary, keys, "augmenter", "APr")
    ax = fig.axes[0]
    assert name == "APr_by_augmenter.png" and ax.get_ylabel().startswith("APr (%)")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "mosaicfusion", "cut_paste"]  # config order
    assert [p.get_height() for p in ax.patches if p.get_height()] == pytest.approx([11.0] * 6)  # mean, in %
    assert seeds_drawn(ax) == pytest.approx([10.0] * 6 + [11.0] * 6 + [12.0] * 6)  # every run a dot
    plt.close(fig)

    fig, name = figure(runs, summary, keys, "generator.num_objects", "APr")
    ax = fig.axes[0]
    assert name == "APr_vs_generator.num_objects.png" and list(ax.get_xticks()) == [1.0, 4.0]  # numbers ascend
    assert seeds_drawn(ax) == pytest.approx([10.0] * 6 + [11.0] * 6 + [12.0] * 6)
    plt.close(fig)


def test_report_paper_numbers_as_reference(tmp_path, capsys):
    from mfexp.report import ReportError, main, report

    sweep = tmp_path / "num_objects"
    for n in (1, 2, 4):
        for seed in (0, 1):
            fake_run(sweep, f"n{n}s{seed}", [f"generator.num_objects={n}", f"seed={seed}"], metrics(0.2, 0.1 + n / 100))
    paper = ROOT / "conf" / "paper" / "num_objects.yaml"
    assert main([str(sweep), "--out", str(tmp_path / "plain")]) == 0
    assert main([str(sweep), "--out", str(tmp_path / "paper"), "--paper", str(paper)]) == 0
    md = (tmp_path / "paper" / "summary.md").read_text()
    assert "## Paper: MosaicFusion" in md and "| generator.num_objects | AP | APr |" in md
    assert "| `1` | 22.4 | 14.0 |" in md and "| `4` | 23.1 | 15.2 |" in md
    assert "## Paper" not in (tmp_path / "plain" / "summary.md").read_text()
    for m in ("AP", "APr"):  # the plots gain the reference line
        name = f"{m}_vs_generator.num_objects.png"
        assert (tmp_path / "paper" / name).read_bytes() != (tmp_path / "plain" / name).read_bytes()

    with pytest.raises(ReportError, match="gives numbers for augmenter, not a swept key"):
        report(sweep, tmp_path / "x", paper=ROOT / "conf" / "paper" / "augmenter.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: generator.num_objects\n")
    assert main([str(sweep), "--out", str(tmp_path / "y"), "--paper", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --paper {bad}: expected a YAML file with source, key and values")


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_numbers_name_the_values_of_their_sweep(path):
    """Each conf/paper file belongs to the sweep of the same name, and every value it gives numbers for is one the
    sweep runs (so the reference lines land on the bars)."""
    from mfexp.report import load_paper

    paper = load_paper(path)
    assert paper is not None and paper.source.startswith("MosaicFusion (Xie et al., arXiv 2309.13042)")
    params = yaml.safe_load((ROOT / "sweeps" / "sweep" / path.name).read_text())["hydra"]["sweeper"]["params"]
    swept = [c[0].split("=", 1)[1] for c in sweep_values({paper.key: params[paper.key]})]
    found = [paper.find(v) for v in swept]
    assert all(any(numbers is f for f in found) for numbers in paper.values.values())
    assert len(swept) >= len(paper.values) >= 2
    assert all(0 < x < 100 for numbers in paper.values.values() for x in numbers.values())  # AP in %


def test_mfexp_report_console_script(capsys):
    import importlib

    from mfexp.report import main

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["mfexp-report"].split(":")
    assert getattr(importlib.import_module(module), name) is main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: mfexp-report")


def test_report_joins_folders_and_fills_keys_a_run_did_not_override(tmp_path, capsys):
    from mfexp.report import main, report, resolved_value

    def choices(run, augmenter):
        hydra_yaml = {"hydra": {"runtime": {"choices": {"augmenter": augmenter, "generator": "mosaicfusion"}}}}
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))

    n_sweep, augmenters = tmp_path / "num_objects", tmp_path / "augmenters"
    for n in (1, 2):
        choices(
            fake_run(n_sweep, f"n{n}", [f"generator.num_objects={n}", "seed=0"], metrics(0.20 + n / 100, 0.10)),
            "mosaicfusion",
        )
    for aug, ap in (("mosaicfusion", 0.30), ("none", 0.10)):
        run = fake_run(augmenters, aug, [f"augmenter={aug}", "seed=0"], metrics(ap, 0.12))
        config = {"seed": 0, "synthetic": {"num_objects": 4}, "generator": {"attention": {"resolutions": [8, 4]}}}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        choices(run, aug)
    assert resolved_value(augmenters / "none", "generator.attention.resolutions") == "[8,4]"
    assert resolved_value(augmenters / "none", "augmenter") == "none"
    assert resolved_value(augmenters / "none", "no.such.key") is None

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "mf").symlink_to(augmenters / "mosaicfusion")
    # links are followed, a run reached twice counts once, and the N=4 run (no override) joins the N sweep
    out = report([n_sweep, linked, augmenters / "mosaicfusion"], tmp_path / "out")
    assert out["runs"] == 3
    assert out["swept"] == ["generator.num_objects"]  # augmenter: mosaicfusion in every run once filled in
    rows = {r["generator.num_objects"]: r for r in out["rows"]}
    assert list(rows) == ["1", "2", "4"] and rows["4"]["AP_mean"] == pytest.approx(30.0)
    assert rows["1"]["AP_mean"] == pytest.approx(21.0)
    assert (tmp_path / "out" / "APr_vs_generator.num_objects.png").is_file()
    out = report([n_sweep, augmenters], tmp_path / "out2")
    assert sorted(out["swept"]) == ["augmenter", "generator.num_objects"] and len(out["rows"]) == 4
    assert main([str(n_sweep), str(augmenters)]) == 2  # several folders: --out is required
    assert "--out" in capsys.readouterr().err


def test_report_without_runs_is_a_clear_error(tmp_path, capsys):
    from mfexp.report import ReportError, main, report

    with pytest.raises(ReportError, match="no run folders"):
        report(tmp_path)
    assert main([str(tmp_path / "missing")]) == 2
    assert "error: not a folder" in capsys.readouterr().err


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def hand_interval(d):
    """Mean and 95% t-interval of paired differences, computed independently of mfexp.report."""
    from scipy import stats

    d = np.asarray(d, float)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    return d.mean(), low, high


# APr per seed; seed 3 of cut_paste failed (no metrics.json), seed 9 only mosaicfusion ran, `copy` shares seed 0 only
PAIRED = {
    "none": {0: 0.090, 1: 0.100, 2: 0.080, 3: 0.095},
    "cut_paste": {0: 0.095, 1: 0.093, 2: 0.088, 3: None},
    "mosaicfusion": {0: 0.110, 1: 0.121, 2: 0.099, 9: 0.150},
    "copy": {0: 0.097, 7: 0.2},
}


def paired_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    for aug, by_seed in PAIRED.items():
        for seed, apr in by_seed.items():
            fake_run(
                sweep,
                f"{aug}{seed}",
                [f"augmenter={aug}", f"seed={seed}"],
                None if apr is None else metrics(0.2 + apr / 10, apr),
            )
    return sweep


def test_report_paired_differences_from_a_baseline(tmp_path, capsys):
    from mfexp.report import main

    sweep = paired_sweep(tmp_path)
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--baseline", "augmenter=none"]) == 0
    table = {r["augmenter"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    base = table["none"]
    assert base["baseline"] == "(this row)" and base["APr_delta"] == base["APr_ci_low"] == base["n_pairs"] == ""

    # mosaicfusion: seeds 0, 1, 2 in both (9 has no baseline run); a consistent gain, the interval excludes 0
    mf = table["mosaicfusion"]
    d = [100 * (PAIRED["mosaicfusion"][s] - PAIRED["none"][s]) for s in (0, 1, 2)]  # AP points
    mean, low, high = hand_interval(d)
    assert mf["baseline"] == "augmenter=none" and mf["n_pairs"] == "3" and mf["n"] == "4"
    assert float(mf["APr_delta"]) == pytest.approx(mean) and float(mf["APr_delta"]) == pytest.approx(2.0)
    assert float(mf["APr_ci_low"]) == pytest.approx(low) and float(mf["APr_ci_high"]) == pytest.approx(high)
    assert 0 < low < mean < high
    assert float(mf["AP_delta"]) == pytest.approx(mean / 10)  # CSV units: AP points (%), as summary.md

    # cut_paste: seed 3 failed, so 3 pairs; differences of both signs, the interval holds 0
    cp = table["cut_paste"]
    d = [100 * (PAIRED["cut_paste"][s] - PAIRED["none"][s]) for s in (0, 1, 2)]
    mean, low, high = hand_interval(d)
    assert cp["n_pairs"] == "3" and cp["incomplete"] == "1"
    assert float(cp["APr_delta"]) == pytest.approx(mean)
    assert (float(cp["APr_ci_low"]), float(cp["APr_ci_high"])) == pytest.approx((low, high)) and low < 0 < high

    # copy: one shared seed -> the delta, and no interval
    cp1 = table["copy"]
    assert cp1["n_pairs"] == "1" and float(cp1["APr_delta"]) == pytest.approx(0.7)
    assert cp1["APr_ci_low"] == cp1["APr_ci_high"] == ""

    md = (tmp_path / "out" / "summary.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in md.splitlines() if line.startswith("| `")}
    assert "95% t-interval" in md and "**bold**" in md
    mf_mean, mf_low, mf_high = hand_interval([100 * v for v in (0.02, 0.021, 0.019)])
    assert f"**Δ +{mf_mean:.1f} [+{mf_low:.1f}, +{mf_high:.1f}]**" in rows["mosaicfusion"]  # AP points, one decimal
    assert "Δ" in rows["cut_paste"] and "**" not in rows["cut_paste"]
    assert "Δ +0.7" in rows["copy"] and "[" not in rows["copy"].split("Δ +0.7")[1].split("|")[0]
    assert "baseline" in rows["none"] and "Δ" not in rows["none"]
    for m in ("APr", "AP"):
        assert (tmp_path / "out" / f"{m}_paired.png").stat().st_size > 1000
    assert "APr_paired.png" in capsys.readouterr().out


def test_report_lists_the_baseline_row_first(tmp_path):
    from mfexp.report import main

    sweep = paired_sweep(tmp_path)
    assert main([str(sweep), "--out", str(tmp_path / "plain")]) == 0
    plain = [r["augmenter"] for r in read_csv(tmp_path / "plain" / "summary.csv")]  # first seen: by folder
    assert plain == ["copy", "cut_paste", "mosaicfusion", "none"]
    for baseline in ("none", "mosaicfusion"):
        out = tmp_path / baseline
        assert main([str(sweep), "--out", str(out), "--baseline", f"augmenter={baseline}"]) == 0
        rows = [r["augmenter"] for r in read_csv(out / "summary.csv")]
        assert rows == [baseline] + [a for a in plain if a != baseline]  # the others keep their order


def test_report_baseline_on_some_keys_matches_the_others(tmp_path):
    from mfexp.report import ReportError, main, parse_baseline, report, same

    sweep = tmp_path / "grid"
    ap = {("none", 4): 0.10, ("none", 2): 0.12, ("mf", 4): 0.20, ("mf", 2): 0.23}
    for (aug, n), value in ap.items():
        for seed in (0, 1):
            fake_run(
                sweep,
                f"{aug}{n}s{seed}",
                [f"augmenter={aug}", f"generator.num_objects={n}", f"seed={seed}"],
                metrics(value + seed / 100, value),
            )
    # N=4 names two baseline groups: each row is compared with the one of its own augmenter
    out = report(sweep, tmp_path / "a", baseline=["generator.num_objects=4"])
    rows = {(r["augmenter"], r["generator.num_objects"]): r for r in out["rows"]}
    assert rows[("mf", "2")]["baseline"] == "augmenter=mf,generator.num_objects=4"
    assert rows[("mf", "2")]["AP_delta"] == pytest.approx(3.0)
    assert rows[("none", "2")]["AP_delta"] == pytest.approx(2.0)
    assert rows[("mf", "4")]["baseline"] == rows[("none", "4")]["baseline"] == "(this row)"
    # two keys, as one comma-separated value or a repeated option: one baseline for all
    for args in (
        ["--baseline", "augmenter=none,generator.num_objects=4"],
        ["--baseline", "augmenter=none", "--baseline", "generator.num_objects=4"],
    ):
        assert main([str(sweep), "--out", str(tmp_path / "b"), *args]) == 0
        table = {(r["augmenter"], r["generator.num_objects"]): r for r in read_csv(tmp_path / "b" / "summary.csv")}
        assert float(table[("mf", "4")]["AP_delta"]) == pytest.approx(10.0)
        assert float(table[("mf", "2")]["AP_delta"]) == pytest.approx(13.0)
        assert float(table[("mf", "2")]["AP_ci_low"]) == pytest.approx(float(table[("mf", "2")]["AP_delta"]))  # sd 0
    # a row without a baseline of its own setting is an error, not a silent pick
    fake_run(sweep, "cp2s0", ["augmenter=cp", "generator.num_objects=2", "seed=0"], metrics(0.1, 0.1))
    with pytest.raises(ReportError, match="no baseline for the row augmenter=cp,generator.num_objects=2"):
        report(sweep, tmp_path / "c", baseline="generator.num_objects=4")
    assert parse_baseline("generator.attention.resolutions=[8,4],augmenter=none") == {
        "generator.attention.resolutions": "[8,4]",
        "augmenter": "none",
    }
    assert same("[8, 4]", "[8,4]") and same("0.50", "0.5") and not same("4", "2")


@pytest.mark.parametrize(
    "baseline, msg",
    [
        (
            "augmenter=nosuch",
            r"no group has these values \(values seen: augmenter: copy, cut_paste, mosaicfusion, none\)",
        ),
        ("augmenter", "malformed --baseline 'augmenter': expected KEY=VALUE"),
        ("=none", "malformed --baseline"),
        ("augmenter=", "malformed --baseline"),
        ("seed=0", "names seed, not a swept key"),
    ],
)
def test_report_bad_baseline_is_a_clear_error(tmp_path, capsys, baseline, msg):
    import re

    from mfexp.report import ReportError, main, report

    sweep = paired_sweep(tmp_path)
    with pytest.raises(ReportError, match=msg):
        report(sweep, tmp_path / "out", baseline=[baseline])
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(msg, err) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_report_joins_the_runs_of_an_earlier_runs_csv(tmp_path, capsys):
    """`--previous runs.csv`: runs whose folders are gone still join the table and the pairing, exactly as when
    their folders were there; a folder read now replaces the recorded row of the same run."""
    import csv
    import shutil

    from mfexp.report import main

    whole = paired_sweep(tmp_path / "whole")
    assert main([str(whole), "--out", str(tmp_path / "ref"), "--baseline", "augmenter=none"]) == 0
    reference = {r["augmenter"]: r for r in read_csv(tmp_path / "ref" / "summary.csv")}

    split = paired_sweep(tmp_path / "split")  # the same runs, "none" and "cut_paste" reported, then deleted
    gone = tmp_path / "gone"
    for run in split.iterdir():
        if run.name.startswith(("none", "cut_paste")):
            shutil.move(str(run), gone / run.name)
    assert main([str(gone), "--out", str(tmp_path / "earlier")]) == 0
    shutil.rmtree(gone)
    earlier = tmp_path / "earlier" / "runs.csv"
    out = tmp_path / "out"
    assert main([str(split), "--out", str(out), "--baseline", "augmenter=none", "--previous", str(earlier)]) == 0
    joined = {r["augmenter"]: r for r in read_csv(out / "summary.csv")}
    assert sorted(joined) == sorted(reference)  # rows: the recorded runs are seen first
    for aug, row in reference.items():
        for column in ("n", "incomplete", "n_pairs", "baseline", "APr_mean", "APr_delta", "APr_ci_low", "AP_ci_high"):
            assert (joined[aug][column] == row[column]) or float(joined[aug][column]) == pytest.approx(
                float(row[column])
            ), (aug, column)
    assert len(read_csv(out / "runs.csv")) == sum(len(v) for v in PAIRED.values())

    # a folder read now wins over the recorded row of the same run path
    rows = read_csv(earlier)
    mf_run = next(r for r in read_csv(out / "runs.csv") if r["augmenter"] == "mosaicfusion" and r["seed"] == "0")
    rows.append({**rows[0], "run": mf_run["run"], "augmenter": "mosaicfusion", "APr": "99.0"})
    stale = tmp_path / "stale.csv"
    with open(stale, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main([str(split), "--out", str(tmp_path / "out2"), "--previous", str(stale)]) == 0
    mf = [r for r in read_csv(tmp_path / "out2" / "runs.csv") if r["run"] == mf_run["run"]]
    assert len(mf) == 1 and float(mf[0]["APr"]) == pytest.approx(11.0)

    capsys.readouterr()
    assert main([str(split), "--previous", str(tmp_path / "nowhere.csv")]) == 2
    err = capsys.readouterr().err
    assert "--previous" in err and "no such file" in err
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main([str(split), "--previous", str(tmp_path / "bad.csv")]) == 2
    assert "not a runs.csv" in capsys.readouterr().err
