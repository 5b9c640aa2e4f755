"""The detector recipe: the paper's experiment resolves to MMDetection's model-zoo LVIS 1x recipe (12 epochs over
the repeat-factor-expanded set, milestones 8 and 11, warm-up, sampler, scales, batch, LR); epoch schedules count
the expanded real + synthetic set; iteration schedules stay available."""

import json
import math
import shutil
from pathlib import Path

import pytest
from fixtures_detection import make_lvis_fixture
from helpers import DUMMY_FILES, compose

ZOO = "mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py"
TINY = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.devices=1",
    "detector.batch_size=2",
    "detector.eval_batch_size=2",
    "detector.checkpoint_every=1000",
    "detector.vis_images=2",
]


def zoo_config():
    from mmengine.config import Config

    from mfexp.detection.mmdet_config import base_config_path

    return Config.fromfile(base_config_path(ZOO))


def add_synthetic(run_dir: Path, root: Path, num_images: int = 4) -> dict:
    """A synthetic set in ``run_dir/synthetic`` (the generate stage's layout) with the real set's categories."""
    files = make_lvis_fixture(root, num_train=num_images, num_val=1, seed=1)
    (run_dir / "synthetic").mkdir(parents=True)
    shutil.copytree(files["train_images"], run_dir / "synthetic" / "images")
    shutil.copy(files["train_json"], run_dir / "synthetic" / "annotations.json")
    return dict(json=str(run_dir / "synthetic" / "annotations.json"), images=str(run_dir / "synthetic" / "images"))


def test_paper_experiment_is_the_model_zoo_recipe():
    """experiment=lvis_mosaicfusion against mmdet's mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1, item by item."""
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion"])
    assert cfg.detector.base == ZOO and cfg.detector.epochs == 12 and cfg.detector.max_iters is None
    zoo = zoo_config()
    train_size = 1_000_003  # stands for len(ClassBalancedDataset) of LVIS train (+ the synthetic set)
    mm = detector_config(
        cfg.detector, DUMMY_FILES, tuple(f"c{i}" for i in range(1203)), world_size=8, train_size=train_size
    )
    per_epoch = math.ceil(train_size / 16)

    # schedule: 12 epochs over the expanded set, warm-up 500 iterations, x0.1 after epochs 8 and 11
    assert zoo.train_cfg.type == "EpochBasedTrainLoop" and zoo.train_cfg.max_epochs == 12
    assert mm.train_cfg.max_iters == 12 * per_epoch
    assert mm.mfexp_schedule == dict(epochs=12, iterations_per_epoch=per_epoch, train_size=train_size)
    (zoo_warm, zoo_steps), (warm, steps) = zoo.param_scheduler, mm.param_scheduler
    assert warm == zoo_warm == dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500)
    assert zoo_steps.by_epoch and zoo_steps.milestones == [8, 11] and zoo_steps.gamma == 0.1
    assert steps.type == "MultiStepLR" and not steps.by_epoch and steps.gamma == zoo_steps.gamma
    assert steps.milestones == [m * per_epoch for m in zoo_steps.milestones]
    assert (steps.begin, steps.end) == (0, zoo_steps.end * per_epoch)

    # repeat-factor sampling threshold 1e-3
    assert mm.train_dataloader.dataset.type == zoo.train_dataloader.dataset.type == "ClassBalancedDataset"
    assert mm.train_dataloader.dataset.oversample_thr == zoo.train_dataloader.dataset.oversample_thr == 1e-3

    # multi-scale training, short side 640-800 (long side <= 1333), on the dataset's own pipeline too
    scales = [(1333, s) for s in range(640, 801, 32)]
    (resize,) = [t for t in mm.train_pipeline if t.type == "RandomChoiceResize"]
    (zoo_resize,) = [t for t in zoo.train_pipeline if t.type == "RandomChoiceResize"]
    assert resize.scales == zoo_resize.scales == scales and resize.keep_ratio
    assert mm.train_dataloader.dataset.dataset.pipeline == mm.train_pipeline

    # batch 16 in total = the zoo's 8 GPUs x 2; SGD lr 0.02, momentum 0.9, weight decay 1e-4
    assert cfg.detector.batch_size == zoo.auto_scale_lr.base_batch_size == 8 * zoo.train_dataloader.batch_size == 16
    assert mm.train_dataloader.batch_size == zoo.train_dataloader.batch_size == 2
    assert (
        mm.optim_wrapper.optimizer
        == zoo.optim_wrapper.optimizer
        == dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.0001)
    )
    # LVIS evaluation limits
    assert mm.model.test_cfg.rcnn.max_per_img == zoo.model.test_cfg.rcnn.max_per_img == 300
    assert mm.model.test_cfg.rcnn.score_thr == zoo.model.test_cfg.rcnn.score_thr == 1e-4


def test_fixed_iterations_stay_available():
    """detector.epochs=null detector.max_iters=N: the epoch milestones spread over N iterations as 12 epochs."""
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion", "detector.epochs=null", "detector.max_iters=90000"])
    mm = detector_config(cfg.detector, DUMMY_FILES, ("a", "b"), world_size=8)
    assert mm.train_cfg.max_iters == 90000 and "mfexp_schedule" not in mm
    assert mm.param_scheduler[1].milestones == [60000, 82500] and mm.param_scheduler[1].end == 90000

    toy = compose([])  # the toy detector counts iterations
    mm = detector_config(toy.detector, DUMMY_FILES, ("a", "b"))
    assert mm.train_cfg.max_iters == toy.detector.max_iters
    assert mm.param_scheduler[1].milestones == [round(m * toy.detector.max_iters / 12) for m in (8, 11)]


@pytest.mark.parametrize(
    "change,message",
    [
        (["detector.max_iters=1000"], "set exactly one"),
        (["detector.epochs=null"], "set exactly one"),
        (["detector.epochs=0"], "must be >= 1"),
    ],
)
def test_run_length_is_checked(change, message):
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion"] + change)
    with pytest.raises(ValueError, match=message):
        detector_config(cfg.detector, DUMMY_FILES, ("a",), train_size=100)


def test_epochs_count_the_expanded_real_and_synthetic_set(tmp_path, fixture_files):
    """Without a given size the training set is built once: the run is epochs x ceil(len(ClassBalancedDataset) /
    batch), and it grows with the synthetic set."""
    from mmdet.registry import DATASETS

    from mfexp.detection import stages
    from mfexp.detection.mmdet_config import run_length

    cfg = compose(
        [
            "experiment=lvis_mosaicfusion",
            "detector.pretrained=null",
            "detector.epochs=2",
            "detector.overrides.param_scheduler.1.milestones=[1]",
            "+detector.overrides.train_dataloader.dataset.oversample_thr=0.9",
        ]
        + TINY
    )
    real, _ = stages.build_detector(cfg, fixture_files, init_weights=False)
    with_syn, _ = stages.build_detector(
        cfg, fixture_files, add_synthetic(tmp_path / "run", tmp_path / "syn"), init_weights=False
    )
    sizes = []
    for module in (real, with_syn):
        mm = module.mm_cfg
        expanded = len(DATASETS.build(mm.train_dataloader.dataset))
        images = len(DATASETS.build(mm.train_dataloader.dataset.dataset))
        assert expanded > images  # threshold 0.9: images of categories in < 90 % of the images repeat
        assert mm.mfexp_schedule.train_size == expanded
        assert mm.train_cfg.max_iters == 2 * math.ceil(expanded / 2) == run_length(cfg.detector, expanded)[0]
        assert mm.param_scheduler[1].milestones == [math.ceil(expanded / 2)]  # after epoch 1
        sizes.append(mm.train_cfg.max_iters)
    assert sizes[1] > sizes[0]


def test_training_runs_the_epochs(tmp_path, fixture_files, monkeypatch):
    """Lightning runs exactly epochs x iterations-per-epoch steps (the toy detector, given in epochs)."""
    from mfexp.detection import stages

    monkeypatch.setattr(stages, "dataset_files", lambda cfg: fixture_files)
    cfg = compose(TINY + ["detector.max_iters=null", "+detector.epochs=2"])
    result = stages.train(cfg, tmp_path)
    per_epoch = math.ceil(result["train_size"] / 2)
    assert result["epochs"] == 2 and result["iterations_per_epoch"] == per_epoch
    assert result["steps"] == result["max_iters"] == 2 * per_epoch
    assert "mfexp_schedule" in (tmp_path / "train" / "config.py").read_text()


def test_evaluation_config_has_no_training_parts(fixture_files):
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion", "detector.pretrained=null"])
    train = json.loads(Path(fixture_files["train_json"]).read_text())
    classes = tuple(c["name"] for c in sorted(train["categories"], key=lambda c: c["id"]))
    mm = detector_config(cfg.detector, fixture_files, classes, training=False)  # no training set is built
    for key in ("train_dataloader", "train_cfg", "param_scheduler", "optim_wrapper"):
        assert key not in mm
    assert mm.test_dataloader.dataset.ann_file.endswith("val.json")
