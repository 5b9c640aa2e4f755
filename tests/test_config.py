"""Every config option composes; the primary config has the documented shape."""

import pytest
from helpers import ROOT, compose
from omegaconf import OmegaConf

GROUPS = ["synthetic", "generator", "generator/model", "augmenter", "dataset", "detector", "trainer", "logger", "paths"]


def variants(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_primary_config_shape():
    cfg = compose()
    groups = ["synthetic", "generator", "augmenter", "dataset", "detector", "trainer", "logger", "paths"]
    for key in [*groups, "stages", "seed"]:
        assert key in cfg, key
    assert list(cfg.stages) == ["generate", "train", "evaluate"]
    assert cfg.generator.model.path is None and cfg.dataset.name == "toyworld"  # the toy world by default
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
    from mfexp.compose import run_name

    assert run_name("") == "default"
    assert run_name("generator.num_objects=2,generator/model=toy") == "generator.num_objects=2,generator_model=toy"


def test_stages_are_checked():
    from mfexp.run import check_stages

    assert check_stages(["evaluate", "generate"]) == ["generate", "evaluate"]
    with pytest.raises(ValueError, match="choose a list"):
        check_stages(["gen"])
    with pytest.raises(ValueError):
        check_stages([])


def yaml_keys(group: str, variant: str) -> set:
    """The keys a group's YAML file sets itself (its defaults list and included files aside)."""
    raw = OmegaConf.load(ROOT / "conf" / group / f"{variant}.yaml")
    return set(raw) - {"defaults"}


@pytest.mark.parametrize(
    "group,variant", [(g, v) for g in ["synthetic", "generator/model", "dataset", "detector"] for v in variants(g)]
)
def test_schemas_add_no_key(group, variant):
    """A schema types the keys the YAML sets and adds none, so run folders' stage hashes stay as they were."""
    node = OmegaConf.select(compose([f"{group}={variant}"]), group.replace("/", "."))
    assert set(node) == yaml_keys(group, variant)


@pytest.mark.parametrize("augmenter", variants("augmenter"))
def test_what_the_generate_stage_makes_is_set_in_one_node(augmenter):
    """Counts, categories, controls and files of the synthetic set are `synthetic.*` only, for every augmenter."""
    cfg = compose([f"augmenter={augmenter}"])
    shared = set(cfg.synthetic)
    assert {"images_per_category", "max_images", "corrupt", "gallery_size", "jpeg_quality"} <= shared
    assert "num_objects" in cfg.generator and "num_objects" not in shared  # the user's key: generator.num_objects
    assert not shared & set(cfg.generator) and not shared & set(cfg.augmenter)
    assert "max_mosaics" not in cfg.generator and "objects_per_image" not in cfg.augmenter


@pytest.mark.parametrize(
    "override,key",
    [
        ("generator.num_inference_steps=ten", "num_inference_steps"),
        ("generator.mask.min_area=[1]", "min_area"),
        ("generator.model.allow_download=perhaps", "allow_download"),
        ("seed=abc", "seed"),
        ("trainer.num_nodes=x", "num_nodes"),
        ("logger.enabled=maybe", "enabled"),
        ("dataset.num_train_images=1.5", "num_train_images"),
        ("detector.max_iters=many", "max_iters"),
        ("generator.no_such_key=1", "no_such_key"),
        ("synthetic.corrupt.labels=half", "labels"),
        ("task_name=x", "task_name"),
        ("paths.root_dir=x", "root_dir"),
    ],
)
def test_bad_type_or_unknown_key_fails_at_composition(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose([override])
    assert key in str(e.value) + str(e.value.__cause__)


@pytest.mark.parametrize(
    "overrides,msg",
    [
        (
            ["generator.overlap=[1000,1000]"],
            "generator.overlap=[1000, 1000] must be smaller than generator.region_size",
        ),
        (["generator.prompt='no placeholder'"], "generator.prompt='no placeholder' must contain {name}"),
        (["generator.blend_sigma=0"], "generator.blend_sigma=0.0 must be > 0"),
        (["synthetic.max_images=0"], "synthetic.max_images=0 must be >= 1 or null"),
        (["synthetic.gallery_size=-3"], "synthetic.gallery_size=-3 must be >= 0"),
        (["synthetic.jpeg_quality=500"], "synthetic.jpeg_quality=500 must be in [1, 100]"),
        (["generator.num_objects=0"], "generator.num_objects=0 must be a positive integer or a non-empty list"),
        (["generator.num_objects=four"], "generator.num_objects='four' must be a positive integer"),
        (["generator.num_objects=[2,0]"], "generator.num_objects=[2, 0] must be a positive integer"),
        (["generator.num_objects=[]"], "generator.num_objects=[] must be a positive integer"),
        (["generator.grid=[1,3]"], "generator.grid=[1, 3] does not hold 4 regions"),
        (["generator.num_objects=[2,4]", "generator.grid=[1,2]"], "generator.grid=[1, 2] does not hold 2 or 4 regions"),
        (["+generator.anything=1"], "generator.anything is not a key of this config"),
        (["+synthetic.num_objects=2"], "synthetic.num_objects is not a key of this config"),
        (["+augmenter.scale=[0.1,0.2]"], "augmenter.scale is not a key of this config"),
        (["trainer.devices=0"], "trainer.devices=0 must be"),
        (
            ["generator.guidance_window=[0.9,0.35,8]"],
            "generator.guidance_window=[0.9, 0.35, 8.0] must be null or [low, high, scale] with 0 <= low < high <= 1",
        ),
        (["generator.guidance_window=[0.2,0.5]"], "generator.guidance_window=[0.2, 0.5] must be null or [low, high"),
        (["generator.mask.threshold=foo"], "generator.mask.threshold='foo' must be otsu or a number in (0, 1)"),
        (["seed=-1"], "seed=-1 must be >= 0"),
        (["generator.num_inference_steps=0"], "generator.num_inference_steps=0 must be >= 1"),
        (["synthetic.images_per_category=0"], "synthetic.images_per_category=0 must be >= 1"),
        (["train_data=fake"], "train_data='fake' must be one of real, synthetic, both"),
        (["generator.dtype=fp8"], "generator.dtype='fp8' must be one of fp32, fp16, bf16"),
        (["generator.scheduler=fast"], "generator.scheduler='fast' must be one of default, pndm"),
        (["generator.decode=tiles"], "generator.decode='tiles' must be one of canvas, regions"),
        (["generator.mask.refine=blur"], "generator.mask.refine='blur' must be one of bilateral, fgs"),
        (
            ["generator.mask.area_reference=canvas"],
            "generator.mask.area_reference='canvas' must be one of nominal, region",
        ),
        (["augmenter=cut_paste", "augmenter.scale=[0.5,0.1]"], "augmenter.scale=[0.5, 0.1] must be a pair"),
        (
            ["augmenter=cut_paste", "augmenter.background=sky"],
            "augmenter.background='sky' must be one of image, uniform",
        ),
        (["augmenter=cut_paste", "synthetic.images_per_category=0"], "synthetic.images_per_category=0 must be >= 1"),
        (["augmenter=cut_paste", "synthetic.max_images=-1"], "synthetic.max_images=-1 must be >= 1"),
        (["augmenter=cut_paste", "augmenter.flip=1.5"], "augmenter.flip=1.5 must be a probability"),
        (["synthetic.corrupt.labels=1.5"], "synthetic.corrupt.labels is a share of instances in [0, 1], got 1.5"),
        (
            ["synthetic.corrupt.masks=dilate", "synthetic.corrupt.dilate_px=0"],
            "synthetic.corrupt.dilate_px must be >= 1",
        ),
        (["synthetic.corrupt.masks=blob"], "synthetic.corrupt.masks must be one of"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(overrides, msg):
    """Values a new user may try (stages=[generate] generator/model=tiny_random): each fails before any stage runs,
    with one line that names the key and what it allows (the CLI prints it as `error: ...` and exits 2)."""
    from mfexp.config import validate

    cfg = compose(["stages=[generate]", "generator/model=tiny_random", *overrides])
    with pytest.raises(ValueError) as e:
        validate(cfg)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=smoke"],
        ["experiment=lvis_mosaicfusion"],
        ["augmenter=cut_paste"],
        ["trainer.devices=-1"],
        ["trainer.devices=[0,1]"],
        ["trainer.devices=auto"],
        ["generator.mask.threshold=0.4"],
        ["generator.guidance_window=[0.35,0.9,8]"],
        ["generator/model=sd14"],
        ["augmenter=mosaicfusion_copy_paste"],
        ["+trainer.gradient_clip_val=1.0"],
    ],
)
def test_good_configs_validate(overrides):
    from mfexp.config import validate

    validate(compose(overrides))


def test_allow_download_from_the_environment_is_a_bool(monkeypatch):
    """sd14's allow_download comes from MFEXP_ALLOW_DOWNLOAD as text; the schema makes "false" False, not truthy."""
    monkeypatch.delenv("MFEXP_ALLOW_DOWNLOAD", raising=False)
    assert compose(["generator/model=sd14"]).generator.model.allow_download is False
    monkeypatch.setenv("MFEXP_ALLOW_DOWNLOAD", "true")
    assert compose(["generator/model=sd14"]).generator.model.allow_download is True


def test_composed_config_pickles():
    """Sweeps on SLURM and spawned processes pickle the config: the schema classes must be importable by name."""
    import pickle

    cfg = compose(["augmenter=cut_paste", "dataset=lvis_v1", "detector=mask_rcnn_r50_fpn_lvis"])
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and OmegaConf.get_type(again.augmenter) is OmegaConf.get_type(cfg.augmenter)
