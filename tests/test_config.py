"""Every config option composes; the primary config has the documented shape."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import ROOT, compose

GROUPS = ["generator", "generator/model", "augmenter", "dataset", "detector", "trainer", "logger", "paths"]


def variants(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_primary_config_shape():
    cfg = compose()
    for key in ["generator", "augmenter", "dataset", "detector", "trainer", "logger", "paths", "stages", "seed"]:
        assert key in cfg, key
    assert list(cfg.stages) == ["generate", "train", "evaluate"]
    assert cfg.generator.model.path is None and cfg.dataset.name == "toyworld"   # the toy world by default
    assert cfg.logger.mode == "offline"


@pytest.mark.parametrize("group,variant", [(g, v) for g in GROUPS for v in variants(g)])
def test_every_group_variant_composes(group, variant):
    cfg = compose([f"{group}={variant}"])
    node = OmegaConf.select(cfg, group.replace("/", "."))
    assert node is not None
    # everything but hydra-runtime interpolations resolves
    OmegaConf.to_container(node, resolve=True)


@pytest.mark.parametrize("experiment", variants("experiment"))
def test_experiments_compose(experiment):
    cfg = compose([f"experiment={experiment}"])
    OmegaConf.to_container(cfg.generator, resolve=True)


def test_run_folder_named_by_overrides():
    from mfexp.__main__ import run_name
    assert run_name("") == "default"
    assert run_name("generator.num_objects=2,generator/model=toy") == "generator.num_objects=2,generator_model=toy"


def test_stages_are_checked():
    from mfexp.run import check_stages
    assert check_stages(["evaluate", "generate"]) == ["generate", "evaluate"]
    with pytest.raises(ValueError, match="choose a list"):
        check_stages(["gen"])
    with pytest.raises(ValueError):
        check_stages([])
