"""The MosaicFusion `generate` stage: Lightning `Trainer.predict` over mosaic indices, one part file per mosaic.

Each mosaic i is planned and seeded from `image_seed(seed, i)` alone, so any sharding over processes gives the same
files.
Finished mosaics leave `synthetic/parts/<i>.json` (written atomically after their image), so a killed run re-run
with the same config continues where it stopped; rank 0 then merges the parts into `synthetic/annotations.json`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from mfexp.callbacks import CtrlCAsStopRequest, StopOnSigterm, progress
from mfexp.config import config_hash
from mfexp.data import prepare_dataset
from mfexp.devices import trainer_args
from mfexp.fileio import atomic_write_json
from mfexp.lvis import load_categories, select_categories
from mfexp.mosaicfusion.models import check_device_dtype, load_pipeline, resolve_dtype, set_scheduler
from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator, MosaicResult
from mfexp.runpaths import RunPaths
from mfexp.synthetic import IMAGE_SEEDS, image_annotations, image_budget, summarise, write_image, write_set
from mfexp.tracking import Tracker

log = logging.getLogger(__name__)


def part_path(parts: Path, index: int) -> Path:
    return parts / f"{index:07d}.json"


def write_part(paths: RunPaths, result: MosaicResult, jpeg_quality: int) -> None:
    """Image first, then its part record: a part file on disk means the mosaic is complete."""
    plan = result.plan
    record = {
        "index": plan.index,
        "reason": result.reason,
        "prompts": plan.prompts,
        "categories": [c["id"] for c in plan.categories],
        "image": None,
        "annotations": [],
    }
    if result.kept:
        record["image"] = write_image(paths, plan.index, result.image, jpeg_quality)
        record["annotations"] = image_annotations(plan.index, result.masks, [c["id"] for c in plan.categories])
    atomic_write_json(part_path(paths.synthetic_parts, plan.index), record)


class PartWriter(BasePredictionWriter):
    def __init__(self, paths: RunPaths, jpeg_quality: int):
        super().__init__(write_interval="batch")
        self.paths, self.jpeg_quality = paths, jpeg_quality

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for result in prediction:
            write_part(self.paths, result, self.jpeg_quality)


def batches(total: int, batch_size: int, done: set[int]) -> list[list[int]]:
    """The mosaic batches still to make: fixed runs of `batch_size` consecutive indices (a mosaic is always denoised
    beside the same others, whatever the sharding or a resume), each pending while any of its mosaics is not done."""
    chunks = [list(range(i, min(i + batch_size, total))) for i in range(0, total, batch_size)]
    return [c for c in chunks if not done.issuperset(c)]


def _one(items: list):
    return items[0]


class MosaicIndices(pl.LightningDataModule):
    """The pending batches of mosaic indices, sharded by rank (batch k on rank k % world_size): no padding, no
    duplicates."""

    def __init__(self, pending: list[list[int]]):
        super().__init__()
        self.pending = pending

    def predict_dataloader(self):
        # a rank with no batch (fewer batches than ranks) gets one empty batch: Lightning refuses an empty loader
        shard = self.pending[self.trainer.global_rank :: self.trainer.world_size] or [[]]
        return DataLoader(shard, batch_size=1, collate_fn=_one, shuffle=False)


class MosaicFusionModule(pl.LightningModule):
    def __init__(self, pipe, generator: MosaicFusionGenerator, main: list, mixed: list, seed: int):
        super().__init__()
        # every network of the pipeline (denoiser, VAE, text encoders), so that Lightning moves them to the device
        self.models = torch.nn.ModuleDict({k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)})
        self.generator, self.main, self.mixed, self.seed = generator, main, mixed, seed

    def predict_step(self, batch, batch_idx):
        return self.generator([self.generator.plan(i, self.main, self.mixed, self.seed) for i in batch])


def fingerprint(cfg, dtype: str | None = None) -> str:
    """Hash of everything that decides the mosaics (not where or on how many devices they are made, nor the
    positive controls of ``synthetic.corrupt``, applied afterwards); `dtype`: the concrete `generator.dtype` (what
    `auto` became on this machine)."""
    from omegaconf import OmegaConf

    keys = ("synthetic", "generator", "seed", "dataset")
    picked = {k: OmegaConf.to_container(cfg[k], resolve=True) if k != "seed" else cfg.seed for k in keys}
    picked["synthetic"].pop("corrupt", None)
    if dtype is not None:
        picked["generator"]["dtype"] = dtype
    return config_hash(OmegaConf.create(picked), keys, salt=IMAGE_SEEDS)


def reason_kind(reason: str) -> str:
    """A skip reason without its specifics, for counting."""
    kind = re.sub(r"region \d+ \([^)]*\): ", "", reason)
    kind = re.sub(r"\([^()]*px\)|'[^']*'|\"[^\"]*\"", "", kind)
    return re.sub(r"\s+", " ", kind).strip()


def trainer_kwargs(cfg) -> dict:
    t = trainer_args(cfg.trainer)
    return {k: t[k] for k in ("accelerator", "devices", "num_nodes", "strategy", "enable_progress_bar")}


def generate_mosaicfusion(cfg, run_dir, tracker: Tracker = Tracker()) -> dict:
    gcfg, scfg = cfg.generator, cfg.synthetic
    paths = RunPaths(run_dir)
    out = paths.synthetic
    cats_file = gcfg.categories or prepare_dataset(cfg.dataset)["train_json"]
    categories = load_categories(cats_file)
    main = select_categories(categories, scfg.main_frequency, "synthetic.main_frequency")
    mixed = select_categories(categories, scfg.mixed_frequency, "synthetic.mixed_frequency")
    total = image_budget(len(main), scfg.images_per_category, scfg.max_images)

    dtype = resolve_dtype(gcfg.dtype, cfg.trainer.accelerator)
    check_device_dtype(dtype, cfg.trainer.accelerator)
    if dtype != gcfg.dtype:
        log.info(
            "generator.dtype=%s: %s on this machine (trainer.accelerator=%s)",
            gcfg.dtype,
            dtype,
            cfg.trainer.accelerator,
        )
    pipe = set_scheduler(load_pipeline(gcfg.model, dtype), gcfg.scheduler)
    generator = MosaicFusionGenerator(pipe, gcfg, scfg)
    generator.plan(0, main, mixed, int(cfg.seed))  # bad sizes / N fail here, before anything is written

    parts = paths.synthetic_parts
    stamp = fingerprint(cfg, dtype)
    stamp_file = parts / "config.sha1"
    if stamp_file.exists() and stamp_file.read_text().strip() != stamp:
        here = f" (generator.dtype=auto is {dtype} on this machine)" if gcfg.dtype == "auto" else ""
        raise ValueError(f"{out} holds mosaics of another configuration{here}; remove it or use another run folder")
    parts.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    done = {int(p.stem) for p in parts.glob("*.json") if p.stem.isdigit()}
    pending = batches(total, int(gcfg.batch_size), done)
    todo = sum(len(b) for b in pending)
    log.info(
        "MosaicFusion: %d mosaics (%d main categories x %d, N=%s), %d already done, %d to make",
        total,
        len(main),
        scfg.images_per_category,
        OmegaConf.to_container(gcfg, resolve=True)["num_objects"],
        total - todo,
        todo,
    )
    if pending:
        kwargs = trainer_kwargs(cfg)
        kwargs["enable_progress_bar"], shown = progress(kwargs["enable_progress_bar"], "generate")
        trainer = pl.Trainer(
            **kwargs,
            logger=False,
            use_distributed_sampler=False,
            callbacks=[PartWriter(paths, scfg.jpeg_quality), StopOnSigterm(), CtrlCAsStopRequest(), *shown],
        )
        trainer.predict(
            MosaicFusionModule(pipe, generator, main, mixed, int(cfg.seed)),
            datamodule=MosaicIndices(pending),
            return_predictions=False,
        )
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            trainer.strategy.barrier()  # wait for rank 0's merge
            return {}
        summary = merge_parts(paths, total, categories, int(scfg.gallery_size), tracker)
        trainer.strategy.barrier()
    else:
        summary = merge_parts(paths, total, categories, int(scfg.gallery_size), tracker)
    return summary


def merge_parts(paths: RunPaths, total: int, categories: list, gallery_size: int, tracker: Tracker = Tracker()) -> dict:
    """All part files -> the synthetic set's annotations.json and gallery (mfexp.synthetic.write_set); returns its
    counts."""
    images, annotations, reasons = [], [], Counter()
    for i in range(total):
        path = part_path(paths.synthetic_parts, i)
        if not path.exists():
            raise RuntimeError(f"mosaic {i} has no part file in {paths.synthetic_parts}: generation did not finish")
        record = json.loads(path.read_text())
        if record["reason"]:
            reasons[reason_kind(record["reason"])] += 1
        else:
            images.append(record["image"])
            annotations.extend(record["annotations"])
    summary = summarise(total, images, annotations, reasons)
    write_set(paths, "mosaicfusion", summary, images, annotations, categories, gallery_size, tracker)
    return summary
