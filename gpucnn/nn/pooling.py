"""Pooling layers: max (with indices), max unpooling, average, L_p, global and adaptive average and max,
and LeNet-5's trainable subsampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functions.avgpool2d import run_adaptive_avg_pool2d, run_avg_pool2d
from ..functions.checks import positive_int, positive_pair
from ..functions.lppool2d import run_lp_pool2d
from ..functions.maxpool2d import (
    run_adaptive_max_pool2d,
    run_max_pool2d,
    run_max_pool2d_with_indices,
    run_max_unpool2d,
    run_relu_max_pool2d,
    unpool_spec,
)
from ..functions.pooling import check_unsupported_pool_options, pool_spec
from ..shapes import pool_output_size
from .module import Module, as_float_dtype, new_parameter

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "LPPool2d", "MaxPool2d",
           "MaxUnpool2d", "Subsampling2d"]


class _Pool2d(Module):
    """Shared argument handling; x: (N, C, H, W) -> y: (N, C, OH, OW)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        self.spec = pool_spec(kernel_size, stride, padding, ceil_mode, type(self).__name__)

    kernel_size = property(lambda self: self.spec.kernel)
    stride = property(lambda self: self.spec.stride)
    padding = property(lambda self: self.spec.padding)
    ceil_mode = property(lambda self: self.spec.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        n, c, h, w = input_shape
        k, s, p, ceil = self.spec
        return (n, c, pool_output_size(h, k[0], s[0], p[0], ceil), pool_output_size(w, k[1], s[1], p[1], ceil))


class MaxPool2d(_Pool2d):
    """Max pooling; windows may overlap. NaN propagates: a window holding NaN outputs NaN and
    routes its gradient to the first NaN. Padding is -inf, so it never wins. With ``return_indices``
    it returns ``(y, indices)``: int64, each the winner's index into its (n, c) input plane, as in
    PyTorch (MaxUnpool2d's input); Sequential then fuses no ReLU into it."""

    return_indices = False  # the class default: a layer saved before return_indices existed reads it

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        check_unsupported_pool_options("MaxPool2d", dilation=dilation)
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.return_indices = bool(return_indices)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", return_indices=True" if self.return_indices else "")

    def forward(self, x: Any) -> Any:
        if self.return_indices:
            return run_max_pool2d_with_indices(x, self.spec, self._layer_name())
        return run_max_pool2d(x, self.spec, self._layer_name())

    def forward_after_relu(self, x: Any) -> Any:
        """ReLU then this pooling, with one backward step; Sequential runs ReLU -> MaxPool2d this way."""
        return run_relu_max_pool2d(x, self.spec, self._layer_name())


class AvgPool2d(_Pool2d):
    """Average pooling; ``count_include_pad`` decides whether zero padding counts in the divisor."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: Any = None) -> None:
        check_unsupported_pool_options("AvgPool2d", divisor_override=divisor_override)
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Any) -> Any:
        return run_avg_pool2d(x, self.spec, self.count_include_pad, self._layer_name())


class LPPool2d(_Pool2d):
    """Power-average pooling, y = (sum over the window of x^p)^(1/p); p=2 is L2-norm pooling and
    p=inf the window max of |x|. As in PyTorch there is no padding, and a ceil-mode partial window
    is scaled to a full one."""

    def __init__(self, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, 0, ceil_mode)
        if not float(norm_type) > 0:
            raise ValueError(f"LPPool2d: norm_type must be > 0 (or inf), got {norm_type!r}")
        self.norm_type = float(norm_type)

    def extra_repr(self) -> str:
        return f"norm_type={self.norm_type}, " + super().extra_repr()

    def forward(self, x: Any) -> Any:
        return run_lp_pool2d(x, self.norm_type, self.spec, self._layer_name())


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (PyTorch's adaptive windows)."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        sizes = output_size if isinstance(output_size, (tuple, list)) and len(output_size) == 2 else (output_size,)
        for size in sizes:  # None keeps that axis's input size, as in PyTorch
            if size is not None:
                positive_int(size, "output_size", type(self).__name__)
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x: Any) -> Any:
        return run_adaptive_avg_pool2d(x, self.output_size, self._layer_name())


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed output size over PyTorch's adaptive windows (which overlap where the
    size does not divide the input's); ``(y, indices)`` with ``return_indices``, as MaxPool2d."""

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        sizes = output_size if isinstance(output_size, (tuple, list)) and len(output_size) == 2 else (output_size,)
        for size in sizes:  # None keeps that axis's input size, as in PyTorch
            if size is not None:
                positive_int(size, "output_size", type(self).__name__)
        self.output_size, self.return_indices = output_size, bool(return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}" + (", return_indices=True" if self.return_indices else "")

    def forward(self, x: Any) -> Any:
        return run_adaptive_max_pool2d(x, self.output_size, self.return_indices, self._layer_name())


class MaxUnpool2d(Module):
    """The inverse of MaxPool2d(return_indices=True): ``forward(x, indices, output_size=None)`` gives
    zeros of the unpooled size, (H - 1) * stride - 2 * padding + kernel_size per axis (or
    ``output_size``, within stride of it), with each input at its index. Of a repeated index
    (overlapping windows) the last input in input order wins, on every backend."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = unpool_spec(kernel_size, stride, padding,
                                                                  type(self).__name__)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: Any, indices: Any, output_size: Any = None) -> Any:
        return run_max_unpool2d(x, indices, (self.kernel_size, self.stride, self.padding), output_size,
                                self._layer_name())


class GlobalAvgPool2d(AdaptiveAvgPool2d):
    """Mean over each whole map: x: (N, C, H, W) -> y: (N, C, 1, 1)."""

    def __init__(self) -> None:
        super().__init__(1)


class Subsampling2d(Module):
    """LeNet-5's trainable subsampling (S2, S4): each map sums a non-overlapping window, then
    scales by one trainable coefficient and adds one trainable bias.

    y[n, c] = coefficient[c] * sum(window) + bias[c];  2 parameters per map.
    """

    def __init__(self, channels: int, kernel_size: int = 2, dtype: Any = np.float32) -> None:
        super().__init__()
        self.channels = positive_int(channels, "channels", "Subsampling2d")
        self.kernel_size = positive_pair(kernel_size, "kernel_size", "Subsampling2d")
        dtype = as_float_dtype(dtype, "Subsampling2d")
        area = self.kernel_size[0] * self.kernel_size[1]
        # start as a plain average so the first activations keep their scale
        self.coefficient = new_parameter(self, np.full(channels, 1.0 / area), dtype)
        self.bias = new_parameter(self, np.zeros(channels), dtype)
        self.spec = pool_spec(self.kernel_size, None, 0, False, "Subsampling2d")

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, 4, self.channels)
        c, area = self.channels, self.kernel_size[0] * self.kernel_size[1]
        sums = run_avg_pool2d(x, self.spec, True, self._layer_name()) * float(area)
        return sums * self.coefficient.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)
