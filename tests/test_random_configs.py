"""Seeded random configurations of convolution and pooling, on every backend, against the loop
references: shapes, strides, paddings, dilations and groups no one picked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn.shapes import conv_output_size, pool_output_size

import reference as ref
from test_ops import check_maxpool2d

SUM_TOL = dict(rtol=1e-4, atol=1e-4)


def _conv_configs(count: int, seed: int = 2026) -> list[tuple]:
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        c, k = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        padding = tuple(int(p) for p in rng.integers(0, 4, 4))
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        oh = conv_output_size(h, kh, sh, padding[0], padding[1], dh)
        ow = conv_output_size(w, kw, sw, padding[2], padding[3], dw)
        if oh >= 1 and ow >= 1:
            configs.append((int(rng.integers(1, 4)), c, h, w, k, (kh, kw), (sh, sw), padding, (dh, dw), groups))
    return configs


def _pool_configs(count: int, seed: int = 1202) -> list[tuple]:
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        kernel, stride = (kh, kw), (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
        ceil_mode = bool(rng.integers(0, 2))
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        if min(pool_output_size(h, kh, stride[0], padding[0], ceil_mode),
               pool_output_size(w, kw, stride[1], padding[1], ceil_mode)) >= 1:
            configs.append((int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w, kernel, stride, padding,
                            ceil_mode))
    return configs


@pytest.mark.parametrize("config", _conv_configs(16), ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_random_conv2d(backend, config):
    n, c, h, w, k, kernel, stride, padding, dilation, groups = config
    rng = np.random.default_rng(abs(hash(config)) % (1 << 32))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    args = (stride, padding, dilation, groups)
    y = backend.conv2d_forward(backend.asarray(x), backend.asarray(wt), backend.asarray(b), *args)
    expected = ref.conv2d(x, wt, b, *args)
    np.testing.assert_allclose(backend.to_numpy(y), expected, **SUM_TOL)
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    dx, dw, db = backend.conv2d_backward(backend.asarray(dy), backend.asarray(x), backend.asarray(wt), *args)
    rdx, rdw, rdb = ref.conv2d_backward(dy, x, wt, *args)
    for got, want in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(backend.to_numpy(got), want, **SUM_TOL)


@pytest.mark.parametrize("config", _pool_configs(16), ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_random_pooling(backend, config):
    n, c, h, w, kernel, stride, padding, ceil_mode = config
    rng = np.random.default_rng(abs(hash(config)) % (1 << 32))
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w).astype(np.float32) - n * c * h * w / 2
    dy = check_maxpool2d(backend, x, backend.asarray(x), kernel, stride, padding, ceil_mode, rng, SUM_TOL)
    for include in (True, False):
        ya = backend.avgpool2d_forward(backend.asarray(x), kernel, stride, padding, ceil_mode, include)
        np.testing.assert_allclose(backend.to_numpy(ya), ref.avgpool2d(x, kernel, stride, padding, ceil_mode, include),
                                   rtol=1e-5, atol=1e-3)
        dxa = backend.avgpool2d_backward(backend.asarray(dy), x.shape, kernel, stride, padding, ceil_mode, include)
        np.testing.assert_allclose(backend.to_numpy(dxa),
                                   ref.avgpool2d_backward(dy, x.shape, kernel, stride, padding, include), **SUM_TOL)
