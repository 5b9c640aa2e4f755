"""`augmenter=copy_paste`: Copy-Paste (Ghiasi et al. 2021, "Simple Copy-Paste"), online in the training pipeline.

The generate stage makes no synthetic set (``mfexp.augmenters.none.no_augmentation``); the train stage rewrites the
detector's train pipeline with ``copy_paste_pipelines`` (options: ``augmenter.copy_paste``), as mmdet's
simple-copy-paste configs build it, and pastes with ``MfexpCopyPaste`` (``mfexp.detection.datasets``, mmdet's
``CopyPaste`` with its source index kept inside the dataset).
"""

from __future__ import annotations

import math

RESIZE_STEPS = ("Resize", "RandomResize", "RandomChoiceResize")
# mmdet's CopyPaste defaults, in pixels of its 1024 x 1024 large-scale-jitter canvas
COPY_PASTE_CANVAS, BBOX_OCCLUDED_THR, MASK_OCCLUDED_THR = 1024, 10, 300


def _short_side(step: dict) -> int:
    """The largest short side a resize step produces (scales are (long, short) pairs in either order)."""
    if step["type"] == "RandomChoiceResize":
        return max(min(s) for s in step["scales"])
    scale = step.get("scale")
    if scale is None:
        raise ValueError(f"{step['type']} without a scale: set augmenter.copy_paste.image_size")
    return min(scale) if isinstance(scale, (list, tuple)) else int(scale)


def copy_paste_pipelines(train_pipeline: list, options: dict) -> tuple[list, list, dict]:
    """``(load_pipeline, mix_pipeline, resolved options)`` for Copy-Paste with large-scale jitter.

    The detector's train pipeline ``[load..., <resize>, <flip...>, PackDetInputs]`` becomes ``[load...,
    RandomResize, RandomCrop, FilterAnnotations, <flip...>, Pad]`` on each dataset and ``[MfexpCopyPaste,
    PackDetInputs]`` on ``MultiImageMixDataset``. ``image_size`` (``[h, w]`` of the canvas) null: a square of the
    resize step's largest short side; null occlusion thresholds: mmdet's (10 px, 300 px at 1024 x 1024) scaled to the
    canvas (by its side and its area)."""
    steps = [t["type"] for t in train_pipeline]
    resize = [i for i, t in enumerate(steps) if t in RESIZE_STEPS]
    if len(resize) != 1 or steps[-1] != "PackDetInputs" or steps.count("PackDetInputs") != 1:
        raise ValueError(
            f"copy-paste needs a train pipeline with one resize step ({', '.join(RESIZE_STEPS)}) and "
            f"PackDetInputs last; got {steps}"
        )
    i = resize[0]
    size = options["image_size"] or [_short_side(train_pipeline[i])] * 2
    h, w = (int(v) for v in size)
    side = math.sqrt(h * w)
    lo, hi = (float(v) for v in options["ratio_range"])
    if not 0 < lo <= hi:
        raise ValueError(f"augmenter.copy_paste.ratio_range={[lo, hi]} must satisfy 0 < low <= high")
    bbox_thr = options["bbox_occluded_thr"]
    mask_thr = options["mask_occluded_thr"]
    resolved = dict(
        image_size=[h, w],
        ratio_range=[lo, hi],
        max_num_pasted=int(options["max_num_pasted"]),
        bbox_occluded_thr=float(bbox_thr) if bbox_thr is not None else BBOX_OCCLUDED_THR * side / COPY_PASTE_CANVAS,
        mask_occluded_thr=float(mask_thr) if mask_thr is not None else MASK_OCCLUDED_THR * h * w / COPY_PASTE_CANVAS**2,
        selected=bool(options["selected"]),
    )
    jitter = [
        dict(type="RandomResize", scale=(w, h), ratio_range=(lo, hi), keep_ratio=True),
        dict(
            type="RandomCrop",
            crop_type="absolute_range",
            crop_size=(h, w),
            recompute_bbox=True,
            allow_negative_crop=True,
        ),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
    ]
    load = (
        [dict(t) for t in train_pipeline[:i]]
        + jitter
        + [dict(t) for t in train_pipeline[i + 1 : -1]]
        + [dict(type="Pad", size=(w, h))]
    )
    mix = [
        dict(
            type="MfexpCopyPaste",
            max_num_pasted=resolved["max_num_pasted"],
            bbox_occluded_thr=resolved["bbox_occluded_thr"],
            mask_occluded_thr=resolved["mask_occluded_thr"],
            selected=resolved["selected"],
        ),
        dict(train_pipeline[-1]),
    ]
    return load, mix, resolved
