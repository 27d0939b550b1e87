"""The op table: one entry per op (a layer and the arguments it is called with), from which
tests/test_op_table.py generates, on every backend, the gradient check against float64 finite
differences, the agreement with the NumPy backend, the parity with PyTorch and the ONNX export.

A new op adds its entries here and nothing else in tests/ (docs/adding-an-op.md). Each entry names:

- ``make(dtype)``: the gpucnn layer (float64 for the gradient checks, float32 for ONNX Runtime);
- ``shapes`` and ``kind``: the differentiable inputs, drawn by ``support.make_input``;
- ``extra(rng)``: further arguments that are not differentiated (labels, targets);
- ``torch``: the PyTorch module computing the same thing, into which the layer's ``state_dict``
  loads as is (None where PyTorch has no such layer);
- ``onnx``: whether ``gpucnn.onnx.export`` handles it (and ONNX Runtime runs the result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import gpucnn
import gpucnn.functional as F
from gpucnn.models import LENET5_C3_TABLE


@dataclass(frozen=True)
class OpCase:
    name: str
    make: Callable[[Any], gpucnn.Module] | None  # None for a functional case (``call``)
    shapes: tuple[tuple[int, ...], ...]
    kind: str | tuple[str, ...] = "normal"  # one for all inputs, or one per input
    torch: Callable[[Any], Any] | None = None  # given the torch module, returns the twin layer
    onnx: bool = True
    extra: Callable[[np.random.Generator], tuple] | None = None
    call: Callable[..., Any] | None = None  # a functional case: call(*tensors), every input differentiated

    def kinds(self) -> tuple[str, ...]:
        return (self.kind,) * len(self.shapes) if isinstance(self.kind, str) else self.kind


def Fn(name: str, call: Callable[..., Any], *shapes: tuple[int, ...], kind: str | tuple[str, ...] = "normal") -> OpCase:
    """A functional case: ``call(*tensors)`` with inputs of ``shapes`` (``gpucnn.functional`` and the fused
    functions, with the arguments a layer does not reach)."""
    return OpCase(name, None, shapes, kind, onnx=False, call=call)


def const(like: gpucnn.Tensor, values: Any) -> gpucnn.Tensor:
    """A constant (no gradient) on the backend of ``like``."""
    return gpucnn.tensor(np.asarray(values), backend=like.backend)


def _labels(n: int, classes: int) -> Callable[[np.random.Generator], tuple]:
    return lambda rng: (rng.integers(0, classes, n),)


def _target(*shape: int) -> Callable[[np.random.Generator], tuple]:
    return lambda rng: (rng.standard_normal(shape),)


def _torch_exact_hardsigmoid(t: Any) -> Any:
    """relu6(x + 3) / 6 composed in PyTorch: nn.Hardsigmoid's float64 backward multiplies by 1/6 rounded to
    float32 (a relative error of 3e-8), which the parity tolerance would flag; its forward is this."""

    class ExactHardsigmoid(t.nn.Module):
        def forward(self, x: Any) -> Any:
            return t.nn.functional.relu6(x + 3) / 6

    return ExactHardsigmoid()


class PoolUnpool(gpucnn.Module):
    """Conv2d -> ReLU -> MaxPool2d(return_indices=True) in a Sequential (so not fused), then MaxUnpool2d
    back to the input's size."""

    def __init__(self, dtype: Any) -> None:
        super().__init__()
        self.features = gpucnn.Sequential(gpucnn.Conv2d(2, 3, 3, padding=1, dtype=dtype), gpucnn.ReLU(),
                                          gpucnn.MaxPool2d(2, return_indices=True))
        self.unpool = gpucnn.MaxUnpool2d(2)

    def forward(self, x: Any) -> Any:
        y, indices = self.features(x)
        return self.unpool(y, indices, output_size=x.shape)


def times_indices(y: gpucnn.Tensor, indices: gpucnn.Tensor) -> gpucnn.Tensor:
    """y * indices (a constant): an output that shows the indices, with a gradient finite differences check
    (max unpooling's is not one where overlapping windows repeat an index)."""
    return y * gpucnn.Tensor(indices.data.astype(y.dtype), backend=y.backend)


class AdaptiveMaxIndices(gpucnn.Module):
    def __init__(self, dtype: Any) -> None:
        super().__init__()
        self.pool = gpucnn.AdaptiveMaxPool2d((3, 2), return_indices=True)

    def forward(self, x: Any) -> Any:
        return times_indices(*self.pool(x))


def _torch_adaptive_max_indices(t: Any) -> Any:
    class TorchAdaptiveMaxIndices(t.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = t.nn.AdaptiveMaxPool2d((3, 2), return_indices=True)

        def forward(self, x: Any) -> Any:
            y, indices = self.pool(x)
            return y * indices.to(y.dtype)

    return TorchAdaptiveMaxIndices()


def _torch_pool_unpool(t: Any) -> Any:
    class TorchPoolUnpool(t.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = t.nn.Sequential(t.nn.Conv2d(2, 3, 3, padding=1), t.nn.ReLU(),
                                            t.nn.MaxPool2d(2, return_indices=True))
            self.unpool = t.nn.MaxUnpool2d(2)

        def forward(self, x: Any) -> Any:
            y, indices = self.features(x)
            return self.unpool(y, indices, output_size=x.shape)

    return TorchPoolUnpool()


C = OpCase
OPS: list[OpCase] = [
    # ---------------------------------------------------------------- convolution
    C("conv2d", lambda d: gpucnn.Conv2d(3, 4, 3, padding=1, dtype=d), ((2, 3, 6, 5),),
      torch=lambda t: t.nn.Conv2d(3, 4, 3, padding=1)),
    C("conv2d_stride_dilation", lambda d: gpucnn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=2, dilation=(2, 1),
                                                        dtype=d), ((2, 2, 9, 7),),
      torch=lambda t: t.nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=2, dilation=(2, 1))),
    C("conv2d_groups_same", lambda d: gpucnn.Conv2d(4, 6, 3, groups=2, padding="same", dtype=d), ((1, 4, 5, 5),),
      torch=lambda t: t.nn.Conv2d(4, 6, 3, groups=2, padding="same")),
    C("conv2d_depthwise", lambda d: gpucnn.Conv2d(3, 3, 3, groups=3, padding=1, dtype=d), ((2, 3, 5, 4),),
      torch=lambda t: t.nn.Conv2d(3, 3, 3, groups=3, padding=1)),
    C("conv2d_depthwise_multiplier", lambda d: gpucnn.Conv2d(3, 6, 3, groups=3, padding=1, dtype=d), ((2, 3, 5, 4),),
      torch=lambda t: t.nn.Conv2d(3, 6, 3, groups=3, padding=1)),
    C("conv2d_full", lambda d: gpucnn.Conv2d(1, 2, 2, padding="full", dtype=d), ((2, 1, 4, 3),)),
    C("conv2d_no_bias", lambda d: gpucnn.Conv2d(2, 2, 3, bias=False, dtype=d), ((2, 2, 4, 4),),
      torch=lambda t: t.nn.Conv2d(2, 2, 3, bias=False)),
    C("conv2d_connection_table", lambda d: gpucnn.Conv2d(6, 16, 3, connection=LENET5_C3_TABLE, dtype=d),
      ((1, 6, 5, 5),)),
    C("conv1d", lambda d: gpucnn.Conv1d(2, 3, 3, stride=2, padding=1, dtype=d), ((2, 2, 11),),
      torch=lambda t: t.nn.Conv1d(2, 3, 3, stride=2, padding=1)),
    C("conv2d_padding_reflect", lambda d: gpucnn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="reflect", dtype=d),
      ((2, 2, 5, 4),), torch=lambda t: t.nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="reflect")),
    C("conv2d_padding_replicate_same", lambda d: gpucnn.Conv2d(2, 2, (2, 3), padding="same", padding_mode="replicate",
                                                               dtype=d), ((2, 2, 4, 5),),
      torch=lambda t: t.nn.Conv2d(2, 2, (2, 3), padding="same", padding_mode="replicate")),
    C("conv2d_padding_circular", lambda d: gpucnn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", dtype=d),
      ((2, 2, 4, 5),), onnx=False, torch=lambda t: t.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")),
    C("conv1d_padding_reflect", lambda d: gpucnn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect", dtype=d),
      ((2, 2, 7),), torch=lambda t: t.nn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect")),
    C("conv_transpose2d", lambda d: gpucnn.ConvTranspose2d(3, 4, 3, dtype=d), ((2, 3, 4, 5),),
      torch=lambda t: t.nn.ConvTranspose2d(3, 4, 3)),
    C("conv_transpose2d_stride_output_padding", lambda d: gpucnn.ConvTranspose2d(2, 3, (3, 2), stride=2, padding=1,
                                                                                output_padding=1, dtype=d),
      ((2, 2, 4, 3),), torch=lambda t: t.nn.ConvTranspose2d(2, 3, (3, 2), stride=2, padding=1, output_padding=1)),
    C("conv_transpose2d_dilation", lambda d: gpucnn.ConvTranspose2d(2, 3, 3, padding=(1, 2), dilation=2, dtype=d),
      ((2, 2, 4, 4),), torch=lambda t: t.nn.ConvTranspose2d(2, 3, 3, padding=(1, 2), dilation=2)),
    C("conv_transpose2d_groups", lambda d: gpucnn.ConvTranspose2d(4, 6, 2, stride=(1, 2), groups=2, dtype=d),
      ((2, 4, 3, 4),), torch=lambda t: t.nn.ConvTranspose2d(4, 6, 2, stride=(1, 2), groups=2)),
    C("conv_transpose2d_no_bias", lambda d: gpucnn.ConvTranspose2d(2, 2, 3, stride=2, bias=False, dtype=d),
      ((2, 2, 3, 3),), torch=lambda t: t.nn.ConvTranspose2d(2, 2, 3, stride=2, bias=False)),
    # ---------------------------------------------------------------- pooling
    C("max_pool2d_overlap_ceil", lambda d: gpucnn.MaxPool2d(3, 2, padding=1, ceil_mode=True), ((2, 2, 7, 6),),
      "distinct", torch=lambda t: t.nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)),
    C("max_pool2d", lambda d: gpucnn.MaxPool2d(2), ((2, 3, 6, 4),), "distinct", torch=lambda t: t.nn.MaxPool2d(2)),
    C("max_pool2d_indices_max_unpool2d", PoolUnpool, ((2, 2, 7, 6),), onnx=False, torch=_torch_pool_unpool),
    C("adaptive_max_pool2d", lambda d: gpucnn.AdaptiveMaxPool2d((3, 2)), ((2, 2, 7, 5),), "distinct", onnx=False,
      torch=lambda t: t.nn.AdaptiveMaxPool2d((3, 2))),
    C("adaptive_max_pool2d_indices", AdaptiveMaxIndices, ((2, 2, 7, 5),), "distinct", onnx=False,
      torch=_torch_adaptive_max_indices),
    C("adaptive_max_pool2d_even", lambda d: gpucnn.AdaptiveMaxPool2d((2, None)), ((2, 2, 4, 6),), "distinct",
      torch=lambda t: t.nn.AdaptiveMaxPool2d((2, None))),
    C("avg_pool2d_include_pad", lambda d: gpucnn.AvgPool2d(3, 2, padding=1, ceil_mode=True), ((2, 2, 7, 6),),
      torch=lambda t: t.nn.AvgPool2d(3, 2, padding=1, ceil_mode=True)),
    C("avg_pool2d_exclude_pad", lambda d: gpucnn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
      ((2, 2, 7, 6),), torch=lambda t: t.nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)),
    C("lp_pool2d", lambda d: gpucnn.LPPool2d(2, 2), ((2, 2, 6, 6),), "positive", torch=lambda t: t.nn.LPPool2d(2, 2)),
    C("lp_pool2d_p3_stride", lambda d: gpucnn.LPPool2d(3, (3, 2), stride=(2, 1)), ((2, 2, 7, 5),), "positive",
      torch=lambda t: t.nn.LPPool2d(3, (3, 2), stride=(2, 1))),
    C("global_avg_pool2d", lambda d: gpucnn.GlobalAvgPool2d(), ((2, 3, 4, 5),),
      torch=lambda t: t.nn.AdaptiveAvgPool2d(1)),
    C("adaptive_avg_pool2d", lambda d: gpucnn.AdaptiveAvgPool2d((2, 3)), ((2, 2, 5, 7),),
      torch=lambda t: t.nn.AdaptiveAvgPool2d((2, 3))),
    # ---------------------------------------------------------------- resampling (compositions: Linear, permutes)
    C("upsample_nearest", lambda d: gpucnn.Upsample(scale_factor=2), ((2, 3, 3, 4),),
      torch=lambda t: t.nn.Upsample(scale_factor=2)),
    C("upsample_nearest_size", lambda d: gpucnn.Upsample(size=(8, 3)), ((2, 2, 5, 7),),
      torch=lambda t: t.nn.Upsample(size=(8, 3))),
    C("upsample_bilinear", lambda d: gpucnn.Upsample(size=(8, 3), mode="bilinear", align_corners=False),
      ((2, 2, 5, 7),), torch=lambda t: t.nn.Upsample(size=(8, 3), mode="bilinear", align_corners=False)),
    C("upsample_bilinear_align_corners", lambda d: gpucnn.Upsample(scale_factor=1.7, mode="bilinear",
                                                                   align_corners=True), ((1, 2, 5, 7),),
      torch=lambda t: t.nn.Upsample(scale_factor=1.7, mode="bilinear", align_corners=True)),
    C("pixel_shuffle", lambda d: gpucnn.PixelShuffle(2), ((2, 12, 3, 4),), torch=lambda t: t.nn.PixelShuffle(2)),
    C("pixel_unshuffle", lambda d: gpucnn.PixelUnshuffle(2), ((2, 3, 4, 6),), torch=lambda t: t.nn.PixelUnshuffle(2)),
    C("subsampling2d", lambda d: gpucnn.Subsampling2d(3, 2, dtype=d), ((2, 3, 6, 4),)),
    # ---------------------------------------------------------------- padding
    C("zero_pad2d", lambda d: gpucnn.ZeroPad2d((1, 2, 0, 1)), ((2, 3, 4, 5),),
      torch=lambda t: t.nn.ZeroPad2d((1, 2, 0, 1))),
    C("constant_pad2d_crop", lambda d: gpucnn.ConstantPad2d((2, -1, -1, 1), 0.5), ((2, 2, 4, 5),),
      torch=lambda t: t.nn.ConstantPad2d((2, -1, -1, 1), 0.5)),
    C("reflection_pad2d", lambda d: gpucnn.ReflectionPad2d((1, 2, 2, 1)), ((2, 2, 4, 5),),
      torch=lambda t: t.nn.ReflectionPad2d((1, 2, 2, 1))),
    C("replication_pad2d", lambda d: gpucnn.ReplicationPad2d((3, 1, 0, 2)), ((2, 2, 3, 4),),
      torch=lambda t: t.nn.ReplicationPad2d((3, 1, 0, 2))),
    C("circular_pad2d", lambda d: gpucnn.CircularPad2d((1, 4, 3, 0)), ((2, 2, 3, 4),), onnx=False,
      torch=lambda t: t.nn.CircularPad2d((1, 4, 3, 0))),
    # ---------------------------------------------------------------- activations
    C("relu", lambda d: gpucnn.ReLU(), ((3, 7),), "kinked", torch=lambda t: t.nn.ReLU()),
    C("relu_4d", lambda d: gpucnn.ReLU(), ((2, 3, 4, 5),), "kinked", torch=lambda t: t.nn.ReLU()),
    C("leaky_relu", lambda d: gpucnn.LeakyReLU(0.2), ((3, 7),), "kinked", torch=lambda t: t.nn.LeakyReLU(0.2)),
    C("sigmoid", lambda d: gpucnn.Sigmoid(), ((3, 7),), torch=lambda t: t.nn.Sigmoid()),
    C("tanh", lambda d: gpucnn.Tanh(), ((3, 7),), torch=lambda t: t.nn.Tanh()),
    C("tanh_lecun", lambda d: gpucnn.Tanh.lecun(), ((3, 7),)),
    C("silu", lambda d: gpucnn.SiLU(), ((2, 3, 4, 5),), torch=lambda t: t.nn.SiLU()),
    C("relu6", lambda d: gpucnn.ReLU6(), ((2, 3, 4, 5),), "hard", torch=lambda t: t.nn.ReLU6()),
    C("relu6_inplace", lambda d: gpucnn.ReLU6(inplace=True), ((3, 7),), "hard",
      torch=lambda t: t.nn.ReLU6()),  # the twin out of place: in place, PyTorch refuses a leaf
    C("hardsigmoid", lambda d: gpucnn.Hardsigmoid(), ((2, 3, 4, 5),), "hard", torch=_torch_exact_hardsigmoid),
    C("hardswish", lambda d: gpucnn.Hardswish(), ((2, 3, 4, 5),), "hard", torch=lambda t: t.nn.Hardswish()),
    C("gelu", lambda d: gpucnn.GELU(), ((2, 3, 4, 5),), torch=lambda t: t.nn.GELU()),
    C("gelu_tanh", lambda d: gpucnn.GELU(approximate="tanh"), ((2, 3, 4, 5),),
      torch=lambda t: t.nn.GELU(approximate="tanh")),
    C("elu", lambda d: gpucnn.ELU(), ((2, 3, 4, 5),), "kinked", torch=lambda t: t.nn.ELU()),
    C("elu_alpha", lambda d: gpucnn.ELU(alpha=0.5, inplace=True), ((3, 7),), "kinked",
      torch=lambda t: t.nn.ELU(alpha=0.5)),
    C("mish", lambda d: gpucnn.Mish(), ((2, 3, 4, 5),), "hard", torch=lambda t: t.nn.Mish()),
    C("softplus", lambda d: gpucnn.Softplus(), ((2, 3, 4, 5),), "hard", torch=lambda t: t.nn.Softplus()),
    C("softplus_beta_threshold", lambda d: gpucnn.Softplus(beta=2.0, threshold=6.0), ((2, 3, 4, 5),), "hard",
      torch=lambda t: t.nn.Softplus(beta=2.0, threshold=6.0)),
    C("relu_inplace", lambda d: gpucnn.ReLU(inplace=True), ((3, 7),), "kinked", torch=lambda t: t.nn.ReLU()),
    C("prelu", lambda d: gpucnn.PReLU(dtype=d), ((2, 3, 4, 5),), "kinked", torch=lambda t: t.nn.PReLU()),
    C("prelu_channels", lambda d: gpucnn.PReLU(3, init=0.1, dtype=d), ((2, 3, 4, 5),), "kinked",
      torch=lambda t: t.nn.PReLU(3, init=0.1)),
    C("softmax", lambda d: gpucnn.Softmax(dim=1), ((3, 5),), torch=lambda t: t.nn.Softmax(dim=1)),
    C("log_softmax", lambda d: gpucnn.LogSoftmax(dim=1), ((3, 5),), torch=lambda t: t.nn.LogSoftmax(dim=1)),
    # ---------------------------------------------------------------- fully connected, shape, normalisation
    C("linear", lambda d: gpucnn.Linear(7, 5, dtype=d), ((4, 7),), torch=lambda t: t.nn.Linear(7, 5)),
    C("linear_no_bias", lambda d: gpucnn.Linear(7, 5, bias=False, dtype=d), ((4, 7),),
      torch=lambda t: t.nn.Linear(7, 5, bias=False)),
    C("flatten", lambda d: gpucnn.Flatten(), ((2, 3, 2, 2),), torch=lambda t: t.nn.Flatten()),
    C("identity", lambda d: gpucnn.Identity(), ((2, 3),), torch=lambda t: t.nn.Identity()),
    C("batch_norm2d", lambda d: gpucnn.BatchNorm2d(3, dtype=d), ((4, 3, 3, 3),), torch=lambda t: t.nn.BatchNorm2d(3)),
    C("batch_norm1d", lambda d: gpucnn.BatchNorm1d(3, dtype=d), ((5, 3),), torch=lambda t: t.nn.BatchNorm1d(3)),
    C("layer_norm", lambda d: gpucnn.LayerNorm((4, 5), dtype=d), ((2, 3, 4, 5),),
      torch=lambda t: t.nn.LayerNorm((4, 5))),
    C("layer_norm_no_bias", lambda d: gpucnn.LayerNorm(6, bias=False, dtype=d), ((3, 6),),
      torch=lambda t: t.nn.LayerNorm(6, bias=False)),
    C("layer_norm_no_affine", lambda d: gpucnn.LayerNorm(5, elementwise_affine=False), ((2, 3, 5),),
      torch=lambda t: t.nn.LayerNorm(5, elementwise_affine=False)),
    C("group_norm", lambda d: gpucnn.GroupNorm(2, 4, dtype=d), ((2, 4, 3, 3),), torch=lambda t: t.nn.GroupNorm(2, 4)),
    C("group_norm_1d_no_affine", lambda d: gpucnn.GroupNorm(3, 6, affine=False), ((2, 6, 5),),
      torch=lambda t: t.nn.GroupNorm(3, 6, affine=False)),
    C("instance_norm2d", lambda d: gpucnn.InstanceNorm2d(3), ((2, 3, 4, 4),), torch=lambda t: t.nn.InstanceNorm2d(3)),
    C("instance_norm2d_affine", lambda d: gpucnn.InstanceNorm2d(3, affine=True, dtype=d), ((2, 3, 3, 5),),
      torch=lambda t: t.nn.InstanceNorm2d(3, affine=True)),
    C("instance_norm2d_running", lambda d: gpucnn.InstanceNorm2d(3, affine=True, track_running_stats=True, dtype=d),
      ((2, 3, 4, 4),), torch=lambda t: t.nn.InstanceNorm2d(3, affine=True, track_running_stats=True)),
    C("instance_norm2d_running_eval", lambda d: gpucnn.InstanceNorm2d(3, track_running_stats=True, dtype=d).eval(),
      ((2, 3, 4, 4),), torch=lambda t: t.nn.InstanceNorm2d(3, track_running_stats=True).eval()),
    C("local_response_norm", lambda d: gpucnn.LocalResponseNorm(3, alpha=0.5, k=2.0), ((2, 5, 3, 3),),
      torch=lambda t: t.nn.LocalResponseNorm(3, alpha=0.5, k=2.0)),
    C("local_response_norm_even_3d", lambda d: gpucnn.LocalResponseNorm(2), ((2, 4, 5),),
      torch=lambda t: t.nn.LocalResponseNorm(2)),
    # ---------------------------------------------------------------- losses (labels and targets not differentiated)
    C("cross_entropy", lambda d: gpucnn.CrossEntropyLoss(), ((6, 4),), extra=_labels(6, 4), onnx=False,
      torch=lambda t: t.nn.CrossEntropyLoss()),
    C("cross_entropy_sum_smoothed", lambda d: gpucnn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
      ((6, 4),), extra=_labels(6, 4), onnx=False,
      torch=lambda t: t.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1)),
    C("nll_loss", lambda d: gpucnn.NLLLoss(), ((5, 4),), extra=_labels(5, 4), onnx=False,
      torch=lambda t: t.nn.NLLLoss()),
    C("mse_loss", lambda d: gpucnn.MSELoss(), ((5, 4),), extra=_target(5, 4), onnx=False,
      torch=lambda t: t.nn.MSELoss()),
    # ---------------------------------------------------------------- the fusions Sequential chooses
    C("sequential_conv_tanh_avgpool_linear", lambda d: gpucnn.Sequential(
        gpucnn.Conv2d(1, 2, 3, dtype=d), gpucnn.Tanh(), gpucnn.AvgPool2d(2), gpucnn.Flatten(),
        gpucnn.Linear(8, 3, dtype=d)), ((2, 1, 6, 6),),
      torch=lambda t: t.nn.Sequential(t.nn.Conv2d(1, 2, 3), t.nn.Tanh(), t.nn.AvgPool2d(2), t.nn.Flatten(),
                                      t.nn.Linear(8, 3))),
    C("sequential_conv_relu_maxpool", lambda d: gpucnn.Sequential(
        gpucnn.Conv2d(2, 3, 3, padding=1, dtype=d), gpucnn.ReLU(), gpucnn.MaxPool2d(2), gpucnn.Flatten(),
        gpucnn.Linear(27, 3, dtype=d)), ((2, 2, 7, 6),),
      torch=lambda t: t.nn.Sequential(t.nn.Conv2d(2, 3, 3, padding=1), t.nn.ReLU(), t.nn.MaxPool2d(2),
                                      t.nn.Flatten(), t.nn.Linear(27, 3))),
    C("sequential_conv_reflect_relu_maxpool", lambda d: gpucnn.Sequential(
        gpucnn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=d), gpucnn.ReLU(), gpucnn.MaxPool2d(2)),
      ((2, 2, 6, 5),), torch=lambda t: t.nn.Sequential(t.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
                                                       t.nn.ReLU(), t.nn.MaxPool2d(2))),
    C("sequential_relu_maxpool", lambda d: gpucnn.Sequential(
        gpucnn.Conv2d(2, 2, 1, dtype=d), gpucnn.Tanh(), gpucnn.ReLU(), gpucnn.MaxPool2d(3, 2, padding=1)),
      ((2, 2, 5, 5),),
      torch=lambda t: t.nn.Sequential(t.nn.Conv2d(2, 2, 1), t.nn.Tanh(), t.nn.ReLU(), t.nn.MaxPool2d(3, 2, padding=1))),
    C("sequential_linear_relu", lambda d: gpucnn.Sequential(
        gpucnn.Linear(6, 5, dtype=d), gpucnn.ReLU(), gpucnn.Linear(5, 2, dtype=d)), ((3, 6),),
      torch=lambda t: t.nn.Sequential(t.nn.Linear(6, 5), t.nn.ReLU(), t.nn.Linear(5, 2))),
    C("concat_inception", lambda d: gpucnn.Concat(
        gpucnn.Conv2d(3, 2, 1, dtype=d),
        gpucnn.Sequential(gpucnn.Conv2d(3, 2, 1, dtype=d), gpucnn.ReLU(), gpucnn.Conv2d(2, 2, 3, padding=1, dtype=d)),
        gpucnn.Sequential(gpucnn.MaxPool2d(3, 1, padding=1), gpucnn.Conv2d(3, 1, 1, dtype=d))), ((2, 3, 5, 5),),
      "distinct"),
]

LABELS = np.array([2, 0, 3, 3, 1])
CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 1.5])
RUNNING = (np.array([0.3, -0.2, 0.1]), np.array([1.5, 0.7, 2.0]))
C3 = np.asarray(LENET5_C3_TABLE, dtype=bool)
C3_INDEX = np.nonzero(C3.T)

# ---------------------------------------------------------------- the functional API, arguments layers do not reach
OPS += [
    Fn("F.conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)),
                   (2, 3, 6, 7), (4, 3, 3, 2), (4,)),
    Fn("F.conv2d_groups_same", lambda x, w: F.conv2d(x, w, padding="same", groups=2), (1, 4, 5, 5), (2, 2, 3, 3)),
    Fn("F.conv2d_full", lambda x, w: F.conv2d(x, w, padding="full"), (2, 1, 3, 4), (2, 1, 2, 2)),
    Fn("F.conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), (2, 2, 9), (3, 2, 3), (3,)),
    Fn("F.conv1d_dilated_groups", lambda x, w: F.conv1d(x, w, dilation=2, groups=2), (2, 4, 8), (2, 2, 2)),
    Fn("F.conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(0, 1),
                                                               output_padding=(1, 0), dilation=(1, 2)),
       (2, 2, 3, 4), (2, 3, 2, 3), (3,)),
    # an output_padding of stride or more (allowed under a larger dilation): rows the conv of dy reaches, x not
    Fn("F.conv_transpose2d_dilation_output_padding", lambda x, w: F.conv_transpose2d(
        x, w, output_padding=1, groups=2, dilation=2), (2, 4, 3, 3), (4, 1, 2, 2)),
    Fn("F.expand_connections", lambda packed, x: F.conv2d(x, F.expand_connections(
        packed, tuple(const(x, i).data for i in C3_INDEX), (16, 6, 2, 2))), (int(C3.sum()), 2, 2), (1, 6, 3, 3)),
    Fn("F.conv2d_relu_max_pool2d", lambda x, w, b: F.conv2d_relu_max_pool2d(x, w, b, padding=1, kernel_size=3,
                                                                            pool_stride=2),
                                   (2, 2, 6, 6), (3, 2, 3, 3), (3,)),
    Fn("F.max_pool2d", lambda x: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6), kind="distinct"),
    Fn("F.max_pool2d_rect", lambda x: F.max_pool2d(x, (2, 3), (1, 2)), (1, 2, 4, 7), kind="distinct"),
    Fn("F.max_unpool2d", lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2, output_size=(5, 7)),
       (2, 2, 5, 7), kind="distinct"),
    Fn("F.max_unpool2d_stride_padding", lambda x: F.max_unpool2d(
        *F.max_pool2d(x, (2, 3), (2, 3), padding=(1, 0), return_indices=True), (2, 3), (2, 3), (1, 0)),
       (1, 2, 5, 6), kind="distinct"),
    Fn("F.adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (4, 3)), (2, 2, 5, 7), kind="distinct"),
    Fn("F.adaptive_max_pool2d_indices", lambda x: times_indices(*F.adaptive_max_pool2d(x, (3, 2), True)),
       (1, 2, 5, 4), kind="distinct"),
    Fn("F.relu_max_pool2d", lambda x: F.relu_max_pool2d(x, 3, 2, padding=1), (2, 2, 7, 7), kind="distinct"),
    Fn("F.avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6)),
    Fn("F.avg_pool2d_exclude_pad", lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
                                   (2, 2, 7, 6)),
    Fn("F.lp_pool2d", lambda x: F.lp_pool2d(x, 3, 2), (2, 2, 6, 6), kind="positive"),
    Fn("F.lp_pool2d_ceil", lambda x: F.lp_pool2d(x, 2, 3, 2, ceil_mode=True), (1, 2, 6, 6), kind="positive"),
    Fn("F.adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), (2, 2, 5, 7)),
    Fn("F.adaptive_avg_pool2d_even", lambda x: F.adaptive_avg_pool2d(x, 2), (2, 2, 4, 6)),
    Fn("F.pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), (2, 2, 3, 4)),
    Fn("F.pad_crop", lambda x: F.pad(x, (-1, 2, 1, -2)), (1, 2, 4, 5)),
    Fn("F.pad_reflect", lambda x: F.pad(x, (1, 2, 0, 1), mode="reflect"), (2, 2, 3, 4)),
    Fn("F.pad_replicate_1d", lambda x: F.pad(x, (2, 3), mode="replicate"), (2, 3, 4)),
    Fn("F.pad_circular", lambda x: F.pad(x, (1, 2, 3, 1), mode="circular"), (2, 2, 3, 4)),
    Fn("F.pad_reflect_last_axis_4d", lambda x: F.pad(x, (3, 1), mode="reflect"), (1, 2, 2, 4)),
    Fn("F.interpolate_nearest", lambda x: F.interpolate(x, scale_factor=1.7), (2, 2, 5, 7)),
    Fn("F.interpolate_bilinear", lambda x: F.interpolate(x, size=(8, 3), mode="bilinear"), (2, 2, 5, 7)),
    Fn("F.interpolate_bilinear_corners", lambda x: F.interpolate(x, scale_factor=(0.6, 2.5), mode="bilinear",
                                                                 align_corners=True), (1, 2, 5, 7)),
    Fn("F.pixel_shuffle", lambda x: F.pixel_shuffle(x, 3), (2, 9, 2, 3)),
    Fn("F.pixel_unshuffle", lambda x: F.pixel_unshuffle(x, 2), (1, 2, 4, 6)),
    Fn("F.relu", lambda x: F.relu(x), (3, 7), kind="kinked"),
    Fn("F.leaky_relu", lambda x: F.leaky_relu(x, 0.2), (3, 7), kind="kinked"),
    Fn("F.sigmoid", lambda x: F.sigmoid(x), (3, 7)),
    Fn("F.tanh", lambda x: F.tanh(x), (3, 7)),
    Fn("F.silu", lambda x: F.silu(x), (3, 7)),
    Fn("F.relu6", lambda x: F.relu6(x, inplace=True), (3, 7), kind="hard"),
    Fn("F.hardsigmoid", lambda x: F.hardsigmoid(x), (3, 7), kind="hard"),
    Fn("F.hardswish", lambda x: F.hardswish(x), (3, 7), kind="hard"),
    Fn("F.gelu", lambda x: F.gelu(x), (3, 7)),
    Fn("F.gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), (3, 7)),
    Fn("F.elu", lambda x: F.elu(x, 1.5), (3, 7), kind="kinked"),
    Fn("F.mish", lambda x: F.mish(x), (3, 7)),
    Fn("F.softplus", lambda x: F.softplus(x, beta=-1.5, threshold=4.5), (3, 7), kind="hard"),
    Fn("F.prelu", lambda x, w: F.prelu(x, w), (2, 3, 4), (3,), kind=("kinked", "normal")),
    Fn("F.prelu_one_weight", lambda x, w: F.prelu(x, w), (3, 7), (1,), kind=("kinked", "normal")),
    Fn("F.dropout", lambda x: F.dropout(x, 0.3, seed=5), (4, 9)),
    Fn("F.dropout2d", lambda x: F.dropout2d(x, 0.3, seed=5), (4, 3, 2, 2)),
    Fn("F.batch_norm", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                       (4, 3, 2, 2), (3,), (3,)),
    Fn("F.batch_norm_train_no_affine", lambda x: F.batch_norm(x, None, None, training=True), (6, 3)),
    Fn("F.batch_norm_eval", lambda x, w, b: F.batch_norm(x, const(x, RUNNING[0]), const(x, RUNNING[1]), w, b),
                            (2, 3, 4), (3,), (3,)),
    Fn("F.layer_norm", lambda x, w, b: F.layer_norm(x, (4,), w, b, eps=1e-3), (3, 2, 4), (4,), (4,)),
    Fn("F.group_norm", lambda x, w, b: F.group_norm(x, 3, w, b), (2, 6, 2, 2), (6,), (6,)),
    Fn("F.instance_norm", lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-4), (2, 3, 5), (3,), (3,)),
    Fn("F.instance_norm_running_eval", lambda x, w, b: F.instance_norm(
        x, const(x, RUNNING[0]), const(x, RUNNING[1]), w, b, use_input_stats=False), (2, 3, 5), (3,), (3,)),
    Fn("F.local_response_norm", lambda x: F.local_response_norm(x, 4, alpha=0.3, beta=0.6, k=1.5), (2, 6, 2, 3)),
    Fn("F.linear", lambda x, w, b: F.linear(x, w, b), (4, 5), (3, 5), (3,)),
    Fn("F.linear_3d_no_bias", lambda x, w: F.linear(x, w), (2, 3, 5), (4, 5)),
    Fn("F.softmax", lambda x: F.softmax(x, dim=1), (3, 5)),
    Fn("F.softmax_dim0", lambda x: F.softmax(x, dim=0), (3, 5)),
    Fn("F.log_softmax", lambda x: F.log_softmax(x), (2, 3, 4)),
    Fn("F.cross_entropy", lambda x: F.cross_entropy(x, LABELS), (5, 4)),
    Fn("F.cross_entropy_sum", lambda x: F.cross_entropy(x, LABELS, reduction="sum"), (5, 4)),
    Fn("F.cross_entropy_none", lambda x: F.cross_entropy(x, LABELS, reduction="none"), (5, 4)),
    Fn("F.cross_entropy_weight_ignore", lambda x: F.cross_entropy(x, LABELS, const(x, CLASS_WEIGHT), ignore_index=3),
                                        (5, 4)),
    Fn("F.cross_entropy_smoothing", lambda x: F.cross_entropy(x, LABELS, const(x, CLASS_WEIGHT), ignore_index=0,
                                                              label_smoothing=0.2), (5, 4)),
    Fn("F.nll_loss", lambda x: F.nll_loss(x, LABELS), (5, 4)),
    Fn("F.nll_loss_weight_sum", lambda x: F.nll_loss(x, LABELS, const(x, CLASS_WEIGHT), reduction="sum"), (5, 4)),
    Fn("F.nll_loss_ignore_none", lambda x: F.nll_loss(x, LABELS, ignore_index=3, reduction="none"), (5, 4)),
    Fn("F.mse_loss", lambda x, t: F.mse_loss(x, t), (3, 4), (3, 4)),
    Fn("F.mse_loss_sum_const_target", lambda x: F.mse_loss(x, np.ones((3, 4)), reduction="sum"), (3, 4)),
    Fn("F.mse_loss_none", lambda x, t: F.mse_loss(x, t, reduction="none"), (3, 4), (3, 4)),
    Fn("F.cat", lambda a, b, c: F.cat([a, b, c], dim=1), (2, 1, 3), (2, 3, 3), (2, 2, 3)),
]

BY_NAME = {case.name: case for case in OPS}
assert len(BY_NAME) == len(OPS), "two op-table entries share a name"
