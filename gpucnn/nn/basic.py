"""Linear, Flatten, Dropout (and Dropout2d, DropPath) and Identity."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..functions.checks import positive_int
from ..functions.dropout import drop_path, dropout2d
from ..functions.linear import Linear as LinearFunction
from ..init import DEFAULT_INIT, default_rng, initial_bias, initialize
from .module import Module, as_float_dtype, new_parameter

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["DropPath", "Dropout", "Dropout2d", "Flatten", "Identity", "Linear"]


class Linear(Module):
    """y = x @ W.T + b; x: (N, in_features) -> y: (N, out_features). W: (out, in) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: Any = DEFAULT_INIT,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        positive_int(in_features, "in_features", "Linear")
        positive_int(out_features, "out_features", "Linear")
        self.in_features, self.out_features = in_features, out_features
        dtype = as_float_dtype(dtype, "Linear")
        weight = initialize(init, (out_features, in_features), in_features, out_features, rng, "Linear")
        self.weight = new_parameter(self, weight, dtype)
        self.bias = new_parameter(self, initial_bias(init, out_features, in_features, rng), dtype) if bias else None

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"

    # x: (N, in) -> y: (N, out); relu=True applies max(y, 0) in the same op (Sequential does this
    # for a Linear followed by ReLU: the ReLU runs in the GEMM's epilogue)
    def forward(self, x: Any, relu: bool = False) -> Any:
        self._check_input(x, None, layout="(N, C)")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input of shape (N, {self.in_features}), got {x.shape}")
        # the Function itself rather than F.linear, whose checks would repeat the ones above
        return LinearFunction.apply(x, self.weight, self.bias, relu)


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), or flatten dims start_dim..end_dim as PyTorch's."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, ...)")
        return x.flatten(self.start_dim, self.end_dim)


class Identity(Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # PyTorch's ignores its arguments too
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class Dropout(Module):
    """Zero each element with probability p in training (scaling the rest by 1/(1-p)); identity in eval.

    The mask is a hash of (seed, element index), and each forward draws its seed from the
    layer's generator, so a seeded run drops the same elements on every backend (in a CUDA-graph
    step, from a table of the seeds the generator would have drawn: ``F.dropout``).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng(default_rng().integers(1 << 63))

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, ...)")
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, True, generator=self.rng)


def _layer_rng(p: float, rng: np.random.Generator | None, owner: str) -> np.random.Generator:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {p!r}")
    return rng if rng is not None else np.random.default_rng(default_rng().integers(1 << 63))


class Dropout2d(Module):
    """Zero whole channels in training: one draw per (sample, channel) of an (N, C, H, W) input, the kept
    channels scaled by 1/(1-p); identity in eval. The mask is drawn as ``Dropout``'s (a hash of a seed the
    layer's generator draws each forward), so a seeded run drops the same channels on every backend."""

    def __init__(self, p: float = 0.5, inplace: bool = False, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.rng = _layer_rng(p, rng, "Dropout2d")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, C, H, W)")
        if not self.training or self.p == 0.0:
            return x
        return dropout2d(x, self.p, True, generator=self.rng)


class DropPath(Module):
    """Stochastic depth (timm's ``DropPath``): in training, each sample's input is dropped whole with
    probability p and the kept ones scaled by 1/(1-p); identity in eval. Wrap a residual branch's output."""

    def __init__(self, p: float = 0.0, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.rng = _layer_rng(p, rng, "DropPath")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(N, ...)")
        if not self.training or self.p == 0.0:
            return x
        return drop_path(x, self.p, True, generator=self.rng)
