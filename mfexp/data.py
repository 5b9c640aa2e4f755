"""The real dataset of an experiment: `prepare_dataset(cfg.dataset)` calls the dataset's `prepare` function."""
from __future__ import annotations

import importlib

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
