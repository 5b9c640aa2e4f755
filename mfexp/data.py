"""The real dataset of an experiment: `prepare_dataset(cfg.dataset)` calls the dataset's `prepare` function."""
from __future__ import annotations

import hashlib
import importlib
import json

from omegaconf import DictConfig, ListConfig, OmegaConf

SPLIT_KEYS = ("train_json", "train_images", "val_json", "val_images")


def import_object(dotted: str):
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {dotted!r}: {e}") from None


def prepare_dataset(dataset_cfg) -> dict:
    """Paths of the LVIS-format train/val annotation files and image folders (building the dataset if needed)."""
    prepare = dataset_cfg.get("prepare")
    if not prepare:
        raise ValueError("dataset config has no 'prepare' function")
    paths = import_object(prepare)(dataset_cfg)
    missing = [k for k in SPLIT_KEYS if k not in paths]
    if missing:
        raise ValueError(f"dataset {dataset_cfg.get('name')!r}: prepare() returned no {missing}")
    return paths


def config_hash(cfg, keys) -> str:
    """Short hash of the resolved config under `keys` (missing keys count as null)."""
    picked = {}
    for k in keys:
        v = OmegaConf.select(cfg, k)
        picked[k] = OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]
