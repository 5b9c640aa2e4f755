"""augmenter=cut_paste (Cut-and-Paste, Dwibedi et al. 2017): the pure paste functions and the synthetic set they
write."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import compose
from omegaconf import OmegaConf

CATEGORIES = [  # id, name, frequency; category 4 is rare and has no instance
    {"id": 1, "name": "red_box", "frequency": "r"},
    {"id": 2, "name": "green_disc", "frequency": "c"},
    {"id": 3, "name": "blue_box", "frequency": "f"},
    {"id": 4, "name": "ghost", "frequency": "r"},
]
COLOURS = {1: (220, 30, 30), 2: (30, 200, 30), 3: (30, 30, 220)}


def shape_mask(kind: str, y: int, x: int, size: int, s: int = 64) -> np.ndarray:
    m = np.zeros((s, s), np.uint8)
    if kind == "box":
        m[y : y + size, x : x + size] = 1
    else:
        cv2.circle(m, (x + size // 2, y + size // 2), size // 2, 1, -1)
    return m.astype(bool)


def make_fixture(root: Path) -> dict:
    """Six 64x64 images with non-overlapping boxes/discs (RLE masks; one annotation as a polygon), LVIS v1 format."""
    from mfexp.lvis import image_record, lvis_file, mask_annotation

    images_dir = root / "train"
    images_dir.mkdir(parents=True)
    layout = [
        [(1, 4, 4, 20), (2, 30, 34, 24)],
        [(3, 10, 10, 30)],
        [(1, 36, 8, 22), (3, 4, 36, 20)],
        [(2, 8, 8, 28), (3, 40, 40, 18)],
        [(2, 20, 20, 30)],
        [(3, 2, 2, 16), (1, 40, 30, 20)],
    ]
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i, objs in enumerate(layout, start=1):
        rgb = (rng.integers(90, 140, size=(64, 64, 3))).astype(np.uint8)
        for cat, y, x, size in objs:
            m = shape_mask("disc" if cat == 2 else "box", y, x, size)
            rgb[m] = COLOURS[cat]
            ann = mask_annotation(m, len(anns) + 1, i, cat)
            if i == 2:  # a polygon segmentation, as real LVIS files have
                ann["segmentation"] = [[x, y, x + size, y, x + size, y + size, x, y + size]]
            anns.append(ann)
        name = f"{i:012d}.png"
        cv2.imwrite(str(images_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(image_record(i, name, 64, 64, split="train"))
    train_json = root / "train.json"
    train_json.write_text(json.dumps(lvis_file(images, anns, CATEGORIES)))
    return {
        "train_json": str(train_json),
        "train_images": str(images_dir),
        "val_json": str(train_json),
        "val_images": str(images_dir),
    }


@pytest.fixture
def fixture_files(tmp_path):
    return make_fixture(tmp_path / "data")


CP = [
    "augmenter=cut_paste",
    "logger=none",
    "synthetic.images_per_category=3",
    "generator.num_objects=2",
    "augmenter.min_source_area=50",
]


def run_cut_paste(monkeypatch, files, run_dir, overrides=()):
    import mfexp.augmenters.cut_paste as cutpaste

    monkeypatch.setattr(cutpaste, "prepare_dataset", lambda dataset_cfg: files)
    return cutpaste.generate_cut_paste(compose(CP + list(overrides)), run_dir)


def cut_paste_options(**changes):
    """The composed `augmenter=cut_paste` options, with `changes`."""
    import dataclasses

    return dataclasses.replace(OmegaConf.to_object(compose(["augmenter=cut_paste"]).augmenter), **changes)


def synthetic_options(**changes):
    """The composed `synthetic` node (what the augmenter makes), with `changes`."""
    import dataclasses

    return dataclasses.replace(OmegaConf.to_object(compose(["augmenter=cut_paste"]).synthetic), **changes)


def test_cut_paste_config_composes_and_shares_the_synthetic_node():
    from mfexp.config import CutPasteConfig, SyntheticConfig

    cfg = compose(["augmenter=cut_paste", "generator.num_objects=3", "synthetic.max_images=7"])
    assert cfg.augmenter.name == "cut_paste"
    assert cfg.augmenter._target_ == "mfexp.augmenters.cut_paste.generate_cut_paste"
    opts = OmegaConf.to_object(cfg.augmenter)
    assert isinstance(opts, CutPasteConfig)
    # what to make (categories, counts, controls, files) is the synthetic node's, the same for every augmenter
    shared = {"main_frequency", "mixed_frequency", "images_per_category", "max_images", "corrupt"}
    assert not shared & set(cfg.augmenter) and shared <= set(cfg.synthetic)
    assert cfg.generator.num_objects == 3 and "num_objects" not in cfg.augmenter  # N: one key for every augmenter
    syn = OmegaConf.to_object(cfg.synthetic)
    assert isinstance(syn, SyntheticConfig) and syn.max_images == 7
    assert syn == OmegaConf.to_object(compose(["generator.num_objects=3", "synthetic.max_images=7"]).synthetic)


def test_paste_instance_occludes_and_mask_is_the_alpha_support():
    from mfexp.augmenters.cut_paste import blurred_alpha, paste_instance

    image = np.full((32, 32, 3), 100, np.uint8)
    below = np.zeros((32, 32), bool)
    below[0:16, 0:16] = True
    obj_rgb = np.full((8, 8, 3), 250, np.uint8)
    obj_mask = np.ones((8, 8), bool)
    # hard paste: the mask is the placed object, the instance below loses exactly those pixels
    out, pasted, (after,) = paste_instance(image, [below], obj_rgb, obj_mask, (4, 4), blur_sigma=0)
    expected = np.zeros((32, 32), bool)
    expected[4:12, 4:12] = True
    assert (pasted == expected).all() and (after == (below & ~expected)).all()
    assert (out[expected] == 250).all() and (out[~expected] == 100).all()
    assert (image == 100).all() and below.sum() == 256  # inputs unchanged
    # blended paste: mask = alpha >= 0.5; pixels change only where alpha > 0; the masks stay disjoint
    out, pasted, (after,) = paste_instance(image, [below], obj_rgb, obj_mask, (4, 4), blur_sigma=1.5)
    placed = np.zeros((32, 32), bool)
    placed[4:12, 4:12] = True
    alpha = blurred_alpha(placed, 1.5)
    assert (pasted == (alpha >= 0.5)).all() and pasted.sum() > 40
    changed = (out != 100).any(-1)
    assert changed[pasted].all() and not changed[alpha == 0].any() and changed.sum() > pasted.sum()
    assert not (pasted & after).any() and (after | pasted)[below].all()
    with pytest.raises(ValueError, match="does not fit"):
        paste_instance(image, [], obj_rgb, obj_mask, (30, 0))


def test_compose_drops_fully_occluded_instances():
    from mfexp.augmenters.cut_paste import Instance, compose_cut_paste

    small = np.zeros((32, 32), bool)
    small[14:18, 14:18] = True
    big = np.full((32, 32, 3), 200, np.uint8)
    opts = cut_paste_options(scale=[1.0, 1.0], flip=0.0, blur_sigma=0.0, min_visible_area=1)
    image, kept, counts = compose_cut_paste(
        np.zeros((32, 32, 3), np.uint8),
        [Instance(small, 7, False)],
        [(big, np.ones((32, 32), bool), 1)],
        np.random.default_rng(0),
        opts,
    )
    assert counts == {"pasted": 1, "dropped": 1} and [(k.category_id, k.pasted) for k in kept] == [(1, True)]
    assert (image == 200).all()


def test_cut_paste_output_is_valid_lvis_and_coco(tmp_path, monkeypatch, fixture_files):
    from lvis import LVIS
    from pycocotools.coco import COCO

    from mfexp.lvis import SYNTHETIC_IMAGE_ID_BASE, decode_rle

    summary = run_cut_paste(monkeypatch, fixture_files, tmp_path / "run")
    out = tmp_path / "run" / "synthetic"
    # main categories: rare = red_box (instances) and ghost (none): 3 images each, ghost's skipped with a reason
    assert summary["planned"] == 6 and summary["kept"] == 3 and summary["skipped"] == 3
    assert summary["skip_reasons"] == {"no source instance of the main category": 3}
    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"] == CATEGORIES
    assert [img["id"] for img in data["images"]] == [SYNTHETIC_IMAGE_ID_BASE + i for i in range(3)]
    for img in data["images"]:
        assert (out / "images" / img["file_name"]).is_file() and (img["height"], img["width"]) == (64, 64)
        assert img["neg_category_ids"] == [] and img["not_exhaustive_category_ids"] == []
    LVIS(str(out / "annotations.json"))
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.getAnnIds()) == summary["instances"] == len(data["annotations"])
    by_image = {}
    for a in data["annotations"]:
        m = decode_rle(a["segmentation"])
        assert m.sum() == a["area"] > 0 and a["category_id"] in {1, 2, 3}
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert (coco.annToMask(coco.anns[a["id"]]).astype(bool) == m).all()
        by_image.setdefault(a["image_id"], []).append(m)
    for masks in by_image.values():  # pasted objects occlude: no pixel belongs to two instances
        assert (np.sum(masks, axis=0) <= 1).all()
    # each image has its main (rare) object pasted on top of a real background with its remaining instances
    assert all(
        any(a["category_id"] == 1 for a in data["annotations"] if a["image_id"] == img["id"]) for img in data["images"]
    )
    assert summary["pasted"] >= 3 and summary["instances"] > summary["pasted"]
    assert cv2.imread(str(out / "gallery.jpg")) is not None


def test_real_instances_under_pastes_shrink(fixture_files):
    from mfexp.augmenters.cut_paste import SourceData, make_image, plan_image

    opts = cut_paste_options(scale=[0.4, 0.6], min_source_area=50)
    syn = synthetic_options(images_per_category=8)
    data = SourceData(fixture_files["train_json"], fixture_files["train_images"], opts.min_source_area)
    main = [c for c in CATEGORIES if c["id"] == 1]
    shrunk = 0
    for i in range(8):
        plan, rng = plan_image(i, main, [1, 2, 3], data, opts, syn, 3, seed=0)
        assert plan.background_id != plan.sources[0]["image_id"]
        originals = [data.mask(a) for a in data.by_image[plan.background_id]]
        image, kept, counts = make_image(plan, rng, data, opts)
        pasted = [k.mask for k in kept if k.pasted]
        for k in (k for k in kept if not k.pasted):
            (orig,) = [o for o in originals if (k.mask <= o).all()]  # a part of exactly one original instance
            shrunk += int(k.mask.sum() < orig.sum())
            assert not any((k.mask & p).any() for p in pasted)
        assert counts["pasted"] >= len(pasted) >= 1
    assert shrunk > 0


def test_cut_paste_is_deterministic_and_seeded(tmp_path, monkeypatch, fixture_files):
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "a")
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "b")
    run_cut_paste(monkeypatch, fixture_files, tmp_path / "c", ["seed=5"])
    files = lambda d: {
        p.relative_to(d / "synthetic"): p.read_bytes() for p in sorted((d / "synthetic").rglob("*")) if p.is_file()
    }
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a[Path("annotations.json")] != c[Path("annotations.json")]


@pytest.mark.parametrize(
    "extra, msg",
    [  # options the config can check: tests/test_config.py
        (["augmenter.min_source_area=100000"], r"synthetic.main_frequency=\['r'\]: no instance"),
        (["synthetic.main_frequency=[x]"], "synthetic.main_frequency"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, monkeypatch, fixture_files, extra, msg):
    with pytest.raises(ValueError, match=msg) as e:
        run_cut_paste(monkeypatch, fixture_files, tmp_path / "run", extra)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "synthetic").exists()
