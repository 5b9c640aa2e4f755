"""wandb (offline unless the user says otherwise): one wandb run per stage of a run folder, all in one group.

`run_experiment` starts each stage's wandb run (`start_tracking`) and hands the stage a `Tracker`; a stage logs
through it and never starts wandb itself. With the logger off, or on a rank other than 0, the tracker logs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """True in the single process and in the global rank-0 process of a DDP or SLURM launch (Lightning's rank:
    RANK, LOCAL_RANK, SLURM_PROCID ... and the Trainer's own once one runs)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


class Tracker:
    """What a stage logs to: a wandb run, or nothing (``Tracker()``)."""

    def __init__(self, run=None):
        self.run = run

    def __bool__(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict, images: dict | None = None) -> None:
        """Numbers (non-numbers are left out) and image files by key."""
        if self.run is None:
            return
        import wandb

        payload = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        payload |= {k: wandb.Image(str(p)) for k, p in (images or {}).items() if Path(p).is_file()}
        self.run.log(payload)

    def log_table(self, key: str, rows: list[dict]) -> None:
        """Rows of equal keys as a wandb Table (columns: the first row's keys)."""
        if self.run is None or not rows:
            return
        import wandb

        columns = list(rows[0])
        self.run.log({key: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def log_instances(self, key: str, items: list[tuple[np.ndarray, list[np.ndarray], list[str]]]) -> None:
        """Images with their instance masks, ``[(rgb, masks, names)]``, as wandb Images with a mask layer (instance k
        is value k + 1, labelled with its category name; later instances lie on top)."""
        if self.run is None or not items:
            return
        import wandb

        self.run.log(
            {
                key: [
                    wandb.Image(
                        rgb,
                        masks={
                            "instances": {
                                "mask_data": label_map(rgb.shape[:2], masks),
                                "class_labels": instance_labels(names),
                            }
                        },
                    )
                    for rgb, masks, names in items
                ]
            }
        )

    def log_dataset(self, name: str, annotations: Path, images: Path) -> None:
        """A synthetic set as a dataset Artifact that references the files (checksummed, not uploaded)."""
        if self.run is not None:
            self.run.log_artifact(dataset_artifact(name, annotations, images))

    def use_dataset(self, name: str, annotations: Path, images: Path) -> None:
        """Declare a synthetic set as this stage's input (the generate stage's Artifact: same files, same version).
        wandb has no artifact use offline; there the artifact's name and digest go into the run's config."""
        if self.run is None:
            return
        artifact = dataset_artifact(name, annotations, images)
        if self.run.offline:
            self.run.config.update({"input_artifact": {"name": name, "digest": artifact.digest}}, allow_val_change=True)
        else:
            self.run.use_artifact(artifact)

    def lightning_logger(self):
        """A Lightning WandbLogger on this run, or None."""
        if self.run is None:
            return None
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(experiment=self.run)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def label_map(shape: tuple[int, int], masks: list[np.ndarray]) -> np.ndarray:
    """One integer image from instance masks: 0 background, k + 1 where mask k is (later masks on top)."""
    out = np.zeros(shape, np.uint16)
    for k, m in enumerate(masks):
        out[np.asarray(m, bool)] = k + 1
    return out


def instance_labels(names: list[str]) -> dict[int, str]:
    return {0: "background"} | {k + 1: name for k, name in enumerate(names)}


def dataset_artifact(name: str, annotations: Path, images: Path):
    import wandb

    artifact = wandb.Artifact(name, type="dataset")
    artifact.add_reference(Path(annotations).resolve().as_uri(), name="annotations.json")
    artifact.add_reference(Path(images).resolve().as_uri(), name="images")
    return artifact


def run_key(run_dir) -> str:
    """A short fixed id of a run folder (wandb run ids and artifact names)."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def synthetic_artifact(run_dir) -> str:
    """The wandb Artifact name of a run folder's synthetic set."""
    return f"synthetic-{run_key(run_dir)}"


def default_group(run_dir) -> str:
    """The sweep's folder name in a multirun, else the run folder's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return Path(run_dir).resolve().name


def logged_config(cfg) -> dict:
    """The resolved config, as the stages read it (without Hydra's own node)."""
    from omegaconf import OmegaConf

    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    }


def start_tracking(cfg, run_dir, stage: str) -> Tracker:
    """The stage's wandb run (job_type = the stage, resumed by a fixed id), or a tracker that logs nothing when the
    logger is off or this is not rank 0."""
    lcfg = cfg.logger
    if not lcfg.enabled or lcfg.mode == "disabled" or not is_rank_zero():
        return Tracker()
    import wandb

    run_dir = Path(run_dir).resolve()
    run = wandb.init(
        project=lcfg.project,
        group=lcfg.group or default_group(run_dir),
        job_type=stage,
        mode=os.environ.get("WANDB_MODE", lcfg.mode),
        dir=str(run_dir),
        id=f"{run_key(run_dir)}-{stage}",
        resume="allow",
        name=f"{run_dir.name}/{stage}",
        config=logged_config(cfg),
        settings=wandb.Settings(silent=True),
    )
    return Tracker(run)
