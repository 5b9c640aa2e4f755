"""The resolved MMDetection config of a run: the detector group's base config + dotted overrides + the run's data.

Rules (so a Hydra detector file only states differences):
- ``base`` is ``mmdet::<path under mmdet's configs>`` or a file path; ``overrides`` is a mapping of dotted keys
  (or nested mappings) merged with mmengine's ``Config.merge_from_dict`` (``a.0.b`` indexes lists).
- The class count, datasets, batch size and iteration count always come from the run (data files, ``batch_size``
  as the *total* over devices, ``max_iters``); ``pretrained`` sets the backbone's ``init_cfg``
  (a ``.safetensors`` file of backbone weights is loaded by
  ``DetectorModule`` instead, every key checked).
- The run's length is ``epochs`` or ``max_iters`` (exactly one of them set; Lightning drives the loop with
  ``max_steps``, so the config always holds an ``IterBasedTrainLoop``). ``epochs`` counts passes over the
  repeat-factor-expanded training set (``len(ClassBalancedDataset)``, real + synthetic, as mmengine's
  ``EpochBasedTrainLoop`` counts them): ``max_iters = epochs x ceil(len / batch_size)``, so the run grows with the
  synthetic set. LR schedules given in epochs are mapped onto iterations (one epoch = ``max_iters / epochs``, or
  ``max_iters / train_cfg.max_epochs`` of the base config when the run is given in iterations), the way mmengine's
  ``build_iter_from_epoch`` converts them.
- mmdet's ``AspectRatioBatchSampler`` becomes ``EpochAspectRatioBatchSampler`` (safe in Lightning's epoch loop).
- Copy-Paste (``copy_paste`` options, from ``augmenter.copy_paste``) is built as mmdet's simple-copy-paste configs
  build it: the datasets load with large-scale jitter (``RandomResize`` by ``ratio_range`` of the canvas,
  ``RandomCrop`` and ``Pad`` to it) in place of the detector's resize step, and ``MultiImageMixDataset`` around the
  repeat-factor wrapper applies ``CopyPaste`` (``MfexpCopyPaste``) and packs.
- YAML has no tuples: ``scale``/``scales`` in pipelines are turned back into tuples.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from mmengine.config import Config, ConfigDict
from omegaconf import DictConfig, OmegaConf

from mfexp.augmenters.copy_paste import copy_paste_pipelines
from mfexp.config import TRAIN_DATA


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
            end = s.get("end") if s.get("end") is not None else max_epochs  # null end: the whole run
            s.end = round(min(end, max_epochs) * epoch)
            if "milestones" in s:
                s.milestones = [round(m * epoch) for m in s.milestones]
            s.by_epoch = False
        out.append(s)
    return out


def run_length(det: DictConfig, train_size: int | None = None) -> tuple[int, int | None]:
    """``(iterations, epochs)`` of the run: ``detector.max_iters`` iterations (epochs None), or ``detector.epochs``
    passes over ``train_size`` samples (the repeat-factor-expanded training set) in batches of
    ``detector.batch_size`` (the total over devices; mmengine's samplers give every rank
    ``ceil(ceil(len / world) / (batch / world)) = ceil(len / batch)`` batches per epoch)."""
    epochs, max_iters = det.get("epochs"), det.get("max_iters")
    if (epochs is None) == (max_iters is None):
        raise ValueError(
            f"detector.epochs={epochs} and detector.max_iters={max_iters}: set exactly one, the other "
            "null (e.g. detector.epochs=null detector.max_iters=1000)"
        )
    if epochs is None:
        if int(max_iters) < 1:
            raise ValueError(f"detector.max_iters={max_iters} must be >= 1")
        return int(max_iters), None
    if int(epochs) < 1:
        raise ValueError(f"detector.epochs={epochs} must be >= 1")
    if train_size is None:
        raise ValueError("detector.epochs needs the training set's size (train_size)")
    if train_size < 1:
        raise ValueError("the training set is empty (no image with annotations): nothing to train on")
    return int(epochs) * math.ceil(train_size / int(det.batch_size)), int(epochs)


def train_set_size(dataset_cfg) -> int:
    """Length of the training set an MMDetection ``train_dataloader.dataset`` config describes (with repeat-factor
    sampling: the expanded length, ``len(ClassBalancedDataset)``), by building it: annotations are read, images
    are not."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    from mfexp.detection import datasets as _datasets  # noqa: F401  (registers MfexpLVISDataset & co.)

    register_all_modules()  # sets mmdet as the default scope, as mfexp.detection.module does
    node = ConfigDict(dataset_cfg)
    while node.get("type") == "MultiImageMixDataset":  # mixing wrappers keep the length of what they wrap
        node = ConfigDict(node.dataset)
    return len(DATASETS.build(node))


def train_datasets(train_data: str, real: dict, synthetic: dict | None, synthetic_repeat: int = 1) -> list[dict]:
    """The dataset configs the detector trains on, by ``train_data`` (real | synthetic | both)."""
    if train_data not in TRAIN_DATA:
        raise ValueError(f"train_data={train_data!r}: choose one of {', '.join(TRAIN_DATA)}")
    if train_data == "synthetic" and synthetic is None:
        raise ValueError(
            "train_data=synthetic, but this run has no synthetic set (run the generate stage with an "
            "augmenter that makes one, e.g. augmenter=mosaicfusion, or set generate.reuse=RUN_FOLDER)"
        )
    if synthetic_repeat < 1 and train_data == "synthetic":
        raise ValueError(f"train_data=synthetic needs detector.synthetic_repeat >= 1, got {synthetic_repeat}")
    real_part = [real] if train_data in ("real", "both") else []
    syn_part = [synthetic] * synthetic_repeat if synthetic is not None and train_data != "real" else []
    return real_part + syn_part


def detector_config(
    det: DictConfig,
    files: dict,
    classes: tuple[str, ...],
    synthetic: dict | None = None,
    world_size: int = 1,
    *,
    train_data: str = "both",
    copy_paste: dict | None = None,
    train_size: int | None = None,
    training: bool = True,
) -> Config:
    """Build the run's MMDetection config.

    Args:
        det: the ``detector`` config group.
        files: ``train_json, train_images, val_json, val_images`` (as from ``mfexp.data.prepare_dataset``).
        classes: class names in label order (sorted category ids).
        synthetic: ``dict(json=..., images=...)`` of a synthetic set to merge into training, or None.
        world_size: number of training processes (the total batch size is split over them).
        train_data: what the detector trains on (``TRAIN_DATA``): ``real``, ``synthetic`` (needs ``synthetic``) or
            ``both`` (real + ``synthetic_repeat`` x synthetic; real only when there is no synthetic set).
        copy_paste: Copy-Paste options (``augmenter.copy_paste``: ``image_size, ratio_range, max_num_pasted,
            bbox_occluded_thr, mask_occluded_thr, selected``), or None for none (``copy_paste_pipelines``).
        train_size: with ``detector.epochs``, the repeat-factor-expanded training set's length if known; None
            builds the training set once to measure it (``train_set_size``).
        training: False for evaluation: the config has no training parts (``train_dataloader``, ``train_cfg``,
            ``param_scheduler``, ``optim_wrapper``), so nothing about the training data is read or checked.
    """
    cfg = Config.fromfile(base_config_path(det.base))
    overrides = OmegaConf.to_container(det.overrides, resolve=True)
    for key, value in overrides.items():  # one at a time: a nested mapping merges into, not replaces, earlier keys
        cfg.merge_from_dict({key: value})

    num_classes = len(classes)
    cfg.model.roi_head.bbox_head.num_classes = num_classes
    cfg.model.roi_head.mask_head.num_classes = num_classes
    pretrained = det.pretrained
    cfg.model.backbone.init_cfg = None
    if pretrained and str(pretrained).endswith(".safetensors"):
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"detector.pretrained={pretrained}: no such backbone weights file")
        cfg.mfexp_backbone_weights = os.path.abspath(pretrained)  # loaded by DetectorModule, strictly
    elif pretrained:
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=pretrained)

    _tuples(cfg.train_pipeline)
    _tuples(cfg.test_pipeline)

    if det.batch_size % world_size:
        raise ValueError(f"detector.batch_size={det.batch_size} (total) is not divisible by {world_size} processes")
    metainfo = dict(classes=classes)

    def lvis(ann_file, images, pipeline, **kw):
        return dict(
            type="MfexpLVISDataset",
            data_root="",
            ann_file=os.path.abspath(ann_file),
            data_prefix=dict(img=os.path.abspath(images) + os.sep),
            metainfo=metainfo,
            pipeline=pipeline,
            **kw,
        )

    workers = int(det.num_workers)
    if training:
        loader = cfg.train_dataloader
        if loader.dataset.get("type") != "ClassBalancedDataset":
            raise ValueError(
                f"{det.base}: expected an LVIS train set wrapped in ClassBalancedDataset (repeat-factor "
                f"sampling), got {loader.dataset.get('type')}"
            )
        filter_cfg = loader.dataset.dataset.get("filter_cfg")
        pipeline, mix = cfg.train_pipeline, None
        if copy_paste:
            pipeline, mix, cfg.mfexp_copy_paste = copy_paste_pipelines(cfg.train_pipeline, copy_paste)
        real = lvis(files["train_json"], files["train_images"], pipeline, filter_cfg=filter_cfg)
        syn = lvis(synthetic["json"], synthetic["images"], pipeline, filter_cfg=filter_cfg) if synthetic else None
        parts = train_datasets(train_data, real, syn, int(det.synthetic_repeat))
        loader.dataset.dataset = parts[0] if len(parts) == 1 else dict(type="ConcatLVISDataset", datasets=parts)
        if mix:  # CopyPaste draws its source from the repeat-factor-expanded set
            loader.dataset = dict(type="MultiImageMixDataset", dataset=loader.dataset, pipeline=mix)
        if loader.get("batch_sampler", {}).get("type") == "AspectRatioBatchSampler":
            loader.batch_sampler.type = "EpochAspectRatioBatchSampler"  # its epoch-safe version (datasets.py)
        loader.update(batch_size=det.batch_size // world_size, num_workers=workers, persistent_workers=workers > 0)
        _set_schedule(cfg, det, train_size)
    else:
        for key in ("train_dataloader", "train_cfg", "param_scheduler", "optim_wrapper"):
            cfg.pop(key, None)

    for name in ("val_dataloader", "test_dataloader"):
        cfg[name].update(
            dataset=lvis(files["val_json"], files["val_images"], cfg.test_pipeline, test_mode=True),
            batch_size=int(det.eval_batch_size),
            num_workers=workers,
            persistent_workers=workers > 0,
        )
    for name in ("val_evaluator", "test_evaluator"):
        cfg[name].ann_file = os.path.abspath(files["val_json"])
    cfg.randomness = dict(seed=None)  # seeds come from the run (cfg.seed)
    return cfg


def _set_schedule(cfg: Config, det: DictConfig, train_size: int | None) -> None:
    """The run's length in iterations (``train_cfg``) and its LR schedule mapped onto iterations; with
    ``detector.epochs`` also ``mfexp_schedule`` (epochs, iterations per epoch, expanded training set size)."""
    base_epochs = cfg.get("train_cfg", {}).get("max_epochs")
    if det.get("epochs") is not None and train_size is None:
        train_size = train_set_size(cfg.train_dataloader.dataset)
    max_iters, epochs = run_length(det, train_size)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = _iteration_schedules(cfg.param_scheduler, max_iters, epochs or base_epochs)
    if epochs:
        cfg.mfexp_schedule = dict(epochs=epochs, iterations_per_epoch=max_iters // epochs, train_size=train_size)
