"""Run an experiment's stages in order on one run folder; skip stages already done for the same config."""
from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

from mfexp.data import config_hash
from mfexp.logging import is_rank_zero
from mfexp.lvis_io import atomic_write_json

log = logging.getLogger(__name__)

STAGE_ORDER = ("generate", "train", "evaluate")
# the config each stage depends on (together with every earlier stage's)
STAGE_KEYS = {"generate": ("augmenter", "generator", "dataset", "seed"),
              "train": ("detector",),
              "evaluate": ("evaluate",)}


class StageNotBuilt(RuntimeError):
    pass


def _call(dotted: str, what: str):
    module, _, name = dotted.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise StageNotBuilt(f"stage '{what}' is not built yet ({e})") from None
    return fn


def generate(cfg, run_dir: Path) -> dict:
    """The augmenter named by `augmenter._target_`, called as fn(cfg, run_dir) (its options live in cfg.augmenter)."""
    from hydra.utils import get_method
    return get_method(cfg.augmenter._target_)(cfg, run_dir)


def train(cfg, run_dir: Path) -> dict:
    return _call("mfexp.detection.stages.train", "train")(cfg, run_dir)


def evaluate(cfg, run_dir: Path) -> dict:
    return _call("mfexp.detection.stages.evaluate", "evaluate")(cfg, run_dir)


STAGES = {"generate": generate, "train": train, "evaluate": evaluate}


def stage_hash(cfg, stage: str) -> str:
    keys = [k for s in STAGE_ORDER[:STAGE_ORDER.index(stage) + 1] for k in STAGE_KEYS[s]]
    return config_hash(cfg, keys)


def check_stages(stages) -> list[str]:
    stages = list(stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ValueError(f"stages={stages}: choose a list from {list(STAGE_ORDER)}")
    return sorted(stages, key=STAGE_ORDER.index)


def run_experiment(cfg, run_dir: Path) -> dict:
    """Run the configured stages; return {stage: result}. A stage done for the same config is skipped."""
    run_dir = Path(run_dir)
    results, timings = {}, {}
    for stage in check_stages(cfg.stages):
        marker = run_dir / ".stages" / f"{stage}.json"
        h = stage_hash(cfg, stage)
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("hash") == h:
                log.info("stage %s: done earlier for this config, skipped (%s)", stage, marker)
                results[stage], timings[stage] = done["result"], done.get("seconds")
                continue
        log.info("stage %s: running", stage)
        start = time.time()
        results[stage] = STAGES[stage](cfg, run_dir) or {}
        timings[stage] = round(time.time() - start, 1)
        if is_rank_zero():
            atomic_write_json(marker, {"hash": h, "result": results[stage], "seconds": timings[stage]})
        log.info("stage %s: done in %.1f s", stage, timings[stage])
    if is_rank_zero():
        atomic_write_json(run_dir / "stage_times.json", timings)
    return results


def summary(results: dict, run_dir: Path) -> str:
    lines = [f"run folder: {run_dir}"]
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        keys = [k for k in ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP") if k in metrics]
        lines.append("mask/box AP in %, LVIS val:")
        lines.append("  ".join(f"{k:>8}" for k in keys))
        lines.append("  ".join(f"{100 * metrics[k]:8.2f}" if isinstance(metrics[k], (int, float)) else f"{metrics[k]!s:>8}"
                               for k in keys))
    gen = results.get("generate")
    if gen:
        lines.append("generate: " + ", ".join(f"{k}={v}" for k, v in gen.items() if not isinstance(v, dict)))
    times = run_dir / "stage_times.json"
    if times.exists():
        lines.append("seconds per stage: " + ", ".join(f"{k}={v}" for k, v in json.loads(times.read_text()).items()))
    return "\n".join(lines)
