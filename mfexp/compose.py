"""The config of `python -m mfexp <overrides>`: where conf/ lies, the resolvers its YAML files use, and
``compose(overrides)``, the same config outside a run (tests, checks, benchmarks). Importing it registers both the
resolvers and the config schemas (mfexp.config) with Hydra."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import mfexp.config  # noqa: F401  (registers the config schemas in Hydra's ConfigStore)

ROOT = Path(__file__).resolve().parent.parent  # the repository: conf/ and sweeps/
CONFIG_DIR = str(ROOT / "conf")


def run_name(override_dirname: str) -> str:
    """Run folder name from the command-line overrides ('default' for none), safe as a path component."""
    name = override_dirname.replace("/", "_").replace("+", "") or "default"
    return name[:200]


if not OmegaConf.has_resolver("mfexp_run_name"):
    OmegaConf.register_new_resolver("mfexp_run_name", run_name)
if not OmegaConf.has_resolver("mfexp_per"):  # ${mfexp_per:40,${generator.num_objects}}: a budget split N ways
    OmegaConf.register_new_resolver("mfexp_per", lambda total, n: max(1, round(int(total) / int(n))))
if not OmegaConf.has_resolver("mfexp_root"):  # conf/config.yaml: hydra.searchpath -> sweeps/
    OmegaConf.register_new_resolver("mfexp_root", lambda: str(ROOT))


def compose(overrides=()) -> DictConfig:
    """The config `python -m mfexp <overrides>` runs with, outside a run (tests, checks, benchmarks); ``${hydra:...}``
    interpolations resolve as in a run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg
