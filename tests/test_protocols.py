"""Training-data and evaluation protocols: ``train_data`` (real | synthetic | both) and ``dataset.novel``
(held_out | rare, the open-vocabulary protocol)."""

import json
import shutil
from pathlib import Path

import pytest
from fixtures_detection import make_lvis_fixture
from helpers import TINY_DETECTOR, compose


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic set (the generate stage's layout) with the real set's categories."""
    root = tmp_path_factory.mktemp("synthetic")
    files = make_lvis_fixture(root / "src", num_train=3, num_val=1, seed=1)
    shutil.copytree(files["train_images"], root / "synthetic" / "images")
    shutil.copy(files["train_json"], root / "synthetic" / "annotations.json")
    return dict(json=str(root / "synthetic" / "annotations.json"), images=str(root / "synthetic" / "images"))


def ann_files(dataset: dict) -> list[str]:
    inner = dataset["dataset"]  # inside the repeat-factor wrapper
    parts = inner["datasets"] if inner["type"] == "ConcatLVISDataset" else [inner]
    return [Path(p["ann_file"]).name for p in parts]


# ------------------------------------------------------------------------------------------------- train_data
def test_train_data_option_composes():
    assert compose([]).train_data == "both"
    for value in ("real", "synthetic", "both"):
        assert compose([f"train_data={value}"]).train_data == value


@pytest.mark.parametrize(
    "train_data,expected",
    [("both", ["train.json", "annotations.json"]), ("real", ["train.json"]), ("synthetic", ["annotations.json"])],
)
def test_train_data_selects_the_training_sets(fixture_files, synthetic, train_data, expected):
    from mmdet.registry import DATASETS

    from mfexp.detection import stages

    module, info = stages.build_detector(
        compose(TINY_DETECTOR + [f"train_data={train_data}"]), fixture_files, synthetic, init_weights=False
    )
    dataset = module.mm_cfg.train_dataloader.dataset
    assert dataset.type == "ClassBalancedDataset" and ann_files(dataset) == expected
    built = DATASETS.build(dataset).dataset
    sizes = {"train.json": len(info["train"]["images"]), "annotations.json": len(info["synthetic"]["images"])}
    assert len(built) == sum(sizes[name] for name in expected)


def test_train_data_without_a_synthetic_set(fixture_files):
    from mfexp.detection import stages

    module, _ = stages.build_detector(
        compose(TINY_DETECTOR), fixture_files, None, init_weights=False
    )  # both: real only
    assert ann_files(module.mm_cfg.train_dataloader.dataset) == ["train.json"]
    with pytest.raises(ValueError, match="train_data=synthetic, but this run has no synthetic set"):
        stages.build_detector(
            compose(TINY_DETECTOR + ["train_data=synthetic"]), fixture_files, None, init_weights=False
        )
    with pytest.raises(ValueError, match="train_data='fake': choose one of real, synthetic, both"):
        stages.build_detector(compose(TINY_DETECTOR + ["train_data=fake"]), fixture_files, None, init_weights=False)
    # evaluation reads no training data: a synthetic-only run evaluates without its synthetic set
    module, _ = stages.build_detector(
        compose(TINY_DETECTOR + ["train_data=synthetic"]), fixture_files, None, init_weights=False, training=False
    )
    assert "train_dataloader" not in module.mm_cfg


def test_train_stage_reports_what_it_trained_on(tmp_path, fixture_files, synthetic, monkeypatch):
    from mfexp.detection import stages

    monkeypatch.setattr(stages, "dataset_files", lambda cfg: fixture_files)
    shutil.copytree(Path(synthetic["json"]).parent, tmp_path / "synthetic")
    result = stages.train(compose(TINY_DETECTOR + ["train_data=synthetic", "detector.max_iters=1"]), tmp_path)
    assert result["train_data"] == "synthetic" and result["train_images"] == 0 and result["synthetic_images"] == 3
    assert "train.json" not in (tmp_path / "train" / "config.py").read_text()


# ------------------------------------------------------------------------------------------------ dataset.novel
SMALL_TOY = ["dataset.num_train_images=80", "dataset.num_val_images=30"]


def toy_cfg(tmp_path, *extra):
    return compose(SMALL_TOY + [f"paths.cache_dir={tmp_path}"] + list(extra))


@pytest.mark.parametrize("dataset", ["toyworld", "lvis_v1"])
def test_novel_option_composes(dataset):
    cfg = compose([f"dataset={dataset}"])
    assert cfg.dataset.novel == "held_out"
    assert compose([f"dataset={dataset}", "dataset.novel=rare"]).dataset.novel == "rare"


def test_rare_protocol_removes_rare_annotations_from_train_only(tmp_path):
    from mfexp.data import prepare_dataset

    held_out = prepare_dataset(toy_cfg(tmp_path).dataset)
    rare = prepare_dataset(toy_cfg(tmp_path, "dataset.novel=rare").dataset)
    assert (rare["val_json"], rare["train_images"], rare["val_images"]) == (
        held_out["val_json"],
        held_out["train_images"],
        held_out["val_images"],
    )
    assert rare["train_json"] != held_out["train_json"] and str(tmp_path) in rare["train_json"]

    original = json.loads(Path(held_out["train_json"]).read_text())
    derived = json.loads(Path(rare["train_json"]).read_text())
    val = json.loads(Path(held_out["val_json"]).read_text())
    rare_ids = {c["id"] for c in original["categories"] if c["frequency"] == "r"}
    held_ids = set(original["novel_category_ids"])
    assert rare_ids - held_ids and held_ids <= rare_ids  # toy held-out categories count as rare (0 images)
    assert derived["images"] == original["images"] and derived["categories"] == original["categories"]
    assert derived["annotations"] == [a for a in original["annotations"] if a["category_id"] not in rare_ids]
    assert derived["novel_category_ids"] == sorted(rare_ids)
    assert (
        derived["info"]["mfexp_novel_protocol"]["removed_annotations"]
        == len(original["annotations"]) - len(derived["annotations"])
        > 0
    )
    assert {a["category_id"] for a in val["annotations"]} & (rare_ids - held_ids)  # val keeps them

    # written once, reused (same file, same content) by every later call
    mtime = Path(rare["train_json"]).stat().st_mtime_ns
    assert prepare_dataset(toy_cfg(tmp_path, "dataset.novel=rare").dataset) == rare
    assert Path(rare["train_json"]).stat().st_mtime_ns == mtime


def test_ap_novel_follows_the_protocol(tmp_path):
    """held_out: AP_novel over the held-out categories; rare: over every rare one, which makes it APr."""
    from mfexp.data import prepare_dataset
    from mfexp.detection.metrics import lvis_evaluate
    from mfexp.detection.stages import novel_ids
    from mfexp.lvis import read_lvis_json

    results = {}
    for protocol in ("held_out", "rare"):
        cfg = toy_cfg(tmp_path, f"dataset.novel={protocol}")
        files = prepare_dataset(cfg.dataset)
        train, val = read_lvis_json(files["train_json"]), read_lvis_json(files["val_json"])
        results[protocol] = novel_ids(cfg, train, val), train, val, files
    (held, train, val, files), (rare, *_) = results["held_out"], results["rare"]
    assert held == sorted(train["novel_category_ids"]) and set(held) < set(rare)
    assert rare == sorted(c["id"] for c in train["categories"] if c["frequency"] == "r")

    # predictions: every val instance found, with scores that mix classes (so AP is strictly between 0 and 1)
    preds = [
        dict(
            image_id=a["image_id"],
            category_id=a["category_id"],
            bbox=a["bbox"],
            segmentation=a["segmentation"],
            score=float((a["id"] * 7919) % 97) / 97 + 0.01,
        )
        for a in val["annotations"]
    ]
    preds += [
        dict(
            p,
            category_id=val["categories"][(p["category_id"] + 3) % len(val["categories"])]["id"],
            score=p["score"] * 0.9,
        )
        for p in preds[::2]
    ]
    by_held, _ = lvis_evaluate(files["val_json"], preds, held)
    by_rare, _ = lvis_evaluate(files["val_json"], preds, rare)
    assert by_rare["AP_novel"] == pytest.approx(by_rare["APr"], abs=1e-12)
    assert by_held["AP_novel"] != pytest.approx(by_rare["AP_novel"])


def test_rare_protocol_on_an_lvis_fixture(tmp_path):
    """The same derivation for a real-LVIS-style file (no file_name, frequency r/c/f): category 1 is rare."""
    from mfexp.data import without_rare_annotations

    files = make_lvis_fixture(tmp_path / "lvis", num_train=6, num_val=2, with_file_name=False)
    derived = json.loads(without_rare_annotations(files["train_json"], tmp_path / "cache").read_text())
    rare = {c["id"] for c in derived["categories"] if c["frequency"] == "r"}
    assert rare == {1, 4} and not {a["category_id"] for a in derived["annotations"]} & rare
    assert derived["novel_category_ids"] == [1, 4]  # 4 is drawn in val only


def test_unknown_novel_protocol_raises(tmp_path):
    from mfexp.data import prepare_dataset

    with pytest.raises(ValueError, match="dataset.novel='open': choose one of held_out, rare"):
        prepare_dataset(toy_cfg(tmp_path, "dataset.novel=open").dataset)
