"""The ``train`` and ``evaluate`` stages: MMDetection Mask R-CNN under one Lightning Trainer, LVIS metrics.

Config read (besides ``cfg.dataset``, passed to ``mfexp.data.prepare_dataset``):
``cfg.detector.{name, base, overrides, pretrained, epochs | max_iters, batch_size, eval_batch_size, num_workers,
checkpoint_every, synthetic_repeat, vis_images, vis_score_thr}``, ``cfg.trainer.*`` (Lightning Trainer arguments),
``cfg.seed``, ``cfg.train_data`` (real | synthetic | both: what the detector trains on), ``cfg.augmenter.copy_paste``
(optional: Copy-Paste in the training pipeline), ``cfg.evaluate.checkpoint`` (optional: evaluate this checkpoint
instead of the run's last.ckpt).

Files: ``train/config.py`` (resolved MMDetection config), ``train/checkpoints/last.ckpt`` (every
``checkpoint_every`` steps and at the end; a re-run resumes from it), ``evaluate/predictions.json`` (LVIS results),
``evaluate/predictions.jpg`` (overlays), ``evaluate/per_category.csv`` (mask and box AP per category with its
frequency group, novelty and real train images) and ``evaluate/per_category_ap.png`` (AP along the long tail),
``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from mfexp.callbacks import CheckpointOnStop, CtrlCAsStopRequest, RunProgressBar, StopOnSigterm, progress
from mfexp.compat import patch_all
from mfexp.detection.datasets import class_names
from mfexp.detection.metrics import lvis_evaluate, novel_category_ids, per_category_rows
from mfexp.detection.mmdet_config import detector_config
from mfexp.detection.module import AtomicCheckpointIO, DetectorModule, load_weights
from mfexp.devices import trainer_args
from mfexp.draw import plot_per_category, prediction_overlays
from mfexp.fileio import atomic_write_bytes, atomic_write_json, csv_bytes
from mfexp.lvis import check_same_categories, read_lvis_json
from mfexp.runpaths import RunPaths
from mfexp.tracking import Tracker, synthetic_artifact

log = logging.getLogger(__name__)
HEADLINE = ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP")


def dataset_files(cfg) -> dict:
    """``train_json, train_images, val_json, val_images`` of the configured dataset."""
    from mfexp.data import prepare_dataset

    return prepare_dataset(cfg.dataset)


def novel_ids(cfg, train: dict, val: dict) -> list[int]:
    """The novel categories of ``dataset.novel``: under ``rare`` those the derived training file lists (rare + held
    out); under ``held_out`` the files' ``novel_category_ids`` (val's first), else categories without train
    annotations."""
    from mfexp.data import novel_protocol

    return novel_category_ids(train, None if novel_protocol(cfg.dataset) == "rare" else val)


def synthetic_files(run_dir: Path) -> dict | None:
    """The generate stage's output, if any: ``dict(json=..., images=...)``."""
    paths = RunPaths(run_dir)
    ann = paths.synthetic_annotations
    return dict(json=str(ann), images=str(paths.synthetic_images)) if ann.is_file() else None


def make_trainer(cfg, tracker: Tracker, stage: str, log_dir: Path | None = None, **kwargs) -> pl.Trainer:
    """A Lightning Trainer of ``stage`` from ``cfg.trainer`` (accelerator, devices, precision ...) plus stage
    arguments; logs go to the stage's wandb run (if any) and, with ``log_dir``, to ``log_dir/metrics.csv``; progress
    as mfexp.callbacks.progress shows it; Ctrl-C stops it as SIGTERM does (mfexp.callbacks.CtrlCAsStopRequest).
    Samplers are mmengine's (seeded, sharded by rank), so Lightning must not replace them."""
    args = trainer_args(cfg.trainer)
    args.setdefault("enable_model_summary", False)
    loggers = [CSVLogger(log_dir, name="", version="")] if log_dir else []
    loggers += [tracker.lightning_logger()] if tracker else []
    args["enable_progress_bar"], shown = progress(args.get("enable_progress_bar", True), stage, RunProgressBar)
    callbacks = kwargs.pop("callbacks", []) + shown + [CtrlCAsStopRequest()]
    return pl.Trainer(
        **args,
        logger=loggers or False,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=callbacks,
        **kwargs,
    )


def train_data(cfg) -> str:
    """``train_data``: what the detector trains on, real | synthetic | both."""
    return str(cfg.train_data)


def build_detector(
    cfg,
    files: dict,
    synthetic: dict | None = None,
    world_size: int = 1,
    init_weights: bool = True,
    training: bool = True,
) -> tuple[DetectorModule, dict]:
    """Validate the data files and build the LightningModule; returns ``(module, info)`` with the parsed files.
    ``training=False`` (evaluation) leaves the training data and schedule out of the MMDetection config."""
    patch_all()
    real = read_lvis_json(files["train_json"], "train annotations")
    val = read_lvis_json(files["val_json"], "val annotations")
    if {c["id"] for c in val["categories"]} != {c["id"] for c in real["categories"]}:
        raise ValueError(
            f"val annotations {files['val_json']} and train annotations {files['train_json']} "
            "have different category lists"
        )
    syn = None
    if synthetic:
        syn = read_lvis_json(synthetic["json"], "synthetic annotations")
        check_same_categories(real, syn, synthetic["json"])
    classes = class_names(real)
    copy_paste = OmegaConf.select(cfg, "augmenter.copy_paste", default=None)
    copy_paste = OmegaConf.to_container(copy_paste, resolve=True) if copy_paste else None
    mm_cfg = detector_config(
        cfg.detector,
        files,
        classes,
        synthetic if syn else None,
        world_size,
        train_data=train_data(cfg),
        copy_paste=copy_paste,
        training=training,
    )
    meta = dict(detector=cfg.detector.name, category_ids=sorted(c["id"] for c in real["categories"]))
    module = DetectorModule(mm_cfg, meta, seed=int(cfg.seed), init_weights=init_weights)
    return module, dict(train=real, val=val, synthetic=syn)


def train(cfg, run_dir, tracker: Tracker = Tracker()) -> dict:
    """Train the detector on the real train set and/or ``run_dir/synthetic`` (``train_data``: both by default, the
    real set alone when there is no synthetic set); resumes from last.ckpt. A stop request (SIGTERM, Ctrl-C) ends
    training at a step boundary and saves last.ckpt there; the re-run resumes from it (a killed run: from the last
    checkpoint, every ``detector.checkpoint_every`` steps)."""
    paths = RunPaths(run_dir)
    last = paths.last_checkpoint
    ckpt_dir = last.parent
    det = cfg.detector
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    files = dataset_files(cfg)
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, every_n_train_steps=int(det.checkpoint_every), save_last=True, save_top_k=0
    )
    trainer = make_trainer(
        cfg,
        tracker,
        "train",
        paths.train,
        max_epochs=-1,
        callbacks=[checkpoint, CheckpointOnStop(last)],
        default_root_dir=str(paths.train),
        num_sanity_val_steps=0,
    )
    synthetic = synthetic_files(run_dir)
    module, info = build_detector(cfg, files, synthetic, trainer.world_size)
    if info["synthetic"] and train_data(cfg) != "real":
        tracker.use_dataset(synthetic_artifact(run_dir), paths.synthetic_annotations, paths.synthetic_images)
    # the run's length is known once the training set is (detector.epochs: passes over the expanded set)
    trainer.fit_loop.epoch_loop.max_steps = int(module.mm_cfg.train_cfg.max_iters)
    if trainer.is_global_zero:
        paths.train.mkdir(parents=True, exist_ok=True)
        module.mm_cfg.dump(str(paths.train / "config.py"))
    start = time.time()
    trainer.fit(module, ckpt_path=_resumable(last, module), weights_only=True)
    trainer.save_checkpoint(str(last), weights_only=False)  # the final state, whatever checkpoint_every is
    used = train_data(cfg)
    n_real = len(info["train"]["images"]) if used != "synthetic" else 0
    n_syn = len(info["synthetic"]["images"]) if info["synthetic"] and used != "real" else 0
    return dict(
        checkpoint=str(last),
        steps=int(trainer.global_step),
        seconds=round(time.time() - start, 1),
        train_data=used,
        train_images=n_real,
        synthetic_images=n_syn,
        max_iters=int(module.mm_cfg.train_cfg.max_iters),
        **module.mm_cfg.get("mfexp_schedule", {}),
    )


def _resumable(last: Path, module: DetectorModule) -> str | None:
    """``last`` if it holds a run of the same MMDetection config, else None (a stale one is left to be overwritten
    by the first checkpoint of the new run; nothing is renamed, so every DDP rank decides alike)."""
    if not last.is_file():
        return None
    if torch.load(last, map_location="cpu", weights_only=True).get("mmdet_config") == module.mm_cfg.pretty_text:
        return str(last)
    log.warning("%s was trained with another detector config: training from scratch", last)
    return None


def _gather(objs: list) -> list:
    """Every rank's objects on rank 0 (the others get an empty list)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        dist = torch.distributed
        parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(objs, parts, dst=0)
        return [o for p in parts for o in p] if parts is not None else []
    return objs


def evaluate(cfg, run_dir, tracker: Tracker = Tracker()) -> dict:
    """Predict on the val set with the run's last.ckpt (or ``evaluate.checkpoint``), write LVIS metrics."""
    paths = RunPaths(run_dir)
    out_dir = paths.evaluate
    det = cfg.detector
    ckpt = cfg.evaluate.checkpoint or paths.last_checkpoint
    if not Path(ckpt).is_file():
        raise FileNotFoundError(
            f"no checkpoint to evaluate at {ckpt} (run the train stage, or set evaluate.checkpoint=PATH)"
        )
    files = dataset_files(cfg)
    trainer = make_trainer(cfg, tracker, "evaluate", default_root_dir=str(out_dir), callbacks=[StopOnSigterm()])
    module, info = build_detector(cfg, files, None, trainer.world_size, init_weights=False, training=False)
    load_weights(module, str(ckpt))
    start = time.time()
    per_image = _gather([r for batch in trainer.predict(module) for r in batch])
    predictions = list({r["image_id"]: r["dets"] for r in per_image}.values())  # sampler padding repeats images
    predictions = [d for dets in predictions for d in dets]
    seconds = round(time.time() - start, 1)
    metrics_path = paths.metrics
    if trainer.is_global_zero:
        novel = novel_ids(cfg, info["train"], info["val"])
        metrics, per_category = lvis_evaluate(files["val_json"], predictions, novel)
        metrics = {k: metrics[k] for k in HEADLINE} | {k: v for k, v in metrics.items() if k not in HEADLINE}
        metrics.update(
            num_val_images=len(info["val"]["images"]),
            num_predictions=len(predictions),
            num_novel_categories=len(novel),
            predict_seconds=seconds,
            checkpoint=str(ckpt),
            detector=det.name,
        )
        atomic_write_json(out_dir / "predictions.json", predictions)
        rows = per_category_rows(per_category, info["train"], novel)
        atomic_write_bytes(out_dir / "per_category.csv", csv_bytes(rows, list(rows[0]) if rows else []))
        plot_per_category(rows, str(out_dir / "per_category_ap.png"))
        overlays = prediction_overlays(
            predictions,
            info["val"],
            files["val_images"],
            str(out_dir / "predictions.jpg"),
            num_images=int(det.vis_images),
            score_thr=float(det.vis_score_thr),
        )
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=2).encode())
        tracker.log({f"eval/{k}": v for k, v in metrics.items()}, {"eval/predictions": overlays})
        tracker.log_table("eval/per_category", rows)
    trainer.strategy.barrier()
    with open(metrics_path) as f:
        return json.load(f)
