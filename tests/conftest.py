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


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """A tiny LVIS-format dataset (6 train, 3 val images), made once per test module (a module may override it)."""
    from fixtures_detection import make_lvis_fixture

    return make_lvis_fixture(tmp_path_factory.mktemp("lvis_fixture"), num_train=6, num_val=3)
