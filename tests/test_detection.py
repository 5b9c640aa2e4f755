"""Detection stages: LVIS metrics vs lvis-api, train/evaluate of the toy detector, resume, synthetic merge, errors."""

import copy
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_detection import make_lvis_fixture
from helpers import TINY_DETECTOR, compose

from mfexp.compat import patch_lvis
from mfexp.detection import stages
from mfexp.detection.metrics import lvis_evaluate, novel_category_ids
from mfexp.lvis import read_lvis_json


@pytest.fixture
def use_files(monkeypatch):
    """Point the stages at a given fixture instead of ``mfexp.data.prepare_dataset``."""

    def use(files):
        monkeypatch.setattr(stages, "dataset_files", lambda cfg: files)
        return files

    return use


def add_synthetic(run_dir: Path, root: Path, categories=None) -> dict:
    """A synthetic set in ``run_dir/synthetic`` (the generate stage's layout), from another fixture."""
    files = make_lvis_fixture(root, num_train=3, num_val=1, seed=1)
    data = json.loads(Path(files["train_json"]).read_text())
    data["categories"] = categories if categories is not None else data["categories"][::-1]  # order must not matter
    (run_dir / "synthetic").mkdir(parents=True)
    shutil.copytree(files["train_images"], run_dir / "synthetic" / "images")
    (run_dir / "synthetic" / "annotations.json").write_text(json.dumps(data))
    return data


# ------------------------------------------------------------------------------------------------------ metrics
def crafted_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """Exact, shifted, mislabelled and spurious detections with random scores."""
    rng = np.random.default_rng(seed)
    preds = []
    for a in gt["annotations"]:
        for kind in ("exact", "shifted", "wrong_class"):
            x, y, w, h = a["bbox"]
            seg = a["segmentation"]
            if kind == "shifted":
                from pycocotools import mask as mu

                m = np.roll(mu.decode(seg), shift=int(rng.integers(2, 6)), axis=1)
                seg = mu.encode(np.asfortranarray(m))
                seg["counts"] = seg["counts"].decode()
                x += 3
            cat = a["category_id"] if kind != "wrong_class" else a["category_id"] % len(gt["categories"]) + 1
            preds.append(
                dict(
                    image_id=a["image_id"],
                    category_id=cat,
                    bbox=[x, y, w, h],
                    segmentation=seg,
                    score=float(rng.uniform(0.05, 1.0)),
                )
            )
    return preds


def test_lvis_metrics_equal_lvis_api(fixture_files):
    patch_lvis()
    from lvis import LVIS, LVISEval, LVISResults

    gt_path = fixture_files["val_json"]
    gt = json.loads(Path(gt_path).read_text())
    preds = crafted_predictions(gt)
    novel = fixture_files["novel_ids"]
    ours, per_category = lvis_evaluate(gt_path, preds, novel)
    assert [r["category_id"] for r in per_category] == sorted(c["id"] for c in gt["categories"])
    present = {a["category_id"] for a in gt["annotations"]}

    lvis_gt = LVIS(gt_path)
    for iou_type, prefix in (("segm", ""), ("bbox", "bbox_")):
        dets = copy.deepcopy(preds)
        if iou_type == "segm":
            for d in dets:
                del d["bbox"]
        ev = LVISEval(lvis_gt, LVISResults(lvis_gt, copy.deepcopy(dets)), iou_type)
        ev.run()
        for k, v in ev.get_results().items():
            assert ours[prefix + k] == (None if v < 0 else pytest.approx(v, abs=1e-12)), prefix + k
        ev_novel = LVISEval(lvis_gt, LVISResults(lvis_gt, copy.deepcopy(dets)), iou_type)
        ev_novel.params.cat_ids = novel
        ev_novel.run()
        assert ours[prefix + "AP_novel"] == pytest.approx(ev_novel.get_results()["AP"], abs=1e-12)
        for row in per_category:  # per-category AP = lvis-api restricted to that category
            if row["category_id"] in present:
                ev_one = LVISEval(lvis_gt, LVISResults(lvis_gt, copy.deepcopy(dets)), iou_type)
                ev_one.params.cat_ids = [row["category_id"]]
                ev_one.run()
                assert row[prefix + "AP"] == pytest.approx(ev_one.get_results()["AP"], abs=1e-12)
            else:
                assert row[prefix + "AP"] is None  # no ground truth in val
    assert 0 < ours["AP"] < 1 and 0 < ours["bbox_AP"] < 1


def test_novel_categories(fixture_files):
    train = read_lvis_json(fixture_files["train_json"])
    assert novel_category_ids(train) == fixture_files["novel_ids"]  # no train annotations
    assert novel_category_ids(dict(train, novel_category_ids=[2, 1])) == [1, 2]  # the file's list wins


# -------------------------------------------------------------------------------------------------- train/eval
def test_train_then_evaluate_toy_detector(tmp_path, fixture_files, use_files):
    use_files(fixture_files)
    run_dir = tmp_path / "run"
    syn = add_synthetic(run_dir, tmp_path / "syn")
    cfg = compose(TINY_DETECTOR)
    result = stages.train(cfg, run_dir)
    assert result["steps"] == 2 and result["synthetic_images"] == len(syn["images"])
    assert (run_dir / "train" / "checkpoints" / "last.ckpt").is_file()
    config_text = (run_dir / "train" / "config.py").read_text()
    assert "MfexpLVISDataset" in config_text and "ClassBalancedDataset" in config_text

    metrics = stages.evaluate(cfg, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    for key in ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP", "AP50"):
        assert key in metrics
    assert metrics["num_val_images"] == 3 and metrics["num_novel_categories"] == 1
    preds = json.loads((run_dir / "evaluate" / "predictions.json").read_text())
    assert len(preds) == metrics["num_predictions"] > 0
    val_ids = {i["id"] for i in json.loads(Path(fixture_files["val_json"]).read_text())["images"]}
    p = preds[0]
    assert p["image_id"] in val_ids and p["category_id"] in range(1, 5) and len(p["bbox"]) == 4
    assert set(p["segmentation"]) == {"size", "counts"} and 0 <= p["score"] <= 1
    assert (run_dir / "evaluate" / "predictions.jpg").stat().st_size > 0
    import csv

    with open(run_dir / "evaluate" / "per_category.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["category_id"]) for r in rows] == [1, 2, 3, 4]
    scored = [float(r["AP"]) for r in rows if r["AP"] != ""]  # categories with val ground truth
    assert scored and sum(scored) / len(scored) == pytest.approx(metrics["AP"] or 0.0, abs=1e-9)
    assert [r["novel"] for r in rows].count("True") == 1
    assert (run_dir / "evaluate" / "per_category_ap.png").stat().st_size > 1000

    # a checkpoint of another detector: one clear error
    ckpt = run_dir / "train" / "checkpoints" / "last.ckpt"
    other = compose(TINY_DETECTOR + ["detector.name=mask_rcnn_other", f"+evaluate.checkpoint={ckpt}"])
    with pytest.raises(ValueError, match="checkpoint .* is from detector 'mask_rcnn_toy'"):
        stages.evaluate(other, tmp_path / "elsewhere")


def test_resume_continues_step_count(tmp_path, fixture_files, use_files, monkeypatch):
    use_files(fixture_files)
    from mfexp.detection.module import DetectorModule

    cfg = compose(TINY_DETECTOR + ["detector.max_iters=4", "detector.checkpoint_every=2"])
    step = DetectorModule.training_step
    calls = []

    def crash_at_step_3(self, batch, batch_idx):
        if self.global_step == 2:  # last.ckpt holds step 2; die like a killed job would
            raise RuntimeError("simulated crash")
        calls.append(self.global_step)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DetectorModule, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        stages.train(cfg, tmp_path)
    last = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2

    calls.clear()
    monkeypatch.setattr(
        DetectorModule, "training_step", lambda self, b, i: calls.append(self.global_step) or step(self, b, i)
    )
    assert stages.train(cfg, tmp_path)["steps"] == 4
    assert calls == [2, 3]  # resumed: only steps 3 and 4 ran
    assert torch.load(last, weights_only=False)["global_step"] == 4


# ---------------------------------------------------------------------------------------------- synthetic merge
def test_synthetic_merge_keeps_category_ids(tmp_path, fixture_files):
    from mmdet.registry import DATASETS

    run_dir = tmp_path / "run"
    syn = add_synthetic(run_dir, tmp_path / "syn")
    module, info = stages.build_detector(compose(TINY_DETECTOR), fixture_files, stages.synthetic_files(run_dir))
    dataset = DATASETS.build(module.mm_cfg.train_dataloader.dataset).dataset  # inside the repeat-factor wrapper
    real, *synthetic = dataset.datasets
    assert len(synthetic) == 1 and len(real) == len(info["train"]["images"])
    sorted_ids = sorted(c["id"] for c in info["train"]["categories"])
    by_image = {}
    for a in syn["annotations"]:
        by_image.setdefault(a["image_id"], []).append(sorted_ids.index(a["category_id"]))
    for i in range(len(synthetic[0])):
        item = synthetic[0].get_data_info(i)
        assert [x["bbox_label"] for x in item["instances"]] == by_image[item["img_id"]]
        assert Path(item["img_path"]).is_file()


def test_sampler_reshuffles_each_epoch_and_shards_by_rank(fixture_files, monkeypatch):
    """Each Lightning epoch (exactly len() batches, generator left suspended) is a fresh seeded permutation of the
    repeat-factor index list; under DDP every rank takes a disjoint shard."""
    import itertools

    import mmengine.dataset.sampler as mm_sampler

    epochs = {}
    for rank in (0, 1):
        monkeypatch.setattr(mm_sampler, "get_dist_info", lambda: (rank, 2))  # noqa: B023  (called at once)
        module, _ = stages.build_detector(compose(TINY_DETECTOR), fixture_files, world_size=2)
        loader = module.train_dataloader()
        for epoch in range(3):
            loader.batch_sampler.set_epoch(epoch)  # what Lightning calls
            batches = list(itertools.islice(iter(loader), len(loader)))
            epochs[rank, epoch] = [d.img_id for b in batches for d in b["data_samples"]]
    all_ids = sorted(i["id"] for i in json.loads(Path(fixture_files["train_json"]).read_text())["images"])
    for epoch in range(3):
        assert sorted(epochs[0, epoch] + epochs[1, epoch]) == all_ids
    assert len({tuple(epochs[0, e]) for e in range(3)}) == 3


def test_synthetic_category_mismatch_raises(tmp_path, fixture_files):
    run_dir = tmp_path / "run"
    cats = json.loads(Path(fixture_files["train_json"]).read_text())["categories"]
    add_synthetic(run_dir, tmp_path / "syn", categories=cats + [dict(cats[0], id=999, name="extra")])
    with pytest.raises(ValueError, match="synthetic annotations .* category ids differ from the real train set"):
        stages.build_detector(compose(TINY_DETECTOR), fixture_files, stages.synthetic_files(run_dir))


# ------------------------------------------------------------------------------------------------------ errors
def test_bad_annotation_files_raise_clear_errors(tmp_path, fixture_files):
    cfg = compose(TINY_DETECTOR)

    def build(**change):
        return stages.build_detector(cfg, dict(fixture_files, **change))

    with pytest.raises(FileNotFoundError, match="train annotations not found"):
        build(train_json=str(tmp_path / "missing.json"))
    (tmp_path / "corrupt.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="is not valid JSON"):
        build(val_json=str(tmp_path / "corrupt.json"))
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="is not in LVIS format"):
        build(train_json=str(tmp_path / "coco.json"))
    data = json.loads(Path(fixture_files["train_json"]).read_text())
    del data["annotations"][0]["segmentation"]
    (tmp_path / "noseg.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotations\[0\] lacks \['segmentation'\]"):
        build(train_json=str(tmp_path / "noseg.json"))


def test_evaluate_without_checkpoint_raises(tmp_path, fixture_files, use_files):
    use_files(fixture_files)
    with pytest.raises(FileNotFoundError, match="no checkpoint to evaluate"):
        stages.evaluate(compose(TINY_DETECTOR), tmp_path)


def test_lvis_paths_missing_files(tmp_path):
    from mfexp.datasets.lvis_v1 import lvis_paths

    cfg = compose(["experiment=lvis_mosaicfusion", f"paths.data_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="LVIS v1 train_json not found"):
        lvis_paths(cfg.dataset)


# ------------------------------------------------------------------------------------------- the paper setting
def test_paper_detector_config():
    """The LVIS recipe resolves as the paper trains it (without building a model)."""
    from mfexp.detection.mmdet_config import detector_config

    cfg = compose(["experiment=lvis_mosaicfusion"])
    assert cfg.dataset.name == "lvis_v1" and cfg.generator.num_objects == 4
    assert cfg.synthetic.images_per_category == 25 and cfg.generator.model.path == "CompVis/stable-diffusion-v1-4"
    files = dict(train_json="t.json", train_images="img", val_json="v.json", val_images="img")
    mm = detector_config(
        cfg.detector, files, tuple(f"c{i}" for i in range(1203)), world_size=8, train_size=160_000
    )  # 12 epochs of 10,000 iterations (tests/test_recipe.py: the zoo's)
    assert mm.model.roi_head.bbox_head.num_classes == 1203 == mm.model.roi_head.mask_head.num_classes
    assert mm.model.test_cfg.rcnn.max_per_img == 300 and mm.model.test_cfg.rcnn.score_thr == 1e-4
    assert mm.train_dataloader.dataset.oversample_thr == 1e-3 and mm.train_dataloader.batch_size == 2
    assert [s.type for s in mm.param_scheduler] == ["LinearLR", "MultiStepLR"]
    assert mm.param_scheduler[1].milestones == [80000, 110000] and mm.train_cfg.max_iters == 120000
    assert mm.optim_wrapper.optimizer.lr == 0.02


@pytest.mark.slow
def test_lvis_experiment_one_iteration_1203_classes(tmp_path, use_files):
    """The paper's detector (R50-FPN, 1203-class head, LVIS pipeline) trains one step and evaluates on a fixture."""
    files = use_files(
        make_lvis_fixture(tmp_path / "lvis", num_train=2, num_val=1, num_categories=1203, with_file_name=False)
    )
    cfg = compose(
        [
            "experiment=lvis_mosaicfusion",
            "detector.pretrained=null",
            "detector.epochs=null",
            "detector.max_iters=1",
            "detector.batch_size=1",
            "detector.num_workers=0",
            "detector.vis_images=1",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "trainer.devices=1",
        ]
    )
    assert stages.train(cfg, tmp_path / "run")["steps"] == 1
    metrics = stages.evaluate(cfg, tmp_path / "run")
    assert metrics["detector"] == "mask_rcnn_r50_fpn_lvis" and metrics["num_val_images"] == 1
    assert len(json.loads(Path(files["val_json"]).read_text())["categories"]) == 1203


def test_bf16_mixed_on_cpu(tmp_path, fixture_files, use_files):
    """bf16 autocast (the GPU setting) runs through mmcv's float-only ops (patched in mfexp.compat)."""
    use_files(fixture_files)
    cfg = compose(TINY_DETECTOR + ["detector.max_iters=1", "trainer.precision=bf16-mixed"])
    assert stages.train(cfg, tmp_path)["steps"] == 1
    assert stages.evaluate(cfg, tmp_path)["num_val_images"] == 3


TRAIN_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers import TINY_DETECTOR, compose
from mfexp.detection import stages
from mfexp.detection.module import DetectorModule
stages.dataset_files = lambda cfg: json.loads({files!r})
step = DetectorModule.training_step
def announce(self, batch, batch_idx):
    print("step", self.global_step, flush=True)
    return step(self, batch, batch_idx)
DetectorModule.training_step = announce
stages.train(compose({overrides!r}), {run_dir!r})
"""


def start_training(tmp_path, fixture_files, overrides):
    """The train stage in a child process that prints ``step <global_step>`` at each training step."""
    import subprocess
    import sys

    files = {k: v for k, v in fixture_files.items() if k != "novel_ids"}
    script = TRAIN_SCRIPT.format(
        tests=str(Path(__file__).parent), files=json.dumps(files), overrides=overrides, run_dir=str(tmp_path)
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread: the child starts beside the test process
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )


def signal_at_step(proc, step: int, signum) -> int:
    """Send ``signum`` once the child reports ``step``; wait for it to end (killed if it does not); its exit code."""
    try:
        for line in proc.stdout:
            if line.split() == ["step", str(step)]:
                proc.send_signal(signum)
                break
        proc.stdout.read()  # keep draining: a child blocked on a full pipe would never exit
        return proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()


def assert_rerun_starts_at(saved: int, overrides, tmp_path, monkeypatch) -> None:
    from mfexp.detection.module import DetectorModule

    first_steps = []

    def stop_after_first(self, batch, batch_idx):
        first_steps.append(self.global_step)
        raise RuntimeError("seen enough")

    monkeypatch.setattr(DetectorModule, "training_step", stop_after_first)
    with pytest.raises(RuntimeError, match="seen enough"):
        stages.train(compose(overrides), tmp_path)
    assert first_steps == [saved]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes(tmp_path, fixture_files, use_files, monkeypatch):
    """A training process killed with SIGKILL resumes from last.ckpt (every checkpoint_every steps) when the stage
    runs again."""
    use_files(fixture_files)
    overrides = TINY_DETECTOR + ["detector.max_iters=1000", "detector.checkpoint_every=2"]
    signal_at_step(start_training(tmp_path, fixture_files, overrides), 5, signal.SIGKILL)
    saved = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert saved >= 4 and saved % 2 == 0  # a checkpoint_every step
    assert_rerun_starts_at(saved, overrides, tmp_path, monkeypatch)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_request_during_training_saves_the_step_reached(tmp_path, fixture_files, use_files, monkeypatch, signum):
    """SIGTERM or Ctrl-C (SIGINT) mid-training: the step in hand ends, last.ckpt holds the step reached (no
    checkpoint_every step was due), and the rerun starts there. Ctrl-C exits with 130 (the stage is called
    directly here; `mfexp.run` turns a SIGTERM stop into 143)."""
    use_files(fixture_files)
    overrides = TINY_DETECTOR + ["detector.max_iters=1000", "detector.checkpoint_every=1000"]
    code = signal_at_step(start_training(tmp_path, fixture_files, overrides), 3, signum)
    if signum == signal.SIGINT:
        assert code == 130
    saved = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 3 <= saved < 1000
    assert_rerun_starts_at(saved, overrides, tmp_path, monkeypatch)
