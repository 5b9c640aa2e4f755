"""Drawing: masks over images, montages, the synthetic set's gallery, prediction overlays and the per-category AP
plot."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from mfexp.fileio import atomic_write_bytes, encode_jpeg, read_rgb
from mfexp.lvis import decode_rle, image_relpath

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.float32,
)


def overlay(rgb: np.ndarray, masks: list, labels: list[str]) -> np.ndarray:
    """The image with each mask outlined and labelled, its pixels left as they are: the eye sees each object's own
    colour (a tint would mix it with the outline's). The outline lies on the mask's edge; the label, in the outline's
    colour on a dark box, sits above the object (below it when there is no room above)."""
    out = rgb.copy()
    scale = max(rgb.shape[:2]) / 512
    thickness = max(2, round(2 * scale))
    font, font_scale, font_thickness = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, 0.5 * scale), max(1, round(scale))
    for k, (m, label) in enumerate(zip(masks, labels)):
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
        ys, xs = np.nonzero(m)
        if not len(xs):
            continue
        (w, h), base = cv2.getTextSize(label, font, font_scale, font_thickness)
        top = ys.min() - thickness - 1 - base - h  # the box's top edge, above the object
        if top < 0:
            top = min(ys.max() + thickness + 1, rgb.shape[0] - h - base)
        x = int(min(xs.min(), max(0, rgb.shape[1] - w)))
        cv2.rectangle(out, (x, int(top)), (x + w, int(top + h + base)), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, label, (x, int(top + h)), font, font_scale, colour, font_thickness, cv2.LINE_AA)
    return out


def enlarge(rgb: np.ndarray, masks: list, height: int) -> tuple[np.ndarray, list]:
    """The image scaled to ``height`` pixels high, and its masks with it (nearest neighbour): an overlay drawn at the
    size a montage shows it keeps thin outlines and readable labels."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w * height / h)), height)
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    return big, [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0 for m in masks]


def montage(tiles: list[np.ndarray], tile_height: int = 256, columns: int = 4) -> np.ndarray:
    """Tiles resized to one height and laid out in rows."""
    if not tiles:
        return np.full((tile_height, tile_height, 3), 255, np.uint8)
    resized = [
        cv2.resize(t, (max(1, round(t.shape[1] * tile_height / t.shape[0])), tile_height), interpolation=cv2.INTER_AREA)
        for t in tiles
    ]
    width = max(r.shape[1] for r in resized)
    rows = []
    for i in range(0, len(resized), columns):
        row = [
            np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in resized[i : i + columns]
        ]
        row += [np.full_like(row[0], 255)] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def gallery_items(out: Path, images: list, annotations: list, categories: list, count: int) -> list[tuple]:
    """The first ``count`` images of a synthetic set in ``out`` as (rgb, masks, category names)."""
    names = {c["id"]: c["name"] for c in categories}
    by_image: dict = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    items = []
    for img in images[:count]:
        anns = by_image.get(img["id"], [])
        items.append(
            (
                read_rgb(out / "images" / img["file_name"]),
                [decode_rle(a["segmentation"]) for a in anns],
                [names.get(a["category_id"], "?") for a in anns],
            )
        )
    return items


def write_gallery(out: Path, images: list, annotations: list, categories: list, count: int) -> None:
    """``out/gallery.jpg``: the first ``count`` images of a synthetic set in ``out`` with their masks and labels."""
    write_overlays(out / "gallery.jpg", gallery_items(out, images, annotations, categories, count))


def write_overlays(path: Path, items: list[tuple], tile: int = 256) -> None:
    """A JPEG montage of (rgb, masks, labels) items, each outlined and labelled by ``overlay`` at ``tile`` pixels
    high."""
    tiles = [overlay(*enlarge(rgb, masks, tile), labels) for rgb, masks, labels in items]
    atomic_write_bytes(path, encode_jpeg(montage(tiles, tile_height=tile), 90))


def prediction_overlays(
    predictions: list[dict],
    gt: dict,
    images_dir: str,
    out_path: str,
    num_images: int = 8,
    score_thr: float = 0.3,
    tile: int = 256,
) -> str:
    """Draw predictions (score >= ``score_thr``) on the first ``num_images`` images of ``gt`` (an LVIS dict with
    images under ``images_dir``), at ``tile`` pixels high; write a JPEG grid to ``out_path`` and return it."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    by_image = defaultdict(list)
    for p in predictions:
        if p["score"] >= score_thr and "segmentation" in p:
            by_image[p["image_id"]].append(p)
    items = []
    for img in sorted(gt["images"], key=lambda i: i["id"])[:num_images]:
        dets = sorted(by_image[img["id"]], key=lambda p: -p["score"])
        items.append(
            (
                read_rgb(os.path.join(images_dir, image_relpath(img))),
                [decode_rle(p["segmentation"]) for p in dets],
                [f"{names.get(p['category_id'], p['category_id'])} {p['score']:.2f}" for p in dets],
            )
        )
    write_overlays(Path(out_path), items, tile)
    return out_path


def plot_per_category(rows: list[dict], path: str) -> None:
    """Mask AP of each category against its number of real training images (log x), by frequency group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    groups = (
        ("novel", "novel (0 train images)", "tab:purple"),
        ("r", "rare", "tab:red"),
        ("c", "common", "tab:orange"),
        ("f", "frequent", "tab:blue"),
    )
    for key, label, colour in groups:
        pts = [
            r
            for r in rows
            if r["AP"] is not None and (r["novel"] if key == "novel" else r["frequency"] == key and not r["novel"])
        ]
        if pts:
            ax.scatter(
                [max(r["train_images"], 0.5) for r in pts],
                [100 * r["AP"] for r in pts],
                s=18,
                color=colour,
                label=f"{label} ({len(pts)})",
            )
    ax.set_xscale("log")
    ax.set_xlabel("real training images of the category (novel plotted at 0.5)")
    ax.set_ylabel("mask AP (%)")
    ax.set_title("Per-category mask AP along the long tail")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
