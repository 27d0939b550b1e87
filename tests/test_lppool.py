"""lppool2d_forward / lppool2d_backward against PyTorch and an independent NumPy formula.

PyTorch's F.lp_pool2d is (avg_pool2d(x^p) * KH*KW)^(1/p) with the gradient of a zero norm set to
0, and max_pool2d(|x|) for p = inf. The cases the old backward got wrong: p = 1 with a negative
window sum (y < 0 still has gradient 1), p = 3 with a negative sum (NaN forward, so NaN backward,
not 0), and p = inf (was 1.0 everywhere). Inputs are multiples of 0.5, so sums of x, x^2 and x^3
are exact in float32 and exact-zero sums happen.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

NORMS = [1.0, 2.0, 3.0, 1.5, 0.5, math.inf]
# (kernel, stride, ceil_mode): ceil mode on 7 x 8 leaves partial windows at the bottom and right
GEOMETRIES = [((3, 2), (2, 2), False), ((3, 2), (2, 2), True), ((2, 2), (1, 1), False), ((2, 3), (2, 2), True)]
SHAPE = (2, 3, 7, 8)


def _out_size(size: int, k: int, s: int, ceil_mode: bool) -> int:
    out = (size - k + (s - 1 if ceil_mode else 0)) // s + 1
    # PyTorch: a ceil-mode window must start inside the input
    return out - 1 if ceil_mode and (out - 1) * s >= size else out


def _reference(x: np.ndarray, dy: np.ndarray, p: float, kernel, stride, ceil_mode) -> tuple[np.ndarray, np.ndarray]:
    """float64 (y, dx) window by window from the definitions, independent of both backends.

    Finite p: z = sum of x^p * KH*KW / count, y = z^(1/p), and the window passes
    dy * z^(1/p - 1) * KH*KW / count to each element, 0 when z == 0 (0/0, as PyTorch); the
    elements' sums are then multiplied by x^(p-1), the chain rule's order in PyTorch (it matters
    for 0 * inf). p = inf: y = max |x|, and sign(x) * dy goes to the first maximum, or to the first
    NaN when there is one, with sign(NaN) = NaN.
    """
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = _out_size(h, kh, sh, ceil_mode), _out_size(w, kw, sw, ceil_mode)
    y = np.empty((n, c, oh, ow))
    spread = np.zeros_like(x)
    with np.errstate(all="ignore"):
        for i in range(oh):
            for j in range(ow):
                rows, cols = slice(i * sh, min(i * sh + kh, h)), slice(j * sw, min(j * sw + kw, w))
                win = x[:, :, rows, cols]
                g = dy[:, :, i, j, None, None]
                if p == math.inf:
                    flat = np.abs(win).reshape(n, c, -1)
                    nan = np.isnan(flat)
                    first = np.where(nan.any(-1), nan.argmax(-1), flat.argmax(-1))
                    y[:, :, i, j] = np.take_along_axis(flat, first[..., None], -1)[..., 0]
                    chosen = (np.arange(flat.shape[-1]) == first[..., None]).reshape(win.shape)
                    spread[:, :, rows, cols] += np.where(chosen, g * np.sign(win), 0)
                    continue
                scale = kh * kw / (win.shape[2] * win.shape[3])
                z = (win ** p).sum(axis=(2, 3)) * scale
                y[:, :, i, j] = z ** (1 / p)
                slope = np.where(z == 0, 0, z ** (1 / p - 1) * scale)
                spread[:, :, rows, cols] += g * slope[..., None, None]
        dx = spread if p == math.inf else spread * x ** (p - 1)
    return y, dx


def _inputs(rng, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(-4, 5, SHAPE) / 2
    x[0, 0, :3, :3] = 0  # zero windows: no gradient (p < 1: 0 * inf = NaN, as PyTorch)
    x[0, 1, :3, :2] = [[1, -1], [0.5, -0.5], [2, -2]]  # sums of x and x^3 are 0; inf: tie of 2 and -2
    x[1, 0, :3, :2] = [[-2, 2], [-1, 0.5], [0, 0]]  # inf: -2 and 2 tie, the first wins
    x[1, 1, :3, :2] = [[-1, -2], [0.5, -1], [0, 0]]  # negative sum: p = 1 gives y < 0, p = 3 NaN
    dy = rng.integers(-4, 5, (SHAPE[0], SHAPE[1], 8, 8)) / 4
    return (np.abs(x) if positive else x), dy


def _run(backend, x, dy, p, kernel, stride, ceil_mode, dtype):
    x = x.astype(dtype)
    y = backend.lppool2d_forward(backend.asarray(x), p, kernel, stride, ceil_mode)
    dy = dy[:, :, :y.shape[2], :y.shape[3]].astype(dtype)
    dx = backend.lppool2d_backward(backend.asarray(dy), backend.asarray(x), y, p, kernel, stride, ceil_mode)
    return backend.to_numpy(y), backend.to_numpy(dx), dy


@pytest.mark.parametrize("positive", [False, True], ids=["signed", "positive"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"k{g[0]}s{g[1]}{'ceil' if g[2] else ''}")
@pytest.mark.parametrize("p", NORMS)
def test_matches_the_formula(backend, rng, p, geometry, positive):
    x, dy = _inputs(rng, positive)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        y, dx, dy_used = _run(backend, x, dy, p, *geometry, dtype)
        assert y.dtype == dx.dtype == dtype
        want_y, want_dx = _reference(x, dy_used, p, *geometry)
        np.testing.assert_allclose(y, want_y, rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("positive", [False, True], ids=["signed", "positive"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"k{g[0]}s{g[1]}{'ceil' if g[2] else ''}")
@pytest.mark.parametrize("p", NORMS)
def test_matches_pytorch(backend, rng, p, geometry, positive):
    torch = pytest.importorskip("torch")
    x, dy = _inputs(rng, positive)
    y, dx, dy_used = _run(backend, x, dy, p, *geometry, np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.lp_pool2d(xt, p, geometry[0], geometry[1], geometry[2])
    yt.backward(torch.tensor(dy_used))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_reference_matches_pytorch(rng):
    # the formula the backends are held to is PyTorch's, on the same cases
    torch = pytest.importorskip("torch")
    for p in NORMS:
        for geometry in GEOMETRIES:
            for positive in (False, True):
                x, dy = _inputs(rng, positive)
                xt = torch.tensor(x, requires_grad=True)
                yt = torch.nn.functional.lp_pool2d(xt, p, *geometry)
                dy_used = dy[:, :, :yt.shape[2], :yt.shape[3]]
                yt.backward(torch.tensor(dy_used))
                y, dx = _reference(x, dy_used, p, *geometry)
                np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("p", "x", "want_y", "want_dx"), [
    (1.0, [-1.0, -2.0, 0.5], -2.5, [1.0, 1.0, 1.0]),  # negative sum: y < 0, gradient 1
    (1.0, [1.0, -1.0, 0.0], 0.0, [0.0, 0.0, 0.0]),  # zero sum: no gradient (PyTorch's 0/0 rule)
    (3.0, [-1.0, -2.0, 0.5], math.nan, [math.nan] * 3),  # cube root of a negative sum: NaN, not 0
    (3.0, [-2.0, 2.0, 1.0], 1.0, [4.0, 4.0, 1.0]),
    (math.inf, [-1.0, -2.0, 0.5], 2.0, [0.0, -1.0, 0.0]),  # max |x| and sign(x) to it
    (math.inf, [2.0, -2.0, 1.0], 2.0, [1.0, 0.0, 0.0]),  # tie: the first, as PyTorch
    (math.inf, [0.0, 0.0, 0.0], 0.0, [0.0, 0.0, 0.0]),
])
def test_single_window(backend, p, x, want_y, want_dx):
    # PyTorch 2.13's values for one 1 x 3 window, dy = 1
    a = np.array(x).reshape(1, 1, 1, 3)
    y, dx, _ = _run(backend, a, np.ones((1, 1, 1, 1)), p, (1, 3), (1, 3), False, np.float64)
    np.testing.assert_array_equal(y.ravel(), [want_y])
    np.testing.assert_array_equal(dx.ravel(), want_dx)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_nan_input(backend, p):
    """Where the backends choose not to follow PyTorch, which hides some NaNs (sign(NaN) = 0 in
    its composition): p = 1 is a sum, whose gradient does not depend on x, so a NaN window passes
    dy * KH*KW/count (PyTorch: 0); p = inf passes NaN to the first NaN (PyTorch: 0 to the last)."""
    x = np.array([[1.0, math.nan, 3.0, math.nan], [-5.0, 2.0, 1.0, 1.0]]).reshape(1, 1, 2, 4)
    dy = np.array([[2.0, 3.0]]).reshape(1, 1, 1, 2)
    y, dx, _ = _run(backend, x, dy, p, (2, 2), (2, 2), False, np.float64)
    want_y, want_dx = _reference(x, dy, p, (2, 2), (2, 2), False)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(dx, want_dx)
    expected = {1.0: [[2, 2, 3, 3], [2, 2, 3, 3]], 2.0: [[math.nan] * 4] * 2,
                math.inf: [[0, math.nan, 0, math.nan], [0, 0, 0, 0]]}[p]
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"k{g[0]}s{g[1]}{'ceil' if g[2] else ''}")
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 1.5, math.inf])
def test_backward_is_the_forward_derivative(backend, p, geometry):
    """Central differences of the backend's own float64 forward, where it is differentiable:
    positive x for p = 3 and 1.5 (no negative sums), distinct |x| for p = inf."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0.3, 2.0, (1, 2, 7, 8))
    if p in (1.0, 2.0, math.inf):
        x *= rng.choice([-1.0, 1.0], x.shape)
    y = backend.lppool2d_forward(backend.asarray(x), p, *geometry)
    dy = rng.standard_normal(y.shape)
    dx = backend.to_numpy(backend.lppool2d_backward(backend.asarray(dy), backend.asarray(x), y, p, *geometry))

    def loss(a: np.ndarray) -> float:
        return float((backend.to_numpy(backend.lppool2d_forward(backend.asarray(a), p, *geometry)) * dy).sum())

    eps = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (loss(plus) - loss(minus)) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-7)
