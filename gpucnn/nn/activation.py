"""Elementwise activations (any shape)."""

from __future__ import annotations

from typing import Any

from .module import Module


class _Activation(Module):
    def _check(self, x: Any) -> None:
        # any rank from 1 up: check the array type, dtype and batch, not the rank
        self._check_input(x, max(getattr(x, "ndim", 1), 1), layout="(N, ...)")


class ReLU(_Activation):
    """max(x, 0); backward uses only the saved output."""

    def forward(self, x: Any) -> Any:
        self._check(x)
        self._y = self.backend.relu_forward(x)
        return self._y

    def backward(self, dy: Any) -> Any:
        return self.backend.relu_backward(dy, self._y)

    def adopt_output(self, y: Any) -> Any:
        """Take ``y``, already rectified by the layer before (a fused conv + ReLU), as this
        layer's output; backward needs only the output."""
        self._y = y
        return y


class LeakyReLU(_Activation):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: Any) -> Any:
        self._check(x)
        self._x = x
        return self.backend.leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy: Any) -> Any:
        return self.backend.leaky_relu_backward(dy, self._x, self.negative_slope)


class Sigmoid(_Activation):
    def forward(self, x: Any) -> Any:
        self._check(x)
        self._y = self.backend.sigmoid_forward(x)
        return self._y

    def backward(self, dy: Any) -> Any:
        return self.backend.sigmoid_backward(dy, self._y)


class Tanh(_Activation):
    """``outer * tanh(inner * x)``; the defaults give plain tanh, ``Tanh.lecun()`` LeNet-5's
    1.7159 * tanh(2x/3), whose gain keeps unit-variance inputs at unit variance."""

    def __init__(self, outer: float = 1.0, inner: float = 1.0) -> None:
        super().__init__()
        self.outer, self.inner = float(outer), float(inner)

    @classmethod
    def lecun(cls) -> Tanh:
        return cls(1.7159, 2.0 / 3.0)

    def extra_repr(self) -> str:
        return "" if (self.outer, self.inner) == (1.0, 1.0) else f"outer={self.outer}, inner={self.inner}"

    def forward(self, x: Any) -> Any:
        self._check(x)
        self._t = self.backend.tanh_forward(x * x.dtype.type(self.inner) if self.inner != 1.0 else x)
        return self._t * self._t.dtype.type(self.outer) if self.outer != 1.0 else self._t

    def backward(self, dy: Any) -> Any:
        scale = self.outer * self.inner
        return self.backend.tanh_backward(dy * dy.dtype.type(scale) if scale != 1.0 else dy, self._t)
