"""Padding layers, PyTorch's: ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d, CircularPad2d.

x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right); ``padding`` is an int (every side) or
(left, right, top, bottom), as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from ..functions.pad import pad_tuple, run_pad
from .module import Module

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["CircularPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d", "ZeroPad2d"]


class _Pad2d(Module):
    mode = "constant"

    def __init__(self, padding: Any, value: float = 0.0) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(padding, int) and not isinstance(padding, bool):
            padding = (padding,) * 4
        self.padding = pad_tuple(padding, name, lengths=(4,))
        if self.mode != "constant" and min(self.padding) < 0:
            raise ValueError(f"{name}: padding must be >= 0 (negative padding crops in constant mode only), "
                             f"got {self.padding!r}")
        self.value = float(value)

    def extra_repr(self) -> str:
        return f"{self.padding}, value={self.value}" if type(self) is ConstantPad2d else f"{self.padding}"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        n, c, h, w = input_shape
        left, right, top, bottom = self.padding
        return (n, c, h + top + bottom, w + left + right)

    # x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right)
    def forward(self, x: Any) -> Any:
        self._check_input(x, 4)
        return run_pad(x, self.padding, self.mode, self.value, self._layer_name())


class ConstantPad2d(_Pad2d):
    """Pads with ``value``; a negative padding crops."""

    def __init__(self, padding: Any, value: float) -> None:
        super().__init__(padding, value)


class ZeroPad2d(_Pad2d):
    """Pads with zeros; a negative padding crops."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad2d(_Pad2d):
    """Pads with the input mirrored at its edges, the edge itself not repeated (padding < the input size)."""

    mode = "reflect"

    def __init__(self, padding: Any) -> None:
        super().__init__(padding)


class ReplicationPad2d(_Pad2d):
    """Pads with copies of the edge elements."""

    mode = "replicate"

    def __init__(self, padding: Any) -> None:
        super().__init__(padding)


class CircularPad2d(_Pad2d):
    """Pads with the input wrapped around (padding <= the input size)."""

    mode = "circular"

    def __init__(self, padding: Any) -> None:
        super().__init__(padding)
