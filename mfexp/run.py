"""Run an experiment's stages in order on one run folder; skip stages already done for the same config."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from mfexp.config import STAGE_ORDER, check_stages
from mfexp.data import config_hash
from mfexp.fileio import atomic_write_json
from mfexp.runpaths import RunPaths
from mfexp.targets import locate
from mfexp.tracking import Tracker, is_rank_zero, start_tracking, synthetic_artifact

log = logging.getLogger(__name__)

STAGES = {
    "generate": "mfexp.run.generate",
    "train": "mfexp.detection.stages.train",
    "evaluate": "mfexp.detection.stages.evaluate",
}  # each called as fn(cfg, run_dir, tracker) -> result dict
# the config each stage depends on (together with every earlier stage's)
STAGE_KEYS = {
    "generate": ("augmenter", "synthetic", "generator", "dataset", "seed", "generate"),
    "train": ("detector", "train_data"),
    "evaluate": ("evaluate",),
}


def generate(cfg, run_dir: Path, tracker: Tracker = Tracker()) -> dict:
    """The augmenter named by `augmenter._target_`, called as fn(cfg, run_dir, tracker) (its options live in
    cfg.augmenter, what it makes in cfg.synthetic), or a copy of another run's synthetic set (`generate.reuse=PATH`);
    then the positive controls of `synthetic.corrupt`, if any (mfexp.corrupt). The synthetic set is logged as a
    dataset Artifact."""
    from omegaconf import OmegaConf

    from mfexp.corrupt import check_corrupt

    corrupt = check_corrupt(OmegaConf.select(cfg, "synthetic.corrupt"))
    reuse = OmegaConf.select(cfg, "generate.reuse")
    if reuse:
        result = reuse_synthetic(Path(reuse), run_dir)
    else:
        result = locate(cfg.augmenter._target_, "augmenter._target_")(cfg, run_dir, tracker)
    check_kept(result)
    result = corrupt_synthetic(cfg, run_dir, corrupt, result)
    paths = RunPaths(run_dir)
    if paths.synthetic_annotations.is_file():
        tracker.log_dataset(synthetic_artifact(run_dir), paths.synthetic_annotations, paths.synthetic_images)
    return result


def check_kept(result: dict) -> None:
    """An augmenter that planned images but kept none fails with its skip reasons."""
    planned = result.get("planned", 0)
    if planned and not result.get("kept"):
        reasons = ", ".join(f"{n} {k}" for k, n in result.get("skip_reasons", {}).items()) or "none given"
        raise ValueError(f"generate: kept 0 of {planned} planned images; skip reasons: {reasons}")


def synthetic_source(source: Path) -> tuple[Path, Path]:
    """The synthetic set that ``generate.reuse=source`` names (a run folder or its synthetic/ folder): (its folder,
    its clean annotations file). A FileNotFoundError naming the key where there is none."""
    source = RunPaths(source).synthetic if RunPaths(source).synthetic.is_dir() else source
    ann = source / "annotations_clean.json"
    ann = ann if ann.is_file() else source / "annotations.json"
    if not ann.is_file() or not (source / "images").is_dir():
        raise FileNotFoundError(
            f"generate.reuse={source}: no synthetic set there (needs annotations.json and "
            "images/; point it at a run folder whose generate stage finished)"
        )
    return source, ann


def reuse_synthetic(source: Path, run_dir: Path) -> dict:
    """Copy a synthetic set (a run folder or its synthetic/ folder) into this run: the same data under other
    training settings or corruptions, without generating it again."""
    source, ann = synthetic_source(source)
    out = RunPaths(run_dir).synthetic
    if out.resolve() == source.resolve():
        raise ValueError(f"generate.reuse={source} is this run's own synthetic folder")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source / "images", out / "images")
    shutil.copy2(ann, out / "annotations.json")
    if (source / "gallery.jpg").is_file():
        shutil.copy2(source / "gallery.jpg", out / "gallery.jpg")
    data = json.loads(ann.read_text())
    log.info(
        "generate: reused %d synthetic images (%d instances) from %s",
        len(data["images"]),
        len(data["annotations"]),
        source,
    )
    return {"reused": str(source), "kept": len(data["images"]), "instances": len(data["annotations"])}


def corrupt_synthetic(cfg, run_dir: Path, corrupt: dict, result: dict) -> dict:
    """Apply `synthetic.corrupt` to the run's synthetic set (clean copy kept as annotations_clean.json)."""
    from mfexp.corrupt import corrupt_lvis, is_active

    syn = RunPaths(run_dir).synthetic
    ann, clean = RunPaths(run_dir).synthetic_annotations, syn / "annotations_clean.json"
    if not ann.is_file():
        if is_active(corrupt):
            raise ValueError(
                f"synthetic.corrupt={corrupt} needs a synthetic set, but augmenter={cfg.augmenter.name} made none"
            )
        return result
    if not is_active(corrupt):
        clean.unlink(missing_ok=True)
        return result
    if not is_rank_zero():
        return result
    if not (clean.is_file() and json.loads(ann.read_text()).get("info", {}).get("corrupt")):
        shutil.copy2(ann, clean)  # the augmenter (or reuse) has just written a clean set
    data, summary = corrupt_lvis(json.loads(clean.read_text()), corrupt, int(cfg.seed))
    atomic_write_json(ann, data)
    from mfexp.draw import write_gallery

    write_gallery(syn, data["images"], data["annotations"], data["categories"], int(cfg.synthetic.gallery_size))
    log.info(
        "generate: positive control %s: %d of %d instances relabelled, masks %s",
        corrupt,
        summary["relabelled"],
        summary["instances"],
        summary["masks"],
    )
    return dict(result, corrupt=summary)


def preflight(cfg) -> None:
    """What the config names on this machine, checked before any stage runs or anything is written (a ValueError
    or FileNotFoundError naming the key): the accelerator exists here and ``generate.reuse`` holds a synthetic
    set, where the stages use them."""
    from omegaconf import OmegaConf

    from mfexp.devices import check_accelerator

    check_accelerator(str(cfg.trainer.accelerator))
    reuse = OmegaConf.select(cfg, "generate.reuse")
    if reuse and "generate" in cfg.stages:
        synthetic_source(Path(reuse))


def stage_hash(cfg, stage: str) -> str:
    from mfexp.augmenters import IMAGE_SEEDS, MAKES_IMAGES

    keys = [k for s in STAGE_ORDER[: STAGE_ORDER.index(stage) + 1] for k in STAGE_KEYS[s]]
    makes_images = cfg.augmenter.get("_target_") in MAKES_IMAGES and not cfg.generate.reuse
    return config_hash(cfg, keys, salt=IMAGE_SEEDS if makes_images else None)


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
            paths.synthetic / "gallery.jpg",
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
