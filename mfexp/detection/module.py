"""Lightning wrapper around an MMDetection detector: the model, its optimizer/LR schedule and its data loaders all
come from the MMDetection config; Lightning supplies the loop, devices (DDP), precision and checkpoints."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from mmdet.registry import MODELS
from mmdet.structures.mask import encode_mask_results
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner import Runner

register_all_modules()
from mfexp.detection import datasets as _datasets  # noqa: E402,F401  (registers our dataset pieces)
from mfexp.fileio import atomic_path  # noqa: E402


class DetectorModule(pl.LightningModule):
    """Mask R-CNN (or any MMDetection detector) as a LightningModule.

    Args:
        mm_cfg: the resolved MMDetection config (``mmdet_config.detector_config``).
        meta: identifies the detector in checkpoints: ``detector`` (group name), ``category_ids`` (label order).
        seed: sampler seed (the same on every rank; each rank takes its own shard).
        init_weights: run the model's initialisation (ImageNet backbone if configured); off when a checkpoint
            will be loaded anyway.
    """

    def __init__(self, mm_cfg: Config, meta: dict, seed: int = 0, init_weights: bool = True):
        super().__init__()
        self.mm_cfg, self.meta, self.seed = mm_cfg, dict(meta), seed
        self.model = MODELS.build(mm_cfg.model)
        if init_weights:
            self._init_weights()

    def _init_weights(self):
        mm_logger = MMLogger.get_current_instance()
        level = mm_logger.level
        mm_logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
        try:
            self.model.init_weights()
        finally:
            mm_logger.setLevel(level)
        weights = self.mm_cfg.get("mfexp_backbone_weights")
        if weights:
            load_backbone(self.model.backbone, weights)

    # ---------------------------------------------------------------------------------------------------- data
    def train_dataloader(self):
        # built here, after the process group exists: mmengine's DefaultSampler shards by rank and reshuffles each
        # epoch (Lightning calls set_epoch on EpochAspectRatioBatchSampler); ClassBalancedDataset repeats images
        return Runner.build_dataloader(self.mm_cfg.train_dataloader, seed=self.seed)

    def predict_dataloader(self):
        return Runner.build_dataloader(self.mm_cfg.test_dataloader, seed=self.seed)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # the data_preprocessor moves (and normalises, pads) the batch

    def on_fit_start(self):
        self.model.to(self.device)  # mmengine's .to() also tells the data_preprocessor where batches go

    def on_predict_start(self):
        self.model.to(self.device)

    # -------------------------------------------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        data = self.model.data_preprocessor(batch, True)
        losses = self.model(**data, mode="loss")
        loss, log_vars = self.model.parse_losses(losses)
        self.log_dict(
            {f"train/{k}": torch.as_tensor(v).detach() for k, v in log_vars.items()},
            prog_bar=False,
            batch_size=len(batch["inputs"]),
        )
        self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch["inputs"]))
        return loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """Per image ``dict(image_id, dets)``, ``dets`` in LVIS results format (bbox xywh, RLE segmentation)."""
        data = self.model.data_preprocessor(batch, False)
        samples = self.model(**data, mode="predict")
        cat_ids = self.meta["category_ids"]
        out = []
        for s in samples:
            p = s.pred_instances
            boxes = p.bboxes.float().cpu().numpy()
            masks = encode_mask_results(p.masks.cpu().numpy()) if "masks" in p else [None] * len(boxes)
            dets = []
            for box, score, label, rle in zip(boxes, p.scores.float().cpu().tolist(), p.labels.cpu().tolist(), masks):
                x1, y1, x2, y2 = (float(v) for v in box)
                d = dict(
                    image_id=int(s.img_id),
                    category_id=int(cat_ids[label]),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    score=float(score),
                )
                if rle is not None:
                    d["segmentation"] = dict(size=list(rle["size"]), counts=rle["counts"].decode())
                dets.append(d)
            out.append(dict(image_id=int(s.img_id), dets=dets))
        return out

    # ------------------------------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        optimizer = build_optim_wrapper(self.model, self.mm_cfg.optim_wrapper).optimizer
        schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in self.mm_cfg.param_scheduler]
        return [optimizer], [dict(scheduler=s, interval="step") for s in schedulers]

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step()  # mmengine schedulers (iteration-based), stepped after every optimizer step

    # ----------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        checkpoint["mfexp"] = dict(self.meta)
        checkpoint["mmdet_config"] = self.mm_cfg.pretty_text


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file, then renamed: a job killed mid-write keeps its last.ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def load_backbone(backbone: torch.nn.Module, path: str) -> None:
    """Backbone weights from a safetensors file (e.g. the toy world's pretrained ResNet); every key must fit."""
    from safetensors.torch import load_file

    state = load_file(path)
    own = backbone.state_dict()
    bad = sorted(set(own) ^ set(state)) + sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if bad:
        raise ValueError(
            f"backbone weights {path} do not fit this backbone ({len(bad)} keys differ, e.g. {bad[:3]}); "
            "were they trained for another detector.overrides.model.backbone?"
        )
    backbone.load_state_dict(state)


def load_weights(module: DetectorModule, path: str) -> dict:
    """Load a checkpoint's weights into ``module``; a checkpoint of another detector is a one-line ``ValueError``.

    Accepts Lightning checkpoints written by training (``state_dict`` keys ``model.*``, ``mfexp`` metadata) and
    plain MMDetection checkpoints (``state_dict`` of the detector itself).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get("mfexp") if isinstance(ckpt, dict) else None
    want = module.meta
    if meta is not None and (meta.get("detector"), meta.get("category_ids")) != (
        want["detector"],
        want["category_ids"],
    ):
        raise ValueError(
            f"checkpoint {path} is from detector {meta.get('detector')!r} with "
            f"{len(meta.get('category_ids', []))} categories; this run uses {want['detector']!r} with "
            f"{len(want['category_ids'])} categories"
        )
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    own = module.model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        raise ValueError(
            f"checkpoint {path} does not fit detector {want['detector']!r}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shape)} mis-shaped weights (e.g. "
            f"{(missing + unexpected + shape)[:3]})"
        )
    module.model.load_state_dict(state)
    return meta or {}
