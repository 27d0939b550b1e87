"""Gradients that the op table (tests/op_table.py, which checks every layer's) cannot express: a dropout
mask replayed per evaluation, BatchNorm in eval mode, inputs that do not require grad. The fused
Sequential paths are checked bit for bit in tests/test_autograd.py."""

from __future__ import annotations

import numpy as np
from gradcheck import check_gradients
from support import on_backend

import gpucnn

F64 = np.float64


def test_dropout_gradient(backend):
    layer = on_backend(backend, lambda: gpucnn.Dropout(0.4, rng=np.random.default_rng(11)))

    def reset():
        layer.rng = np.random.default_rng(11)  # the same mask for every evaluation

    y = check_gradients(layer, [np.random.default_rng(3).standard_normal((4, 9))], backend, reset=reset, samples=36)
    assert (y.numpy() == 0).any() and (y.numpy() != 0).any()


def test_batchnorm_eval_uses_running_statistics(backend):
    rng = np.random.default_rng(1)
    bn = on_backend(backend, lambda: gpucnn.BatchNorm2d(2, momentum=0.5, dtype=F64))
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
    model = on_backend(backend, lambda: gpucnn.Sequential(
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
    model = on_backend(backend, lambda: gpucnn.Sequential(
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
