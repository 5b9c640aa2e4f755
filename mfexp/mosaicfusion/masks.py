"""From aggregated cross-attention maps to instance masks (pure functions on numpy arrays)."""
from __future__ import annotations

import cv2
import numpy as np


class MaskError(ValueError):
    """A region whose map cannot give a valid mask: the mosaic is skipped with this reason."""


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


def binarize(heat: np.ndarray, threshold="otsu") -> np.ndarray:
    """Foreground where the map exceeds Otsu's threshold (or a fixed one in (0, 1))."""
    if threshold == "otsu":
        level, _ = cv2.threshold(np.round(heat * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return heat * 255 > level
    t = float(threshold)
    if not 0 < t < 1:
        raise ValueError(f"generator.mask.threshold must be 'otsu' or a number in (0, 1), got {threshold!r}")
    return heat > t


def refine(mask: np.ndarray, rgb: np.ndarray, method="fgs", lam=256.0, sigma_color=16.0) -> np.ndarray:
    """Edge-aware refinement of a binary mask against the generated pixels.

    `fgs`: OpenCV's fast global smoother (an edge-aware weighted-least-squares solver, the closest well-kept
    relative of the bilateral solver the paper uses, whose OpenCV build lacks Eigen on PyPI); `joint_bilateral`:
    a joint bilateral filter; `none`. The smoothed mask is thresholded at half its maximum.
    """
    if method == "none":
        return mask
    src = mask.astype(np.float32)
    guide = np.ascontiguousarray(rgb, dtype=np.uint8)
    if method == "fgs":
        out = cv2.ximgproc.fastGlobalSmootherFilter(guide, src, float(lam), float(sigma_color))
    elif method == "joint_bilateral":
        out = cv2.ximgproc.jointBilateralFilter(guide.astype(np.float32), src, -1, float(sigma_color), 16.0)
    else:
        raise ValueError(f"generator.mask.refine must be fgs, joint_bilateral or none, got {method!r}")
    peak = out.max()
    return out > 0.5 * peak if peak > 0 else mask


def single_component(mask: np.ndarray, min_area=0.05, max_area=0.95) -> np.ndarray:
    """The one 4-connected component with area in [min_area, max_area] of the region, else MaskError."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    total = mask.size
    kept = [i for i in range(1, count) if min_area <= stats[i, cv2.CC_STAT_AREA] / total <= max_area]
    if len(kept) != 1:
        areas = sorted(round(float(stats[i, cv2.CC_STAT_AREA]) / total, 3) for i in range(1, count))
        raise MaskError(f"{len(kept)} components within {min_area:.0%}-{max_area:.0%} of the region (areas {areas[-4:]})")
    return labels == kept[0]


def region_mask(maps: dict, rgb: np.ndarray, mask_cfg) -> np.ndarray:
    """The whole map -> mask chain for one region: aggregate, binarize, refine, keep exactly one component."""
    h, w = rgb.shape[:2]
    heat = aggregate_maps(maps, h, w)
    binary = binarize(heat, mask_cfg.threshold)
    refined = refine(binary, rgb, mask_cfg.refine, mask_cfg.refine_lambda, mask_cfg.refine_sigma_color)
    return single_component(refined, mask_cfg.min_area, mask_cfg.max_area)


def expand_to_canvas(mask: np.ndarray, region, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=bool)
    canvas[region.top:region.bottom, region.left:region.right] = mask
    return canvas
