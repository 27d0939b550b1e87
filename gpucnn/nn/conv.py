"""Convolution layers: Conv2d (with groups, dilation and LeNet-5 connection tables), Conv1d and ConvTranspose2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functions.checks import positive_int, positive_pair
from ..functions.conv2d import (
    conv1d_as_2d,
    conv1d_spec,
    conv_spec,
    expand_connections,
    run_conv2d,
    run_conv2d_relu_max_pool2d,
)
from ..functions.conv_transpose2d import conv_transpose_spec, run_conv_transpose2d
from ..functions.pad import run_pad
from ..init import DEFAULT_INIT, initial_bias, initialize
from ..shapes import conv_output_size
from .module import Module, as_float_dtype, new_parameter

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]

Padding = int | tuple[int, int] | str
#: padding_mode -> F.pad's mode (None: the convolution's own zero padding)
PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _check_channels(in_channels: int, out_channels: int, groups: int, name: str) -> None:
    """Conv2d's and ConvTranspose2d's channel counts: positive, and each a multiple of groups."""
    for label, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        positive_int(value, label, name)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                         f"must both be divisible by groups ({groups})")


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch).

    x: (N, C, H, W) -> y: (N, K, OH, OW), OH = floor((H + pt + pb - d*(KH-1) - 1) / s) + 1.

    ``connection`` is a boolean (in_channels, out_channels) table saying which input maps feed
    each output map (LeNet-5's C3). Only connected filters are parameters: the weight is stored
    packed as (connections, KH, KW) and expanded to a dense, zero-filled filter bank for the op.
    ``init`` names the weight initialiser; the default is PyTorch's. A ``padding_mode`` other than
    'zeros' pads the input by that mode first (as PyTorch does) and convolves it without padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: Padding = 0, dilation: int | tuple[int, int] = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", connection: Any = None,
                 init: Any = DEFAULT_INIT, rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        name = type(self).__name__
        _check_channels(in_channels, out_channels, groups, name)
        if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.in_channels, self.out_channels = in_channels, out_channels
        self.spec = self._spec(kernel_size, stride, padding, dilation, groups)
        self.kernel_size = self._kernel_pair(kernel_size)
        self.dtype = as_float_dtype(dtype, name)
        self.connection = None
        weight_shape, fan_in = self._weight_layout(connection)
        self.weight = new_parameter(self, initialize(init, weight_shape, fan_in, self._fan_out(), rng, name),
                                    self.dtype)
        self.bias = new_parameter(self, initial_bias(init, out_channels, fan_in, rng), self.dtype) if bias else None
        self._moved(self.backend)

    # the (1, k) conv behind Conv1d overrides these three
    def _spec(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
        return conv_spec(self._kernel_pair(kernel_size), stride, padding, dilation, groups, type(self).__name__)

    def _kernel_pair(self, kernel_size: Any) -> tuple[int, int]:
        return positive_pair(kernel_size, "kernel_size", type(self).__name__)

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.spec.groups) + self.kernel_size

    def _weight_layout(self, connection: Any) -> tuple[tuple[int, ...], int]:
        kh, kw = self.kernel_size
        if connection is None:
            return self._dense_shape(), self.in_channels // self.spec.groups * kh * kw
        name = type(self).__name__
        table = np.asarray(connection, dtype=bool)
        if self.spec.groups != 1:
            raise ValueError(f"{name}: a connection table needs groups=1, got groups={self.spec.groups}")
        if table.shape != (self.in_channels, self.out_channels):
            raise ValueError(f"{name}: connection table must have shape (in_channels, out_channels) = "
                             f"({self.in_channels}, {self.out_channels}), got {table.shape}")
        if not table.any(axis=0).all():
            raise ValueError(f"{name}: every output map needs at least one input in the connection table")
        self.connection = table
        # (output map, input map) of each connected filter, in row-major order of table.T
        self._conn_out, self._conn_in = np.nonzero(table.T)
        return (len(self._conn_out), kh, kw), int(round(table.sum(axis=0).mean())) * kh * kw

    def _fan_out(self) -> int:
        kh, kw = self.kernel_size
        if self.connection is not None:
            return int(round(self.connection.sum(axis=1).mean())) * kh * kw
        return self.out_channels * kh * kw // self.spec.groups

    def _moved(self, target: Any) -> None:
        if self.connection is not None:
            self._conn_index = (target.asarray(self._conn_out), target.asarray(self._conn_in))

    @property
    def stride(self) -> tuple[int, int]:
        return self.spec.stride

    @property
    def padding(self) -> tuple[int, int, int, int]:
        return self.spec.padding

    @property
    def dilation(self) -> tuple[int, int]:
        return self.spec.dilation

    @property
    def groups(self) -> int:
        return self.spec.groups

    def extra_repr(self) -> str:
        extra = f", connections={len(self._conn_out)}" if self.connection is not None else ""
        extra += f", padding_mode={self.padding_mode!r}" if self.padding_mode != "zeros" else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}{extra}")

    def dense_weight(self) -> Any:
        """The (K, C/groups, KH, KW) filter bank the op runs with (a Tensor in the graph)."""
        if self.connection is None:
            return self.weight
        return expand_connections(self.weight, self._conn_index, self._dense_shape())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        n, _, h, w = input_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self.padding
        return (n, self.out_channels, conv_output_size(h, kh, sh, pt, pb, dh), conv_output_size(w, kw, sw, pl, pr, dw))

    def _mode_padded(self, x: Any) -> tuple[Any, Any]:
        """(input, spec) the convolution runs on: with padding_mode 'zeros' x and the spec; otherwise x
        padded by that mode (PyTorch's _reversed_padding_repeated_twice) and the spec without padding."""
        mode = PADDING_MODES[self.padding_mode]
        if mode is None:
            return x, self.spec
        pt, pb, pl, pr = self.spec.padding
        pads = (pl, pr) if isinstance(self, Conv1d) else (pl, pr, pt, pb)
        return run_pad(x, pads, mode, 0.0, self._layer_name()), self.spec._replace(padding=(0, 0, 0, 0))

    # x: (N, C, H, W) -> y: (N, K, OH, OW); relu=True applies max(y, 0) in the same op (Sequential
    # does this for a Conv2d followed by ReLU, saving the activation's pass over memory)
    def forward(self, x: Any, relu: bool = False) -> Any:
        # conv2d checks rank, channels, dtype and size itself, naming this layer
        x, spec = self._mode_padded(x)
        return run_conv2d(x, self.dense_weight(), self.bias, spec, self._layer_name(), relu)

    # x: (N, C, H, W) -> y: (N, K, PH, PW)
    def forward_relu_maxpool(self, x: Any, pool: Any) -> Any:
        """This layer, a ReLU and ``pool`` (a MaxPool2d) as one op; Sequential runs the three this
        way. Output and gradients are bit for bit those of the three layers run one by one."""
        x, spec = self._mode_padded(x)
        return run_conv2d_relu_max_pool2d(x, self.dense_weight(), self.bias, spec, pool.spec,
                                          self._layer_name())


class Conv1d(Conv2d):
    """1-D convolution over signals: x: (N, C, L) -> y: (N, K, OL), weight (K, C/groups, KL) as in
    PyTorch, run as a (1, KL) Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", init: Any = DEFAULT_INIT, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
            raise TypeError(f"Conv1d: kernel_size must be an int, got {kernel_size!r}")
        positive_int(kernel_size, "kernel_size", "Conv1d")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, None, init, rng, dtype)

    def _spec(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
        return conv1d_spec(kernel_size, stride, padding, dilation, groups, "Conv1d")

    def _kernel_pair(self, kernel_size: Any) -> tuple[int, int]:
        return (1, kernel_size)

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.spec.groups, self.kernel_size[1])

    # x: (N, C, L) -> y: (N, K, OL)
    def forward(self, x: Any) -> Any:
        self._check_input(x, 3, self.in_channels, layout="(N, C, L)")
        x, spec = self._mode_padded(x)
        return conv1d_as_2d(x, self.weight, self.bias, spec, "Conv1d")


class ConvTranspose2d(Module):
    """2-D transposed convolution (PyTorch's ConvTranspose2d): the gradient of a Conv2d with respect to
    its input, x: (N, C, H, W) -> y: (N, K, OH, OW), OH = (H-1)*s - 2p + d*(KH-1) + output_padding + 1.

    The weight is (in_channels, out_channels/groups, KH, KW), initialised as PyTorch's (its fan-in is
    out_channels/groups * KH * KW); only padding_mode 'zeros' is supported, as in PyTorch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 output_padding: int | tuple[int, int] = 0, groups: int = 1, bias: bool = True,
                 dilation: int | tuple[int, int] = 1, padding_mode: str = "zeros", init: Any = DEFAULT_INIT,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        name = type(self).__name__
        _check_channels(in_channels, out_channels, groups, name)
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode 'zeros' is supported, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.spec = conv_transpose_spec(stride, padding, output_padding, dilation, groups, name)
        self.dtype = as_float_dtype(dtype, name)
        kh, kw = self.kernel_size
        fan_in, fan_out = out_channels // groups * kh * kw, in_channels * kh * kw
        shape = (in_channels, out_channels // groups, kh, kw)
        self.weight = new_parameter(self, initialize(init, shape, fan_in, fan_out, rng, name), self.dtype)
        self.bias = new_parameter(self, initial_bias(init, out_channels, fan_in, rng), self.dtype) if bias else None

    @property
    def stride(self) -> tuple[int, int]:
        return self.spec.conv.stride

    @property
    def padding(self) -> tuple[int, int]:
        return (self.spec.conv.padding[0], self.spec.conv.padding[2])

    @property
    def output_padding(self) -> tuple[int, int]:
        return self.spec.output_padding

    @property
    def dilation(self) -> tuple[int, int]:
        return self.spec.conv.dilation

    @property
    def groups(self) -> int:
        return self.spec.conv.groups

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, dilation={self.dilation}, "
                f"groups={self.groups}")

    # x: (N, C, H, W) -> y: (N, K, OH, OW)
    def forward(self, x: Any) -> Any:
        return run_conv_transpose2d(x, self.weight, self.bias, self.spec, self._layer_name())
