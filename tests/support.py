"""Helpers the op tests share: inputs drawn for what an op needs, arrays moved between backends, and the
backend ops a call runs (so a test can say which contract ops it exercised)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

import gpucnn


def make_input(rng: np.random.Generator, shape: tuple[int, ...], kind: str = "normal") -> np.ndarray:
    """A float64 array for ``shape``, drawn so that finite differences and parity checks are meaningful:

    - 'normal': standard normal;
    - 'positive': in [0.5, 2] (logs, roots, divisors, L_p pooling);
    - 'distinct': values 1/7 apart, about half negative (max pooling has no ties);
    - 'kinked': normal but clear of 0 by 1e-3 (ReLU's kink);
    - 'hard': 3 x standard normal (some past -3 and 6), clear of -3, 0, 3 and 6 by 1e-3 (the kinks of
      ReLU6, hardsigmoid and hardswish, and softplus's threshold where it is crossed there).
    """
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if kind == "distinct":
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) - n // 2 + 0.5) / 7.0
    x = rng.standard_normal(shape)
    if kind == "kinked":
        x[np.abs(x) < 1e-3] = 0.5
    elif kind == "hard":
        x *= 3
        for kink in (-3.0, 0.0, 3.0, 6.0):
            x[np.abs(x - kink) < 1e-3] = kink + 0.5
    elif kind != "normal":
        raise ValueError(f"make_input: unknown kind {kind!r}")
    return x


def on_backend(backend: Any, factory: Any) -> Any:
    """``factory()`` with ``backend`` current, so the layer it builds holds its parameters there."""
    with gpucnn.use_backend(backend.name):
        return factory()


def host(value: Any) -> np.ndarray:
    """A copy of a Tensor's (or backend array's) values as a NumPy array: a copy, as a buffer updated in
    place later (BatchNorm's running statistics) must not change what was read before."""
    if isinstance(value, gpucnn.Tensor):
        value = value.data
    return np.array(value) if isinstance(value, (np.ndarray, np.generic)) else value.get()


@contextlib.contextmanager
def recording_ops(backend: Any) -> Iterator[set[str]]:
    """The names of the contract ops ``backend`` runs inside the block (its methods are wrapped for the
    block's duration on this instance only)."""
    from gpucnn.backends.contract import OPS

    called: set[str] = set()
    originals = {}
    for name in OPS:
        method = getattr(backend, name, None)
        if method is None:
            continue
        originals[name] = backend.__dict__.get(name)

        def wrapped(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            called.add(_name)
            return _method(*args, **kwargs)

        setattr(backend, name, wrapped)
    try:
        yield called
    finally:
        for name, original in originals.items():
            if original is None:
                delattr(backend, name)
            else:
                setattr(backend, name, original)
