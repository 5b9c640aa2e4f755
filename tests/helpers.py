"""What the tests share (imported as ``from helpers import ...``; pytest puts tests/ on the path)."""

from pathlib import Path

from mfexp.compose import compose  # noqa: F401  (the config `python -m mfexp <overrides>` runs with)

ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A toy detector run short enough for a test (two iterations, tiny batches, no logger or progress bar).
TINY_DETECTOR = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.devices=1",  # one in-process trainer (devices=auto on a CPU is DDP, which relaunches the command)
    "detector.max_iters=2",
    "detector.batch_size=2",
    "detector.eval_batch_size=2",
    "detector.checkpoint_every=1",
    "detector.vis_images=2",
]
# Dataset files for a config that is built but never read.
DUMMY_FILES = dict(train_json="t.json", train_images="img", val_json="v.json", val_images="img")
