"""The augmenters, one module each, named by ``conf/augmenter/<name>.yaml``'s ``_target_`` (the generate stage's
function, called as ``fn(cfg, run_dir)``): ``mosaicfusion``, ``cut_paste``, ``copy_paste`` (online: its part is
the training pipeline) and ``none``."""

from mfexp.synthetic import IMAGE_SEEDS

MAKES_IMAGES = ("mfexp.augmenters.mosaicfusion.generate_mosaicfusion", "mfexp.augmenters.cut_paste.generate_cut_paste")
__all__ = ["IMAGE_SEEDS", "MAKES_IMAGES"]
