"""The worked examples of the seed texts, as numbers."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn.shapes import conv_output_size

import reference as ref


def test_5x5_image_3x3_filter_stride_1_and_2(backend):
    image = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    kernel = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float32).reshape(1, 1, 3, 3)
    y1 = backend.to_numpy(backend.conv2d_forward(backend.asarray(image), backend.asarray(kernel), None,
                                                 (1, 1), (0, 0, 0, 0), (1, 1), 1))
    assert y1.shape == (1, 1, 3, 3)
    # top-left: 0 + 2 + 6 + 10 + 12 = 30, and each step right adds 5, each step down 25
    np.testing.assert_array_equal(y1[0, 0], [[30, 35, 40], [55, 60, 65], [80, 85, 90]])
    y2 = backend.to_numpy(backend.conv2d_forward(backend.asarray(image), backend.asarray(kernel), None,
                                                 (2, 2), (0, 0, 0, 0), (1, 1), 1))
    assert y2.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y2[0, 0], [[30, 40], [80, 90]])


def test_5x5x3_volume_padded_to_7x7x3_two_filters_stride_2(backend, rng):
    with gpucnn.use_backend(backend.name):
        conv = gpucnn.Conv2d(3, 2, 3, stride=2, padding=1)
    assert conv.num_parameters() == (3 * 3 * 3 + 1) * 2 == 56
    x = rng.integers(0, 3, (1, 3, 5, 5)).astype(np.float32)
    w = rng.integers(-1, 2, (2, 3, 3, 3)).astype(np.float32)
    conv.weight.data = backend.asarray(w)
    conv.bias.data = backend.asarray(np.array([1.0, 0.0], np.float32))
    y = backend.to_numpy(conv(backend.asarray(x)))
    assert y.shape == (1, 2, 3, 3)  # the seed's 3x3x2 output volume
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert padded.shape == (1, 3, 7, 7)
    # one output by hand: filter 0 at output (1, 2) sees padded rows 2..4, columns 4..6
    assert y[0, 0, 1, 2] == (padded[0, :, 2:5, 4:7] * w[0]).sum() + 1.0
    np.testing.assert_array_equal(y, ref.conv2d(x, w, [1.0, 0.0], (2, 2), (1, 1, 1, 1), (1, 1), 1))


@pytest.mark.parametrize("i,k,s,p", [(5, 3, 1, 0), (5, 3, 2, 0), (5, 3, 2, 1), (32, 5, 1, 0), (28, 5, 1, 2),
                                     (7, 7, 1, 0), (10, 3, 3, 2), (227, 11, 4, 0)])
def test_output_size_formula(i, k, s, p):
    assert conv_output_size(i, k, s, p, p) == (i + 2 * p - k) // s + 1
    conv = gpucnn.Conv2d(1, 1, k, stride=s, padding=p)
    assert conv.output_shape((1, 1, i, i))[2:] == ((i + 2 * p - k) // s + 1,) * 2


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_same_and_full_padding(backend, k, rng):
    x = rng.standard_normal((1, 2, 9, 8)).astype(np.float32)
    with gpucnn.use_backend(backend.name):
        same = gpucnn.Conv2d(2, 3, k, padding="same")
        full = gpucnn.Conv2d(2, 3, k, padding="full")
        valid = gpucnn.Conv2d(2, 3, k, padding="valid")
    assert same(backend.asarray(x)).shape == (1, 3, 9, 8)
    assert full(backend.asarray(x)).shape == (1, 3, 9 + k - 1, 8 + k - 1)
    assert valid(backend.asarray(x)).shape == (1, 3, 9 - k + 1, 8 - k + 1)


def test_lenet5_parameter_counts():
    c1, s2, c3, s4, c5, f6, out = (layer for layer in gpucnn.LeNet5Classic()
                                    if layer.num_parameters())
    assert (c1.num_parameters(), c3.num_parameters(), c5.num_parameters(), f6.num_parameters()) == (
        156, 1516, 48120, 10164)
    assert (s2.num_parameters(), s4.num_parameters(), out.num_parameters()) == (12, 32, 850)
    assert int(gpucnn.models.LENET5_C3_TABLE.sum()) == 60
    shapes = []
    x = np.zeros((1, 1, 32, 32), np.float32)
    for layer in gpucnn.LeNet5Classic():
        x = layer(x)
        shapes.append(x.shape[1:])
    assert shapes[0] == (6, 28, 28) and shapes[2] == (6, 14, 14) and shapes[4] == (16, 10, 10)
    assert shapes[6] == (16, 5, 5) and shapes[8] == (120, 1, 1)
    assert gpucnn.LeNet5().num_parameters() == 61706


def test_maxpool_backward_routes_to_argmax_only(backend):
    x = np.array([[[[1, 5, 2, 0], [3, 4, 9, 1], [0, 0, 1, 2], [7, 1, 3, 8]]]], dtype=np.float32)
    with gpucnn.use_backend(backend.name):
        pool = gpucnn.MaxPool2d(2)
    xt = gpucnn.tensor(x, requires_grad=True, backend=backend.name)
    y = pool(xt)
    np.testing.assert_array_equal(y.numpy()[0, 0], [[5, 9], [7, 8]])
    y.backward(backend.asarray(np.array([[[[1, 2], [3, 4]]]], np.float32)))
    dx = xt.grad.numpy()
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[3, 0], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_avgpool_backward_spreads_evenly(backend):
    with gpucnn.use_backend(backend.name):
        pool = gpucnn.AvgPool2d(2)
    xt = gpucnn.tensor(np.ones((1, 1, 4, 4), np.float32), requires_grad=True, backend=backend.name)
    pool(xt).backward(backend.asarray(np.array([[[[4, 8], [12, 16]]]], np.float32)))
    dx = xt.grad.numpy()
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_connection_table_matches_masked_dense_conv(backend, rng):
    table = gpucnn.models.LENET5_C3_TABLE
    with gpucnn.use_backend(backend.name):
        c3 = gpucnn.Conv2d(6, 16, 5, connection=table, rng=rng)
    x = rng.standard_normal((2, 6, 14, 14)).astype(np.float32)
    y = c3(backend.asarray(x)).numpy()
    dense = np.zeros((16, 6, 5, 5), np.float32)
    packed = backend.to_numpy(c3.weight.data)
    outs, ins = np.nonzero(table.T)
    for n, (k, c) in enumerate(zip(outs, ins)):
        dense[k, c] = packed[n]
    bias = backend.to_numpy(c3.bias.data)
    np.testing.assert_allclose(y, ref.conv2d(x, dense, bias, (1, 1), (0, 0, 0, 0), (1, 1), 1),
                               rtol=1e-4, atol=1e-5)
    # output map 0 reads only S2 maps 0, 1, 2: changing map 5 leaves it alone
    x2 = x.copy()
    x2[:, 5] += 1
    out2 = c3(backend.asarray(x2))
    y2 = out2.numpy()
    np.testing.assert_array_equal(y2[:, 0], y[:, 0])
    assert not np.allclose(y2[:, 15], y[:, 15])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    out2.backward(backend.asarray(dy))
    _, rdw, rdb = ref.conv2d_backward(dy, x2, dense, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    # the packed weight's gradient is the dense one at the connected filters only
    assert c3.weight.grad.shape == (60, 5, 5)
    np.testing.assert_allclose(c3.weight.grad.numpy(), rdw[outs, ins], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c3.bias.grad.numpy(), rdb, rtol=1e-4, atol=1e-4)
