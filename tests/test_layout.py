import numpy as np
import pytest

from mfexp.mosaicfusion.layout import gaussian_weights, grid_shape, mosaic_layout


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    "n,expected", [(1, {(1, 1)}), (2, {(1, 2), (2, 1)}), (4, {(2, 2)}), (6, {(2, 3)}), (9, {(3, 3)})]
)
def test_grid_shapes(n, expected):
    seen = {grid_shape(n, rng(s)) for s in range(20)}
    assert seen == expected


def test_two_objects_take_both_orientations():
    assert {grid_shape(2, rng(s)) for s in range(20)} == {(1, 2), (2, 1)}


def test_paper_layout_2x2():
    """SD defaults: 384x512 regions, overlap (48, 64), centre jittered in [0.75, 1.25] of the region size."""
    for seed in range(30):
        lay = mosaic_layout(4, (384, 512), (48, 64), (0.75, 1.25), 8, rng(seed))
        assert (lay.height, lay.width) == (768, 1024)
        tl, tr, bl, br = lay.regions
        for r in lay.regions:
            assert all(v % 8 == 0 for v in (r.top, r.left, r.height, r.width))
            assert r.top >= 0 and r.left >= 0 and r.bottom <= 768 and r.right <= 1024
        # neighbours share exactly the overlap, around a centre within the jitter range
        assert tl.bottom - bl.top == 48 and tl.right - tr.left == 64
        cy, cx = tl.bottom - 24, tl.right - 32
        assert 0.75 * 384 - 8 <= cy <= 1.25 * 384 + 8 and 0.75 * 512 - 8 <= cx <= 1.25 * 512 + 8
        assert (tl.top, tl.left, bl.bottom, br.right) == (0, 0, 768, 1024)
        assert tr.top == 0 and bl.left == 0 and tl.bottom == tr.bottom and bl.top == br.top


def test_no_jitter_no_overlap_tiles_exactly():
    lay = mosaic_layout(4, (64, 96), (0, 0), (1, 1), 8, rng())
    cover = np.zeros((lay.height, lay.width), int)
    for r in lay.regions:
        assert (r.height, r.width) == (64, 96)
        cover[r.top : r.bottom, r.left : r.right] += 1
    assert (cover == 1).all()


def test_single_region_is_the_canvas():
    lay = mosaic_layout(1, (384, 512), (48, 64), (0.75, 1.25), 8, rng())
    assert len(lay.regions) == 1 and (lay.regions[0].height, lay.regions[0].width) == (384, 512)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(region_size=(380, 512)), "not divisible by the VAE stride"),
        (dict(overlap=(40, 64)), "multiple of 2 x the VAE stride"),
        (dict(overlap=(384, 64)), "smaller than generator.region_size"),
        (dict(jitter=(1.2, 0.8)), "jitter"),
        (dict(num_objects=4, grid=(1, 3)), "does not hold"),
    ],
)
def test_bad_layouts_raise(kwargs, msg):
    args = dict(num_objects=4, region_size=(384, 512), overlap=(48, 64), jitter=(0.75, 1.25), stride=8, rng=rng())
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        mosaic_layout(**args)


def test_gaussian_weights_peak_in_centre():
    w = gaussian_weights(8, 12, 0.1)
    assert w.shape == (8, 12) and w.max() <= 1
    assert w[4, 6] > w[0, 0] and np.allclose(w, w[::-1, ::-1])
