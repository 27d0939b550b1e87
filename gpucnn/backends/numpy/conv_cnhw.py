"""Convolution on (C, N, H, W) images: the NumPy backend's paths for wider networks.

Wider networks (ResNet: 16-64 channels at 8x8 to 32x32) spend their time elsewhere than
LeNet-5: the batch-innermost layout transposes element by element (stride C*H*W) four times
per conv per step, which dominated ResNet-8 on 2 cores. These paths lay each batch chunk out
(C, m, Hp, Wp), padded, so every transpose to and from NCHW moves whole image rows:
- "shift": the images flattened to one row per channel, where the output pixel at flat
  position p reads the input at p + i*dh*Wp + j*dw for kernel offset (i, j). Each im2col row is
  ONE contiguous slice (a memcpy) and col2im adds whole rows; the price is that the product also
  covers the Hp - OH and Wp - OW padding positions (1.13x the output at 32x32 with padding 1),
  whose output is dropped and whose gradient is set to zero. A strided convolution first splits
  the padded images' rows into SH phases (rows a, a + SH, a + 2*SH, ...), copying whole rows,
  and runs the product on the grid (ceil(Hp/SH), ceil(Wp/SW)): output p of offset (i, j) reads
  row phase i*dh % SH at SW*p + (i*dh // SH)*row + j*dw, so its im2col row is one slice of step
  SW. Gathering instead copies short rows of OW pixels, one per output row and offset: ResNet-8's
  strided 3x3 backward pass, 128 images, 16 -> 32 channels at 32x32: 25 -> 19 ms.
- "gather" (strided convolutions whose phase grid is too wasteful): each kernel offset a strided
  view of the padded images, copied into its im2col row; the product is exactly (K, m, OH, OW).
- "pointwise" (1x1, no padding, e.g. ResNet's strided shortcut): no im2col at all, a product
  per image on the (subsampled) NCHW input.
LeNet-5 runs its convolutions as the fused conv + ReLU + max-pool op and never comes here.

``CnhwConvolution`` is a part of conv.py's ``Convolution``, whose plain convolutions come here when
``mode`` names a path; it shares that part's scratch pool and kept columns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..contract import Padding, Pair, Shape
from . import threads as cpu_threads
from .products import filter_product, products_over_long_axis
from .scratch import KeptForBackward, ScratchPool


class _FlatGeometry(NamedTuple):
    """How the (C, N, H, W) paths lay a convolution's input out."""

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


class CnhwConvolution:
    """The "shift", "gather" and "pointwise" convolutions (see the module's docstring).

    The class attributes are its settings, which a batch half's worker copies from the whole's
    (conv.Convolution.follow); its state is in underscored attributes.
    """

    #: plain convolutions (not the fused conv + ReLU + max-pool op LeNet-5 uses) run on (C, N, H, W)
    #: images (this module's paths); False: the batch-innermost im2col path (conv.py)
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

    def __init__(self, scratch: ScratchPool, kept_columns: KeptForBackward) -> None:
        self._scratch = scratch
        self._kept_columns = kept_columns  # shared with conv.Convolution: one memo per worker

    def mode(self, x_shape: Shape, w_shape: Shape, stride: Pair, padding: Padding, groups: int, oh: int,
             ow: int) -> str | None:
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
    def _geometry(x_shape, kh, kw, stride, padding, dilation, oh, ow, mode) -> _FlatGeometry:
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

    def _chunk(self, x_shape, kh, kw, grid, keep) -> int:
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
        the threads on, nothing is kept (threads.py says why)."""
        if not cpu_threads.keeps_columns():
            return False
        return self.flat_keep_unstrided_columns or tuple(geo.stride) != (1, 1)

    def _columns(self, x, kh, kw, geo: _FlatGeometry, keep=False, reuse=False):
        """Yields (start, stop, cols), cols: (C*KH*KW, m*GH*GW), one chunk at a time (see
        scratch.KeptForBackward); reused from a training forward when kept."""
        chunks = self._column_chunks(x, kh, kw, geo, keep)
        return self._kept_columns.kept_or_built(x, (x.shape, x.dtype, kh, kw, geo), chunks, keep, reuse)

    def _column_chunks(self, x, kh, kw, geo: _FlatGeometry, keep):
        n, c, h, w = x.shape
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = geo.stride, geo.padding, geo.dilation
        grid = geo.grid
        step = self._chunk(x.shape, kh, kw, grid, keep)
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

    # x: (N, C, H, W), w: (K, C/G, KH, KW) -> y: (N, K, OH, OW)
    def conv2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair, padding: Padding,
                       dilation: Pair, groups: int, oh: int, ow: int, relu: bool, keep_for_backward: bool,
                       mode: str) -> np.ndarray:
        """conv.Convolution.conv2d_forward on the path ``mode`` names (the output size already known)."""
        if mode == "pointwise":
            return self._pointwise_forward(x, w, b, stride, oh, ow, relu)
        n = x.shape[0]
        k, cg, kh, kw = w.shape
        geo = self._geometry(x.shape, kh, kw, stride, padding, dilation, oh, ow, mode)
        w_mat = w.reshape(groups, k // groups, cg * kh * kw)
        y = np.empty((n, k, oh, ow), dtype=x.dtype)
        keep_for_backward = keep_for_backward and self._keeps_columns(geo)
        for start, stop, cols in self._columns(x, kh, kw, geo, keep=keep_for_backward):
            part = self._scratch.take((k, cols.shape[1]), x.dtype)
            filter_product(w_mat, cols.reshape(groups, cg * kh * kw, -1), part.reshape(groups, k // groups, -1))
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

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W) | None, dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_backward(self, dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair, padding: Padding,
                        dilation: Pair, groups: int, need_input_grad: bool,
                        mode: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """conv.Convolution.conv2d_backward on the path ``mode`` names."""
        if mode == "pointwise":
            return self._pointwise_backward(dy, x, w, stride, need_input_grad)
        n, c, h, wd = x.shape
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        oh, ow = dy.shape[2:]
        geo = self._geometry(x.shape, kh, kw, stride, padding, dilation, oh, ow, mode)
        grid = geo.grid
        w_t = w.reshape(groups, k // groups, r).transpose(0, 2, 1)
        dx = np.empty(x.shape, dtype=w.dtype) if need_input_grad else None
        dw = db = None
        for start, stop, cols in self._columns(x, kh, kw, geo, reuse=True):
            m = stop - start
            length = m * grid[0] * grid[1]
            # dy on the product's grid, zero at the padding positions so they add nothing to dw or dx
            flat_dy = self._scratch.take((k, length), dy.dtype)
            cells = flat_dy.reshape(k, m, *grid)
            cells[:, :, oh:] = 0
            cells[:, :, :oh, ow:] = 0
            cells[:, :, :oh, :ow] = dy[start:stop].transpose(1, 0, 2, 3)
            dy_rows = flat_dy.reshape(groups, k // groups, length)
            part = products_over_long_axis(cols.reshape(groups, r, length), dy_rows)
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
