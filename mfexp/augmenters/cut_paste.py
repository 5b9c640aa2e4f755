"""Cut-and-Paste baseline (Dwibedi et al., 2017): real instances pasted onto other real training images.

What it makes is ``cfg.synthetic``'s, as for MosaicFusion. Synthetic image ``i`` is planned and seeded from
``image_seed(seed, i)`` alone (like a MosaicFusion mosaic): its *main* category is ``main[i // images_per_category]``
(the main categories of ``synthetic.main_frequency``), the other ``generator.num_objects - 1`` objects come from
categories of ``synthetic.mixed_frequency`` that have instances.
Each object is a real instance mask cut from a training image,
randomly scaled and flipped, and alpha-blended (Gaussian-blurred mask as alpha) at a random place onto another training
image. Pasted objects occlude what lies underneath: the masks of the instances below lose the covered pixels, and
instances left too small are dropped. The output has the pasted objects and the background's remaining real instances,
all annotated, in the same ``synthetic/`` format as MosaicFusion.

Pure functions (``cut_instance``, ``transform_instance``, ``paste_instance``,
``drop_occluded``, ``compose_cut_paste``) do the work; ``generate_cut_paste`` is the only one with side effects.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from mfexp.callbacks import with_progress
from mfexp.config import CutPasteConfig, SyntheticConfig
from mfexp.data import prepare_dataset
from mfexp.fileio import read_rgb
from mfexp.lvis import annotation_mask, image_relpath, select_categories
from mfexp.runpaths import RunPaths
from mfexp.synthetic import (
    MAX_INSTANCES_PER_IMAGE,
    check_num_objects,
    image_annotations,
    image_budget,
    image_seed,
    objects_per_image,
    summarise,
    write_image,
    write_set,
)
from mfexp.tracking import Tracker, is_rank_zero

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- pure functions


def cut_instance(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The instance's tight bounding-box crop: (rgb crop, mask crop)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("empty instance mask")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy()


def transform_instance(rgb: np.ndarray, mask: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resize the crop so its longer side is `size` pixels (aspect kept) and optionally flip it horizontally."""
    h, w = mask.shape
    f = size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    mask = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR) >= 0.5
    if flip:
        rgb, mask = rgb[:, ::-1].copy(), mask[:, ::-1].copy()
    return rgb, mask


def blurred_alpha(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Float alpha in [0, 1] from a binary mask: the mask itself (sigma 0) or its Gaussian blur."""
    alpha = mask.astype(np.float32)
    if sigma > 0:
        alpha = cv2.GaussianBlur(
            alpha, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_CONSTANT
        )
    return np.clip(alpha, 0.0, 1.0)


def paste_instance(
    image: np.ndarray,
    masks: list[np.ndarray],
    obj_rgb: np.ndarray,
    obj_mask: np.ndarray,
    top_left: tuple[int, int],
    blur_sigma: float = 1.0,
):
    """Alpha-blend an object crop onto `image` at `top_left` = (y, x); the object must lie inside the image.

    The alpha is the object mask blurred with a Gaussian of `blur_sigma` pixels (computed on the whole canvas, so it
    may spill a few pixels past the crop). The pasted instance's mask is where alpha >= 0.5 (the object is at least
    half of the pixel); the masks underneath lose those pixels. Returns (new image, pasted mask, updated masks) and
    leaves the inputs unchanged.
    """
    H, W = image.shape[:2]
    h, w = obj_mask.shape
    y, x = (int(v) for v in top_left)
    if y < 0 or x < 0 or y + h > H or x + w > W:
        raise ValueError(f"object of size {h}x{w} at {(y, x)} does not fit a {H}x{W} image")
    placed = np.zeros((H, W), bool)
    placed[y : y + h, x : x + w] = obj_mask
    obj_canvas = np.zeros_like(image)
    obj_canvas[y : y + h, x : x + w] = obj_rgb
    if blur_sigma > 0:  # blur the colour premultiplied by the mask too, so the halo has the object's colours
        alpha = blurred_alpha(placed, blur_sigma)
        premult = cv2.GaussianBlur(
            obj_canvas.astype(np.float32) * placed[..., None], (0, 0), float(blur_sigma), borderType=cv2.BORDER_CONSTANT
        )
        colour = np.where(alpha[..., None] > 1e-6, premult / np.maximum(alpha[..., None], 1e-6), 0.0)
        colour = np.where(placed[..., None], obj_canvas.astype(np.float32), colour)
    else:
        alpha, colour = placed.astype(np.float32), obj_canvas.astype(np.float32)
    a = alpha[..., None]
    out = np.clip(a * colour + (1 - a) * image.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    pasted = alpha >= 0.5
    return out, pasted, [m & ~pasted for m in masks]


def drop_occluded(masks: list[np.ndarray], areas_before: list[float], min_area: int, min_fraction: float) -> list[bool]:
    """Which instances stay: visible area >= min_area pixels and >= min_fraction of the area before pasting."""
    return [int(m.sum()) >= min_area and m.sum() >= min_fraction * a for m, a in zip(masks, areas_before)]


@dataclass
class Instance:
    mask: np.ndarray
    category_id: int
    pasted: bool
    area_before: float = field(default=0.0)


def compose_cut_paste(
    background: np.ndarray,
    instances: list[Instance],
    objects: list[tuple],
    rng: np.random.Generator,
    opts: CutPasteConfig,
):
    """Paste `objects` = [(rgb crop, mask crop, category id)] onto `background` in order (later ones on top).

    Each object gets a random size (longer side = U(scale) x background's shorter side, at most the background),
    a horizontal flip with probability `flip` and a random position fully inside the image. Returns
    (image, kept instances, counts) with counts = {"pasted", "dropped"}; instances (real and pasted) occluded below
    the visibility limits are dropped.
    """
    image = background
    H, W = image.shape[:2]
    instances = [Instance(i.mask, i.category_id, i.pasted, float(i.mask.sum())) for i in instances]
    pasted = 0
    for rgb, mask, cat in objects:
        longer = int(round(rng.uniform(*opts.scale) * min(H, W)))
        longer = max(2, min(longer, H, W))
        flip = bool(rng.random() < opts.flip)
        o_rgb, o_mask = transform_instance(rgb, mask, longer, flip)
        h, w = o_mask.shape
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        image, new_mask, updated = paste_instance(
            image, [i.mask for i in instances], o_rgb, o_mask, (y, x), opts.blur_sigma
        )
        for inst, m in zip(instances, updated):
            inst.mask = m
        if new_mask.any():
            instances.append(Instance(new_mask, int(cat), True, float(new_mask.sum())))
            pasted += 1
    keep = drop_occluded(
        [i.mask for i in instances],
        [i.area_before for i in instances],
        opts.min_visible_area,
        opts.min_visible_fraction,
    )
    kept = [i for i, k in zip(instances, keep) if k]
    return image, kept, {"pasted": pasted, "dropped": len(instances) - len(kept)}


# ----------------------------------------------------------------------------------------------- the data


class SourceData:
    """The real training set: images by id, usable instances by category, images loaded on demand (LRU cache)."""

    def __init__(self, train_json: str | Path, train_images: str | Path, min_source_area: int):
        train_json = Path(train_json)
        if not train_json.is_file():
            raise FileNotFoundError(f"train annotations not found: {train_json}")
        data = json.loads(train_json.read_text())
        self.root = Path(train_images)
        self.categories = data["categories"]
        self.images = {img["id"]: img for img in data["images"]}
        self.image_ids = sorted(self.images)
        if not self.image_ids:
            raise ValueError(f"{train_json} has no images")
        self.by_image: dict[int, list[dict]] = {}
        self.by_category: dict[int, list[dict]] = {}
        for a in sorted(data["annotations"], key=lambda a: a["id"]):
            if a.get("iscrowd", 0):
                continue
            self.by_image.setdefault(a["image_id"], []).append(a)
            if a.get("area", 0) >= min_source_area:
                self.by_category.setdefault(a["category_id"], []).append(a)
        self._read = lru_cache(maxsize=64)(self._read_uncached)

    def _read_uncached(self, image_id: int) -> np.ndarray:
        return read_rgb(self.root / image_relpath(self.images[image_id]))

    def rgb(self, image_id: int) -> np.ndarray:
        return self._read(image_id)

    def mask(self, ann: dict) -> np.ndarray:
        img = self.images[ann["image_id"]]
        return annotation_mask(ann["segmentation"], img["height"], img["width"])


@dataclass
class Plan:
    index: int
    main: dict
    sources: list  # annotations to cut, main first
    background_id: int | None
    reason: str = ""


def plan_image(
    index: int,
    main: list[dict],
    mixed_ids: list[int],
    data: SourceData,
    opts: CutPasteConfig,
    synthetic: SyntheticConfig,
    num_objects,
    seed: int,
) -> tuple[Plan, np.random.Generator]:
    """What image `index` pastes where (deterministic from image_seed(seed, index)); the rng continues into the paste.
    `synthetic` gives images_per_category (which main category); `num_objects` (`generator.num_objects`: a count or a
    list of counts) how many objects, main included."""
    rng = np.random.default_rng(image_seed(seed, index))
    cat = main[index // synthetic.images_per_category]
    pool = data.by_category.get(cat["id"], [])
    if not pool:
        return Plan(
            index,
            cat,
            [],
            None,
            f"no source instance of main category {cat['name']!r} (none with area >= {opts.min_source_area})",
        ), rng
    sources = [pool[int(rng.integers(len(pool)))]]
    for _ in range(objects_per_image(num_objects, seed, index) - 1):
        cid = mixed_ids[int(rng.integers(len(mixed_ids)))]
        choices = data.by_category[cid]
        sources.append(choices[int(rng.integers(len(choices)))])
    background_id = None
    if opts.background == "image":
        others = data.image_ids
        for _ in range(8):  # another image than the main object's, when there is one
            background_id = others[int(rng.integers(len(others)))]
            if background_id != sources[0]["image_id"] or len(others) == 1:
                break
    return Plan(index, cat, sources, background_id), rng


def make_image(plan: Plan, rng: np.random.Generator, data: SourceData, opts: CutPasteConfig):
    """Load what the plan names and compose the image: (image, kept instances, counts)."""
    if plan.background_id is not None:
        background = data.rgb(plan.background_id)
        instances = [Instance(data.mask(a), a["category_id"], False) for a in data.by_image.get(plan.background_id, [])]
        instances = [i for i in instances if i.mask.shape == background.shape[:2] and i.mask.any()]
    else:
        src = data.images[plan.sources[0]["image_id"]]
        colour = rng.integers(0, 256, size=3).astype(np.uint8)
        background = np.broadcast_to(colour, (src["height"], src["width"], 3)).copy()
        instances = []
    objects = []
    for a in plan.sources:
        rgb, mask = data.rgb(a["image_id"]), data.mask(a)
        if rgb.shape[:2] != mask.shape:
            raise ValueError(f"annotation {a['id']}: mask {mask.shape} does not match its image {rgb.shape[:2]}")
        objects.append((*cut_instance(rgb, mask), a["category_id"]))
    return compose_cut_paste(background, instances, objects, rng, opts)


# ----------------------------------------------------------------------------------------------- the stage


def generate_cut_paste(cfg, run_dir, tracker: Tracker = Tracker()) -> dict:
    """The `generate` stage for `augmenter=cut_paste`: writes run_dir/synthetic/{images/, annotations.json,
    gallery.jpg}, logs to `tracker` and returns counts."""
    from omegaconf import OmegaConf

    opts = OmegaConf.to_object(cfg.augmenter)  # values and ranges checked at composition (mfexp.config)
    syn = OmegaConf.to_object(cfg.synthetic)  # what to make: shared with the other augmenters
    files = prepare_dataset(cfg.dataset)
    data = SourceData(files["train_json"], files["train_images"], opts.min_source_area)
    main = select_categories(data.categories, syn.main_frequency, "synthetic.main_frequency")
    if not any(data.by_category.get(c["id"]) for c in main):
        raise ValueError(
            f"synthetic.main_frequency={list(syn.main_frequency)}: no instance (area >= "
            f"{opts.min_source_area} px) of the {len(main)} selected categories in the train set"
        )
    mixed = select_categories(data.categories, syn.mixed_frequency, "synthetic.mixed_frequency")
    mixed_ids = [c["id"] for c in mixed if data.by_category.get(c["id"])]
    num_objects = OmegaConf.to_container(cfg.generator, resolve=True)["num_objects"]
    if max(check_num_objects(num_objects)) > 1 and not mixed_ids:
        raise ValueError(
            f"synthetic.mixed_frequency={list(syn.mixed_frequency)}: no instance (area >= "
            f"{opts.min_source_area} px) of the selected categories in the train set"
        )
    total = image_budget(len(main), syn.images_per_category, syn.max_images)
    if not is_rank_zero():
        return {}

    paths = RunPaths(run_dir)
    out = paths.synthetic
    if out.exists():  # another augmenter's or an unfinished run's output
        shutil.rmtree(out)
    seed = int(cfg.seed)
    log.info(
        "Cut-and-Paste: %d images (%d main categories x %d, %s object(s) each)",
        total,
        len(main),
        syn.images_per_category,
        num_objects,
    )
    images, annotations, reasons, shown = [], [], Counter(), []
    names = {c["id"]: c["name"] for c in data.categories}
    counts, missing = Counter(), set()
    for i in with_progress(range(total), "generate (cut_paste)", "image"):
        plan, rng = plan_image(i, main, mixed_ids, data, opts, syn, num_objects, seed)
        if plan.reason:
            reasons["no source instance of the main category"] += 1
            if plan.main["name"] not in missing:
                missing.add(plan.main["name"])
                log.info("image %d (and the others of its category) skipped: %s", i, plan.reason)
            continue
        image, kept, c = make_image(plan, rng, data, opts)
        counts.update(c)
        if not any(k.pasted for k in kept):
            reasons["every pasted object occluded"] += 1
            log.debug("image %d skipped: every pasted object occluded", i)
            continue
        kept = kept[:MAX_INSTANCES_PER_IMAGE]
        images.append(write_image(paths, i, image, syn.jpeg_quality))
        annotations += image_annotations(i, [k.mask for k in kept], [k.category_id for k in kept])
        if len(shown) < syn.gallery_size:
            shown.append(
                (
                    image,
                    [k.mask for k in kept],
                    [("*" if k.pasted else "") + names.get(k.category_id, "?") for k in kept],
                )
            )
    summary = summarise(
        total, images, annotations, reasons, pasted=counts["pasted"], dropped_occluded=counts["dropped"]
    )
    write_set(paths, "cut_paste", summary, images, annotations, data.categories, syn.gallery_size, tracker, shown)
    return summary
