"""Normalisation layers: batch normalisation over the functional batch_norm; layer, group and instance
normalisation over layer_norm, group_norm and instance_norm; local response normalisation."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..functions.checks import positive_int
from .module import Module, as_float_dtype, new_parameter

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm2d", "LayerNorm", "LocalResponseNorm",
           "SyncBatchNorm"]


def _per_channel_state(layer: Module, name: str, num_features: int, eps: float, momentum: float | None,
                       affine: bool, track_running_stats: bool, dtype: Any) -> None:
    """BatchNorm's and InstanceNorm2d's state, PyTorch's names: weight and bias per channel (``affine``) and
    the running statistics with num_batches_tracked (``track_running_stats``)."""
    dtype = as_float_dtype(dtype, name)
    positive_int(num_features, "num_features", name)
    layer.num_features, layer.eps, layer.momentum = num_features, float(eps), momentum
    layer.affine, layer.track_running_stats = affine, track_running_stats
    layer.weight = new_parameter(layer, np.ones(num_features), dtype) if affine else None
    layer.bias = new_parameter(layer, np.zeros(num_features), dtype) if affine else None
    if track_running_stats:
        layer.register_buffer("running_mean", layer.backend.asarray(np.zeros(num_features), dtype=dtype))
        layer.register_buffer("running_var", layer.backend.asarray(np.ones(num_features), dtype=dtype))
        layer.register_buffer("num_batches_tracked", layer.backend.asarray(np.array(0, dtype=np.int64)))


def _per_channel_repr(layer: Any) -> str:
    return (f"{layer.num_features}, eps={layer.eps}, momentum={layer.momentum}, affine={layer.affine}, "
            f"track_running_stats={layer.track_running_stats}")


class _BatchNorm(Module):
    """PyTorch's BatchNorm: training normalises with the batch's biased variance and updates the
    running statistics with the unbiased one (``momentum=None``: a cumulative average), counting
    ``num_batches_tracked``; eval uses the running statistics."""

    expected_ndim: tuple[int, ...] = ()
    layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        _per_channel_state(self, type(self).__name__, num_features, eps, momentum, affine, track_running_stats, dtype)

    def extra_repr(self) -> str:
        return _per_channel_repr(self)

    def forward(self, x: Any) -> Any:
        if x.ndim not in self.expected_ndim:
            raise ValueError(f"{self._layer_name()}: expected a {' or '.join(map(str, self.expected_ndim))}-D "
                             f"input {self.layout}, got shape {x.shape}")
        self._check_input(x, x.ndim, self.num_features, self.layout)
        use_batch = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        stats = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return self._normalize(x, stats, use_batch, momentum or 0.0)

    def _normalize(self, x: Any, stats: tuple[Any, Any], use_batch: bool, momentum: float) -> Any:
        return F.batch_norm(x, *stats, self.weight, self.bias, use_batch, momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """x: (N, C) or (N, C, L)."""

    expected_ndim = (2, 3)
    layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """x: (N, C, H, W)."""

    expected_ndim = (4,)
    layout = "(N, C, H, W)"


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, every rank's part of it
    (``gpucnn.distributed``); x: (N, C), (N, C, L) or (N, C, H, W). Plain BatchNorm keeps each
    rank's own statistics, which is what data-parallel training does by default; this one costs
    three small all-reduces per layer and step and helps when each rank's batch is small. With
    one rank, and in eval mode, it is BatchNorm exactly. ``SyncBatchNorm.convert_sync_batchnorm(model)``
    swaps every BatchNorm1d/2d of a model for one (same parameters and buffers)."""

    expected_ndim = (2, 3, 4)
    layout = "(N, C), (N, C, L) or (N, C, H, W)"

    def _normalize(self, x: Any, stats: tuple[Any, Any], use_batch: bool, momentum: float) -> Any:
        from ..distributed import world_size

        if not use_batch or world_size() == 1:
            return super()._normalize(x, stats, use_batch, momentum)
        from ..distributed.sync_batchnorm import sync_batch_norm

        return sync_batch_norm(x, *stats, self.weight, self.bias, momentum, self.eps)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """``module`` with each BatchNorm1d/2d replaced by a SyncBatchNorm holding the same
        Parameters and buffers (make the optimizer after, or before: the Parameters are the same)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                       dtype=module.weight.dtype if module.affine else np.float32)
            sync.to(module.backend)
            sync.weight, sync.bias = module.weight, module.bias
            for name in module._buffers:
                sync.register_buffer(name, getattr(module, name), module._buffers[name])
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            # in place in the ordered dict: setattr would move the layer to the end of a Sequential
            module._modules[name] = cls.convert_sync_batchnorm(child)
            object.__setattr__(module, name, module._modules[name])
        return module


class LayerNorm(Module):
    """PyTorch's LayerNorm: each sample normalised over its trailing axes ``normalized_shape`` (an int or
    a shape); ``weight`` and ``bias`` have that shape (``bias=False``: no bias)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        dtype = as_float_dtype(dtype, "LayerNorm")
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape:
            raise ValueError("LayerNorm: normalized_shape must hold at least one size, got ()")
        for size in shape:
            positive_int(size, "normalized_shape", "LayerNorm")
        self.normalized_shape, self.eps, self.elementwise_affine = shape, float(eps), elementwise_affine
        self.weight = new_parameter(self, np.ones(shape), dtype) if elementwise_affine else None
        self.bias = new_parameter(self, np.zeros(shape), dtype) if elementwise_affine and bias else None

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout=f"(N, ..., {', '.join(map(str, self.normalized_shape))})")
        if tuple(x.shape[max(0, x.ndim - len(self.normalized_shape)):]) != self.normalized_shape:
            raise ValueError(f"LayerNorm: expected an input ending in {self.normalized_shape}, got shape {x.shape}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(Module):
    """PyTorch's GroupNorm: each sample's ``num_channels`` channels normalised in ``num_groups`` groups
    of consecutive channels; per-channel ``weight`` and ``bias`` (``affine``). x: (N, C, ...)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        dtype = as_float_dtype(dtype, "GroupNorm")
        positive_int(num_groups, "num_groups", "GroupNorm")
        positive_int(num_channels, "num_channels", "GroupNorm")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} must be divisible by num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, float(eps), affine
        self.weight = new_parameter(self, np.ones(num_channels), dtype) if affine else None
        self.bias = new_parameter(self, np.zeros(num_channels), dtype) if affine else None

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: Any) -> Any:
        if x.ndim < 2:
            raise ValueError(f"GroupNorm: expected an input (N, C, ...), got shape {x.shape}")
        self._check_input(x, x.ndim, self.num_channels, "(N, C, ...)")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class InstanceNorm2d(Module):
    """PyTorch's InstanceNorm2d: each sample's channels normalised over (H, W) with their own statistics;
    per-channel ``weight`` and ``bias`` with ``affine=True``. x: (N, C, H, W) or (C, H, W).
    ``track_running_stats=True``: training also updates the buffers ``running_mean``/``running_var``
    (the batch average of the per-instance means and unbiased variances, with ``momentum``; None: no
    update, as PyTorch's), and eval normalises with them. ``num_batches_tracked`` is kept for the
    state_dict and, as in PyTorch, not counted."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, dtype: Any = np.float32) -> None:
        super().__init__()
        _per_channel_state(self, "InstanceNorm2d", num_features, eps, momentum, affine, track_running_stats, dtype)

    def extra_repr(self) -> str:
        return _per_channel_repr(self)

    def forward(self, x: Any) -> Any:
        if x.ndim == 3:  # unbatched (C, H, W), as PyTorch takes it: a batch of one
            self._check_input(x, 3, layout="(C, H, W)")
            return self.forward(x.reshape((1,) + tuple(x.shape))).reshape(x.shape)
        self._check_input(x, 4, self.num_features)
        if not self.track_running_stats:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        momentum = self.momentum if self.momentum is not None else 0.0
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                               momentum, self.eps)


class LocalResponseNorm(Module):
    """PyTorch's LocalResponseNorm: x / (k + alpha / size * sum of x^2 over ``size`` neighbouring
    channels)^beta; x: (N, C, ...) of at least 3 dimensions. A composition of existing ops
    (F.local_response_norm: a square, an average pool over the channels, a power and a division)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size = positive_int(size, "size", "LocalResponseNorm")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x: Any) -> Any:
        if x.ndim < 3:
            raise ValueError(f"LocalResponseNorm: expected an input (N, C, ...) of at least 3 dimensions, got "
                             f"shape {x.shape}")
        self._check_input(x, x.ndim, layout="(N, C, ...)")
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
