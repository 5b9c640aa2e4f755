"""The fast bilateral solver (Barron & Poole, "The Fast Bilateral Solver", ECCV 2016), in numpy/scipy.

Given a reference image, a target ``t`` and a per-pixel confidence ``c``, the solver minimises over pixel values ``x``

    lam/2 * sum_ij What_ij (x_i - x_j)^2  +  sum_i c_i (x_i - t_i)^2

where ``What`` is a bistochastic approximation of the bilateral affinity of the image. The affinity is approximated
on a *bilateral grid*: every pixel is a point (x, y, luma, chroma u, chroma v) with each coordinate divided by its
sigma and rounded, so pixels that share the rounded point share a grid vertex. With the splat matrix ``S``
(vertices x pixels, ``S[v, i] = 1`` when pixel ``i`` falls on vertex ``v``), the blur ``B`` (a [1, 2, 1] kernel
along each of the 5 grid dimensions, summed) and the slice ``S^T``:

    What = S^T Dm^-1 Dn B Dn Dm^-1 S,   Dm = diag(S 1) (pixels per vertex),   Dn from bistochastization,

so that ``What`` has unit row sums. Restricting the solution to ``x = S^T y`` (one value per vertex, sliced back to
the pixels) turns the problem into the small symmetric positive-definite system on the grid

    (lam * (Dm - Dn B Dn) + diag(S c)) y = S (c * t),

solved here with conjugate gradients and a Jacobi (diagonal) preconditioner, started from the splatted target.
Only occupied vertices exist (a hash of the rounded coordinates via ``np.unique``), so the grid holds at most as many
vertices as the image has pixels and usually far fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# The settings of the paper's public implementation (MosaicFusion's mask refinement); `passes`: the solver is run
# on the binary mask, then again with the first pass's (real-valued) output as its target, on the same grid.
DEFAULTS = {
    "passes": 2,
    "sigma_spatial": 16.0,
    "sigma_luma": 16.0,
    "sigma_chroma": 8.0,
    "lam": 256.0,
    "confidence": 0.999,
}
DIMS = 5  # x, y, luma, chroma u, chroma v


def check_settings(settings=None, where: str = "generator.mask.bilateral") -> dict:
    """The solver settings with the defaults filled in; a clear ValueError for an unknown key or a bad value."""
    given = dict(settings or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **given}
    passes = out["passes"]
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
        raise ValueError(f"{where}.passes must be an integer >= 1, got {passes!r}")
    for key in ("sigma_spatial", "sigma_luma", "sigma_chroma", "lam"):
        out[key] = _positive(out[key], f"{where}.{key}")
    conf = out["confidence"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float, np.number)) or not 0 < float(conf) <= 1:
        raise ValueError(f"{where}.confidence must be a number in (0, 1], got {conf!r}")
    out["passes"], out["confidence"] = int(passes), float(conf)
    return out


def _positive(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not (math.isfinite(float(value)) and float(value) > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) RGB in [0, 255] -> (h, w, 3) float YUV (BT.601 luma; chroma centred on 128, range [0, 255])."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"the reference image must be (h, w, 3) RGB, got shape {rgb.shape}")
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)
    yuv = rgb @ m.T
    yuv[..., 1:] += 128.0
    return yuv


class BilateralGrid:
    """Splat / blur / slice operators and the bistochastic normalisation of one reference image.

    ``index[i]``: the vertex of pixel ``i`` (row-major); ``counts``: pixels per vertex (``Dm``'s diagonal);
    ``blur``: the (vertices x vertices) sparse blur ``B``; ``scale``: ``Dn``'s diagonal.
    """

    def __init__(
        self,
        rgb: np.ndarray,
        sigma_spatial=16.0,
        sigma_luma=16.0,
        sigma_chroma=8.0,
        bistochastic_iters: int = 50,
        bistochastic_tol: float = 1e-10,
    ):
        yuv = rgb_to_yuv(rgb)
        h, w = yuv.shape[:2]
        if h * w == 0:
            raise ValueError("the reference image is empty")
        self.shape = (h, w)
        ys, xs = np.mgrid[0:h, 0:w]
        sig = (
            [_positive(sigma_spatial, "sigma_spatial")] * 2
            + [_positive(sigma_luma, "sigma_luma")]
            + [_positive(sigma_chroma, "sigma_chroma")] * 2
        )
        planes = [xs, ys, yuv[..., 0], yuv[..., 1], yuv[..., 2]]
        coords = np.stack([np.rint(p.ravel() / s) for p, s in zip(planes, sig)]).astype(np.int64)
        coords -= coords.min(axis=1, keepdims=True)
        # mixed-radix key with one spare cell per dimension, so that a +1 neighbour never wraps into another vertex
        extent = coords.max(axis=1) + 2
        strides = np.concatenate([[1], np.cumprod(extent[:-1])]).astype(np.int64)
        keys = strides @ coords
        vertex_keys, self.index = np.unique(keys, return_inverse=True)
        self.index = self.index.ravel()
        m = len(vertex_keys)
        self.counts = np.bincount(self.index, minlength=m).astype(np.float64)
        # blur: 2 on the diagonal per dimension, 1 between vertices one cell apart along one dimension
        rows, cols = [], []
        for stride in strides:
            nk = vertex_keys + stride
            pos = np.minimum(np.searchsorted(vertex_keys, nk), m - 1)
            found = vertex_keys[pos] == nk
            src = np.flatnonzero(found)
            rows += [src, pos[found]]
            cols += [pos[found], src]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, m))
        self.blur_diagonal = 2.0 * DIMS
        self.blur = (adjacency + self.blur_diagonal * sp.identity(m, format="csr")).tocsr()
        self.scale, self.bistochastic_iterations = self._bistochastize(bistochastic_iters, bistochastic_tol)

    @property
    def num_vertices(self) -> int:
        return len(self.counts)

    def _bistochastize(self, iters: int, tol: float):
        """Dn such that n * (B n) = m (Dm's diagonal), by the paper's fixed-point iteration n <- sqrt(n m / B n);
        then S^T Dm^-1 Dn B Dn Dm^-1 S has unit row (and column) sums."""
        m = self.counts
        n = np.ones_like(m)
        it = 0
        for it in range(1, iters + 1):  # noqa: B007  (the count is read after the loop)
            new = np.sqrt(n * m / (self.blur @ n))
            change = np.max(np.abs(new - n) / new)
            n = new
            if change < tol:
                break
        return n, it

    def splat(self, values: np.ndarray) -> np.ndarray:
        """S v: the sum of the pixels' values on each vertex."""
        return np.bincount(self.index, weights=np.asarray(values, np.float64).ravel(), minlength=self.num_vertices)

    def slice(self, y: np.ndarray) -> np.ndarray:
        """S^T y: each pixel takes its vertex's value; (h, w)."""
        return y[self.index].reshape(self.shape)

    def splat_matrix(self) -> sp.csr_matrix:
        """S as a sparse (vertices x pixels) matrix (for checks; the solver uses `splat`)."""
        n = len(self.index)
        return sp.csr_matrix((np.ones(n), (self.index, np.arange(n))), shape=(self.num_vertices, n))

    def row_sum_error(self) -> float:
        """max |n * (B n) / m - 1|: how far What's row sums are from 1 after bistochastization."""
        return float(np.max(np.abs(self.scale * (self.blur @ self.scale) / self.counts - 1)))


@dataclass
class SolveInfo:
    iterations: int
    residual: float  # ||b - A y|| / ||b|| on the grid
    converged: bool


def pcg(apply_a, b: np.ndarray, inv_diag: np.ndarray, x0: np.ndarray, tol: float, maxiter: int):
    """Preconditioned conjugate gradients for SPD A (given as a function), preconditioner diag(inv_diag).
    Stops when ||b - A x|| <= tol ||b||; returns (x, iterations, relative residual)."""
    x = x0.copy()
    r = b - apply_a(x)
    bnorm = np.linalg.norm(b) or 1.0
    z = inv_diag * r
    p = z.copy()
    rz = r @ z
    it = 0
    while it < maxiter and np.linalg.norm(r) > tol * bnorm:
        ap = apply_a(p)
        alpha = rz / (p @ ap)
        x += alpha * p
        r -= alpha * ap
        z = inv_diag * r
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return x, it, float(np.linalg.norm(r) / bnorm)


def solve(grid: BilateralGrid, target: np.ndarray, confidence, lam: float, tol: float = 1e-5, maxiter: int = 200):
    """One bilateral solve: the (h, w) output and a SolveInfo. ``confidence``: a number or an (h, w) array >= 0."""
    lam = _positive(lam, "lam")
    t = np.asarray(target, np.float64)
    if t.shape != grid.shape:
        raise ValueError(f"target shape {t.shape} does not match the reference image {grid.shape}")
    c = np.broadcast_to(np.asarray(confidence, np.float64), grid.shape)
    if not (np.isfinite(c).all() and (c >= 0).all()):
        raise ValueError("confidence must be finite and >= 0")
    sc = grid.splat(c)
    b = grid.splat(c * t)
    m, n = grid.counts, grid.scale

    def apply_a(y):
        return lam * (m * y - n * (grid.blur @ (n * y))) + sc * y

    diag = lam * (m - grid.blur_diagonal * n * n) + sc
    if not (diag > 0).all():
        raise ValueError("the bilateral system is singular: some grid vertex has zero confidence everywhere")
    y0 = np.divide(b, sc, out=np.zeros_like(b), where=sc > 0)  # the splatted (confidence-weighted) target
    y, it, res = pcg(apply_a, b, 1.0 / diag, y0, tol, maxiter)
    return grid.slice(y), SolveInfo(it, res, res <= tol)


def smooth_mask(mask: np.ndarray, rgb: np.ndarray, settings=None, **solver) -> np.ndarray:
    """The real-valued refined mask: `passes` bilateral solves against ``rgb``, the first on the binary mask, each
    next one on the previous output, all with the same constant confidence (threshold it at half its maximum)."""
    s = check_settings(settings)
    grid = BilateralGrid(rgb, s["sigma_spatial"], s["sigma_luma"], s["sigma_chroma"])
    out = np.asarray(mask, np.float64)
    if out.shape != grid.shape:
        raise ValueError(f"mask shape {out.shape} does not match the image {grid.shape}")
    for _ in range(s["passes"]):
        out, _info = solve(grid, out, s["confidence"], s["lam"], **solver)
    return out
