"""Run an experiment's stages in order on one run folder; skip stages already done for the same config."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from mfexp.data import config_hash
from mfexp.fileio import atomic_write_json
from mfexp.logging import is_rank_zero
from mfexp.targets import locate

log = logging.getLogger(__name__)

STAGE_ORDER = ("generate", "train", "evaluate")
STAGES = {"generate": "mfexp.run.generate", "train": "mfexp.detection.stages.train",
          "evaluate": "mfexp.detection.stages.evaluate"}   # each called as fn(cfg, run_dir) -> result dict
# the config each stage depends on (together with every earlier stage's)
STAGE_KEYS = {"generate": ("augmenter", "generator", "dataset", "seed", "generate"),
              "train": ("detector", "train_data"),
              "evaluate": ("evaluate",)}


def generate(cfg, run_dir: Path) -> dict:
    """The augmenter named by `augmenter._target_`, called as fn(cfg, run_dir) (its options live in cfg.augmenter),
    or a copy of another run's synthetic set (`generate.reuse=PATH`); then the positive controls of
    `generator.corrupt`, if any (mfexp.corrupt)."""
    from omegaconf import OmegaConf

    from mfexp.corrupt import check_corrupt

    corrupt = check_corrupt(OmegaConf.select(cfg, "generator.corrupt"))
    reuse = OmegaConf.select(cfg, "generate.reuse")
    if reuse:
        result = reuse_synthetic(Path(reuse), run_dir)
    else:
        result = locate(cfg.augmenter._target_, "augmenter._target_")(cfg, run_dir)
    return corrupt_synthetic(cfg, run_dir, corrupt, result)


def reuse_synthetic(source: Path, run_dir: Path) -> dict:
    """Copy a synthetic set (a run folder or its synthetic/ folder) into this run: the same data under other
    training settings or corruptions, without generating it again."""
    source = source / "synthetic" if (source / "synthetic").is_dir() else source
    ann = source / "annotations_clean.json"
    ann = ann if ann.is_file() else source / "annotations.json"
    if not ann.is_file() or not (source / "images").is_dir():
        raise FileNotFoundError(f"generate.reuse={source}: no synthetic set there (needs annotations.json and "
                                "images/; point it at a run folder whose generate stage finished)")
    out = Path(run_dir) / "synthetic"
    if out.resolve() == source.resolve():
        raise ValueError(f"generate.reuse={source} is this run's own synthetic folder")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source / "images", out / "images")
    shutil.copy2(ann, out / "annotations.json")
    if (source / "gallery.jpg").is_file():
        shutil.copy2(source / "gallery.jpg", out / "gallery.jpg")
    data = json.loads(ann.read_text())
    log.info("generate: reused %d synthetic images (%d instances) from %s", len(data["images"]),
             len(data["annotations"]), source)
    return {"reused": str(source), "kept": len(data["images"]), "instances": len(data["annotations"])}


def corrupt_synthetic(cfg, run_dir: Path, corrupt: dict, result: dict) -> dict:
    """Apply `generator.corrupt` to the run's synthetic set (clean copy kept as annotations_clean.json)."""
    from mfexp.corrupt import corrupt_lvis, is_active

    syn = Path(run_dir) / "synthetic"
    ann, clean = syn / "annotations.json", syn / "annotations_clean.json"
    if not ann.is_file():
        if is_active(corrupt):
            raise ValueError(f"generator.corrupt={corrupt} needs a synthetic set, but augmenter="
                             f"{cfg.augmenter.name} made none")
        return result
    if not is_active(corrupt):
        clean.unlink(missing_ok=True)
        return result
    if not is_rank_zero():
        return result
    if not (clean.is_file() and json.loads(ann.read_text()).get("info", {}).get("corrupt")):
        shutil.copy2(ann, clean)   # the augmenter (or reuse) has just written a clean set
    data, summary = corrupt_lvis(json.loads(clean.read_text()), corrupt, int(cfg.seed))
    atomic_write_json(ann, data)
    from mfexp.draw import write_gallery
    write_gallery(syn, data["images"], data["annotations"], data["categories"], 16)
    log.info("generate: positive control %s: %d of %d instances relabelled, masks %s", corrupt,
             summary["relabelled"], summary["instances"], summary["masks"])
    return dict(result, corrupt=summary)


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
        results[stage] = locate(STAGES[stage], f"stage {stage}")(cfg, run_dir) or {}
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
