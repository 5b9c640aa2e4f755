"""The real dataset of an experiment: `prepare_dataset(cfg.dataset)` calls the dataset's `_target_` (a function of
mfexp.datasets), then applies the novel-category protocol (`dataset.novel`).

Protocols (which categories count as *novel*: ``AP_novel`` is the mask AP over them):
- ``held_out``: categories without training annotations (the toy world's held-out ones; a file's own
  ``novel_category_ids`` list wins). The training file is used as it is.
- ``rare``: the LVIS open-vocabulary protocol: the rare categories' annotations (``frequency: r``) are removed from
  the real training set (its images stay), val keeps them, and the novel categories are those the training set no
  longer has (rare + any held out). The derived training file is written once under
  ``<cache_dir>/open_vocabulary/<source key>/`` and listed by ``novel_category_ids``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mfexp.targets import locate

SPLIT_KEYS = ("train_json", "train_images", "val_json", "val_images")
NOVEL_PROTOCOLS = ("held_out", "rare")


def prepare_dataset(dataset_cfg) -> dict:
    """Paths of the LVIS-format train/val annotation files and image folders (building the dataset if needed);
    under ``dataset.novel=rare`` the training file is the one without the rare categories' annotations."""
    protocol = novel_protocol(dataset_cfg)
    target = dataset_cfg.get("_target_")
    if not target:
        raise ValueError("dataset config has no '_target_' (the function that prepares it)")
    paths = locate(target, "dataset._target_")(dataset_cfg)
    missing = [k for k in SPLIT_KEYS if k not in paths]
    if missing:
        raise ValueError(f"dataset {dataset_cfg.get('name')!r}: {target}() returned no {missing}")
    if protocol == "rare":
        cache_dir = dataset_cfg.get("cache_dir") or os.path.join(os.path.expanduser("~"), ".cache", "mfexp")
        paths = dict(paths, train_json=str(without_rare_annotations(paths["train_json"], cache_dir)))
    return paths


def novel_protocol(dataset_cfg) -> str:
    """``dataset.novel``: held_out (default) | rare."""
    protocol = dataset_cfg.get("novel") or "held_out"
    if protocol not in NOVEL_PROTOCOLS:
        raise ValueError(f"dataset.novel={protocol!r}: choose one of {', '.join(NOVEL_PROTOCOLS)}")
    return str(protocol)


def without_rare_annotations(train_json: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The training file of the open-vocabulary protocol: ``train_json`` without the annotations of its rare
    categories, with ``novel_category_ids`` = the categories left without annotations. Written once (atomically)
    per source file (path, size and modification time) under ``<cache_dir>/open_vocabulary/``; returns its path."""
    from mfexp.fileio import atomic_write_json

    source = Path(train_json).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"train annotations not found: {source}")
    stat = source.stat()
    key = hashlib.sha1(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|v1".encode()).hexdigest()[:16]
    out = Path(str(cache_dir)).expanduser() / "open_vocabulary" / key / f"{source.stem}_without_rare.json"
    if out.is_file():
        return out
    with open(source) as f:
        data = json.load(f)
    rare = {c["id"] for c in data.get("categories", []) if c.get("frequency") == "r"}
    if not rare:
        raise ValueError(f"dataset.novel=rare: {source} has no rare categories (frequency 'r')")
    kept = [a for a in data["annotations"] if a["category_id"] not in rare]
    left = {a["category_id"] for a in kept}
    data["info"] = dict(
        data.get("info") or {},
        mfexp_novel_protocol=dict(
            novel="rare", source=str(source), removed_annotations=len(data["annotations"]) - len(kept)
        ),
    )
    data["annotations"] = kept
    data["novel_category_ids"] = sorted(c["id"] for c in data["categories"] if c["id"] not in left)
    atomic_write_json(out, data)
    return out
