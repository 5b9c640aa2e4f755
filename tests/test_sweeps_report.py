"""Sweep configs compose, the SLURM launcher config, the sweep report, and the Cut-and-Paste augmenter."""
import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, compose

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
        options = [f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()] if ov.is_sweep_override() \
            else [f"{key}={value}"]
        combos = [c + [o] for c in combos for o in options]
    return combos


# ------------------------------------------------------------------------------------------------ sweeps

def test_there_are_sweeps_for_the_papers_ablations():
    names = {p.stem for p in SWEEPS}
    assert {"num_objects", "overlap", "attention_resolutions", "attention_blocks", "step_window",
            "images_per_category", "augmenter", "seeds"} <= names


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
    assert cfg.hydra.job.override_dirname == "generator.num_objects=2,seed=1"


def test_slurm_launcher_config():
    path = ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml"
    text = path.read_text()
    assert text.startswith("# @package hydra.launcher") and "pip install hydra-submitit-launcher" in text
    raw = yaml.safe_load(text)
    assert raw["defaults"] == ["submitit_slurm"]
    for key in ("submitit_folder", "timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task",
                "mem_gb", "partition", "array_parallelism", "setup", "additional_parameters"):
        assert key in raw, key
    assert raw["tasks_per_node"] == raw["gpus_per_node"]
    if importlib.util.find_spec("hydra_plugins") is None or \
            importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return   # the plugin is optional: pip install hydra-submitit-launcher
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
    return {"AP": ap, "APr": apr, "APc": 0.1, "APf": 0.2, "AP_novel": 0.05, "bbox_AP": ap + 0.01,
            "num_predictions": 300}


def test_report_groups_by_swept_keys_with_mean_std_over_seeds(tmp_path):
    from mfexp.report import report

    sweep = tmp_path / "sweep"
    fake_run(sweep, "a0", ["+sweep=augmenter", "augmenter=none", "seed=0"], metrics(0.20, 0.09))
    fake_run(sweep, "a1", ["+sweep=augmenter", "augmenter=none", "seed=1"], metrics(0.22, 0.10))
    fake_run(sweep, "b0", ["+sweep=augmenter", "augmenter=cut_paste", "seed=0"], metrics(0.23, 0.125))
    fake_run(sweep, "b1", ["+sweep=augmenter", "augmenter=cut_paste", "seed=1"], None, {"generate": 2.0})
    out = report(sweep, tmp_path / "out")
    assert out["swept"] == ["augmenter"]           # seed and the constant +sweep are not swept
    assert out["runs"] == 4 and out["complete"] == 3
    rows = {r["augmenter"]: r for r in out["rows"]}
    none, cp = rows["none"], rows["cut_paste"]
    assert none["n"] == 2 and none["incomplete"] == 0 and none["seeds"] == "0 1"
    assert none["AP_mean"] == pytest.approx(0.21)
    assert none["AP_std"] == pytest.approx(math.sqrt(((0.20 - 0.21) ** 2 + (0.22 - 0.21) ** 2) / 1))   # sample std
    assert none["APr_mean"] == pytest.approx(0.095) and none["APr_std"] == pytest.approx(math.sqrt(0.5) / 100)
    assert cp["n"] == 1 and cp["incomplete"] == 1 and cp["APr_mean"] == 0.125 and cp["APr_std"] == 0.0
    assert [str(p) for p in out["incomplete"]] == [str(sweep / "b1")]

    with open(tmp_path / "out" / "summary.csv") as f:
        import csv
        table = {r["augmenter"]: r for r in csv.DictReader(f)}
    assert float(table["none"]["APr_mean"]) == pytest.approx(0.095) and table["cut_paste"]["incomplete"] == "1"
    assert "AP_delta" not in table["none"]                           # no --baseline: no paired columns
    md = (tmp_path / "out" / "summary.md").read_text()                # AP in %, one decimal; the CSV keeps fractions
    assert "21.0 ± 1.4" in md and "AP/AR in %" in md and "Incomplete runs (1" in md and "b1" in md
    runs_csv = (tmp_path / "out" / "runs.csv").read_text()
    assert "incomplete" in runs_csv and runs_csv.count("\n") == 5
    assert (tmp_path / "out" / "APr_by_augmenter.png").stat().st_size > 1000   # categorical: grouped bars


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
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "4"]          # numeric order


def test_report_joins_folders_and_fills_keys_a_run_did_not_override(tmp_path, capsys):
    from mfexp.report import main, report, resolved_value

    def choices(run, augmenter):
        hydra_yaml = {"hydra": {"runtime": {"choices": {"augmenter": augmenter, "generator": "mosaicfusion"}}}}
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))

    n_sweep, augmenters = tmp_path / "num_objects", tmp_path / "augmenters"
    for n in (1, 2):
        choices(fake_run(n_sweep, f"n{n}", [f"generator.num_objects={n}", "seed=0"], metrics(20.0 + n, 10.0)),
                "mosaicfusion")
    for aug, ap in (("mosaicfusion", 30.0), ("none", 10.0)):
        run = fake_run(augmenters, aug, [f"augmenter={aug}", "seed=0"], metrics(ap, 12.0))
        config = {"seed": 0, "generator": {"num_objects": 4, "attention": {"resolutions": [8, 4]}}}
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
    assert out["swept"] == ["generator.num_objects"]       # augmenter: mosaicfusion in every run once filled in
    rows = {r["generator.num_objects"]: r for r in out["rows"]}
    assert list(rows) == ["1", "2", "4"] and rows["4"]["AP_mean"] == 30.0 and rows["1"]["AP_mean"] == 21.0
    assert (tmp_path / "out" / "APr_vs_generator.num_objects.png").is_file()
    out = report([n_sweep, augmenters], tmp_path / "out2")
    assert sorted(out["swept"]) == ["augmenter", "generator.num_objects"] and len(out["rows"]) == 4
    assert main([str(n_sweep), str(augmenters)]) == 2       # several folders: --out is required
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
PAIRED = {"none": {0: 0.090, 1: 0.100, 2: 0.080, 3: 0.095},
          "cut_paste": {0: 0.095, 1: 0.093, 2: 0.088, 3: None},
          "mosaicfusion": {0: 0.110, 1: 0.121, 2: 0.099, 9: 0.150},
          "copy": {0: 0.097, 7: 0.2}}


def paired_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    for aug, by_seed in PAIRED.items():
        for seed, apr in by_seed.items():
            fake_run(sweep, f"{aug}{seed}", [f"augmenter={aug}", f"seed={seed}"],
                     None if apr is None else metrics(0.2 + apr / 10, apr))
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
    d = [PAIRED["mosaicfusion"][s] - PAIRED["none"][s] for s in (0, 1, 2)]
    mean, low, high = hand_interval(d)
    assert mf["baseline"] == "augmenter=none" and mf["n_pairs"] == "3" and mf["n"] == "4"
    assert float(mf["APr_delta"]) == pytest.approx(mean) and float(mf["APr_delta"]) == pytest.approx(0.02)
    assert float(mf["APr_ci_low"]) == pytest.approx(low) and float(mf["APr_ci_high"]) == pytest.approx(high)
    assert 0 < low < mean < high
    assert float(mf["AP_delta"]) == pytest.approx(mean / 10)             # CSV units: fractions, as in metrics.json

    # cut_paste: seed 3 failed, so 3 pairs; differences of both signs, the interval holds 0
    cp = table["cut_paste"]
    d = [PAIRED["cut_paste"][s] - PAIRED["none"][s] for s in (0, 1, 2)]
    mean, low, high = hand_interval(d)
    assert cp["n_pairs"] == "3" and cp["incomplete"] == "1"
    assert float(cp["APr_delta"]) == pytest.approx(mean)
    assert (float(cp["APr_ci_low"]), float(cp["APr_ci_high"])) == pytest.approx((low, high)) and low < 0 < high

    # copy: one shared seed -> the delta, and no interval
    cp1 = table["copy"]
    assert cp1["n_pairs"] == "1" and float(cp1["APr_delta"]) == pytest.approx(0.097 - 0.090)
    assert cp1["APr_ci_low"] == cp1["APr_ci_high"] == ""

    md = (tmp_path / "out" / "summary.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in md.splitlines() if line.startswith("| `")}
    assert "95% t-interval" in md and "**bold**" in md
    mf_mean, mf_low, mf_high = hand_interval([100 * v for v in (0.02, 0.021, 0.019)])
    assert f"**Δ +{mf_mean:.1f} [+{mf_low:.1f}, +{mf_high:.1f}]**" in rows["mosaicfusion"]   # AP points, one decimal
    assert "Δ" in rows["cut_paste"] and "**" not in rows["cut_paste"]
    assert "Δ +0.7" in rows["copy"] and "[" not in rows["copy"].split("Δ +0.7")[1].split("|")[0]
    assert "baseline" in rows["none"] and "Δ" not in rows["none"]
    for m in ("APr", "AP"):
        assert (tmp_path / "out" / f"{m}_paired.png").stat().st_size > 1000
    assert "APr_paired.png" in capsys.readouterr().out


def test_report_baseline_on_some_keys_matches_the_others(tmp_path):
    from mfexp.report import ReportError, main, parse_baseline, report, same

    sweep = tmp_path / "grid"
    ap = {("none", 4): 0.10, ("none", 2): 0.12, ("mf", 4): 0.20, ("mf", 2): 0.23}
    for (aug, n), value in ap.items():
        for seed in (0, 1):
            fake_run(sweep, f"{aug}{n}s{seed}", [f"augmenter={aug}", f"generator.num_objects={n}", f"seed={seed}"],
                     metrics(value + seed / 100, value))
    # N=4 names two baseline groups: each row is compared with the one of its own augmenter
    out = report(sweep, tmp_path / "a", baseline=["generator.num_objects=4"])
    rows = {(r["augmenter"], r["generator.num_objects"]): r for r in out["rows"]}
    assert rows[("mf", "2")]["baseline"] == "augmenter=mf,generator.num_objects=4"
    assert rows[("mf", "2")]["AP_delta"] == pytest.approx(0.03)
    assert rows[("none", "2")]["AP_delta"] == pytest.approx(0.02)
    assert rows[("mf", "4")]["baseline"] == rows[("none", "4")]["baseline"] == "(this row)"
    # two keys, as one comma-separated value or a repeated option: one baseline for all
    for args in (["--baseline", "augmenter=none,generator.num_objects=4"],
                 ["--baseline", "augmenter=none", "--baseline", "generator.num_objects=4"]):
        assert main([str(sweep), "--out", str(tmp_path / "b"), *args]) == 0
        table = {(r["augmenter"], r["generator.num_objects"]): r for r in read_csv(tmp_path / "b" / "summary.csv")}
        assert float(table[("mf", "4")]["AP_delta"]) == pytest.approx(0.10)
        assert float(table[("mf", "2")]["AP_delta"]) == pytest.approx(0.13)
        assert table[("mf", "2")]["AP_ci_low"] == table[("mf", "2")]["AP_delta"]   # sd 0: a zero-width interval
    # a row without a baseline of its own setting is an error, not a silent pick
    fake_run(sweep, "cp2s0", ["augmenter=cp", "generator.num_objects=2", "seed=0"], metrics(0.1, 0.1))
    with pytest.raises(ReportError, match="no baseline for the row augmenter=cp,generator.num_objects=2"):
        report(sweep, tmp_path / "c", baseline="generator.num_objects=4")
    assert parse_baseline("generator.attention.resolutions=[8,4],augmenter=none") == {
        "generator.attention.resolutions": "[8,4]", "augmenter": "none"}
    assert same("[8, 4]", "[8,4]") and same("0.50", "0.5") and not same("4", "2")


@pytest.mark.parametrize("baseline, msg", [
    ("augmenter=nosuch", r"no group has these values \(values seen: augmenter: copy, cut_paste, mosaicfusion, none\)"),
    ("augmenter", "malformed --baseline 'augmenter': expected KEY=VALUE"),
    ("=none", "malformed --baseline"),
    ("augmenter=", "malformed --baseline"),
    ("seed=0", "names seed, not a swept key"),
])
def test_report_bad_baseline_is_a_clear_error(tmp_path, capsys, baseline, msg):
    import re

    from mfexp.report import ReportError, main, report

    sweep = paired_sweep(tmp_path)
    with pytest.raises(ReportError, match=msg):
        report(sweep, tmp_path / "out", baseline=[baseline])
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(msg, err) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()                               # nothing half-written


# ------------------------------------------------------------------------------------------------ Cut-and-Paste

CATEGORIES = [  # id, name, frequency; category 4 is rare and has no instance
    {"id": 1, "name": "red_box", "frequency": "r"}, {"id": 2, "name": "green_disc", "frequency": "c"},
    {"id": 3, "name": "blue_box", "frequency": "f"}, {"id": 4, "name": "ghost", "frequency": "r"}]
COLOURS = {1: (220, 30, 30), 2: (30, 200, 30), 3: (30, 30, 220)}


def shape_mask(kind: str, y: int, x: int, size: int, s: int = 64) -> np.ndarray:
    m = np.zeros((s, s), np.uint8)
    if kind == "box":
        m[y:y + size, x:x + size] = 1
    else:
        cv2.circle(m, (x + size // 2, y + size // 2), size // 2, 1, -1)
    return m.astype(bool)


def make_fixture(root: Path) -> dict:
    """Six 64x64 images with non-overlapping boxes/discs (RLE masks; one annotation as a polygon), LVIS v1 format."""
    from mfexp.lvis_io import image_record, lvis_file, mask_annotation

    images_dir = root / "train"
    images_dir.mkdir(parents=True)
    layout = [[(1, 4, 4, 20), (2, 30, 34, 24)], [(3, 10, 10, 30)], [(1, 36, 8, 22), (3, 4, 36, 20)],
              [(2, 8, 8, 28), (3, 40, 40, 18)], [(2, 20, 20, 30)], [(3, 2, 2, 16), (1, 40, 30, 20)]]
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i, objs in enumerate(layout, start=1):
        rgb = (rng.integers(90, 140, size=(64, 64, 3))).astype(np.uint8)
        for cat, y, x, size in objs:
            m = shape_mask("disc" if cat == 2 else "box", y, x, size)
            rgb[m] = COLOURS[cat]
            ann = mask_annotation(m, len(anns) + 1, i, cat)
            if i == 2:   # a polygon segmentation, as real LVIS files have
                ann["segmentation"] = [[x, y, x + size, y, x + size, y + size, x, y + size]]
            anns.append(ann)
        name = f"{i:012d}.png"
        cv2.imwrite(str(images_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(image_record(i, name, 64, 64, split="train"))
    train_json = root / "train.json"
    train_json.write_text(json.dumps(lvis_file(images, anns, CATEGORIES)))
    return {"train_json": str(train_json), "train_images": str(images_dir), "val_json": str(train_json),
            "val_images": str(images_dir)}


@pytest.fixture
def fixture_files(tmp_path):
    return make_fixture(tmp_path / "data")


CP = ["augmenter=cut_paste", "logger=none", "augmenter.images_per_category=3", "augmenter.objects_per_image=2",
      "augmenter.min_source_area=50"]


def run_cut_paste(monkeypatch, files, run_dir, overrides=()):
    import mfexp.cutpaste as cutpaste

    monkeypatch.setattr(cutpaste, "prepare_dataset", lambda dataset_cfg: files)
    return cutpaste.generate_cut_paste(compose(CP + list(overrides)), run_dir)


def cut_paste_options(**changes):
    """The composed `augmenter=cut_paste` options, with `changes`."""
    import dataclasses

    return dataclasses.replace(OmegaConf.to_object(compose(["augmenter=cut_paste"]).augmenter), **changes)


def test_cut_paste_config_composes_with_generator_defaults():
    from mfexp.config import CutPasteConfig

    cfg = compose(["augmenter=cut_paste"])
    assert cfg.augmenter.name == "cut_paste" and cfg.augmenter._target_ == "mfexp.cutpaste.generate_cut_paste"
    opts = OmegaConf.to_object(cfg.augmenter)
    assert isinstance(opts, CutPasteConfig)
    assert opts.main_frequency == list(cfg.generator.main_frequency)
    assert opts.images_per_category == cfg.generator.images_per_category
    assert opts.objects_per_image == cfg.generator.num_objects


def test_paste_instance_occludes_and_mask_is_the_alpha_support():
    from mfexp.cutpaste import blurred_alpha, paste_instance

    image = np.full((32, 32, 3), 100, np.uint8)
    below = np.zeros((32, 32), bool)
    below[0:16, 0:16] = True
    obj_rgb = np.full((8, 8, 3), 250, np.uint8)
    obj_mask = np.ones((8, 8), bool)
    # hard paste: the mask is the placed object, the instance below loses exactly those pixels
    out, pasted, (after,) = paste_instance(image, [below], obj_rgb, obj_mask, (4, 4), blur_sigma=0)
    expected = np.zeros((32, 32), bool)
    expected[4:12, 4:12] = True
    assert (pasted == expected).all() and (after == (below & ~expected)).all()
    assert (out[expected] == 250).all() and (out[~expected] == 100).all()
    assert (image == 100).all() and below.sum() == 256           # inputs unchanged
    # blended paste: mask = alpha >= 0.5; pixels change only where alpha > 0; the masks stay disjoint
    out, pasted, (after,) = paste_instance(image, [below], obj_rgb, obj_mask, (4, 4), blur_sigma=1.5)
    placed = np.zeros((32, 32), bool)
    placed[4:12, 4:12] = True
    alpha = blurred_alpha(placed, 1.5)
    assert (pasted == (alpha >= 0.5)).all() and pasted.sum() > 40
    changed = (out != 100).any(-1)
    assert changed[pasted].all() and not changed[alpha == 0].any() and changed.sum() > pasted.sum()
    assert not (pasted & after).any() and (after | pasted)[below].all()
    with pytest.raises(ValueError, match="does not fit"):
        paste_instance(image, [], obj_rgb, obj_mask, (30, 0))


def test_compose_drops_fully_occluded_instances():
    from mfexp.cutpaste import Instance, compose_cut_paste

    small = np.zeros((32, 32), bool)
    small[14:18, 14:18] = True
    big = np.full((32, 32, 3), 200, np.uint8)
    opts = cut_paste_options(scale=[1.0, 1.0], flip=0.0, blur_sigma=0.0, min_visible_area=1)
    image, kept, counts = compose_cut_paste(np.zeros((32, 32, 3), np.uint8), [Instance(small, 7, False)],
                                            [(big, np.ones((32, 32), bool), 1)], np.random.default_rng(0), opts)
    assert counts == {"pasted": 1, "dropped": 1} and [(k.category_id, k.pasted) for k in kept] == [(1, True)]
    assert (image == 200).all()


def test_cut_paste_output_is_valid_lvis_and_coco(tmp_path, monkeypatch, fixture_files):
    from lvis import LVIS
    from pycocotools.coco import COCO

    from mfexp.lvis_io import SYNTHETIC_IMAGE_ID_BASE, decode_rle

    summary = run_cut_paste(monkeypatch, fixture_files, tmp_path / "run")
    out = tmp_path / "run" / "synthetic"
    # main categories: rare = red_box (instances) and ghost (none): 3 images each, ghost's skipped with a reason
    assert summary["images"] == 6 and summary["kept"] == 3 and summary["skipped"] == 3
    assert summary["skip_reasons"] == {"no source instance of the main category": 3}
    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"] == CATEGORIES
    assert [img["id"] for img in data["images"]] == [SYNTHETIC_IMAGE_ID_BASE + i for i in range(3)]
    for img in data["images"]:
        assert (out / "images" / img["file_name"]).is_file() and (img["height"], img["width"]) == (64, 64)
        assert img["neg_category_ids"] == [] and img["not_exhaustive_category_ids"] == []
    LVIS(str(out / "annotations.json"))
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getAnnIds()) == summary["instances"] == len(data["annotations"])
    by_image = {}
    for a in data["annotations"]:
        m = decode_rle(a["segmentation"])
        assert m.sum() == a["area"] > 0 and a["category_id"] in {1, 2, 3}
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert (coco.annToMask(coco.anns[a["id"]]).astype(bool) == m).all()
        by_image.setdefault(a["image_id"], []).append(m)
    for masks in by_image.values():   # pasted objects occlude: no pixel belongs to two instances
        assert (np.sum(masks, axis=0) <= 1).all()
    # each image has its main (rare) object pasted on top of a real background with its remaining instances
    assert all(any(a["category_id"] == 1 for a in data["annotations"] if a["image_id"] == img["id"])
               for img in data["images"])
    assert summary["pasted"] >= 3 and summary["instances"] > summary["pasted"]
    assert cv2.imread(str(out / "gallery.jpg")) is not None


def test_real_instances_under_pastes_shrink(fixture_files):
    from mfexp.cutpaste import SourceData, make_image, plan_image

    opts = cut_paste_options(images_per_category=8, objects_per_image=3, scale=[0.4, 0.6], min_source_area=50)
    data = SourceData(fixture_files["train_json"], fixture_files["train_images"], opts.min_source_area)
    main = [c for c in CATEGORIES if c["id"] == 1]
    shrunk = 0
    for i in range(8):
        plan, rng = plan_image(i, main, [1, 2, 3], data, opts, seed=0)
        assert plan.background_id != plan.sources[0]["image_id"]
        originals = [data.mask(a) for a in data.by_image[plan.background_id]]
        image, kept, counts = make_image(plan, rng, data, opts)
        pasted = [k.mask for k in kept if k.pasted]
        for k in (k for k in kept if not k.pasted):
            (orig,) = [o for o in originals if (k.mask <= o).all()]   # a part of exactly one original instance
            shrunk += int(k.mask.sum() < orig.sum())
            assert not any((k.mask & p).any() for p in pasted)
        assert counts["pasted"] >= len(pasted) >= 1
    assert shrunk > 0


def test_cut_paste_is_deterministic_and_seeded(tmp_path, monkeypatch, fixture_files):
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "a")
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "b")
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "c", ["seed=5"])
    files = lambda d: {p.relative_to(d / "synthetic"): p.read_bytes() for p in sorted((d / "synthetic").rglob("*"))
                           if p.is_file()}
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a[Path("annotations.json")] != c[Path("annotations.json")]


@pytest.mark.parametrize("extra, msg", [   # options the config can check: tests/test_config.py
    (["augmenter.min_source_area=100000"], "no instance"),
    (["augmenter.main_frequency=[x]"], "main_frequency"),
])
def test_bad_options_are_one_line_errors(tmp_path, monkeypatch, fixture_files, extra, msg):
    with pytest.raises(ValueError, match=msg) as e:
        run_cut_paste(monkeypatch, fixture_files, tmp_path / "run", extra)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "synthetic").exists()
