"""The augmenters, one module each, named by ``conf/augmenter/<name>.yaml``'s ``_target_`` (the generate stage's
function, called as ``fn(cfg, run_dir)``): ``mosaicfusion``, ``cut_paste``, ``copy_paste`` (online: its part is
the training pipeline) and ``none``."""

import numpy as np

# Part of the generate stage's hash where an augmenter makes images (and of MosaicFusion's parts stamp): raised
# whenever the same config makes other images, so that an older run folder never passes its set off as current: the
# generate stage runs again, and MosaicFusion refuses the old parts (2: image seeds from image_seed, was seed + index).
IMAGE_SEEDS = 2
MAKES_IMAGES = ("mfexp.augmenters.mosaicfusion.generate_mosaicfusion", "mfexp.augmenters.cut_paste.generate_cut_paste")


def image_seed(seed: int, index: int) -> int:
    """The seed of synthetic image ``index`` in a run with ``seed``: a function of the pair alone, so any sharding over
    processes gives the same files, and unrelated between runs' seeds. (It was ``seed + index``, under which image i
    of seed 1 was image i + 1 of seed 0 whenever both had the same main category: the synthetic sets of seeds 0, 1
    and 2 shared most of their images, and seeds replicated the training but hardly the synthetic set.) Two settings
    run with one seed still draw the same noise for image i: paired comparisons keep their common random numbers."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])
