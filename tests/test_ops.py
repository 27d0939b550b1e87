"""Every contract op, on every backend, against the loop references in reference.py.

Tolerances: float32 elementwise ops rtol 1e-5. Ops that sum many products (convolution,
its weight gradient over N*OH*OW terms, pooling sums) are compared at rtol 1e-4 / atol 1e-5:
the order of float32 additions differs between im2col+BLAS, our kernels and the loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucnn.backends.numpy.backend import dropout_mask

import reference as ref

SUM_TOL = dict(rtol=1e-4, atol=1e-5)
ELEM_TOL = dict(rtol=1e-5, atol=1e-6)

CONV_CASES = [
    # N, C, H, W, K, (KH, KW), stride, (top, bottom, left, right), dilation, groups
    (2, 3, 7, 7, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 2, 11, 13, 3, (5, 3), (2, 3), (2, 2, 1, 1), (1, 1), 1),     # prime sizes, unequal strides
    (2, 4, 9, 9, 6, (3, 3), (1, 1), (3, 3, 3, 3), (1, 1), 2),       # padding > 1, groups
    (1, 3, 10, 11, 2, (3, 3), (1, 1), (2, 2, 2, 2), (2, 3), 1),     # dilation
    (2, 2, 8, 8, 2, (2, 2), (3, 3), (0, 0, 0, 0), (1, 1), 1),       # stride > kernel
    (1, 6, 6, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    (1, 1, 5, 6, 2, (2, 4), (1, 1), (0, 1, 1, 2), (1, 1), 1),       # asymmetric 'same' padding
    (3, 5, 13, 7, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # 1x1 (Inception-style)
]


def _case_id(case):
    n, c, h, w, k, ks, s, p, d, g = case
    return f"n{n}c{c}h{h}w{w}k{k}ks{ks[0]}x{ks[1]}s{s[0]}{s[1]}p{''.join(map(str, p))}d{d[0]}{d[1]}g{g}"


def _put(backend, a, contiguous=True):
    """Place ``a`` on the backend; ``contiguous=False`` hands over a transposed view instead."""
    if contiguous:
        return backend.asarray(a)
    t = backend.asarray(np.ascontiguousarray(np.swapaxes(a, -1, -2)))
    return backend.xp.swapaxes(t, -1, -2)


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
def test_conv2d_forward_backward(backend, rng, case, contiguous):
    n, c, h, w, k, (kh, kw), stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    y = backend.conv2d_forward(_put(backend, x, contiguous), _put(backend, wt, contiguous), backend.asarray(b),
                               stride, padding, dilation, groups)
    expected = ref.conv2d(x, wt, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(backend.to_numpy(y), expected, **SUM_TOL)

    dy = rng.standard_normal(expected.shape).astype(np.float32)
    dx, dw, db = backend.conv2d_backward(_put(backend, dy, contiguous), _put(backend, x, contiguous),
                                         backend.asarray(wt), stride, padding, dilation, groups)
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, stride, padding, dilation, groups)
    np.testing.assert_allclose(backend.to_numpy(dx), rdx, **SUM_TOL)
    np.testing.assert_allclose(backend.to_numpy(dw), rdw, **SUM_TOL)
    np.testing.assert_allclose(backend.to_numpy(db), rdb, **SUM_TOL)


def test_conv2d_fused_relu_and_no_input_grad(backend, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    y = backend.conv2d_forward(backend.asarray(x), backend.asarray(wt), backend.asarray(b), *args, relu=True)
    np.testing.assert_allclose(backend.to_numpy(y), np.maximum(ref.conv2d(x, wt, b, *args), 0), **SUM_TOL)
    y_nobias = backend.conv2d_forward(backend.asarray(x), backend.asarray(wt), None, *args)
    np.testing.assert_allclose(backend.to_numpy(y_nobias), ref.conv2d(x, wt, None, *args), **SUM_TOL)
    dx, dw, db = backend.conv2d_backward(backend.asarray(np.ones((2, 4, 6, 6), np.float32)), backend.asarray(x),
                                         backend.asarray(wt), *args, need_input_grad=False)
    assert dx is None
    np.testing.assert_allclose(backend.to_numpy(db), np.full(4, 72.0), **SUM_TOL)


def test_conv2d_float64(backend, rng):
    x = rng.standard_normal((1, 2, 5, 5))
    wt = rng.standard_normal((3, 2, 3, 3))
    y = backend.conv2d_forward(backend.asarray(x), backend.asarray(wt), None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(backend.to_numpy(y), ref.conv2d(x, wt, None, (1, 1), (1, 1, 1, 1), (1, 1), 1),
                               rtol=1e-12, atol=1e-12)


FUSED_CASES = [
    # N, C, H, W, K, (KH, KW), conv padding, groups, pool kernel, pool stride, pool padding, ceil_mode
    (3, 1, 12, 12, 4, (5, 5), (2, 2, 2, 2), 1, (2, 2), (2, 2), (0, 0), False),  # LeNet's first block
    (2, 2, 11, 9, 3, (3, 3), (0, 0, 0, 0), 1, (2, 2), (2, 2), (0, 0), False),    # 9x7: a row and column left out
    (2, 4, 9, 9, 6, (3, 3), (1, 1, 1, 1), 2, (3, 3), (3, 3), (0, 0), False),     # groups, 3x3 tiles
    (1, 2, 8, 6, 2, (1, 1), (0, 0, 0, 0), 1, (2, 1), (2, 1), (0, 0), True),      # unequal window, ceil exact
    (1, 2, 8, 8, 3, (2, 2), (0, 0, 0, 0), 1, (2, 2), (2, 2), (0, 0), True),      # ceil: partial windows
    (2, 2, 8, 8, 3, (3, 3), (1, 1, 1, 1), 1, (3, 3), (2, 2), (1, 1), False),     # overlapping, padded
]


def _fused_id(case):
    n, c, h, w, k, ks, p, g, pk, ps, pp, ceil = case
    return f"h{h}w{w}ks{ks[0]}g{g}pool{pk[0]}{pk[1]}s{ps[0]}{ps[1]}p{pp[0]}{'ceil' if ceil else 'floor'}"


@pytest.mark.parametrize("case", FUSED_CASES, ids=_fused_id)
def test_conv2d_relu_maxpool2d_equals_the_three_ops(backend, rng, case):
    """The fused op against the loop references run one after another. Small integers keep every
    sum exact in float32, so the comparison is exact and full of ties (the first maximum must
    win, as in maxpool2d) and of windows whose maximum is <= 0 (no gradient through the ReLU)."""
    n, c, h, w, k, (kh, kw), padding, groups, kernel, pool_stride, pool_padding, ceil_mode = case
    conv_args = ((1, 1), padding, (1, 1), groups)
    pool_args = (kernel, pool_stride, pool_padding)
    x = rng.integers(-2, 3, (n, c, h, w)).astype(np.float32)
    wt = rng.integers(-1, 2, (k, c // groups, kh, kw)).astype(np.float32)
    b = rng.integers(-2, 3, k).astype(np.float32)
    put = backend.asarray
    y, saved = backend.conv2d_relu_maxpool2d_forward(put(x), put(wt), put(b), *conv_args, *pool_args, ceil_mode,
                                                     keep_for_backward=True)
    conv = np.maximum(ref.conv2d(x, wt, b, *conv_args), 0)
    ry, argmax = ref.maxpool2d(conv, *pool_args, ceil_mode)
    np.testing.assert_array_equal(backend.to_numpy(y), ry)
    assert (ry == 0).any() and (ry > 0).any()

    dy = rng.integers(-3, 4, ry.shape).astype(np.float32)
    dx, dw, db = backend.conv2d_relu_maxpool2d_backward(put(dy), saved, put(x), put(wt), *conv_args, *pool_args)
    dconv = ref.maxpool2d_backward(dy * (ry > 0), argmax, conv.shape)
    rdx, rdw, rdb = ref.conv2d_backward(dconv, x, wt, *conv_args)
    np.testing.assert_array_equal(backend.to_numpy(dx), rdx)
    np.testing.assert_array_equal(backend.to_numpy(dw), rdw)
    np.testing.assert_array_equal(backend.to_numpy(db), rdb)
    with pytest.raises(ValueError, match="used up by an earlier backward pass"):
        backend.conv2d_relu_maxpool2d_backward(put(dy), saved, put(x), put(wt), *conv_args, *pool_args)
    _, saved = backend.conv2d_relu_maxpool2d_forward(put(x), put(wt), put(b), *conv_args, *pool_args, ceil_mode,
                                                     keep_for_backward=True)
    no_dx = backend.conv2d_relu_maxpool2d_backward(put(dy), saved, put(x), put(wt), *conv_args, *pool_args,
                                                   need_input_grad=False)
    assert no_dx[0] is None
    np.testing.assert_array_equal(backend.to_numpy(no_dx[1]), rdw)

    y_eval, nothing = backend.conv2d_relu_maxpool2d_forward(put(x), put(wt), put(b), *conv_args, *pool_args,
                                                            ceil_mode)
    assert nothing is None
    np.testing.assert_array_equal(backend.to_numpy(y_eval), ry)


def test_conv2d_relu_maxpool2d_backward_needs_the_training_forward(backend, rng):
    x = backend.asarray(rng.standard_normal((1, 1, 4, 4)).astype(np.float32))
    wt = backend.asarray(np.ones((1, 1, 1, 1), np.float32))
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 1, (2, 2), (2, 2), (0, 0))
    y, saved = backend.conv2d_relu_maxpool2d_forward(x, wt, None, *args, False)
    with pytest.raises(ValueError, match="conv2d_relu_maxpool2d_backward: needs the state of a forward"):
        backend.conv2d_relu_maxpool2d_backward(backend.asarray(np.ones((1, 1, 2, 2), np.float32)), saved, x, wt,
                                               *args)


POOL_CASES = [
    # N, C, H, W, kernel, stride, padding, ceil_mode
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0), False),
    (1, 2, 7, 9, (3, 3), (2, 2), (1, 1), False),    # overlapping, padded
    (1, 2, 7, 9, (3, 3), (2, 2), (1, 1), True),     # ceil_mode
    (2, 1, 5, 5, (2, 3), (3, 2), (1, 0), True),     # stride > kernel, ceil_mode
    (1, 3, 11, 13, (3, 2), (1, 1), (1, 1), False),  # stride 1, heavy overlap
    (1, 1, 1, 1, (3, 3), (1, 1), (1, 1), False),    # a 1x1 plane: window mostly padding
    (1, 2, 6, 6, (3, 3), (3, 3), (0, 0), True),
    (1, 1, 10, 10, (4, 4), (3, 3), (2, 2), True),
]


def _pool_id(case):
    n, c, h, w, k, s, p, ceil = case
    return f"h{h}w{w}k{k[0]}{k[1]}s{s[0]}{s[1]}p{p[0]}{p[1]}{'ceil' if ceil else 'floor'}"


def check_maxpool2d(backend, x, x_on_backend, kernel, stride, padding, ceil_mode, rng, tolerance):
    """Forward value and argmax exactly as the reference, backward within ``tolerance``;
    returns the output gradient it used."""
    y, idx = backend.maxpool2d_forward(x_on_backend, kernel, stride, padding, ceil_mode)
    ry, ridx = ref.maxpool2d(x, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(backend.to_numpy(y), ry)
    np.testing.assert_array_equal(backend.to_numpy(idx), ridx)
    dy = rng.standard_normal(ry.shape).astype(np.float32)
    dx = backend.maxpool2d_backward(backend.asarray(dy), idx, x.shape, kernel, stride, padding)
    np.testing.assert_allclose(backend.to_numpy(dx), ref.maxpool2d_backward(dy, ridx, x.shape), **tolerance)
    return dy


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_maxpool2d(backend, rng, case):
    n, c, h, w, kernel, stride, padding, ceil_mode = case
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w).astype(np.float32)  # distinct: no ties
    check_maxpool2d(backend, x, _put(backend, x, False), kernel, stride, padding, ceil_mode, rng, ELEM_TOL)


def test_maxpool2d_ties_nan_and_negative(backend):
    x = np.array([[[[-5.0, -5.0, -7.0, -1.0],
                    [-9.0, -6.0, np.nan, 3.0],
                    [2.0, 2.0, 1.0, np.nan],
                    [2.0, 0.0, -3.0, -4.0]]]], dtype=np.float32)
    y, idx = backend.maxpool2d_forward(backend.asarray(x), (2, 2), (2, 2), (0, 0), False)
    y, idx = backend.to_numpy(y), backend.to_numpy(idx)
    assert y[0, 0, 0, 0] == -5.0 and idx[0, 0, 0, 0] == 0       # first of a tie; padding never needed
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6      # NaN propagates
    assert y[0, 0, 1, 0] == 2.0 and idx[0, 0, 1, 0] == 8         # first of three equal maxima
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 11
    # all-negative input with padding: -inf padding must never win
    neg = -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    yn, _ = backend.maxpool2d_forward(backend.asarray(neg), (3, 3), (2, 2), (1, 1), False)
    np.testing.assert_array_equal(backend.to_numpy(yn), [[[[-1.0, -2.0], [-4.0, -5.0]]]])


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
def test_avgpool2d(backend, rng, case, count_include_pad):
    n, c, h, w, kernel, stride, padding, ceil_mode = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = backend.avgpool2d_forward(_put(backend, x, False), kernel, stride, padding, ceil_mode, count_include_pad)
    ry = ref.avgpool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    np.testing.assert_allclose(backend.to_numpy(y), ry, **SUM_TOL)
    dy = rng.standard_normal(ry.shape).astype(np.float32)
    dx = backend.avgpool2d_backward(backend.asarray(dy), x.shape, kernel, stride, padding, ceil_mode,
                                    count_include_pad)
    np.testing.assert_allclose(backend.to_numpy(dx),
                               ref.avgpool2d_backward(dy, x.shape, kernel, stride, padding, count_include_pad),
                               **SUM_TOL)


def test_activations(backend, rng):
    x = rng.standard_normal((3, 4, 5, 7)).astype(np.float32) * 4
    x[0, 0, 0, :3] = [0.0, 80.0, -80.0]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    X, DY = _put(backend, x, False), backend.asarray(dy)
    get = backend.to_numpy
    x64 = x.astype(np.float64)

    y = backend.relu_forward(X)
    np.testing.assert_array_equal(get(y), np.maximum(x, 0))
    np.testing.assert_array_equal(get(backend.relu_backward(DY, y)), np.where(x > 0, dy, 0))

    y = backend.leaky_relu_forward(X, 0.1)
    np.testing.assert_allclose(get(y), np.where(x > 0, x64, 0.1 * x64), **ELEM_TOL)
    np.testing.assert_allclose(get(backend.leaky_relu_backward(DY, X, 0.1)), np.where(x > 0, dy, 0.1 * dy),
                               **ELEM_TOL)

    y = backend.sigmoid_forward(X)
    sig = 1 / (1 + np.exp(-x64))
    np.testing.assert_allclose(get(y), sig, **ELEM_TOL)
    assert np.isfinite(get(y)).all()
    np.testing.assert_allclose(get(backend.sigmoid_backward(DY, y)), dy * sig * (1 - sig), rtol=1e-5, atol=1e-6)

    y = backend.tanh_forward(X)
    np.testing.assert_allclose(get(y), np.tanh(x64), **ELEM_TOL)
    np.testing.assert_allclose(get(backend.tanh_backward(DY, y)), dy * (1 - np.tanh(x64) ** 2), rtol=1e-5,
                               atol=1e-6)


def test_nan_propagates_through_activations(backend):
    x = backend.asarray(np.array([np.nan, 1.0, -1.0], dtype=np.float32))
    for op in (backend.relu_forward, backend.sigmoid_forward, backend.tanh_forward):
        assert np.isnan(backend.to_numpy(op(x))[0])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_mask_is_shared_and_fair(backend, rng, p):
    x = rng.standard_normal((8, 16, 9, 9)).astype(np.float32)
    y, mask = backend.dropout_forward(backend.asarray(x), p, seed=987654321)
    mask = backend.to_numpy(mask)
    np.testing.assert_array_equal(mask, dropout_mask(x.shape, p, 987654321))  # same on every backend
    scale = 0.0 if p == 1 else 1 / (1 - p)
    np.testing.assert_allclose(backend.to_numpy(y), x * mask * np.float32(scale), **ELEM_TOL)
    assert abs((1 - mask.mean()) - p) < 0.02
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(backend.to_numpy(backend.dropout_backward(backend.asarray(dy),
                                                                         backend.asarray(mask), p)),
                               dy * mask * np.float32(scale), **ELEM_TOL)
    _, other = backend.dropout_forward(backend.asarray(x), p, seed=987654322)
    if 0 < p < 1:
        assert (backend.to_numpy(other) != mask).any()


def _smoothed_cross_entropy(logits, labels, eps):
    """PyTorch's label smoothing (unweighted), by loops in float64: the target is (1 - eps) * onehot + eps / C."""
    n, c = logits.shape
    loss, grad = 0.0, np.zeros(logits.shape)
    for i in range(n):
        row = [float(v) for v in logits[i]]
        m = max(row)
        log_z = math.log(sum(math.exp(v - m) for v in row))
        neg_logp = [log_z - (v - m) for v in row]
        loss += (1 - eps) * neg_logp[labels[i]] + eps / c * sum(neg_logp)
        for j, v in enumerate(row):
            target = (1 - eps) * (j == labels[i]) + eps / c
            grad[i, j] = (math.exp(v - m - log_z) - target) / n
    return loss / n, grad


@pytest.mark.parametrize("smoothing", [None, 0.0, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 2), (5, 10), (37, 13)])
def test_softmax_cross_entropy(backend, rng, shape, smoothing):
    logits = (rng.standard_normal(shape) * 5).astype(np.float32)
    logits[0, 0] = 90.0  # would overflow a naive exp in float32
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int32)
    args = (backend.asarray(logits), backend.asarray(labels)) + (() if smoothing is None else (smoothing,))
    loss, grad = backend.softmax_cross_entropy(*args)
    rloss, rgrad = (ref.softmax_cross_entropy(logits, labels) if not smoothing
                    else _smoothed_cross_entropy(logits, labels, smoothing))
    assert float(backend.to_numpy(loss)) == pytest.approx(rloss, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(backend.to_numpy(grad), rgrad, rtol=1e-5, atol=1e-7)
    if smoothing == 0.0:  # an explicit 0 is the plain op, bit for bit
        plain_loss, plain_grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))
        np.testing.assert_array_equal(backend.to_numpy(loss), backend.to_numpy(plain_loss))
        np.testing.assert_array_equal(backend.to_numpy(grad), backend.to_numpy(plain_grad))


def test_softmax_cross_entropy_plain_loss_stays_finite_beside_an_infinite_logit(backend):
    """eps = 0 must not compute 0 * (-log p) terms: a -inf logit (p = 0) would make them NaN."""
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]], np.float32)
    labels = np.array([2, 0], np.int32)
    loss, grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), 0.0)
    finite = np.array([[0.0, 1.0], [2.0, 0.5]], np.float32)
    rloss, rgrad = ref.softmax_cross_entropy(finite, np.array([1, 0]))
    assert float(backend.to_numpy(loss)) == pytest.approx(rloss, rel=1e-5)
    expected = np.zeros((2, 3))
    expected[0, [0, 2]], expected[1, [0, 1]] = rgrad[0], rgrad[1]
    np.testing.assert_allclose(backend.to_numpy(grad), expected, rtol=1e-5, atol=1e-7)


def test_sgd_update(backend, rng):
    p = rng.standard_normal(50).astype(np.float32)
    g = rng.standard_normal(50).astype(np.float32)
    for nesterov in (False, True):
        P, V = backend.asarray(p.copy()), backend.asarray(np.zeros_like(p))
        for _ in range(2):
            backend.sgd_update(P, backend.asarray(g), V, 0.1, 0.9, 0.01, nesterov)
        # two steps by hand
        pp, v = p.astype(np.float64), np.zeros(50)
        for _ in range(2):
            gg = g + 0.01 * pp
            v = 0.9 * v + gg
            pp = pp - 0.1 * (gg + 0.9 * v if nesterov else v)
        np.testing.assert_allclose(backend.to_numpy(P), pp, **ELEM_TOL)
    P = backend.asarray(p.copy())
    backend.sgd_update(P, backend.asarray(g), None, 0.5, 0.0, 0.0, False)
    np.testing.assert_allclose(backend.to_numpy(P), p - 0.5 * g, **ELEM_TOL)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_update(backend, rng, decoupled):
    p = rng.standard_normal(40).astype(np.float32)
    P, M, V = backend.asarray(p.copy()), backend.asarray(np.zeros_like(p)), backend.asarray(np.zeros_like(p))
    pp, m, v = p.astype(np.float64), np.zeros(40), np.zeros(40)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.05
    for t in range(1, 4):
        g = rng.standard_normal(40).astype(np.float32)
        backend.adam_update(P, backend.asarray(g), M, V, t, lr, b1, b2, eps, wd, decoupled)
        gg = g.astype(np.float64)
        if decoupled:
            pp = pp * (1 - lr * wd)
        else:
            gg = gg + wd * pp
        m = b1 * m + (1 - b1) * gg
        v = b2 * v + (1 - b2) * gg * gg
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        pp = pp - lr * mhat / (np.sqrt(vhat) + eps)
    np.testing.assert_allclose(backend.to_numpy(P), pp, rtol=1e-5, atol=1e-6)


def test_numpy_conv2d_in_batch_chunks(rng, monkeypatch):
    """The numpy backend runs convolutions over the batch in chunks; uneven chunks must give the
    same result as the reference, and the weight gradient sums over every chunk."""
    from gpucnn.backends.numpy.backend import NumpyBackend
    from gpucnn.backends.numpy.conv import Convolution

    monkeypatch.setattr(Convolution, "BATCH_CHUNK", 2)
    backend = NumpyBackend()
    x = rng.standard_normal((5, 4, 7, 6)).astype(np.float32)
    wt = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    args = ((2, 1), (1, 2, 0, 1), (1, 2), 2)
    y = backend.conv2d_forward(x, wt, None, *args, keep_for_backward=True)
    np.testing.assert_allclose(y, ref.conv2d(x, wt, None, *args), **SUM_TOL)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = backend.conv2d_backward(dy, x, wt, *args)
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, *args)
    np.testing.assert_allclose(dx, rdx, **SUM_TOL)
    np.testing.assert_allclose(dw, rdw, **SUM_TOL)
    np.testing.assert_allclose(db, rdb, **SUM_TOL)


def test_numpy_weight_gradient_blocked_reduction(rng):
    """A first-layer-like conv (tiny weight, long reduction) takes the blocked path of
    products_over_long_axis, remainder block included; it must match the reference."""
    from gpucnn.backends.numpy.backend import NumpyBackend
    from gpucnn.backends.numpy.products import products_over_long_axis

    a = rng.standard_normal((2, 7, 5 * 1024 + 37)).astype(np.float32)
    b = rng.standard_normal((2, 3, 5 * 1024 + 37)).astype(np.float32)
    expected = np.einsum("grl,gkl->gkr", a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(products_over_long_axis(a, b), expected, rtol=1e-4, atol=1e-3)

    backend = NumpyBackend()
    x = rng.standard_normal((8, 1, 32, 32)).astype(np.float32)  # L = 30*30*8 = 7200: 7 blocks + 32
    wt = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    dy = rng.standard_normal((8, 2, 30, 30)).astype(np.float32)
    _, dw, _ = backend.conv2d_backward(dy, x, wt, *args, need_input_grad=False)
    np.testing.assert_allclose(dw, ref.conv2d_backward(dy, x, wt, *args)[1], rtol=1e-4, atol=1e-3)


def test_numpy_filter_product_in_column_blocks(rng):
    """A few filters over a long im2col matrix are multiplied in column blocks, the last one
    partial; the product must match the plain one, and a conv taking that path the reference."""
    from gpucnn.backends.numpy.backend import NumpyBackend
    from gpucnn.backends.numpy.products import filter_product

    w_mat = rng.standard_normal((2, 3, 9)).astype(np.float32)
    cols = rng.standard_normal((2, 9, 3 * 4096 + 123)).astype(np.float32)
    out = np.full((2, 3, cols.shape[2]), np.nan, dtype=np.float32)
    filter_product(w_mat, cols, out)
    np.testing.assert_allclose(out, np.matmul(w_mat, cols), rtol=1e-6, atol=1e-6)

    x = rng.standard_normal((12, 1, 30, 30)).astype(np.float32)  # L = 28*28*12 = 9408: 2 blocks + 1216
    wt = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    y = NumpyBackend().conv2d_forward(x, wt, b, *args)
    np.testing.assert_allclose(y, ref.conv2d(x, wt, b, *args), **SUM_TOL)


def test_numpy_scratch_pool_hands_back_by_shape_within_its_limit():
    from gpucnn.backends.numpy.scratch import ScratchPool

    pool = ScratchPool(limit=3 << 20)
    a = pool.take((256, 1024), np.float32)  # 1 MiB
    pool.give(a, a[:10], np.empty(10, np.float32))  # a view and a small array are never kept
    assert pool.take((256, 1024), np.float32) is a
    assert pool.take((256, 1024), np.float32) is not a  # handed out once only
    b, c = pool.take((512, 1024), np.float32), pool.take((512, 1024), np.float64)  # 2 and 4 MiB
    pool.give(a, b, c)  # c alone is over the limit
    assert pool.take((512, 1024), np.float64) is not c
    d = pool.take((128, 1024), np.float32)
    pool.give(d, d.copy())  # 3.5 MiB: the least recently returned shape (a's) goes first
    assert pool.take((256, 1024), np.float32) is not a
    assert pool.take((512, 1024), np.float32) is b


def test_numpy_training_steps_equal_with_and_without_buffer_reuse(rng):
    """Steps that recycle the scratch pool's buffers give bit for bit what fresh arrays give: no
    buffer is handed out while something still reads it (batch 160: chunks of 64, 64 and 32)."""
    import gpucnn
    from gpucnn.backends.numpy.backend import NumpyBackend

    def train(reuse):
        backend = NumpyBackend()
        if not reuse:
            backend._scratch.limit = 0  # its pool, still empty, keeps nothing from now on
        with gpucnn.use_backend("numpy"):
            model = gpucnn.LeNet5(rng=np.random.default_rng(5))
        for m in model.modules():
            object.__setattr__(m, "backend", backend)
            for p in m._parameters.values():
                p.backend = backend
        opt = gpucnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = gpucnn.CrossEntropyLoss()
        data = np.random.default_rng(6)
        for _ in range(3):
            x = data.standard_normal((160, 1, 28, 28)).astype(np.float32)
            opt.zero_grad()
            loss = loss_fn(model(x), data.integers(0, 10, 160))
            assert loss.backend is backend  # the ops ran on this instance, with its scratch pool
            loss.backward()  # the images need no gradient: parameters' only, as backward_params did
            opt.step()
        return [p.data.copy() for p in model.parameters()], backend._scratch._bytes

    reused, pooled_bytes = train(True)
    fresh, _ = train(False)
    assert pooled_bytes > 0
    for a, b in zip(reused, fresh):
        np.testing.assert_array_equal(a, b)


def test_numpy_maxpool_backward_without_saved_offsets(rng):
    """The numpy backend reuses the forward's winning offsets when handed the very argmax it
    returned; any other argmax array (a copy, a loaded one) takes the general path, same result."""
    from gpucnn.backends.numpy.backend import NumpyBackend

    backend = NumpyBackend()
    x = rng.standard_normal((3, 2, 8, 6)).astype(np.float32)
    dy = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    _, argmax = backend.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), False)
    general = backend.maxpool2d_backward(dy, argmax.copy(), x.shape, (2, 2), (2, 2), (0, 0))
    saved = backend.maxpool2d_backward(dy, argmax, x.shape, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(saved, general)
    _, ridx = ref.maxpool2d(x, (2, 2), (2, 2), (0, 0), False)
    np.testing.assert_array_equal(general, ref.maxpool2d_backward(dy, ridx, x.shape))
