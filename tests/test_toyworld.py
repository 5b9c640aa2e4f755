"""dataset=toyworld: the procedural long-tailed LVIS v1 benchmark."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT

from mfexp.datasets.toyworld import PARAMS, prepare_toyworld
from mfexp.lvis import lvis_frequency
from mfexp.toyworld.world import COLOURS, SHAPES, build_categories, render_object, shape_mask

# the world of conf/dataset/toyworld.yaml, the one place its parameters' values are written
DEFAULT = {
    k: v for k, v in yaml.safe_load((ROOT / "conf" / "dataset" / "toyworld.yaml").read_text()).items() if k in PARAMS
}
TINY = {
    **DEFAULT,
    "seed": 3,
    "num_train_images": 40,
    "num_val_images": 16,
    "image_size": 64,
    "colours": ["red", "green", "blue"],
    "shapes": ["circle", "square", "triangle", "star"],
    "num_novel": 2,
    "zipf_exponent": 1.2,
    "object_scale": [0.2, 0.5],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return prepare_toyworld({**TINY, "cache_dir": str(tmp_path_factory.mktemp("cache"))})


def _load(path):
    return json.loads(Path(path).read_text())


def test_categories_have_lvis_fields():
    cats = build_categories()
    assert len(cats) == len(COLOURS) * len(SHAPES) >= 40
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    for c in cats:
        assert {"id", "name", "synonyms", "def", "frequency", "image_count", "instance_count", "synset"} <= set(c)
        assert " " not in c["name"] and c["name"] in c["synonyms"]


def test_render_object_is_pure_and_exact():
    rgb, mask = render_object("red_star", 32, 17.0, np.random.default_rng(0))
    rgb2, mask2 = render_object("red_star", 32, 17.0, np.random.default_rng(0))
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)
    assert np.array_equal(mask, shape_mask("star", 32, 17.0))
    assert rgb[mask].mean(0)[0] > 150 and not rgb[~mask].any()


def test_deterministic(tiny, tmp_path):
    again = prepare_toyworld({**TINY, "cache_dir": str(tmp_path)})
    for key in ("train_json", "val_json"):
        assert Path(tiny[key]).read_bytes() == Path(again[key]).read_bytes()
    for key in ("train_images", "val_images"):
        a, b = sorted(Path(tiny[key]).iterdir()), sorted(Path(again[key]).iterdir())
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_cached_and_reused(tiny):
    stamp = Path(tiny["train_json"]).stat().st_mtime_ns
    cache_dir = Path(tiny["root"]).parent.parent
    assert prepare_toyworld({**TINY, "cache_dir": str(cache_dir)}) == tiny
    assert Path(tiny["train_json"]).stat().st_mtime_ns == stamp
    assert not [p for p in (cache_dir / "toyworld").iterdir() if p.name.startswith(".tmp")]


def test_loads_with_lvis_and_coco(tiny):
    lvis = pytest.importorskip("lvis")
    coco = pytest.importorskip("pycocotools.coco")
    for key in ("train_json", "val_json"):
        api = lvis.LVIS(tiny[key])
        ann = api.load_anns(api.get_ann_ids()[:1])[0]
        m = api.ann_to_mask(ann)
        assert m.sum() == ann["area"]
        c = coco.COCO(tiny[key])
        assert c.annToMask(ann).sum() == ann["area"]
    doc = _load(tiny["train_json"])
    img = doc["images"][0]
    assert img["coco_url"] == f"http://images.cocodataset.org/train/{img['file_name']}"
    assert (Path(tiny["train_images"]) / img["file_name"]).is_file()


def test_frequency_groups_from_train_counts(tiny):
    train, val = _load(tiny["train_json"]), _load(tiny["val_json"])
    imgs_per_cat = {c["id"]: set() for c in train["categories"]}
    inst = Counter()
    for a in train["annotations"]:
        imgs_per_cat[a["category_id"]].add(a["image_id"])
        inst[a["category_id"]] += 1
    for c in train["categories"]:
        assert c["image_count"] == len(imgs_per_cat[c["id"]])
        assert c["instance_count"] == inst[c["id"]]
        assert c["frequency"] == lvis_frequency(c["image_count"])
    assert val["categories"] == train["categories"]  # LVIS: val carries the train counts
    assert [lvis_frequency(n) for n in (0, 1, 10, 11, 100, 101)] == ["r", "r", "r", "c", "c", "f"]


def test_novel_absent_in_train_present_in_val(tiny):
    train, val = _load(tiny["train_json"]), _load(tiny["val_json"])
    novel = set(train["novel_category_ids"])
    assert len(novel) == TINY["num_novel"] and val["novel_category_ids"] == train["novel_category_ids"]
    assert not novel & {a["category_id"] for a in train["annotations"]}
    assert {a["category_id"] for a in val["annotations"]} == {c["id"] for c in val["categories"]}
    base = {c["id"] for c in train["categories"]} - novel
    assert {a["category_id"] for a in train["annotations"]} == base
    for c in train["categories"]:
        if c["id"] in novel:
            assert c["frequency"] == "r" and c["image_count"] == 0


def test_masks_are_the_rendered_objects(tiny):
    from PIL import Image
    from pycocotools import mask as mask_utils

    val = _load(tiny["val_json"])
    cats = {c["id"]: c["name"] for c in val["categories"]}
    by_img = {}
    for a in val["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for img in val["images"]:
        rgb = np.asarray(Image.open(Path(tiny["val_images"]) / img["file_name"])).astype(int)
        saturated = rgb.max(-1) - rgb.min(-1) > 70  # objects are saturated, backgrounds grey-ish
        cover = np.zeros(saturated.shape, int)
        for a in by_img.get(img["id"], []):
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert m.sum() == a["area"] > 0
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            mean = rgb[m].mean(0)
            nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean).sum())
            assert cats[a["category_id"]].startswith(nearest + "_")
            cover += m
        assert cover.max() <= 1  # visible parts are disjoint
        assert np.array_equal(cover.astype(bool), saturated)
        present = {a["category_id"] for a in by_img.get(img["id"], [])}
        assert not present & set(img["neg_category_ids"]) and img["not_exhaustive_category_ids"] == []


@pytest.mark.parametrize(
    "override",
    [
        {"num_novel": 12},
        {"num_novel": 40},
        {"num_train_images": 0},
        {"num_val_images": 0},
        {"colours": ["mauve"]},
        {"max_instances": 0},
        {"image_size": 8},
        {"num_train_images": 1, "max_instances": 2},
    ],
)
def test_impossible_sizes_raise(tmp_path, override):
    with pytest.raises(ValueError):
        prepare_toyworld({**TINY, **override, "cache_dir": str(tmp_path)})
    assert not any((tmp_path / "toyworld").glob("*")) if (tmp_path / "toyworld").exists() else True


@pytest.mark.slow
def test_default_world_is_long_tailed(tmp_path):
    out = prepare_toyworld({**DEFAULT, "cache_dir": str(tmp_path)})
    train = _load(out["train_json"])
    novel = set(train["novel_category_ids"])
    groups = Counter(c["frequency"] for c in train["categories"] if c["id"] not in novel)
    assert groups["r"] >= 8 and groups["c"] >= 8 and groups["f"] >= 3
    assert len(novel) >= 5


def test_every_parameter_comes_from_the_yaml(tmp_path):
    assert set(DEFAULT) == set(PARAMS)
    with pytest.raises(ValueError, match="no image_size"):
        prepare_toyworld({k: v for k, v in TINY.items() if k != "image_size"} | {"cache_dir": str(tmp_path)})
