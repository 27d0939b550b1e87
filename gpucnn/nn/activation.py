"""Elementwise activations (any shape), and softmax layers."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .module import Module

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["LeakyReLU", "LogSoftmax", "ReLU", "SiLU", "Sigmoid", "Softmax", "Tanh"]


class _Activation(Module):
    """Checks the input first, so a bad one is refused naming the layer called (``ReLU``), not the
    function it runs (``relu``)."""

    def _checked(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, ...)")
        return x


class ReLU(_Activation):
    """max(x, 0)."""

    def forward(self, x: Any) -> Any:
        return F.relu(self._checked(x))


class LeakyReLU(_Activation):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: Any) -> Any:
        return F.leaky_relu(self._checked(x), self.negative_slope)


class Sigmoid(_Activation):
    def forward(self, x: Any) -> Any:
        return F.sigmoid(self._checked(x))


class SiLU(_Activation):
    """x * sigmoid(x) (swish: EfficientNet, MobileNetV3's heads). ``inplace`` as in PyTorch's signature:
    accepted, and the output is a new tensor either way."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def forward(self, x: Any) -> Any:
        return F.silu(self._checked(x))


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
        x = self._checked(x)
        y = F.tanh(x * self.inner if self.inner != 1.0 else x)
        return y * self.outer if self.outer != 1.0 else y


class Softmax(_Activation):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Any) -> Any:
        return F.softmax(self._checked(x), self.dim)


class LogSoftmax(Softmax):
    def forward(self, x: Any) -> Any:
        return F.log_softmax(self._checked(x), self.dim)
