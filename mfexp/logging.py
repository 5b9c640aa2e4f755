"""wandb (offline unless the user says otherwise): one wandb run per run folder, shared by all stages."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """True in the single process, or in the global rank-0 process of a DDP launch."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def wandb_run(cfg, run_dir):
    """The run folder's wandb run (resumed by a fixed id), or None when the logger is off or not rank 0."""
    lcfg = cfg.logger
    if not lcfg.enabled or lcfg.mode == "disabled" or not is_rank_zero():
        return None
    import wandb
    from omegaconf import OmegaConf

    if wandb.run is not None:
        return wandb.run
    run_dir = Path(run_dir).resolve()
    run_id = hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]
    return wandb.init(project=lcfg.project, group=lcfg.group, mode=os.environ.get("WANDB_MODE", lcfg.mode),
                      dir=str(run_dir), id=run_id, resume="allow", name=run_dir.name,
                      config=OmegaConf.to_container(cfg, resolve=False), settings=wandb.Settings(silent=True))


def log_to_wandb(cfg, run_dir, metrics: dict, images: dict | None = None) -> None:
    run = wandb_run(cfg, run_dir)
    if run is None:
        return
    import wandb
    payload = dict(metrics)
    for key, path in (images or {}).items():
        if Path(path).exists():
            payload[key] = wandb.Image(str(path))
    run.log(payload)


def lightning_logger(cfg, run_dir):
    """A Lightning WandbLogger on the run folder's wandb run, or None."""
    run = wandb_run(cfg, run_dir)
    if run is None:
        return None
    from pytorch_lightning.loggers import WandbLogger
    return WandbLogger(experiment=run)


def finish_wandb() -> None:
    import sys
    if "wandb" in sys.modules:
        import wandb
        if wandb.run is not None:
            wandb.finish()
