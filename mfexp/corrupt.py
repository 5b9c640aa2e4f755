"""Positive controls: degrade a synthetic set on purpose, so a benchmark can show it notices bad data.

``synthetic.corrupt`` (any augmenter that writes a synthetic set):
- ``labels``: share of synthetic instances relabelled to a uniformly drawn *other* category of the dataset;
- ``masks``: ``none`` | ``box`` (each mask becomes its filled bounding box) | ``dilate`` (each mask grown by
  ``dilate_px`` pixels with a square structuring element, clipped to the image).

Applied by the generate stage after the augmenter (or after copying a reused set, ``generate.reuse``): the run's
``synthetic/annotations.json`` is what the detector is fed; the untouched set is kept beside it as
``synthetic/annotations_clean.json``. Which instances are hit is decided by ``seed`` alone, so every setting with
the same seed and share corrupts the same instances.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np

from mfexp.lvis import decode_rle, mask_annotation

MASK_MODES = ("none", "box", "dilate")


def check_corrupt(corrupt) -> dict:
    """``synthetic.corrupt`` node -> ``dict(labels, masks, dilate_px)``, validated (None -> no corruption)."""
    c = dict(corrupt or {})
    out = dict(
        labels=float(c.get("labels", 0.0) or 0.0),
        masks=str(c.get("masks", "none") or "none"),
        dilate_px=int(c.get("dilate_px", 3)),
    )
    if not 0.0 <= out["labels"] <= 1.0:
        raise ValueError(f"synthetic.corrupt.labels is a share of instances in [0, 1], got {out['labels']}")
    if out["masks"] not in MASK_MODES:
        raise ValueError(f"synthetic.corrupt.masks must be one of {MASK_MODES}, got {out['masks']!r}")
    if out["masks"] == "dilate" and out["dilate_px"] < 1:
        raise ValueError(f"synthetic.corrupt.dilate_px must be >= 1 pixel, got {out['dilate_px']}")
    return out


def is_active(corrupt: dict) -> bool:
    return corrupt["labels"] > 0 or corrupt["masks"] != "none"


def relabel(category_ids: list[int], labels: list[int], share: float, rng: np.random.Generator) -> list[int]:
    """``round(share * n)`` of the labels (chosen at random) replaced by a random other id from ``category_ids``."""
    labels = list(labels)
    if len(set(category_ids)) < 2:
        raise ValueError("relabelling needs at least 2 categories")
    hit = rng.permutation(len(labels))[: int(round(share * len(labels)))]
    ids = np.asarray(sorted(set(category_ids)))
    for i in sorted(hit):
        others = ids[ids != labels[i]]
        labels[i] = int(others[rng.integers(len(others))])
    return labels


def degrade_mask(mask: np.ndarray, mode: str, dilate_px: int = 3) -> np.ndarray:
    """``box``: the mask's filled bounding box; ``dilate``: the mask grown by ``dilate_px``; ``none``: unchanged."""
    if mode == "none" or not mask.any():
        return mask
    if mode == "box":
        ys, xs = np.nonzero(mask)
        out = np.zeros_like(mask, dtype=bool)
        out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        return out
    if mode == "dilate":
        kernel = np.ones((2 * dilate_px + 1, 2 * dilate_px + 1), np.uint8)
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    raise ValueError(f"unknown mask corruption {mode!r}; known: {MASK_MODES}")


def corrupt_lvis(data: dict, corrupt: dict, seed: int) -> tuple[dict, dict]:
    """A corrupted copy of an LVIS-format synthetic set and a summary of what changed.

    Relabelled instances take a category of ``data["categories"]``; an image whose negative list named the new
    category loses it there (an image cannot both show a category and be verified not to)."""
    out = copy.deepcopy(data)
    anns = sorted(out["annotations"], key=lambda a: a["id"])
    rng = np.random.default_rng([int(seed), 0xC0FFEE])
    summary = dict(instances=len(anns), relabelled=0, masks=corrupt["masks"])
    if corrupt["labels"] > 0 and anns:
        old = [a["category_id"] for a in anns]
        new = relabel([c["id"] for c in out["categories"]], old, corrupt["labels"], rng)
        images = {img["id"]: img for img in out["images"]}
        for a, label in zip(anns, new):
            a["category_id"] = label
            neg = images.get(a["image_id"], {}).get("neg_category_ids")
            if neg and label in neg:
                neg.remove(label)
        summary["relabelled"] = sum(o != n for o, n in zip(old, new))
    if corrupt["masks"] != "none":
        for i, a in enumerate(anns):
            mask = degrade_mask(decode_rle(a["segmentation"]), corrupt["masks"], corrupt["dilate_px"])
            new = mask_annotation(mask, a["id"], a["image_id"], a["category_id"])
            anns[i].update({k: new[k] for k in ("segmentation", "bbox", "area")})
    out["annotations"] = anns
    out.setdefault("info", {})["corrupt"] = dict(corrupt, seed=int(seed), **summary)
    return out, summary
