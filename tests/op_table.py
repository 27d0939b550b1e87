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
from gpucnn.models import LENET5_C3_TABLE


@dataclass(frozen=True)
class OpCase:
    name: str
    make: Callable[[Any], gpucnn.Module]
    shapes: tuple[tuple[int, ...], ...]
    kind: str = "normal"
    torch: Callable[[Any], Any] | None = None  # given the torch module, returns the twin layer
    onnx: bool = True
    extra: Callable[[np.random.Generator], tuple] | None = None


def _labels(n: int, classes: int) -> Callable[[np.random.Generator], tuple]:
    return lambda rng: (rng.integers(0, classes, n),)


def _target(*shape: int) -> Callable[[np.random.Generator], tuple]:
    return lambda rng: (rng.standard_normal(shape),)


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
    C("conv2d_full", lambda d: gpucnn.Conv2d(1, 2, 2, padding="full", dtype=d), ((2, 1, 4, 3),)),
    C("conv2d_no_bias", lambda d: gpucnn.Conv2d(2, 2, 3, bias=False, dtype=d), ((2, 2, 4, 4),),
      torch=lambda t: t.nn.Conv2d(2, 2, 3, bias=False)),
    C("conv2d_connection_table", lambda d: gpucnn.Conv2d(6, 16, 3, connection=LENET5_C3_TABLE, dtype=d),
      ((1, 6, 5, 5),)),
    C("conv1d", lambda d: gpucnn.Conv1d(2, 3, 3, stride=2, padding=1, dtype=d), ((2, 2, 11),),
      torch=lambda t: t.nn.Conv1d(2, 3, 3, stride=2, padding=1)),
    # ---------------------------------------------------------------- pooling
    C("max_pool2d_overlap_ceil", lambda d: gpucnn.MaxPool2d(3, 2, padding=1, ceil_mode=True), ((2, 2, 7, 6),),
      "distinct", torch=lambda t: t.nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)),
    C("max_pool2d", lambda d: gpucnn.MaxPool2d(2), ((2, 3, 6, 4),), "distinct", torch=lambda t: t.nn.MaxPool2d(2)),
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
    C("subsampling2d", lambda d: gpucnn.Subsampling2d(3, 2, dtype=d), ((2, 3, 6, 4),)),
    # ---------------------------------------------------------------- activations
    C("relu", lambda d: gpucnn.ReLU(), ((3, 7),), "kinked", torch=lambda t: t.nn.ReLU()),
    C("relu_4d", lambda d: gpucnn.ReLU(), ((2, 3, 4, 5),), "kinked", torch=lambda t: t.nn.ReLU()),
    C("leaky_relu", lambda d: gpucnn.LeakyReLU(0.2), ((3, 7),), "kinked", torch=lambda t: t.nn.LeakyReLU(0.2)),
    C("sigmoid", lambda d: gpucnn.Sigmoid(), ((3, 7),), torch=lambda t: t.nn.Sigmoid()),
    C("tanh", lambda d: gpucnn.Tanh(), ((3, 7),), torch=lambda t: t.nn.Tanh()),
    C("tanh_lecun", lambda d: gpucnn.Tanh.lecun(), ((3, 7),)),
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

BY_NAME = {case.name: case for case in OPS}
assert len(BY_NAME) == len(OPS), "two op-table entries share a name"
