"""Two halves of a batch at once on the CPU: the NumPy backend's only threading (opt-in).

NumPy runs every elementwise pass, copy and transpose on one core; only BLAS uses more. With
``GPUCNN_CPU_THREADS=2`` a large convolution or Linear layer runs as two halves in two threads
(NumPy releases the GIL inside its loops), and BLAS runs on one thread in the whole process for as
long as the threads are on, so the two halves are the only parallel work.

Why BLAS stays at one thread, not only during the halves: OpenBLAS's workers spin on a core for
~0.1 s after every multi-threaded call, so any two-thread BLAS call between two split ops (a
Linear layer, BatchNorm's sums) left a worker spinning on a core the halves then needed, and whole
steps ran 1.25-1.4x slower. ``OPENBLAS_THREAD_TIMEOUT=4`` (set before Python starts) cured that for
the wide networks but cost the networks of many mid-size ops. With one BLAS thread there are no
workers to spin, no variable to set, and a run is steadier: on the 2-core development VM a
one-thread GEMM took the same time call after call, while two-thread calls on the small products
of a chunked convolution ran anywhere from 1x to 3x that time.

Passes over the activations split the same way when they are large enough: ReLU, and BatchNorm's
passes. BatchNorm is written on the array namespace and splits through ``Backend.over_batch``; its
per-channel sums are then the two halves' sums added. With BLAS single-threaded, the convolutions
on (C, N, H, W) images also stop keeping their im2col columns from a training forward for the
backward pass (``keeps_columns``): each half builds them again, chunk by chunk, while they are in
cache. The measurements are in
benchmarks/results/cpu-threads-one-blas-2026-11-24.md. Small ops (LeNet-5's) always stay whole:
two threads that each make many short NumPy calls pass the GIL back and forth and lose, so with
threads on LeNet-5 runs on one core.

Where a split happens depends only on the shapes, so a threaded run is reproducible; it is not
bitwise the default one, because OpenBLAS partitions some GEMMs differently by thread count.
Limiting BLAS's threads needs ``threadpoolctl`` (``pip install gpucnn[threads]``).

Two parts of the NumPy backend live here: ``BatchHalves`` (convolutions and Linear layers) and
``RowHalves`` (ReLU and ``over_batch``); both run whole while the threads are off. The module's
functions (``run_pair``, ``parallel_available``, ``reset``) hold the process-wide state.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ...shapes import conv_output_hw
from ..contract import ConvPoolState, Padding, Pair, Shape
from .scratch import KeptForBackward

#: an op's (dx | None, dw, db)
Grads = tuple[np.ndarray | None, np.ndarray, np.ndarray]

_lock = threading.Lock()  # one pair at a time: a second caller (another user thread) runs serially
_state: dict[str, Any] = {}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _requested_threads() -> int:
    value = os.environ.get("GPUCNN_CPU_THREADS", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"GPUCNN_CPU_THREADS: expected an integer number of threads, got {value!r}") from None


def _blas_controllers() -> list[Any] | None:
    """threadpoolctl's handles on the loaded BLAS libraries, or None when the pair cannot run in
    parallel (no threadpoolctl, one core, or threads turned off). Found the first time, when BLAS
    is also set to one thread (reset() gives it its threads back)."""
    if "blas" not in _state:
        blas = None
        if _requested_threads() >= 2 and _cores() >= 2:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                warnings.warn("GPUCNN_CPU_THREADS asks for threads, which need threadpoolctl to limit BLAS's own: "
                              "pip install gpucnn[threads]; running single-threaded", RuntimeWarning, stacklevel=2)
            else:
                blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"] or None
        if blas is not None:
            _state["blas_threads"] = [(c, c.num_threads) for c in blas]
            for controller in blas:
                controller.set_num_threads(1)
        _state["blas"] = blas
    return _state["blas"]


def parallel_available() -> bool:
    """True when GPUCNN_CPU_THREADS asks for threads and run_pair can run its two calls at once."""
    return _blas_controllers() is not None


def keeps_columns() -> bool:
    """Whether a training forward on the (C, N, H, W) convolution paths keeps its im2col columns for
    the backward pass: not while the threads are on (see the module docstring)."""
    return not parallel_available()


def run_pair(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """(first(), second()), the two run at once where possible (see the module docstring)."""
    if _blas_controllers() is None or not _lock.acquire(blocking=False):
        return first(), second()
    try:
        pool = _state.get("pool")
        if pool is None:
            pool = _state["pool"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpucnn-half")
        later = pool.submit(second)
        try:
            result = first()
        finally:
            other = later.result()  # waited for even when first() raised: no half outlives the call
        return result, other
    finally:
        _lock.release()


def reset() -> None:
    """Give BLAS back the threads it had, then read GPUCNN_CPU_THREADS and look for threadpoolctl and
    BLAS again (after the variable changes)."""
    for controller, count in _state.pop("blas_threads", []):
        controller.set_num_threads(count)
    _state.pop("blas", None)


class RowHalves:
    """Elementwise passes over a batch's rows as two halves at once: ReLU's here, and those that
    BatchNorm (written on the array namespace) runs through ``Backend.over_batch``.

    A pass splits when the threads are on and it covers at least ``split_min_elements``; the worker
    of a batch half has one made ``whole_only``, which never splits (its pass already runs beside
    the other half's).
    """

    #: split an elementwise pass (ReLU, BatchNorm's passes through over_batch) over at least this many
    #: elements: BatchNorm2d's forward + backward alone, 128 images, 16 channels at 32x32 (2M elements)
    #: 10.1 -> 6.2 ms, 64 at 8x8 (512K) 2.9 -> 1.8 ms, 64 at 4x4 (128K) 0.6 -> 0.8 ms
    split_min_elements = 1 << 18

    def __init__(self, whole_only: bool = False) -> None:
        self._whole_only = whole_only

    def split(self, n: int, elements: int) -> int | None:
        """Where an elementwise pass over n batch rows splits, or None: it runs whole."""
        if n < 2 or elements < self.split_min_elements or self._whole_only or not parallel_available():
            return None
        return n // 2

    def over_batch(self, body: Callable[[int, int], Any], n: int, elements: int) -> list[Any]:
        """``body(lo, hi)`` over the rows [0, n), as one call or two halves at once (Backend.over_batch)."""
        split = self.split(n, elements)
        if split is None:
            return [body(0, n)]
        return list(run_pair(lambda: body(0, split), lambda: body(split, n)))

    def relu_forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0 or self.split(len(x), x.size) is None:
            return np.maximum(x, 0)
        y = np.empty(x.shape, x.dtype)
        self.over_batch(lambda lo, hi: np.maximum(x[lo:hi], 0, out=y[lo:hi]), len(x), x.size)
        return y

    def relu_backward(self, dy: np.ndarray, y: np.ndarray) -> np.ndarray:
        # a multiply by the mask, as relu_backward in activations.cu: 13x faster than np.where
        if dy.ndim == 0 or dy.shape != y.shape or self.split(len(dy), dy.size) is None:
            return dy * (y > 0)
        dx = np.empty(dy.shape, np.result_type(dy, np.bool_))
        self.over_batch(lambda lo, hi: np.multiply(dy[lo:hi], y[lo:hi] > 0, out=dx[lo:hi]), len(dy), dy.size)
        return dx


class BatchHalves:
    """The NumPy backend's convolutions and Linear layers, whole or in two halves (see the module).

    A convolution whose im2col work (N * C/G*KH*KW * OH*OW elements) reaches ``split_min_columns``
    runs as the same op on x[:N//2] and x[N//2:], through ``run_pair``, on two half workers made by
    ``whole.half()`` (each with its own scratch buffers and kept im2col matrices, so the halves share
    nothing, and ``whole``'s settings); smaller ones run on ``whole``, the backend's own convolution
    part (conv.Convolution). The weight and bias gradients are the two halves' sums added in that
    order. A Linear layer's products are here too, whole or split (``linear_forward``).
    """

    #: split a convolution whose im2col matrix would have at least this many elements
    split_min_columns = 4 << 20
    #: split a Linear layer (forward and backward) doing at least this many multiply-adds
    split_min_products = 8 << 20

    def __init__(self, whole: Any, rows: RowHalves) -> None:
        # whole: a conv.Convolution (not imported: conv.py imports this module)
        self._whole = whole
        self._rows = rows  # for the ReLU mask of a Linear layer's backward pass
        self._parts: tuple[Any, Any] | None = None
        # id(x) -> (x, split, (x[:split], x[split:])): see _split_input
        self._kept_halves = KeptForBackward()

    def split_point(self, x_shape: Shape, w_shape: Shape, stride: Pair, padding: Padding,
                    dilation: Pair) -> int | None:
        """Where a convolution's batch splits, or None: it runs whole."""
        n = x_shape[0]
        if n < 2 or not parallel_available():  # before any shape arithmetic: the default path pays nothing more
            return None
        oh, ow = conv_output_hw(x_shape, w_shape, stride, padding, dilation)
        per_image = w_shape[1] * w_shape[2] * w_shape[3] * oh * ow
        return n // 2 if n * per_image >= self.split_min_columns else None

    def _halves(self) -> tuple[Any, Any]:
        if self._parts is None:
            self._parts = (self._whole.half(), self._whole.half())
        for part in self._parts:  # e.g. a test's flat_conv = False on the whole: the halves follow it
            part.follow(self._whole)
        return self._parts

    def _split_input(self, x, split, keep: bool):
        """x's two halves; a training forward remembers the very view objects, so that each half finds
        the im2col matrices it kept under their ids."""
        halves = (x[:split], x[split:])
        if keep:
            self._kept_halves.remember(x, split, halves)
        return halves

    def _reused_halves(self, x, split):
        return self._kept_halves.recall(x, split) or (x[:split], x[split:])

    # x: (N, C, H, W) -> y: (N, K, OH, OW)
    def conv2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair, padding: Padding,
                       dilation: Pair, groups: int, relu: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        split = self.split_point(x.shape, w.shape, stride, padding, dilation)
        if split is None:
            return self._whole.conv2d_forward(x, w, b, stride, padding, dilation, groups, relu, keep_for_backward)
        (lo, hi), (first, second) = self._split_input(x, split, keep_for_backward), self._halves()
        y_lo, y_hi = run_pair(
            lambda: first.conv2d_forward(lo, w, b, stride, padding, dilation, groups, relu, keep_for_backward),
            lambda: second.conv2d_forward(hi, w, b, stride, padding, dilation, groups, relu, keep_for_backward))
        return np.concatenate((y_lo, y_hi))

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_backward(self, dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair, padding: Padding,
                        dilation: Pair, groups: int, need_input_grad: bool = True) -> Grads:
        split = self.split_point(x.shape, w.shape, stride, padding, dilation)
        if split is None:
            return self._whole.conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad)
        (lo, hi), (first, second) = self._reused_halves(x, split), self._halves()
        grads_lo, grads_hi = run_pair(
            lambda: first.conv2d_backward(dy[:split], lo, w, stride, padding, dilation, groups, need_input_grad),
            lambda: second.conv2d_backward(dy[split:], hi, w, stride, padding, dilation, groups, need_input_grad))
        return _joined(grads_lo, grads_hi)

    # x: (N, C, H, W) -> y: (N, K, PH, PW) = maxpool(relu(conv(x) + b)), and what the backward needs
    def conv2d_relu_maxpool2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair,
                                      padding: Padding, dilation: Pair, groups: int, kernel: Pair, pool_stride: Pair,
                                      pool_padding: Pair, ceil_mode: bool,
                                      keep_for_backward: bool = False) -> tuple[np.ndarray, ConvPoolState | None]:
        split = self.split_point(x.shape, w.shape, stride, padding, dilation)
        args = (stride, padding, dilation, groups, kernel, pool_stride, pool_padding, ceil_mode, keep_for_backward)
        if split is None:
            return self._whole.conv2d_relu_maxpool2d_forward(x, w, b, *args)
        first, second = self._halves()
        (y_lo, state_lo), (y_hi, state_hi) = run_pair(
            lambda: first.conv2d_relu_maxpool2d_forward(x[:split], w, b, *args),
            lambda: second.conv2d_relu_maxpool2d_forward(x[split:], w, b, *args))
        state = ConvPoolState("halves", (split, state_lo, state_hi)) if keep_for_backward else None
        return np.concatenate((y_lo, y_hi)), state

    # dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_relu_maxpool2d_backward(self, dy: np.ndarray, saved: ConvPoolState, x: np.ndarray, w: np.ndarray,
                                       stride: Pair, padding: Padding, dilation: Pair, groups: int, kernel: Pair,
                                       pool_stride: Pair, pool_padding: Pair, need_input_grad: bool = True) -> Grads:
        args = (stride, padding, dilation, groups, kernel, pool_stride, pool_padding, need_input_grad)
        if not isinstance(saved, ConvPoolState) or saved.kind != "halves":
            return self._whole.conv2d_relu_maxpool2d_backward(dy, saved, x, w, *args)
        split, state_lo, state_hi = saved.use()
        first, second = self._halves()
        grads_lo, grads_hi = run_pair(
            lambda: first.conv2d_relu_maxpool2d_backward(dy[:split], state_lo, x[:split], w, *args),
            lambda: second.conv2d_relu_maxpool2d_backward(dy[split:], state_hi, x[split:], w, *args))
        return _joined(grads_lo, grads_hi)

    # A Linear layer splits bitwise: by its output features forward (y's columns) and for dw (its
    # rows), by the batch for dx; every element is the same product over the same inputs.
    def _linear_split(self, rows: int, features: int, inputs: int) -> bool:
        return features >= 2 and rows * features * inputs >= self.split_min_products and parallel_available()

    # x: (M, K), w: (N, K) -> y: (M, N)
    def linear_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, relu: bool = False) -> np.ndarray:
        features = w.shape[0]
        if x.ndim != 2 or not self._linear_split(x.shape[0], features, w.shape[1]):
            return _whole_linear_forward(x, w, b, relu)
        half = features // 2
        y = np.empty((x.shape[0], features), dtype=np.result_type(x, w))

        def part(lo, hi):
            y[:, lo:hi] = _whole_linear_forward(x, w[lo:hi], None if b is None else b[lo:hi], relu)

        run_pair(lambda: part(0, half), lambda: part(half, features))
        return y

    # dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
    def linear_backward(self, dy: np.ndarray, x: np.ndarray, w: np.ndarray, need_input_grad: bool = True,
                        relu_output: np.ndarray | None = None) -> Grads:
        split = dy.ndim == 2 and self._linear_split(dy.shape[0], w.shape[0], w.shape[1])
        if relu_output is not None:
            dy = self._rows.relu_backward(dy, relu_output)
        if not split:
            return _whole_linear_backward(dy, x, w, need_input_grad)
        rows, features = dy.shape
        dw = np.empty(w.shape, dtype=np.result_type(dy, x))
        dx = np.empty(x.shape, dtype=np.result_type(dy, w)) if need_input_grad else None
        half, half_rows = features // 2, rows // 2

        def part(lo, hi, row_lo, row_hi):
            dw[lo:hi] = dy[:, lo:hi].T @ x
            if dx is not None:
                dx[row_lo:row_hi] = dy[row_lo:row_hi] @ w

        run_pair(lambda: part(0, half, 0, half_rows), lambda: part(half, features, half_rows, rows))
        return dx, dw, dy.sum(axis=0)


# x: (M, K), w: (N, K), b: (N,) -> y: (M, N)
def _whole_linear_forward(x, w, b, relu=False):
    y = x @ w.T
    if b is not None:
        y += b
    if relu:
        np.maximum(y, 0, out=y)
    return y


# dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
def _whole_linear_backward(dy, x, w, need_input_grad):
    rows = dy.reshape(-1, dy.shape[-1])
    dx = dy @ w if need_input_grad else None
    return dx, rows.T @ x.reshape(-1, x.shape[-1]), rows.sum(axis=0)


def _joined(lo: tuple, hi: tuple) -> tuple:
    """(dx, dw, db) of the whole batch from its halves': dx stacked, dw and db summed low + high."""
    dx = None if lo[0] is None else np.concatenate((lo[0], hi[0]))
    db = None if lo[2] is None else lo[2] + hi[2]
    return dx, lo[1] + hi[1], db
