"""Convolution on the CPU: the im2col paths of the NumPy backend.

Two layouts, each over the batch in chunks whose im2col matrix is built just before its product:
- batch innermost (``_im2col``): the columns are (C*KH*KW, OH*OW*m), which LeNet-5's small images
  and the fused conv + ReLU + max-pool op run on;
- images as (C, m, H, W) ("Convolution on (C, N, H, W) images" below), for wider networks.
``ConvolutionPaths`` is a part of ``NumpyBackend``: it uses the backend's scratch pool and its
``_remember``/``_recall`` caches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import cpu_threads
from .base import (
    ConvPoolState,
    composed_conv2d_relu_maxpool2d_backward,
    composed_conv2d_relu_maxpool2d_forward,
)
from .numpy_windows import _mark_dead_windows, _max_of_four_with_offset, _running_max, _tiled_windows, _windows_tile
from .shapes import conv_output_hw, pool_output_hw

if TYPE_CHECKING:
    from .numpy_backend import _Scratch


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


class _FlatGeometry(NamedTuple):
    """How the (C, N, H, W) paths (ConvolutionPaths) lay a convolution's input out."""

    grid: tuple[int, int]  #: the product's grid per image: (GH, GW) on the "shift" path, else (OH, OW)
    padded: tuple[int, int]  #: the padded image (Hp, Wp)
    row: int  #: a phase image's row length: SW * GW >= Wp (zeros past Wp)
    tail: int  #: zeros past the last image: the largest shift
    taps: tuple[tuple[int, int], ...] | None  #: per kernel offset (i, j): (its row phase, its flat shift)
    phases: tuple[tuple[slice, slice], ...]  #: per row phase: its rows that hold input rows, and those rows
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]

    @property
    def direct(self) -> bool:
        """An unstrided 1x1 convolution: the one phase's rows are the im2col columns themselves."""
        return self.taps == ((0, 0),) and self.stride == (1, 1)

    def phase(self, flat: np.ndarray, index: int) -> np.ndarray:
        """Phase ``index``'s channel rows of a (phases * C, ...) buffer."""
        c = flat.shape[0] // len(self.phases)
        return flat[index * c:(index + 1) * c]


def _phase_rows(pad_before: int, size: int, offset: int, step: int, cells: int) -> tuple[slice, slice]:
    """(phase rows, input rows): the rows of a row phase that hold input rows, where phase row q is
    padded row step * q + offset, and those input rows."""
    first = max(0, -(-(pad_before - offset) // step))
    stop = max(first, min(cells, -(-(pad_before + size - offset) // step)))
    start = step * first + offset - pad_before
    return slice(first, stop), slice(start, start + step * (stop - first), step)


class ConvolutionPaths:
    """NumpyBackend's convolutions: conv2d and the fused conv2d + ReLU + max-pool (their
    ``_whole_*`` versions; cpu_threads.BatchHalves may run them on batch halves)."""

    #: how many forward im2col matrices are kept for their backward pass (oldest dropped first)
    SAVED_COLUMNS = 8
    #: convolutions run over the batch in chunks of this many images: with the batch innermost in
    #: im2col, a larger chunk makes the transposes stride past a page per element, and the im2col
    #: buffer stays small (1.3 MB for LeNet's first layer); 64 measured best on the 2-core machine
    BATCH_CHUNK = 64
    #: the input gradient's products are formed in blocks of about this size where larger (see
    #: _col2im_products)
    col2im_block_bytes = 4 << 20
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
    #: 0.78x (batch 256) to 1.24x (batch 128) of 64 MiB from one run to the next (measured when
    #: every convolution kept its columns; now only strided ones do, see _keeps_columns)
    flat_kept_chunk_bytes = 64 << 20
    #: stride-1 convolutions take the "shift" path when its padded grid is at most this many times
    #: the output ...
    flat_max_waste = 1.4
    #: ... else this path (None: the batch-innermost im2col path; "gather" measured 2% slower)
    flat_small_mode: str | None = None
    #: strided convolutions take the "shift" path when its grid is at most this many times the output,
    #: else "gather". ResNet-8's two at batch 128, per conv, gather -> shift, forward + backward pass:
    #: 32x32 (grid 1.13x) 25-29 -> 21-24 ms, 16x16 (1.27x) 18-19 ms either way, inference 7.4 -> 9.2 ms
    flat_max_strided_waste = 1.2
    #: whether a training forward keeps the columns of a stride-1 convolution for its backward pass
    #: (strided ones always keep theirs; see _keeps_columns)
    flat_keep_unstrided_columns = False

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
    # - "shift": the images flattened to one row per channel, where the output pixel at flat
    #   position p reads the input at p + i*dh*Wp + j*dw for kernel offset (i, j). Each im2col row is
    #   ONE contiguous slice (a memcpy) and col2im adds whole rows; the price is that the product also
    #   covers the Hp - OH and Wp - OW padding positions (1.13x the output at 32x32 with padding 1),
    #   whose output is dropped and whose gradient is set to zero. A strided convolution first splits
    #   the padded images' rows into SH phases (rows a, a + SH, a + 2*SH, ...), copying whole rows,
    #   and runs the product on the grid (ceil(Hp/SH), ceil(Wp/SW)): output p of offset (i, j) reads
    #   row phase i*dh % SH at SW*p + (i*dh // SH)*row + j*dw, so its im2col row is one slice of step
    #   SW. Gathering instead copies short rows of OW pixels, one per output row and offset: ResNet-8's
    #   strided 3x3 backward pass, 128 images, 16 -> 32 channels at 32x32: 25 -> 19 ms.
    # - "gather" (strided convolutions whose phase grid is too wasteful): each kernel offset a strided
    #   view of the padded images, copied into its im2col row; the product is exactly (K, m, OH, OW).
    # - "pointwise" (1x1, no padding, e.g. ResNet's strided shortcut): no im2col at all, a product
    #   per image on the (subsampled) NCHW input.
    # LeNet-5 runs its convolutions as the fused conv + ReLU + max-pool op and never comes here.

    def _cnhw_mode(self, x_shape, w_shape, stride, padding, groups, oh, ow) -> str | None:
        """Which path above a convolution takes; None: the batch-innermost im2col path."""
        if not self.flat_conv:
            return None
        if tuple(w_shape[2:]) == (1, 1) and tuple(padding) == (0, 0, 0, 0) and groups == 1:
            return "pointwise"
        (sh, sw), (pt, pb, pl, pr) = stride, padding
        grid = -(-(x_shape[2] + pt + pb) // sh) * -(-(x_shape[3] + pl + pr) // sw)
        # ResNet-8 per conv, forward + backward at batch 128: at 32x32 (padded grid 1.13x the
        # output) 1.7x faster than the im2col path, at 16x16 (1.27x) 1.3x, at 8x8 (1.56x) 1.15x slower
        if (sh, sw) == (1, 1):
            return "shift" if grid <= self.flat_max_waste * oh * ow else self.flat_small_mode
        return "shift" if grid <= self.flat_max_strided_waste * oh * ow else "gather"

    @staticmethod
    def _cnhw_geometry(x_shape, kh, kw, stride, padding, dilation, oh, ow, mode) -> _FlatGeometry:
        """Where each kernel offset reads (see _FlatGeometry)."""
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
        hp, wp = x_shape[2] + pt + pb, x_shape[3] + pl + pr
        layout = (tuple(stride), tuple(padding), tuple(dilation))
        if mode != "shift":
            return _FlatGeometry((oh, ow), (hp, wp), wp, 0, None, (), *layout)
        gh, gw = -(-hp // sh), -(-wp // sw)
        row = sw * gw
        taps = tuple((i * dh % sh, (i * dh // sh) * row + j * dw) for i in range(kh) for j in range(kw))
        phases = tuple(_phase_rows(pt, x_shape[2], a, sh, gh) for a in range(sh))
        return _FlatGeometry((gh, gw), (hp, wp), row, max(shift for _, shift in taps), taps, phases, *layout)

    def _cnhw_chunk(self, x_shape, kh, kw, grid, keep) -> int:
        """Images per chunk: as many as keep the chunk's im2col matrix near ``flat_chunk_bytes``
        (``flat_kept_chunk_bytes`` for columns kept for a backward pass)."""
        per_image = 4 * x_shape[1] * kh * kw * grid[0] * grid[1]
        size = self.flat_kept_chunk_bytes if keep else self.flat_chunk_bytes
        return max(1, min(x_shape[0], size // max(1, per_image)))

    def _keeps_columns(self, geo: _FlatGeometry) -> bool:
        """Whether a training forward keeps this convolution's columns for its backward pass.

        Kept columns are built in 64 MiB chunks and written to memory; the product then reads them
        back from memory, and so does the backward pass. Built again by the backward pass, in
        cache-sized chunks, they cost one more copy per offset but no trip through memory. For a
        stride-1 convolution that pays: ResNet-8 at batch 128, per step, in one process with the
        two ways alternated (10 rounds), forward + backward, kept -> built again: 16 -> 16 channels
        at 32x32 (two convs) 94.4 -> 79.9 ms, 32 -> 32 at 16x16 32.4 -> 30.4, 64 -> 64 at 8x8 24.1
        -> 24.8, the first conv 10.2 -> 9.9. A strided convolution's columns are built from row
        phases (or gathered), which the backward pass would pay again: 16 -> 32 and 32 -> 64
        channels 20.7 -> 23.3 and 15.0 -> 20.1 ms, so they stay kept. Training memory falls too:
        the kept columns were ResNet-8's largest arrays (cpu-unkept-columns-2026-11-24.md). With
        the threads on, nothing is kept (cpu_threads says why)."""
        if not cpu_threads.keeps_columns():
            return False
        return self.flat_keep_unstrided_columns or tuple(geo.stride) != (1, 1)

    def _cnhw_columns(self, x, kh, kw, geo: _FlatGeometry, keep=False, reuse=False):
        """Yields (start, stop, cols), cols: (C*KH*KW, m*GH*GW), one chunk at a time (see
        _lazily_kept); reused from a training forward when kept."""
        if reuse:
            saved = self._recall(self._saved_columns, x, (x.shape, x.dtype, kh, kw, geo))
            if saved is not None:
                return iter(saved)
        chunks = self._cnhw_column_chunks(x, kh, kw, geo, keep)
        return self._lazily_kept(chunks, x, (x.shape, x.dtype, kh, kw, geo)) if keep else chunks

    def _cnhw_column_chunks(self, x, kh, kw, geo: _FlatGeometry, keep):
        n, c, h, w = x.shape
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = geo.stride, geo.padding, geo.dilation
        grid = geo.grid
        step = self._cnhw_chunk(x.shape, kh, kw, grid, keep)
        for start in range(0, n, step):
            stop = min(start + step, n)
            m = stop - start
            length = m * grid[0] * grid[1]
            if geo.taps is not None:
                flat = self._phase_images(x[start:stop], geo)
                if geo.direct:
                    cols = flat  # the image rows are the columns
                else:
                    cols = self._scratch.take((c * kh * kw, length), x.dtype)
                    rows = cols.reshape(c, kh * kw, length)
                    for index, (phase, shift) in enumerate(geo.taps):
                        rows[:, index] = geo.phase(flat, phase)[:, shift:shift + sw * length:sw]
                    self._scratch.give(flat)
                yield start, stop, cols
                continue
            images = self._scratch.take((c, m, *geo.padded), x.dtype)
            if pt or pb or pl or pr:  # zero only the border, not the whole buffer
                images[:, :, :pt] = 0
                images[:, :, pt + h:] = 0
                images[:, :, pt:pt + h, :pl] = 0
                images[:, :, pt:pt + h, pl + w:] = 0
            images[:, :, pt:pt + h, pl:pl + w] = x[start:stop].transpose(1, 0, 2, 3)
            cols = self._scratch.take((c * kh * kw, length), x.dtype)
            windows = cols.reshape(c, kh * kw, m, *grid)
            for i in range(kh):
                for j in range(kw):
                    windows[:, i * kw + j] = images[:, :, i * dh:i * dh + sh * (grid[0] - 1) + 1:sh,
                                                    j * dw:j * dw + sw * (grid[1] - 1) + 1:sw]
            self._scratch.give(images)
            yield start, stop, cols

    def _phase_images(self, x, geo: _FlatGeometry) -> np.ndarray:
        """x: (m, C, H, W) -> (SH * C, m*GH*row + tail): each row phase of the padded images flattened
        to one row per channel, zero at the padding and past the last image (the tail)."""
        m, c, h, w = x.shape
        size = m * geo.grid[0] * geo.row
        flat = self._scratch.take((len(geo.phases) * c, size + geo.tail), x.dtype)
        flat[:, size:] = 0
        pl = geo.padding[2]
        for index, (cell_rows, input_rows) in enumerate(geo.phases):
            cells = geo.phase(flat, index)[:, :size].reshape(c, m, geo.grid[0], geo.row)
            # zero only the cells outside the input, not the whole buffer
            cells[:, :, :cell_rows.start] = 0
            cells[:, :, cell_rows.stop:] = 0
            cells[:, :, cell_rows, :pl] = 0
            cells[:, :, cell_rows, pl + w:] = 0
            cells[:, :, cell_rows, pl:pl + w] = x[:, :, input_rows].transpose(1, 0, 2, 3)
        return flat

    def _cnhw_conv_forward(self, x, w, b, stride, padding, dilation, groups, oh, ow, relu, keep_for_backward,
                           mode):
        if mode == "pointwise":
            return self._pointwise_forward(x, w, b, stride, oh, ow, relu)
        n = x.shape[0]
        k, cg, kh, kw = w.shape
        geo = self._cnhw_geometry(x.shape, kh, kw, stride, padding, dilation, oh, ow, mode)
        w_mat = w.reshape(groups, k // groups, cg * kh * kw)
        y = np.empty((n, k, oh, ow), dtype=x.dtype)
        keep_for_backward = keep_for_backward and self._keeps_columns(geo)
        for start, stop, cols in self._cnhw_columns(x, kh, kw, geo, keep=keep_for_backward):
            part = self._scratch.take((k, cols.shape[1]), x.dtype)
            _filter_product(w_mat, cols.reshape(groups, cg * kh * kw, -1), part.reshape(groups, k // groups, -1))
            if not keep_for_backward:
                self._scratch.give(cols)
            valid = part.reshape(k, stop - start, *geo.grid)[:, :, :oh, :ow]
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
        geo = self._cnhw_geometry(x.shape, kh, kw, stride, padding, dilation, oh, ow, mode)
        grid = geo.grid
        w_t = w.reshape(groups, k // groups, r).transpose(0, 2, 1)
        dx = np.empty(x.shape, dtype=w.dtype) if need_input_grad else None
        dw = db = None
        for start, stop, cols in self._cnhw_columns(x, kh, kw, geo, reuse=True):
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
            if need_input_grad and geo.taps is not None:
                self._phase_input_grad(dx[start:stop], w_t, dy_rows, geo)
            elif need_input_grad:
                self._gathered_input_grad(dx[start:stop], w_t, dy_rows, kh, kw, geo)
            self._scratch.give(cols, flat_dy)
        return dx, np.ascontiguousarray(dw.reshape(w.shape)), db

    def _phase_input_grad(self, dx, w_t, dy_rows, geo: _FlatGeometry) -> None:
        """dx: (m, C, H, W) <- the "shift" path's input gradient of one chunk: the product
        w_t @ dy_rows (one row per channel and kernel offset), each row added back where its
        offset read (col2im), then the row phases written to dx's rows."""
        m, c, h, w = dx.shape
        groups, r, length = w_t.shape[0], w_t.shape[1], dy_rows.shape[2]
        sw, pl = geo.stride[1], geo.padding[2]
        size = m * geo.grid[0] * geo.row
        dflat = self._scratch.take((len(geo.phases) * c, size + geo.tail), dx.dtype)
        if geo.direct:
            np.matmul(w_t, dy_rows, out=dflat.reshape(groups, r, length))
        else:
            dcols = self._scratch.take((c * len(geo.taps), length), dx.dtype)
            np.matmul(w_t, dy_rows, out=dcols.reshape(groups, r, length))
            offsets = dcols.reshape(c, len(geo.taps), length)
            first = 0
            if geo.stride == (1, 1):  # offset (0, 0) reads unshifted: no zero fill under it
                dflat[:, :length] = offsets[:, 0]
                dflat[:, length:] = 0
                first = 1
            else:
                dflat.fill(0)
            for index in range(first, len(geo.taps)):
                phase, shift = geo.taps[index]
                geo.phase(dflat, phase)[:, shift:shift + sw * length:sw] += offsets[:, index]
            self._scratch.give(dcols)
        for index, (cell_rows, input_rows) in enumerate(geo.phases):
            cells = geo.phase(dflat, index)[:, :size].reshape(c, m, geo.grid[0], geo.row)
            dx[:, :, input_rows] = cells[:, :, cell_rows, pl:pl + w].transpose(1, 0, 2, 3)
        self._scratch.give(dflat)

    def _gathered_input_grad(self, dx, w_t, dy_rows, kh, kw, geo: _FlatGeometry) -> None:
        """dx: (m, C, H, W) <- the "gather" path's input gradient of one chunk: col2im by strided adds."""
        m, c, h, w = dx.shape
        groups, r, length = w_t.shape[0], w_t.shape[1], dy_rows.shape[2]
        (oh, ow), (sh, sw), (pt, _, pl, _), (dh, dw) = geo.grid, geo.stride, geo.padding, geo.dilation
        dcols = self._scratch.take((c * kh * kw, length), dx.dtype)
        np.matmul(w_t, dy_rows, out=dcols.reshape(groups, r, length))
        images = self._scratch.take((c, m, *geo.padded), dx.dtype)
        images.fill(0)
        windows = dcols.reshape(c, kh * kw, m, oh, ow)
        for i in range(kh):
            for j in range(kw):
                images[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                       j * dw:j * dw + sw * (ow - 1) + 1:sw] += windows[:, i * kw + j]
        dx[...] = images[:, :, pt:pt + h, pl:pl + w].transpose(1, 0, 2, 3)
        self._scratch.give(dcols, images)

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
        pt, pb, pl, pr = padding
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
                # col2im, batch innermost like _im2col: inner loops of OW*m elements
                dx_last = self._scratch.take((c, h + pt + pb, wd + pl + pr, m), w.dtype)
                dx_last.fill(0)
                self._col2im_products(dx_last, w, dy_last, groups, (oh, ow), stride, dilation)
                dx[start:stop] = dx_last[:, pt:pt + h, pl:pl + wd].transpose(3, 0, 1, 2)
                self._scratch.give(dx_last)
            self._scratch.give(cols, dy_chunk)
        return dx, np.ascontiguousarray(dw.reshape(w.shape)), db

    def _col2im_products(self, dx_last, w, dy_last, groups, out_hw, stride, dilation) -> None:
        """dx_last: (C, Hp, Wp, m) += each kernel offset's (w.T @ dy) added where that offset read.

        The product (C*KH*KW x K) @ (K x OH*OW*m) is as large as the im2col matrix. When one kernel
        row's share of it passes ``col2im_block_bytes`` it is formed a kernel row and a block of
        output rows at a time and added while still in cache: the examples/mnist net's 32 -> 64
        convolution at batch 64 (42 MB of products), 17.4 -> 15.4 ms. Each input pixel still gets its
        terms in kernel-offset order, so dx is bitwise what one whole product gives."""
        k, cg, kh, kw = w.shape
        oh, ow = out_hw
        c, m = dx_last.shape[0], dx_last.shape[3]
        row_bytes = c * kw * ow * m * dx_last.itemsize  # one kernel row's products for one output row
        block = oh if row_bytes * oh <= self.col2im_block_bytes else max(1, self.col2im_block_bytes // row_bytes)
        if block >= oh:  # small: one product for all kernel offsets
            dcols = self._scratch.take((c * kh * kw, oh * ow * m), w.dtype)
            w_t = w.reshape(groups, k // groups, cg * kh * kw).transpose(0, 2, 1)
            np.matmul(w_t, dy_last, out=dcols.reshape(groups, cg * kh * kw, -1))
            self._add_windows(dx_last, dcols.reshape(c, kh, kw, oh, ow, m), range(kh), 0, stride, dilation)
            self._scratch.give(dcols)
            return
        dy_rows = dy_last.reshape(groups, k // groups, oh, ow * m)
        dcols = self._scratch.take((c * kw, block * ow * m), w.dtype)
        for i in range(kh):
            # kernel row i's filters: (G, C/G*KW, K/G)
            w_i = w.reshape(groups, k // groups, cg, kh, kw)[:, :, :, i].reshape(groups, k // groups, cg * kw)
            for first in range(0, oh, block):
                rows = min(block, oh - first)
                part = dcols[:, :rows * ow * m]
                np.matmul(w_i.transpose(0, 2, 1), dy_rows[:, :, first:first + rows].reshape(groups, k // groups, -1),
                          out=part.reshape(groups, cg * kw, -1))
                self._add_windows(dx_last, part.reshape(c, 1, kw, rows, ow, m), (i,), first, stride, dilation)
        self._scratch.give(dcols)

    @staticmethod
    def _add_windows(dx_last, windows, kernel_rows, first_row, stride, dilation) -> None:
        """dx_last += windows: (C, len(kernel_rows), KW, rows, OW, m), the products of those kernel rows
        for output rows first_row, first_row + 1, ..., each added where its kernel offset read."""
        (sh, sw), (dil_h, dil_w) = stride, dilation
        _, _, kw, rows, ow, _ = windows.shape
        for index, i in enumerate(kernel_rows):
            top = i * dil_h + sh * first_row
            for j in range(kw):
                dx_last[:, top:top + sh * (rows - 1) + 1:sh, j * dil_w:j * dil_w + sw * (ow - 1) + 1:sw] += \
                    windows[:, index, j]

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
