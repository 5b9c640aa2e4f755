"""Mosaic layout: split a canvas into a grid of overlapping regions (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """One region of a mosaic canvas, in pixels (multiples of the VAE stride)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def latent(self, stride: int) -> Region:
        return Region(self.top // stride, self.left // stride, self.height // stride, self.width // stride)


@dataclass(frozen=True)
class MosaicLayout:
    height: int
    width: int
    regions: tuple[Region, ...]


def check_grid(grid, counts: list[int]) -> None:
    """A forced grid [rows, cols] must hold every N in `counts` (None: the grid follows N)."""
    if grid is None:
        return
    rows, cols = (int(g) for g in grid)
    if rows < 1 or cols < 1 or any(rows * cols != n for n in counts):
        raise ValueError(f"does not hold {' or '.join(map(str, counts))} regions (rows x cols must equal N)")


def grid_shape(
    num_objects: int, rng: np.random.Generator | None = None, grid: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Rows x cols for N >= 1 objects (`synthetic.check_num_objects`): 1 -> 1x1, 2 -> 1x2 or 2x1 (random), 4 -> 2x2,
    any N -> the most square grid; `grid` forces one (`check_grid`)."""
    if grid is not None:
        check_grid(grid, [num_objects])
        return int(grid[0]), int(grid[1])
    if num_objects == 2:
        horizontal = True if rng is None else bool(rng.integers(2))
        return (1, 2) if horizontal else (2, 1)
    rows = max(d for d in range(1, math.isqrt(num_objects) + 1) if num_objects % d == 0)
    return rows, num_objects // rows


def check_sizes(region_size, overlap, stride: int) -> None:
    """Sizes must be positive multiples of the stride; each region extends half the overlap past a centre line, so
    the overlap is smaller than the region."""
    for label, pair in (("region_size", region_size), ("overlap", overlap)):
        if len(pair) != 2:
            raise ValueError(f"generator.{label} must be [height, width], got {list(pair)}")
        for v in pair:
            if v < 0 or (label == "region_size" and v == 0):
                raise ValueError(f"generator.{label}={list(pair)} must be positive")
    if any(o >= r for o, r in zip(overlap, region_size)):
        raise ValueError(
            f"generator.overlap={list(overlap)} must be smaller than generator.region_size={list(region_size)}"
        )
    for v in region_size:
        if v % stride:
            raise ValueError(f"generator.region_size={list(region_size)} is not divisible by the VAE stride {stride}")
    for v in overlap:
        if v % (2 * stride):
            raise ValueError(
                f"generator.overlap={list(overlap)} must be a multiple of 2 x the VAE stride ({2 * stride})"
            )


def check_jitter(jitter, levels) -> None:
    """`jitter`: a ratio range 0 < low <= high; `levels`: None (continuous) or a count >= 1 of evenly spaced ratios."""
    lo, hi = jitter
    if not 0 < lo <= hi:
        raise ValueError(f"generator.jitter={list(jitter)} must be a range 0 < low <= high")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise ValueError(f"generator.jitter_levels={levels!r} must be null (continuous) or an integer >= 1")


def jitter_ratio(jitter, levels: int | None, rng: np.random.Generator) -> float:
    """A cut line's ratio: uniform over the range, or one of `levels` evenly spaced ratios (1 level: the middle), so
    that regions of different mosaics share shapes (and one denoiser call)."""
    lo, hi = jitter
    if hi == lo:
        return lo
    if levels is None:
        return rng.uniform(lo, hi)
    if levels == 1:
        return (lo + hi) / 2
    return lo + (hi - lo) * int(rng.integers(levels)) / (levels - 1)


def _boundaries(n: int, size: int, jitter, stride: int, rng: np.random.Generator, levels=None) -> list[int]:
    """Interior cut lines of n cells of `size`: each at (k - 1 + ratio) x size (`jitter_ratio`), stride-aligned."""
    cuts = []
    for k in range(1, n):
        ratio = jitter_ratio(jitter, levels, rng)
        cut = int(round((k - 1 + ratio) * size / stride)) * stride
        cuts.append(min(max(cut, stride), n * size - stride))
    return cuts


def mosaic_layout(
    num_objects: int, region_size, overlap, jitter, stride: int, rng: np.random.Generator, grid=None, jitter_levels=None
) -> MosaicLayout:
    """Split a (rows*h) x (cols*w) canvas into rows x cols regions around jittered cut lines.

    Each region reaches half the overlap past every interior cut line, so neighbours share `overlap` pixels.
    """
    check_sizes(region_size, overlap, stride)
    check_jitter(jitter, jitter_levels)
    rows, cols = grid_shape(num_objects, rng, grid)
    (h, w), (oh, ow) = region_size, overlap
    height, width = rows * h, cols * w
    ys = [0, *_boundaries(rows, h, jitter, stride, rng, jitter_levels), height]
    xs = [0, *_boundaries(cols, w, jitter, stride, rng, jitter_levels), width]
    regions = []
    for r in range(rows):
        top = max(ys[r] - oh // 2, 0) if r else 0
        bottom = min(ys[r + 1] + oh // 2, height) if r < rows - 1 else height
        for c in range(cols):
            left = max(xs[c] - ow // 2, 0) if c else 0
            right = min(xs[c + 1] + ow // 2, width) if c < cols - 1 else width
            regions.append(Region(top, left, bottom - top, right - left))
    return MosaicLayout(height, width, tuple(regions))


def gaussian_weights(height: int, width: int, sigma: float) -> np.ndarray:
    """Separable Gaussian weight over a region (sigma as a fraction of its size), peak 1 at the centre."""

    def axis(n):
        x = (np.arange(n) + 0.5) / n - 0.5
        return np.exp(-(x**2) / (2 * sigma**2))

    return np.outer(axis(height), axis(width)).astype(np.float32)
