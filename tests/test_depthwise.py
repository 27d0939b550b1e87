"""The NumPy backend's depthwise path (backends/numpy/depthwise.py) against its im2col path
(``Convolution.depthwise_conv = False``) and PyTorch: forward with bias and the fused ReLU, backward
(dx, dw, db; need_input_grad False), conv2d_input_grad / conv2d_weight_grad and the fused conv + ReLU +
max-pool, over stride 2, dilation 2, padding 'same', channel multiplier 2, rectangular kernels, in
float32 (rtol 1e-5) and float64 (rtol 1e-12).

Timing (not asserted; `python tests/test_depthwise.py`): a MobileNet-like 3x3 depthwise layer, batch
32, 64 channels, 56x56, padding 1, float32, old (im2col) vs new path in one process, interleaved,
median of 5, on the 2-core dev machine (noisy: a second run gave 23 vs 20 ms forward):
    forward   im2col   28.1 ms   depthwise   23.6 ms
    backward  im2col  190.7 ms   depthwise   99.4 ms
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpucnn.backends.numpy.conv import Convolution
from gpucnn.backends.numpy.pooling import Pooling
from gpucnn.backends.numpy.scratch import ScratchPool
from gpucnn.backends.numpy.threads import RowHalves
from gpucnn.shapes import conv_output_hw


def _conv(depthwise: bool) -> Convolution:
    conv = Convolution(ScratchPool(), Pooling(RowHalves(whole_only=True)))
    conv.depthwise_conv = depthwise
    return conv


def _same(kh, kw, dilation):
    # PyTorch's 'same': the extra pixel of an even reach goes at the bottom / right
    th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    return th // 2, th - th // 2, tw // 2, tw - tw // 2


#           (N, C, H, W),  m, (KH, KW), stride, padding (pt, pb, pl, pr) | "same", dilation
GEOMETRIES = [
    ((2, 3, 7, 6), 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 4, 9, 8), 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((3, 3, 9, 10), 1, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ((2, 4, 8, 7), 1, (3, 3), (1, 1), "same", (1, 1)),
    ((2, 4, 8, 7), 1, (2, 4), (1, 1), "same", (2, 1)),
    ((2, 3, 6, 5), 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3, 9, 8), 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2)),
    ((1, 2, 7, 9), 3, (1, 5), (1, 2), (0, 0, 2, 2), (1, 1)),
    ((2, 5, 6, 6), 1, (5, 3), (2, 2), (0, 0, 0, 0), (1, 1)),
]
IDS = [f"g{i}" for i in range(len(GEOMETRIES))]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _case(geometry, dtype, seed=0):
    x_shape, m, (kh, kw), stride, padding, dilation = geometry
    if padding == "same":
        padding = _same(kh, kw, dilation)
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c * m, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(c * m).astype(dtype)
    oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
    dy = rng.standard_normal((x_shape[0], c * m, oh, ow)).astype(dtype)
    return x, w, b, dy, stride, padding, dilation, c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_depthwise_matches_im2col(geometry, dtype):
    x, w, b, dy, stride, padding, dilation, groups = _case(geometry, dtype)
    new, old = _conv(True), _conv(False)
    tol = TOL[dtype]
    for relu in (False, True):
        for bias in (b, None):
            y_new = new.conv2d_forward(x, w, bias, stride, padding, dilation, groups, relu=relu)
            y_old = old.conv2d_forward(x, w, bias, stride, padding, dilation, groups, relu=relu)
            assert y_new.dtype == dtype and y_new.shape == y_old.shape
            np.testing.assert_allclose(y_new, y_old, **tol)
    for need in (True, False):
        got = new.conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad=need)
        want = old.conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad=need)
        assert (got[0] is None) == (not need)
        for g, e in zip(got, want):
            if e is not None:
                assert g.dtype == dtype and g.shape == e.shape
                np.testing.assert_allclose(g, e, **tol)
    dx = new.conv2d_input_grad(dy, w, x.shape, stride, padding, dilation, groups)
    np.testing.assert_allclose(dx, old.conv2d_input_grad(dy, w, x.shape, stride, padding, dilation, groups), **tol)
    dw, db = new.conv2d_weight_grad(dy, x, w.shape, stride, padding, dilation, groups)
    dw_old, db_old = old.conv2d_weight_grad(dy, x, w.shape, stride, padding, dilation, groups)
    np.testing.assert_allclose(dw, dw_old, **tol)
    np.testing.assert_allclose(db, db_old, **tol)
    # deterministic: the same call twice gives the same bits
    first = new.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    again = new.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    for g, e in zip(again, first):
        assert np.array_equal(g, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_depthwise_matches_torch(geometry, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, dy, stride, padding, dilation, groups = _case(geometry, dtype, seed=1)
    conv = _conv(True)
    y = conv.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dx, dw, db = conv.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    pt, pb, pl, pr = padding
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=stride, dilation=dilation, groups=groups)
    yt.backward(torch.tensor(dy))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)  # torch's own float32 order
    for got, want in ((y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_fused_relu_maxpool(dtype):
    x, w, b, _, stride, padding, dilation, groups = _case(((2, 3, 8, 8), 2, (3, 3), (1, 1), (1, 1, 1, 1),
                                                            (1, 1)), dtype)
    new, old = _conv(True), _conv(False)
    args = (stride, padding, dilation, groups, (2, 2), (2, 2), (0, 0), False)
    y_new, s_new = new.conv2d_relu_maxpool2d_forward(x, w, b, *args, keep_for_backward=True)
    y_old, s_old = old.conv2d_relu_maxpool2d_forward(x, w, b, *args, keep_for_backward=True)
    np.testing.assert_allclose(y_new, y_old, **TOL[dtype])
    dy = np.random.default_rng(2).standard_normal(y_new.shape).astype(dtype)
    for need in (True, False):
        if not need:  # the states are used up: run the forwards again
            _, s_new = new.conv2d_relu_maxpool2d_forward(x, w, b, *args, keep_for_backward=True)
            _, s_old = old.conv2d_relu_maxpool2d_forward(x, w, b, *args, keep_for_backward=True)
        got = new.conv2d_relu_maxpool2d_backward(dy, s_new, x, w, *args[:-1], need_input_grad=need)
        want = old.conv2d_relu_maxpool2d_backward(dy, s_old, x, w, *args[:-1], need_input_grad=need)
        for g, e in zip(got, want):
            assert (g is None) == (e is None)
            if e is not None:
                np.testing.assert_allclose(g, e, **TOL[dtype])


def test_empty_batch():
    x = np.zeros((0, 4, 6, 6), np.float32)
    w = np.ones((8, 1, 3, 3), np.float32)
    conv = _conv(True)
    assert conv.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 4).shape == (0, 8, 6, 6)
    dx, dw, db = conv.conv2d_backward(np.zeros((0, 8, 6, 6), np.float32), x, w, (1, 1), (1, 1, 1, 1), (1, 1), 4)
    assert dx.shape == x.shape and not dw.any() and not db.any() and dw.shape == w.shape


def _timing(repeats=5):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    dy = rng.standard_normal((32, 64, 56, 56)).astype(np.float32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 64)
    paths = {"im2col": _conv(False), "depthwise": _conv(True)}
    times = {(p, op): [] for p in paths for op in ("forward", "backward")}
    for _ in range(repeats):
        for name, conv in paths.items():
            t = time.perf_counter()
            conv.conv2d_forward(x, w, b, *geo)
            times[name, "forward"].append(time.perf_counter() - t)
            t = time.perf_counter()
            conv.conv2d_backward(dy, x, w, *geo)
            times[name, "backward"].append(time.perf_counter() - t)
    for op in ("forward", "backward"):
        print(f"{op:9s} " + "   ".join(f"{p} {np.median(times[p, op]) * 1e3:7.1f} ms" for p in paths))


if __name__ == "__main__":
    _timing()
