"""The resolved MMDetection config of a run: the detector group's base config + dotted overrides + the run's data.

Rules (so a Hydra detector file only states differences):
- ``base`` is ``mmdet::<path under mmdet's configs>`` or a file path; ``overrides`` is a mapping of dotted keys
  (or nested mappings) merged with mmengine's ``Config.merge_from_dict`` (``a.0.b`` indexes lists).
- The class count, datasets, batch size and iteration count always come from the run (data files, ``batch_size``
  as the *total* over devices, ``max_iters``); ``pretrained`` sets the backbone's ``init_cfg``.
- LR schedules given in epochs are mapped onto ``max_iters`` (one epoch = ``max_iters / train_cfg.max_epochs``
  iterations), the way mmengine's ``build_iter_from_epoch`` converts them.
- mmdet's ``AspectRatioBatchSampler`` becomes ``EpochAspectRatioBatchSampler`` (safe in Lightning's epoch loop).
- YAML has no tuples: ``scale``/``scales`` in pipelines are turned back into tuples.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmengine.config import Config, ConfigDict
from omegaconf import DictConfig, OmegaConf


def base_config_path(base: str) -> str:
    """``mmdet::lvis/x.py`` -> the file inside the installed mmdet package (no mim install attempted)."""
    if base.startswith("mmdet::"):
        import mmdet

        path = Path(mmdet.__file__).parent / ".mim" / "configs" / base.split("::", 1)[1]
    else:
        path = Path(base)
    if not path.is_file():
        raise FileNotFoundError(f"MMDetection base config not found: {base} ({path})")
    return str(path)


def _tuples(pipeline: list) -> list:
    for t in pipeline:
        if isinstance(t.get("scale"), list):
            t["scale"] = tuple(t["scale"])
        if isinstance(t.get("scales"), list):
            t["scales"] = [tuple(s) if isinstance(s, list) else s for s in t["scales"]]
    return pipeline


def _iteration_schedules(schedulers: list, max_iters: int, max_epochs: int | None) -> list:
    out = []
    for s in schedulers:
        s = ConfigDict(s)
        if s.get("by_epoch", True):
            if not max_epochs:
                raise ValueError(f"param_scheduler {s.type} is epoch-based but train_cfg has no max_epochs")
            epoch = max_iters / max_epochs
            s.begin = round(s.get("begin", 0) * epoch)
            s.end = round(min(s.get("end", max_epochs), max_epochs) * epoch)
            if "milestones" in s:
                s.milestones = [round(m * epoch) for m in s.milestones]
            s.by_epoch = False
        out.append(s)
    return out


def detector_config(det: DictConfig, files: dict, classes: tuple[str, ...], synthetic: dict | None = None,
                    world_size: int = 1) -> Config:
    """Build the run's MMDetection config.

    Args:
        det: the ``detector`` config group.
        files: ``train_json, train_images, val_json, val_images`` (as from ``mfexp.data.prepare_dataset``).
        classes: class names in label order (sorted category ids).
        synthetic: ``dict(json=..., images=...)`` of a synthetic set to merge into training, or None.
        world_size: number of training processes (the total batch size is split over them).
    """
    cfg = Config.fromfile(base_config_path(det.base))
    overrides = OmegaConf.to_container(det.get("overrides") or {}, resolve=True)
    for key, value in overrides.items():  # one at a time: a nested mapping merges into, not replaces, earlier keys
        cfg.merge_from_dict({key: value})

    num_classes = len(classes)
    cfg.model.roi_head.bbox_head.num_classes = num_classes
    cfg.model.roi_head.mask_head.num_classes = num_classes
    pretrained = det.get("pretrained")
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=pretrained) if pretrained else None

    max_epochs = cfg.get("train_cfg", {}).get("max_epochs")
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=int(det.max_iters), val_interval=int(det.max_iters))
    cfg.param_scheduler = _iteration_schedules(cfg.param_scheduler, int(det.max_iters), max_epochs)
    _tuples(cfg.train_pipeline)
    _tuples(cfg.test_pipeline)

    if det.batch_size % world_size:
        raise ValueError(f"detector.batch_size={det.batch_size} (total) is not divisible by {world_size} processes")
    metainfo = dict(classes=classes)

    def lvis(ann_file, images, pipeline, **kw):
        return dict(type="MfexpLVISDataset", data_root="", ann_file=os.path.abspath(ann_file),
                    data_prefix=dict(img=os.path.abspath(images) + os.sep), metainfo=metainfo, pipeline=pipeline, **kw)

    loader = cfg.train_dataloader
    if loader.dataset.get("type") != "ClassBalancedDataset":
        raise ValueError(f"{det.base}: expected an LVIS train set wrapped in ClassBalancedDataset (repeat-factor "
                         f"sampling), got {loader.dataset.get('type')}")
    real = lvis(files["train_json"], files["train_images"], cfg.train_pipeline,
                filter_cfg=loader.dataset.dataset.get("filter_cfg"))
    if synthetic:
        syn = lvis(synthetic["json"], synthetic["images"], cfg.train_pipeline,
                   filter_cfg=loader.dataset.dataset.get("filter_cfg"))
        repeat = int(det.get("synthetic_repeat", 1))
        loader.dataset.dataset = dict(type="ConcatLVISDataset", datasets=[real] + [syn] * repeat)
    else:
        loader.dataset.dataset = real
    if loader.get("batch_sampler", {}).get("type") == "AspectRatioBatchSampler":
        loader.batch_sampler.type = "EpochAspectRatioBatchSampler"  # its epoch-safe version (datasets.py)
    workers = int(det.get("num_workers", 0))
    loader.update(batch_size=det.batch_size // world_size, num_workers=workers, persistent_workers=workers > 0)

    for name in ("val_dataloader", "test_dataloader"):
        cfg[name].update(dataset=lvis(files["val_json"], files["val_images"], cfg.test_pipeline, test_mode=True),
                         batch_size=int(det.get("eval_batch_size", 1)), num_workers=workers,
                         persistent_workers=workers > 0)
    for name in ("val_evaluator", "test_evaluator"):
        cfg[name].ann_file = os.path.abspath(files["val_json"])
    cfg.randomness = dict(seed=None)  # seeds come from the run (cfg.seed)
    return cfg
