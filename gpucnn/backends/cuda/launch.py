"""The launch plumbing under launchers.py: what a device provides, and how one launch reaches it.

``Device`` is what the two devices implement (``cupy_device.py`` on a GPU, ``sim/device.py`` on the
CPU) and ``CaptureGuard`` the refusal they share; neither needs the backend to be imported.
``Launcher`` is the part of ``CudaBackend`` that is no op: checking inputs, packing the typed kernel
arguments (``_Index``, ``_Real``) and launching, elementwise launches, and the device-side pointer
tables of the ``*_many`` updates.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..base import FLOAT_DTYPES

BLOCK = 256                 # threads per block for elementwise and pooling kernels
MANY_CHUNK = 1024           # optimizers.cu's MANY_CHUNK: elements per block of the *_many updates
MANY_TABLES = 16            # pointer tables kept on the device for the *_many updates (oldest dropped first)
INDEX32_LIMIT = 2 ** 31


class Device(Protocol):
    xp: Any
    array_type: type
    multiprocessor_count: int

    def asarray(self, a: Any, dtype: Any = None) -> Any: ...
    def to_numpy(self, a: Any) -> np.ndarray: ...
    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any: ...
    def launch(self, module: str, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: list[Any],
               real: np.dtype, index64: bool, shared_mem: int = 0) -> None: ...
    def synchronize(self) -> None: ...
    # CUDA-graph capture (gpucnn/cuda_graph.py): while capturing, launches are recorded, not run
    capturing: bool
    def new_graph_pool(self) -> Any: ...
    def using_graph_pool(self, pool: Any) -> Any: ...
    def begin_capture(self, pool: Any) -> None: ...
    def end_capture(self) -> Any: ...  # a graph with replay()
    def copy_from_host(self, dst: Any, host: np.ndarray) -> None: ...
    def upload_after_capture(self, dst: Any, host: np.ndarray) -> None: ...


class CaptureGuard:
    """The refusal both devices give for host work asked for while they capture a CUDA graph."""

    device_name: str
    capturing: bool

    def _refuse_during_capture(self, what: str) -> None:
        if self.capturing:
            raise RuntimeError(f"{self.device_name}: {what} is not allowed during CUDA-graph capture (a captured "
                               f"stream cannot wait for the host or copy host memory); do it before begin_capture "
                               f"or after end_capture")


def _blocks(count: int, per_block: int) -> int:
    return max(1, -(-count // per_block))


def _pointer(a: Any) -> int:
    """The device address of an array's first element: CuPy's data.ptr, or NumPy's (cuda-sim)."""
    ptr = getattr(a.data, "ptr", None)
    return int(ptr) if ptr is not None else int(a.ctypes.data)


class _Index:
    """An ``index_t`` argument: int32, or int64 when the launch uses 64-bit indexing."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = int(value)


class _Real:
    """A ``real`` argument: float32 or float64 with the launch's dtype."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = float(value)


class Launcher:
    """Checks, argument packing and launches for ``CudaBackend``, which sets these attributes."""

    device: Device
    name: str
    xp: Any
    array_type: type
    force_index64: bool
    launch_count: int
    _many_tables: dict[tuple, Any]

    def _input(self, a: Any, what: str, dtype: Any = None) -> Any:
        """A C-contiguous array of the expected dtype on this device (raw kernels ignore strides)."""
        if not isinstance(a, self.array_type):
            raise TypeError(f"{self.name} backend: {what} must be a {self.array_type.__module__}.ndarray, "
                            f"got {type(a).__module__}.{type(a).__name__}")
        if dtype is None:
            if a.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{self.name} backend: {what} must be float32 or float64, got {a.dtype}")
        elif a.dtype != np.dtype(dtype):
            raise TypeError(f"{self.name} backend: {what} must be {np.dtype(dtype)}, got {a.dtype}")
        # ascontiguousarray would make a 0-d array 1-d (an elementwise op's output takes this shape)
        return a if a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    def _in_place(self, a: Any, what: str, dtype: Any) -> Any:
        """Arrays a kernel updates in place must already be contiguous: a copy would lose the update."""
        a = self._input(a, what, dtype) if a.flags.c_contiguous else a
        if not a.flags.c_contiguous:
            raise ValueError(f"{self.name} backend: {what} is updated in place and must be C-contiguous")
        return a

    def _launch(self, module: str, kernel: str, grid: tuple[int, ...], block: tuple[int, ...],
                args: list[Any], real: np.dtype, arrays: tuple[Any, ...]) -> None:
        index64 = self.force_index64 or any(a.size >= INDEX32_LIMIT for a in arrays)
        index = np.int64 if index64 else np.int32
        real_t = np.dtype(real).type
        packed = []
        for arg in args:
            if isinstance(arg, _Index):
                packed.append(index(arg.value))
            elif isinstance(arg, _Real):
                packed.append(real_t(arg.value))
            else:
                packed.append(arg)
        self.launch_count += 1
        self.device.launch(module, kernel, tuple(grid), tuple(block), packed, np.dtype(real), index64)

    def _elementwise_grid(self, n: int) -> tuple[int]:
        # grid-stride kernels: enough blocks to fill the device, no more
        return (min(_blocks(n, BLOCK), self.device.multiprocessor_count * 16),)

    def _elementwise(self, module: str, kernel: str, inputs: list[Any], extra: list[Any] = ()) -> Any:
        """Launch kernel(*inputs, out, *extra, n) over equally shaped inputs; returns out."""
        first = self._input(inputs[0], f"{kernel} input")
        arrays = [first] + [self._input(a, f"{kernel} input", first.dtype) for a in inputs[1:]]
        out = self.device.empty(first.shape, first.dtype)
        n = first.size
        if n:
            self._launch(module, kernel, self._elementwise_grid(n), (BLOCK,), [*arrays, out, *extra, _Index(n)],
                         first.dtype, (first,))
        return out

    def _hyper(self, hyper: Any, kernel: str, real: np.dtype, columns: int) -> Any:
        hyper = self._input(hyper, f"{kernel} hyper", real)
        if hyper.ndim != 2 or hyper.shape[1] != columns:
            raise ValueError(f"{kernel}: hyper must be a (steps, {columns}) table, got shape {hyper.shape}")
        return hyper

    def _many_table(self, kernel: str, arrays: list[list[Any]]) -> tuple | None:
        """(table, blocks, checked arrays) for a *_many launch over rows of equally long lists
        (params, grads, state...), or None when there is nothing to update. The caller holds the
        checked arrays (a gradient may be a contiguous copy) until the launch is queued.

        The int64 table holds each row's device pointers, the sizes and the first block of each
        tensor (a prefix sum of its 1024-element chunks). It is built on the host and copied to the
        device once per set of pointers: parameters and their state keep their memory from step to
        step, and so do gradients where the allocator hands the same blocks back (CuPy's pool does).
        """
        params = arrays[0]
        if any(len(row) != len(params) for row in arrays):
            raise ValueError(f"{kernel}: got lists of lengths {[len(row) for row in arrays]}; they must be equal")
        if not params:
            return None
        real = params[0].dtype
        checked = []
        for r, row in enumerate(arrays):
            what = ("param", "grad", "state", "state")[r]
            checked.append([self._input(a, f"{kernel} {what}", real) if r == 1 else
                            self._in_place(a, f"{kernel} {what}", real) for a in row])
        for row in checked[1:]:
            for p, a in zip(checked[0], row):
                if a.shape != p.shape:
                    raise ValueError(f"{kernel}: a parameter of shape {p.shape} came with an array of shape "
                                     f"{a.shape}")
        sizes = [p.size for p in checked[0]]
        pointers = [[_pointer(a) for a in row] for row in checked]
        key = (real.str, tuple(sizes), *map(tuple, pointers))
        table = self._many_tables.pop(key, None)
        if table is None:
            chunks = [_blocks(size, MANY_CHUNK) if size else 0 for size in sizes]
            first = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
            host = np.concatenate([np.asarray(pointers, dtype=np.uint64).view(np.int64).ravel(),
                                   np.asarray(sizes, dtype=np.int64), first])
            table = (self._upload(host), int(first[-1]))
            if len(self._many_tables) >= MANY_TABLES:
                self._many_tables.pop(next(iter(self._many_tables)))
        self._many_tables[key] = table  # now the most recently used
        return None if table[1] == 0 else (*table, checked)

    def _upload(self, host: np.ndarray) -> Any:
        """``host`` on the device. During a CUDA-graph capture no host->device copy may run: the array
        comes from the capture's memory and is filled when the capture ends, before any replay reads it
        (a captured launch reads its memory when it runs, not when it is recorded)."""
        if not self.device.capturing:
            return self.device.asarray(host)
        table = self.device.empty(host.shape, host.dtype)
        self.device.upload_after_capture(table, host)
        return table
