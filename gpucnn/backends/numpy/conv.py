"""Convolution on the CPU: the im2col paths of the NumPy backend (``Convolution``).

Two layouts, each over the batch in chunks whose im2col matrix is built just before its product:
- batch innermost (``_im2col``): the columns are (C*KH*KW, OH*OW*m), which LeNet-5's small images
  and the fused conv + ReLU + max-pool op run on;
- images as (C, m, H, W), for wider networks: conv_cnhw.py, which ``Convolution``'s plain
  convolutions hand over to when ``CnhwConvolution.mode`` names a path.
Depthwise convolutions (groups == C > 1) take neither: depthwise.py's per-tap path (all four
convolution entry points, and the fused op, which then composes its three ops).
``Convolution`` is a part of ``NumpyBackend`` (threads.BatchHalves runs it whole, or two of them on
a batch's halves); it holds a scratch pool, the im2col matrices training forwards keep, the (C, N,
H, W) paths, and the pooling part its fused op falls back on where the pooling windows overlap.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...shapes import conv_output_hw, pool_output_hw
from ..contract import ConvPoolState, Padding, Pair
from .conv_cnhw import CnhwConvolution
from .depthwise import depthwise_backward, depthwise_forward, depthwise_input_grad, depthwise_weight_grad, is_depthwise
from .pooling import Pooling
from .products import filter_product, products_over_long_axis
from .scratch import KeptForBackward, ScratchPool, collecting
from .threads import RowHalves
from .windows import mark_dead_windows, max_of_four_with_offset, running_max, tiled_windows, windows_tile


def _im2col(x, kh, kw, stride, padding, dilation, oh, ow, scratch: ScratchPool) -> np.ndarray:
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


class Convolution:
    """The NumPy backend's convolutions of one worker: conv2d and the fused conv2d + ReLU + max-pool.

    The class attributes are its settings (those of its (C, N, H, W) paths are on ``cnhw``), which a
    batch half's worker copies from the whole's (``follow``); its state is in underscored attributes.
    """

    #: convolutions run over the batch in chunks of this many images: with the batch innermost in
    #: im2col, a larger chunk makes the transposes stride past a page per element, and the im2col
    #: buffer stays small (1.3 MB for LeNet's first layer); 64 measured best on the 2-core machine
    BATCH_CHUNK = 64
    #: the input gradient's products are formed in blocks of about this size where larger (see
    #: _col2im_products)
    col2im_block_bytes = 4 << 20
    #: depthwise convolutions (groups == C > 1, one input channel per group) take the per-tap path of
    #: depthwise.py rather than im2col per group (False: im2col, as tests compare against)
    depthwise_conv = True

    def __init__(self, scratch: ScratchPool, pooling: Pooling) -> None:
        self._scratch = scratch
        self._pooling = pooling  # for the fused op where its pooling windows do not tile
        # id(x) -> (x, geometry, [(start, stop, cols)]): a training forward keeps its im2col
        # matrices so the backward pass need not build them again (both layouts: one memo)
        self._kept_columns = KeptForBackward()
        self._cnhw = CnhwConvolution(scratch, self._kept_columns)

    @property
    def cnhw(self) -> CnhwConvolution:
        """The (C, N, H, W) paths (conv_cnhw.py) that plain convolutions take where they pay."""
        return self._cnhw

    @property
    def kept_columns(self) -> KeptForBackward:
        """The im2col matrices training forwards kept for their backward passes."""
        return self._kept_columns

    def half(self) -> Convolution:
        """A worker for one half of a batch (threads.BatchHalves): its own scratch pool, kept columns and
        pooling, whose ReLU masks never split (the two halves already run at once)."""
        return Convolution(ScratchPool(), Pooling(RowHalves(whole_only=True)))

    def follow(self, other: Convolution) -> None:
        """Take the settings ``other`` (and its ``cnhw``) has on the instance, e.g. a test's flat_conv =
        False: a batch half then runs the paths its whole would."""
        for mine, theirs in ((self, other), (self._cnhw, other._cnhw)):
            vars(mine).update({k: v for k, v in vars(theirs).items() if not k.startswith("_")})

    def _depthwise(self, x_shape, w_shape, padding, groups) -> bool:
        return self.depthwise_conv and is_depthwise(x_shape, w_shape, padding, groups)

    def _columns(self, x, kh, kw, stride, padding, dilation, oh, ow, keep=False, reuse=False):
        """Yields x's im2col matrix for each batch chunk as (start, stop, cols), one chunk at a time
        (see scratch.KeptForBackward); reused from a training forward when one kept them."""
        n, step = x.shape[0], self.BATCH_CHUNK
        chunks = ((start, min(start + step, n),
                   _im2col(x[start:start + step], kh, kw, stride, padding, dilation, oh, ow, self._scratch))
                  for start in range(0, n, step))
        geometry = (x.shape, x.dtype, kh, kw, stride, padding, dilation)
        return self._kept_columns.kept_or_built(x, geometry, chunks, keep, reuse)

    def _conv_chunks(self, w, b, column_chunks, oh, ow, groups, keep_columns):
        """Yields (start, stop, conv): each batch chunk's convolution plus bias, still in the
        batch-innermost layout of its im2col columns, conv: (K, OH, OW, m), valid until the next
        chunk is asked for. Columns not kept for a backward pass go back to the scratch pool."""
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        w_mat = w.reshape(groups, k // groups, r)
        for start, stop, cols in column_chunks:
            part = self._scratch.take((k, oh * ow * (stop - start)), w.dtype)
            filter_product(w_mat, cols.reshape(groups, r, -1), part.reshape(groups, k // groups, -1))
            if not keep_columns:
                self._scratch.give(cols)
            # the bias on the chunk while it is in cache, not as a pass over the whole output
            if b is not None:
                part += b[:, None]
            yield start, stop, part.reshape(k, oh, ow, stop - start)
            self._scratch.give(part)

    # x: (N, C, H, W), w: (K, C/G, KH, KW) -> y: (N, K, OH, OW)
    def conv2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair, padding: Padding,
                       dilation: Pair, groups: int, relu: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        if self._depthwise(x.shape, w.shape, padding, groups):
            return depthwise_forward(x, w, b, stride, padding, dilation, relu)
        n = x.shape[0]
        k, _, kh, kw = w.shape
        oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
        mode = self._cnhw.mode(x.shape, w.shape, stride, padding, groups, oh, ow)
        if mode is not None:
            return self._cnhw.conv2d_forward(x, w, b, stride, padding, dilation, groups, oh, ow, relu,
                                             keep_for_backward, mode)
        column_chunks = self._columns(x, kh, kw, stride, padding, dilation, oh, ow, keep=keep_for_backward)
        y = np.empty((n, k, oh, ow), dtype=x.dtype)
        for start, stop, conv in self._conv_chunks(w, b, column_chunks, oh, ow, groups, keep_for_backward):
            if relu:
                np.maximum(conv, 0, out=conv)
            y[start:stop] = conv.transpose(3, 0, 1, 2)
        return y

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_backward(self, dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair, padding: Padding,
                        dilation: Pair, groups: int,
                        need_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        if self._depthwise(x.shape, w.shape, padding, groups):
            return depthwise_backward(dy, x, w, stride, padding, dilation, need_input_grad)
        kh, kw = w.shape[2:]
        oh, ow = dy.shape[2:]
        mode = self._cnhw.mode(x.shape, w.shape, stride, padding, groups, oh, ow)
        if mode is not None:
            return self._cnhw.conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad, mode)
        column_chunks = self._columns(x, kh, kw, stride, padding, dilation, oh, ow, reuse=True)
        # dy with the batch innermost, (K, OH, OW, m), matching the columns of _im2col
        chunks = ((chunk, self._batch_last(dy[chunk[0]:chunk[1]])) for chunk in column_chunks)
        return self._conv_backward_chunks(chunks, x.shape, w, stride, padding, dilation, groups, need_input_grad)

    def _batch_last(self, a: np.ndarray) -> np.ndarray:
        """a: (m, K, H, W) -> (K, H, W, m), contiguous, in a scratch array."""
        out = self._scratch.take(a.shape[1:] + a.shape[:1], a.dtype)
        np.copyto(out, a.transpose(1, 2, 3, 0))
        return out

    def _conv_backward_chunks(self, chunks, x_shape, w, stride, padding, dilation, groups, need_input_grad):
        """(dx|None, dw, db) from ((start, stop, cols), dy_last) per batch chunk, where dy_last is
        that chunk's output gradient in the batch-innermost layout (K, OH, OW, m). The columns and
        dy_last are used up: they go back to the scratch pool."""
        k, cg, kh, kw = w.shape
        r = cg * kh * kw
        dw = db = None
        dx = np.empty(x_shape, dtype=w.dtype) if need_input_grad else None
        for (start, stop, cols), dy_chunk in chunks:
            _, oh, ow, m = dy_chunk.shape
            dy_last = dy_chunk.reshape(groups, k // groups, -1)
            part = products_over_long_axis(cols.reshape(groups, r, -1), dy_last)
            dw = part if dw is None else dw + part  # chunks summed in order: deterministic
            # the bias gradient from dy's contiguous rows: faster than dy.sum(axis=(0, 2, 3))
            db_part = dy_last.sum(axis=-1).reshape(k)
            db = db_part if db is None else db + db_part
            if need_input_grad:
                self._input_grad_chunk(dx[start:stop], w, dy_last, groups, (oh, ow), stride, padding, dilation)
            self._scratch.give(cols, dy_chunk)
        if dw is None:  # an empty batch has no chunks: the gradients are sums over nothing
            dw, db = np.zeros(w.shape, w.dtype), np.zeros(k, w.dtype)
        return dx, np.ascontiguousarray(dw.reshape(w.shape)), db

    def _input_grad_chunk(self, dx, w, dy_last, groups, out_hw, stride, padding, dilation) -> None:
        """dx: (m, C, H, W) <- one batch chunk's input gradient from dy_last: (G, K/G, OH*OW*m), by col2im
        with the batch innermost like _im2col (inner loops of OW*m elements). Rows and columns of dx
        that no window reads (past the conv's reach) get zero."""
        m, c, h, wd = dx.shape
        pt, pb, pl, pr = padding
        dx_last = self._scratch.take((c, h + pt + pb, wd + pl + pr, m), w.dtype)
        dx_last.fill(0)
        self._col2im_products(dx_last, w, dy_last, groups, out_hw, stride, dilation)
        dx[...] = dx_last[:, pt:pt + h, pl:pl + wd].transpose(3, 0, 1, 2)
        self._scratch.give(dx_last)

    # dy: (N, K, OH, OW), w: (K, C/G, KH, KW) -> dx: x_shape (N, C, H, W)
    def conv2d_input_grad(self, dy: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], stride: Pair,
                          padding: Padding, dilation: Pair, groups: int) -> np.ndarray:
        """conv2d_backward's input gradient on its batch-innermost path, without the columns of x
        (the (C, N, H, W) paths of conv_cnhw.py compute it only beside the weight gradient)."""
        if self._depthwise(x_shape, w.shape, padding, groups):
            return depthwise_input_grad(dy, w, x_shape, stride, padding, dilation)
        n, k = x_shape[0], w.shape[0]
        out_hw = dy.shape[2:]
        dx = np.empty(tuple(x_shape), dtype=w.dtype)
        for start in range(0, n, self.BATCH_CHUNK):
            stop = min(start + self.BATCH_CHUNK, n)
            dy_chunk = self._batch_last(dy[start:stop])
            self._input_grad_chunk(dx[start:stop], w, dy_chunk.reshape(groups, k // groups, -1), groups, out_hw,
                                   stride, padding, dilation)
            self._scratch.give(dy_chunk)
        return dx

    # dy: (N, K, OH, OW), x: (N, C, H, W) -> dw: w_shape (K, C/G, KH, KW), db: (K,)
    def conv2d_weight_grad(self, dy: np.ndarray, x: np.ndarray, w_shape: tuple[int, ...], stride: Pair,
                           padding: Padding, dilation: Pair, groups: int) -> tuple[np.ndarray, np.ndarray]:
        """conv2d_backward's (dw, db) without the input gradient: that very call, whose weight-gradient
        paths read only the filters' shape and dtype (an unfilled stand-in of w_shape serves)."""
        if self._depthwise(x.shape, w_shape, padding, groups):
            return depthwise_weight_grad(dy, x, w_shape, stride, padding, dilation)
        stand_in = np.empty(tuple(w_shape), dtype=x.dtype)
        _, dw, db = self.conv2d_backward(dy, x, stand_in, stride, padding, dilation, groups, need_input_grad=False)
        return dw, db

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
        if row_bytes * oh <= self.col2im_block_bytes:  # small: one product for all kernel offsets
            dcols = self._scratch.take((c * kh * kw, oh * ow * m), w.dtype)
            w_t = w.reshape(groups, k // groups, cg * kh * kw).transpose(0, 2, 1)
            np.matmul(w_t, dy_last, out=dcols.reshape(groups, cg * kh * kw, -1))
            self._add_windows(dx_last, dcols.reshape(c, kh, kw, oh, ow, m), range(kh), 0, stride, dilation)
            self._scratch.give(dcols)
            return
        block = max(1, self.col2im_block_bytes // row_bytes)  # output rows per product
        dy_rows = dy_last.reshape(groups, k // groups, oh, ow * m)
        dcols = self._scratch.take((c * kw, block * ow * m), w.dtype)
        for i in range(kh):
            # kernel row i's filters, transposed: (G, C/G*KW, K/G)
            w_i = w.reshape(groups, k // groups, cg, kh, kw)[:, :, :, i].reshape(groups, k // groups, cg * kw)
            w_i_t = w_i.transpose(0, 2, 1)
            for first in range(0, oh, block):
                rows = min(block, oh - first)
                part = dcols[:, :rows * ow * m]
                np.matmul(w_i_t, dy_rows[:, :, first:first + rows].reshape(groups, k // groups, -1),
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
    def conv2d_relu_maxpool2d_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair,
                                      padding: Padding, dilation: Pair, groups: int, kernel: Pair, pool_stride: Pair,
                                      pool_padding: Pair, ceil_mode: bool,
                                      keep_for_backward: bool = False) -> tuple[np.ndarray, ConvPoolState | None]:
        n = x.shape[0]
        k, _, kh, kw = w.shape
        oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
        ph, pw = pool_output_hw((oh, ow), kernel, pool_stride, pool_padding, ceil_mode)
        if (self._depthwise(x.shape, w.shape, padding, groups)
                or not windows_tile(kernel, pool_stride, pool_padding, (oh, ow), (ph, pw))):
            return self._composed_forward(x, w, b, stride, padding, dilation, groups, kernel, pool_stride,
                                          pool_padding, ceil_mode, keep_for_backward)
        # Each chunk is pooled while its convolution is in cache, in the columns' batch-innermost
        # layout (windows are strided views whose inner axis is the contiguous batch), and only the
        # pooled quarter is transposed to NCHW. ReLU comes after the max: max and ReLU commute, and
        # a window whose maximum is <= 0 passes no gradient, so where its argmax lands never matters.
        column_chunks: list = []  # kept for the backward pass as they are built
        built = self._columns(x, kh, kw, stride, padding, dilation, oh, ow)
        if keep_for_backward:
            built = collecting(built, column_chunks)
        y = np.empty((n, k, ph, pw), dtype=x.dtype)
        offsets = []
        for start, stop, conv in self._conv_chunks(w, b, built, oh, ow, groups, keep_for_backward):
            windows = tiled_windows(conv, kernel, (ph, pw))
            if keep_for_backward and len(windows) == 4:
                best, offset = max_of_four_with_offset(windows)
                offsets.append(mark_dead_windows(offset, best))
            elif keep_for_backward:
                best, offset = running_max(windows)
                offsets.append(mark_dead_windows(offset, best))
            else:
                best = windows[0].copy()
                for view in windows[1:]:
                    np.maximum(best, view, out=best)
            np.maximum(best, 0, out=best)
            y[start:stop] = best.transpose(3, 0, 1, 2)
        # per chunk: (start, stop, im2col matrix), and each window's winning offset or no-gradient marker
        return y, (ConvPoolState("tiled", (column_chunks, offsets, (oh, ow))) if keep_for_backward else None)

    # dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_relu_maxpool2d_backward(self, dy: np.ndarray, saved: ConvPoolState, x: np.ndarray, w: np.ndarray,
                                       stride: Pair, padding: Padding, dilation: Pair, groups: int, kernel: Pair,
                                       pool_stride: Pair, pool_padding: Pair, need_input_grad: bool = True
                                       ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        if not isinstance(saved, ConvPoolState) or saved.kind != "tiled":
            return self._composed_backward(dy, saved, x, w, stride, padding, dilation, groups, kernel, pool_stride,
                                           pool_padding, need_input_grad)
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
            for index, view in enumerate(tiled_windows(dconv, kernel, (ph, pw))):
                np.multiply(pooled, offset == index, out=view)
            self._scratch.give(pooled)
            return dconv

        grads = (unpooled(start, stop, offset) for (start, stop, _), offset in zip(column_chunks, offsets))
        return self._conv_backward_chunks(zip(column_chunks, grads), x.shape, w, stride, padding, dilation,
                                          groups, need_input_grad)

    # The fused op where the pooling windows overlap or stick out: the three ops one after another, as
    # base.composed_conv2d_relu_maxpool2d_forward/backward run them, on this worker's own convolution
    # and pooling (whose backward applies the ReLU mask).
    def _composed_forward(self, x, w, b, stride, padding, dilation, groups, kernel, pool_stride, pool_padding,
                          ceil_mode, keep_for_backward):
        conv = self.conv2d_forward(x, w, b, stride, padding, dilation, groups, relu=True,
                                   keep_for_backward=keep_for_backward)
        y, argmax = self._pooling.maxpool2d_forward(conv, kernel, pool_stride, pool_padding, ceil_mode)
        return y, (ConvPoolState("composed", (y, argmax, tuple(conv.shape))) if keep_for_backward else None)

    def _composed_backward(self, dy, saved, x, w, stride, padding, dilation, groups, kernel, pool_stride,
                           pool_padding, need_input_grad):
        if not isinstance(saved, ConvPoolState) or saved.kind != "composed":
            raise ValueError("conv2d_relu_maxpool2d_backward: needs the state of a forward run with "
                             "keep_for_backward=True on this backend")
        y, argmax, conv_shape = saved.use()
        dconv = self._pooling.maxpool2d_backward(dy, argmax, conv_shape, kernel, pool_stride, pool_padding,
                                                 relu_output=y)
        return self.conv2d_backward(dconv, x, w, stride, padding, dilation, groups, need_input_grad=need_input_grad)
