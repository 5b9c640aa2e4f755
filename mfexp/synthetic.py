"""The synthetic set, whichever augmenter makes it: its policies and its files.

Policies: image ``index`` of a run with ``seed`` is decided by ``image_seed(seed, index)`` alone, so any sharding
over processes makes the same files, and runs with different seeds draw unrelated sets. Its number of objects is
``objects_per_image(num_objects, seed, index)``: the count itself, or one count of a list drawn by the same pair. A
run plans ``image_budget(...)`` images: ``images_per_category`` per main category, at most ``max_images``.

Files (``synthetic/`` of a run folder): ``images/<index:07d>.jpg``; ``annotations.json``, an LVIS file whose image
``index`` has id ``SYNTHETIC_IMAGE_ID_BASE + index`` and whose k-th instance on it has id ``image id * 1000 + k``,
with the run's counts (``summarise``) under ``info``; ``gallery.jpg``, the first images with their masks.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mfexp.runpaths import RunPaths

if TYPE_CHECKING:
    from mfexp.tracking import Tracker

# The policies import numpy alone (the generator's path, mfexp.mosaicfusion.pipeline, uses them and needs no
# pycocotools); the files' functions import the LVIS format and drawing where they run.

log = logging.getLogger(__name__)

# Part of the generate stage's hash where an augmenter makes images (and of MosaicFusion's parts stamp). Raise it
# whenever the same config makes other images, so that an older run folder never passes its set off as current.
IMAGE_SEEDS = 2
# Salt of the draw of N from a list, so that it leaves the image's own random stream (`image_seed`) untouched.
_N_SALT = 0x4E


def image_seed(seed: int, index: int) -> int:
    """The seed of synthetic image ``index`` in a run with ``seed``: a function of the pair alone. Two settings run
    with one seed draw the same noise for image i, so paired comparisons keep their common random numbers."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_num_objects(num_objects) -> list[int]:
    """The allowed values of N: a positive integer or a non-empty list of them; returns the counts as a list."""
    counts = list(num_objects) if isinstance(num_objects, Sequence) and not isinstance(num_objects, str) else None
    if counts is None:
        counts = [num_objects]
    ok = len(counts) > 0 and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in counts
    )
    if not ok:
        raise ValueError("must be a positive integer or a non-empty list of them, e.g. 4 or [2,4]")
    return [int(n) for n in counts]


def objects_per_image(num_objects, seed: int, index: int) -> int:
    """N of image ``index``: ``num_objects`` itself, or one of its values drawn uniformly by (seed, index)."""
    counts = check_num_objects(num_objects)
    if len(counts) == 1 and not isinstance(num_objects, Sequence):
        return counts[0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _N_SALT]))
    return counts[int(rng.integers(len(counts)))]


def check_images_per_category(images_per_category) -> int:
    """Images planned per main category: an integer >= 1."""
    if isinstance(images_per_category, bool) or int(images_per_category) < 1:
        raise ValueError("must be >= 1")
    return int(images_per_category)


def check_max_images(max_images) -> int | None:
    """The cap on the images planned: an integer >= 1, or None (no cap)."""
    if max_images is None:
        return None
    if isinstance(max_images, bool) or int(max_images) < 1:
        raise ValueError("must be >= 1 or null (all)")
    return int(max_images)


def image_budget(main_categories: int, images_per_category, max_images) -> int:
    """The images a run plans: ``images_per_category`` per main category, at most ``max_images`` (None: no cap).
    Image ``index``'s main category is ``main[index // images_per_category]``."""
    total = main_categories * check_images_per_category(images_per_category)
    cap = check_max_images(max_images)
    return total if cap is None else min(total, cap)


# ----------------------------------------------------------------------------------------------- the files

MAX_INSTANCES_PER_IMAGE = 1000  # instance k of an image has annotation id image id * 1000 + k, k < 1000


def image_id(index: int) -> int:
    """The annotation files' id of synthetic image ``index`` (its own range, apart from real images' ids)."""
    from mfexp.lvis import SYNTHETIC_IMAGE_ID_BASE

    return SYNTHETIC_IMAGE_ID_BASE + int(index)


def image_name(index: int) -> str:
    return f"{int(index):07d}.jpg"


def write_image(paths: RunPaths, index: int, rgb: np.ndarray, jpeg_quality: int) -> dict:
    """The run's ``synthetic/images/<index>.jpg`` (atomic); returns the image's record for annotations.json."""
    from mfexp.fileio import atomic_write_bytes, encode_jpeg
    from mfexp.lvis import image_record

    name = image_name(index)
    atomic_write_bytes(paths.synthetic_images / name, encode_jpeg(rgb, jpeg_quality))
    return image_record(image_id(index), name, rgb.shape[0], rgb.shape[1])


def image_annotations(index: int, masks: Sequence[np.ndarray], category_ids: Sequence[int]) -> list[dict]:
    """The annotations of image ``index``: instance k is ``masks[k]`` of ``category_ids[k]`` (at most
    MAX_INSTANCES_PER_IMAGE)."""
    from mfexp.lvis import mask_annotation

    if len(masks) > MAX_INSTANCES_PER_IMAGE:
        raise ValueError(f"image {index}: {len(masks)} instances, more than {MAX_INSTANCES_PER_IMAGE}")
    iid = image_id(index)
    return [
        mask_annotation(m, iid * MAX_INSTANCES_PER_IMAGE + k, iid, int(c))
        for k, (m, c) in enumerate(zip(masks, category_ids))
    ]


def summarise(planned: int, images: list, annotations: list, reasons: Counter, **counts: int) -> dict:
    """The generate stage's result and annotations.json's ``info``: planned, kept, skipped, instances, the
    augmenter's own ``counts``, and skip_reasons ({reason: images})."""
    return {
        "planned": planned,
        "kept": len(images),
        "skipped": planned - len(images),
        "instances": len(annotations),
        **counts,
        "skip_reasons": dict(reasons),
    }


def write_set(
    paths: RunPaths,
    augmenter: str,
    summary: dict,
    images: list,
    annotations: list,
    categories: list,
    gallery_size: int,
    tracker: Tracker,
    shown: list | None = None,
) -> None:
    """The run's synthetic/annotations.json (atomic, ``info``: the augmenter's name and ``summary``) and gallery.jpg
    (``shown``, [(rgb, masks, labels)], or else the first ``gallery_size`` images read back); the counts, the
    gallery, its images with their masks and the skip reasons to ``tracker``; one line to the log."""
    from mfexp.draw import gallery_items, write_overlays
    from mfexp.fileio import atomic_write_json
    from mfexp.lvis import lvis_file

    info = {"generator": augmenter, **summary}
    atomic_write_json(paths.synthetic_annotations, lvis_file(images, annotations, categories, info=info))
    if shown is None:
        shown = gallery_items(paths.synthetic, images, annotations, categories, gallery_size)
    write_overlays(paths.synthetic_gallery, shown[:gallery_size])
    extra = {k: v for k, v in summary.items() if k not in ("planned", "kept", "skipped", "instances", "skip_reasons")}
    reasons = Counter(summary["skip_reasons"])
    log.info(
        "%s: kept %d of %d images (%d instances%s); skipped: %s",
        augmenter,
        summary["kept"],
        summary["planned"],
        summary["instances"],
        "".join(f", {k}={v}" for k, v in extra.items()),
        ", ".join(f"{n} {k}" for k, n in reasons.most_common()) or "none",
    )
    if tracker:
        tracker.log(
            {f"generate/{k}": v for k, v in summary.items()}, images={"generate/gallery": paths.synthetic_gallery}
        )
        tracker.log_instances("generate/masks", shown)
        tracker.log_table("generate/skip_reasons", [{"reason": k, "images": n} for k, n in reasons.items()])
