"""Central finite differences in float64 for every layer and the loss."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn.models import LENET5_C3_TABLE

EPS = 1e-6


def _check_layer(layer, x, backend, rng, reset=None, samples=25, rtol=1e-5, atol=1e-7):
    """Compare backward() with (L(x+eps) - L(x-eps)) / 2eps for L = sum(forward(x) * r)."""
    get, put = backend.to_numpy, backend.asarray

    def loss(x_host):
        if reset:
            reset()
        return float((get(layer.forward(put(x_host))) * r).sum())

    if reset:
        reset()
    y = get(layer.forward(put(x)))
    r = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = get(layer.backward(put(r)))

    for flat in rng.choice(x.size, min(samples, x.size), replace=False):
        i = np.unravel_index(flat, x.shape)
        plus, minus = x.copy(), x.copy()
        plus[i] += EPS
        minus[i] -= EPS
        numeric = (loss(plus) - loss(minus)) / (2 * EPS)
        assert dx[i] == pytest.approx(numeric, rel=rtol, abs=atol), f"input {i}"

    for name, p in layer.named_parameters():
        analytic = get(p.grad)
        host = get(p.data).copy()
        for flat in rng.choice(host.size, min(samples, host.size), replace=False):
            i = np.unravel_index(flat, host.shape)
            values = []
            for delta in (EPS, -EPS):
                moved = host.copy()
                moved[i] += delta
                p.data = put(moved)
                values.append(loss(x))
            p.data = put(host)
            numeric = (values[0] - values[1]) / (2 * EPS)
            assert analytic[i] == pytest.approx(numeric, rel=rtol, abs=atol), f"{name}{i}"


def _make(backend, factory):
    with gpucnn.use_backend(backend.name):
        return factory()


LAYERS = {
    "conv_basic": (lambda: gpucnn.Conv2d(3, 4, 3, padding=1, dtype=np.float64), (2, 3, 6, 5)),
    "conv_stride_dilation": (lambda: gpucnn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=2, dilation=(2, 1),
                                                   dtype=np.float64), (2, 2, 9, 7)),
    "conv_groups": (lambda: gpucnn.Conv2d(4, 6, 3, groups=2, padding="same", dtype=np.float64), (1, 4, 5, 5)),
    "conv_full": (lambda: gpucnn.Conv2d(1, 2, 2, padding="full", dtype=np.float64), (2, 1, 4, 3)),
    "conv_connection": (lambda: gpucnn.Conv2d(6, 16, 3, connection=LENET5_C3_TABLE, dtype=np.float64),
                        (1, 6, 5, 5)),
    "conv1d": (lambda: gpucnn.Conv1d(2, 3, 3, stride=2, padding=1, dtype=np.float64), (2, 2, 11)),
    "maxpool_overlap": (lambda: gpucnn.MaxPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6)),
    "avgpool_incl": (lambda: gpucnn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6)),
    "avgpool_excl": (lambda: gpucnn.AvgPool2d(3, 2, padding=1, count_include_pad=False), (2, 2, 7, 6)),
    "lppool": (lambda: gpucnn.LPPool2d(2, 2), (2, 2, 6, 6)),
    "global_avg": (lambda: gpucnn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    "subsampling": (lambda: gpucnn.Subsampling2d(3, 2, dtype=np.float64), (2, 3, 6, 4)),
    "relu": (lambda: gpucnn.ReLU(), (3, 7)),
    "leaky_relu": (lambda: gpucnn.LeakyReLU(0.2), (3, 7)),
    "sigmoid": (lambda: gpucnn.Sigmoid(), (3, 7)),
    "tanh": (lambda: gpucnn.Tanh(), (3, 7)),
    "tanh_lecun": (lambda: gpucnn.Tanh.lecun(), (3, 7)),
    "linear": (lambda: gpucnn.Linear(7, 5, dtype=np.float64), (4, 7)),
    "flatten": (lambda: gpucnn.Flatten(), (2, 3, 2, 2)),
    "batchnorm": (lambda: gpucnn.BatchNorm2d(3, dtype=np.float64), (4, 3, 3, 3)),
    "sequential": (lambda: gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, dtype=np.float64), gpucnn.Tanh(),
                                             gpucnn.AvgPool2d(2), gpucnn.Flatten(),
                                             gpucnn.Linear(8, 3, dtype=np.float64)), (2, 1, 6, 6)),
    "sequential_conv_relu_maxpool": (lambda: gpucnn.Sequential(
        gpucnn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), gpucnn.ReLU(), gpucnn.MaxPool2d(2), gpucnn.Flatten(),
        gpucnn.Linear(27, 3, dtype=np.float64)), (2, 2, 7, 6)),
    "concat_inception": (lambda: gpucnn.Concat(
        gpucnn.Conv2d(3, 2, 1, dtype=np.float64),
        gpucnn.Sequential(gpucnn.Conv2d(3, 2, 1, dtype=np.float64), gpucnn.ReLU(),
                          gpucnn.Conv2d(2, 2, 3, padding=1, dtype=np.float64)),
        gpucnn.Sequential(gpucnn.MaxPool2d(3, 1, padding=1), gpucnn.Conv2d(3, 1, 1, dtype=np.float64))),
        (2, 3, 5, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradient(backend, name):
    rng = np.random.default_rng(7)
    factory, shape = LAYERS[name]
    layer = _make(backend, factory)
    if name.startswith("maxpool") or name == "concat_inception":
        x = rng.permutation(np.prod(shape)).reshape(shape) / 7.0  # distinct values: no ties
    elif name == "lppool":
        x = rng.uniform(0.5, 2.0, shape)
    else:
        x = rng.standard_normal(shape)
    if name in ("relu", "leaky_relu"):
        x[np.abs(x) < 1e-3] = 0.5  # keep clear of the kink
    _check_layer(layer, x, backend, rng)


def test_dropout_gradient(backend):
    rng = np.random.default_rng(3)
    layer = _make(backend, lambda: gpucnn.Dropout(0.4, rng=np.random.default_rng(11)))

    def reset():
        layer.rng = np.random.default_rng(11)  # the same mask for every evaluation

    _check_layer(layer, rng.standard_normal((4, 9)), backend, rng, reset=reset)


def test_softmax_cross_entropy_gradient(backend):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    loss = gpucnn.SoftmaxCrossEntropy(backend=backend.name)
    loss(backend.asarray(logits), labels)
    grad = backend.to_numpy(loss.backward())
    for i in np.ndindex(logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[i] += EPS
        minus[i] -= EPS
        numeric = (loss(backend.asarray(plus), labels) - loss(backend.asarray(minus), labels)) / (2 * EPS)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_batchnorm_eval_uses_running_statistics(backend):
    rng = np.random.default_rng(1)
    bn = _make(backend, lambda: gpucnn.BatchNorm2d(2, momentum=0.5, dtype=np.float64))
    x = rng.standard_normal((8, 2, 3, 3)) * 3 + 1
    bn(backend.asarray(x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean), 0.5 * mean)
    np.testing.assert_allclose(backend.to_numpy(bn.running_var), 0.5 + 0.5 * var)
    bn.eval()
    y = backend.to_numpy(bn(backend.asarray(x)))
    expected = (x - 0.5 * mean.reshape(1, 2, 1, 1)) / np.sqrt(0.5 + 0.5 * var.reshape(1, 2, 1, 1) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    _check_layer(bn, x, backend, rng)


def test_fused_conv_relu_matches_separate_layers(backend):
    """Sequential runs Conv2d + ReLU as one op; results must equal running them one by one."""
    rng = np.random.default_rng(9)
    model = _make(backend, lambda: gpucnn.Sequential(gpucnn.Conv2d(2, 3, 3, padding=1, dtype=np.float64),
                                                     gpucnn.ReLU()))
    x = backend.asarray(rng.standard_normal((2, 2, 5, 5)))
    conv, relu = model[0], model[1]
    separate = backend.to_numpy(relu.forward(conv.forward(x)))
    dy = backend.asarray(rng.standard_normal(separate.shape))
    model.zero_grad()
    dx_separate = backend.to_numpy(conv.backward(relu.backward(dy)))
    dw_separate = backend.to_numpy(conv.weight.grad)
    fused = backend.to_numpy(model.forward(x))
    model.zero_grad()
    dx_fused = backend.to_numpy(model.backward(dy))
    np.testing.assert_array_equal(fused, separate)
    assert (fused == 0).any() and (fused > 0).any()
    np.testing.assert_array_equal(dx_fused, dx_separate)
    np.testing.assert_array_equal(backend.to_numpy(conv.weight.grad), dw_separate)


@pytest.mark.parametrize("pool", [(2, 2), (3, 2)], ids=["tiled", "overlapping"])
def test_fused_conv_relu_maxpool_matches_separate_layers(backend, pool):
    """Sequential runs Conv2d -> ReLU -> MaxPool2d as one op (the CPU pools in cache, ReLU after the
    max); output and every gradient must equal the three layers run one by one, bit for bit,
    including windows whose maximum is negative and an image holding a NaN."""
    rng = np.random.default_rng(21)
    kernel, stride = pool
    model = _make(backend, lambda: gpucnn.Sequential(gpucnn.Conv2d(2, 3, 3, padding=1, dtype=np.float64),
                                                     gpucnn.ReLU(), gpucnn.MaxPool2d(kernel, stride)))
    x_host = rng.standard_normal((3, 2, 7, 9))
    x_host[2, 1, 3, 4] = np.nan
    x = backend.asarray(x_host)
    conv, relu, pool_layer = model
    conv.bias.data[:] = -1.5  # windows whose maximum is <= 0: the ReLU passes them no gradient
    separate = backend.to_numpy(pool_layer.forward(relu.forward(conv.forward(x))))
    dy = backend.asarray(rng.standard_normal(separate.shape))
    model.zero_grad()
    dx_separate = backend.to_numpy(conv.backward(relu.backward(pool_layer.backward(dy))))
    grads_separate = [backend.to_numpy(p.grad) for p in model.params()]

    fused = backend.to_numpy(model.forward(x))
    model.zero_grad()
    dx_fused = backend.to_numpy(model.backward(dy))
    np.testing.assert_array_equal(fused, separate)
    assert (fused[:2] == 0).any() and (fused[:2] > 0).any()
    assert np.isnan(fused[2]).any() and not np.isnan(fused[:2]).any()
    np.testing.assert_array_equal(dx_fused, dx_separate)
    for p, expected in zip(model.params(), grads_separate):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), expected)

    model.eval()
    np.testing.assert_array_equal(backend.to_numpy(model.forward(x)), separate)
    with pytest.raises(RuntimeError, match="Conv2d: backward called before a training-mode forward"):
        model.backward(dy)


def test_backward_params_skips_only_the_input_gradient(backend):
    """backward_params (used for training: images need no gradient) gives the same parameter
    gradients as backward, for a model whose first layer is a conv inside nested containers."""
    rng = np.random.default_rng(4)
    model = _make(backend, lambda: gpucnn.Sequential(
        gpucnn.Concat(gpucnn.Conv2d(1, 2, 3, padding=1, dtype=np.float64),
                      gpucnn.Sequential(gpucnn.Conv2d(1, 1, 1, dtype=np.float64), gpucnn.Tanh())),
        gpucnn.ReLU(), gpucnn.Flatten(), gpucnn.Linear(48, 3, dtype=np.float64)))
    x = backend.asarray(rng.standard_normal((2, 1, 4, 4)))
    dy = backend.asarray(rng.standard_normal((2, 3)))
    model(x)
    model.zero_grad()
    assert model.backward(dy).shape == (2, 1, 4, 4)
    full = [backend.to_numpy(p.grad) for p in model.params()]
    model(x)
    model.zero_grad()
    assert model.backward_params(dy) is None
    for a, p in zip(full, model.params()):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), a)


def test_eval_forward_in_batch_chunks_matches_whole_batch(backend, monkeypatch):
    """In eval mode a Sequential may run over slices of the batch (backend.eval_batch_chunk)."""
    rng = np.random.default_rng(2)
    model = _make(backend, lambda: gpucnn.Sequential(
        gpucnn.Conv2d(1, 2, 3, dtype=np.float64), gpucnn.BatchNorm2d(2, dtype=np.float64), gpucnn.ReLU(),
        gpucnn.MaxPool2d(2), gpucnn.Dropout(0.5), gpucnn.Flatten(), gpucnn.Linear(8, 3, dtype=np.float64)))
    x = backend.asarray(rng.standard_normal((7, 1, 6, 6)))
    model(x)  # a training step's forward moves the running statistics
    model.eval()
    monkeypatch.setattr(type(backend), "eval_batch_chunk", None)
    whole = backend.to_numpy(model(x))
    monkeypatch.setattr(type(backend), "eval_batch_chunk", 3)
    chunked = backend.to_numpy(model(x))
    # not bitwise: BLAS blocks a product differently for other matrix sizes
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-14)
    assert chunked.shape == (7, 3)


def test_fused_relu_maxpool_backward_matches_separate_layers(backend):
    """Sequential runs ReLU -> MaxPool2d backward as one step; it must equal the two layers run
    one by one, bit for bit, with overlapping windows and negative maxima (dead windows)."""
    rng = np.random.default_rng(13)
    model = _make(backend, lambda: gpucnn.Sequential(gpucnn.ReLU(), gpucnn.MaxPool2d(3, 2, padding=1)))
    x = backend.asarray(rng.standard_normal((2, 3, 7, 7)))
    relu, pool = model[0], model[1]
    y = pool.forward(relu.forward(x))
    dy = backend.asarray(rng.standard_normal(y.shape))
    separate = backend.to_numpy(relu.backward(pool.backward(dy)))
    model.forward(x)
    fused = backend.to_numpy(model.backward(dy))
    np.testing.assert_array_equal(fused, separate)
    assert (backend.to_numpy(y) == 0).any() and (separate != 0).any()
