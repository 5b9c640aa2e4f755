"""The run folder: every file and folder a run writes, named once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import overload


class _Under:
    """A path under the run folder ``root``: ``RunPaths(root).<name>`` is ``root / parts[0] / parts[1] ...``."""

    def __init__(self, *parts: str, doc: str | None = None) -> None:
        self.parts = parts
        self.__doc__ = doc

    @overload
    def __get__(self, paths: None, owner: type) -> _Under: ...
    @overload
    def __get__(self, paths: RunPaths, owner: type) -> Path: ...
    def __get__(self, paths: RunPaths | None, owner: type) -> _Under | Path:
        return self if paths is None else paths.root.joinpath(*self.parts)


@dataclass(frozen=True)
class RunPaths:
    """Where a run's stages read and write, under its run folder ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # the run folder's layout
    synthetic = _Under("synthetic", doc="The generate stage's synthetic set: images/, annotations.json, gallery.jpg.")
    synthetic_annotations = _Under("synthetic", "annotations.json")
    synthetic_clean_annotations = _Under(
        "synthetic", "annotations_clean.json", doc="The set before `synthetic.corrupt` (only while one is active)."
    )
    synthetic_images = _Under("synthetic", "images")
    synthetic_gallery = _Under("synthetic", "gallery.jpg")
    synthetic_parts = _Under(
        "synthetic", "parts", doc="MosaicFusion's finished mosaics, one <index>.json each, and config.sha1."
    )
    train = _Under("train")
    last_checkpoint = _Under("train", "checkpoints", "last.ckpt")
    evaluate = _Under("evaluate")
    metrics = _Under("metrics.json", doc="The evaluate stage's headline numbers (lvis-api fractions).")
    stage_times = _Under("stage_times.json")
    versions = _Under(
        "versions.json",
        doc="{stage: the versions it ran with}: torch, diffusers, transformers, mmdet, mmcv, mfexp_commit, "
        "mfexp_dirty (mfexp.environment.run_versions), written as the stage starts.",
    )
    failed = _Under(
        "failed.json",
        doc="Written when a stage raised: {stage, type, message, traceback, time}; removed by a later success.",
    )
    wandb = _Under("wandb", doc="wandb's own folder (offline runs: wandb/offline-run-*).")
    hydra = _Under(".hydra", doc="The command's resolved config: config.yaml, hydra.yaml, overrides.yaml.")
    lock = _Under(".lock", doc="Locked while a command runs on the folder; holds that process's id.")

    def marker(self, stage: str) -> Path:
        """A finished stage's config hash, result and seconds: a re-run with the same config skips the stage."""
        return self.root / ".stages" / f"{stage}.json"
