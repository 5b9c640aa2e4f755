"""`python -m mfexp [overrides]`: one experiment (generate -> train -> evaluate); `-m` for sweeps."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mfexp.compose import CONFIG_DIR

log = logging.getLogger("mfexp")


def offline_defaults(cfg: DictConfig) -> None:
    """No network unless asked for: hub offline unless the model allows downloads; wandb offline by default."""
    if not cfg.generator.model.allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
    os.environ.setdefault("WANDB_SILENT", "true")


def write_hydra_record(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/``: the task config, Hydra's config and the command-line overrides, as Hydra writes them (the primary
    config sets ``hydra.output_subdir: null``, so Hydra writes nothing there itself: a command that fails validation
    must leave a run folder as it was)."""
    from hydra.core.hydra_config import HydraConfig

    from mfexp.fileio import atomic_write_bytes
    from mfexp.runpaths import RunPaths

    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    out = RunPaths(run_dir).hydra
    for name, node in (("config", cfg), ("hydra", hydra_cfg), ("overrides", hydra_cfg.hydra.overrides.task)):
        atomic_write_bytes(out / f"{name}.yaml", OmegaConf.to_yaml(node).encode())


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty (Hydra makes the run folder before the task starts)."""
    try:
        folder.rmdir()
    except OSError:
        pass


TASK_STARTED = False  # set when Hydra calls main: a config that got that far composed


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """One run: validate the config (a bad value: one ``error:`` line, exit 2, nothing written into any run folder),
    hold the run folder (a second command on it stops with one line, exit 1), write ``.hydra/``, run the stages."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mfexp.config import validate
    from mfexp.console import quiet_third_party
    from mfexp.devices import relaunch_as_this_job
    from mfexp.run import (
        RunFolderBusy,
        StageFailed,
        StopRequested,
        hold_run_folder,
        preflight,
        record_failure,
        run_experiment,
        summary,
    )
    from mfexp.runpaths import RunPaths
    from mfexp.targets import MissingPackage
    from mfexp.tracking import is_rank_zero

    global TASK_STARTED
    TASK_STARTED = True
    offline_defaults(cfg)
    quiet_third_party()
    if not is_rank_zero():  # a DDP/SLURM worker: the console and the log show rank 0's lines; warnings from all
        logging.getLogger("mfexp").setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    paths = RunPaths(run_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        validate(cfg)
        preflight(cfg)
    except (ValueError, FileNotFoundError) as e:  # a bad value: one line, before any stage runs or anything is written
        print(f"error: {e}", file=sys.stderr)
        if multirun and not paths.hydra.exists() and is_rank_zero():
            write_hydra_record(run_dir, cfg)  # a new folder of the sweep records this setting as failed
            record_failure(paths, None, e)
            return
        remove_if_empty(run_dir)
        if multirun:  # the sweep goes on; an earlier run's folder stays as it was
            return
        sys.exit(2)
    try:
        with hold_run_folder(paths) if is_rank_zero() else contextlib.nullcontext():
            if is_rank_zero():
                write_hydra_record(run_dir, cfg)
            with relaunch_as_this_job():  # a DDP worker of a sweep's job runs that job only
                results = run_experiment(cfg, run_dir)
    except RunFolderBusy as e:
        print(f"error: {e}", file=sys.stderr)
        if multirun:
            return
        sys.exit(1)
    except StageFailed as e:
        bad_input = isinstance(e.error, (ValueError, FileNotFoundError, MissingPackage))
        message = " ".join(str(e.error if bad_input else e).split())
        log.error("%s (details: %s)", message, e.path)
        print(f"error: {message} (details: {e.path})", file=sys.stderr)
        if multirun:
            return  # one failed setting does not stop the sweep: its run folder has failed.json, no metrics.json
        sys.exit(2 if bad_input else 1)
    except StopRequested as e:
        print(
            f"stopped during stage {e.stage}: what is done is saved; run the same command again to resume",
            file=sys.stderr,
        )
        raise
    if is_rank_zero():
        log.info("\n%s", summary(results, run_dir))  # console and the run's log file


def cli() -> None:
    """``python -m mfexp`` and the ``mfexp`` command. A command whose config does not compose (a misspelt key or
    group, a value of the wrong type: Hydra prints why) exits 2, as other bad input does, where Hydra exits 1. A DDP
    worker that a launcher started ends with its parent."""
    from mfexp.devices import end_with_parent, is_launched_worker

    if is_launched_worker():
        end_with_parent()
    try:
        main()
    except SystemExit as e:
        if e.code == 1 and not TASK_STARTED:
            sys.exit(2)
        raise


if __name__ == "__main__":
    cli()
