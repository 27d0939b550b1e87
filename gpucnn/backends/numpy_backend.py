"""The NumPy backend: vectorised reference implementations of every contract op.

No Python loop runs over pixels or single images: the loops are over kernel offsets (at most
KH*KW iterations, each a whole-tensor strided operation) and, in convolutions, over chunks of
images (BATCH_CHUNK, or sized by ``flat_chunk_bytes`` on the (C, N, H, W) paths). These are also
the references the CUDA kernels are tested against (see each ``kernels/*.cu``).
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .base import (
    Backend,
    ConvPoolState,
    composed_conv2d_relu_maxpool2d_backward,
    composed_conv2d_relu_maxpool2d_forward,
    dropout_key,
    dropout_scale,
    dropout_threshold,
    hash32,
)
from .cpu_threads import BatchHalves
from .shapes import conv_output_hw, pool_output_hw


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float) -> np.ndarray:
    """Pad the last two axes; returns ``x`` itself when there is nothing to pad."""
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _window_view(xpad: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                 oh: int, ow: int) -> np.ndarray:
    """A read-only view (N, C, KH, KW, OH, OW) of every window of a padded input."""
    s_n, s_c, s_h, s_w = xpad.strides
    n, c = xpad.shape[:2]
    return as_strided(xpad, shape=(n, c, kh, kw, oh, ow),
                      strides=(s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)


class _Scratch:
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

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
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


def _im2col(x, kh, kw, stride, padding, dilation, oh, ow, scratch: _Scratch) -> np.ndarray:
    """x: (N, C, H, W) -> cols: (C*KH*KW, OH*OW*N), the one copy the convolution makes.

    The batch is the innermost axis (x is first laid out (C, H, W, N)), so each of the KH*KW
    window copies runs inner loops of OW*N elements rather than OW: several times faster in NumPy
    for small images, and conv2d_backward's col2im gains the same way.
    """
    n, c, h, w = x.shape
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
    x_last = scratch.take((c, h + pt + pb, w + pl + pr, n), x.dtype)
    if pt or pb or pl or pr:
        x_last.fill(0)
    x_last[:, pt:pt + h, pl:pl + w] = x.transpose(1, 2, 3, 0)
    cols = scratch.take((c * kh * kw, oh * ow * n), x.dtype)
    # every window of every channel as one strided view, copied in one call: the same bytes as a
    # copy per kernel offset, 13% faster for LeNet's layers (KH*KW fewer NumPy calls)
    s_c, s_h, s_w, s_n = x_last.strides
    windows = as_strided(x_last, shape=(c, kh, kw, oh, ow, n),
                         strides=(s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw, s_n), writeable=False)
    np.copyto(cols.reshape(c, kh, kw, oh, ow, n), windows)
    scratch.give(x_last)
    return cols


def _collecting(chunks, kept: list):
    """Yields the chunks, appending each to kept as it passes."""
    for chunk in chunks:
        kept.append(chunk)
        yield chunk


def _spread_windows(contrib, dx_shape, kh, kw, sh, sw, dh, dw, top, left, pad_h, pad_w):
    """Sum window-shaped contributions back onto the input grid.

    contrib(i, j) returns the (N, C, OH, OW) values that kernel offset (i, j) adds; the
    loop runs over kernel offsets only, each a strided whole-tensor add.
    """
    n, c, h, w = dx_shape
    dxpad = np.zeros((n, c, pad_h, pad_w), dtype=np.result_type(contrib(0, 0)))
    for i in range(kh):
        for j in range(kw):
            values = contrib(i, j)
            oh, ow = values.shape[-2:]
            dxpad[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                  j * dw:j * dw + sw * (ow - 1) + 1:sw] += values
    return np.ascontiguousarray(dxpad[:, :, top:top + h, left:left + w])


def _products_over_long_axis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (G, R, L), b: (G, K, L) -> (G, K, R) = b @ a.T, summed over the long axis L.

    When the result is tiny (a first conv layer's weight gradient: 6 x 25) and L long, OpenBLAS
    cannot split the product over threads and streams L from memory on one core; summing
    products of 1024-long blocks (in block order, so the result is reproducible) runs about
    2.5x faster there. Otherwise it is the plain product, in the orientation OpenBLAS runs
    fastest for these shapes ((a @ b.T).T, about 1.5x faster than b @ a.T).
    """
    g, r, length = a.shape
    k = b.shape[1]
    block = 1024
    blocks = length // block
    if r * k > 1024 or blocks < 4:
        return np.matmul(a, b.transpose(0, 2, 1)).transpose(0, 2, 1)
    head = blocks * block
    total = np.matmul(a[:, :, :head].reshape(g, r, blocks, block).transpose(0, 2, 1, 3),
                      b[:, :, :head].reshape(g, k, blocks, block).transpose(0, 2, 3, 1)).sum(axis=1)
    if head < length:
        total += np.matmul(a[:, :, head:], b[:, :, head:].transpose(0, 2, 1))
    return total.transpose(0, 2, 1)


def _filter_product(w_mat: np.ndarray, cols: np.ndarray, out: np.ndarray) -> np.ndarray:
    """w_mat: (G, K, R) @ cols: (G, R, L) -> out: (G, K, L).

    For a few filters and a long L (LeNet's first layer: 6 x 25 @ 25 x 25088 for 32 images)
    OpenBLAS runs one call about 1.5x slower than the same product over column blocks of 4096
    (each block's panel of cols stays in L2): LeNet-5 inference at batch 1024 got 15% faster.
    """
    g, k, r = w_mat.shape
    length = cols.shape[2]
    if k > 8 or length <= 2 * 4096:
        return np.matmul(w_mat, cols, out=out)
    for start in range(0, length, 4096):
        np.matmul(w_mat, cols[:, :, start:start + 4096], out=out[:, :, start:start + 4096])
    return out


def _pool_geometry(h, w, kernel, stride, padding, ceil_mode):
    """Output size and the padded extent that every window fits inside."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = pool_output_hw((h, w), kernel, stride, padding, ceil_mode)
    bottom = max(0, (oh - 1) * sh + kh - ph - h)
    right = max(0, (ow - 1) * sw + kw - pw - w)
    return oh, ow, bottom, right


def _windows_tile(kernel, stride, padding, in_hw, out_hw) -> bool:
    """True when pooling windows neither overlap nor stick out: each input cell is in at most one."""
    return (tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)
            and out_hw[0] * kernel[0] <= in_hw[0] and out_hw[1] * kernel[1] <= in_hw[1])


def _tiled_windows(a: np.ndarray, kernel, out_hw) -> list[np.ndarray]:
    """For a: (K, H, W, m) and non-overlapping windows, one strided view (K, OH, OW, m) per kernel
    offset, in row-major offset order; writing to a view writes into ``a``."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return [a[:, i:oh * kh:kh, j:ow * kw:kw] for i in range(kh) for j in range(kw)]


def _running_max(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The elementwise maximum over ``views`` (one per kernel offset, in order) and the index of
    the view it came from, the first on ties. NaN is not handled: a NaN maximum's index is
    arbitrary. uint8 indices (the largest value stays free for a caller's marker) when they fit."""
    best = np.array(views[0])
    offset = np.zeros(best.shape, dtype=np.uint8 if len(views) < 255 else np.int32)
    for index in range(1, len(views)):
        view = views[index]
        taken = np.greater(view, best)
        np.maximum(best, view, out=best)
        # the winning index only grows during the scan, so np.maximum tracks it (np.where and
        # masked copies are several times slower)
        np.maximum(offset, np.multiply(taken, index, dtype=offset.dtype), out=offset)
    return best, offset


def _max_of_four_with_offset(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``_running_max`` of exactly four views (a 2x2 pooling window), the same values and indices
    (the first on ties), as a tournament: the two pairs, then their winners. Three float passes
    fewer than the running scan and the index kept in bytes: 25% faster at LeNet's shapes."""
    v0, v1, v2, v3 = views
    top, bottom = np.maximum(v0, v1), np.maximum(v2, v3)
    first = np.greater(v1, v0).view(np.uint8)  # the top pair's winner: 0 or 1
    second = np.greater(v3, v2).view(np.uint8)  # the bottom pair's: 0 or 1, meaning 2 or 3
    bottom_wins = np.greater(bottom, top).view(np.uint8)  # strictly: a tie stays with the earlier pair
    # offset = 2 + second where the bottom pair wins, else first: select by bit masks on bytes
    np.bitwise_xor(second, first, out=second)
    np.bitwise_and(second, bottom_wins, out=second)
    np.bitwise_xor(second, first, out=second)
    np.left_shift(bottom_wins, 1, out=bottom_wins)
    np.bitwise_or(second, bottom_wins, out=second)
    return np.maximum(top, bottom, out=top), second


def _mark_dead_windows(offset: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Offsets (uint8) set to 255 where the window's maximum is not > 0 (or is NaN): after the
    ReLU such windows pass no gradient. Byte arithmetic: (best > 0) - 1 is 0 or 255."""
    if offset.dtype != np.uint8:
        np.copyto(offset, np.iinfo(offset.dtype).max, where=~(best > 0))
        return offset
    dead = np.greater(best, 0).view(np.uint8)
    np.subtract(dead, 1, out=dead)
    return np.bitwise_or(offset, dead, out=offset)


def _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, dtype):
    """PyTorch's divisor: the window clipped to input+padding, or to the input alone."""
    def axis(size, out, k, s, p):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        full = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        return full, inside

    full_h, in_h = axis(h, oh, kernel[0], stride[0], padding[0])
    full_w, in_w = axis(w, ow, kernel[1], stride[1], padding[1])
    if count_include_pad:
        return np.outer(full_h, full_w).astype(dtype)
    return np.outer(in_h, in_w).astype(dtype)


def _hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array (wrap-around multiply is what the kernel does too)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def dropout_mask(shape: tuple[int, ...], p: float, seed: int) -> np.ndarray:
    """uint8 keep-mask, a pure function of (seed, flat index): the reference for dropout.cu."""
    return _dropout_mask_for_key(shape, p, dropout_key(seed))


def _hash32_in_place(x: np.ndarray) -> np.ndarray:
    """``_hash32`` of a uint32 array, overwriting it (one scratch array instead of ten temporaries)."""
    shifted = np.empty_like(x)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        np.right_shift(x, np.uint32(shift), out=shifted)
        x ^= shifted
        x *= np.uint32(multiplier)
    np.right_shift(x, np.uint32(16), out=shifted)
    x ^= shifted
    return x


def _dropout_mask_for_key(shape: tuple[int, ...], p: float, key: int) -> np.ndarray:
    count = int(np.prod(shape))
    if count <= 1 << 32:
        # every index's high half is 0, so the inner hash is one number, hash32(key): one hash in
        # place over uint32 indices instead of two over uint64 temporaries, the same bits 3x faster
        # (7.1 -> 2.3 ms for the examples/mnist net's first dropout at batch 64)
        h = np.arange(count, dtype=np.uint32)
        h ^= np.uint32(hash32(key))
        _hash32_in_place(h)
        h >>= np.uint32(8)
        return np.greater_equal(h, np.uint32(dropout_threshold(p))).view(np.uint8).reshape(shape)
    index = np.arange(count, dtype=np.uint64)
    low = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    h = _hash32(low ^ _hash32(high ^ np.uint32(key)))
    keep = (h >> np.uint32(8)) >= np.uint32(dropout_threshold(p))
    return keep.astype(np.uint8).reshape(shape)


class NumpyBackend(BatchHalves, Backend):
    name = "numpy"
    xp = np
    array_type = np.ndarray
    #: how many forward im2col matrices are kept for their backward pass (oldest dropped first)
    SAVED_COLUMNS = 8
    #: convolutions run over the batch in chunks of this many images: with the batch innermost in
    #: im2col, a larger chunk makes the transposes stride past a page per element, and the im2col
    #: buffer stays small (1.3 MB for LeNet's first layer); 64 measured best on the 2-core machine
    BATCH_CHUNK = 64
    #: LeNet-5 inference at batch 1024 on the 2-core machine: 57 ms whole, 44 ms in chunks of 32;
    #: chunks of 48 are 5-10% faster again than 32 and than 64 in quiet minutes (interleaved in one
    #: process; in loaded minutes 32 and 48 trade places within +-6%), and as fast as 64 for ResNet-8
    #: and the examples/mnist net, whose larger GEMMs like bigger chunks
    eval_batch_chunk = 48
    #: plain convolutions (not the fused conv + ReLU + max-pool op LeNet-5 uses) run on (C, N, H, W)
    #: images ("Convolution on (C, N, H, W) images" below); False: the batch-innermost im2col path
    flat_conv = True
    #: images per chunk there: as many as keep the im2col matrix near this size, so that a chunk's
    #: columns are still in cache (32 MiB L3, 2 MiB L2 per core) when its product reads them.
    #: ResNet-8 inference at batch 256 on the 2-core machine, against 64 MiB: 0.78-0.80x with 4 MiB
    #: (8 MiB 0.85x, 2 MiB 0.83x, 1 MiB 1.03x)
    flat_chunk_bytes = 4 << 20
    #: ... and when a training forward keeps the columns for its backward pass, which reads them
    #: from memory whatever their size: ResNet-8 training with 4 or 8 MiB measured anywhere from
    #: 0.78x (batch 256) to 1.24x (batch 128) of 64 MiB from one run to the next
    flat_kept_chunk_bytes = 64 << 20
    #: stride-1 convolutions take the "shift" path when its padded grid is at most this many times
    #: the output ...
    flat_max_waste = 1.4
    #: ... else this path (None: the batch-innermost im2col path; "gather" measured 2% slower)
    flat_small_mode: str | None = None

    def __init__(self) -> None:
        # id(x) -> (x, geometry, [(start, stop, cols)]): a training forward keeps its im2col
        # matrices so the backward pass need not build them again; holding x keeps its id from
        # being reused meanwhile
        self._saved_columns: dict[int, tuple[np.ndarray, tuple, list[tuple[int, int, np.ndarray]]]] = {}
        # id(argmax) -> (argmax, offset): max pooling's winning kernel offset per window (uint8), so
        # the backward pass compares a quarter of the bytes that the int32 argmax would take
        self._saved_offsets: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._scratch = _Scratch()
        # id(x) -> (x, split, (x[:split], x[split:])): see BatchHalves
        self._saved_halves: dict[int, tuple] = {}

    def _new_part(self) -> NumpyBackend:
        part = type(self)()
        part._is_part = True
        return part

    @staticmethod
    def _remember(cache: dict, key: int, value: tuple, limit: int) -> None:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = value

    @staticmethod
    def _recall(cache: dict, x: np.ndarray, geometry) -> object | None:
        """What a forward remembered for x as (x, geometry, value), taken out of the cache; None when
        it kept nothing for this very array at this geometry."""
        saved = cache.pop(id(x), None)
        if saved is not None and saved[0] is x and saved[1] == geometry:
            return saved[2]
        return None

    def _columns(self, x, kh, kw, stride, padding, dilation, oh, ow, keep=False, reuse=False):
        """Yields x's im2col matrix for each batch chunk as (start, stop, cols), one chunk at a time
        (see _lazily_kept); reused from a training forward when one kept them."""
        geometry = (x.shape, x.dtype, kh, kw, stride, padding, dilation)
        if reuse:
            saved = self._recall(self._saved_columns, x, geometry)
            if saved is not None:
                return iter(saved)
        n, step = x.shape[0], self.BATCH_CHUNK
        chunks = ((start, min(start + step, n),
                   _im2col(x[start:start + step], kh, kw, stride, padding, dilation, oh, ow, self._scratch))
                  for start in range(0, n, step))
        return self._lazily_kept(chunks, x, geometry) if keep else chunks

    def _lazily_kept(self, chunks, x, geometry):
        """Yields the chunks as they are built and, once all were asked for, remembers them for x's
        backward pass. Built one at a time, each chunk's product reads its columns while they are
        still in cache; building every chunk first read them all back from memory (ResNet-8's
        16-channel 32x32 convolution forward at batch 128: 22 ms that way, 14 ms chunk by chunk in
        cache-sized chunks; benchmarks/results/cpu-lazy-columns-2026-11-24.md)."""
        kept: list = []
        yield from _collecting(chunks, kept)
        self._remember(self._saved_columns, id(x), (x, geometry, kept), self.SAVED_COLUMNS)

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype, order="C")  # ascontiguousarray would make a 0-d array 1-d

    def to_numpy(self, a):
        return np.asarray(a)

    # ---------------------------------------------------------------- convolution
    def _conv_chunks(self, w, b, column_chunks, oh, ow, groups, keep_columns):
        """Yields (start, stop, conv): each batch chunk's convolution plus bias, still in the
        batch-innermost layout of its im2col columns, conv: (K, OH, OW, m), valid until the next
        chunk is asked for. Columns not kept for a backward pass go back to the scratch pool."""
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        w_mat = w.reshape(groups, k // groups, r)
        for start, stop, cols in column_chunks:
            part = self._scratch.take((k, oh * ow * (stop - start)), w.dtype)
            _filter_product(w_mat, cols.reshape(groups, r, -1), part.reshape(groups, k // groups, -1))
            if not keep_columns:
                self._scratch.give(cols)
            # the bias on the chunk while it is in cache, not as a pass over the whole output
            if b is not None:
                part += b[:, None]
            yield start, stop, part.reshape(k, oh, ow, stop - start)
            self._scratch.give(part)

    # x: (N, C, H, W), w: (K, C/G, KH, KW) -> y: (N, K, OH, OW)
    def _whole_conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False, keep_for_backward=False):
        n = x.shape[0]
        k, _, kh, kw = w.shape
        oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
        mode = self._cnhw_mode(x.shape, w.shape, stride, padding, groups, oh, ow)
        if mode is not None:
            return self._cnhw_conv_forward(x, w, b, stride, padding, dilation, groups, oh, ow, relu,
                                           keep_for_backward, mode)
        column_chunks = self._columns(x, kh, kw, stride, padding, dilation, oh, ow, keep=keep_for_backward)
        y = np.empty((n, k, oh, ow), dtype=x.dtype)
        for start, stop, conv in self._conv_chunks(w, b, column_chunks, oh, ow, groups, keep_for_backward):
            if relu:
                np.maximum(conv, 0, out=conv)
            y[start:stop] = conv.transpose(3, 0, 1, 2)
        return y

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def _whole_conv2d_backward(self, dy, x, w, stride, padding, dilation, groups, need_input_grad=True):
        kh, kw = w.shape[2:]
        oh, ow = dy.shape[2:]
        mode = self._cnhw_mode(x.shape, w.shape, stride, padding, groups, oh, ow)
        if mode is not None:
            return self._cnhw_conv_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad, mode)
        column_chunks = self._columns(x, kh, kw, stride, padding, dilation, oh, ow, reuse=True)
        # dy with the batch innermost, (K, OH, OW, m), matching the columns of _im2col
        chunks = ((chunk, self._batch_last(dy[chunk[0]:chunk[1]])) for chunk in column_chunks)
        return self._conv_backward_chunks(chunks, x.shape, w, stride, padding, dilation, groups, need_input_grad)

    # ---------------------------------------------------------------- convolution on (C, N, H, W) images
    # Wider networks (ResNet: 16-64 channels at 8x8 to 32x32) spend their time elsewhere than
    # LeNet-5: the batch-innermost layout transposes element by element (stride C*H*W) four times
    # per conv per step, which dominated ResNet-8 on 2 cores. These paths lay each batch chunk out
    # (C, m, Hp, Wp), padded, so every transpose to and from NCHW moves whole image rows:
    # - "shift" (stride 1): the images flattened to one row per channel, where the output pixel at
    #   flat position p reads the input at p + i*dh*Wp + j*dw for kernel offset (i, j). Each im2col
    #   row is ONE contiguous slice (a memcpy) and col2im adds whole rows; the price is that the
    #   product also covers the Hp - OH and Wp - OW padding positions (1.13x the output at 32x32 with
    #   padding 1), whose output is dropped and whose gradient is set to zero.
    # - "gather" (strided convolutions): each kernel offset a strided view of the padded images,
    #   copied into its im2col row; the product is exactly (K, m, OH, OW).
    # - "pointwise" (1x1, no padding, e.g. ResNet's strided shortcut): no im2col at all, a product
    #   per image on the (subsampled) NCHW input.
    # LeNet-5 runs its convolutions as the fused conv + ReLU + max-pool op and never comes here.

    def _cnhw_mode(self, x_shape, w_shape, stride, padding, groups, oh, ow) -> str | None:
        """Which path above a convolution takes; None: the batch-innermost im2col path."""
        if not self.flat_conv:
            return None
        if tuple(w_shape[2:]) == (1, 1) and tuple(padding) == (0, 0, 0, 0) and groups == 1:
            return "pointwise"
        if tuple(stride) != (1, 1):
            return "gather"
        padded = (x_shape[2] + padding[0] + padding[1]) * (x_shape[3] + padding[2] + padding[3])
        # ResNet-8 per conv, forward + backward at batch 128: at 32x32 (padded grid 1.13x the
        # output) 1.7x faster than the im2col path, at 16x16 (1.27x) 1.3x, at 8x8 (1.56x) 1.15x slower
        return "shift" if padded <= self.flat_max_waste * oh * ow else self.flat_small_mode

    @staticmethod
    def _cnhw_geometry(x_shape, kh, kw, padding, dilation, oh, ow, mode):
        """(Hp, Wp, the product's grid (GH, GW), tail, shifts): shift mode computes on the padded grid,
        and its last image's windows read ``tail`` elements past the end (zeros)."""
        hp, wp = x_shape[2] + padding[0] + padding[1], x_shape[3] + padding[2] + padding[3]
        if mode != "shift":
            return hp, wp, (oh, ow), 0, None
        tail = (kh - 1) * dilation[0] * wp + (kw - 1) * dilation[1]
        shifts = [i * dilation[0] * wp + j * dilation[1] for i in range(kh) for j in range(kw)]
        return hp, wp, (hp, wp), tail, shifts

    def _cnhw_chunk(self, x_shape, kh, kw, grid, keep) -> int:
        """Images per chunk: as many as keep the chunk's im2col matrix near ``flat_chunk_bytes``
        (``flat_kept_chunk_bytes`` for columns kept for a backward pass)."""
        per_image = 4 * x_shape[1] * kh * kw * grid[0] * grid[1]
        size = self.flat_kept_chunk_bytes if keep else self.flat_chunk_bytes
        return max(1, min(x_shape[0], size // max(1, per_image)))

    def _cnhw_columns(self, x, kh, kw, stride, padding, dilation, oh, ow, mode, keep=False, reuse=False):
        """Yields (start, stop, cols), cols: (C*KH*KW, m*GH*GW), one chunk at a time (see
        _lazily_kept); reused from a training forward when kept."""
        geometry = (mode, x.shape, x.dtype, kh, kw, stride, padding, dilation)
        if reuse:
            saved = self._recall(self._saved_columns, x, geometry)
            if saved is not None:
                return iter(saved)
        chunks = self._cnhw_column_chunks(x, kh, kw, stride, padding, dilation, oh, ow, mode, keep)
        return self._lazily_kept(chunks, x, geometry) if keep else chunks

    def _cnhw_column_chunks(self, x, kh, kw, stride, padding, dilation, oh, ow, mode, keep):
        n, c, h, w = x.shape
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
        hp, wp, grid, tail, shifts = self._cnhw_geometry(x.shape, kh, kw, padding, dilation, oh, ow, mode)
        step = self._cnhw_chunk(x.shape, kh, kw, grid, keep)
        for start in range(0, n, step):
            stop = min(start + step, n)
            m = stop - start
            flat = self._scratch.take((c, m * hp * wp + tail), x.dtype)
            images = flat[:, :m * hp * wp].reshape(c, m, hp, wp)
            if pt or pb or pl or pr:  # zero only the border, not the whole buffer
                images[:, :, :pt] = 0
                images[:, :, pt + h:] = 0
                images[:, :, pt:pt + h, :pl] = 0
                images[:, :, pt:pt + h, pl + w:] = 0
            flat[:, m * hp * wp:] = 0
            images[:, :, pt:pt + h, pl:pl + w] = x[start:stop].transpose(1, 0, 2, 3)
            length = m * grid[0] * grid[1]
            if shifts == [0] and not tail:
                cols = flat  # a 1x1 convolution: the image rows are the columns
            else:
                cols = self._scratch.take((c * kh * kw, length), x.dtype)
                rows = cols.reshape(c, kh * kw, length)
                if shifts is not None:
                    for index, shift in enumerate(shifts):
                        rows[:, index] = flat[:, shift:shift + length]
                else:
                    windows = rows.reshape(c, kh * kw, m, oh, ow)
                    for i in range(kh):
                        for j in range(kw):
                            windows[:, i * kw + j] = images[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                                            j * dw:j * dw + sw * (ow - 1) + 1:sw]
                self._scratch.give(flat)
            yield start, stop, cols

    def _cnhw_conv_forward(self, x, w, b, stride, padding, dilation, groups, oh, ow, relu, keep_for_backward,
                           mode):
        if mode == "pointwise":
            return self._pointwise_forward(x, w, b, stride, oh, ow, relu)
        n = x.shape[0]
        k, cg, kh, kw = w.shape
        grid = self._cnhw_geometry(x.shape, kh, kw, padding, dilation, oh, ow, mode)[2]
        w_mat = w.reshape(groups, k // groups, cg * kh * kw)
        y = np.empty((n, k, oh, ow), dtype=x.dtype)
        for start, stop, cols in self._cnhw_columns(x, kh, kw, stride, padding, dilation, oh, ow, mode,
                                                    keep=keep_for_backward):
            part = self._scratch.take((k, cols.shape[1]), x.dtype)
            _filter_product(w_mat, cols.reshape(groups, cg * kh * kw, -1), part.reshape(groups, k // groups, -1))
            if not keep_for_backward:
                self._scratch.give(cols)
            valid = part.reshape(k, stop - start, *grid)[:, :, :oh, :ow]
            if b is not None:
                valid += b[:, None, None, None]
            if relu:
                np.maximum(valid, 0, out=valid)
            y[start:stop] = valid.transpose(1, 0, 2, 3)
            self._scratch.give(part)
        return y

    def _cnhw_conv_backward(self, dy, x, w, stride, padding, dilation, groups, need_input_grad, mode):
        if mode == "pointwise":
            return self._pointwise_backward(dy, x, w, stride, need_input_grad)
        n, c, h, wd = x.shape
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        oh, ow = dy.shape[2:]
        (sh, sw), (pt, _, pl, _), (dh, dw_) = stride, padding, dilation
        hp, wp, grid, tail, shifts = self._cnhw_geometry(x.shape, kh, kw, padding, dilation, oh, ow, mode)
        w_t = w.reshape(groups, k // groups, r).transpose(0, 2, 1)
        dx = np.empty(x.shape, dtype=w.dtype) if need_input_grad else None
        dw = db = None
        for start, stop, cols in self._cnhw_columns(x, kh, kw, stride, padding, dilation, oh, ow, mode, reuse=True):
            m = stop - start
            length = m * grid[0] * grid[1]
            # dy on the product's grid, zero at the padding positions so they add nothing to dw or dx
            flat_dy = self._scratch.take((k, length), dy.dtype)
            cells = flat_dy.reshape(k, m, *grid)
            cells[:, :, oh:] = 0
            cells[:, :, :oh, ow:] = 0
            cells[:, :, :oh, :ow] = dy[start:stop].transpose(1, 0, 2, 3)
            dy_rows = flat_dy.reshape(groups, k // groups, length)
            part = _products_over_long_axis(cols.reshape(groups, r, length), dy_rows)
            dw = part if dw is None else dw + part  # chunks summed in order: deterministic
            db_part = flat_dy.sum(axis=-1)
            db = db_part if db is None else db + db_part
            if need_input_grad:
                dflat = self._scratch.take((c, m * hp * wp + tail), w.dtype)
                if shifts == [0] and not tail:
                    np.matmul(w_t, dy_rows, out=dflat.reshape(groups, r, length))
                else:
                    dcols = self._scratch.take((c * kh * kw, length), w.dtype)
                    np.matmul(w_t, dy_rows, out=dcols.reshape(groups, r, length))
                    offsets = dcols.reshape(c, kh * kw, length)
                    if shifts is not None:
                        # col2im on the flat rows: shift 0 comes first, so no zero fill under it
                        dflat[:, :length] = offsets[:, 0]
                        dflat[:, length:] = 0
                        for index in range(1, len(shifts)):
                            dflat[:, shifts[index]:shifts[index] + length] += offsets[:, index]
                    else:
                        dflat.fill(0)
                        images = dflat.reshape(c, m, hp, wp)
                        windows = offsets.reshape(c, kh * kw, m, oh, ow)
                        for i in range(kh):
                            for j in range(kw):
                                images[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                       j * dw_:j * dw_ + sw * (ow - 1) + 1:sw] += windows[:, i * kw + j]
                    self._scratch.give(dcols)
                images = dflat[:, :m * hp * wp].reshape(c, m, hp, wp)
                dx[start:stop] = images[:, :, pt:pt + h, pl:pl + wd].transpose(1, 0, 2, 3)
                self._scratch.give(dflat)
            self._scratch.give(cols, flat_dy)
        return dx, np.ascontiguousarray(dw.reshape(w.shape)), db

    @staticmethod
    def _pointwise_input(x, stride):
        """x sampled at the output pixels: (N, C, OH*OW), contiguous."""
        if tuple(stride) != (1, 1):
            x = np.ascontiguousarray(x[:, :, ::stride[0], ::stride[1]])
        return x.reshape(x.shape[0], x.shape[1], -1)

    def _pointwise_forward(self, x, w, b, stride, oh, ow, relu):
        y = np.matmul(w.reshape(w.shape[0], -1), self._pointwise_input(x, stride))
        if b is not None:
            y += b[:, None]
        if relu:
            np.maximum(y, 0, out=y)
        return y.reshape(x.shape[0], -1, oh, ow)

    def _pointwise_backward(self, dy, x, w, stride, need_input_grad):
        n, k = dy.shape[:2]
        dy3 = dy.reshape(n, k, -1)
        # per image (K, OH*OW) @ (OH*OW, C), summed over the batch in order
        dw = np.matmul(dy3, self._pointwise_input(x, stride).transpose(0, 2, 1)).sum(axis=0)
        db = (dy3 @ np.ones(dy3.shape[2], dtype=dy.dtype)).sum(axis=0)
        dx = None
        if need_input_grad:
            dxs = np.matmul(w.reshape(k, -1).T, dy3).reshape(n, x.shape[1], *dy.shape[2:])
            if tuple(stride) == (1, 1):
                dx = dxs
            else:
                dx = np.zeros(x.shape, dtype=dy.dtype)
                dx[:, :, ::stride[0], ::stride[1]] = dxs
        return dx, dw.reshape(w.shape), db

    def _batch_last(self, a: np.ndarray) -> np.ndarray:
        """a: (m, K, H, W) -> (K, H, W, m), contiguous, in a scratch array."""
        out = self._scratch.take(a.shape[1:] + a.shape[:1], a.dtype)
        np.copyto(out, a.transpose(1, 2, 3, 0))
        return out

    def _conv_backward_chunks(self, chunks, x_shape, w, stride, padding, dilation, groups, need_input_grad):
        """(dx|None, dw, db) from ((start, stop, cols), dy_last) per batch chunk, where dy_last is
        that chunk's output gradient in the batch-innermost layout (K, OH, OW, m). The columns and
        dy_last are used up: they go back to the scratch pool."""
        n, c, h, wd = x_shape
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        w_t = w.reshape(groups, k // groups, r).transpose(0, 2, 1)
        (sh, sw), (dil_h, dil_w), (pt, pb, pl, pr) = stride, dilation, padding
        dw = db = None
        dx = np.empty(x_shape, dtype=w.dtype) if need_input_grad else None
        for (start, stop, cols), dy_chunk in chunks:
            _, oh, ow, m = dy_chunk.shape
            dy_last = dy_chunk.reshape(groups, k // groups, -1)
            part = _products_over_long_axis(cols.reshape(groups, r, -1), dy_last)
            dw = part if dw is None else dw + part  # chunks summed in order: deterministic
            # the bias gradient from dy's contiguous rows: faster than dy.sum(axis=(0, 2, 3))
            db_part = dy_last.sum(axis=-1).reshape(k)
            db = db_part if db is None else db + db_part
            if need_input_grad:
                dcols = self._scratch.take((c * kh * kw, oh * ow * m), w.dtype)
                np.matmul(w_t, dy_last, out=dcols.reshape(groups, r, -1))
                windows = dcols.reshape(c, kh, kw, oh, ow, m)
                # col2im, batch innermost like _im2col: inner loops of OW*m elements
                dx_last = self._scratch.take((c, h + pt + pb, wd + pl + pr, m), w.dtype)
                dx_last.fill(0)
                for i in range(kh):
                    rows = slice(i * dil_h, i * dil_h + sh * (oh - 1) + 1, sh)
                    for j in range(kw):
                        dx_last[:, rows, j * dil_w:j * dil_w + sw * (ow - 1) + 1:sw] += windows[:, i, j]
                dx[start:stop] = dx_last[:, pt:pt + h, pl:pl + wd].transpose(3, 0, 1, 2)
                self._scratch.give(dcols, dx_last)
            self._scratch.give(cols, dy_chunk)
        return dx, np.ascontiguousarray(dw.reshape(w.shape)), db

    # x: (N, C, H, W) -> y: (N, K, PH, PW) = maxpool(relu(conv(x) + b)), and what the backward needs
    def _whole_conv2d_relu_maxpool2d_forward(self, x, w, b, stride, padding, dilation, groups, kernel, pool_stride,
                                      pool_padding, ceil_mode, keep_for_backward=False):
        n = x.shape[0]
        k, _, kh, kw = w.shape
        oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
        ph, pw = pool_output_hw((oh, ow), kernel, pool_stride, pool_padding, ceil_mode)
        if not _windows_tile(kernel, pool_stride, pool_padding, (oh, ow), (ph, pw)):
            return composed_conv2d_relu_maxpool2d_forward(self, x, w, b, stride, padding, dilation, groups, kernel,
                                                       pool_stride, pool_padding, ceil_mode, keep_for_backward)
        # Each chunk is pooled while its convolution is in cache, in the columns' batch-innermost
        # layout (windows are strided views whose inner axis is the contiguous batch), and only the
        # pooled quarter is transposed to NCHW. ReLU comes after the max: max and ReLU commute, and
        # a window whose maximum is <= 0 passes no gradient, so where its argmax lands never matters.
        column_chunks: list = []  # kept for the backward pass as they are built
        built = self._columns(x, kh, kw, stride, padding, dilation, oh, ow)
        if keep_for_backward:
            built = _collecting(built, column_chunks)
        y = np.empty((n, k, ph, pw), dtype=x.dtype)
        offsets = []
        for start, stop, conv in self._conv_chunks(w, b, built, oh, ow, groups, keep_for_backward):
            windows = _tiled_windows(conv, kernel, (ph, pw))
            if keep_for_backward and len(windows) == 4:
                best, offset = _max_of_four_with_offset(windows)
                offsets.append(_mark_dead_windows(offset, best))
            elif keep_for_backward:
                best, offset = _running_max(windows)
                offsets.append(_mark_dead_windows(offset, best))
            else:
                best = windows[0].copy()
                for view in windows[1:]:
                    np.maximum(best, view, out=best)
            np.maximum(best, 0, out=best)
            y[start:stop] = best.transpose(3, 0, 1, 2)
        # per chunk: (start, stop, im2col matrix), and each window's winning offset or no-gradient marker
        return y, (ConvPoolState("tiled", (column_chunks, offsets, (oh, ow))) if keep_for_backward else None)

    # dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def _whole_conv2d_relu_maxpool2d_backward(self, dy, saved, x, w, stride, padding, dilation, groups, kernel,
                                       pool_stride, pool_padding, need_input_grad=True):
        if not isinstance(saved, ConvPoolState) or saved.kind != "tiled":
            return composed_conv2d_relu_maxpool2d_backward(self, dy, saved, x, w, stride, padding, dilation, groups,
                                                        kernel, pool_stride, pool_padding, need_input_grad)
        column_chunks, offsets, (oh, ow) = saved.use()  # its im2col matrices go back to the scratch pool
        k = w.shape[0]
        ph, pw = dy.shape[2:]
        kh, kw = kernel

        def unpooled(start, stop, offset):
            # each window's gradient to its winning offset, straight into the batch-innermost layout
            pooled = self._batch_last(dy[start:stop])
            dconv = self._scratch.take((k, oh, ow, stop - start), dy.dtype)
            if (ph * kh, pw * kw) != (oh, ow):
                dconv.fill(0)  # a floor-mode remainder no window covers
            for index, view in enumerate(_tiled_windows(dconv, kernel, (ph, pw))):
                np.multiply(pooled, offset == index, out=view)
            self._scratch.give(pooled)
            return dconv

        grads = (unpooled(start, stop, offset) for (start, stop, _), offset in zip(column_chunks, offsets))
        return self._conv_backward_chunks(zip(column_chunks, grads), x.shape, w, stride, padding, dilation,
                                          groups, need_input_grad)

    # ---------------------------------------------------------------- pooling
    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW)
    def maxpool2d_forward(self, x, kernel, stride, padding, ceil_mode):
        # A running maximum over the KH*KW kernel offsets, each a strided view of the whole
        # input: no window copy. The rule is maxpool2d.cu's: padding is never a candidate, the
        # first maximum wins ties, and the first NaN wins over everything.
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        windows = _window_view(_pad(x, ph, bottom, pw, right, -np.inf), kh, kw, sh, sw, 1, 1, oh, ow)
        corner = (np.arange(oh) * sh - ph)[:, None] * w + (np.arange(ow) * sw - pw)[None, :]
        if not np.isfinite(x).all():
            return self._maxpool2d_nonfinite(x.shape, windows, kernel, stride, padding, corner)
        # Finite input: "strictly greater" is exact, since any real element beats the -inf padding.
        best, offset = _running_max([windows[:, :, i, j] for i in range(kh) for j in range(kw)])
        steps = (np.arange(kh)[:, None] * w + np.arange(kw)[None, :]).ravel().astype(np.int32)
        argmax = np.take(steps, offset)
        argmax += corner.astype(np.int32)
        self._remember(self._saved_offsets, id(argmax), (argmax, offset), self.SAVED_COLUMNS)
        return best, argmax

    @staticmethod
    def _maxpool2d_nonfinite(x_shape, windows, kernel, stride, padding, corner):
        """The scan with NaN and validity tracking, for inputs holding NaN or infinities."""
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = corner.shape
        best = np.full((n, c, oh, ow), -np.inf, dtype=windows.dtype)
        argmax = np.full((n, c, oh, ow), -1, dtype=np.int32)
        rows0, cols0 = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
        for i in range(kh):
            for j in range(kw):
                rows, cols = rows0 + i, cols0 + j
                valid = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
                v = windows[:, :, i, j]
                # x <= y is False when either is NaN: this takes v > best and a first NaN; the
                # first valid element always takes an empty window
                take = (~(v <= best) & (best == best) | (argmax < 0)) & valid
                np.copyto(best, v, where=take)
                np.copyto(argmax, (corner + i * w + j).astype(np.int32), where=take)
        return best, argmax

    # dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W)
    def maxpool2d_backward(self, dy, argmax, x_shape, kernel, stride, padding, relu_output=None):
        if relu_output is not None:
            dy = self.relu_backward(dy, relu_output)
        h, w = x_shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = dy.shape[2:]
        if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and (h, w) == (oh * kh, ow * kw):
            # the windows tile the input exactly: every input cell is written once, no zero fill
            dx = np.empty(x_shape, dtype=dy.dtype)
            tiles = dx.reshape(x_shape[0], x_shape[1], oh, kh, ow, kw)
            saved = self._saved_offsets.pop(id(argmax), None)
            if saved is not None and saved[0] is argmax:
                offset = saved[1]
                for i in range(kh):
                    for j in range(kw):
                        np.multiply(dy, offset == i * kw + j, out=tiles[:, :, :, i, :, j])
                return dx
            corner = (np.arange(oh) * kh)[:, None] * w + (np.arange(ow) * kw)[None, :]
            for i in range(kh):
                for j in range(kw):
                    np.multiply(dy, argmax == corner + (i * w + j), out=tiles[:, :, :, i, :, j])
            return dx

        def routed(i, j):
            rows = np.arange(oh) * sh - ph + i
            cols = np.arange(ow) * sw - pw + j
            target = rows.reshape(oh, 1) * w + cols.reshape(1, ow)
            # positions in the padding must not alias a real element of another row
            valid = ((rows >= 0) & (rows < h)).reshape(oh, 1) & ((cols >= 0) & (cols < w))
            chosen = argmax == target
            if not valid.all():
                chosen &= valid
            return dy * chosen

        return _spread_windows(routed, x_shape, kh, kw, sh, sw, 1, 1, ph, pw,
                               max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))

    def avgpool2d_forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        n, c, h, w = x.shape
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        xpad = _pad(x, padding[0], bottom, padding[1], right, 0.0)
        sums = _window_view(xpad, *kernel, *stride, 1, 1, oh, ow).sum(axis=(2, 3))
        divisor = _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, x.dtype)
        return np.ascontiguousarray(sums / divisor)

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        h, w = x_shape[2:]
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        share = dy / _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, dy.dtype)
        return _spread_windows(lambda i, j: share, x_shape, *kernel, *stride, 1, 1,
                               padding[0], padding[1], h + padding[0] + bottom, w + padding[1] + right)

    # y = (sum x^p * KH*KW / count)^(1/p): PyTorch's LPPool2d, whose ceil-mode partial windows
    # are scaled up to a full window's size; p = inf is the window's max |x|, as in PyTorch.
    def lppool2d_forward(self, x, norm_type, kernel, stride, ceil_mode):
        if norm_type == np.inf:
            return np.ascontiguousarray(self._abs_windows(x, kernel, stride, ceil_mode).max(axis=(2, 3)))
        # a negative x^p or the root of a negative sum is NaN, as in PyTorch: no warning for it
        with np.errstate(invalid="ignore"):
            mean = self.avgpool2d_forward(x ** norm_type, kernel, stride, (0, 0), ceil_mode, True)
            return (mean * (kernel[0] * kernel[1])) ** (1.0 / norm_type)

    def lppool2d_backward(self, dy, x, y, norm_type, kernel, stride, ceil_mode):
        if norm_type == np.inf:
            return self._max_norm_backward(dy, x, kernel, stride, ceil_mode)
        # dy/dx_i = KH*KW/count * x_i^(p-1) * y^(1-p). Only a zero norm is skipped (0/0, which
        # PyTorch sets to 0): a negative y (p = 1) passes its gradient and a NaN y passes NaN,
        # except at p = 1, a plain sum whose gradient (y^0 = 1) does not depend on x (PyTorch
        # gives 0 there). 0^(p-1) for p < 1 is inf, as in PyTorch.
        zero = y == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            outer = np.where(zero, 0, dy * np.where(zero, 1, y) ** (1 - norm_type)) * (kernel[0] * kernel[1])
            spread = self.avgpool2d_backward(outer, x.shape, kernel, stride, (0, 0), ceil_mode, True)
            return spread * x ** (norm_type - 1)

    @staticmethod
    def _abs_windows(x, kernel, stride, ceil_mode):
        """|x|'s windows (N, C, KH, KW, OH, OW); a ceil-mode window's cells past the input hold -1,
        below every |x|, so they never win."""
        h, w = x.shape[2:]
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, (0, 0), ceil_mode)
        return _window_view(_pad(np.abs(x), 0, bottom, 0, right, -1.0), *kernel, *stride, 1, 1, oh, ow)

    def _max_norm_backward(self, dy, x, kernel, stride, ceil_mode):
        """sign(x) * dy to the element each window's max |x| came from: the first on ties, as
        PyTorch, and the first NaN (lppool2d.cu's rule; np.argmax's too). sign(NaN) is NaN, where
        PyTorch's is 0: a NaN window's gradient stays NaN."""
        (kh, kw), (sh, sw) = kernel, stride
        h, w = x.shape[2:]
        windows = self._abs_windows(x, kernel, stride, ceil_mode)
        n, c, _, _, oh, ow = windows.shape
        winner = np.argmax(windows.reshape(n, c, kh * kw, oh, ow), axis=2)
        bottom, right = _pool_geometry(h, w, kernel, stride, (0, 0), ceil_mode)[2:]
        signs = np.sign(_window_view(_pad(x, 0, bottom, 0, right, 0.0), kh, kw, sh, sw, 1, 1, oh, ow))
        return _spread_windows(lambda i, j: np.where(winner == i * kw + j, dy * signs[:, :, i, j], 0), x.shape,
                               kh, kw, sh, sw, 1, 1, 0, 0, h + bottom, w + right)

    # ---------------------------------------------------------------- activations
    def relu_forward(self, x):
        return np.maximum(x, 0)

    def relu_backward(self, dy, y):
        # a multiply by the mask, as relu_backward in activations.cu: 13x faster than np.where
        return dy * (y > 0)

    def leaky_relu_forward(self, x, negative_slope):
        return np.where(x > 0, x, x * x.dtype.type(negative_slope))

    def leaky_relu_backward(self, dy, x, negative_slope):
        return np.where(x > 0, dy, dy * dy.dtype.type(negative_slope))

    def sigmoid_forward(self, x):
        # the two-sided form never overflows exp()
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def sigmoid_backward(self, dy, y):
        return dy * y * (1 - y)

    def tanh_forward(self, x):
        return np.tanh(x)

    def tanh_backward(self, dy, y):
        return dy * (1 - y * y)

    def dropout_forward(self, x, p, seed):
        return self._dropout_with_key(x, p, dropout_key(seed))

    # keys: uint32 (steps, slots), step: int64 (1,): the key of row step[0], column slot (CUDA graphs)
    def dropout_forward_stepped(self, x, p, keys, step, slot):
        return self._dropout_with_key(x, p, int(keys[int(step[0]), slot]))

    @staticmethod
    def _dropout_with_key(x, p, key):
        mask = _dropout_mask_for_key(x.shape, p, key)
        return x * mask * x.dtype.type(dropout_scale(p)), mask

    def dropout_backward(self, dy, mask, p):
        scale = dy.dtype.type(dropout_scale(p))
        return dy * mask * scale

    # ---------------------------------------------------------------- fully connected
    # x: (M, K), w: (N, K), b: (N,) -> y: (M, N)
    def _whole_linear_forward(self, x, w, b, relu=False):
        y = x @ w.T
        if b is not None:
            y += b
        if relu:
            np.maximum(y, 0, out=y)
        return y

    # dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
    def _whole_linear_backward(self, dy, x, w, need_input_grad=True, relu_output=None):
        if relu_output is not None:
            dy = self.relu_backward(dy, relu_output)
        rows = dy.reshape(-1, dy.shape[-1])
        dx = dy @ w if need_input_grad else None
        return dx, rows.T @ x.reshape(-1, x.shape[-1]), rows.sum(axis=0)

    # ---------------------------------------------------------------- loss
    # logits: (N, K), labels: (N,) -> loss: (), dlogits: (N, K); label_smoothing eps as PyTorch's (unweighted)
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        losses, grad = self._softmax_rows(logits, labels, label_smoothing)
        return np.asarray(losses.sum() / logits.shape[0], dtype=logits.dtype), grad

    # total: float64 (1,), in place += the rows' losses added in order (cumsum is sequential)
    def softmax_cross_entropy_accumulate(self, logits, labels, total, label_smoothing=0.0):
        losses, grad = self._softmax_rows(logits, labels, label_smoothing)
        total += np.cumsum(losses.astype(np.float64))[-1:]
        return grad

    def _softmax_rows(self, logits, labels, label_smoothing):
        """(per-row loss, dlogits of the batch mean): what softmax_cross_entropy.cu writes."""
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_total = np.log(total[:, 0])
        rows = np.arange(n)
        grad = exp / total
        if label_smoothing:  # target (1 - eps) * onehot + eps / K
            losses = self._smoothed_rows(shifted, log_total, labels, label_smoothing)
            grad -= logits.dtype.type(label_smoothing / logits.shape[1])
            grad[rows, labels] -= logits.dtype.type(1 - label_smoothing)
        else:  # no 0 * inf terms: an infinite logit must not make the plain loss NaN
            losses = log_total - shifted[rows, labels]
            grad[rows, labels] -= 1
        grad /= n
        return losses, grad

    @staticmethod
    def _smoothed_rows(shifted, log_total, labels, eps):
        """Per-row loss (1 - eps) * -log p[label] + eps * mean_k -log p[k], with -log p = log_total - shifted."""
        nll = log_total - shifted[np.arange(len(shifted)), labels]
        return (1 - eps) * nll + eps * (log_total - shifted.mean(axis=1))

    # ---------------------------------------------------------------- a step's data and counter (CUDA graphs)
    def gather_batch(self, images, labels, order, offsets, step, batch_stride, count, max_shift, background):
        rows = int(step[0]) * batch_stride + np.arange(count)
        x, y = images[order[rows]], labels[order[rows]].astype(np.int32)
        if max_shift <= 0:
            return x, y
        _, _, h, w = x.shape
        sh = np.arange(h)[None, :] + offsets[rows, :1]  # (count, H) source rows
        sw = np.arange(w)[None, :] + offsets[rows, 1:]  # (count, W) source columns
        inside = ((sh >= 0) & (sh < h))[:, None, :, None] & ((sw >= 0) & (sw < w))[:, None, None, :]
        picked = x[np.arange(count)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                   np.clip(sh, 0, h - 1)[:, None, :, None], np.clip(sw, 0, w - 1)[:, None, None, :]]
        return np.where(inside, picked, background).astype(x.dtype), y

    def step_advance(self, step):
        step += 1

    # ---------------------------------------------------------------- optimizers
    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay, nesterov):
        g = grad + param * param.dtype.type(weight_decay) if weight_decay else grad
        if velocity is not None:
            velocity *= param.dtype.type(momentum)
            velocity += g
            g = g + velocity * param.dtype.type(momentum) if nesterov else velocity
        param -= param.dtype.type(lr) * g

    def adam_update(self, param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        root = param.dtype.type(np.sqrt(1 - beta2 ** step))
        self._adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, lr / (1 - beta1 ** step),
                   lambda v: np.sqrt(v) / root)

    @staticmethod
    def _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, corrected_root):
        """One Adam update; corrected_root(v) = sqrt(v / (1 - beta2^t)), which the two callers round differently."""
        t = param.dtype.type
        if weight_decay and decoupled:
            param *= t(1 - lr * weight_decay)
        g = grad + param * t(weight_decay) if weight_decay and not decoupled else grad
        m *= t(beta1)
        m += t(1 - beta1) * g
        v *= t(beta2)
        v += t(1 - beta2) * g * g
        param -= t(step_size) * m / (corrected_root(v) + t(eps))

    def sgd_update_many(self, params, grads, velocities, lr, momentum, weight_decay, nesterov):
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            self.sgd_update(param, grad, None if velocities is None else velocities[i], lr, momentum, weight_decay,
                            nesterov)

    def adam_update_many(self, params, grads, ms, vs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
            self.adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)

    # hyper: (steps, 3) rows of lr, momentum, weight decay; (steps, 7) for Adam, as optimizers.cu's
    def sgd_update_many_stepped(self, params, grads, velocities, hyper, step, nesterov):
        lr, momentum, weight_decay = (float(h) for h in hyper[int(step[0])])
        self.sgd_update_many(params, grads, velocities, lr, momentum, weight_decay, nesterov)

    def adam_update_many_stepped(self, params, grads, ms, vs, hyper, step, decoupled):
        lr, beta1, beta2, eps, weight_decay, step_size, inv_bias2_sqrt = (float(h) for h in hyper[int(step[0])])
        scale = hyper.dtype.type(inv_bias2_sqrt)
        for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
            self._adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
                       lambda v: np.sqrt(v) * scale)
