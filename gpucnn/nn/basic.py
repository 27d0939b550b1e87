"""Linear, Flatten and Dropout."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..init import default_rng, initialize
from .module import Module, Parameter, as_float_dtype


class Linear(Module):
    """y = x @ W.T + b; x: (N, in_features) -> y: (N, out_features). W: (out, in) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: Any = "kaiming",
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        for label, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Linear: {label} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        dtype = as_float_dtype(dtype, "Linear")
        shape = (out_features, in_features)
        self.weight = Parameter(self.backend.asarray(
            initialize(init, shape, in_features, out_features, rng, "Linear"), dtype=dtype))
        self.bias = Parameter(self.backend.asarray(np.zeros(out_features), dtype=dtype)) if bias else None

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"

    # x: (N, in) -> y: (N, out)
    def forward(self, x: Any) -> Any:
        self._check_input(x, 2, self.in_features, layout="(N, C)")
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy: Any) -> Any:
        self.weight.accumulate(dy.T @ self._x)
        if self.bias is not None:
            self.bias.accumulate(dy.sum(axis=0))
        return dy @ self.weight.data


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x: Any) -> Any:
        self._check_input(x, max(getattr(x, "ndim", 2), 2), layout="(N, ...)")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: Any) -> Any:
        return dy.reshape(self._shape)


class Dropout(Module):
    """Zero each element with probability p in training (scaling the rest by 1/(1-p)); identity in eval.

    The mask is a hash of (seed, element index), and each forward draws its seed from the
    layer's generator, so a seeded run drops the same elements on every backend.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng(default_rng().integers(1 << 63))

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, max(getattr(x, "ndim", 1), 1), layout="(N, ...)")
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        seed = int(self.rng.integers(0, 1 << 63))
        y, self._mask = self.backend.dropout_forward(x, self.p, seed)
        return y

    def backward(self, dy: Any) -> Any:
        if self._mask is None:
            return dy
        return self.backend.dropout_backward(dy, self._mask, self.p)
