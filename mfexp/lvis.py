"""The LVIS v1 annotation format: records, RLE masks, reading and validating files, frequency groups, category
selection and image paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

COCO_URL_PREFIX = "http://images.cocodataset.org/"  # LVIS v1 images are found by their coco_url's path
FREQUENCIES = ("r", "c", "f")  # LVIS frequency groups: rare, common, frequent
SYNTHETIC_IMAGE_ID_BASE = 10_000_000  # synthetic image ids live in their own range

_IMAGE_KEYS = ("id", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "segmentation", "area")
_CAT_KEYS = ("id", "name", "frequency")


# ----------------------------------------------------------------------------------------------- masks and records


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode(rle).astype(bool)


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Boolean mask of an LVIS/COCO segmentation: polygons, uncompressed RLE or compressed RLE."""
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width)).astype(bool)
    return decode_rle(segmentation)


def mask_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    rle = encode_rle(mask)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": rle,
        "bbox": [x, y, w, h],
        "area": float(mask_utils.area(rle)),
        "iscrowd": 0,
    }


def image_record(image_id: int, file_name: str, height: int, width: int, split: str = "synthetic") -> dict:
    return {
        "id": int(image_id),
        "file_name": file_name,
        "coco_url": f"{COCO_URL_PREFIX}{split}/{file_name}",
        "height": int(height),
        "width": int(width),
        "neg_category_ids": [],
        "not_exhaustive_category_ids": [],
    }


def lvis_file(images: list, annotations: list, categories: list, **extra) -> dict:
    return {
        "info": extra.pop("info", {}),
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
        **extra,
    }


def image_relpath(img: dict) -> str:
    """The image's path relative to its images folder: ``file_name``, else the ``coco_url`` path."""
    if img.get("file_name"):
        return img["file_name"]
    return img["coco_url"].replace(COCO_URL_PREFIX, "")


# ----------------------------------------------------------------------------------------------- reading files


def read_lvis_json(path: str | os.PathLike, what: str = "annotation file") -> dict:
    """Load an LVIS v1-format file and check its structure; every problem is a one-line ``ValueError``
    (``FileNotFoundError`` for a missing file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
        raise ValueError(
            f"{what} {path} is not in LVIS format: expected a JSON object with lists "
            "'images', 'annotations' and 'categories'"
        )
    for key, fields in (("images", _IMAGE_KEYS), ("annotations", _ANN_KEYS), ("categories", _CAT_KEYS)):
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if f not in item] if isinstance(item, dict) else list(fields)
            if missing:
                raise ValueError(f"{what} {path} is not in LVIS format: {key}[{i}] lacks {missing}")
    for i, img in enumerate(data["images"]):
        if "file_name" not in img and "coco_url" not in img:
            raise ValueError(f"{what} {path} is not in LVIS format: images[{i}] has neither file_name nor coco_url")
        for k in ("neg_category_ids", "not_exhaustive_category_ids"):
            img.setdefault(k, [])
    cat_ids = {c["id"] for c in data["categories"]}
    bad = sorted({a["category_id"] for a in data["annotations"]} - cat_ids)
    if bad:
        raise ValueError(f"{what} {path}: annotations use category ids not in its categories list: {bad[:10]}")
    if not data["categories"]:
        raise ValueError(f"{what} {path} has no categories")
    return data


def check_same_categories(real: dict, synthetic: dict, synthetic_path: str | os.PathLike) -> None:
    """A synthetic set must carry the real train set's category list (same ids), so labels agree."""
    real_ids = {c["id"] for c in real["categories"]}
    syn_ids = {c["id"] for c in synthetic["categories"]}
    if syn_ids != real_ids:
        raise ValueError(
            f"synthetic annotations {synthetic_path}: category ids differ from the real train set "
            f"({len(syn_ids)} vs {len(real_ids)} ids; not in the real set: "
            f"{sorted(syn_ids - real_ids)[:10]}, missing: {sorted(real_ids - syn_ids)[:10]})"
        )


def load_categories(path: str | Path) -> list[dict]:
    """The `categories` of an LVIS-format annotation or category file, checked for the fields we use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"category file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"category file {path} is not valid JSON: {e}") from None
    cats = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(cats, list) or not cats:
        raise ValueError(f"{path} has no LVIS 'categories' list")
    for c in cats:
        missing = {"id", "name", "frequency"} - set(c)
        if missing:
            raise ValueError(f"{path}: category {c.get('name', c.get('id'))!r} lacks {sorted(missing)}")
        if c["frequency"] not in FREQUENCIES:
            raise ValueError(f"{path}: category {c['name']!r} has frequency {c['frequency']!r}, not one of r, c, f")
    return cats


# ----------------------------------------------------------------------------------------------- frequency groups


def lvis_frequency(image_count: int) -> str:
    """LVIS frequency group from a training image count: r (<= 10, incl. 0), c (11-100), f (> 100)."""
    if image_count <= 10:
        return "r"
    if image_count <= 100:
        return "c"
    return "f"


def select_categories(categories: list[dict], groups, what: str) -> list[dict]:
    """Categories of the given LVIS frequency groups, by id; `what` names the config key in errors."""
    groups = list(groups)
    bad = [g for g in groups if g not in FREQUENCIES]
    if bad:
        raise ValueError(f"{what}: unknown frequency group(s) {bad}; choose from r, c, f")
    chosen = [c for c in categories if c.get("frequency") in groups]
    if not chosen:
        raise ValueError(f"{what}={groups} selects no category")
    return sorted(chosen, key=lambda c: c["id"])
