"""Run an experiment's stages in order on one run folder; skip stages already done for the same config."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from mfexp.config import STAGE_ORDER, check_stages, config_hash
from mfexp.fileio import atomic_write_json
from mfexp.runpaths import RunPaths
from mfexp.targets import locate
from mfexp.tracking import is_rank_zero, start_tracking

log = logging.getLogger(__name__)

STAGES = {
    "generate": "mfexp.generate.generate",
    "train": "mfexp.detection.stages.train",
    "evaluate": "mfexp.detection.stages.evaluate",
}  # each called as fn(cfg, run_dir, tracker) -> result dict
# the config each stage depends on (together with every earlier stage's)
STAGE_KEYS = {
    "generate": ("augmenter", "synthetic", "dataset", "seed", "generate"),  # and the generator's: stage_keys
    "train": ("detector", "train_data"),
    "evaluate": ("evaluate",),
}


def preflight(cfg) -> None:
    """What the config names on this machine, checked before any stage runs or anything is written (a ValueError
    or FileNotFoundError naming the key): the accelerator exists here and ``generate.reuse`` holds a synthetic
    set, where the stages use them."""
    from omegaconf import OmegaConf

    from mfexp.devices import check_accelerator

    check_accelerator(str(cfg.trainer.accelerator))
    reuse = OmegaConf.select(cfg, "generate.reuse")
    if reuse and "generate" in cfg.stages:
        from mfexp.generate import synthetic_source

        synthetic_source(Path(reuse))


def stage_keys(cfg, stage: str) -> list[str]:
    """The config keys ``stage`` depends on: its own and every earlier stage's (STAGE_KEYS); of the generator, all of
    it where the augmenter uses a text-to-image model, else only N (generator.num_objects) where it makes a set."""
    from mfexp.augmenters import uses

    keys = [k for s in STAGE_ORDER[: STAGE_ORDER.index(stage) + 1] for k in STAGE_KEYS[s]]
    if uses(cfg, "text_to_image"):
        keys.append("generator")
    elif uses(cfg, "synthetic_set"):
        keys.append("generator.num_objects")
    return keys


def stage_hash(cfg, stage: str) -> str:
    """The hash a stage's marker holds: its keys (``stage_keys``; ``augmenter.uses`` left out, it declares what the
    augmenter needs, not what it makes), salted with IMAGE_SEEDS where the augmenter makes a synthetic set."""
    from mfexp.augmenters import uses
    from mfexp.synthetic import IMAGE_SEEDS

    makes_images = uses(cfg, "synthetic_set") and not cfg.generate.reuse
    return config_hash(
        cfg, stage_keys(cfg, stage), salt=IMAGE_SEEDS if makes_images else None, drop=("augmenter.uses",)
    )


class StageFailed(RuntimeError):
    """A stage raised; the error and its traceback are in the run folder's failed.json (``path``)."""

    def __init__(self, stage: str | None, error: Exception, path: Path):
        super().__init__(f"stage {stage} failed: {type(error).__name__}: {error}")
        self.stage, self.error, self.path = stage, error, path


class StopRequested(SystemExit):
    """Ctrl-C, SIGTERM or a SLURM preemption stopped a stage: what it finished is on disk, a re-run resumes.
    Exits non-zero (130 for Ctrl-C, else 143 or Lightning's code)."""

    def __init__(self, stage: str | None, cause: BaseException):
        code = 130 if isinstance(cause, KeyboardInterrupt) else getattr(cause, "code", None) or 143
        super().__init__(code if isinstance(code, int) else 143)
        self.stage = stage


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder (the same command started twice)."""


@contextmanager
def hold_run_folder(paths: RunPaths) -> Iterator[None]:
    """Hold the run folder for the length of a command: an exclusive lock (``fcntl.flock``) on its .lock file, which
    the kernel releases when the process ends, however it ends. A second process on the same folder raises
    RunFolderBusy at once, naming the holder's process id, rather than doing the same work beside the first."""
    import fcntl

    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise RunFolderBusy(
                f"run folder {paths.root} is in use by process {holder} (the same command, started twice?); "
                "nothing was done: wait for it to end, then run this again to resume"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def record_failure(paths: RunPaths, stage: str | None, error: Exception) -> Path:
    """Write failed.json: which stage raised what, with the traceback (rank 0 only); returns its path."""
    if is_rank_zero():
        atomic_write_json(
            paths.failed,
            {
                "stage": stage,
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
    return paths.failed


def run_experiment(cfg, run_dir: Path) -> dict:
    """Run the configured stages; return {stage: result}. A stage done for the same config is skipped.

    A stage that raises leaves failed.json and raises StageFailed; a stop request raises StopRequested. A run that
    completes removes an earlier failed.json."""
    paths = RunPaths(run_dir)
    results, timings = {}, {}
    stage = None
    try:
        for stage in check_stages(cfg.stages):
            results[stage], timings[stage] = run_stage(cfg, paths, stage)
    except Exception as e:
        raise StageFailed(stage, e, record_failure(paths, stage, e)) from e
    except (KeyboardInterrupt, SystemExit) as e:
        if isinstance(e, StopRequested):
            raise
        log.warning(
            "stage %s: stopped (%s); what it finished is saved, run the same command again to resume",
            stage,
            type(e).__name__,
        )
        raise StopRequested(stage, e) from e
    if is_rank_zero():
        atomic_write_json(paths.stage_times, timings)
        paths.failed.unlink(missing_ok=True)
    return results


def run_stage(cfg, paths: RunPaths, stage: str) -> tuple[dict, float | None]:
    """One stage with its own wandb run (job_type = the stage): (result, seconds), or the earlier result."""
    marker, h = paths.marker(stage), stage_hash(cfg, stage)
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("hash") == h:
            log.info("stage %s: done earlier for this config, skipped (%s)", stage, marker)
            return done["result"], done.get("seconds")
    log.info("stage %s: running", stage)
    if is_rank_zero():
        record_versions(paths, stage)
    start = time.time()
    tracker = start_tracking(cfg, paths.root, stage)
    try:
        result = locate(STAGES[stage], f"stage {stage}")(cfg, paths.root, tracker) or {}
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    seconds = round(time.time() - start, 1)
    if is_rank_zero():
        atomic_write_json(marker, {"hash": h, "result": result, "seconds": seconds})
    log.info("stage %s: done in %.1f s", stage, seconds)
    return result, seconds


def record_versions(paths: RunPaths, stage: str) -> None:
    """versions.json: ``stage`` runs with this environment's versions and mfexp commit (other stages' entries kept)."""
    from mfexp.environment import run_versions

    try:
        recorded = json.loads(paths.versions.read_text())
    except (OSError, ValueError):
        recorded = {}
    atomic_write_json(paths.versions, dict(recorded if isinstance(recorded, dict) else {}, **{stage: run_versions()}))


def summary(results: dict, run_dir: Path) -> str:
    """The end of a run on the console: metrics, seconds per stage and where to look."""
    paths = RunPaths(run_dir)
    lines = [f"run folder: {paths.root}"]
    if paths.metrics.exists():
        metrics = json.loads(paths.metrics.read_text())
        keys = [k for k in ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP") if k in metrics]
        lines.append("mask/box AP in %, LVIS val:")
        lines.append("  ".join(f"{k:>8}" for k in keys))
        lines.append(
            "  ".join(
                f"{100 * metrics[k]:8.2f}" if isinstance(metrics[k], (int, float)) else f"{metrics[k]!s:>8}"
                for k in keys
            )
        )
    gen = results.get("generate")
    if gen:
        lines.append("generate: " + ", ".join(f"{k}={v}" for k, v in gen.items() if not isinstance(v, dict)))
    if paths.stage_times.exists():
        lines.append(
            "seconds per stage: " + ", ".join(f"{k}={v}" for k, v in json.loads(paths.stage_times.read_text()).items())
        )
    look = [
        p
        for p in (
            paths.synthetic_gallery,
            paths.evaluate / "predictions.jpg",
            paths.evaluate / "per_category.csv",
            paths.metrics,
        )
        if p.exists()
    ]
    if look:
        lines.append("look at: " + ", ".join(str(p.relative_to(paths.root)) for p in look))
    if list(paths.wandb.glob("offline-run-*")):
        lines.append(f"wandb (offline): wandb sync {paths.wandb}/offline-run-*")
    return "\n".join(lines)
