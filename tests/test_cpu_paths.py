"""The numpy backend's paths for wider networks (ResNet): convolutions on (C, N, H, W) images
("shift", "gather", "pointwise" in backends/numpy/conv_cnhw.py) and BatchNorm in few passes.

Tolerances, and why they are what they are:
- Convolutions against the float64 loops in reference.py: rtol 1e-4 / atol 1e-5, the same as
  test_ops.py. Each output is a float32 sum of C*KH*KW products in BLAS's blocking order, and the
  weight gradient a sum over N*OH*OW products; the new paths change that order (and add exact
  zeros at the padding positions of the "shift" grid), nothing else. With the inputs here (unit
  normal, at most a few hundred terms) the error is a few 1e-6.
- BatchNorm against float64 formulas: rtol 1e-4 / atol 1e-5 in float32. The sums are now blocked
  float32 (a BLAS product with a ones vector, then a sum over the batch) instead of NumPy's pairwise
  sum; both err by O(eps * log or sqrt of the count) relative to the sum of |x|, far under 1e-4 for
  the counts here. The variance stays two-pass (centred values), so a mean of 1000 against a
  standard deviation of 1 does not cancel: checked at rtol 1e-3 on the normalised output, where
  E[x^2] - E[x]^2 in float32 would be off by about 100%.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn.backends.numpy.backend import NumpyBackend

import reference as ref


def _np(a):
    return a.numpy() if hasattr(a, "numpy") else np.asarray(a)

SUM_TOL = dict(rtol=1e-4, atol=1e-5)

# N, C, H, W, K, (KH, KW), stride, (top, bottom, left, right), dilation, groups, expected mode
CASES = [
    (3, 4, 10, 10, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "shift"),      # ResNet's 3x3
    (2, 4, 9, 12, 6, (3, 3), (1, 1), (1, 2, 0, 1), (1, 2), 2, "shift"),      # uneven padding, dilation, groups
    (2, 1, 12, 12, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, "shift"),      # one channel (mnist-net)
    (3, 4, 9, 8, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "shift"),      # ResNet's strided 3x3: 4 phases
    (2, 4, 9, 8, 6, (3, 2), (2, 3), (1, 0, 2, 1), (1, 2), 2, "shift"),      # 6 phases, dilation, groups
    (2, 3, 11, 9, 4, (2, 2), (3, 2), (0, 1, 1, 0), (1, 1), 1, "shift"),     # a phase no offset reads
    (2, 3, 7, 6, 5, (1, 1), (2, 2), (1, 0, 0, 1), (1, 1), 1, "shift"),      # padded strided 1x1: one phase read
    (2, 4, 7, 7, 5, (3, 3), (3, 3), (0, 0, 0, 0), (1, 1), 1, "gather"),     # phase grid 2.25x the output
    (2, 4, 9, 8, 6, (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 2, "shift"),      # dilation = stride: one phase row
    (2, 4, 7, 7, 6, (2, 2), (3, 3), (0, 0, 0, 0), (2, 2), 2, "gather"),     # dilation, groups
    (3, 4, 9, 8, 6, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "pointwise"),   # ResNet's shortcut
    (3, 4, 8, 8, 6, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "pointwise"),
    (2, 3, 6, 7, 5, (1, 1), (1, 1), (1, 0, 2, 1), (1, 1), 1, "shift"),       # padded 1x1: no im2col copy
    (2, 4, 3, 3, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, None),         # padded grid 2.8x: im2col path
]


def _id(case):
    n, c, h, w, k, ks, s, p, d, g, mode = case
    return f"{mode}-c{c}h{h}w{w}k{k}ks{ks[0]}{ks[1]}s{s[0]}{s[1]}p{''.join(map(str, p))}d{d[0]}{d[1]}g{g}"


@pytest.mark.parametrize("chunk_bytes, kept_chunk_bytes", [(1 << 30, 1 << 30), (1500, 1500), (1500, 1 << 30)],
                         ids=["one-chunk", "uneven-chunks", "kept-in-one-chunk"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_cnhw_conv_paths_match_reference(case, chunk_bytes, kept_chunk_bytes, rng):
    n, c, h, w, k, ks, stride, padding, dilation, groups, mode = case
    backend = NumpyBackend()
    cnhw = backend._convolution.cnhw
    cnhw.flat_chunk_bytes = chunk_bytes
    cnhw.flat_kept_chunk_bytes = kept_chunk_bytes
    cnhw.flat_max_waste = cnhw.flat_max_strided_waste = 2.0  # small images take the shift path too
    cnhw.flat_keep_unstrided_columns = True  # keep=True below keeps the columns on every path
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, *ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    args = (stride, padding, dilation, groups)
    oh, ow = ref.conv2d(x[:1], wt, None, *args).shape[2:]
    assert cnhw.mode(x.shape, wt.shape, stride, padding, groups, oh, ow) == mode
    expected = ref.conv2d(x, wt, b, *args)
    for keep in (True, False):  # columns kept by the forward, or built again by the backward
        y = backend.conv2d_forward(x, wt, b, *args, keep_for_backward=keep)
        assert y.dtype == np.float32 and y.flags.c_contiguous
        np.testing.assert_allclose(y, expected, **SUM_TOL)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = backend.conv2d_backward(dy, x, wt, *args)
        rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, *args)
        np.testing.assert_allclose(dx, rdx, **SUM_TOL)
        np.testing.assert_allclose(dw, rdw, **SUM_TOL)
        np.testing.assert_allclose(db, rdb, **SUM_TOL)
        assert dx.dtype == dw.dtype == db.dtype == np.float32
    # the ReLU epilogue and a backward without the input gradient (a first layer)
    y = backend.conv2d_forward(x, wt, b, *args, relu=True, keep_for_backward=True)
    np.testing.assert_allclose(y, np.maximum(expected, 0), **SUM_TOL)
    dx, dw, _ = backend.conv2d_backward(dy, x, wt, *args, need_input_grad=False)
    assert dx is None
    np.testing.assert_allclose(dw, rdw, **SUM_TOL)


@pytest.mark.parametrize("flat", [True, False], ids=["cnhw", "batch-innermost"])
def test_conv_columns_are_built_chunk_by_chunk(flat, rng, monkeypatch):
    """Each chunk's product runs right after its im2col matrix is built, while it is in cache, and
    columns kept by a training forward are used, once, by its backward pass."""
    from gpucnn.backends.numpy import conv as numpy_conv
    from gpucnn.backends.numpy import conv_cnhw as numpy_conv_cnhw

    events = []
    product = numpy_conv.filter_product
    for module in (numpy_conv, numpy_conv_cnhw):
        monkeypatch.setattr(module, "filter_product", lambda *a: events.append("product") or product(*a))
    backend = NumpyBackend()
    convolution, cnhw = backend._convolution, backend._convolution.cnhw
    cnhw.flat_conv = flat
    cnhw.flat_chunk_bytes = cnhw.flat_kept_chunk_bytes = 4 * 16 * 9 * 18 * 18 * 2  # two images
    convolution.BATCH_CHUNK = 2
    cnhw.flat_keep_unstrided_columns = True
    build = cnhw._column_chunks if flat else None
    if flat:
        def counted(*args):
            for chunk in build(*args):
                events.append("columns")
                yield chunk
        monkeypatch.setattr(cnhw, "_column_chunks", counted)
    else:
        im2col = numpy_conv._im2col
        monkeypatch.setattr(numpy_conv, "_im2col", lambda *a: events.append("columns") or im2col(*a))
    x = rng.standard_normal((5, 16, 16, 16)).astype(np.float32)
    wt = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert cnhw.mode(x.shape, wt.shape, args[0], args[1], args[3], 16, 16) == ("shift" if flat else None)
    for keep in (False, True):
        events.clear()
        y = backend.conv2d_forward(x, wt, None, *args, keep_for_backward=keep)
        assert events == ["columns", "product"] * 3
        assert len(convolution.kept_columns) == keep
    events.clear()
    backend.conv2d_backward(np.ones_like(y), x, wt, *args)
    assert "columns" not in events and not convolution.kept_columns


@pytest.mark.parametrize("stride, size, mode", [(1, 16, "shift"), (2, 32, "shift"), (2, 16, "gather")])
def test_training_forward_keeps_only_strided_columns(stride, size, mode, rng):
    """By default a stride-1 convolution's backward pass builds its columns again (in cache-sized
    chunks), while a strided one's reuses those its forward kept; the gradients are the same."""
    x = rng.standard_normal((3, 16, size, size)).astype(np.float32)
    wt = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    args = ((stride, stride), (1, 1, 1, 1), (1, 1), 1)
    backend = NumpyBackend()
    out = (size + 2 - 3) // stride + 1
    assert backend._convolution.cnhw.mode(x.shape, wt.shape, args[0], args[1], 1, out, out) == mode
    y = backend.conv2d_forward(x, wt, None, *args, keep_for_backward=True)
    assert len(backend._convolution.kept_columns) == (stride != 1)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = backend.conv2d_backward(dy, x, wt, *args)
    assert not backend._convolution.kept_columns
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, *args)
    np.testing.assert_allclose(dx, rdx, **SUM_TOL)
    np.testing.assert_allclose(dw, rdw, **SUM_TOL)
    np.testing.assert_allclose(db, rdb, **SUM_TOL)


def test_cnhw_paths_agree_with_im2col_path(rng):
    """A ResNet-sized stride-1 layer on both paths: the same sums in another order."""
    x = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
    wt = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    results = []
    for flat in (False, True):
        backend = NumpyBackend()
        backend._convolution.cnhw.flat_conv = flat
        results.append((backend.conv2d_forward(x, wt, None, *args, keep_for_backward=True),
                        *backend.conv2d_backward(dy, x, wt, *args)))
    for old, new in zip(*results):
        # 144 products per output, 2,048 per weight gradient: float32 rounding, at most ~1e-5 relative
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-4)


# N, C, H, W, K, (KH, KW), stride, padding, dilation, groups: the batch-innermost im2col path
BLOCKED_CASES = [
    (3, 4, 9, 9, 6, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 4, 11, 10, 6, (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 2),
    (2, 3, 10, 9, 4, (2, 3), (3, 2), (1, 1, 0, 1), (1, 2), 1),
]


@pytest.mark.parametrize("case", BLOCKED_CASES, ids=lambda c: f"s{c[6][0]}{c[6][1]}d{c[8][0]}{c[8][1]}g{c[9]}")
def test_input_gradient_in_blocks_is_bitwise_the_whole_product(case, rng):
    """Convolution._col2im_products forms the input gradient a kernel row and a block of output rows at a time when
    the products are large; each input pixel gets its terms in the same order, so dx is bitwise the same
    (the plain convolution and the fused conv + ReLU + max-pool op)."""
    n, c, h, w, k, ks, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, *ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    args = (stride, padding, dilation, groups)
    oh, ow = NumpyBackend().conv2d_forward(x, wt, None, *args).shape[2:]
    dy = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    pool = ((2, 2), (2, 2), (0, 0))
    dy_pooled = rng.standard_normal((n, k, oh // 2, ow // 2)).astype(np.float32)
    row_bytes = c * ks[1] * ow * n * 4  # one kernel row's products for one output row
    results = []
    for block_bytes in (1 << 30, 1, 3 * row_bytes - 1):  # whole; one output row a block; two rows a block
        backend = NumpyBackend()
        backend._convolution.cnhw.flat_conv = False
        backend._convolution.col2im_block_bytes = block_bytes
        backend.conv2d_forward(x, wt, None, *args, keep_for_backward=True)
        plain = backend.conv2d_backward(dy, x, wt, *args)
        _, state = backend.conv2d_relu_maxpool2d_forward(x, wt, b, *args, *pool, False, keep_for_backward=True)
        fused = backend.conv2d_relu_maxpool2d_backward(dy_pooled, state, x, wt, *args, *pool[:2], pool[2])
        results.append((*plain, *fused))
    for blocked in results[1:]:
        for whole, part in zip(results[0], blocked, strict=True):
            assert np.array_equal(whole, part)
    np.testing.assert_allclose(results[0][0], ref.conv2d_backward(dy, x, wt, *args)[0], **SUM_TOL)


def test_lenet5_does_not_take_the_new_paths():
    """LeNet-5 runs its convolutions as the fused conv + ReLU + max-pool op: five SGD steps give the
    same weights bit for bit whether or not the (C, N, H, W) paths are enabled."""
    weights = []
    for flat in (False, True):
        backend = NumpyBackend()
        backend._convolution.cnhw.flat_conv = flat
        gpucnn.register_backend("numpy-cpu-paths", lambda backend=backend: backend)
        with gpucnn.use_backend("numpy-cpu-paths"):
            gpucnn.manual_seed(0)
            rng = np.random.default_rng(0)
            model = gpucnn.LeNet5(rng=np.random.default_rng(0))
            x = rng.standard_normal((40, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, 40)
            opt = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            loss_fn = gpucnn.CrossEntropyLoss()
            for _ in range(5):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            weights.append([np.array(p.numpy()) for p in model.parameters()])
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


def _bn_reference(x, gamma, beta, dy, eps):
    """Float64 BatchNorm in training mode, forward and backward, from the definitions."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(np.float64)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    dxhat = dy * gamma.reshape(shape)
    dx = (dxhat - dxhat.mean(axis=axes, keepdims=True)
          - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) / np.sqrt(var.reshape(shape) + eps)
    return y, dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes), mean, var


@pytest.mark.parametrize("shape", [(16, 3), (8, 4, 5), (6, 5, 7, 3), (32, 16, 8, 8)])
@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centred", "mean-1000"])
def test_batchnorm_training_matches_float64(shape, offset, rng):
    x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
    channels = shape[1]
    gamma = rng.standard_normal(channels).astype(np.float32)
    beta = rng.standard_normal(channels).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = {2: gpucnn.BatchNorm1d, 3: gpucnn.BatchNorm1d, 4: gpucnn.BatchNorm2d}[len(shape)](channels, momentum=0.5)
    layer.weight.data[...] = gamma
    layer.bias.data[...] = beta
    xt = gpucnn.Tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(dy)
    ry, rdx, rdw, rdb, mean, var = _bn_reference(x, gamma, beta, dy.astype(np.float64), layer.eps)
    # with a mean of 1000, float32 x itself only holds ~1e-4 relative to its spread: the bound loosens
    tol = SUM_TOL if offset == 0 else dict(rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(_np(y), ry, **tol)
    np.testing.assert_allclose(_np(xt.grad), rdx, **tol)
    np.testing.assert_allclose(_np(layer.weight.grad), rdw, **tol)
    np.testing.assert_allclose(_np(layer.bias.grad), rdb, **tol)
    count = x.size // channels
    np.testing.assert_allclose(_np(layer.running_mean), 0.5 * mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(layer.running_var), 0.5 + 0.5 * var * count / (count - 1), rtol=1e-4)


def test_batchnorm_eval_is_one_multiply_add(rng):
    """Eval mode: y = x * (weight / std) + (bias - mean * weight / std), the same with or without a
    graph; its input and weight gradients use the running statistics."""
    layer = gpucnn.BatchNorm2d(4, momentum=0.5)
    x = rng.standard_normal((6, 4, 5, 5)).astype(np.float32)
    layer(gpucnn.Tensor(x))
    layer.weight.data[...] = rng.standard_normal(4).astype(np.float32)
    layer.eval()
    mean, var = _np(layer.running_mean).astype(np.float64), _np(layer.running_var).astype(np.float64)
    std = np.sqrt(var + layer.eps).reshape(1, 4, 1, 1)
    gamma = _np(layer.weight).astype(np.float64).reshape(1, 4, 1, 1)
    expected = (x - mean.reshape(1, 4, 1, 1)) / std * gamma + _np(layer.bias).reshape(1, 4, 1, 1)
    with gpucnn.no_grad():
        y0 = _np(layer(gpucnn.Tensor(x)))
    xt = gpucnn.Tensor(x, requires_grad=True)
    y1 = layer(xt)
    assert np.array_equal(y0, _np(y1))
    np.testing.assert_allclose(y0, expected, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y1.backward(dy)
    np.testing.assert_allclose(_np(xt.grad), dy * gamma / std, rtol=1e-5, atol=1e-6)
    xhat = (x - mean.reshape(1, 4, 1, 1)) / std
    np.testing.assert_allclose(_np(layer.weight.grad), (dy * xhat).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_max_of_four_matches_the_running_scan(rng):
    """The 2x2 tournament in the fused conv -> ReLU -> max-pool forward gives the running scan's
    maxima and offsets exactly: the first offset on ties (whole windows of equal values, pairs
    tied across the two rows), zeros, negative windows; NaN maxima stay NaN. With the ReLU marker,
    the windows whose maximum is not > 0 (NaN included) read 255."""
    from gpucnn.backends.numpy.windows import (
        mark_dead_windows,
        max_of_four_with_offset,
        running_max,
        tiled_windows,
    )

    conv = rng.integers(-2, 3, (3, 8, 10, 7)).astype(np.float32)  # few values: many ties
    conv[0, :2, :2] = 1.0  # a whole window tied
    conv[1, 4:6, 0:2] = [[[0.5] * 7, [-1.0] * 7], [[0.5] * 7, [0.25] * 7]]  # a tie across rows
    conv[2, 0, 0, 0] = np.nan
    windows = tiled_windows(conv, (2, 2), (4, 5))
    best, offset = running_max([w.copy() for w in windows])
    got_best, got_offset = max_of_four_with_offset(windows)
    finite = ~np.isnan(got_best)
    np.testing.assert_array_equal(got_best[finite], best[finite])
    assert np.isnan(got_best).sum() == 1 and np.isnan(got_best[2, 0, 0, 0])
    np.testing.assert_array_equal(got_offset[finite], offset[finite])
    assert got_offset[0, 0, 0, 0] == 0 and got_offset[1, 2, 0, 0] == 0
    marked = mark_dead_windows(got_offset.copy(), got_best)
    dead = ~(got_best > 0)
    assert (marked[dead] == 255).all() and np.array_equal(marked[~dead], got_offset[~dead])
