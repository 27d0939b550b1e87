"""Dropout: the mask is a hash of (seed, element index), identical on every backend.

Inside a CUDA-graph step (gpucnn/cuda_graph.py) the seed is not a number drawn on the host but a
``TableSeed``: the key is read on the device from the epoch's table at the step counter, so every
replay of the captured step draws the mask the eager step would have drawn."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..init import default_rng
from .checks import activation_input

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["dropout", "dropout2d"]

_state = threading.local()


class TableSeed:
    """The key of a dropout call in a CUDA-graph step: ``keys[step[0], slot]`` on the device."""

    __slots__ = ("keys", "step", "slot")

    def __init__(self, keys: Any, step: Any, slot: int) -> None:
        self.keys, self.step, self.slot = keys, step, slot


def draw_seed(generator: Any) -> int:
    """A dropout call's seed drawn on the host from its generator: the one draw eager steps and the
    CUDA-graph step's key tables both make, so their masks agree."""
    return int(generator.integers(0, 1 << 63))


def seed_source() -> Any:
    """The object handing out TableSeeds to this thread's dropout calls, or None (draw on the host)."""
    return getattr(_state, "source", None)


@contextlib.contextmanager
def seeds_from(source: Any) -> Iterator[None]:
    """Within: each dropout call asks ``source.table_seed(generator)`` for its seed, where
    ``generator`` is the one the call would have drawn a host seed from."""
    previous = seed_source()
    _state.source = source
    try:
        yield
    finally:
        _state.source = previous


class Dropout(Function):
    #: ONNX export refuses it: an eval-mode network has no dropout call (nn.Dropout is the identity there)
    not_exportable = ("cannot export Dropout in training mode (F.dropout(..., training=True) inside forward); "
                      "pass training=self.training or use nn.Dropout, which is the identity in eval mode")

    @staticmethod
    def forward(ctx, x, p: float, seed: int | TableSeed):
        if isinstance(seed, TableSeed):
            y, mask = ctx.backend.dropout_forward_stepped(x, p, seed.keys, seed.step, seed.slot)
        else:
            y, mask = ctx.backend.dropout_forward(x, p, seed)
        ctx.p = p
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        return ctx.backend.dropout_backward(dy, mask, ctx.p), None, None


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False,
            seed: int | None = None, generator: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p (scaling the rest by 1/(1-p)) when ``training``.
    The mask is a hash of (seed, element index); without ``seed`` one is drawn from ``generator``,
    or gpucnn's default generator (``gpucnn.manual_seed``). Inside a CUDA-graph step
    (``gpucnn.cuda_graph``) the seed comes from the step's table on the device instead: the value
    this call would have drawn, drawn ahead for every step of the epoch."""
    x = activation_input(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    if seed is None:
        if generator is None:
            generator = default_rng()
        source = seed_source()
        seed = source.table_seed(generator) if source is not None else draw_seed(generator)
    return Dropout.apply(x, float(p), seed)


def _scaled_mask(x: Tensor, shape: tuple[int, ...], p: float, seed: int | None,
                 generator: np.random.Generator | None) -> Tensor:
    """A mask of ``shape`` (broadcasting against ``x``): 0 with probability p, else 1/(1-p); drawn as
    dropout of ones, so from the same seed (and CUDA-graph step table) as ``dropout``'s."""
    ones = Tensor(x.backend.xp.ones(shape, dtype=x.dtype), backend=x.backend)
    return dropout(ones, p, True, seed=seed, generator=generator)


def dropout2d(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False, seed: int | None = None,
              generator: np.random.Generator | None = None) -> Tensor:
    """Zero whole channels: one draw per (sample, channel) of an (N, C, H, W) input (or per channel
    of a (C, H, W) one), the kept channels scaled by 1/(1-p), when ``training``."""
    x = activation_input(input, "dropout2d")
    if x.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected an input of shape (N, C, H, W) or (C, H, W), got {x.shape}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout2d: p must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    return x * _scaled_mask(x, x.shape[:-2] + (1, 1), p, seed, generator)


def drop_path(x: Any, p: float = 0.0, training: bool = False, seed: int | None = None,
              generator: np.random.Generator | None = None) -> Tensor:
    """Stochastic depth (timm's ``drop_path``): drop each sample's whole input with probability p,
    scaling the kept ones by 1/(1-p), when ``training``; the identity otherwise. Meant for a residual
    branch: ``x + drop_path(branch(x), p, self.training)``."""
    x = activation_input(x, "drop_path")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_path: p must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    return x * _scaled_mask(x, x.shape[:1] + (1,) * (x.ndim - 1), p, seed, generator)
