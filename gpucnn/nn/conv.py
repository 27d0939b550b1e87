"""Convolution layers: Conv2d (with groups, dilation and LeNet-5 connection tables) and Conv1d."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.shapes import conv_output_size, pair
from ..init import initialize
from .module import Module, Parameter, as_float_dtype

Padding = int | tuple[int, int] | str


def resolve_padding(padding: Padding, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], owner: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, or 'valid' / 'same' / 'full'.

    'valid' (narrow) pads nothing; 'same' keeps the size at stride 1, putting the odd pixel of
    an even kernel at the bottom/right as PyTorch does; 'full' (wide) pads d*(k-1) on each side
    so every partial overlap is computed and the output is i + d*(k-1).
    """
    if isinstance(padding, str):
        spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' needs stride 1, got stride {stride}")
            return (spans[0] // 2, spans[0] - spans[0] // 2, spans[1] // 2, spans[1] - spans[1] // 2)
        if padding == "full":
            return (spans[0], spans[0], spans[1], spans[1])
        raise ValueError(f"{owner}: padding must be an int, a pair, 'valid', 'same' or 'full', got {padding!r}")
    ph, pw = pair(padding, "padding", owner)
    if ph < 0 or pw < 0:
        raise ValueError(f"{owner}: padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


def _positive_pair(value: Any, name: str, owner: str) -> tuple[int, int]:
    result = pair(value, name, owner)
    if min(result) < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {value!r}")
    return result


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch).

    x: (N, C, H, W) -> y: (N, K, OH, OW), OH = floor((H + pt + pb - d*(KH-1) - 1) / s) + 1.

    ``connection`` is a boolean (in_channels, out_channels) table saying which input maps feed
    each output map (LeNet-5's C3). Only connected filters are parameters: the weight is stored
    packed as (connections, KH, KW) and expanded to a dense, zero-filled filter bank for the op.
    """

    can_skip_input_grad = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: Padding = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 connection: Any = None, init: Any = "kaiming", rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        name = type(self).__name__
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {label} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _positive_pair(kernel_size, "kernel_size", name)
        self.stride = _positive_pair(stride, "stride", name)
        self.dilation = _positive_pair(dilation, "dilation", name)
        self.padding = resolve_padding(padding, self.kernel_size, self.stride, self.dilation, name)
        self.dtype = as_float_dtype(dtype, name)
        kh, kw = self.kernel_size
        dense_shape = (out_channels, in_channels // groups, kh, kw)

        if connection is not None:
            table = np.asarray(connection, dtype=bool)
            if groups != 1:
                raise ValueError(f"{name}: a connection table needs groups=1, got groups={groups}")
            if table.shape != (in_channels, out_channels):
                raise ValueError(f"{name}: connection table must have shape (in_channels, out_channels) = "
                                 f"({in_channels}, {out_channels}), got {table.shape}")
            if not table.any(axis=0).all():
                raise ValueError(f"{name}: every output map needs at least one input in the connection table")
            self.connection = table
            # (output map, input map) of each connected filter, in row-major order of table.T
            self._conn_out, self._conn_in = np.nonzero(table.T)
            fan_in = int(round(table.sum(axis=0).mean())) * kh * kw
            fan_out = int(round(table.sum(axis=1).mean())) * kh * kw
            shape = (len(self._conn_out), kh, kw)
        else:
            self.connection = None
            fan_in, fan_out = dense_shape[1] * kh * kw, out_channels * kh * kw // groups
            shape = dense_shape
        self.weight = Parameter(self.backend.asarray(
            initialize(init, shape, fan_in, fan_out, rng, name), dtype=self.dtype))
        self.bias = Parameter(self.backend.asarray(np.zeros(out_channels), dtype=self.dtype)) if bias else None
        self._x: Any = None
        self._pool_state: Any = None
        self._moved(self.backend)

    def _moved(self, target: Any) -> None:
        if self.connection is not None:
            self._conn_index = (target.asarray(self._conn_out), target.asarray(self._conn_in))

    def extra_repr(self) -> str:
        extra = f", connections={len(self._conn_out)}" if self.connection is not None else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}{extra}")

    def dense_weight(self) -> Any:
        """The (K, C/groups, KH, KW) filter bank the op runs with."""
        w = self.weight.data
        if self.connection is None:
            return w
        dense = self.backend.xp.zeros((self.out_channels, self.in_channels) + self.kernel_size, dtype=w.dtype)
        dense[self._conn_index] = w
        return dense

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        n, _, h, w = input_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pt, pb, pl, pr = self.padding
        return (n, self.out_channels, conv_output_size(h, kh, sh, pt, pb, dh),
                conv_output_size(w, kw, sw, pl, pr, dw))

    def _check_fits(self, x: Any) -> None:
        pt, pb, pl, pr = self.padding
        span_h = self.dilation[0] * (self.kernel_size[0] - 1) + 1
        span_w = self.dilation[1] * (self.kernel_size[1] - 1) + 1
        padded = (x.shape[2] + pt + pb, x.shape[3] + pl + pr)
        if span_h > padded[0] or span_w > padded[1]:
            raise ValueError(f"{self._layer_name()}: kernel of extent ({span_h}, {span_w}) is larger than the "
                             f"padded input ({padded[0]}, {padded[1]}) for input shape {tuple(x.shape)}")

    def _accept(self, x: Any) -> None:
        self._check_input(x, 4, self.in_channels)
        self._check_fits(x)
        if x.dtype != self.weight.data.dtype:
            raise TypeError(f"{self._layer_name()}: input dtype {x.dtype} differs from weight dtype "
                            f"{self.weight.data.dtype}")
        self._x = x

    def _bias_data(self) -> Any:
        return None if self.bias is None else self.bias.data

    def _conv_args(self) -> tuple[Any, ...]:
        return (self.stride, self.padding, self.dilation, self.groups)

    # x: (N, C, H, W) -> y: (N, K, OH, OW); relu=True applies max(y, 0) in the same op (Sequential
    # does this for a Conv2d followed by ReLU, saving the activation's pass over memory)
    def forward(self, x: Any, relu: bool = False) -> Any:
        self._accept(x)
        return self.backend.conv2d_forward(x, self.dense_weight(), self._bias_data(), *self._conv_args(),
                                           relu=relu, keep_for_backward=self.training)

    # x: (N, C, H, W) -> y: (N, K, PH, PW)
    def forward_relu_maxpool(self, x: Any, relu: Any, pool: Any) -> Any:
        """This layer, then ``relu`` (a ReLU) and ``pool`` (a MaxPool2d), as one op: Sequential runs
        the three this way. The result and, through ``backward_relu_maxpool``, the gradients are
        bit for bit those of the three layers run one by one."""
        self._accept(x)
        pool.check_input_shape(self.output_shape(x.shape), self._layer_name() + " output")
        y, self._pool_state = self.backend.conv2d_relu_maxpool2d_forward(
            x, self.dense_weight(), self._bias_data(), *self._conv_args(), pool.kernel_size, pool.stride,
            pool.padding, pool.ceil_mode, keep_for_backward=self.training)
        relu.adopt_output(None)  # its output never existed; a stale one must not be used
        return y

    # dy: (N, K, PH, PW) -> dx: (N, C, H, W), or None when need_input_grad is False
    def backward_relu_maxpool(self, dy: Any, pool: Any, need_input_grad: bool = True) -> Any:
        if self._x is None or self._pool_state is None:
            raise RuntimeError(f"{self._layer_name()}: backward called before a training-mode forward")
        dx, dw, db = self.backend.conv2d_relu_maxpool2d_backward(
            dy, self._pool_state, self._x, self.dense_weight(), *self._conv_args(), pool.kernel_size,
            pool.stride, pool.padding, need_input_grad=need_input_grad)
        self._pool_state = None  # its im2col matrices are large: hold them for one backward only
        return self._accumulate(dx, dw, db)

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), or None when need_input_grad is False (a first layer)
    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._x is None:
            raise RuntimeError(f"{self._layer_name()}: backward called before forward")
        dx, dw, db = self.backend.conv2d_backward(dy, self._x, self.dense_weight(), *self._conv_args(),
                                                  need_input_grad=need_input_grad)
        return self._accumulate(dx, dw, db)

    def _accumulate(self, dx: Any, dw: Any, db: Any) -> Any:
        if self.connection is not None:
            dw = dw[self._conn_index]
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx


class Conv1d(Conv2d):
    """1-D convolution over signals: x: (N, C, L) -> y: (N, K, OL), run as a (1, k) Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 init: Any = "kaiming", rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        for label, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Conv1d: {label} must be an int, got {value!r}")
        if isinstance(padding, str):
            padding_2d: Padding = padding
        elif isinstance(padding, int) and not isinstance(padding, bool):
            padding_2d = (0, padding)
        else:
            raise TypeError(f"Conv1d: padding must be an int, 'valid', 'same' or 'full', got {padding!r}")
        super().__init__(in_channels, out_channels, (1, kernel_size), (1, stride), padding_2d,
                         (1, dilation), groups, bias, None, init, rng, dtype)
        if isinstance(padding, str):  # the height axis has size 1: never pad it
            self.padding = (0, 0) + self.padding[2:]

    # x: (N, C, L) -> y: (N, K, OL)
    def forward(self, x: Any) -> Any:
        self._check_input(x, 3, self.in_channels, layout="(N, C, L)")
        y = super().forward(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]))
        return y.reshape(y.shape[0], y.shape[1], y.shape[3])

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        dx = super().backward(dy.reshape(dy.shape[0], dy.shape[1], 1, dy.shape[2]), need_input_grad)
        return None if dx is None else dx.reshape(dx.shape[0], dx.shape[1], dx.shape[3])
