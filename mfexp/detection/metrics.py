"""LVIS metrics through lvis-api (``LVISEval``): mask and box AP, APr/APc/APf, and AP on novel categories."""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict

import numpy as np

from mfexp.compat import patch_lvis

MAX_DETS = 300  # LVIS's limit per image


def novel_category_ids(train: dict, val: dict | None = None) -> list[int]:
    """Novel categories: a file's ``novel_category_ids`` if given, else categories without train annotations."""
    for data in (val, train):
        if data is not None and data.get("novel_category_ids") is not None:
            return sorted(int(c) for c in data["novel_category_ids"])
    seen = {a["category_id"] for a in train["annotations"]}
    return sorted(c["id"] for c in train["categories"] if c["id"] not in seen)


def _mean_precision(s: np.ndarray) -> float:
    """Mean of the valid (> -1) entries of a slice of LVISEval's precision array, as LVISEval averages AP;
    -1 if none."""
    return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


def _group_ap(lvis_eval, cat_ids) -> float:
    """Mean precision over ``cat_ids`` (all IoUs, recalls, area 'all'), computed exactly as LVISEval computes APr."""
    wanted = set(cat_ids)
    idx = [i for i, c in enumerate(lvis_eval.params.cat_ids) if c in wanted]
    return _mean_precision(lvis_eval.eval["precision"][:, :, idx, 0])


def lvis_evaluate(gt_json: str, predictions: list[dict], novel_ids=(), max_dets: int = MAX_DETS) -> tuple[dict, list]:
    """LVIS mask metrics (``AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300 ...``, ``AP_novel``) and the same
    for boxes prefixed ``bbox_``. Values are lvis-api's fractions in [0, 1]; ``None`` where lvis-api says -1 (no
    ground truth in that group).

    Args:
        gt_json: path of the LVIS-format ground truth.
        predictions: LVIS results (``image_id, category_id, bbox`` (xywh), ``score``, ``segmentation`` (RLE)).
        novel_ids: category ids for ``AP_novel``.

    Returns:
        ``(metrics, per_category)``: ``per_category`` has one row per ground-truth category,
        ``{"category_id", "AP", "bbox_AP"}`` (``None`` where the category has no ground truth in the val set).
    """
    patch_lvis()
    from lvis import LVIS, LVISEval, LVISResults

    logging.getLogger("lvis").setLevel(logging.ERROR)  # lvis-api narrates every step (and warns on list input)
    gt = LVIS(gt_json)
    out: dict = {}
    per_category = {c: {"category_id": c, "AP": None, "bbox_AP": None} for c in sorted(gt.cats)}
    for iou_type, prefix in (("segm", ""), ("bbox", "bbox_")):
        dets = [dict(p) for p in predictions if iou_type == "bbox" or "segmentation" in p]
        if iou_type == "segm":  # like mmdet: with a bbox present lvis-api takes the box area as the mask's area
            for d in dets:
                d.pop("bbox", None)
        if not dets:
            results, novel = {k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")}, 0.0
            for c in {a["category_id"] for a in gt.anns.values()}:
                per_category[c][prefix + "AP"] = 0.0
        else:
            lvis_eval = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets), max_dets=max_dets), iou_type)
            lvis_eval.params.max_dets = max_dets
            lvis_eval.run()
            results = dict(lvis_eval.get_results())
            novel = _group_ap(lvis_eval, novel_ids) if len(novel_ids) else -1.0
            for k, c in enumerate(lvis_eval.params.cat_ids):
                ap = _mean_precision(lvis_eval.eval["precision"][:, :, k, 0])
                per_category[c][prefix + "AP"] = ap if ap >= 0 else None
        results["AP_novel"] = novel
        for k, v in results.items():
            v = float(v)
            out[prefix + k] = None if v < 0 or math.isnan(v) else v
    return out, list(per_category.values())


def per_category_rows(per_category: list[dict], train: dict, novel_ids) -> list[dict]:
    """Per-category AP joined with what the detector saw: name, LVIS frequency group, novel, real train images."""
    images: dict[int, set] = defaultdict(set)
    for a in train["annotations"]:
        images[a["category_id"]].add(a["image_id"])
    cats = {c["id"]: c for c in train["categories"]}
    novel = set(novel_ids)
    return [
        {
            "category_id": r["category_id"],
            "name": cats.get(r["category_id"], {}).get("name", ""),
            "frequency": cats.get(r["category_id"], {}).get("frequency", ""),
            "novel": r["category_id"] in novel,
            "train_images": len(images[r["category_id"]]),
            "AP": r["AP"],
            "bbox_AP": r["bbox_AP"],
        }
        for r in per_category
    ]
