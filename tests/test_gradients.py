"""Every layer's gradients (inputs and parameters) against float64 central finite differences, on
every backend. The fused Sequential paths are checked bit for bit in tests/test_autograd.py."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients

import gpucnn
from gpucnn.models import LENET5_C3_TABLE

F64 = np.float64


def make_input(rng: np.random.Generator, shape: tuple[int, ...], kind: str = "normal") -> np.ndarray:
    """'distinct': no two values within 1/7 (max pooling has no ties); 'positive': in [0.5, 2];
    'kinked': normal but clear of 0 (ReLU's kink); 'normal': standard normal."""
    if kind == "distinct":
        return rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape)
    x = rng.standard_normal(shape)
    if kind == "kinked":
        x[np.abs(x) < 1e-3] = 0.5
    return x


LAYERS = {
    "conv_basic": (lambda: gpucnn.Conv2d(3, 4, 3, padding=1, dtype=F64), (2, 3, 6, 5), "normal"),
    "conv_stride_dilation": (lambda: gpucnn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=2, dilation=(2, 1),
                                                   dtype=F64), (2, 2, 9, 7), "normal"),
    "conv_groups": (lambda: gpucnn.Conv2d(4, 6, 3, groups=2, padding="same", dtype=F64), (1, 4, 5, 5), "normal"),
    "conv_full": (lambda: gpucnn.Conv2d(1, 2, 2, padding="full", dtype=F64), (2, 1, 4, 3), "normal"),
    "conv_no_bias": (lambda: gpucnn.Conv2d(2, 2, 3, bias=False, dtype=F64), (2, 2, 4, 4), "normal"),
    "conv_connection": (lambda: gpucnn.Conv2d(6, 16, 3, connection=LENET5_C3_TABLE, dtype=F64), (1, 6, 5, 5),
                        "normal"),
    "conv1d": (lambda: gpucnn.Conv1d(2, 3, 3, stride=2, padding=1, dtype=F64), (2, 2, 11), "normal"),
    "maxpool_overlap": (lambda: gpucnn.MaxPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6), "distinct"),
    "avgpool_incl": (lambda: gpucnn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6), "normal"),
    "avgpool_excl": (lambda: gpucnn.AvgPool2d(3, 2, padding=1, count_include_pad=False), (2, 2, 7, 6), "normal"),
    "lppool": (lambda: gpucnn.LPPool2d(2, 2), (2, 2, 6, 6), "positive"),
    "global_avg": (lambda: gpucnn.GlobalAvgPool2d(), (2, 3, 4, 5), "normal"),
    "adaptive_avg": (lambda: gpucnn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7), "normal"),
    "subsampling": (lambda: gpucnn.Subsampling2d(3, 2, dtype=F64), (2, 3, 6, 4), "normal"),
    "relu": (lambda: gpucnn.ReLU(), (3, 7), "kinked"),
    "leaky_relu": (lambda: gpucnn.LeakyReLU(0.2), (3, 7), "kinked"),
    "sigmoid": (lambda: gpucnn.Sigmoid(), (3, 7), "normal"),
    "tanh": (lambda: gpucnn.Tanh(), (3, 7), "normal"),
    "tanh_lecun": (lambda: gpucnn.Tanh.lecun(), (3, 7), "normal"),
    "softmax": (lambda: gpucnn.Softmax(dim=1), (3, 5), "normal"),
    "log_softmax": (lambda: gpucnn.LogSoftmax(dim=1), (3, 5), "normal"),
    "linear": (lambda: gpucnn.Linear(7, 5, dtype=F64), (4, 7), "normal"),
    "flatten": (lambda: gpucnn.Flatten(), (2, 3, 2, 2), "normal"),
    "identity": (lambda: gpucnn.Identity(), (2, 3), "normal"),
    "batchnorm": (lambda: gpucnn.BatchNorm2d(3, dtype=F64), (4, 3, 3, 3), "normal"),
    "batchnorm1d": (lambda: gpucnn.BatchNorm1d(3, dtype=F64), (5, 3), "normal"),
    "sequential": (lambda: gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, dtype=F64), gpucnn.Tanh(), gpucnn.AvgPool2d(2),
                                             gpucnn.Flatten(), gpucnn.Linear(8, 3, dtype=F64)), (2, 1, 6, 6),
                   "normal"),
    "sequential_conv_relu_maxpool": (lambda: gpucnn.Sequential(
        gpucnn.Conv2d(2, 3, 3, padding=1, dtype=F64), gpucnn.ReLU(), gpucnn.MaxPool2d(2), gpucnn.Flatten(),
        gpucnn.Linear(27, 3, dtype=F64)), (2, 2, 7, 6), "normal"),
    "sequential_relu_maxpool": (lambda: gpucnn.Sequential(
        gpucnn.Conv2d(2, 2, 1, dtype=F64), gpucnn.Tanh(), gpucnn.ReLU(), gpucnn.MaxPool2d(3, 2, padding=1)),
        (2, 2, 5, 5), "normal"),
    "concat_inception": (lambda: gpucnn.Concat(
        gpucnn.Conv2d(3, 2, 1, dtype=F64),
        gpucnn.Sequential(gpucnn.Conv2d(3, 2, 1, dtype=F64), gpucnn.ReLU(), gpucnn.Conv2d(2, 2, 3, padding=1,
                                                                                           dtype=F64)),
        gpucnn.Sequential(gpucnn.MaxPool2d(3, 1, padding=1), gpucnn.Conv2d(3, 1, 1, dtype=F64))),
        (2, 3, 5, 5), "distinct"),
}


def _make(backend, factory):
    with gpucnn.use_backend(backend.name):
        return factory()


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradient(backend, name):
    factory, shape, kind = LAYERS[name]
    layer = _make(backend, factory)
    check_gradients(layer, [make_input(np.random.default_rng(7), shape, kind)], backend)


def test_dropout_gradient(backend):
    layer = _make(backend, lambda: gpucnn.Dropout(0.4, rng=np.random.default_rng(11)))

    def reset():
        layer.rng = np.random.default_rng(11)  # the same mask for every evaluation

    y = check_gradients(layer, [np.random.default_rng(3).standard_normal((4, 9))], backend, reset=reset, samples=36)
    assert (y.numpy() == 0).any() and (y.numpy() != 0).any()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_loss_gradient(backend, reduction):
    """The loss module (the fused softmax cross-entropy op), every logit."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    loss = _make(backend, lambda: gpucnn.CrossEntropyLoss(reduction=reduction))
    y = check_gradients(lambda z: loss(z, labels), [logits], backend, samples=24, atol=1e-8)
    assert y.shape == ()


def test_nll_and_mse_loss_gradients(backend):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 5)
    target = rng.standard_normal((5, 4))
    nll = _make(backend, lambda: gpucnn.NLLLoss())
    mse = _make(backend, lambda: gpucnn.MSELoss())
    check_gradients(lambda z: nll(z, labels), [rng.standard_normal((5, 4))], backend, samples=20)
    check_gradients(lambda z: mse(z, target), [rng.standard_normal((5, 4))], backend, samples=20)


def test_batchnorm_eval_uses_running_statistics(backend):
    rng = np.random.default_rng(1)
    bn = _make(backend, lambda: gpucnn.BatchNorm2d(2, momentum=0.5, dtype=F64))
    x = rng.standard_normal((8, 2, 3, 3)) * 3 + 1
    bn(backend.asarray(x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean), 0.5 * mean)
    np.testing.assert_allclose(backend.to_numpy(bn.running_var), 0.5 + 0.5 * var)
    bn.eval()
    y = bn(backend.asarray(x)).numpy()
    expected = (x - 0.5 * mean.reshape(1, 2, 1, 1)) / np.sqrt(0.5 + 0.5 * var.reshape(1, 2, 1, 1) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    check_gradients(bn, [x], backend)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean), 0.5 * mean)  # eval left them alone


def test_input_without_grad_gives_same_parameter_gradients(backend, monkeypatch):
    """Images do not require grad: the first layer (a conv inside nested containers) is then not
    asked for an input gradient, and every parameter gradient is exactly the one computed with it."""
    rng = np.random.default_rng(4)
    model = _make(backend, lambda: gpucnn.Sequential(
        gpucnn.Concat(gpucnn.Conv2d(1, 2, 3, padding=1, dtype=F64),
                      gpucnn.Sequential(gpucnn.Conv2d(1, 1, 1, dtype=F64), gpucnn.Tanh())),
        gpucnn.ReLU(), gpucnn.Flatten(), gpucnn.Linear(48, 3, dtype=F64)))
    x_host = rng.standard_normal((2, 1, 4, 4))
    dy = backend.asarray(rng.standard_normal((2, 3)))
    asked = []
    original = backend.conv2d_backward

    def spy(*args, need_input_grad=True, **kwargs):
        asked.append(need_input_grad)
        return original(*args, need_input_grad=need_input_grad, **kwargs)

    monkeypatch.setattr(backend, "conv2d_backward", spy)
    x = gpucnn.tensor(x_host, requires_grad=True, backend=backend.name)
    model(x).backward(dy)
    assert x.grad is not None and x.grad.shape == (2, 1, 4, 4) and asked == [True, True]
    full = [p.grad.numpy() for p in model.parameters()]

    model.zero_grad()
    asked.clear()
    image = gpucnn.tensor(x_host, backend=backend.name)
    model(image).backward(dy)
    assert image.grad is None and asked == [False, False]
    for a, p in zip(full, model.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), a)


def test_eval_forward_in_batch_chunks_matches_whole_batch(backend, monkeypatch):
    """In eval mode a Sequential may run over slices of the batch (backend.eval_batch_chunk)."""
    rng = np.random.default_rng(2)
    model = _make(backend, lambda: gpucnn.Sequential(
        gpucnn.Conv2d(1, 2, 3, dtype=F64), gpucnn.BatchNorm2d(2, dtype=F64), gpucnn.ReLU(),
        gpucnn.MaxPool2d(2), gpucnn.Dropout(0.5), gpucnn.Flatten(), gpucnn.Linear(8, 3, dtype=F64)))
    x_host = rng.standard_normal((7, 1, 6, 6))
    x = backend.asarray(x_host)
    model(x)  # a training step's forward moves the running statistics
    model.eval()
    monkeypatch.setattr(type(backend), "eval_batch_chunk", None)
    whole = model(x).numpy()
    monkeypatch.setattr(type(backend), "eval_batch_chunk", 3)
    chunked = model(x).numpy()
    # not bitwise: BLAS blocks a product differently for other matrix sizes
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-14)
    assert chunked.shape == (7, 3)
    # the chunked forward is differentiable too (slices joined by cat)
    check_gradients(model, [x_host], backend, samples=8)
