import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def categories_file():
    return FIXTURES / "categories.json"


@pytest.fixture(scope="session")
def tiny_pipe():
    from mfexp.mosaicfusion.models import tiny_random_pipeline
    return tiny_random_pipeline(seed=0)


def compose(overrides=(), config_name="config"):
    """The composed Hydra config, as `python -m mfexp <overrides>` would see it (hydra: resolvers included)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    import mfexp.__main__  # noqa: F401  (registers the run-name resolver)
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)   # so ${hydra:...} interpolations resolve, as in a real run
    return cfg
