"""Layer constructors refuse a zero or negative size (kernel, channels, features, groups, stride,
dilation, output size) with a ValueError naming the layer and the argument, before they initialise
anything: Conv1d(1, 1, 0) used to divide by its zero fan-in."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpucnn
from gpucnn import nn

# (layer, the arguments that are wrong, the argument the message must name); every value is one
# a user can type, each wrong in exactly one place
BAD_ARGUMENTS = [
    (nn.Conv1d, (1, 1, 0), {}, "kernel_size"),
    (nn.Conv1d, (1, 1, -3), {}, "kernel_size"),
    (nn.Conv1d, (0, 1, 3), {}, "in_channels"),
    (nn.Conv1d, (1, -1, 3), {}, "out_channels"),
    (nn.Conv1d, (2, 2, 3), {"groups": 0}, "groups"),
    (nn.Conv1d, (1, 1, 3), {"stride": 0}, "stride"),
    (nn.Conv1d, (1, 1, 3), {"dilation": 0}, "dilation"),
    (nn.Conv1d, (1, 1, 3), {"padding": -1}, "padding"),
    (nn.Conv2d, (1, 1, 0), {}, "kernel_size"),
    (nn.Conv2d, (1, 1, (3, 0)), {}, "kernel_size"),
    (nn.Conv2d, (1, 1, (-1, 3)), {}, "kernel_size"),
    (nn.Conv2d, (0, 4, 3), {}, "in_channels"),
    (nn.Conv2d, (3, 0, 3), {}, "out_channels"),
    (nn.Conv2d, (4, 4, 3), {"groups": 0}, "groups"),
    (nn.Conv2d, (4, 4, 3), {"groups": -2}, "groups"),
    (nn.Conv2d, (1, 1, 3), {"stride": (1, 0)}, "stride"),
    (nn.Conv2d, (1, 1, 3), {"dilation": 0}, "dilation"),
    (nn.Conv2d, (1, 1, 3), {"padding": -1}, "padding"),
    (nn.ConvTranspose2d, (1, 1, 0), {}, "kernel_size"),
    (nn.ConvTranspose2d, (0, 2, 3), {}, "in_channels"),
    (nn.ConvTranspose2d, (2, 0, 3), {}, "out_channels"),
    (nn.ConvTranspose2d, (4, 4, 3), {"groups": 0}, "groups"),
    (nn.ConvTranspose2d, (4, 6, 3), {"groups": 4}, "groups"),
    (nn.ConvTranspose2d, (1, 1, 3), {"stride": (0, 1)}, "stride"),
    (nn.ConvTranspose2d, (1, 1, 3), {"dilation": 0}, "dilation"),
    (nn.ConvTranspose2d, (1, 1, 3), {"padding": -1}, "padding"),
    (nn.ConvTranspose2d, (1, 1, 3), {"output_padding": -1}, "output_padding"),
    (nn.ConvTranspose2d, (1, 1, 3), {"stride": 2, "output_padding": 2}, "output_padding"),
    (nn.ConvTranspose2d, (1, 1, 3), {"padding_mode": "reflect"}, "padding_mode"),
    (nn.Linear, (0, 10), {}, "in_features"),
    (nn.Linear, (10, -1), {}, "out_features"),
    (nn.MaxPool2d, (0,), {}, "kernel_size"),
    (nn.MaxPool2d, (2,), {"stride": 0}, "stride"),
    (nn.MaxPool2d, (2,), {"padding": -1}, "padding"),
    (nn.MaxPool2d, (2,), {"dilation": 0}, "dilation"),
    (nn.AvgPool2d, (-2,), {}, "kernel_size"),
    (nn.AvgPool2d, ((2, 0),), {}, "kernel_size"),
    (nn.LPPool2d, (2, 0), {}, "kernel_size"),
    (nn.LPPool2d, (2, 2), {"stride": -1}, "stride"),
    (nn.LPPool2d, (0, 2), {}, "norm_type"),
    (nn.AdaptiveAvgPool2d, (0,), {}, "output_size"),
    (nn.AdaptiveAvgPool2d, ((None, -1),), {}, "output_size"),
    (nn.AdaptiveMaxPool2d, (0,), {}, "output_size"),
    (nn.AdaptiveMaxPool2d, ((2, -1),), {}, "output_size"),
    (nn.MaxUnpool2d, (0,), {}, "kernel_size"),
    (nn.MaxUnpool2d, (2,), {"stride": 0}, "stride"),
    (nn.MaxUnpool2d, (2,), {"padding": -1}, "padding"),
    (nn.Subsampling2d, (0,), {}, "channels"),
    (nn.Subsampling2d, (6, 0), {}, "kernel_size"),
    (nn.BatchNorm1d, (0,), {}, "num_features"),
    (nn.BatchNorm2d, (-4,), {}, "num_features"),
    (nn.SyncBatchNorm, (0,), {}, "num_features"),
    (nn.LayerNorm, (0,), {}, "normalized_shape"),
    (nn.LayerNorm, ((4, -1),), {}, "normalized_shape"),
    (nn.LayerNorm, ((),), {}, "normalized_shape"),
    (nn.GroupNorm, (0, 4), {}, "num_groups"),
    (nn.GroupNorm, (2, 0), {}, "num_channels"),
    (nn.GroupNorm, (3, 4), {}, "num_channels"),
    (nn.InstanceNorm2d, (0,), {}, "num_features"),
    (nn.LocalResponseNorm, (0,), {}, "size"),
    (nn.Dropout, (1.5,), {}, "p"),
    (nn.PixelShuffle, (0,), {}, "upscale_factor"),
    (nn.PixelShuffle, (-2,), {}, "upscale_factor"),
    (nn.PixelUnshuffle, (0,), {}, "downscale_factor"),
    (nn.PReLU, (0,), {}, "num_parameters"),
    (nn.Upsample, (), {"size": 0}, "size"),
    (nn.Upsample, (), {"size": (4, -1)}, "size"),
    (nn.Upsample, (), {"scale_factor": 0}, "scale_factor"),
    (nn.Upsample, (), {"scale_factor": (2, -1.5)}, "scale_factor"),
    (nn.ReflectionPad2d, (-1,), {}, "padding"),
    (nn.ReplicationPad2d, ((1, 2, -1, 0),), {}, "padding"),
    (nn.CircularPad2d, ((1, 2, 3),), {}, "padding"),
    (nn.ZeroPad2d, ((1, 2),), {}, "padding"),
    (nn.ConstantPad2d, ((1, 1, 1, 1, 1), 0.5), {}, "padding"),
    (nn.Conv2d, (1, 1, 3), {"padding_mode": "mirror"}, "padding_mode"),
]


def _case_id(case: tuple) -> str:
    layer, args, kwargs, _ = case
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{layer.__name__}({', '.join(shown)})"


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=_case_id)
def test_a_wrong_size_is_a_value_error_naming_the_layer_and_the_argument(case):
    layer, args, kwargs, argument = case
    if "rng" in inspect.signature(layer).parameters:
        kwargs = {**kwargs, "rng": np.random.default_rng(0)}
    with pytest.raises(ValueError) as error:
        layer(*args, **kwargs)
    message = str(error.value)
    assert message.startswith(f"{layer.__name__}:"), message
    assert argument in message, message


@pytest.mark.parametrize("layer, args", [(nn.Conv1d, (1, 1, 0)), (nn.Conv2d, (1, 1, 0)), (nn.Conv2d, (1, 0, 3)),
                                         (nn.Linear, (0, 3))])
def test_nothing_is_initialised_before_the_refusal(layer, args):
    # the generator of a refused layer is untouched: the check runs before any weight is drawn
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    with pytest.raises(ValueError):
        layer(*args, rng=rng)
    assert rng.bit_generator.state == before


def test_every_sized_layer_is_in_the_table():
    # a new layer whose constructor takes a size has to be added above
    sized = {"kernel_size", "in_channels", "out_channels", "in_features", "num_features", "channels",
             "output_size", "groups"}
    layers = {name for name in dir(nn) if isinstance(getattr(nn, name), type)
              and issubclass(getattr(nn, name), nn.Module)
              and sized & set(inspect.signature(getattr(nn, name)).parameters)}
    covered = {layer.__name__ for layer, *_ in BAD_ARGUMENTS}
    assert layers <= covered, f"layers taking a size with no wrong-size case here: {sorted(layers - covered)}"


@pytest.mark.parametrize("call, argument", [
    (lambda x: gpucnn.functional.max_pool2d(x, 0), "kernel_size"),
    (lambda x: gpucnn.functional.adaptive_max_pool2d(x, (0, 2)), "output_size"),
    (lambda x: gpucnn.functional.max_unpool2d(x, gpucnn.tensor(np.zeros((1, 1, 4, 4), np.int64)), 2, stride=0),
     "stride"),
    (lambda x: gpucnn.functional.max_unpool2d(x, gpucnn.tensor(np.zeros((1, 1, 4, 4), np.int64)), 2,
                                              output_size=(10, 8)), "output_size"),
    (lambda x: gpucnn.functional.avg_pool2d(x, 2, stride=0), "stride"),
    (lambda x: gpucnn.functional.conv2d(x, gpucnn.tensor(np.ones((1, 1, 2, 2), np.float32)), stride=0), "stride"),
    (lambda x: gpucnn.functional.conv2d(x, gpucnn.tensor(np.ones((1, 1, 2, 2), np.float32)), groups=0), "groups"),
])
def test_the_functional_forms_share_the_checks(call, argument):
    x = gpucnn.tensor(np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=argument):
        call(x)


def test_the_smallest_sizes_are_accepted():
    rng = np.random.default_rng(0)
    layers = [nn.Conv1d(1, 1, 1, rng=rng), nn.Conv2d(1, 1, 1, rng=rng), nn.Linear(1, 1, rng=rng), nn.MaxPool2d(1),
              nn.AvgPool2d(1), nn.AdaptiveAvgPool2d((None, 1)), nn.Subsampling2d(1, 1), nn.BatchNorm2d(1)]
    assert all(isinstance(layer, nn.Module) for layer in layers)
