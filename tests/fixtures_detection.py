"""A tiny LVIS v1-format dataset for detection tests: coloured rectangles and discs on noise, exact RLE masks.

Category k (1-based) is a (shape, colour) pair; the last drawn category appears only in val (a *novel* category).
Extra categories (``num_categories`` beyond the drawn ones) are listed but never drawn, like most of LVIS's 1203
classes in a small split.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230), (230, 220, 40)]
SHAPES = ["rect", "disc"]


def _draw(canvas: np.ndarray, shape: str, colour, box) -> np.ndarray:
    x, y, w, h = box
    m = np.zeros(canvas.shape[:2], np.uint8)
    if shape == "rect":
        m[y : y + h, x : x + w] = 1
    else:
        cv2.ellipse(m, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
    canvas[m > 0] = colour
    return m


def _split(
    root: Path,
    name: str,
    num_images: int,
    drawn: list[int],
    categories: list[dict],
    size: int,
    rng: np.random.Generator,
    first_image_id: int,
    first_ann_id: int,
    with_file_name: bool,
    on_top: int | None = None,
) -> dict:
    img_dir = root / name
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        img_id = first_image_id + i
        canvas = rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8)
        objects = []
        cats = [drawn[(i + j) % len(drawn)] for j in range(int(rng.integers(1, 4)))]
        if i == 0 and on_top is not None:
            cats.append(on_top)  # drawn last: fully visible
        for cat in cats:
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, size=2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            objects.append((cat, _draw(canvas, SHAPES[(cat - 1) % 2], COLOURS[((cat - 1) // 2) % 4], (x, y, w, h))))
        for j, (cat, m) in enumerate(objects):
            for _, later in objects[j + 1 :]:
                m = m & (1 - later)  # visible part only
            if m.sum() < 4:
                continue
            rle = mask_utils.encode(np.asfortranarray(m))
            anns.append(
                dict(
                    id=first_ann_id + len(anns),
                    image_id=img_id,
                    category_id=cat,
                    bbox=[float(v) for v in mask_utils.toBbox(rle)],
                    area=float(mask_utils.area(rle)),
                    segmentation=dict(size=list(rle["size"]), counts=rle["counts"].decode()),
                )
            )
        file_name = f"{img_id:06d}.png"
        cv2.imwrite(str(img_dir / file_name), canvas[:, :, ::-1])
        img = dict(
            id=img_id,
            height=size,
            width=size,
            coco_url=f"http://images.cocodataset.org/{name}/{file_name}",
            neg_category_ids=[],
            not_exhaustive_category_ids=[],
        )
        if with_file_name:
            img["file_name"] = file_name
        images.append(img)
    data = dict(info={}, licenses=[], images=images, annotations=anns, categories=categories)
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return data


def make_lvis_fixture(
    root,
    num_train: int = 8,
    num_val: int = 4,
    num_drawn: int = 4,
    num_categories: int | None = None,
    size: int = 64,
    seed: int = 0,
    with_file_name: bool = True,
) -> dict:
    """Write ``train.json``/``val.json`` and ``train/``/``val/`` images under ``root``; return the
    ``prepare_dataset``-style dict (``train_json, train_images, val_json, val_images``) plus ``novel_ids``.

    ``with_file_name=False`` writes real-LVIS-style image entries (``coco_url`` only): then the images folder is
    ``root`` itself (paths ``train/xxx.png`` from the url)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    num_categories = num_categories or num_drawn
    freqs = "rcf"
    categories = [
        dict(
            id=k,
            name=f"{SHAPES[(k - 1) % 2]}_{k}",
            synset=f"thing_{k}.n.01",
            synonyms=[f"thing_{k}"],
            def_=None,
            frequency=freqs[(k - 1) % 3],
            image_count=0,
            instance_count=0,
        )
        for k in range(1, num_categories + 1)
    ]
    for c in categories:
        c["def"] = f"a test object number {c['id']}"
        del c["def_"]
    drawn = list(range(1, num_drawn + 1))
    train = _split(root, "train", num_train, drawn[:-1], categories, size, rng, 1, 1, with_file_name)
    _split(root, "val", num_val, drawn, categories, size, rng, 10_000, 100_000, with_file_name, on_top=drawn[-1])
    # image_count / instance_count from the train split, as LVIS defines them
    for c in categories:
        c["image_count"] = len({a["image_id"] for a in train["annotations"] if a["category_id"] == c["id"]})
        c["instance_count"] = sum(a["category_id"] == c["id"] for a in train["annotations"])
    for name in ("train", "val"):
        data = json.loads((root / f"{name}.json").read_text())
        data["categories"] = categories
        (root / f"{name}.json").write_text(json.dumps(data))
    images = str(root / "train"), str(root / "val")
    if not with_file_name:
        images = str(root), str(root)
    return dict(
        train_json=str(root / "train.json"),
        train_images=images[0],
        val_json=str(root / "val.json"),
        val_images=images[1],
        novel_ids=[drawn[-1]],
    )
