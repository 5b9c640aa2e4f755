"""The synthetic set's policies that every augmenter shares: the per-image seed and the objects per image N.

Image ``index`` of a run with ``seed`` is decided by ``image_seed(seed, index)`` alone, so any sharding over
processes makes the same files, and runs with different seeds draw unrelated sets. Its number of objects is
``objects_per_image(num_objects, seed, index)``: the count itself, or one count of a list drawn by the same pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
