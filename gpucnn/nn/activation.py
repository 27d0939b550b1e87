"""Elementwise activations (any shape), and softmax layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..functions.activations import gelu_approximate, softplus_beta
from ..functions.checks import positive_int
from .module import Module, as_float_dtype, new_parameter

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["ELU", "GELU", "Hardsigmoid", "Hardswish", "LeakyReLU", "LogSoftmax", "Mish", "PReLU", "ReLU", "ReLU6",
           "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh"]


class _Activation(Module):
    """Checks the input first, so a bad one is refused naming the layer called (``ReLU``), not the
    function it runs (``relu``)."""

    def _checked(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, ...)")
        return x


class _InplaceActivation(_Activation):
    """A layer whose PyTorch twin takes ``inplace``: accepted and kept (it shows in the repr), but gpucnn
    computes out of place, so the output is a new tensor either way (the same values) and the input is
    left as it was."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU(_InplaceActivation):
    """max(x, 0). ``inplace`` as in PyTorch's signature: accepted, and the output is a new tensor."""

    def forward(self, x: Any) -> Any:
        return F.relu(self._checked(x))


class LeakyReLU(_Activation):
    """x where x > 0, else negative_slope * x. ``inplace`` accepted; the output is a new tensor."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{', inplace=True' if self.inplace else ''}"

    def forward(self, x: Any) -> Any:
        return F.leaky_relu(self._checked(x), self.negative_slope)


class Sigmoid(_Activation):
    def forward(self, x: Any) -> Any:
        return F.sigmoid(self._checked(x))


class SiLU(_InplaceActivation):
    """x * sigmoid(x) (swish: EfficientNet, MobileNetV3's heads). ``inplace`` as in PyTorch's signature:
    accepted, and the output is a new tensor either way."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)

    def forward(self, x: Any) -> Any:
        return F.silu(self._checked(x))


class ReLU6(_InplaceActivation):
    """min(max(x, 0), 6) (MobileNetV2). ``inplace`` accepted; the output is a new tensor."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)

    def forward(self, x: Any) -> Any:
        return F.relu6(self._checked(x))


class Hardsigmoid(_InplaceActivation):
    """relu6(x + 3) / 6 (MobileNetV3's squeeze-excitation gate). ``inplace`` accepted; the output is a new
    tensor. No extra repr, as PyTorch's."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)

    def extra_repr(self) -> str:
        return ""

    def forward(self, x: Any) -> Any:
        return F.hardsigmoid(self._checked(x))


class Hardswish(_InplaceActivation):
    """x * relu6(x + 3) / 6 (MobileNetV3). ``inplace`` accepted; the output is a new tensor. No extra repr,
    as PyTorch's."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)

    def extra_repr(self) -> str:
        return ""

    def forward(self, x: Any) -> Any:
        return F.hardswish(self._checked(x))


class GELU(_Activation):
    """x * Phi(x), Phi the standard normal CDF (with erf); ``approximate='tanh'`` for
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = gelu_approximate(approximate, "GELU")

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x: Any) -> Any:
        return F.gelu(self._checked(x), approximate=self.approximate)


class ELU(_Activation):
    """x where x > 0, else alpha * (exp(x) - 1). ``inplace`` accepted; the output is a new tensor."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{', inplace=True' if self.inplace else ''}"

    def forward(self, x: Any) -> Any:
        return F.elu(self._checked(x), self.alpha)


class Mish(_InplaceActivation):
    """x * tanh(softplus(x)) (YOLOv4). ``inplace`` accepted; the output is a new tensor."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(inplace)

    def forward(self, x: Any) -> Any:
        return F.mish(self._checked(x))


class Softplus(_Activation):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = softplus_beta(beta, "Softplus")
        self.threshold = float(threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

    def forward(self, x: Any) -> Any:
        return F.softplus(self._checked(x), self.beta, self.threshold)


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


class PReLU(_Activation):
    """x where x > 0, else a * x, with a learned slope ``a``: one for all channels (``num_parameters=1``)
    or one per channel (axis 1), starting at ``init``; ``weight`` in the state_dict, as PyTorch's. A
    composition (``F.prelu``: relu(x) - a * relu(-x)), so its weight gradient is an ordered reduction."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = np.float32) -> None:
        super().__init__()
        self.num_parameters = positive_int(num_parameters, "num_parameters", "PReLU")
        dtype = as_float_dtype(dtype, "PReLU")
        self.weight = new_parameter(self, np.full(self.num_parameters, float(init)), dtype)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"

    def forward(self, x: Any) -> Any:
        x = self._checked(x)
        channels = x.shape[1] if x.ndim >= 2 else 1
        if self.num_parameters not in (1, channels):
            raise ValueError(f"PReLU: expected input with {self.num_parameters} channels (axis 1), got shape "
                             f"{x.shape}")
        return F.prelu(x, self.weight)
