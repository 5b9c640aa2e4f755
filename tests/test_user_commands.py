"""The user's own commands, typed word for word: `python -m mfexp generator.num_objects=4`, the multirun
`-m generator.num_objects=1,2,4`, a Cut-and-Paste comparison, then `mfexp-report` over that sweep.

They run through the real command line, made small by a machine-local config (MFEXP_CONFIG_DIR: the tiny random
model, a small toy world, two detector iterations), never by extra words on the command."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """Run a command line as the user types it; outputs and caches in one folder for the module."""
    home = tmp_path_factory.mktemp("user")
    env = {
        **os.environ,
        "MFEXP_OUTPUTS": str(home / "outputs"),
        "MFEXP_CACHE": str(home / "cache"),
        "MFEXP_CONFIG_DIR": str(FIXTURES / "user_config"),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "WANDB_MODE": "disabled",
    }

    def run(command: str, timeout: int = 600) -> subprocess.CompletedProcess:
        args = command.split()
        if args[0] == "python":
            args[0] = sys.executable
        return subprocess.run(args, cwd=home, env=env, capture_output=True, text=True, timeout=timeout)

    run.home = home
    return run


def instances_per_image(run_dir: Path) -> Counter:
    data = json.loads((run_dir / "synthetic" / "annotations.json").read_text())
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert set(per_image) == {i["id"] for i in data["images"]}
    return Counter(per_image.values())


def test_one_run_with_four_objects_per_image(user):
    done = user("python -m mfexp generator.num_objects=4")
    assert done.returncode == 0, done.stderr[-3000:]
    run = user.home / "outputs" / "runs" / "generator.num_objects=4"
    counts = instances_per_image(run)
    assert set(counts) == {4} and sum(counts.values()) >= 1  # every kept image has 4 instances
    assert (run / "metrics.json").is_file()


def test_multirun_over_objects_per_image(user):
    done = user("python -m mfexp -m generator.num_objects=1,2,4")
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (user.home / "outputs" / "multirun").iterdir()
    for n in (1, 2, 4):
        run = sweep / f"generator.num_objects={n}"
        assert set(instances_per_image(run)) == {n}
        assert (run / "metrics.json").is_file()


def test_comparison_against_cut_and_paste_then_the_report(user):
    before = (
        set((user.home / "outputs" / "multirun").glob("*")) if (user.home / "outputs" / "multirun").exists() else set()
    )
    done = user("python -m mfexp -m augmenter=mosaicfusion,cut_paste")
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = set((user.home / "outputs" / "multirun").glob("*")) - before
    assert {p.name for p in sweep.iterdir() if p.is_dir()} >= {"augmenter=mosaicfusion", "augmenter=cut_paste"}
    pasted = json.loads((sweep / "augmenter=cut_paste" / "synthetic" / "annotations.json").read_text())
    assert pasted["images"] and pasted["annotations"]  # pasted objects plus the backgrounds' own instances
    report = user(f"mfexp-report {sweep}")
    assert report.returncode == 0, report.stderr[-3000:]
    summary = (sweep / "report" / "summary.csv").read_text()
    assert "mosaicfusion" in summary and "cut_paste" in summary


def test_several_objects_per_image_in_one_run(user):
    done = user("python -m mfexp generator.num_objects=[1,4] stages=[generate] synthetic.max_images=null")
    assert done.returncode == 0, done.stderr[-3000:]
    run = user.home / "outputs" / "runs" / "generator.num_objects=[1,4],synthetic.max_images=null"
    counts = instances_per_image(run)
    assert set(counts) == {1, 4}, counts  # each image drew its N from the list


@pytest.mark.parametrize(
    "command,names",
    [
        ("python -m mfexp +generator.num_objects=4", "generator.num_objects"),
        ("python -m mfexp +generator.anything=1", "generator.anything"),
        ("python -m mfexp synthetic.num_objects=2", "num_objects"),
    ],
)
def test_a_key_nothing_reads_fails_in_one_line_before_any_stage(user, command, names):
    done = user(command, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(names in line for line in lines), done.stderr
    assert "Traceback" not in done.stderr and "stage generate: running" not in done.stderr + done.stdout
