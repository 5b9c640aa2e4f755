"""Training-data and evaluation protocols: ``train_data`` (real | synthetic | both) and ``dataset.novel``
(held_out | rare, the open-vocabulary protocol)."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import compose
from fixtures_detection import make_lvis_fixture

TINY = ["logger=none", "trainer.enable_progress_bar=false", "detector.max_iters=2", "detector.batch_size=2",
        "detector.eval_batch_size=2", "detector.checkpoint_every=1", "detector.vis_images=2"]


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return make_lvis_fixture(tmp_path_factory.mktemp("lvis_protocols"), num_train=6, num_val=3)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic set (the generate stage's layout) with the real set's categories."""
    root = tmp_path_factory.mktemp("synthetic")
    files = make_lvis_fixture(root / "src", num_train=3, num_val=1, seed=1)
    shutil.copytree(files["train_images"], root / "synthetic" / "images")
    shutil.copy(files["train_json"], root / "synthetic" / "annotations.json")
    return dict(json=str(root / "synthetic" / "annotations.json"), images=str(root / "synthetic" / "images"))


def ann_files(dataset: dict) -> list[str]:
    inner = dataset["dataset"]          # inside the repeat-factor wrapper
    parts = inner["datasets"] if inner["type"] == "ConcatLVISDataset" else [inner]
    return [Path(p["ann_file"]).name for p in parts]


# ------------------------------------------------------------------------------------------------- train_data
def test_train_data_option_composes():
    assert compose([]).train_data == "both"
    for value in ("real", "synthetic", "both"):
        assert compose([f"train_data={value}"]).train_data == value


@pytest.mark.parametrize("train_data,expected", [("both", ["train.json", "annotations.json"]),
                                                 ("real", ["train.json"]),
                                                 ("synthetic", ["annotations.json"])])
def test_train_data_selects_the_training_sets(fixture_files, synthetic, train_data, expected):
    from mmdet.registry import DATASETS

    from mfexp.detection import stages

    module, info = stages.build_detector(compose(TINY + [f"train_data={train_data}"]), fixture_files, synthetic,
                                         init_weights=False)
    dataset = module.mm_cfg.train_dataloader.dataset
    assert dataset.type == "ClassBalancedDataset" and ann_files(dataset) == expected
    built = DATASETS.build(dataset).dataset
    sizes = {"train.json": len(info["train"]["images"]), "annotations.json": len(info["synthetic"]["images"])}
    assert len(built) == sum(sizes[name] for name in expected)


def test_train_data_without_a_synthetic_set(fixture_files):
    from mfexp.detection import stages

    module, _ = stages.build_detector(compose(TINY), fixture_files, None, init_weights=False)   # both: real only
    assert ann_files(module.mm_cfg.train_dataloader.dataset) == ["train.json"]
    with pytest.raises(ValueError, match="train_data=synthetic, but this run has no synthetic set"):
        stages.build_detector(compose(TINY + ["train_data=synthetic"]), fixture_files, None, init_weights=False)
    with pytest.raises(ValueError, match="train_data='fake': choose one of real, synthetic, both"):
        stages.build_detector(compose(TINY + ["train_data=fake"]), fixture_files, None, init_weights=False)
    # evaluation reads no training data: a synthetic-only run evaluates without its synthetic set
    module, _ = stages.build_detector(compose(TINY + ["train_data=synthetic"]), fixture_files, None,
                                      init_weights=False, training=False)
    assert "train_dataloader" not in module.mm_cfg


def test_train_stage_reports_what_it_trained_on(tmp_path, fixture_files, synthetic, monkeypatch):
    from mfexp.detection import stages

    monkeypatch.setattr(stages, "dataset_files", lambda cfg: fixture_files)
    shutil.copytree(Path(synthetic["json"]).parent, tmp_path / "synthetic")
    result = stages.train(compose(TINY + ["train_data=synthetic", "detector.max_iters=1"]), tmp_path)
    assert result["train_data"] == "synthetic" and result["train_images"] == 0 and result["synthetic_images"] == 3
    assert "train.json" not in (tmp_path / "train" / "config.py").read_text()
