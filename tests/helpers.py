"""What the tests share (imported as ``from helpers import ...``; pytest puts tests/ on the path)."""

from pathlib import Path

from mfexp.__main__ import compose  # noqa: F401  (the config `python -m mfexp <overrides>` runs with)

ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures"
