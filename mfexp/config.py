"""The config's schema and the checks its types cannot state.

The schemas below are dataclasses (built by `schema` from a name and its typed keys), registered in Hydra's
ConfigStore; the YAML files in conf/ hold the values (and their comments). `Config` types every group
(conf/config.yaml names it first in its defaults list); a YAML file with more keys than its group's base type names a
subclass schema in its own defaults list as ``/schema/<group>/<name>@_here_`` (e.g. conf/augmenter/cut_paste.yaml):
the schemas live in groups of their own under ``schema/``, so they are never offered as a group's choices (a schema
alone has no values). No key has a default (each is MISSING
until a YAML file sets it). A bad type or an unknown key fails at composition, with Hydra's message naming the key.
The schemas add no key of their own, so the resolved config (and the run folders' stage hashes) is the YAML's.
`validate` checks ranges and choices right after composition, before any stage runs.
"""

import dataclasses
import math
from dataclasses import make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

TRAIN_DATA = ("real", "synthetic", "both")
STAGE_ORDER = ("generate", "train", "evaluate")  # the order the stages run in, whatever order `stages` lists


def schema(name: str, /, *bases: type, **keys: Any) -> type:
    """A dataclass `name` (subclass of `bases`) with the typed `keys`, none with a default (MISSING in OmegaConf).
    It belongs to this module (assigned to a module-level `name`), so configs typed by it pickle (DDP, SLURM jobs)."""
    return make_dataclass(name, list(keys.items()), bases=bases, namespace={"__module__": __name__})


# One schema per statement, several keys a line: `key=type`; a nested node is typed by its schema.
# fmt: off

# ---------------------------------------------------------------------------------------------------- synthetic

# what the generate stage makes, whichever augmenter makes it (conf/synthetic/default.yaml)
CorruptConfig = schema("CorruptConfig", labels=float, masks=str, dilate_px=int)
SyntheticConfig = schema(
    "SyntheticConfig",
    main_frequency=list[str], mixed_frequency=list[str], images_per_category=int, max_images=int | None,
    corrupt=CorruptConfig, gallery_size=int, jpeg_quality=int,
)

# ---------------------------------------------------------------------------------------------------- generator

ModelConfig = schema(
    "ModelConfig",
    family=str, path=str | None, revision=str | None, allow_download=bool, region_size=list[int], overlap=list[int],
    num_inference_steps=int, guidance_scale=float, guidance_window=list[float] | None, dtype=str, decode=str,
    attention_resolutions=list[int], batch_size=int,
)
TinyRandomModelConfig = schema("TinyRandomModelConfig", ModelConfig, seed=int, size=str)
# the MM-DiT families (sd3, flux): T5 context, which tokenizer's token is the object token, the captured blocks
MMDiTModelConfig = schema(
    "MMDiTModelConfig", ModelConfig,
    max_sequence_length=int, object_token=str, joint_blocks=list[int] | None, single_blocks=list[int],
    true_cfg_scale=float,
)
TinyMMDiTModelConfig = schema("TinyMMDiTModelConfig", MMDiTModelConfig, seed=int, size=str)
AttentionConfig = schema("AttentionConfig", resolutions=list[int], blocks=list[str], steps=list[int | None])
BilateralConfig = schema(
    "BilateralConfig",
    passes=int, sigma_spatial=float, sigma_luma=float, sigma_chroma=float, lam=float, confidence=float,
)
MaskConfig = schema(
    "MaskConfig",
    threshold=Any,  # otsu | a number in (0, 1)
    refine=str, refine_lambda=float, refine_sigma_color=float, bilateral=BilateralConfig,
    min_area=float, max_area=float, area_reference=str, nominal_size=list[int] | None,
)
GeneratorConfig = schema(
    "GeneratorConfig",
    model=ModelConfig,
    num_objects=Any,  # objects per image N: a count, or a list of counts (each image picks one by its seed)
    grid=list[int] | None, region_size=list[int], overlap=list[int], jitter=list[float], jitter_levels=int | None,
    categories=str | None, prompt=str, negative_prompt=str, num_inference_steps=int, guidance_scale=float,
    guidance_window=list[float] | None, scheduler=str, blend_sigma=float, batch_size=int, compile=bool, decode=str,
    dtype=str, attention=AttentionConfig, mask=MaskConfig,
)

# ---------------------------------------------------------------------------------------------------- augmenters

AugmenterConfig = schema("AugmenterConfig", name=str, _target_=str, uses=list[str])
CopyPasteOptions = schema(
    "CopyPasteOptions",
    image_size=list[int] | None, ratio_range=list[float], max_num_pasted=int,
    bbox_occluded_thr=float | None, mask_occluded_thr=float | None, selected=bool,
)
CopyPasteConfig = schema("CopyPasteConfig", AugmenterConfig, copy_paste=CopyPasteOptions)
CutPasteConfig = schema(
    "CutPasteConfig", AugmenterConfig,
    scale=list[float], flip=float, blur_sigma=float, min_source_area=int, min_visible_area=int,
    min_visible_fraction=float, background=str,
)

# ---------------------------------------------------------------------------------------------------- datasets

DatasetConfig = schema("DatasetConfig", name=str, _target_=str, cache_dir=str, novel=str)
ToyWorldConfig = schema(
    "ToyWorldConfig", DatasetConfig,
    seed=int, num_train_images=int, num_val_images=int, image_size=int, colours=list[str] | None,
    shapes=list[str] | None, num_novel=int, zipf_exponent=float, min_instances=int, max_instances=int,
    object_scale=list[float], min_visible_area=int, min_visible_fraction=float, num_neg_categories=int | None,
    image_format=str,
)
LvisConfig = schema(
    "LvisConfig", DatasetConfig,
    root=str, train_json=str, val_json=str, train_images=str, val_images=str,
)

# ---------------------------------------------------------------------------------------------------- detector

DetectorConfig = schema(
    "DetectorConfig",
    name=str, base=str, pretrained=str | None, max_iters=int | None, batch_size=int, eval_batch_size=int,
    num_workers=int, checkpoint_every=int, synthetic_repeat=int, vis_images=int, vis_score_thr=float,
    overrides=dict[str, Any],
)
# the run's length in epochs or iterations (the toy's: +detector.epochs)
EpochDetectorConfig = schema("EpochDetectorConfig", DetectorConfig, epochs=int | None)

# ---------------------------------------------------------------------------------------------------- the rest

TrainerConfig = schema(  # Lightning Trainer arguments (others with a leading +: +trainer.gradient_clip_val=1)
    "TrainerConfig",
    accelerator=str,
    devices=Any,  # a count (-1: all), a list of ids, or auto
    num_nodes=int, strategy=str, precision=Any, log_every_n_steps=int, enable_progress_bar=bool,
)
LoggerConfig = schema("LoggerConfig", enabled=bool, project=str, mode=str, group=str | None)
PathsConfig = schema("PathsConfig", log_dir=str, cache_dir=str, data_dir=str)
GenerateConfig = schema("GenerateConfig", reuse=str | None)
EvaluateConfig = schema("EvaluateConfig", checkpoint=str | None)
Config = schema(
    "Config",
    synthetic=SyntheticConfig, generator=GeneratorConfig,
    augmenter=AugmenterConfig,  # a group's YAML file with more keys names a schema of more (a subclass)
    dataset=DatasetConfig, detector=DetectorConfig, trainer=TrainerConfig, logger=LoggerConfig, paths=PathsConfig,
    stages=list[str], seed=int, train_data=str, generate=GenerateConfig, evaluate=EvaluateConfig,
)

# fmt: on


def register() -> None:
    """Store the schemas under the names the YAML defaults lists use: the primary config's at the top, a group's
    subclass schemas under ``schema/<group>`` (not in the group itself, whose entries are its choices)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="schema/generator/model", name="tiny_random", node=TinyRandomModelConfig)
    cs.store(group="schema/augmenter", name="copy_paste", node=CopyPasteConfig)
    cs.store(group="schema/augmenter", name="cut_paste", node=CutPasteConfig)
    cs.store(group="schema/dataset", name="toyworld", node=ToyWorldConfig)
    cs.store(group="schema/dataset", name="lvis", node=LvisConfig)
    cs.store(group="schema/detector", name="epoch_detector", node=EpochDetectorConfig)
    cs.store(group="schema/generator/model", name="mmdit", node=MMDiTModelConfig)
    cs.store(group="schema/generator/model", name="tiny_mmdit", node=TinyMMDiTModelConfig)


register()


# ---------------------------------------------------------------------------------------------------- ranges


def _check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        value = list(value) if isinstance(value, ListConfig) else value
        raise ValueError(f"{key}={value!r} {rule}")


def _check_all(node, prefix: str, checks: list) -> None:
    """`checks`: (ok, key under `node`, rule); the first failing one raises."""
    for ok, key, rule in checks:
        _check(ok, f"{prefix}.{key}", OmegaConf.select(node, key), rule)


def _owned(key: str, value, check) -> None:
    """A rule its library module owns: ``check(value)`` raises a ValueError that speaks of its argument; here it
    names the config ``key``."""
    try:
        check(value)
    except ValueError as e:
        _check(False, key, value, str(e))


def _choices(choices) -> str:
    return f"must be one of {', '.join(choices)}"


def check_stages(stages) -> list[str]:
    """``stages`` in run order; a ValueError unless it is a non-empty list of stage names."""
    stages = list(stages)
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad or not stages:
        raise ValueError(f"stages={stages}: choose a list from {list(STAGE_ORDER)}")
    return sorted(stages, key=STAGE_ORDER.index)


def validate_generator(g) -> None:
    from mfexp.mosaicfusion.layout import check_grid, check_jitter, check_sizes
    from mfexp.mosaicfusion.masks import check_area_bounds, check_area_reference, check_refine, check_threshold
    from mfexp.mosaicfusion.models import DTYPE_CHOICES, SCHEDULERS
    from mfexp.mosaicfusion.pipeline import DECODE_MODES, check_guidance_window
    from mfexp.synthetic import check_num_objects

    check_sizes(g.region_size, g.overlap, 1)  # again with the VAE's stride when the model is loaded
    check_jitter(g.jitter, g.jitter_levels)
    _owned("generator.num_objects", g.num_objects, check_num_objects)
    _owned("generator.grid", g.grid, lambda grid: check_grid(grid, check_num_objects(g.num_objects)))
    _owned("generator.guidance_window", g.guidance_window, check_guidance_window)
    _owned("generator.mask.threshold", g.mask.threshold, check_threshold)
    _owned("generator.mask.refine", g.mask.refine, check_refine)
    _owned("generator.mask.area_reference", g.mask.area_reference, check_area_reference)
    _owned("generator.mask.min_area", g.mask.min_area, lambda a: check_area_bounds(a, g.mask.max_area))
    schedulers = ["default", *SCHEDULERS]
    checks = [
        (g.dtype in DTYPE_CHOICES, "dtype", _choices(DTYPE_CHOICES)),
        (g.scheduler in schedulers, "scheduler", _choices(schedulers)),
        (g.decode in DECODE_MODES, "decode", _choices(DECODE_MODES)),
        ("{name}" in g.prompt, "prompt", "must contain {name}, the category's name"),
        (g.num_inference_steps >= 1, "num_inference_steps", "must be >= 1"),
        (g.guidance_scale >= 0, "guidance_scale", "must be >= 0"),
        (math.isfinite(g.blend_sigma) and g.blend_sigma > 0, "blend_sigma", "must be > 0 (x the region's size)"),
        (g.batch_size >= 1, "batch_size", "must be >= 1"),
    ]
    _check_all(g, "generator", checks)


def validate_synthetic(s) -> None:
    from mfexp.synthetic import check_images_per_category, check_max_images

    _owned("synthetic.images_per_category", s.images_per_category, check_images_per_category)
    _owned("synthetic.max_images", s.max_images, check_max_images)
    checks = [
        (s.gallery_size >= 0, "gallery_size", "must be >= 0"),
        (1 <= s.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]"),
    ]
    _check_all(s, "synthetic", checks)
    from mfexp.corrupt import check_corrupt  # the positive controls' own checks (one place: mfexp/corrupt.py)

    check_corrupt(s.corrupt)


def validate_cut_paste(a) -> None:
    scale = len(a.scale) == 2 and 1e-3 <= a.scale[0] <= a.scale[1] <= 1.0
    checks = [
        (scale, "scale", "must be a pair [low, high] with 0.001 <= low <= high <= 1"),
        (0.0 <= a.flip <= 1.0, "flip", "must be a probability in [0, 1]"),
        (a.blur_sigma >= 0, "blur_sigma", "must be >= 0"),
        (a.min_source_area >= 1, "min_source_area", "must be >= 1"),
        (a.min_visible_area >= 1, "min_visible_area", "must be >= 1"),
        (0.0 <= a.min_visible_fraction < 1.0, "min_visible_fraction", "must be in [0, 1)"),
        (a.background in ("image", "uniform"), "background", _choices(("image", "uniform"))),
    ]
    _check_all(a, "augmenter", checks)


def validate_trainer(t) -> None:
    d = t.devices
    ok = (
        d == "auto"
        or (isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1))
        or (isinstance(d, str) and d.replace(",", "").strip().isdigit())
        or (not isinstance(d, (int, str)) and len(d) > 0)
    )
    _check(ok, "trainer.devices", d, "must be a count >= 1, -1 (all), a list of device ids, or auto")
    _check(t.num_nodes >= 1, "trainer.num_nodes", t.num_nodes, "must be >= 1")
    precisions = lightning_precisions()
    _check(t.precision in precisions, "trainer.precision", t.precision, _choices(map(str, precisions)))


def lightning_precisions() -> tuple:
    """The values Lightning's Trainer takes as ``precision`` (its own list: 64, 32, 16, "bf16-mixed" ...)."""
    from typing import get_args

    from pytorch_lightning.trainer.connectors.accelerator_connector import _PRECISION_INPUT

    def flat(t) -> tuple:
        args = get_args(t)
        return tuple(a for arg in args for a in flat(arg)) if args else (t,)

    return flat(_PRECISION_INPUT)


# nodes whose extra keys (`+trainer.gradient_clip_val=1`) go on to a library that checks them itself
OPEN_NODES = ("trainer",)


def check_known_keys(cfg, prefix: str = "") -> None:
    """Every key of a schema-typed node is one its schema names: a key added with `+` that no code reads
    (`+generator.anything=1`) is an error, except under OPEN_NODES."""
    if not OmegaConf.is_dict(cfg):
        return
    kind = OmegaConf.get_type(cfg)
    known = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if path in OPEN_NODES or key == "hydra":
            continue
        if known is not None and key not in known:
            raise ValueError(
                f"{path} is not a key of this config: nothing reads it (is it misspelt, or under another node?)"
            )
        check_known_keys(cfg._get_node(key), f"{path}.")


def validate(cfg) -> None:
    """Ranges and choices the schema's types cannot state; a ValueError names the key and what it allows."""
    check_known_keys(cfg)
    check_stages(cfg.stages)
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(cfg.train_data in TRAIN_DATA, "train_data", cfg.train_data, _choices(TRAIN_DATA))
    validate_trainer(cfg.trainer)
    validate_synthetic(cfg.synthetic)
    validate_generator(cfg.generator)
    from mfexp.augmenters import check_uses

    _owned("augmenter.uses", cfg.augmenter.uses, check_uses)
    if OmegaConf.get_type(cfg.augmenter) is CutPasteConfig:
        validate_cut_paste(cfg.augmenter)


# keys added after run folders were made with configs that lack them: hashed only when not null, so a folder made
# before a key existed still resumes (and its finished stages are still skipped) while the key keeps its default
HASHED_WHEN_SET = ("generator.guidance_window", "generator.model.guidance_window")


def config_hash(cfg, keys, salt=None, drop=()) -> str:
    """Short hash of the resolved config under ``keys`` (missing keys count as null), less the dotted keys of
    ``drop`` (``augmenter.uses``) and those of HASHED_WHEN_SET that are null, and of ``salt`` unless None. Keys are
    hashed by name: ``generator`` and ``generator.num_objects`` hash differently."""
    import hashlib
    import json

    picked = {} if salt is None else {"_salt": salt}
    for k in keys:
        v = OmegaConf.select(cfg, k)
        picked[k] = OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
    unset = [path for path in HASHED_WHEN_SET if OmegaConf.select(cfg, path) is None]
    for path in [*drop, *unset]:
        *parents, leaf = path.split(".")
        node: Any = picked
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]
