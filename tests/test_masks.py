import numpy as np
import pytest
from omegaconf import OmegaConf

from mfexp.mosaicfusion.masks import (MaskError, aggregate_maps, binarize, expand_to_canvas, region_mask,
                                      single_component)
from mfexp.mosaicfusion.layout import Region

MASK_CFG = OmegaConf.create(dict(threshold="otsu", refine="fgs", refine_lambda=256.0, refine_sigma_color=16.0,
                                 min_area=0.05, max_area=0.95))


def planted(h, w, box, noise=0.05, seed=0):
    """A low-resolution 'attention map': high inside a box, small noise elsewhere."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0, noise, (h, w)).astype(np.float32)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] += 1.0
    return m


def test_planted_map_gives_the_box():
    # object occupies rows 16-48, cols 8-40 of a 64x64 region: maps at 1/8 and 1/4 (8x8, 16x16)
    maps = {8: planted(8, 8, (2, 1, 6, 5)), 4: planted(16, 16, (4, 2, 12, 10), seed=1)}
    rgb = np.full((64, 64, 3), 90, np.uint8)
    rgb[16:48, 8:40] = (220, 30, 30)
    mask = region_mask(maps, rgb, MASK_CFG)
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


@pytest.mark.parametrize("bad,msg", [(np.full((4, 4), np.nan, np.float32), "NaN"),
                                     (np.zeros((4, 4), np.float32), "all zero")])
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


def test_expand_to_canvas():
    m = np.ones((4, 6), bool)
    c = expand_to_canvas(m, Region(8, 16, 4, 6), 32, 32)
    assert c.sum() == 24 and c[8:12, 16:22].all()
