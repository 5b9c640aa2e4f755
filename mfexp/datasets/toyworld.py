"""``dataset=toyworld``: a procedural, long-tailed LVIS v1 benchmark of coloured shapes.

``prepare_toyworld(cfg)`` writes (once per config hash, atomically) under ``<cache_dir>/toyworld/<hash>/``::

    annotations/lvis_v1_train.json   annotations/lvis_v1_val.json
    train/<image_id:012d>.png        val/<image_id:012d>.png

LVIS v1 layout: each image has ``coco_url = http://images.cocodataset.org/<split>/<file_name>`` (so MMDetection's
``LVISV1Dataset`` finds it relative to ``root``) and ``file_name`` relative to the split's folder; annotations carry
exact RLE masks (compressed, ``counts`` as str) of each instance's *visible* part. The training split is long-tailed
(Zipf over a random ranking of the base categories); LVIS frequency groups come from the actual training image
counts (rare 1-10, common 11-100, frequent >100). ``novel`` categories never occur in train and do occur in val; they
are listed in the top-level key ``novel_category_ids`` of both files (``frequency: r``, ``image_count: 0``).
Categories carry the training counts in both files, as in LVIS.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfexp.lvis import COCO_URL_PREFIX, lvis_frequency, mask_annotation
from mfexp.toyworld.world import build_categories, render_background, render_object, shape_mask, split_name

DATASET_VERSION = 1  # bump when the generator's output changes for the same parameters

# the world's parameters: the keys of conf/dataset/toyworld.yaml (their values and meaning are there, only there)
PARAMS = (
    "seed",
    "num_train_images",
    "num_val_images",
    "image_size",
    "colours",
    "shapes",
    "num_novel",
    "zipf_exponent",
    "min_instances",
    "max_instances",
    "object_scale",
    "min_visible_area",
    "min_visible_fraction",
    "num_neg_categories",
    "image_format",
)

VAL_IMAGE_ID_OFFSET = 1_000_000
VAL_ANN_ID_OFFSET = 10_000_000


# ----------------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------------
def _params(cfg: Mapping) -> dict[str, Any]:
    """The world's parameters (PARAMS) from the ``dataset`` node (other keys such as name/_target_/cache_dir
    ignored); a ValueError names any missing one."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(raw, dict)
    missing = [k for k in PARAMS if k not in raw]
    if missing:
        raise ValueError(f"dataset=toyworld: no {', '.join(missing)} (conf/dataset/toyworld.yaml names them all)")
    p = {k: raw[k] for k in PARAMS}
    for k in ("colours", "shapes", "object_scale"):
        if p[k] is not None:
            p[k] = list(p[k])
    _validate(p)
    return p


def _validate(p: dict[str, Any]) -> None:
    cats = build_categories(p["colours"], p["shapes"])  # raises on unknown colours/shapes
    k = len(cats)
    if int(p["num_train_images"]) < 1 or int(p["num_val_images"]) < 1:
        raise ValueError(
            f"toyworld needs at least one train and one val image, got num_train_images={p['num_train_images']}, "
            f"num_val_images={p['num_val_images']}"
        )
    if int(p["num_novel"]) < 0 or int(p["num_novel"]) >= k:
        raise ValueError(f"toyworld num_novel={p['num_novel']} must be in [0, {k - 1}] for {k} categories")
    if not 1 <= int(p["min_instances"]) <= int(p["max_instances"]):
        raise ValueError(
            f"toyworld needs 1 <= min_instances <= max_instances, got {p['min_instances']}, {p['max_instances']}"
        )
    if int(p["image_size"]) < 16:
        raise ValueError(f"toyworld image_size must be >= 16 pixels, got {p['image_size']}")
    lo, hi = (float(x) for x in p["object_scale"])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"toyworld object_scale must satisfy 0 < min <= max <= 1, got {p['object_scale']}")
    if lo * int(p["image_size"]) < 6:
        raise ValueError(
            f"toyworld objects would be under 6 pixels: object_scale[0] * image_size = {lo * int(p['image_size'])}"
        )
    base = k - int(p["num_novel"])
    if base > int(p["num_train_images"]) * int(p["max_instances"]):
        raise ValueError(
            f"toyworld: {base} base categories cannot all appear in {p['num_train_images']} train images "
            f"with at most {p['max_instances']} instances each"
        )
    if k > int(p["num_val_images"]) * int(p["max_instances"]):
        raise ValueError(
            f"toyworld: {k} categories cannot all appear in {p['num_val_images']} val images "
            f"with at most {p['max_instances']} instances each"
        )
    if p["image_format"] not in ("png", "jpg"):
        raise ValueError(f"toyworld image_format must be png or jpg, got {p['image_format']!r}")


def folder_key(params: Mapping[str, Any]) -> str:
    """The name of the folder that holds the toy world of `params` (and of DATASET_VERSION)."""
    blob = json.dumps({"version": DATASET_VERSION, **params}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------------------------
# layout (pure): which objects where, which parts are visible
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Obj:
    cat: int  # 0-based category index
    size: int
    rotation: float
    top: int
    left: int
    visible: np.ndarray | None = field(default=None, repr=False)


def _new_obj(cat: int, p: dict, rng: np.random.Generator) -> _Obj:
    S = int(p["image_size"])
    lo, hi = p["object_scale"]
    size = max(4, int(round(rng.uniform(lo, hi) * S)))
    slack = int(0.2 * size)  # up to 20 % of the object may leave the frame
    top = int(rng.integers(-slack, S - size + slack + 1))
    left = int(rng.integers(-slack, S - size + slack + 1))
    return _Obj(cat, size, float(rng.uniform(0, 360)), top, left)


def _full_mask(o: _Obj, cat_shapes: list[str], S: int) -> np.ndarray:
    m = shape_mask(cat_shapes[o.cat], o.size, o.rotation)
    full = np.zeros((S, S), dtype=bool)
    y0, x0 = max(o.top, 0), max(o.left, 0)
    y1, x1 = min(o.top + o.size, S), min(o.left + o.size, S)
    if y1 > y0 and x1 > x0:
        full[y0:y1, x0:x1] = m[y0 - o.top : y1 - o.top, x0 - o.left : x1 - o.left]
    return full


def _resolve_occlusion(objs: list[_Obj], cat_shapes: list[str], p: dict) -> list[_Obj]:
    """Paint order = list order; keep objects whose visible part is large enough (dropped ones are not drawn)."""
    S = int(p["image_size"])
    covered = np.zeros((S, S), dtype=bool)
    kept = []
    for o in reversed(objs):  # top-most first
        full = _full_mask(o, cat_shapes, S)
        vis = full & ~covered
        area = int(vis.sum())
        if area >= int(p["min_visible_area"]) and area >= float(p["min_visible_fraction"]) * max(int(full.sum()), 1):
            o.visible = vis
            kept.append(o)
            covered |= full
    return kept[::-1]


def _layout_split(
    n_images: int, probs: np.ndarray, must_have: np.ndarray, cat_shapes: list[str], p: dict, rng: np.random.Generator
) -> list[list[_Obj]]:
    """Sample each image's objects from ``probs``; then make sure every category in ``must_have`` occurs."""
    k = len(probs)
    images: list[list[_Obj]] = []
    for _ in range(n_images):
        objs: list[_Obj] = []
        while not objs:
            n = int(rng.integers(int(p["min_instances"]), int(p["max_instances"]) + 1))
            objs = _resolve_occlusion([_new_obj(int(rng.choice(k, p=probs)), p, rng) for _ in range(n)], cat_shapes, p)
        images.append(objs)
    for _ in range(50):  # repair: place missing categories on top of images with room
        present = np.zeros(k, dtype=bool)
        for objs in images:
            for o in objs:
                present[o.cat] = True
        missing = [c for c in np.flatnonzero(must_have & ~present)]
        if not missing:
            return images
        for c in missing:
            room = [i for i, objs in enumerate(images) if len(objs) < int(p["max_instances"])]
            if not room:
                break
            i = room[int(rng.integers(len(room)))]
            cand = _resolve_occlusion(images[i] + [_new_obj(int(c), p, rng)], cat_shapes, p)
            if cand:
                images[i] = cand
    raise ValueError("toyworld could not place every category at least once; use more images or fewer categories")


# ----------------------------------------------------------------------------------------------------------------
# rendering + LVIS records
# ----------------------------------------------------------------------------------------------------------------
def _render_image(objs: list[_Obj], cats: list[dict], S: int, rng: np.random.Generator) -> np.ndarray:
    from mfexp.toyworld.world import paste

    img = render_background(S, S, rng)
    for o in objs:
        rgb, m = render_object(cats[o.cat]["name"], o.size, o.rotation, rng)
        paste(img, rgb, m, o.top, o.left)
    return img


def _write_split(
    split: str,
    layouts: list[list[_Obj]],
    cats: list[dict],
    p: dict,
    root: Path,
    id_offset: int,
    ann_offset: int,
) -> tuple[list[dict], list[dict]]:
    from PIL import Image

    from mfexp.callbacks import with_progress

    S = int(p["image_size"])
    k = len(cats)
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    split_code = 0 if split == "train" else 1
    images, anns = [], []
    for i, objs in enumerate(with_progress(layouts, f"toyworld {split}", "image")):
        image_id = id_offset + i + 1
        file_name = f"{image_id:012d}.{p['image_format']}"
        rng = np.random.default_rng([int(p["seed"]), split_code, i])  # per-image render seed
        img = _render_image(objs, cats, S, rng)
        if p["image_format"] == "png":
            Image.fromarray(img).save(img_dir / file_name, format="PNG", optimize=False, compress_level=6)
        else:
            Image.fromarray(img).save(img_dir / file_name, format="JPEG", quality=95)
        present = sorted({o.cat for o in objs})
        absent = np.array([c for c in range(k) if c not in present], dtype=int)
        if p["num_neg_categories"] is not None and len(absent) > int(p["num_neg_categories"]):
            absent = np.sort(rng.choice(absent, size=int(p["num_neg_categories"]), replace=False))
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "coco_url": f"{COCO_URL_PREFIX}{split}/{file_name}",
                "height": S,
                "width": S,
                "neg_category_ids": [int(cats[c]["id"]) for c in absent],
                "not_exhaustive_category_ids": [],
            }
        )
        for o in objs:
            anns.append(mask_annotation(o.visible, ann_offset + len(anns) + 1, image_id, int(cats[o.cat]["id"])))
    return images, anns


def _generate(p: dict, root: Path) -> None:
    rng = np.random.default_rng(int(p["seed"]))
    cats = build_categories(p["colours"], p["shapes"])
    k = len(cats)
    cat_shapes = [split_name(c["name"])[1] for c in cats]
    novel = (
        np.sort(rng.choice(k, size=int(p["num_novel"]), replace=False)) if int(p["num_novel"]) else np.array([], int)
    )
    is_base = np.ones(k, dtype=bool)
    is_base[novel] = False

    # train: Zipf over a random ranking of the base categories
    base = np.flatnonzero(is_base)
    ranking = rng.permutation(base)
    train_p = np.zeros(k)
    train_p[ranking] = 1.0 / np.arange(1, len(ranking) + 1) ** float(p["zipf_exponent"])
    train_p /= train_p.sum()
    train_layout = _layout_split(int(p["num_train_images"]), train_p, is_base, cat_shapes, p, rng)

    # val: uniform over all categories, novel included
    val_p = np.full(k, 1.0 / k)
    val_layout = _layout_split(int(p["num_val_images"]), val_p, np.ones(k, dtype=bool), cat_shapes, p, rng)

    # LVIS counts + frequency from the actual training images
    image_count = np.zeros(k, dtype=int)
    instance_count = np.zeros(k, dtype=int)
    for objs in train_layout:
        for c in {o.cat for o in objs}:
            image_count[c] += 1
        for o in objs:
            instance_count[o.cat] += 1
    assert not image_count[novel].any() and image_count[is_base].all()
    for c, cat in enumerate(cats):
        cat["image_count"] = int(image_count[c])
        cat["instance_count"] = int(instance_count[c])
        cat["frequency"] = lvis_frequency(int(image_count[c]))
    novel_ids = [int(cats[c]["id"]) for c in novel]

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    info = {
        "description": "mfexp toy world (procedural LVIS v1-format benchmark)",
        "version": DATASET_VERSION,
        "params": p,
    }
    for split, layout, id_off, ann_off in (
        ("train", train_layout, 0, 0),
        ("val", val_layout, VAL_IMAGE_ID_OFFSET, VAL_ANN_ID_OFFSET),
    ):
        images, anns = _write_split(split, layout, cats, p, root, id_off, ann_off)
        doc = {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": cats,
            "novel_category_ids": novel_ids,
        }
        with open(root / "annotations" / f"lvis_v1_{split}.json", "w") as f:
            json.dump(doc, f, separators=(",", ":"))


def _paths(root: Path) -> dict[str, str]:
    return {
        "train_json": str(root / "annotations" / "lvis_v1_train.json"),
        "train_images": str(root / "train"),
        "val_json": str(root / "annotations" / "lvis_v1_val.json"),
        "val_images": str(root / "val"),
        "root": str(root),
    }


def prepare_toyworld(cfg: Mapping) -> dict[str, str]:
    """Generate (or reuse) the toy-world benchmark described by the ``cfg.dataset`` node; returns its paths.

    Keys of the result: ``train_json``, ``train_images``, ``val_json``, ``val_images``, ``root`` (all str).
    ``cfg.cache_dir`` (default ``~/.cache/mfexp``) holds ``toyworld/<config hash>/``; the other keys: PARAMS
    (conf/dataset/toyworld.yaml).
    """
    params = _params(cfg)
    cache_dir = cfg.get("cache_dir") or os.path.join(os.path.expanduser("~"), ".cache", "mfexp")
    root = Path(str(cache_dir)).expanduser() / "toyworld" / folder_key(params)
    if (root / "annotations" / "lvis_v1_val.json").is_file():
        return _paths(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".tmp-{root.name}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(params, tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "annotations" / "lvis_v1_val.json").is_file():  # not a concurrent winner: real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _paths(root)
