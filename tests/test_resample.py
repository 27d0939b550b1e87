"""interpolate / Upsample, pixel_shuffle / PixelShuffle / PixelUnshuffle and prelu / PReLU: PyTorch's
values for non-integer sizes and scales, and the errors for bad arguments (ValueErrors naming the
function or layer). The op table (tests/op_table.py) checks their gradients, backends, PyTorch twins
and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import nn


def _x(*shape: int) -> gpucnn.Tensor:
    return gpucnn.tensor(np.random.default_rng(0).standard_normal(shape))


@pytest.mark.parametrize("kwargs", [
    dict(size=(8, 3)), dict(size=(8, 3), mode="bilinear"), dict(size=(8, 3), mode="bilinear", align_corners=True),
    dict(scale_factor=1.7), dict(scale_factor=(0.6, 2.5), mode="bilinear"),
    dict(scale_factor=(1.1, 1.5), mode="bilinear"),  # 5 rows stay 5: that axis is left as it is
    dict(scale_factor=(1.3, 0.6), mode="bilinear", recompute_scale_factor=True),
    dict(scale_factor=2.2, mode="bilinear", align_corners=True), dict(scale_factor=0.45),
])
def test_interpolate_matches_pytorch(kwargs):
    torch = pytest.importorskip("torch")
    x = _x(2, 3, 5, 7)
    expected = torch.nn.functional.interpolate(torch.tensor(x.numpy()), **kwargs).numpy()
    y = F.interpolate(x, **kwargs).numpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda x: F.interpolate(x, size=4, scale_factor=2), "only one of size or scale_factor"),
    (lambda x: F.interpolate(x), "either size or scale_factor"),
    (lambda x: F.interpolate(x, size=4, align_corners=True), "align_corners"),
    (lambda x: F.interpolate(x, size=4, mode="bicubic"), "not supported yet"),
    (lambda x: F.interpolate(x, size=4, mode="cubic"), "mode must be one of"),
    (lambda x: F.interpolate(x, size=(4, 4, 4)), "pair"),
    (lambda x: F.interpolate(x, scale_factor=0.1), "empty output"),
    (lambda x: F.interpolate(x[0], size=4), "3-D input is not supported yet"),
    (lambda x: F.interpolate(x.reshape(2, 3, 5, 7, 1), size=4), "5-D input is not supported yet"),
    (lambda x: F.interpolate(x.reshape(-1), size=4), "expected a 4-D input"),
    (lambda x: F.pixel_shuffle(x, 2), "divisible by upscale_factor^2 = 4"),
    (lambda x: F.pixel_shuffle(x, 0), "upscale_factor must be a positive int"),
    (lambda x: F.pixel_unshuffle(x, 2), "divisible by downscale_factor = 2"),
    (lambda x: F.pixel_shuffle(x[0, 0], 1), "at least 3 dims"),
    (lambda x: F.prelu(x, gpucnn.tensor(np.ones(2))), "prelu: expected a weight of shape (1,) or (3,)"),
    (lambda x: nn.Upsample(size=4, scale_factor=2), "Upsample: only one of size or scale_factor"),
    (lambda x: nn.Upsample(scale_factor=2, align_corners=False), "Upsample: align_corners"),
    (lambda x: nn.Upsample(size=4)(x[0]), "Upsample: expected a 4-D input"),
    (lambda x: nn.PixelShuffle(2)(x), "PixelShuffle: expected an input"),
    (lambda x: nn.PixelUnshuffle(3)(x), "PixelUnshuffle: expected an input"),
    (lambda x: nn.PReLU(2, dtype=np.float64)(x), "PReLU: expected input with 2 channels"),
])
def test_bad_arguments_are_value_errors_naming_the_caller(call, message):
    with pytest.raises(ValueError) as error:
        call(_x(2, 3, 5, 7))
    assert message in str(error.value), str(error.value)


def test_pixel_unshuffle_inverts_pixel_shuffle_over_extra_batch_axes():
    x = _x(2, 3, 8, 4, 6)
    y = F.pixel_shuffle(x, 2)
    assert y.shape == (2, 3, 2, 8, 12)
    np.testing.assert_array_equal(F.pixel_unshuffle(y, 2).numpy(), x.numpy())


def test_prelu_state_dict_and_float32():
    layer = nn.PReLU(3)
    assert list(layer.state_dict()) == ["weight"] and layer.weight.shape == (3,)
    x = gpucnn.tensor(np.array([[-2.0, 1.0, -4.0]], np.float32))
    y = layer(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), [[-0.5, 1.0, -1.0]])
    with pytest.raises(TypeError, match="PReLU"):
        layer(x.numpy().astype(np.float64))
