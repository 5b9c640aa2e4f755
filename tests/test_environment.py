"""The locked environment (constraints.txt) and the versions each run folder records."""

import csv
import json
import re

from helpers import ROOT, compose

from mfexp import environment as env
from mfexp import run
from mfexp.runpaths import RunPaths


def test_the_lock_pins_every_dependency_to_one_version_and_torch_as_pyproject_does():
    locked = env.read_lock(ROOT / "constraints.txt")
    for name in ("torch", "diffusers", "transformers", "mmdet", "mmcv", "mmengine", "numpy", "pytest", "ruff"):
        assert name in locked, name
    torch_pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert torch_pin and locked["torch"] == torch_pin.group(1)
    assert "mfexp" not in locked and all("+" not in v for v in locked.values())  # public versions only


def test_the_lock_file_round_trips_and_leaves_out_the_project_and_local_labels(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text(env.lock_text({"torch": "2.13.0+cpu", "mfexp": "0.1.0", "Foo_Bar": "1.0"}))
    assert env.read_lock(path) == {"torch": "2.13.0", "foo-bar": "1.0"}


def test_differences_name_each_mismatch_and_allow_cuda_builds():
    locked = {"torch": "2.13.0", "diffusers": "0.42.1", "numpy": "2.4.6"}
    same = {
        "torch": "2.13.0+cu126",
        "diffusers": "0.42.1",
        "numpy": "2.4.6",
        "mfexp": "0.1.0",
        "nvidia-cudnn-cu12": "9",
    }
    assert env.differences(locked, same) == []
    have = {"torch": "2.13.0+cpu", "diffusers": "0.43.0", "extra-pkg": "1.0"}
    assert env.differences(locked, have) == [
        "diffusers: locked 0.42.1, installed 0.43.0",
        "numpy: locked 2.4.6, not installed",
        "extra-pkg: installed 1.0, not in the lock",
    ]


def test_a_stage_records_its_versions_and_commit_in_the_run_folder(tmp_path):
    run.run_experiment(compose(["stages=[generate]", "augmenter=none", "logger=none"]), tmp_path)
    recorded = json.loads(RunPaths(tmp_path).versions.read_text())
    versions = recorded["generate"]
    assert set(versions) == {*env.RECORDED, "mfexp_commit", "mfexp_dirty"}
    assert versions["torch"].startswith(env.read_lock(ROOT / "constraints.txt")["torch"])
    if versions["mfexp_commit"] is not None:  # a git checkout
        assert re.fullmatch(r"[0-9a-f]{40}", versions["mfexp_commit"]) and isinstance(versions["mfexp_dirty"], bool)


def test_the_report_shows_each_runs_versions(tmp_path):
    from test_sweeps_report import fake_run, metrics

    from mfexp.report import main

    a = fake_run(tmp_path, "a", ["seed=0"], metrics(0.2, 0.1))
    b = fake_run(tmp_path, "b", ["seed=1"], metrics(0.2, 0.1))
    v = {"torch": "2.13.0+cpu", "diffusers": "0.42.1", "mfexp_commit": "abc", "mfexp_dirty": False}
    (a / "versions.json").write_text(json.dumps({"generate": v, "train": v}))
    (b / "versions.json").write_text(json.dumps({"generate": v, "train": dict(v, diffusers="0.43.0")}))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "runs.csv") as f:
        rows = {r["run"].rsplit("/", 1)[1]: r for r in csv.DictReader(f)}
    assert rows["a"]["version_torch"] == "2.13.0+cpu" and rows["a"]["version_diffusers"] == "0.42.1"
    assert rows["b"]["version_diffusers"] == "0.42.1 | 0.43.0"  # stages run under different versions
    assert rows["a"]["mfexp_commit"] == "abc" and rows["a"]["mfexp_dirty"] == "False"
