"""BatchNorm2d, written once against the backend's array namespace."""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module, Parameter, as_float_dtype


class BatchNorm2d(Module):
    """Per-channel batch normalisation of (N, C, H, W), as PyTorch defines it: training uses the
    batch's biased variance and updates running statistics with the unbiased one."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        dtype = as_float_dtype(dtype, "BatchNorm2d")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.weight = Parameter(self.backend.asarray(np.ones(num_features), dtype=dtype)) if affine else None
        self.bias = Parameter(self.backend.asarray(np.zeros(num_features), dtype=dtype)) if affine else None
        self.register_buffer("running_mean", self.backend.asarray(np.zeros(num_features), dtype=dtype))
        self.register_buffer("running_var", self.backend.asarray(np.ones(num_features), dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    # x: (N, C, H, W) -> y: (N, C, H, W)
    def forward(self, x: Any) -> Any:
        self._check_input(x, 4, self.num_features)
        xp = self.backend.xp
        c = self.num_features
        if self.training:
            count = x.size // c
            if count < 2:
                raise ValueError(f"BatchNorm2d: training needs more than one value per channel, "
                                 f"got input shape {tuple(x.shape)}")
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += (m * count / (count - 1)) * var
        else:
            mean, var = self.running_mean, self.running_var
        self._inv_std = 1 / xp.sqrt(var + self.eps)
        self._xhat = (x - mean.reshape(1, c, 1, 1)) * self._inv_std.reshape(1, c, 1, 1)
        if self.weight is None:
            return self._xhat
        return self._xhat * self.weight.data.reshape(1, c, 1, 1) + self.bias.data.reshape(1, c, 1, 1)

    def backward(self, dy: Any) -> Any:
        c = self.num_features
        if self.weight is not None:
            self.weight.accumulate((dy * self._xhat).sum(axis=(0, 2, 3)))
            self.bias.accumulate(dy.sum(axis=(0, 2, 3)))
            dxhat = dy * self.weight.data.reshape(1, c, 1, 1)
        else:
            dxhat = dy
        inv_std = self._inv_std.reshape(1, c, 1, 1)
        if not self.training:
            return dxhat * inv_std
        mean_dxhat = dxhat.mean(axis=(0, 2, 3), keepdims=True)
        mean_dxhat_xhat = (dxhat * self._xhat).mean(axis=(0, 2, 3), keepdims=True)
        return (dxhat - mean_dxhat - self._xhat * mean_dxhat_xhat) * inv_std
