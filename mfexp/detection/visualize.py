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


def plot_per_category(rows: list[dict], path: str) -> None:
    """Mask AP of each category against its number of real training images (log x), by frequency group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    groups = (("novel", "novel (0 train images)", "tab:purple"), ("r", "rare", "tab:red"),
              ("c", "common", "tab:orange"), ("f", "frequent", "tab:blue"))
    for key, label, colour in groups:
        pts = [r for r in rows if r["AP"] is not None and (r["novel"] if key == "novel"
                                                            else r["frequency"] == key and not r["novel"])]
        if pts:
            ax.scatter([max(r["train_images"], 0.5) for r in pts], [100 * r["AP"] for r in pts], s=18,
                       color=colour, label=f"{label} ({len(pts)})")
    ax.set_xscale("log")
    ax.set_xlabel("real training images of the category (novel plotted at 0.5)")
    ax.set_ylabel("mask AP (%)")
    ax.set_title("Per-category mask AP along the long tail")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
