"""The generate stage: the augmenter's synthetic set (or a copy of another run's), then the positive controls."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mfexp.fileio import atomic_write_json
from mfexp.runpaths import RunPaths
from mfexp.targets import locate
from mfexp.tracking import Tracker, is_rank_zero, synthetic_artifact

log = logging.getLogger(__name__)


def generate(cfg, run_dir: Path, tracker: Tracker = Tracker()) -> dict:
    """The augmenter named by `augmenter._target_`, called as fn(cfg, run_dir, tracker) (its options live in
    cfg.augmenter, what it makes in cfg.synthetic), or a copy of another run's synthetic set (`generate.reuse=PATH`);
    then the positive controls of `synthetic.corrupt`, if any (mfexp.corrupt). The synthetic set is logged as a
    dataset Artifact."""
    from omegaconf import OmegaConf

    from mfexp.corrupt import check_corrupt

    corrupt = check_corrupt(OmegaConf.select(cfg, "synthetic.corrupt"))
    reuse = OmegaConf.select(cfg, "generate.reuse")
    if reuse:
        result = reuse_synthetic(Path(reuse), run_dir)
    else:
        result = locate(cfg.augmenter._target_, "augmenter._target_")(cfg, run_dir, tracker)
    check_kept(result)
    result = corrupt_synthetic(cfg, run_dir, corrupt, result)
    paths = RunPaths(run_dir)
    if paths.synthetic_annotations.is_file():
        tracker.log_dataset(synthetic_artifact(run_dir), paths.synthetic_annotations, paths.synthetic_images)
    return result


def check_kept(result: dict) -> None:
    """An augmenter that planned images but kept none fails with its skip reasons."""
    planned = result.get("planned", 0)
    if planned and not result.get("kept"):
        reasons = ", ".join(f"{n} {k}" for k, n in result.get("skip_reasons", {}).items()) or "none given"
        raise ValueError(f"generate: kept 0 of {planned} planned images; skip reasons: {reasons}")


def synthetic_source(source: Path) -> tuple[Path, Path]:
    """The synthetic set that ``generate.reuse=source`` names (a run folder or its synthetic/ folder): (its folder,
    its clean annotations file). A FileNotFoundError naming the key where there is none."""
    source = RunPaths(source).synthetic if RunPaths(source).synthetic.is_dir() else source
    names = RunPaths(source.parent)  # the files' names inside a synthetic folder, whatever its own name
    ann = source / names.synthetic_clean_annotations.name
    ann = ann if ann.is_file() else source / names.synthetic_annotations.name
    if not ann.is_file() or not (source / names.synthetic_images.name).is_dir():
        raise FileNotFoundError(
            f"generate.reuse={source}: no synthetic set there (needs annotations.json and "
            "images/; point it at a run folder whose generate stage finished)"
        )
    return source, ann


def reuse_synthetic(source: Path, run_dir: Path) -> dict:
    """Copy a synthetic set (a run folder or its synthetic/ folder) into this run: the same data under other
    training settings or corruptions, without generating it again."""
    source, ann = synthetic_source(source)
    paths = RunPaths(run_dir)
    if paths.synthetic.resolve() == source.resolve():
        raise ValueError(f"generate.reuse={source} is this run's own synthetic folder")
    if paths.synthetic.exists():
        shutil.rmtree(paths.synthetic)
    shutil.copytree(source / paths.synthetic_images.name, paths.synthetic_images)
    shutil.copy2(ann, paths.synthetic_annotations)
    if (source / paths.synthetic_gallery.name).is_file():
        shutil.copy2(source / paths.synthetic_gallery.name, paths.synthetic_gallery)
    data = json.loads(ann.read_text())
    log.info(
        "generate: reused %d synthetic images (%d instances) from %s",
        len(data["images"]),
        len(data["annotations"]),
        source,
    )
    return {"reused": str(source), "kept": len(data["images"]), "instances": len(data["annotations"])}


def corrupt_synthetic(cfg, run_dir: Path, corrupt: dict, result: dict) -> dict:
    """Apply `synthetic.corrupt` to the run's synthetic set (clean copy kept as annotations_clean.json)."""
    from mfexp.corrupt import corrupt_lvis, is_active

    paths = RunPaths(run_dir)
    syn, ann, clean = paths.synthetic, paths.synthetic_annotations, paths.synthetic_clean_annotations
    if not ann.is_file():
        if is_active(corrupt):
            raise ValueError(
                f"synthetic.corrupt={corrupt} needs a synthetic set, but augmenter={cfg.augmenter.name} made none"
            )
        return result
    if not is_active(corrupt):
        clean.unlink(missing_ok=True)
        return result
    if not is_rank_zero():
        return result
    if not (clean.is_file() and json.loads(ann.read_text()).get("info", {}).get("corrupt")):
        shutil.copy2(ann, clean)  # the augmenter (or reuse) has just written a clean set
    data, summary = corrupt_lvis(json.loads(clean.read_text()), corrupt, int(cfg.seed))
    atomic_write_json(ann, data)
    from mfexp.draw import write_gallery

    write_gallery(syn, data["images"], data["annotations"], data["categories"], int(cfg.synthetic.gallery_size))
    log.info(
        "generate: positive control %s: %d of %d instances relabelled, masks %s",
        corrupt,
        summary["relabelled"],
        summary["instances"],
        summary["masks"],
    )
    return dict(result, corrupt=summary)
