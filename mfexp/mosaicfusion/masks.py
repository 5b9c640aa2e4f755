"""From aggregated cross-attention maps to instance masks (pure functions on numpy arrays)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .bilateral import smooth_mask


class MaskError(ValueError):
    """A region whose map cannot give a valid mask: the mosaic is skipped with this reason."""


def _check_argument(check, value, label: str) -> None:
    """``check(value)``, its ValueError prefixed with ``label`` (the argument's name for a direct caller)."""
    try:
        check(value)
    except ValueError as e:
        raise ValueError(f"{label} {e}") from None


def aggregate_maps(maps: dict, height: int, width: int) -> np.ndarray:
    """Normalise each resolution's map to max 1, resize it (bicubic) to the region, average, rescale to max 1."""
    if not maps:
        raise MaskError("no attention map was captured")
    resized = []
    for res, m in sorted(maps.items()):
        m = np.asarray(m, dtype=np.float32)
        if not np.isfinite(m).all():
            raise MaskError(f"attention map at 1/{res} has NaN or inf values")
        peak = m.max()
        if peak <= 0:
            raise MaskError(f"attention map at 1/{res} is all zero")
        resized.append(cv2.resize(m / peak, (width, height), interpolation=cv2.INTER_CUBIC))
    mean = np.clip(np.mean(resized, axis=0), 0, None)
    return mean / mean.max()


REFINE_METHODS = ("bilateral", "fgs", "joint_bilateral", "none")
AREA_REFERENCES = ("nominal", "region")


def check_threshold(threshold) -> None:
    """The binarisation threshold: ``otsu`` or a number in (0, 1)."""
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not (threshold == "otsu" or (number and 0 < threshold < 1)):
        raise ValueError("must be otsu or a number in (0, 1)")


def check_refine(method) -> None:
    if method not in REFINE_METHODS:
        raise ValueError(f"must be one of {', '.join(REFINE_METHODS)}")


def check_area_reference(reference) -> None:
    if reference not in AREA_REFERENCES:
        raise ValueError(f"must be one of {', '.join(AREA_REFERENCES)}")


def check_area_bounds(min_area, max_area) -> None:
    """The kept component's area bounds, fractions of the reference area: 0 <= min_area <= max_area."""
    if not 0 <= float(min_area) <= float(max_area):
        raise ValueError(f"must satisfy 0 <= min_area <= max_area, got {min_area!r}, {max_area!r}")


def binarize(heat: np.ndarray, threshold="otsu") -> np.ndarray:
    """Foreground where the map exceeds Otsu's threshold (or a fixed one in (0, 1))."""
    try:
        check_threshold(threshold)
    except ValueError as e:
        raise ValueError(f"threshold={threshold!r} {e}") from None
    if threshold == "otsu":
        level, _ = cv2.threshold(np.round(heat * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return heat * 255 > level
    return heat > float(threshold)


def refine(mask: np.ndarray, rgb: np.ndarray, method="fgs", lam=256.0, sigma_color=16.0, bilateral=None) -> np.ndarray:
    """Edge-aware refinement of a binary mask against the generated pixels.

    `bilateral`: the fast bilateral solver (Barron & Poole 2016; `bilateral.py`, settings in ``bilateral``: passes,
    sigma_spatial, sigma_luma, sigma_chroma, lam, confidence), the paper's refinement; `fgs`: OpenCV's fast global
    smoother (an edge-aware weighted-least-squares solver, ``lam`` and ``sigma_color``); `joint_bilateral`: a joint
    bilateral filter; `none`. The smoothed mask is thresholded at half its maximum.
    """
    _check_argument(check_refine, method, f"refine method {method!r}:")
    if method == "none":
        return mask
    src = mask.astype(np.float32)
    guide = np.ascontiguousarray(rgb, dtype=np.uint8)
    if method == "bilateral":
        out = smooth_mask(src, guide, bilateral)
    elif method == "fgs":
        out = cv2.ximgproc.fastGlobalSmootherFilter(guide, src, float(lam), float(sigma_color))
    else:  # joint_bilateral
        out = cv2.ximgproc.jointBilateralFilter(guide.astype(np.float32), src, -1, float(sigma_color), 16.0)
    peak = out.max()
    return out > 0.5 * peak if peak > 0 else mask


def single_component(mask: np.ndarray, min_area=0.05, max_area=0.95, reference_area=None) -> np.ndarray:
    """The one 4-connected component with area in [min_area, max_area] x ``reference_area`` pixels, else MaskError.

    ``reference_area``: the pixel count the fractions refer to (default: the mask's own size, i.e. the region).
    """
    check_area_bounds(min_area, max_area)
    total = mask.size if reference_area is None else int(reference_area)
    lo, hi = float(min_area) * total, float(max_area) * total
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    kept = [i + 1 for i, a in enumerate(areas) if lo <= a <= hi]
    if len(kept) != 1:
        of = "the region" if reference_area is None else f"the nominal region ({total} px)"
        raise MaskError(
            f"{len(kept)} components within {min_area:.0%}-{max_area:.0%} of {of} "
            f"({math.ceil(lo)}-{math.floor(hi)} px; largest areas {sorted(int(a) for a in areas)[-4:]} px)"
        )
    return labels == kept[0]


def reference_area(mask_cfg, nominal_size=None) -> int | None:
    """The pixel count min_area/max_area refer to: None for `area_reference: region` (the region's own size), the
    nominal region size h x w for `nominal` (``nominal_size``, else ``mask_cfg.nominal_size``, which the generator
    config ties to generator.region_size) -- absolute bounds, whatever the jittered region's size."""
    ref = mask_cfg.get("area_reference", "region")
    _check_argument(check_area_reference, ref, f"area_reference={ref!r}")
    if ref == "region":
        return None
    size = nominal_size if nominal_size is not None else mask_cfg.get("nominal_size")
    if size is None:
        raise ValueError(
            "generator.mask.area_reference=nominal needs generator.mask.nominal_size "
            "([h, w]; by default generator.region_size)"
        )
    size = list(size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"generator.mask.nominal_size must be [h, w] positive integers, got {size!r}")
    return int(size[0]) * int(size[1])


def region_mask(maps: dict, rgb: np.ndarray, mask_cfg, nominal_size=None) -> np.ndarray:
    """The whole map -> mask chain for one region: aggregate, binarize, refine, keep exactly one component."""
    h, w = rgb.shape[:2]
    heat = aggregate_maps(maps, h, w)
    binary = binarize(heat, mask_cfg.threshold)
    refined = refine(
        binary, rgb, mask_cfg.refine, mask_cfg.refine_lambda, mask_cfg.refine_sigma_color, mask_cfg.get("bilateral")
    )
    return single_component(refined, mask_cfg.min_area, mask_cfg.max_area, reference_area(mask_cfg, nominal_size))


def expand_to_canvas(mask: np.ndarray, region, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=bool)
    canvas[region.top : region.bottom, region.left : region.right] = mask
    return canvas
