import numpy as np
import pytest
from helpers import compose
from omegaconf import OmegaConf

from mfexp.mosaicfusion.bilateral import DEFAULTS
from mfexp.mosaicfusion.layout import Region
from mfexp.mosaicfusion.masks import (
    MaskError,
    aggregate_maps,
    binarize,
    expand_to_canvas,
    reference_area,
    refine,
    region_mask,
    single_component,
)

MASK_CFG = OmegaConf.create(
    dict(
        threshold="otsu",
        refine="fgs",
        refine_lambda=256.0,
        refine_sigma_color=16.0,
        bilateral=dict(DEFAULTS),
        min_area=0.05,
        max_area=0.95,
        area_reference="region",
        nominal_size=[64, 64],
    )
)


def planted(h, w, box, noise=0.05, seed=0):
    """A low-resolution 'attention map': high inside a box, small noise elsewhere."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0, noise, (h, w)).astype(np.float32)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] += 1.0
    return m


@pytest.mark.parametrize("method", ["fgs", "bilateral"])
def test_planted_map_gives_the_box(method):
    # object occupies rows 16-48, cols 8-40 of a 64x64 region: maps at 1/8 and 1/4 (8x8, 16x16)
    maps = {8: planted(8, 8, (2, 1, 6, 5)), 4: planted(16, 16, (4, 2, 12, 10), seed=1)}
    rgb = np.full((64, 64, 3), 90, np.uint8)
    rgb[16:48, 8:40] = (220, 30, 30)
    mask = region_mask(maps, rgb, OmegaConf.merge(MASK_CFG, {"refine": method}))
    truth = np.zeros((64, 64), bool)
    truth[16:48, 8:40] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9, iou
    # the edge-aware refinement snaps to the coloured object: better than the raw threshold
    raw = binarize(aggregate_maps(maps, 64, 64))
    raw_iou = (raw & truth).sum() / (raw | truth).sum()
    assert iou >= raw_iou


def test_aggregate_normalises_each_resolution():
    a = np.zeros((4, 4), np.float32)
    a[1:3, 1:3] = 100.0
    b = np.zeros((8, 8), np.float32)
    b[2:6, 2:6] = 0.01
    heat = aggregate_maps({16: a, 8: b}, 32, 32)
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0
    assert heat[16, 16] > 0.9 and heat[0, 0] < 0.1


@pytest.mark.parametrize(
    "bad,msg", [(np.full((4, 4), np.nan, np.float32), "NaN"), (np.zeros((4, 4), np.float32), "all zero")]
)
def test_bad_maps_raise_mask_error(bad, msg):
    with pytest.raises(MaskError, match=msg):
        aggregate_maps({8: bad}, 16, 16)
    assert issubclass(MaskError, ValueError)


def test_fixed_threshold_and_bad_threshold():
    heat = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    assert binarize(heat, 0.5).sum() == 50
    with pytest.raises(ValueError, match="threshold"):
        binarize(heat, 1.5)


def test_component_filter():
    m = np.zeros((20, 20), bool)
    m[2:8, 2:8] = True
    assert single_component(m).sum() == 36
    m2 = m.copy()
    m2[12:18, 12:18] = True
    with pytest.raises(MaskError, match="2 components"):
        single_component(m2)
    tiny = np.zeros((20, 20), bool)
    tiny[0, 0] = True
    with pytest.raises(MaskError, match="0 components"):
        single_component(tiny)
    with pytest.raises(MaskError, match="0 components"):
        single_component(np.ones((20, 20), bool))
    # 4-connectivity: diagonal touching squares are two components
    d = np.zeros((20, 20), bool)
    d[0:5, 0:5] = True
    d[5:10, 5:10] = True
    with pytest.raises(MaskError):
        single_component(d)


def test_unknown_refine_method():
    with pytest.raises(ValueError, match="must be one of bilateral, fgs, joint_bilateral, none"):
        refine(np.ones((8, 8), bool), np.zeros((8, 8, 3), np.uint8), "bilateral_solver")


def blob(h, w, area):
    """A (h, w) mask with one component of exactly `area` pixels (the first `area` pixels in row-major order)."""
    m = np.zeros((h, w), bool)
    m.ravel()[:area] = True
    return m


NOMINAL = 384 * 512  # 196,608 px: 5 %-95 % = 9,830.4-186,777.6 px


@pytest.mark.parametrize(
    "shape,area,nominal_ok,region_ok",
    [
        ((288, 384), 9_000, False, True),  # small jittered region: 9,000 px is 8.1 % of it, but < 9,830 px
        ((500, 520), 9_000, False, False),  # 3.5 % of the region, and < 9,830 px
        ((500, 520), 12_000, True, False),  # >= 9,830 px, but 4.6 % of a large jittered region
        ((500, 520), 190_000, False, True),  # 73 % of the region, but > 186,778 px
        ((384, 512), 9_800, False, False),  # the nominal region itself: both agree
        ((384, 512), 9_900, True, True),
    ],
)
def test_area_bounds_nominal_vs_region(shape, area, nominal_ok, region_ok):
    m = blob(*shape, area)
    for reference, ok in ((NOMINAL, nominal_ok), (None, region_ok)):
        if ok:
            assert single_component(m, 0.05, 0.95, reference).sum() == area
        else:
            with pytest.raises(MaskError, match="0 components"):
                single_component(m, 0.05, 0.95, reference)


def test_area_reference_from_the_mask_config():
    cfg = OmegaConf.merge(MASK_CFG, {"area_reference": "nominal", "nominal_size": [384, 512]})
    assert reference_area(cfg) == NOMINAL
    assert reference_area(cfg, nominal_size=(10, 20)) == 200
    assert reference_area(MASK_CFG) is None
    with pytest.raises(ValueError, match="area_reference='canvas' must be one of nominal, region"):
        reference_area(OmegaConf.merge(MASK_CFG, {"area_reference": "canvas"}))
    with pytest.raises(ValueError, match="nominal_size must be"):
        reference_area(OmegaConf.merge(cfg, {"nominal_size": [384]}))
    with pytest.raises(ValueError, match="needs generator.mask.nominal_size"):
        reference_area(OmegaConf.merge(cfg, {"nominal_size": None}))
    with pytest.raises(ValueError, match="min_area <= max_area"):
        single_component(np.ones((4, 4), bool), 0.5, 0.2)
    # through the whole chain: a 48x48 box in a 96x96 region is 25 % of it, but 56 % of a nominal 64x64
    maps = {8: planted(12, 12, (3, 3, 9, 9))}
    rgb = np.full((96, 96, 3), 90, np.uint8)
    region = OmegaConf.merge(MASK_CFG, {"refine": "none"})
    assert region_mask(maps, rgb, region).sum() > 0
    with pytest.raises(MaskError, match="0 components within 5%-40% of the nominal region"):
        region_mask(maps, rgb, OmegaConf.merge(region, {"area_reference": "nominal", "max_area": 0.4}))
    assert region_mask(maps, rgb, OmegaConf.merge(region, {"max_area": 0.4})).sum() > 0


def test_configured_mask_settings():
    toy = compose().generator.mask
    assert toy.refine == "fgs" and reference_area(toy) is None  # the toy default is unchanged
    paper = compose(["experiment=lvis_mosaicfusion"]).generator
    assert paper.mask.refine == "bilateral" and paper.mask.area_reference == "nominal"
    assert list(paper.mask.nominal_size) == list(paper.region_size) == [384, 512]
    assert reference_area(paper.mask) == NOMINAL
    assert {k: paper.mask.bilateral[k] for k in DEFAULTS} == DEFAULTS
    moved = compose(["experiment=lvis_mosaicfusion", "generator.region_size=[256,256]"]).generator.mask
    assert reference_area(moved) == 256 * 256


def test_expand_to_canvas():
    m = np.ones((4, 6), bool)
    c = expand_to_canvas(m, Region(8, 16, 4, 6), 32, 32)
    assert c.sum() == 24 and c[8:12, 16:22].all()
