"""What every backend shares: its name, its array namespace and the host/device movers."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Backend:
    """Base class. Subclasses implement every op of ``contract.OPS``."""

    name: str = "abstract"
    xp: ModuleType = np
    #: the array type this backend computes on (``numpy.ndarray`` or ``cupy.ndarray``)
    array_type: type = np.ndarray
    #: in eval mode a Sequential runs batches larger than this in chunks of this many samples,
    #: so that every layer's activations stay in cache (None: whole batches, as a GPU wants)
    eval_batch_chunk: int | None = None

    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array this backend computes on."""
        return isinstance(a, self.array_type)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the host)."""

    def __repr__(self) -> str:
        return f"<gpucnn backend {self.name!r}>"


def dropout_threshold(p: float) -> int:
    """Elements whose 24-bit hash is below this are dropped: P(drop) = p exactly to 2^-24."""
    return int(round(p * (1 << 24)))


def dropout_scale(p: float) -> float:
    """What kept elements are multiplied by: 1/(1-p), and 0 when everything is dropped."""
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


def dropout_key(seed: int) -> int:
    """Fold a 64-bit seed into the 32-bit key the mask hash starts from (host side, once)."""
    seed &= (1 << 64) - 1
    return hash32(hash32(seed & 0xFFFFFFFF) ^ (seed >> 32))


def hash32(value: int) -> int:
    """The integer hash (lowbias32) that ``kernels/dropout.cu`` uses, for one host int."""
    x = value & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x
