"""Pooling layers: max, average, L_p, global average, and LeNet-5's trainable subsampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.shapes import pair, pool_output_size
from .module import Module, Parameter, as_float_dtype


class _Pool2d(Module):
    """Shared argument handling and checks; x: (N, C, H, W) -> y: (N, C, OH, OW)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)
        self.ceil_mode = bool(ceil_mode)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{name}: kernel_size and stride must be >= 1, got {self.kernel_size}, {self.stride}")
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            # PyTorch's rule: a window must never lie wholly in the padding
            raise ValueError(f"{name}: padding must be between 0 and half the kernel size "
                             f"{self.kernel_size}, got {self.padding}")
        self._x_shape: tuple[int, ...] | None = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        n, c, h, w = input_shape
        return (n, c, pool_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.ceil_mode),
                pool_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.ceil_mode))

    def _check(self, x: Any, channels: int | None = None) -> None:
        self._check_input(x, 4, channels)
        self.check_input_shape(tuple(x.shape))

    def check_input_shape(self, shape: tuple[int, ...], what: str = "input") -> None:
        """Reject an input shape no window fits in, and remember the shape for the backward pass."""
        _, _, oh, ow = self.output_shape(shape)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self._layer_name()}: kernel {self.kernel_size} is larger than the padded input "
                             f"for {what} shape {tuple(shape)} (padding {self.padding})")
        self._x_shape = tuple(shape)

    def _require_forward(self) -> None:
        if self._x_shape is None:
            raise RuntimeError(f"{self._layer_name()}: backward called before forward")


class MaxPool2d(_Pool2d):
    """Max pooling; windows may overlap. NaN propagates: a window holding NaN outputs NaN and
    routes its gradient to the first NaN. Padding is -inf, so it never wins."""

    def forward(self, x: Any) -> Any:
        self._check(x)
        self._y, self._argmax = self.backend.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                                               self.ceil_mode)
        return self._y

    def backward(self, dy: Any) -> Any:
        self._require_forward()
        return self.backend.maxpool2d_backward(dy, self._argmax, self._x_shape, self.kernel_size,
                                               self.stride, self.padding)

    def backward_through_relu(self, dy: Any) -> Any:
        """backward of ReLU -> MaxPool2d in one step. Each window routes its gradient to its
        argmax, where the ReLU's output is this layer's output, so the ReLU mask can be applied
        to the pooled gradient (a quarter of the size for 2x2 windows) instead of the input's:
        exactly the same result, one full-size pass less."""
        self._require_forward()
        return self.backward(self.backend.relu_backward(dy, self._y))


class AvgPool2d(_Pool2d):
    """Average pooling; ``count_include_pad`` decides whether zero padding counts in the divisor."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Any) -> Any:
        self._check(x)
        return self.backend.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                              self.count_include_pad)

    def backward(self, dy: Any) -> Any:
        self._require_forward()
        return self.backend.avgpool2d_backward(dy, self._x_shape, self.kernel_size, self.stride, self.padding,
                                               self.ceil_mode, self.count_include_pad)


class LPPool2d(_Pool2d):
    """Power-average pooling, y = (sum over the window of x^p)^(1/p); p=2 is L2-norm pooling.

    As in PyTorch there is no padding, and a ceil-mode partial window is scaled to a full one.
    """

    def __init__(self, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, 0, ceil_mode)
        if not float(norm_type) > 0:
            raise ValueError(f"LPPool2d: norm_type must be > 0, got {norm_type!r}")
        self.norm_type = float(norm_type)

    def forward(self, x: Any) -> Any:
        self._check(x)
        self._x = x
        self._y = self.backend.lppool2d_forward(x, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)
        return self._y

    def backward(self, dy: Any) -> Any:
        self._require_forward()
        return self.backend.lppool2d_backward(dy, self._x, self._y, self.norm_type, self.kernel_size,
                                              self.stride, self.ceil_mode)


class GlobalAvgPool2d(Module):
    """Mean over each whole map: x: (N, C, H, W) -> y: (N, C, 1, 1)."""

    def forward(self, x: Any) -> Any:
        self._check_input(x, 4)
        self._x_shape = tuple(x.shape)
        h, w = x.shape[2:]
        return self.backend.avgpool2d_forward(x, (h, w), (h, w), (0, 0), False, True)

    def backward(self, dy: Any) -> Any:
        h, w = self._x_shape[2:]
        return self.backend.avgpool2d_backward(dy, self._x_shape, (h, w), (h, w), (0, 0), False, True)


class Subsampling2d(Module):
    """LeNet-5's trainable subsampling (S2, S4): each map sums a non-overlapping window, then
    scales by one trainable coefficient and adds one trainable bias.

    y[n, c] = coefficient[c] * sum(window) + bias[c];  2 parameters per map.
    """

    def __init__(self, channels: int, kernel_size: int = 2, dtype: Any = np.float32) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = pair(kernel_size, "kernel_size", "Subsampling2d")
        dtype = as_float_dtype(dtype, "Subsampling2d")
        area = self.kernel_size[0] * self.kernel_size[1]
        # start as a plain average so the first activations keep their scale
        self.coefficient = Parameter(self.backend.asarray(np.full(channels, 1.0 / area), dtype=dtype))
        self.bias = Parameter(self.backend.asarray(np.zeros(channels), dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, 4, self.channels)
        area = self.kernel_size[0] * self.kernel_size[1]
        self._x_shape = tuple(x.shape)
        self._sums = self.backend.avgpool2d_forward(x, self.kernel_size, self.kernel_size, (0, 0), False, True)
        self._sums *= area
        c = self.channels
        return self._sums * self.coefficient.data.reshape(1, c, 1, 1) + self.bias.data.reshape(1, c, 1, 1)

    def backward(self, dy: Any) -> Any:
        c = self.channels
        area = self.kernel_size[0] * self.kernel_size[1]
        self.coefficient.accumulate((dy * self._sums).sum(axis=(0, 2, 3)))
        self.bias.accumulate(dy.sum(axis=(0, 2, 3)))
        scaled = dy * (self.coefficient.data.reshape(1, c, 1, 1) * area)
        return self.backend.avgpool2d_backward(scaled, self._x_shape, self.kernel_size, self.kernel_size,
                                               (0, 0), False, True)
