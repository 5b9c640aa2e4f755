"""The config's schema and the checks its types cannot state.

The dataclasses below are registered in Hydra's ConfigStore; the YAML files in conf/ hold the values (and their
comments). `Config` types every group (conf/config.yaml names it first in its defaults list); a YAML file with more
keys than its group's base type names a subclass schema in its own defaults list (e.g. conf/augmenter/cut_paste.yaml).
A bad type or an unknown key fails at composition, with Hydra's message naming the key. The schemas add no key of
their own, so the resolved config (and the run folders' stage hashes) is the YAML's. `validate` checks ranges and
choices right after composition, before any stage runs.
"""

import math
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, ListConfig, OmegaConf

TRAIN_DATA = ("real", "synthetic", "both")


# ---------------------------------------------------------------------------------------------------- generator


@dataclass
class ModelConfig:
    path: str | None = MISSING
    revision: str | None = MISSING
    allow_download: bool = MISSING
    region_size: list[int] = MISSING
    overlap: list[int] = MISSING
    num_inference_steps: int = MISSING
    guidance_scale: float = MISSING
    dtype: str = MISSING
    decode: str = MISSING
    attention_resolutions: list[int] = MISSING


@dataclass
class TinyRandomModelConfig(ModelConfig):
    seed: int = MISSING
    size: str = MISSING


@dataclass
class AttentionConfig:
    resolutions: list[int] = MISSING
    blocks: list[str] = MISSING
    steps: list[int | None] = MISSING


@dataclass
class BilateralConfig:
    passes: int = MISSING
    sigma_spatial: float = MISSING
    sigma_luma: float = MISSING
    sigma_chroma: float = MISSING
    lam: float = MISSING
    confidence: float = MISSING


@dataclass
class MaskConfig:
    threshold: Any = MISSING  # otsu | a number in (0, 1)
    refine: str = MISSING
    refine_lambda: float = MISSING
    refine_sigma_color: float = MISSING
    bilateral: BilateralConfig = MISSING
    min_area: float = MISSING
    max_area: float = MISSING
    area_reference: str = MISSING
    nominal_size: list[int] | None = MISSING


@dataclass
class CorruptConfig:
    labels: float = MISSING
    masks: str = MISSING
    dilate_px: int = MISSING


@dataclass
class GeneratorConfig:
    model: ModelConfig = MISSING
    num_objects: int = MISSING
    grid: list[int] | None = MISSING
    region_size: list[int] = MISSING
    overlap: list[int] = MISSING
    jitter: list[float] = MISSING
    main_frequency: list[str] = MISSING
    mixed_frequency: list[str] = MISSING
    categories: str | None = MISSING
    prompt: str = MISSING
    negative_prompt: str = MISSING
    images_per_category: int = MISSING
    max_mosaics: int | None = MISSING
    num_inference_steps: int = MISSING
    guidance_scale: float = MISSING
    scheduler: str = MISSING
    blend_sigma: float = MISSING
    batch_size: int = MISSING
    decode: str = MISSING
    dtype: str = MISSING
    attention: AttentionConfig = MISSING
    mask: MaskConfig = MISSING
    corrupt: CorruptConfig = MISSING
    gallery_size: int = MISSING
    jpeg_quality: int = MISSING


# ---------------------------------------------------------------------------------------------------- augmenters


@dataclass
class AugmenterConfig:
    name: str = MISSING
    _target_: str = MISSING


@dataclass
class CopyPasteOptions:
    image_size: list[int] | None = MISSING
    ratio_range: list[float] = MISSING
    max_num_pasted: int = MISSING
    bbox_occluded_thr: float | None = MISSING
    mask_occluded_thr: float | None = MISSING
    selected: bool = MISSING


@dataclass
class CopyPasteConfig(AugmenterConfig):
    copy_paste: CopyPasteOptions = MISSING


@dataclass
class CutPasteConfig(AugmenterConfig):
    main_frequency: list[str] = MISSING
    mixed_frequency: list[str] = MISSING
    images_per_category: int = MISSING
    objects_per_image: int = MISSING
    max_images: int | None = MISSING
    scale: list[float] = MISSING
    flip: float = MISSING
    blur_sigma: float = MISSING
    min_source_area: int = MISSING
    min_visible_area: int = MISSING
    min_visible_fraction: float = MISSING
    background: str = MISSING
    gallery_size: int = MISSING
    jpeg_quality: int = MISSING


# ---------------------------------------------------------------------------------------------------- datasets


@dataclass
class DatasetConfig:
    name: str = MISSING
    _target_: str = MISSING
    cache_dir: str = MISSING
    novel: str = MISSING


@dataclass
class ToyWorldConfig(DatasetConfig):
    seed: int = MISSING
    num_train_images: int = MISSING
    num_val_images: int = MISSING
    image_size: int = MISSING
    colours: list[str] | None = MISSING
    shapes: list[str] | None = MISSING
    num_novel: int = MISSING
    zipf_exponent: float = MISSING
    min_instances: int = MISSING
    max_instances: int = MISSING
    object_scale: list[float] = MISSING
    min_visible_area: int = MISSING
    min_visible_fraction: float = MISSING
    num_neg_categories: int | None = MISSING
    image_format: str = MISSING


@dataclass
class LvisConfig(DatasetConfig):
    root: str = MISSING
    train_json: str = MISSING
    val_json: str = MISSING
    train_images: str = MISSING
    val_images: str = MISSING


# ---------------------------------------------------------------------------------------------------- detector


@dataclass
class DetectorConfig:
    name: str = MISSING
    base: str = MISSING
    pretrained: str | None = MISSING
    max_iters: int | None = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING
    checkpoint_every: int = MISSING
    synthetic_repeat: int = MISSING
    vis_images: int = MISSING
    vis_score_thr: float = MISSING
    overrides: dict[str, Any] = MISSING


@dataclass
class EpochDetectorConfig(DetectorConfig):  # the run's length in epochs or iterations (the toy's: +detector.epochs)
    epochs: int | None = MISSING


# ---------------------------------------------------------------------------------------------------- the rest


@dataclass
class TrainerConfig:  # Lightning Trainer arguments (others with a leading +: +trainer.gradient_clip_val=1)
    accelerator: str = MISSING
    devices: Any = MISSING  # a count (-1: all), a list of ids, or auto
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: Any = MISSING
    log_every_n_steps: int = MISSING
    enable_progress_bar: bool = MISSING


@dataclass
class LoggerConfig:
    enabled: bool = MISSING
    project: str = MISSING
    mode: str = MISSING
    group: str | None = MISSING


@dataclass
class PathsConfig:
    log_dir: str = MISSING
    cache_dir: str = MISSING
    data_dir: str = MISSING


@dataclass
class GenerateConfig:
    reuse: str | None = MISSING


@dataclass
class EvaluateConfig:
    checkpoint: str | None = MISSING


@dataclass
class Config:
    generator: GeneratorConfig = MISSING
    augmenter: AugmenterConfig = MISSING  # a group's YAML file with more keys names a schema of more (a subclass)
    dataset: DatasetConfig = MISSING
    detector: DetectorConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    stages: list[str] = MISSING
    seed: int = MISSING
    train_data: str = MISSING
    generate: GenerateConfig = MISSING
    evaluate: EvaluateConfig = MISSING


def register() -> None:
    """Store the schemas under the names the YAML defaults lists use."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="generator/model", name="tiny_random_schema", node=TinyRandomModelConfig)
    cs.store(group="augmenter", name="copy_paste_schema", node=CopyPasteConfig)
    cs.store(group="augmenter", name="cut_paste_schema", node=CutPasteConfig)
    cs.store(group="dataset", name="toyworld_schema", node=ToyWorldConfig)
    cs.store(group="dataset", name="lvis_schema", node=LvisConfig)
    cs.store(group="detector", name="epoch_detector_schema", node=EpochDetectorConfig)


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


def _choices(choices) -> str:
    return f"must be one of {', '.join(choices)}"


def validate_generator(g) -> None:
    from mfexp.mosaicfusion.layout import check_sizes
    from mfexp.mosaicfusion.masks import AREA_REFERENCES, REFINE_METHODS
    from mfexp.mosaicfusion.models import DTYPES, SCHEDULERS
    from mfexp.mosaicfusion.pipeline import DECODE_MODES

    check_sizes(g.region_size, g.overlap, 1)  # again with the VAE's stride when the model is loaded
    t = g.mask.threshold
    number = isinstance(t, (int, float)) and not isinstance(t, bool)
    schedulers = ["default", *SCHEDULERS]
    checks = [
        (g.dtype in DTYPES, "dtype", _choices(DTYPES)),
        (g.scheduler in schedulers, "scheduler", _choices(schedulers)),
        (g.decode in DECODE_MODES, "decode", _choices(DECODE_MODES)),
        (g.mask.refine in REFINE_METHODS, "mask.refine", _choices(REFINE_METHODS)),
        (g.mask.area_reference in AREA_REFERENCES, "mask.area_reference", _choices(AREA_REFERENCES)),
        ("{name}" in g.prompt, "prompt", "must contain {name}, the category's name"),
        (g.images_per_category >= 1, "images_per_category", "must be >= 1"),
        (g.max_mosaics is None or g.max_mosaics >= 0, "max_mosaics", "must be >= 0 or null (all)"),
        (g.num_inference_steps >= 1, "num_inference_steps", "must be >= 1"),
        (g.guidance_scale >= 0, "guidance_scale", "must be >= 0"),
        (math.isfinite(g.blend_sigma) and g.blend_sigma > 0, "blend_sigma", "must be > 0 (x the region's size)"),
        (g.batch_size >= 1, "batch_size", "must be >= 1"),
        (g.gallery_size >= 0, "gallery_size", "must be >= 0"),
        (1 <= g.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]"),
        (t == "otsu" or (number and 0 < t < 1), "mask.threshold", "must be otsu or a number in (0, 1)"),
        (0 <= g.mask.min_area <= g.mask.max_area, "mask.min_area", "must be in [0, generator.mask.max_area]"),
    ]
    _check_all(g, "generator", checks)


def validate_cut_paste(a) -> None:
    scale = len(a.scale) == 2 and 1e-3 <= a.scale[0] <= a.scale[1] <= 1.0
    checks = [
        (a.images_per_category >= 1, "images_per_category", "must be >= 1"),
        (a.objects_per_image >= 1, "objects_per_image", "must be >= 1"),
        (a.max_images is None or a.max_images >= 0, "max_images", "must be >= 0 or null"),
        (scale, "scale", "must be a pair [low, high] with 0.001 <= low <= high <= 1"),
        (0.0 <= a.flip <= 1.0, "flip", "must be a probability in [0, 1]"),
        (a.blur_sigma >= 0, "blur_sigma", "must be >= 0"),
        (a.min_source_area >= 1, "min_source_area", "must be >= 1"),
        (a.min_visible_area >= 1, "min_visible_area", "must be >= 1"),
        (0.0 <= a.min_visible_fraction < 1.0, "min_visible_fraction", "must be in [0, 1)"),
        (a.background in ("image", "uniform"), "background", _choices(("image", "uniform"))),
        (a.gallery_size >= 0, "gallery_size", "must be >= 0"),
        (1 <= a.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]"),
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


def validate(cfg) -> None:
    """Ranges and choices the schema's types cannot state; a ValueError names the key and what it allows."""
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _check(cfg.train_data in TRAIN_DATA, "train_data", cfg.train_data, _choices(TRAIN_DATA))
    validate_trainer(cfg.trainer)
    validate_generator(cfg.generator)
    if OmegaConf.get_type(cfg.augmenter) is CutPasteConfig:
        validate_cut_paste(cfg.augmenter)
