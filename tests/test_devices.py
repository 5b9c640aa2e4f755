"""`trainer.devices=auto` on a CPU: one single-threaded process per core (mfexp/devices.py)."""

import pytest
from helpers import compose

from mfexp.devices import cpu_processes, trainer_args


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 2), (3, 2), (6, 4), (8, 8), (64, 8)])
def test_cpu_processes_are_a_power_of_two_up_to_8(cores, expected):
    assert cpu_processes(cores) == expected


def test_default_trainer_is_ddp_over_the_cores_of_a_cpu():
    cfg = compose(["trainer.accelerator=cpu"])
    assert cfg.trainer.devices == "auto"
    args = trainer_args(cfg.trainer, cores=2)
    assert (args["accelerator"], args["devices"], args["strategy"]) == ("cpu", 2, "ddp")
    assert args["precision"] == "32-true"  # the other arguments pass through
    one = trainer_args(cfg.trainer, cores=1)
    assert (one["devices"], one["strategy"]) == (1, "auto")


@pytest.mark.parametrize(
    "overrides,devices,strategy",
    [
        (["trainer.devices=1"], 1, "auto"),  # a number pins it
        (["trainer.devices=auto", "trainer.strategy=ddp_spawn"], 4, "ddp_spawn"),  # a chosen strategy stays
        (["trainer.accelerator=gpu"], "auto", "auto"),  # on GPUs, Lightning's auto (all of them)
    ],
)
def test_explicit_settings_pass_through(overrides, devices, strategy):
    args = trainer_args(compose(["trainer.accelerator=cpu", *overrides]).trainer, cores=4)
    assert (args["devices"], args["strategy"]) == (devices, strategy)


def test_a_sweep_of_ddp_runs_launches_each_job_in_its_own_folder(tmp_path):
    """`-m` with DDP: Lightning relaunches sys.argv, the whole sweep, into a sweep folder named by its own start time
    (here its microseconds); each job's workers must run that job alone, in its folder, and end with it."""
    import subprocess
    import sys

    from helpers import ROOT

    job = ["synthetic.max_images=2", "synthetic.images_per_category=1", "stages=[generate]", "logger=none"]
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.enable_progress_bar=false"]
    sweep = [
        "+sweep=seeds",
        "seed=0,1",
        f"paths.log_dir={tmp_path}",
        "hydra.sweep.dir=${paths.log_dir}/s${now:%H%M%S%f}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "mfexp", *job, *ddp, *sweep], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sweeps = [p for p in tmp_path.iterdir() if p.name.startswith("s")]
    assert len(sweeps) == 1, sweeps  # no second sweep folder from a relaunched sweep
    runs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        assert not (run / "failed.json").exists(), (run / "failed.json").read_text()
        assert (run / "train_ddp_process_1.log").exists()  # the worker ran in this job's folder
        assert len(list((run / "synthetic" / "parts").glob("*.json"))) == 2  # a mosaic from each rank
