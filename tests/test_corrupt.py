"""Positive controls (mfexp.corrupt) and the generate stage's reuse + corruption (mfexp.generate.generate)."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from mfexp.corrupt import check_corrupt, corrupt_lvis, degrade_mask, relabel
from mfexp.fileio import encode_jpeg
from mfexp.generate import generate
from mfexp.lvis import decode_rle, image_record, lvis_file, mask_annotation


def tiny_set(n_images=6, per_image=4, size=32):
    cats = [{"id": i, "name": f"c{i}", "frequency": "r"} for i in range(1, 9)]
    images, anns = [], []
    for i in range(n_images):
        img = image_record(100 + i, f"{i}.jpg", size, size)
        img["neg_category_ids"] = [c["id"] for c in cats]
        images.append(img)
        for k in range(per_image):
            m = np.zeros((size, size), bool)
            m[4 + k * 6 : 8 + k * 6, 10:20] = True
            anns.append(mask_annotation(m, 1000 * i + k, 100 + i, cats[(i + k) % 8]["id"]))
        images[-1]["neg_category_ids"] = [
            c for c in images[-1]["neg_category_ids"] if c not in {a["category_id"] for a in anns[-per_image:]}
        ]
    return lvis_file(images, anns, cats)


def test_relabel_changes_exactly_the_share_to_other_ids():
    rng = np.random.default_rng(0)
    labels = [1, 2, 3, 4] * 25
    new = relabel([1, 2, 3, 4, 5], labels, 0.5, rng)
    changed = [i for i, (a, b) in enumerate(zip(labels, new)) if a != b]
    assert len(changed) == 50  # every hit instance gets a *different* id
    assert set(new) <= {1, 2, 3, 4, 5}
    assert relabel([1, 2], labels, 0.0, rng) == labels


def test_degrade_mask_box_and_dilate():
    m = np.zeros((20, 20), bool)
    m[5, 5:12] = True
    m[5:15, 8] = True  # a T shape
    box = degrade_mask(m, "box")
    assert box.sum() == 10 * 7 and box[5:15, 5:12].all()
    grown = degrade_mask(m, "dilate", 2)
    assert grown[m].all() and grown.sum() > m.sum() and grown[3, 3] and not grown[0, 0]
    assert degrade_mask(m, "none") is m


def test_corrupt_lvis_is_seeded_and_keeps_the_rest():
    data = tiny_set()
    cfg = check_corrupt({"labels": 0.5, "masks": "box"})
    a, summary = corrupt_lvis(data, cfg, seed=3)
    b, _ = corrupt_lvis(data, cfg, seed=3)
    c, _ = corrupt_lvis(data, cfg, seed=4)
    assert summary["relabelled"] == 12 and summary["instances"] == 24
    labels = lambda d: [x["category_id"] for x in sorted(d["annotations"], key=lambda x: x["id"])]
    assert labels(a) == labels(b) != labels(c)
    assert data["annotations"][0]["category_id"] == 1  # the input is not modified
    for ann in a["annotations"]:
        mask = decode_rle(ann["segmentation"])
        x, y, w, h = ann["bbox"]
        assert mask.sum() == ann["area"] == w * h  # a box mask fills its bbox
        img = next(i for i in a["images"] if i["id"] == ann["image_id"])
        assert ann["category_id"] not in img["neg_category_ids"]
    assert a["info"]["corrupt"]["labels"] == 0.5


@pytest.mark.parametrize("bad", [{"labels": 1.5}, {"masks": "blur"}, {"masks": "dilate", "dilate_px": 0}])
def test_bad_corruption_settings_fail_clearly(bad):
    with pytest.raises(ValueError, match="synthetic.corrupt"):
        check_corrupt(bad)


def write_synthetic(folder, data):
    (folder / "synthetic" / "images").mkdir(parents=True)
    for img in data["images"]:
        (folder / "synthetic" / "images" / img["file_name"]).write_bytes(encode_jpeg(np.zeros((32, 32, 3), np.uint8)))
    (folder / "synthetic" / "annotations.json").write_text(json.dumps(data))


def test_generate_reuses_a_set_and_corrupts_the_copy(tmp_path):
    source = tmp_path / "clean_run"
    data = tiny_set()
    write_synthetic(source, data)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "augmenter": {"name": "mosaicfusion", "_target_": "not.called"},
            "generate": {"reuse": str(source)},
            "synthetic": {"corrupt": {"labels": 0.5, "masks": "none", "dilate_px": 3}, "gallery_size": 4},
        }
    )
    run = tmp_path / "control"
    result = generate(cfg, run)
    assert result["corrupt"]["relabelled"] == 12 and result["kept"] == 6
    fed = json.loads((run / "synthetic" / "annotations.json").read_text())
    clean = json.loads((run / "synthetic" / "annotations_clean.json").read_text())
    assert clean == data  # the source is copied untouched ...
    assert json.loads((source / "synthetic" / "annotations.json").read_text()) == data
    changed = sum(x["category_id"] != y["category_id"] for x, y in zip(fed["annotations"], clean["annotations"]))
    assert changed == 12  # ... and the run's own copy is corrupted once
    assert (run / "synthetic" / "gallery.jpg").is_file()
    generate(cfg, run)  # re-running corrupts the clean set again, not twice
    again = json.loads((run / "synthetic" / "annotations.json").read_text())
    assert again["annotations"] == fed["annotations"]
    # reusing the control run gives its clean set, not the corrupted one
    cfg2 = OmegaConf.merge(cfg, {"generate": {"reuse": str(run)}, "synthetic": {"corrupt": {"labels": 0.0}}})
    generate(cfg2, tmp_path / "third")
    assert json.loads((tmp_path / "third" / "synthetic" / "annotations.json").read_text()) == data


def test_reuse_of_a_folder_without_a_set_fails_clearly(tmp_path):
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "augmenter": {"name": "none", "_target_": "x"},
            "generate": {"reuse": str(tmp_path / "nothing")},
            "synthetic": {"corrupt": None},
        }
    )
    with pytest.raises(FileNotFoundError, match="generate.reuse"):
        generate(cfg, tmp_path / "run")


def test_corruption_without_a_synthetic_set_fails_clearly(tmp_path):
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "augmenter": {"name": "none", "_target_": "mfexp.augmenters.none.no_augmentation"},
            "generate": {"reuse": None},
            "synthetic": {"corrupt": {"labels": 0.5}},
        }
    )
    with pytest.raises(ValueError, match="made none"):
        generate(cfg, tmp_path / "run")


# ------------------------------------------------------------------------------------- sweeps of the controls
def test_control_sweep_settings_compose_to_the_documented_corruptions():
    from helpers import compose

    want = {
        "clean": (0.0, "none"),
        "labels50": (0.5, "none"),
        "masks_box": (0.0, "box"),
        "masks_dilate": (0.0, "dilate"),
    }
    for name, (labels, masks) in want.items():
        cfg = compose(["+sweep=controls", f"+control={name}", "seed=1"])
        assert (cfg.synthetic.corrupt.labels, cfg.synthetic.corrupt.masks) == (labels, masks)
        assert check_corrupt(cfg.synthetic.corrupt)["labels"] == labels


def test_equal_instances_sweep_holds_the_instance_budget():
    from helpers import compose

    for n, per in ((1, 40), (2, 20), (4, 10)):
        cfg = compose(["+sweep=num_objects_equal_instances", f"generator.num_objects={n}", "seed=0"])
        assert cfg.synthetic.images_per_category == per and per * n == 40


def test_report_groups_reused_controls_by_setting_not_by_source(tmp_path):
    """A control run names its source with generate.reuse (a different path per seed); the report must still put
    the seeds of one setting in one row, paired with the clean runs."""
    import yaml

    from mfexp.report import report

    def run(name, overrides, ap):
        d = tmp_path / name
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"synthetic": {"corrupt": {"labels": 0.0}}}))
        (d / "metrics.json").write_text(json.dumps({"AP": ap, "APr": ap}))

    for s in range(3):
        run(f"clean{s}", [f"seed={s}"], 0.2 + 0.01 * s)
        run(
            f"ctl{s}",
            [f"seed={s}", "synthetic.corrupt.labels=0.5", f"generate.reuse=/x/runs/seed={s}"],
            0.15 + 0.01 * s,
        )
    out = report(tmp_path, tmp_path / "rep", baseline="synthetic.corrupt.labels=0.0")
    assert out["swept"] == ["synthetic.corrupt.labels"]
    rows = {str(r["synthetic.corrupt.labels"]): r for r in out["rows"]}
    assert set(rows) == {"0.0", "0.5"}
    assert rows["0.5"]["n_pairs"] == 3 and abs(rows["0.5"]["APr_delta"] + 5.0) < 1e-9  # AP points (%)
    assert "generate.reuse" not in (tmp_path / "rep" / "summary.csv").read_text().splitlines()[0]


def test_reuse_path_is_not_part_of_the_run_folder_name():
    from helpers import compose
    from omegaconf import OmegaConf

    cfg = compose(["+control=labels50", "generate.reuse='outputs/runs/seed=0'", "seed=0"])
    assert cfg.generate.reuse == "outputs/runs/seed=0"
    assert OmegaConf.select(cfg, "hydra.run.dir").endswith("runs/control=labels50,seed=0")
