"""The NumPy backend's reusable memory: the pool of large temporaries (``ScratchPool``) and the
memo of work a training forward keeps for its backward pass (``KeptForBackward``).

Each worker of the backend (the backend itself, and each batch half when the threads are on; see
threads.py) has its own of both, so two threads never share one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class ScratchPool:
    """Large temporaries handed back after use and handed out again for the same shape.

    A training step allocates the same multi-megabyte arrays every time (im2col matrices, their
    products). With glibc's default settings each one is a fresh mmap whose pages fault in again:
    about 4,000 page faults and twice the time per LeNet-5 step on the 2-core machine. Arrays are
    kept by (shape, dtype) up to ``limit`` bytes in all, the least recently returned shapes
    dropped first. Only arrays that nothing else refers to may be given back. A lock keeps the
    pool whole when models on the numpy backend train in several threads.

    Every stack in ``_free`` holds at least one array: eviction takes the oldest key's first
    array, so an emptied stack left behind would be popped from (an IndexError once a batch is
    large enough for its shapes to overflow ``limit``).
    """

    #: smaller arrays come from malloc's heap anyway
    MIN_BYTES = 64 << 10

    def __init__(self, limit: int = 256 << 20) -> None:
        self.limit = limit
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised C-contiguous array of this shape and dtype."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            stack = self._free.get(key)
            if stack:
                array = stack.pop()
                if not stack:
                    del self._free[key]
                self._bytes -= array.nbytes
                return array
        return np.empty(shape, dtype=dtype)

    def give(self, *arrays: np.ndarray) -> None:
        """Hand arrays back for reuse (those too small, too large or views of others are dropped)."""
        with self._lock:
            for array in arrays:
                self._keep(array)

    def _keep(self, array: np.ndarray) -> None:
        if array.nbytes < self.MIN_BYTES or array.base is not None or array.nbytes > self.limit:
            return
        key = (array.shape, array.dtype)
        stack = self._free.pop(key, [])
        stack.append(array)
        self._free[key] = stack  # now the most recently returned shape
        self._bytes += array.nbytes
        while self._bytes > self.limit:
            oldest = next(iter(self._free))
            dropped = self._free[oldest].pop(0)
            self._bytes -= dropped.nbytes
            if not self._free[oldest]:
                del self._free[oldest]


class KeptForBackward:
    """What training forwards keep for their backward passes, by the id of the array each ran on.

    An entry is (array, geometry, value): holding the array keeps its id from being reused
    meanwhile, and the geometry (shapes, strides, ...) must match again for the value to be
    handed out. A recalled entry is taken out, so each is used by one backward pass; beyond
    ``limit`` entries the oldest is dropped (a forward whose backward never came).
    """

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._kept: dict[int, tuple[Any, Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def remember(self, x: Any, geometry: Any, value: Any) -> None:
        """Keep value for x at this geometry (dropping the oldest entry when full)."""
        if len(self._kept) >= self.limit:
            self._kept.pop(next(iter(self._kept)))
        self._kept[id(x)] = (x, geometry, value)

    def recall(self, x: Any, geometry: Any) -> Any | None:
        """What a forward remembered for x at this geometry, taken out; None when it kept nothing for
        this very array at this geometry."""
        saved = self._kept.pop(id(x), None)
        if saved is not None and saved[0] is x and saved[1] == geometry:
            return saved[2]
        return None

    def kept_or_built(self, x: Any, geometry: Any, chunks: Iterator, keep: bool, reuse: bool) -> Iterator:
        """The column chunks a training forward kept for x at this geometry when reuse asks for them and
        there are some; else ``chunks`` (a generator, not started until then), remembered as they pass
        when keep asks for it."""
        if reuse:
            saved = self.recall(x, geometry)
            if saved is not None:
                return iter(saved)
        return self._lazily_kept(chunks, x, geometry) if keep else chunks

    def _lazily_kept(self, chunks: Iterator, x: Any, geometry: Any) -> Iterator:
        """Yields the chunks as they are built and, once all were asked for, remembers them for x's
        backward pass. Built one at a time, each chunk's product reads its columns while they are
        still in cache; building every chunk first read them all back from memory (ResNet-8's
        16-channel 32x32 convolution forward at batch 128: 22 ms that way, 14 ms chunk by chunk in
        cache-sized chunks; benchmarks/results/cpu-lazy-columns-2026-11-24.md)."""
        kept: list = []
        yield from collecting(chunks, kept)
        self.remember(x, geometry, kept)


def collecting(chunks: Iterable, kept: list) -> Iterator:
    """Yields the chunks, appending each to kept as it passes."""
    for chunk in chunks:
        kept.append(chunk)
        yield chunk
