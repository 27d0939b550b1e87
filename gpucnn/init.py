"""Weight initialisers (computed on the host with a seedable generator, then moved).

fan_in/fan_out of a conv weight (K, C/groups, KH, KW) are C/groups*KH*KW and K*KH*KW.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_default_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator that layers use when none is passed to them."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    return _default_rng


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or conv (K, C, *kernel) weight shape."""
    if len(shape) < 2:
        raise ValueError(f"init: need a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def kaiming_normal(shape, fan_in, fan_out, rng, gain=math.sqrt(2.0)):
    """He et al. 2015: std = gain / sqrt(fan_in), for ReLU nets."""
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def kaiming_uniform(shape, fan_in, fan_out, rng, gain=math.sqrt(2.0)):
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def xavier_uniform(shape, fan_in, fan_out, rng, gain=1.0):
    """Glorot & Bengio 2010: U(+-gain*sqrt(6/(fan_in+fan_out)))."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(shape, fan_in, fan_out, rng, gain=1.0):
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def lecun_uniform(shape, fan_in, fan_out, rng, gain=1.0):
    """LeCun et al. 1998: variance 1/fan_in (the classic LeNet-5 scheme)."""
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def lecun_normal(shape, fan_in, fan_out, rng, gain=1.0):
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def pytorch_default(shape, fan_in, fan_out, rng, gain=1.0):
    """PyTorch's default for Conv and Linear weights, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in))."""
    bound = gain / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "pytorch": pytorch_default,
    "kaiming": kaiming_normal,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "he": kaiming_normal,
    "xavier": xavier_uniform,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot": xavier_uniform,
    "lecun": lecun_uniform,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
}


#: the initialiser layers use when none is named: PyTorch's, so ported networks start as they do there
DEFAULT_INIT = "pytorch"


def initialize(init: str | Callable[..., np.ndarray], shape: tuple[int, ...], fan_in: int,
               fan_out: int, rng: np.random.Generator | None, owner: str) -> np.ndarray:
    """Run an initialiser by name (or a callable with the same signature) on the host."""
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise ValueError(f"{owner}: unknown init {init!r}; choose from {sorted(INITIALIZERS)}")
        init = INITIALIZERS[init]
    return np.asarray(init(shape, fan_in, fan_out, rng if rng is not None else _default_rng))


def initial_bias(init: str | Callable[..., np.ndarray], size: int, fan_in: int,
                 rng: np.random.Generator | None) -> np.ndarray:
    """PyTorch's default bias, U(+-1/sqrt(fan_in)), with the default init; zeros with a named one
    (as He, Glorot and LeCun describe them)."""
    if init == "pytorch":
        return pytorch_default((size,), fan_in, size, rng if rng is not None else _default_rng)
    return np.zeros(size)
