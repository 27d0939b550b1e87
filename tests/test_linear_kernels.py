"""linear_forward / linear_backward: our GEMM kernels (kernels/linear.cu) against x @ w.T + b and its
gradients, the ReLU epilogue, and Sequential's Linear -> ReLU fusion, bit for bit the layers apart."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F

#: (rows, in, out): below, at and past the 64x64 tile and the 16-deep slices; LeNet-5's head
SHAPES = [(1, 1, 1), (8, 400, 120), (70, 130, 65), (64, 16, 64), (3, 17, 129)]


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, k, n", SHAPES)
def test_linear_forward_and_backward(backend, rng, rows, k, n, dtype):
    x, w = rng.standard_normal((rows, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    b, dy = rng.standard_normal(n).astype(dtype), rng.standard_normal((rows, n)).astype(dtype)
    put = backend.asarray
    tol = _tolerance(dtype)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(backend.to_numpy(backend.linear_forward(put(x), put(w), put(b))), ref, **tol)
    np.testing.assert_allclose(backend.to_numpy(backend.linear_forward(put(x), put(w), None)), ref - b, **tol)
    relu = backend.to_numpy(backend.linear_forward(put(x), put(w), put(b), relu=True))
    np.testing.assert_array_equal(relu, np.maximum(backend.to_numpy(backend.linear_forward(put(x), put(w), put(b))), 0))
    dx, dw, db = backend.linear_backward(put(dy), put(x), put(w))
    np.testing.assert_allclose(backend.to_numpy(dx), dy.astype(np.float64) @ w, **tol)
    np.testing.assert_allclose(backend.to_numpy(dw), dy.T.astype(np.float64) @ x, **tol)
    np.testing.assert_allclose(backend.to_numpy(db), dy.astype(np.float64).sum(axis=0), **tol)
    no_dx, dw2, db2 = backend.linear_backward(put(dy), put(x), put(w), need_input_grad=False)
    assert no_dx is None
    np.testing.assert_array_equal(backend.to_numpy(dw2), backend.to_numpy(dw))
    np.testing.assert_array_equal(backend.to_numpy(db2), backend.to_numpy(db))


@pytest.mark.parametrize("need_input_grad", [True, False])
def test_linear_backward_with_relu_output_is_relu_backward_then_linear_backward(backend, rng, need_input_grad):
    """The ReLU mask read with dy inside both backward kernels: bit for bit the two ops, NaN included."""
    x, w = rng.standard_normal((70, 33)).astype(np.float32), rng.standard_normal((65, 33)).astype(np.float32)
    dy = rng.standard_normal((70, 65)).astype(np.float32)
    dy.flat[::13] = np.nan
    put = backend.asarray
    y = backend.linear_forward(put(x), put(w), put(np.zeros(65, np.float32)), relu=True)
    with np.errstate(invalid="ignore"):
        one_op = backend.linear_backward(put(dy), put(x), put(w), need_input_grad, relu_output=y)
        two_ops = backend.linear_backward(backend.relu_backward(put(dy), y), put(x), put(w), need_input_grad)
    for mine, ref in zip(one_op, two_ops):
        if ref is None:
            assert mine is None
        else:
            np.testing.assert_array_equal(backend.to_numpy(mine), backend.to_numpy(ref))


def test_linear_takes_leading_axes(backend, rng):
    x, w = rng.standard_normal((2, 5, 7)).astype(np.float32), rng.standard_normal((3, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = backend.linear_forward(backend.asarray(x), backend.asarray(w), None)
    assert y.shape == (2, 5, 3)
    np.testing.assert_allclose(backend.to_numpy(y), x @ w.T, rtol=1e-5, atol=1e-5)
    dx, dw, db = backend.linear_backward(backend.asarray(dy), backend.asarray(x), backend.asarray(w))
    assert dx.shape == x.shape
    np.testing.assert_allclose(backend.to_numpy(dw), dy.reshape(-1, 3).T @ x.reshape(-1, 7), rtol=1e-5, atol=1e-5)


def test_linear_is_deterministic(backend, rng):
    x, w = rng.standard_normal((300, 257)).astype(np.float32), rng.standard_normal((33, 257)).astype(np.float32)
    dy = rng.standard_normal((300, 33)).astype(np.float32)
    put = backend.asarray
    runs = [[backend.to_numpy(a) for a in (backend.linear_forward(put(x), put(w), None),
                                           *backend.linear_backward(put(dy), put(x), put(w)))] for _ in range(2)]
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


def test_numpy_linear_is_the_matmul_it_replaced(rng):
    """CPU training must not change: the NumPy face is x @ w.T + b, dy @ w, dy.T @ x, dy.sum(0)."""
    backend = gpucnn.get_backend("numpy")
    x, w = rng.standard_normal((9, 11)).astype(np.float32), rng.standard_normal((4, 11)).astype(np.float32)
    b, dy = rng.standard_normal(4).astype(np.float32), rng.standard_normal((9, 4)).astype(np.float32)
    y = x @ w.T
    y += b
    np.testing.assert_array_equal(backend.linear_forward(x, w, b), y)
    dx, dw, db = backend.linear_backward(dy, x, w)
    np.testing.assert_array_equal(dx, dy @ w)
    np.testing.assert_array_equal(dw, dy.T @ x)
    np.testing.assert_array_equal(db, dy.sum(axis=0))


def _head(rng):
    return gpucnn.nn.Sequential(gpucnn.nn.Linear(30, 20, rng=rng), gpucnn.nn.ReLU(), gpucnn.nn.Linear(20, 5, rng=rng),
                                gpucnn.nn.ReLU())


@pytest.mark.parametrize("bias", [True, False])
def test_sequential_linear_relu_fusion_is_bitwise_the_layers_apart(backend, rng, bias):
    with gpucnn.use_backend(backend.name):
        model = gpucnn.nn.Sequential(gpucnn.nn.Linear(30, 20, bias=bias, rng=np.random.default_rng(1)),
                                     gpucnn.nn.ReLU(), gpucnn.nn.Linear(20, 5, rng=np.random.default_rng(2)))
        data = rng.standard_normal((6, 30)).astype(np.float32)
        results = []
        for fused in (True, False):
            model.zero_grad()
            x = gpucnn.tensor(data, requires_grad=True)
            y = model(x) if fused else model[2](F.relu(model[0](x)))
            (y * y).sum().backward()
            results.append([backend.to_numpy(a) for a in (y.data, x.grad.data,
                                                          *(p.grad.data for p in model.parameters()))])
    for fused, apart in zip(*results):
        np.testing.assert_array_equal(fused, apart)


def test_sequential_fuses_linear_relu_into_one_launch():
    from conftest import _sim_reason

    if _sim_reason():
        pytest.skip(_sim_reason())
    sim = gpucnn.get_backend("cuda-sim")
    with gpucnn.use_backend("cuda-sim"):
        model = _head(np.random.default_rng(0))
        x = gpucnn.tensor(np.ones((4, 30), np.float32))
        sim.device.launch_counts.clear()
        model(x)
    assert sim.device.launch_counts == {"linear_forward": 2}
