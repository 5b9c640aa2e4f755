"""The augmenters, one module each, named by ``conf/augmenter/<name>.yaml``'s ``_target_`` (the generate stage's
function, called as ``fn(cfg, run_dir)``): ``mosaicfusion``, ``cut_paste``, ``copy_paste`` (online: its part is
the training pipeline) and ``none``."""
