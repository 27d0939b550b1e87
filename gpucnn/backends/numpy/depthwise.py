"""Depthwise convolution on the CPU: groups == C, w: (C*m, 1, KH, KW), without im2col.

A depthwise layer's im2col product is C tiny (m x KH*KW) @ (KH*KW x OH*OW*N) matrix products, one
per group, after a copy of x KH*KW times its size. Here each kernel tap (i, j) is instead one
whole-tensor strided multiply-accumulate: y[:, c*m + r] += x_pad[:, c, taps' strided view] *
w[c*m + r, 0, i, j], in tap order, x padded once. The backward pass runs the same taps: dx as the
transposed taps added into a padded dx, dw[:, 0, i, j] as the sum of dy times that same view.

The batch is taken in chunks of about ``CHUNK_BYTES`` of output so that each chunk's taps run while
it is in cache; chunks' weight gradients are summed in batch order, so every result is deterministic.
The channel multiplier m > 1 broadcasts x's channel c over outputs c*m .. c*m + m - 1.
"""

from __future__ import annotations

import numpy as np

from ...shapes import conv_output_hw
from ..contract import Padding, Pair

#: the output (or output-gradient) bytes a batch chunk spans
CHUNK_BYTES = 1 << 20


def is_depthwise(x_shape, w_shape, padding: Padding, groups: int) -> bool:
    """Whether a convolution is depthwise: one input channel per group, every channel its own group."""
    c = x_shape[1]
    return (groups > 1 and groups == c and w_shape[1] == 1 and w_shape[0] % c == 0
            and min(padding) >= 0)


def _chunk(n: int, per_image_bytes: int) -> int:
    return max(1, min(n, CHUNK_BYTES // max(1, per_image_bytes)))


def _padded(x: np.ndarray, padding: Padding) -> np.ndarray:
    pt, pb, pl, pr = padding
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=x.dtype)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


def _tap_view(a: np.ndarray, i: int, j: int, out_hw, stride: Pair, dilation: Pair) -> np.ndarray:
    """a: (n, c, Hp, Wp) -> the (n, c, OH, OW) strided view that kernel tap (i, j) reads."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return a[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


def _forward_rows(x, taps, y, padding, dilation) -> None:
    """y: (N, C, m, OH, OW) <- the stride-1 forward, each tap one multiply-add over whole padded rows.

    With stride 1, tap (i, j)'s view of x_pad, flattened per channel, is the contiguous run
    x_pad[c].flat[o:o + OH*Wp], o = i*dh*Wp + j*dw: the output is formed OH rows of the padded width
    Wp at a time (inner loops of OH*Wp elements, not OW), and its last Wp - OW columns of each row,
    which read past the row's end, are dropped. Each output gets the same products, in tap order."""
    n, c, m, oh, ow = y.shape
    kh, kw = taps.shape[2:]
    (pt, pb, pl, pr), (dh, dw) = padding, dilation
    h, wd = x.shape[2:]
    hp, wp = h + pt + pb, wd + pl + pr
    length = oh * wp
    step = _chunk(n, c * m * length * y.itemsize)
    # one spare row: the last taps' runs reach (KW-1)*dw elements past the padded image
    x_pad = np.zeros((step, c, hp + 1, wp), dtype=x.dtype)
    acc = np.empty((step, c, m, length), dtype=x.dtype)
    tmp = np.empty_like(acc)
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = stop - start
        x_pad[:rows, :, pt:pt + h, pl:pl + wd] = x[start:stop]
        flat = x_pad[:rows].reshape(rows, c, 1, -1)
        a, t = acc[:rows], tmp[:rows]
        for i in range(kh):
            for j in range(kw):
                o = i * dh * wp + j * dw
                w_ij = taps[:, :, i, j][:, :, None]
                if i == 0 and j == 0:
                    np.multiply(flat[..., o:o + length], w_ij, out=a)
                else:
                    np.multiply(flat[..., o:o + length], w_ij, out=t)
                    a += t
        y[start:stop] = a.reshape(rows, c, m, oh, wp)[..., :ow]


# x: (N, C, H, W), w: (C*m, 1, KH, KW) -> y: (N, C*m, OH, OW)
def depthwise_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair, padding: Padding,
                      dilation: Pair, relu: bool = False) -> np.ndarray:
    n, c = x.shape[:2]
    k, _, kh, kw = w.shape
    m = k // c
    oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
    y = np.empty((n, c, m, oh, ow), dtype=x.dtype)
    if y.size == 0:
        return y.reshape(n, k, oh, ow)
    if kh * kw == 0:
        y.fill(0)
    elif tuple(stride) == (1, 1):
        _forward_rows(x, w.reshape(c, m, kh, kw), y, padding, dilation)
    else:
        taps = w.reshape(c, m, kh, kw)
        step = _chunk(n, y[0].nbytes)
        tmp = np.empty((step, c, m, oh, ow), dtype=x.dtype)
        for start in range(0, n, step):
            stop = min(start + step, n)
            x_pad = _padded(x[start:stop], padding)
            y_part, t = y[start:stop], tmp[:stop - start]
            for i in range(kh):
                for j in range(kw):
                    view = _tap_view(x_pad, i, j, (oh, ow), stride, dilation)[:, :, None]
                    w_ij = taps[:, :, i, j][:, :, None, None]
                    if i == 0 and j == 0:
                        np.multiply(view, w_ij, out=y_part)
                    else:
                        np.multiply(view, w_ij, out=t)
                        y_part += t
    y = y.reshape(n, k, oh, ow)
    if b is not None:
        y += b.reshape(k, 1, 1)
    if relu:
        np.maximum(y, 0, out=y)
    return y


def _input_grad_chunk(dy5: np.ndarray, taps: np.ndarray, x_shape, stride: Pair, padding: Padding,
                      dilation: Pair) -> np.ndarray:
    """dy5: (n, C, m, OH, OW) -> dx: (n, C, H, W), the transposed taps added into a padded dx."""
    n, c, m, oh, ow = dy5.shape
    h, wd = x_shape[2:]
    pt, pb, pl, pr = padding
    dx_pad = np.zeros((n, c, h + pt + pb, wd + pl + pr), dtype=dy5.dtype)
    tmp = np.empty(dy5.shape, dtype=dy5.dtype)
    kh, kw = taps.shape[2:]
    for i in range(kh):
        for j in range(kw):
            target = _tap_view(dx_pad, i, j, (oh, ow), stride, dilation)
            np.multiply(dy5, taps[:, :, i, j][:, :, None, None], out=tmp)
            if m == 1:
                target += tmp[:, :, 0]
            else:
                target += tmp.sum(axis=2)
    return dx_pad[:, :, pt:pt + h, pl:pl + wd]


# dy: (N, C*m, OH, OW), w: (C*m, 1, KH, KW) -> dx: x_shape (N, C, H, W)
def depthwise_input_grad(dy: np.ndarray, w: np.ndarray, x_shape, stride: Pair, padding: Padding,
                         dilation: Pair) -> np.ndarray:
    n, c = x_shape[:2]
    k, _, kh, kw = w.shape
    m = k // c
    oh, ow = dy.shape[2:]
    dx = np.zeros(tuple(x_shape), dtype=w.dtype)
    if dy.size == 0 or dx.size == 0 or kh * kw == 0:
        return dx
    taps = w.reshape(c, m, kh, kw)
    dy5 = dy.reshape(n, c, m, oh, ow)
    step = _chunk(n, dy5[0].nbytes)
    for start in range(0, n, step):
        stop = min(start + step, n)
        dx[start:stop] = _input_grad_chunk(dy5[start:stop], taps, x_shape, stride, padding, dilation)
    return dx


# dy: (N, C*m, OH, OW), x: (N, C, H, W) -> dw: (C*m, 1, KH, KW), db: (C*m,)
def depthwise_weight_grad(dy: np.ndarray, x: np.ndarray, w_shape, stride: Pair, padding: Padding,
                          dilation: Pair) -> tuple[np.ndarray, np.ndarray]:
    n, c = x.shape[:2]
    k, _, kh, kw = w_shape
    m = k // c
    oh, ow = dy.shape[2:]
    dw = np.zeros((c, m, kh, kw), dtype=x.dtype)
    if dy.size == 0:
        return dw.reshape(tuple(w_shape)), np.zeros(k, dtype=x.dtype)
    db = dy.sum(axis=(0, 2, 3))
    dy5 = dy.reshape(n, c, m, oh, ow)
    step = _chunk(n, dy5[0].nbytes)
    tmp = np.empty((step, c, m, oh, ow), dtype=x.dtype)
    for start in range(0, n, step):  # chunks summed in batch order: deterministic
        stop = min(start + step, n)
        x_pad = _padded(x[start:stop], padding)
        d, t = dy5[start:stop], tmp[:stop - start]
        for i in range(kh):
            for j in range(kw):
                np.multiply(d, _tap_view(x_pad, i, j, (oh, ow), stride, dilation)[:, :, None], out=t)
                dw[:, :, i, j] += t.sum(axis=(0, 3, 4))
    return dw.reshape(tuple(w_shape)), db.astype(x.dtype, copy=False)


# dy: (N, C*m, OH, OW) -> dx: (N, C, H, W) | None, dw: (C*m, 1, KH, KW), db: (C*m,)
def depthwise_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair, padding: Padding,
                       dilation: Pair, need_input_grad: bool = True
                       ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    dw, db = depthwise_weight_grad(dy, x, w.shape, stride, padding, dilation)
    dx = depthwise_input_grad(dy, w, x.shape, stride, padding, dilation) if need_input_grad else None
    return dx, dw, db
