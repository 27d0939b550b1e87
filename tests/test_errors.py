"""Bad input gets a ValueError/TypeError naming the layer, what it expected and what it got."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn


def test_wrong_ndim_names_layer_and_shapes():
    conv = gpucnn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d: expected a 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"):
        conv(np.zeros((3, 8, 8), np.float32))


def test_wrong_channel_count():
    conv = gpucnn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        conv(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input of shape \(N, 5, H, W\)"):
        gpucnn.BatchNorm2d(5)(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(N, 10\), got \(2, 9\)"):
        gpucnn.Linear(10, 2)(np.zeros((2, 9), np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64])
def test_non_float_dtype(dtype):
    for layer in (gpucnn.Conv2d(1, 1, 3), gpucnn.MaxPool2d(2), gpucnn.ReLU(), gpucnn.Linear(4, 1)):
        shape = (2, 4) if isinstance(layer, gpucnn.Linear) else (2, 1, 4, 4)
        with pytest.raises(TypeError, match=f"{type(layer).__name__}: expected a float32 or float64 input"):
            layer(np.zeros(shape, dtype))


def test_mixed_dtype_is_rejected():
    with pytest.raises(TypeError, match="Conv2d: input dtype float64 differs from weight dtype float32"):
        gpucnn.Conv2d(1, 1, 3)(np.zeros((1, 1, 4, 4)))


def test_empty_batch():
    for layer in (gpucnn.Conv2d(1, 2, 3), gpucnn.MaxPool2d(2), gpucnn.AvgPool2d(2), gpucnn.Tanh()):
        with pytest.raises(ValueError, match=f"{type(layer).__name__}: got an empty batch"):
            layer(np.zeros((0, 1, 6, 6), np.float32))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv2d: kernel of extent \(5, 5\) is larger than the padded input "
                                         r"\(4, 4\)"):
        gpucnn.Conv2d(1, 1, 5, padding=1)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: kernel of extent \(5, 3\)"):  # dilation (2, 1) widens the height
        gpucnn.Conv2d(1, 1, 3, dilation=(2, 1))(np.zeros((1, 1, 4, 9), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d: kernel \(3, 3\) is larger than the padded input"):
        gpucnn.MaxPool2d(3)(np.zeros((1, 1, 2, 2), np.float32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Conv2d: in_channels .* must both be divisible by groups"):
        gpucnn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        gpucnn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be an int, a pair"):
        gpucnn.Conv2d(1, 1, 3, padding="wide")
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        gpucnn.Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="connection table must have shape"):
        gpucnn.Conv2d(6, 16, 5, connection=np.ones((16, 6), bool))
    with pytest.raises(ValueError, match="MaxPool2d: padding must be between 0 and half the kernel"):
        gpucnn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        gpucnn.Dropout(1.5)
    with pytest.raises(TypeError, match="Sequential: item 1 must be a gpucnn Module"):
        gpucnn.Sequential(gpucnn.ReLU(), lambda x: x)


def test_loss_rejects_bad_labels():
    loss = gpucnn.SoftmaxCrossEntropy()
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(3,\)"):
        loss(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: expected a 2-D input \(N, C\), got shape \(3,\)"):
        loss(np.zeros((3,), np.float32), np.array([0, 1, 2]))


def test_nan_is_propagated_not_rejected():
    """Documented behaviour: layers do not scan for NaN; NaN flows through to the loss."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan  # reaches conv outputs (0..1, 0..1): pooled cell (0, 0) only
    model = gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, padding=1), gpucnn.ReLU(), gpucnn.MaxPool2d(2))
    y = model(x).numpy()
    assert np.isnan(y[0, :, 0, 0]).all()
    assert np.isfinite(y[0, :, 1, 1]).all()


def test_input_on_wrong_backend_is_a_type_error():
    class NotAnArray:
        dtype = np.float32
        ndim = 4
        shape = (1, 1, 4, 4)

    with pytest.raises(TypeError, match="Conv2d is on backend 'numpy' and expects a numpy.ndarray"):
        gpucnn.Conv2d(1, 1, 3)(NotAnArray())
