"""The run folder: every file and folder a run writes, named once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Where a run's stages read and write, under its run folder ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def synthetic(self) -> Path:
        """The generate stage's synthetic set: images/, annotations.json, gallery.jpg."""
        return self.root / "synthetic"

    @property
    def synthetic_annotations(self) -> Path:
        return self.synthetic / "annotations.json"

    @property
    def synthetic_images(self) -> Path:
        return self.synthetic / "images"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def last_checkpoint(self) -> Path:
        return self.train / "checkpoints" / "last.ckpt"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"

    @property
    def metrics(self) -> Path:
        """The evaluate stage's headline numbers (lvis-api fractions)."""
        return self.root / "metrics.json"

    @property
    def stage_times(self) -> Path:
        return self.root / "stage_times.json"

    @property
    def failed(self) -> Path:
        """Written when a stage raised: {stage, type, message, traceback, time}; removed by a later success."""
        return self.root / "failed.json"

    @property
    def wandb(self) -> Path:
        """wandb's own folder (offline runs: wandb/offline-run-*)."""
        return self.root / "wandb"

    def marker(self, stage: str) -> Path:
        """A finished stage's config hash, result and seconds: a re-run with the same config skips the stage."""
        return self.root / ".stages" / f"{stage}.json"
