"""The fast bilateral solver (mfexp/mosaicfusion/bilateral.py) against its definition and on synthetic images."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from mfexp.mosaicfusion.bilateral import DEFAULTS, BilateralGrid, check_settings, rgb_to_yuv, smooth_mask, solve
from mfexp.mosaicfusion.masks import refine

RED, BLUE = (200, 40, 40), (40, 70, 190)


def two_colour(h, w, box, noise=2.0, seed=0):
    """A blue background with a red box (y0, x0, y1, x1), slight pixel noise; and the box as a mask."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((h, w, 3), np.float64)
    rgb[:] = BLUE
    y0, x0, y1, x1 = box
    rgb[y0:y1, x0:x1] = RED
    rgb = np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), bool)
    truth[y0:y1, x0:x1] = True
    return rgb, truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("shift", [6, -6])  # the mask overshoots / undershoots the colour edge by 6 px all round
def test_mask_snaps_to_the_colour_edge(shift):
    rgb, truth = two_colour(96, 128, (24, 32, 72, 96))
    off = np.zeros_like(truth)
    off[24 - shift : 72 + shift, 32 - shift : 96 + shift] = True
    assert iou(off, truth) < 0.8
    out = refine(off, rgb, "bilateral", bilateral=DEFAULTS)
    assert iou(out, truth) > 0.97, iou(out, truth)


def test_constant_target_comes_back_unchanged():
    rgb, _ = two_colour(40, 56, (8, 8, 30, 40), noise=20.0)
    grid = BilateralGrid(rgb)
    for value in (0.0, 0.3, 1.0):
        out, info = solve(grid, np.full(grid.shape, value), 0.999, 256.0)
        assert info.converged
        np.testing.assert_allclose(out, value, atol=1e-6)
    np.testing.assert_allclose(smooth_mask(np.ones((40, 56)), rgb), 1.0, atol=1e-6)


def test_bistochastization_gives_unit_row_sums():
    rgb, _ = two_colour(48, 64, (10, 10, 40, 50), noise=15.0)
    grid = BilateralGrid(rgb, 8, 8, 4)
    assert grid.row_sum_error() < 1e-8
    # What = S^T Dm^-1 Dn B Dn Dm^-1 S, built explicitly: rows (and columns, by symmetry) sum to 1
    s = grid.splat_matrix()
    dm_inv, dn = sp.diags(1 / grid.counts), sp.diags(grid.scale)
    what = s.T @ dm_inv @ dn @ grid.blur @ dn @ dm_inv @ s
    np.testing.assert_allclose(np.asarray(what.sum(axis=1)).ravel(), 1.0, atol=1e-8)
    assert abs(what - what.T).max() < 1e-12


def pixel_system(grid, confidence, lam):
    """The bilateral objective in pixel space, lam/2 sum_ij What_ij (x_i - x_j)^2 + sum_i c_i (x_i - t_i)^2, as its
    normal equations A x = c * t with A = lam (diag(What 1) - What) + diag(c) (What built from the same splat, blur
    and bistochastic scaling as the grid solver)."""
    s = grid.splat_matrix()
    dm_inv, dn = sp.diags(1 / grid.counts), sp.diags(grid.scale)
    what = (s.T @ dm_inv @ dn @ grid.blur @ dn @ dm_inv @ s).tocsc()
    degree = np.asarray(what.sum(axis=1)).ravel()
    return (lam * (sp.diags(degree) - what) + sp.diags(confidence)).tocsc(), s


# Tolerance of the grid vs direct pixel-space comparisons below: 1e-6 absolute on outputs in [0, 1]. The two differ
# only by the CG tolerance (1e-12 here) and the bistochastization residual (row sums 1 +- 1e-8), which the grid
# system assumes exact.
TOL = 1e-6


def test_grid_solution_equals_pixel_space_solve_when_every_pixel_is_a_vertex():
    # sigma_spatial = 1: every pixel of the 12x12 image is its own grid vertex, so restricting x = S^T y restricts
    # nothing and the grid solve must equal the full pixel-space solve for any target and confidence
    rgb, _ = two_colour(12, 12, (3, 2, 9, 8), noise=10.0, seed=1)
    rng = np.random.default_rng(0)
    t, c = rng.uniform(0, 1, (12, 12)), rng.uniform(0.2, 1, (12, 12))
    grid = BilateralGrid(rgb, sigma_spatial=1, sigma_luma=16, sigma_chroma=8)
    assert grid.num_vertices == 144
    a, _ = pixel_system(grid, c.ravel(), 4.0)
    direct = spsolve(a, c.ravel() * t.ravel()).reshape(12, 12)
    out, info = solve(grid, t, c, 4.0, tol=1e-12, maxiter=1000)
    assert info.converged
    np.testing.assert_allclose(out, direct, atol=TOL)


def test_grid_solution_equals_pixel_space_solve_on_a_coarse_grid():
    rgb, _ = two_colour(12, 12, (3, 2, 9, 8), noise=2.0, seed=2)
    grid = BilateralGrid(rgb, sigma_spatial=4, sigma_luma=16, sigma_chroma=8)
    assert grid.num_vertices < 144 / 2  # a genuinely coarser grid
    rng = np.random.default_rng(1)
    lam = 16.0
    c = np.full(144, 0.999)
    a, s = pixel_system(grid, c, lam)
    # (1) a target constant on each vertex: the unrestricted pixel-space optimum is itself constant on each vertex
    # (pixels of one vertex are interchangeable), so the grid solve equals the full pixel-space solve
    t = grid.slice(rng.uniform(0, 1, grid.num_vertices))
    direct = spsolve(a, c * t.ravel()).reshape(12, 12)
    out, info = solve(grid, t, 0.999, lam, tol=1e-12, maxiter=1000)
    assert info.converged
    np.testing.assert_allclose(out, direct, atol=TOL)
    # (2) any target: the grid solve is the pixel-space objective's minimiser over x = S^T y, i.e. the solution
    # of (S A S^T) y = S (c * t), sliced
    t = rng.uniform(0, 1, (12, 12))
    y = spsolve((s @ a @ s.T).tocsc(), s @ (c * t.ravel()))
    out, info = solve(grid, t, 0.999, lam, tol=1e-12, maxiter=1000)
    np.testing.assert_allclose(out, grid.slice(y), atol=TOL)
    # ... which is not the unrestricted optimum (the restriction is real here)
    assert np.abs(out - spsolve(a, c * t.ravel()).reshape(12, 12)).max() > 1e-3


def test_pcg_converges_on_a_region_sized_problem():
    rgb, truth = two_colour(192, 256, (40, 60, 150, 200), noise=8.0)
    target = np.roll(truth, (10, -10), axis=(0, 1)).astype(float)  # misaligned with the edges: CG has work to do
    grid = BilateralGrid(rgb)
    out, info = solve(grid, target, 0.999, 256.0, tol=1e-8, maxiter=500)
    assert info.converged and info.residual <= 1e-8 and 5 < info.iterations < 500, info
    loose, info = solve(grid, target, 0.999, 256.0)  # defaults: tol 1e-5, at most 200 iterations
    assert info.converged and info.residual <= 1e-5
    np.testing.assert_allclose(loose, out, atol=1e-3)
    # the CG iterate is the minimiser: the grid objective's gradient vanishes there
    y = out.ravel()[np.unique(grid.index, return_index=True)[1]]  # each vertex's value (its first pixel's)
    m, n, sc = grid.counts, grid.scale, 0.999 * grid.counts
    residual = 256.0 * (m * y - n * (grid.blur @ (n * y))) + sc * y - grid.splat(0.999 * target)
    assert np.linalg.norm(residual) <= 1e-7 * np.linalg.norm(grid.splat(0.999 * target))


def test_rgb_to_yuv():
    grey = np.full((2, 3, 3), 77, np.uint8)
    np.testing.assert_allclose(rgb_to_yuv(grey), np.broadcast_to([77, 128, 128], (2, 3, 3)), atol=1e-3)
    yuv = rgb_to_yuv(np.array([[RED]], np.uint8))[0, 0]
    assert yuv[2] > 128 > yuv[1]  # red: V above neutral, U below


@pytest.mark.parametrize(
    "bad,msg",
    [
        ({"passes": 0}, "passes must be an integer >= 1"),
        ({"passes": 1.5}, "passes must be an integer"),
        ({"sigma_spatial": 0}, "sigma_spatial must be a finite number > 0"),
        ({"sigma_luma": -1}, "sigma_luma"),
        ({"sigma_chroma": "8"}, "sigma_chroma"),
        ({"lam": float("inf")}, "lam must be a finite number > 0"),
        ({"confidence": 0}, r"confidence must be a number in \(0, 1\]"),
        ({"confidence": 1.5}, "confidence"),
        ({"sigma": 16}, r"unknown key\(s\) \['sigma'\]"),
    ],
)
def test_bad_settings_are_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        check_settings(bad)
    rgb, truth = two_colour(16, 16, (4, 4, 12, 12))
    with pytest.raises(ValueError, match="generator.mask.bilateral"):
        refine(truth, rgb, "bilateral", bilateral=bad)


def test_settings_defaults_and_shape_checks():
    assert check_settings(None) == DEFAULTS
    assert check_settings({"passes": 1})["passes"] == 1
    rgb, truth = two_colour(16, 16, (4, 4, 12, 12))
    with pytest.raises(ValueError, match="does not match"):
        smooth_mask(truth[:8], rgb)
    with pytest.raises(ValueError, match="RGB"):
        BilateralGrid(rgb[..., 0])
