"""LVIS-format files: RLE masks, annotation records, atomic writes, mask galleries."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SYNTHETIC_IMAGE_ID_BASE = 10_000_000   # synthetic image ids live in their own range


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds, remove it if not.

    Readers (and a re-run after a kill) see the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    """CSV text of dict rows (missing keys, None and NaN as empty cells; keys outside ``columns`` ignored)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    return out.getvalue().encode()


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, separators=(",", ":")).encode())


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def read_rgb(path: str | Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode(rle).astype(bool)


def mask_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    rle = encode_rle(mask)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id), "segmentation": rle,
            "bbox": [x, y, w, h], "area": float(mask_utils.area(rle)), "iscrowd": 0}


def image_record(image_id: int, file_name: str, height: int, width: int, split: str = "synthetic") -> dict:
    return {"id": int(image_id), "file_name": file_name, "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
            "height": int(height), "width": int(width), "neg_category_ids": [], "not_exhaustive_category_ids": []}


def lvis_file(images: list, annotations: list, categories: list, **extra) -> dict:
    return {"info": extra.pop("info", {}), "licenses": [], "images": images, "annotations": annotations,
            "categories": categories, **extra}


PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], dtype=np.float32)


def overlay(rgb: np.ndarray, masks: list, labels: list[str], alpha: float = 0.45) -> np.ndarray:
    """The image with each mask tinted, outlined and labelled."""
    out = rgb.astype(np.float32).copy()
    for k, m in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)]
        out[m] = (1 - alpha) * out[m] + alpha * colour
    out = out.astype(np.uint8)
    scale = max(rgb.shape[:2]) / 512
    for k, (m, label) in enumerate(zip(masks, labels)):
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, max(1, int(2 * scale)))
        ys, xs = np.nonzero(m)
        if len(xs):
            org = (int(xs.min()), int(max(ys.min() - 2, 10 * scale)))
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, max(0.3, 0.5 * scale), (255, 255, 255),
                        max(1, int(scale)), cv2.LINE_AA)
    return out


def montage(tiles: list[np.ndarray], tile_height: int = 256, columns: int = 4) -> np.ndarray:
    """Tiles resized to one height and laid out in rows."""
    if not tiles:
        return np.full((tile_height, tile_height, 3), 255, np.uint8)
    resized = [cv2.resize(t, (max(1, round(t.shape[1] * tile_height / t.shape[0])), tile_height),
                          interpolation=cv2.INTER_AREA) for t in tiles]
    width = max(r.shape[1] for r in resized)
    rows = []
    for i in range(0, len(resized), columns):
        row = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
               for r in resized[i:i + columns]]
        row += [np.full_like(row[0], 255)] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)
