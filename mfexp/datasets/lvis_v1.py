"""LVIS v1 with COCO 2017 images: locate and check the files (the ``_target_`` of ``dataset=lvis_v1``)."""

from __future__ import annotations

from pathlib import Path


def lvis_paths(dataset_cfg) -> dict:
    """``dict(train_json, train_images, val_json, val_images)`` from the ``lvis_v1`` dataset config, after checking
    that they exist (a ``FileNotFoundError`` naming the missing file and where to get it otherwise)."""
    files = {
        k: str(Path(str(dataset_cfg[k])).expanduser()) for k in ("train_json", "train_images", "val_json", "val_images")
    }
    for key, path in files.items():
        ok = Path(path).is_file() if key.endswith("json") else Path(path).is_dir()
        if not ok:
            raise FileNotFoundError(
                f"LVIS v1 {key} not found: {path} (LVIS v1 annotations: https://www.lvisdataset.org/dataset, "
                "COCO 2017 images: https://cocodataset.org/#download; paths are set in conf/dataset/lvis_v1.yaml)"
            )
    return files
