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
