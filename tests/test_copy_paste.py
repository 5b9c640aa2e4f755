"""augmenter=copy_paste (Ghiasi et al. 2021, online) and augmenter=mosaicfusion_copy_paste: the composed configs,
the MMDetection dataset wrapping (MultiImageMixDataset around the repeat-factor set, large-scale jitter), and a
short training run on a fixture."""

import random

import pytest
import yaml
from helpers import DUMMY_FILES, ROOT, TINY_DETECTOR, compose
from omegaconf import OmegaConf


def copy_paste_options(cfg):
    return OmegaConf.to_container(cfg.augmenter.copy_paste, resolve=True)


@pytest.mark.parametrize(
    "augmenter,target",
    [
        ("copy_paste", "mfexp.augmenters.none.no_augmentation"),
        ("mosaicfusion_copy_paste", "mfexp.augmenters.mosaicfusion.generate_mosaicfusion"),
    ],
)
def test_augmenters_compose(augmenter, target):
    cfg = compose([f"augmenter={augmenter}"])
    assert cfg.augmenter.name == augmenter and cfg.augmenter._target_ == target
    assert copy_paste_options(cfg) == copy_paste_options(compose(["augmenter=copy_paste"]))
    assert copy_paste_options(cfg)["ratio_range"] == [0.1, 2.0]
    for other in ("none", "cut_paste", "mosaicfusion"):  # the others train without it
        assert "copy_paste" not in compose([f"augmenter={other}"]).augmenter


def test_paper_setting_wraps_the_dataset_as_mmdet_requires():
    """The LVIS recipe with Copy-Paste: MultiImageMixDataset(CopyPaste, Pack) around ClassBalancedDataset (1e-3)
    around the LVIS set loading with large-scale jitter onto an 800 x 800 canvas (the recipe's 640-800 short side)."""
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion", "augmenter=mosaicfusion_copy_paste"])
    mm = detector_config(
        cfg.detector,
        DUMMY_FILES,
        ("a", "b"),
        dict(json="s.json", images="s"),
        world_size=8,
        copy_paste=copy_paste_options(cfg),
        train_size=200_000,
    )
    mix = mm.train_dataloader.dataset
    assert mix.type == "MultiImageMixDataset"
    assert [t.type for t in mix.pipeline] == ["MfexpCopyPaste", "PackDetInputs"]
    assert mix.pipeline[0].max_num_pasted == 100 and mix.pipeline[0].selected
    assert mix.pipeline[0].bbox_occluded_thr == pytest.approx(10 * 800 / 1024)
    assert mix.pipeline[0].mask_occluded_thr == pytest.approx(300 * 800**2 / 1024**2)
    balanced = mix.dataset
    assert balanced.type == "ClassBalancedDataset" and balanced.oversample_thr == 1e-3
    assert balanced.dataset.type == "ConcatLVISDataset"  # real + synthetic
    for part in balanced.dataset.datasets:
        steps = [t.type for t in part.pipeline]
        assert steps == [
            "LoadImageFromFile",
            "LoadAnnotations",
            "RandomResize",
            "RandomCrop",
            "FilterAnnotations",
            "RandomFlip",
            "Pad",
        ]
        resize, crop, pad = part.pipeline[2], part.pipeline[3], part.pipeline[6]
        assert resize.scale == (800, 800) and resize.ratio_range == (0.1, 2.0) and resize.keep_ratio
        assert crop.crop_size == (800, 800) and crop.crop_type == "absolute_range" and crop.recompute_bbox
        assert pad.size == (800, 800)
    assert mm.mfexp_copy_paste["image_size"] == [800, 800]
    # the epoch schedule still counts the repeat-factor-expanded set (the mixing wrapper keeps its length)
    assert mm.train_cfg.max_iters == 12 * (200_000 // 16)


def test_canvas_and_thresholds_can_be_set():
    from mfexp.augmenters.copy_paste import copy_paste_pipelines

    cfg = compose(
        [
            "augmenter=copy_paste",
            "augmenter.copy_paste.image_size=[1024,1024]",
            "augmenter.copy_paste.mask_occluded_thr=300",
            "augmenter.copy_paste.bbox_occluded_thr=10",
        ]
    )
    pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=(128, 128), keep_ratio=True),
        dict(type="PackDetInputs"),
    ]
    load, mix, resolved = copy_paste_pipelines(pipeline, copy_paste_options(cfg))
    assert resolved["image_size"] == [1024, 1024] and (mix[0]["mask_occluded_thr"], mix[0]["bbox_occluded_thr"]) == (
        300,
        10,
    )
    with pytest.raises(ValueError, match="one resize step"):
        copy_paste_pipelines(pipeline[:1] + pipeline[2:], copy_paste_options(cfg))


def test_source_index_stays_inside_the_dataset():
    """mmdet 3.3's CopyPaste.get_indexes can return len(dataset); MfexpCopyPaste cannot, and covers the range."""
    from mfexp.detection.datasets import MfexpCopyPaste

    random.seed(0)
    drawn = {MfexpCopyPaste().get_indexes(range(3)) for _ in range(300)}
    assert drawn == {0, 1, 2}


def test_samples_are_jittered_and_pasted(fixture_files):
    """Every sample is the canvas size; pasting all source instances (selected=false) adds the source's labels."""
    from mmdet.registry import DATASETS

    from mfexp.detection import stages

    cfg = compose(
        TINY_DETECTOR
        + ["augmenter=copy_paste", "augmenter.copy_paste.selected=false", "augmenter.copy_paste.ratio_range=[1.0,1.0]"]
    )
    module, _ = stages.build_detector(cfg, fixture_files, init_weights=False)
    dataset = DATASETS.build(module.mm_cfg.train_dataloader.dataset)
    assert type(dataset).__name__ == "MultiImageMixDataset" and len(dataset) == len(dataset.dataset)
    random.seed(1)
    grew = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        assert tuple(sample["inputs"].shape[-2:]) == (128, 128)
        own = dataset.dataset[i]["gt_bboxes_labels"]  # the same image through the loading pipeline only
        grew += len(sample["data_samples"].gt_instances) > len(own)
    assert grew > 0


def test_copy_paste_trains(tmp_path, fixture_files, monkeypatch):
    from mfexp.detection import stages

    monkeypatch.setattr(stages, "dataset_files", lambda cfg: fixture_files)
    result = stages.train(compose(TINY_DETECTOR + ["augmenter=copy_paste"]), tmp_path)
    assert result["steps"] == 2
    text = (tmp_path / "train" / "config.py").read_text()
    assert "MfexpCopyPaste" in text and "MultiImageMixDataset" in text


def test_augmenter_sweep_has_the_copy_paste_rows():
    raw = yaml.safe_load((ROOT / "sweeps" / "sweep" / "augmenter.yaml").read_text())
    rows = [r.strip() for r in raw["hydra"]["sweeper"]["params"]["augmenter"].split(",")]
    assert rows == ["none", "cut_paste", "copy_paste", "mosaicfusion", "mosaicfusion_copy_paste"]
    for row in rows:
        assert (ROOT / "conf" / "augmenter" / f"{row}.yaml").is_file()
