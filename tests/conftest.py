import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def categories_file():
    from helpers import FIXTURES

    return FIXTURES / "categories.json"


@pytest.fixture(scope="session")
def tiny_pipe():
    from mfexp.mosaicfusion.models import tiny_random_pipeline

    return tiny_random_pipeline(seed=0)
