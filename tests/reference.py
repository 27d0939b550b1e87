"""Direct, loop-based references written from the textbook formulas.

Deliberately naive (Python loops over every output and kernel tap) and independent of the
library's helpers, so that the vectorised backends and the CUDA kernels are checked against
something that shares none of their code. Use only on small inputs.
"""

from __future__ import annotations

import math

import numpy as np


def out_size(size, k, s, p_before, p_after, d=1):
    return (size + p_before + p_after - d * (k - 1) - 1) // s + 1


def pool_out_size(size, k, s, p, ceil_mode):
    if ceil_mode:
        out = math.ceil((size + 2 * p - k) / s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside input or left padding
            out -= 1
        return out
    return (size + 2 * p - k) // s + 1


def conv2d(x, w, b, stride, padding, dilation, groups):
    n_, c_, h_, w_ = x.shape
    k_, cg, kh, kw = w.shape
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, padding, dilation
    oh_, ow_ = out_size(h_, kh, sh, pt, pb, dh), out_size(w_, kw, sw, pl, pr, dw)
    kg = k_ // groups
    y = np.zeros((n_, k_, oh_, ow_))
    for n in range(n_):
        for k in range(k_):
            g = k // kg
            for oh in range(oh_):
                for ow in range(ow_):
                    acc = 0.0 if b is None else float(b[k])
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                h, ww = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                                if 0 <= h < h_ and 0 <= ww < w_:
                                    acc += x[n, g * cg + c, h, ww] * w[k, c, i, j]
                    y[n, k, oh, ow] = acc
    return y


def conv2d_backward(dy, x, w, stride, padding, dilation, groups):
    """Scatter form: each output gradient flows back along each tap that made it."""
    n_, c_, h_, w_ = x.shape
    k_, cg, kh, kw = w.shape
    (sh, sw), (pt, _pb, pl, _pr), (dh, dwl) = stride, padding, dilation
    kg = k_ // groups
    dx, dw, db = np.zeros(x.shape), np.zeros(w.shape), np.zeros(k_)
    for n in range(n_):
        for k in range(k_):
            g = k // kg
            for oh in range(dy.shape[2]):
                for ow in range(dy.shape[3]):
                    grad = dy[n, k, oh, ow]
                    db[k] += grad
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                h, ww = oh * sh - pt + i * dh, ow * sw - pl + j * dwl
                                if 0 <= h < h_ and 0 <= ww < w_:
                                    dx[n, g * cg + c, h, ww] += grad * w[k, c, i, j]
                                    dw[k, c, i, j] += grad * x[n, g * cg + c, h, ww]
    return dx, dw, db


def _windows(h_, w_, oh_, ow_, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    for oh in range(oh_):
        for ow in range(ow_):
            h0, w0 = oh * sh - ph, ow * sw - pw
            yield oh, ow, h0, w0, [(h, ww) for h in range(h0, h0 + kh) for ww in range(w0, w0 + kw)
                                   if 0 <= h < h_ and 0 <= ww < w_]


def maxpool2d(x, kernel, stride, padding, ceil_mode):
    """Returns (y, argmax as an index into the H*W plane); first max wins, NaN beats all."""
    n_, c_, h_, w_ = x.shape
    oh_ = pool_out_size(h_, kernel[0], stride[0], padding[0], ceil_mode)
    ow_ = pool_out_size(w_, kernel[1], stride[1], padding[1], ceil_mode)
    y = np.zeros((n_, c_, oh_, ow_))
    idx = np.zeros((n_, c_, oh_, ow_), dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for oh, ow, _, _, cells in _windows(h_, w_, oh_, ow_, kernel, stride, padding):
                best, best_i = -np.inf, None
                for h, ww in cells:
                    v = x[n, c, h, ww]
                    if best_i is None or v > best or (np.isnan(v) and not np.isnan(best)):
                        best, best_i = v, h * w_ + ww
                y[n, c, oh, ow], idx[n, c, oh, ow] = best, best_i
    return y, idx


def maxpool2d_backward(dy, idx, x_shape):
    dx = np.zeros(x_shape)
    n_, c_, h_, w_ = x_shape
    for n in range(n_):
        for c in range(c_):
            for oh in range(dy.shape[2]):
                for ow in range(dy.shape[3]):
                    i = idx[n, c, oh, ow]
                    dx[n, c, i // w_, i % w_] += dy[n, c, oh, ow]
    return dx


def _avg_divisor(h0, w0, kernel, padding, h_, w_, cells, count_include_pad):
    if not count_include_pad:
        return len(cells)
    h_end = min(h0 + kernel[0], h_ + padding[0])
    w_end = min(w0 + kernel[1], w_ + padding[1])
    return (h_end - h0) * (w_end - w0)


def avgpool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    n_, c_, h_, w_ = x.shape
    oh_ = pool_out_size(h_, kernel[0], stride[0], padding[0], ceil_mode)
    ow_ = pool_out_size(w_, kernel[1], stride[1], padding[1], ceil_mode)
    y = np.zeros((n_, c_, oh_, ow_))
    for n in range(n_):
        for c in range(c_):
            for oh, ow, h0, w0, cells in _windows(h_, w_, oh_, ow_, kernel, stride, padding):
                div = _avg_divisor(h0, w0, kernel, padding, h_, w_, cells, count_include_pad)
                y[n, c, oh, ow] = sum(x[n, c, h, ww] for h, ww in cells) / div
    return y


def avgpool2d_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    n_, c_, h_, w_ = x_shape
    dx = np.zeros(x_shape)
    for n in range(n_):
        for c in range(c_):
            for oh, ow, h0, w0, cells in _windows(h_, w_, dy.shape[2], dy.shape[3], kernel, stride, padding):
                div = _avg_divisor(h0, w0, kernel, padding, h_, w_, cells, count_include_pad)
                for h, ww in cells:
                    dx[n, c, h, ww] += dy[n, c, oh, ow] / div
    return dx


def softmax_cross_entropy(logits, labels):
    n = logits.shape[0]
    loss, grad = 0.0, np.zeros(logits.shape)
    for i in range(n):
        row = [float(v) for v in logits[i]]
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        loss += -(row[labels[i]] - m - math.log(z))
        for j, v in enumerate(row):
            grad[i, j] = (math.exp(v - m) / z - (1.0 if j == labels[i] else 0.0)) / n
    return loss / n, grad
