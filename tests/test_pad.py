"""Padding (F.pad, the *Pad2d layers, Conv2d's padding_mode): PyTorch's refusals with messages naming the
function and the sizes, the backward gather against PyTorch where several outputs read one input (a
replicated band wider than the input, reflections of both sides), and the ONNX export of circular padding."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import nn


def _x(*shape: int) -> gpucnn.Tensor:
    return gpucnn.tensor(np.arange(np.prod(shape), dtype=np.float64).reshape(shape))


@pytest.mark.parametrize("call, message", [
    (lambda: F.pad(_x(1, 1, 3, 4), (4, 0, 0, 0), mode="reflect"),
     r"pad: reflect padding must be less than the input size on its axis, got padding \(4, 0\) for width 4 "
     r"\(input shape \(1, 1, 3, 4\)\)"),
    (lambda: F.pad(_x(1, 1, 3, 4), (0, 0, 1, 3), mode="reflect"),
     r"pad: reflect padding .* got padding \(1, 3\) for height 3"),
    (lambda: F.pad(_x(2, 3, 5), (1, 5), mode="reflect"), r"pad: reflect padding .* got padding \(1, 5\) for width 5"),
    (lambda: nn.ReflectionPad2d(3)(_x(1, 1, 3, 5)), r"ReflectionPad2d: reflect padding .* for height 3"),
    (lambda: nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect", dtype=np.float64)(_x(1, 1, 6, 4)),
     r"Conv2d: reflect padding .* got padding \(4, 4\) for width 4"),
    (lambda: F.pad(_x(1, 1, 3, 4), (0, 5, 0, 0), mode="circular"),
     r"pad: circular padding must be at most the input size .* got padding \(0, 5\) for width 4"),
    (lambda: F.pad(_x(1, 1, 3, 4), (-1, 0, 0, 0), mode="replicate"),
     r"pad: negative padding \(-1, 0\) is supported in constant mode only"),
    (lambda: F.pad(_x(1, 1, 3, 4), (-3, -2, 0, 0)), r"pad: negative padding \(-3, -2\) crops more than the width 4"),
    (lambda: F.pad(_x(1, 1, 3, 4), (1, 1, 1, 1, 1, 1)), r"pad: padding must have 2 or 4 entries"),
    (lambda: F.pad(_x(2, 3, 4), (1, 1, 1, 1)), r"pad: expected a 4-D input \(N, C, H, W\) for padding"),
    (lambda: F.pad(_x(2, 4), (1, 1)), r"pad: expected a 4-D input .* or a 3-D one \(N, C, L\)"),
    (lambda: F.pad(_x(1, 1, 3, 4), (1, 1), mode="mirror"), r"pad: mode must be one of 'constant', 'reflect'"),
    (lambda: F.pad(_x(1, 1, 3, 4), (1, 1), mode="reflect", value=2.0),
     r"pad: padding mode 'reflect' doesn't take a value argument"),
])
def test_refusals_name_the_function_and_the_sizes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("mode, pads, shape", [
    ("replicate", (5, 4, 3, 6), (2, 2, 2, 3)),  # bands wider than the input
    ("replicate", (2, 3, 1, 2), (1, 1, 1, 1)),  # one element read by every output
    ("reflect", (3, 3, 2, 2), (1, 2, 3, 4)),    # reflections from both sides
    ("circular", (4, 4, 3, 3), (1, 2, 3, 4)),   # a full wrap on each side
    ("constant", (-2, 3, 1, -2), (2, 1, 4, 5)),
])
def test_backward_matches_pytorch(backend, mode, pads, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.pad(xt, pads, mode=mode)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    y = backend.to_numpy(backend.pad2d_forward(backend.asarray(x), pads, mode, 0.0))
    dx = backend.to_numpy(backend.pad2d_backward(backend.asarray(dy), shape, pads, mode))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_padding_mode_is_kept_and_shown():
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")
    assert conv.padding_mode == "circular" and conv.padding == (1, 1, 1, 1)
    assert "padding_mode='circular'" in repr(conv)
    assert nn.Conv1d(1, 1, 3).padding_mode == "zeros"


def test_circular_padding_exports_from_opset_19(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = nn.Sequential(nn.CircularPad2d((1, 2, 0, 1)), nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"))
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 5)).astype(np.float32)
    with pytest.raises(gpucnn.onnx.ExportError, match="cannot export circular padding .* below opset 19"):
        gpucnn.onnx.export(model, None, x, opset=17)
    path = tmp_path / "circular.onnx"
    gpucnn.onnx.export(model, path, x, opset=19)
    assert gpucnn.onnx.verify(path, model, x)["match"]
