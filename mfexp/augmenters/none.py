"""`augmenter=none`: no synthetic set, the detector trains on the real data only (also the generate stage of
`augmenter=copy_paste`, whose augmentation happens in the training pipeline)."""

from __future__ import annotations

import logging
import shutil

from mfexp.runpaths import RunPaths
from mfexp.tracking import Tracker, is_rank_zero

log = logging.getLogger(__name__)


def no_augmentation(cfg, run_dir, tracker: Tracker = Tracker()) -> dict:
    """Real data only: no synthetic folder (a stale one from another augmenter is removed, by rank 0)."""
    synthetic = RunPaths(run_dir).synthetic
    if synthetic.exists() and is_rank_zero():
        shutil.rmtree(synthetic)
    log.info("augmenter=none: training on real data only")
    return {"synthetic_images": 0}
