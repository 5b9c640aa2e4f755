"""Prediction overlays: a grid of val images with their confident predicted masks and labels."""
from __future__ import annotations

import os
from collections import defaultdict

import cv2
import numpy as np

from mfexp.detection.datasets import image_relpath
from mfexp.lvis_io import atomic_write_bytes, decode_rle, encode_jpeg, montage, overlay, read_rgb


def prediction_overlays(predictions: list[dict], gt: dict, images_dir: str, out_path: str, num_images: int = 8,
                        score_thr: float = 0.3, tile: int = 256) -> str:
    """Draw predictions (score >= ``score_thr``) on the first ``num_images`` images of ``gt`` (an LVIS dict with
    images under ``images_dir``), enlarged to ``tile`` pixels; write a JPEG grid to ``out_path`` and return it."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    by_image = defaultdict(list)
    for p in predictions:
        if p["score"] >= score_thr and "segmentation" in p:
            by_image[p["image_id"]].append(p)
    tiles = []
    for img in sorted(gt["images"], key=lambda i: i["id"])[:num_images]:
        rgb = read_rgb(os.path.join(images_dir, image_relpath(img)))
        size = (round(rgb.shape[1] * tile / max(rgb.shape[:2])), round(rgb.shape[0] * tile / max(rgb.shape[:2])))
        dets = sorted(by_image[img["id"]], key=lambda p: -p["score"])
        masks = [cv2.resize(decode_rle(p["segmentation"]).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
                 for p in dets]
        labels = [f"{names.get(p['category_id'], p['category_id'])} {p['score']:.2f}" for p in dets]
        tiles.append(overlay(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), masks, labels))
    atomic_write_bytes(out_path, encode_jpeg(montage(tiles, tile_height=tile)))
    return out_path
