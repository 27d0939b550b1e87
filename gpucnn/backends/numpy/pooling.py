"""Pooling on the CPU: the NumPy backend's max, average and power-average pooling (``Pooling``).

Each op loops over the KH*KW kernel offsets only, each a strided view of the whole input
(windows.py); no Python loop runs over pixels or windows.
"""

from __future__ import annotations

import numpy as np

from ...shapes import pool_output_hw
from ..contract import Pair, Shape
from .scratch import KeptForBackward
from .threads import RowHalves
from .windows import pad, running_max, spread_windows, window_view


class Pooling:
    """The pooling ops of one worker of the NumPy backend. ``rows`` runs the ReLU mask that
    maxpool2d_backward may apply first (split in two halves where the threads are on)."""

    def __init__(self, rows: RowHalves) -> None:
        self._rows = rows
        # id(argmax) -> (argmax, None, offset): max pooling's winning kernel offset per window (uint8), so
        # the backward pass compares a quarter of the bytes that the int32 argmax would take
        self._kept_offsets = KeptForBackward()

    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW)
    def maxpool2d_forward(self, x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair,
                          ceil_mode: bool) -> tuple[np.ndarray, np.ndarray]:
        # A running maximum over the KH*KW kernel offsets, each a strided view of the whole
        # input: no window copy. The rule is maxpool2d.cu's: padding is never a candidate, the
        # first maximum wins ties, and the first NaN wins over everything.
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        windows = window_view(pad(x, ph, bottom, pw, right, -np.inf), kh, kw, sh, sw, 1, 1, oh, ow)
        corner = (np.arange(oh) * sh - ph)[:, None] * w + (np.arange(ow) * sw - pw)[None, :]
        if not np.isfinite(x).all():
            return self._maxpool2d_nonfinite(x.shape, windows, kernel, stride, padding, corner)
        # Finite input: "strictly greater" is exact, since any real element beats the -inf padding.
        best, offset = running_max([windows[:, :, i, j] for i in range(kh) for j in range(kw)])
        steps = (np.arange(kh)[:, None] * w + np.arange(kw)[None, :]).ravel().astype(np.int32)
        argmax = np.take(steps, offset)
        argmax += corner.astype(np.int32)
        self._kept_offsets.remember(argmax, None, offset)
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
    def maxpool2d_backward(self, dy: np.ndarray, argmax: np.ndarray, x_shape: Shape, kernel: Pair, stride: Pair,
                           padding: Pair, relu_output: np.ndarray | None = None) -> np.ndarray:
        if relu_output is not None:
            dy = self._rows.relu_backward(dy, relu_output)
        h, w = x_shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = dy.shape[2:]
        if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and (h, w) == (oh * kh, ow * kw):
            # the windows tile the input exactly: every input cell is written once, no zero fill
            dx = np.empty(x_shape, dtype=dy.dtype)
            tiles = dx.reshape(x_shape[0], x_shape[1], oh, kh, ow, kw)
            offset = self._kept_offsets.recall(argmax, None)
            if offset is not None:
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

        return spread_windows(routed, x_shape, kh, kw, sh, sw, 1, 1, ph, pw,
                              max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))

    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW); PyTorch's adaptive windows, maxpool2d.cu's rules
    @staticmethod
    def adaptive_maxpool2d_forward(x: np.ndarray, out_hw: Pair) -> tuple[np.ndarray, np.ndarray]:
        n, c, h, w = x.shape
        oh, ow = out_hw
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = np.empty((n, c, oh, ow), dtype=np.int32)
        for i, (h0, h1) in enumerate(_adaptive_windows(h, oh)):
            for j, (w0, w1) in enumerate(_adaptive_windows(w, ow)):
                window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
                # np.argmax takes the first maximum, and the first NaN over everything: the kernel's rule
                k = np.argmax(window, axis=2)
                y[:, :, i, j] = np.take_along_axis(window, k[:, :, None], axis=2)[:, :, 0]
                argmax[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
        return y, argmax

    # dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W); the windows' gradients summed in (oh, ow) order
    @staticmethod
    def adaptive_maxpool2d_backward(dy: np.ndarray, argmax: np.ndarray, x_shape: Shape) -> np.ndarray:
        n, c, h, w = x_shape
        oh, ow = dy.shape[2:]
        dx = np.zeros((n * c, h * w), dtype=dy.dtype)
        planes = np.arange(n * c)
        flat_dy, flat_argmax = dy.reshape(n * c, oh * ow), argmax.reshape(n * c, oh * ow)
        for o in range(oh * ow):  # one target per plane in each window: no repeated index in one step
            dx[planes, flat_argmax[:, o]] += flat_dy[:, o]
        return dx.reshape(x_shape)

    # x, indices: (N, C, H, W) -> y: (N, C, OH, OW); the last of a repeated index wins, as maxpool2d.cu's
    # ordered scatter; an index outside the OH*OW plane is skipped
    @staticmethod
    def maxunpool2d_forward(x: np.ndarray, indices: np.ndarray, out_hw: Pair) -> np.ndarray:
        n, c = x.shape[:2]
        size = out_hw[0] * out_hw[1]
        flat_x, flat_indices = x.reshape(n * c, -1), indices.reshape(n * c, -1)
        keys = np.arange(n * c)[:, None] * size + flat_indices
        inside = ((flat_indices >= 0) & (flat_indices < size)).ravel()
        keys, values = keys.ravel()[inside], flat_x.ravel()[inside]
        # the first of each key in reversed input order is its last in input order
        _, last = np.unique(keys[::-1], return_index=True)
        y = np.zeros(n * c * size, dtype=x.dtype)
        y[keys[::-1][last]] = values[::-1][last]
        return y.reshape(n, c, *out_hw)

    # dy: (N, C, OH, OW), indices: (N, C, H, W) -> dx: (N, C, H, W) = dy[indices] in each plane
    @staticmethod
    def maxunpool2d_backward(dy: np.ndarray, indices: np.ndarray) -> np.ndarray:
        n, c = dy.shape[:2]
        size = dy.shape[2] * dy.shape[3]
        flat_indices = indices.reshape(n * c, -1)
        inside = (flat_indices >= 0) & (flat_indices < size)
        taken = np.take_along_axis(dy.reshape(n * c, size), np.where(inside, flat_indices, 0), axis=1)
        return np.where(inside, taken, 0).astype(dy.dtype, copy=False).reshape(indices.shape)

    def avgpool2d_forward(self, x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, ceil_mode: bool,
                          count_include_pad: bool) -> np.ndarray:
        n, c, h, w = x.shape
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        xpad = pad(x, padding[0], bottom, padding[1], right, 0.0)
        sums = window_view(xpad, *kernel, *stride, 1, 1, oh, ow).sum(axis=(2, 3))
        divisor = _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, x.dtype)
        return np.ascontiguousarray(sums / divisor)

    def avgpool2d_backward(self, dy: np.ndarray, x_shape: Shape, kernel: Pair, stride: Pair, padding: Pair,
                           ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
        h, w = x_shape[2:]
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        share = dy / _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, dy.dtype)
        return spread_windows(lambda i, j: share, x_shape, *kernel, *stride, 1, 1,
                              padding[0], padding[1], h + padding[0] + bottom, w + padding[1] + right)

    # y = (sum x^p * KH*KW / count)^(1/p): PyTorch's LPPool2d, whose ceil-mode partial windows
    # are scaled up to a full window's size; p = inf is the window's max |x|, as in PyTorch.
    def lppool2d_forward(self, x: np.ndarray, norm_type: float, kernel: Pair, stride: Pair,
                         ceil_mode: bool) -> np.ndarray:
        if norm_type == np.inf:
            return np.ascontiguousarray(self._abs_windows(x, kernel, stride, ceil_mode).max(axis=(2, 3)))
        # a negative x^p or the root of a negative sum is NaN, as in PyTorch: no warning for it
        with np.errstate(invalid="ignore"):
            mean = self.avgpool2d_forward(x ** norm_type, kernel, stride, (0, 0), ceil_mode, True)
            return (mean * (kernel[0] * kernel[1])) ** (1.0 / norm_type)

    def lppool2d_backward(self, dy: np.ndarray, x: np.ndarray, y: np.ndarray, norm_type: float, kernel: Pair,
                          stride: Pair, ceil_mode: bool) -> np.ndarray:
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
        return window_view(pad(np.abs(x), 0, bottom, 0, right, -1.0), *kernel, *stride, 1, 1, oh, ow)

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
        signs = np.sign(window_view(pad(x, 0, bottom, 0, right, 0.0), kh, kw, sh, sw, 1, 1, oh, ow))
        return spread_windows(lambda i, j: np.where(winner == i * kw + j, dy * signs[:, :, i, j], 0), x.shape,
                              kh, kw, sh, sw, 1, 1, 0, 0, h + bottom, w + right)


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _pool_geometry(h, w, kernel, stride, padding, ceil_mode):
    """Output size and the padded extent that every window fits inside."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = pool_output_hw((h, w), kernel, stride, padding, ceil_mode)
    bottom = max(0, (oh - 1) * sh + kh - ph - h)
    right = max(0, (ow - 1) * sw + kw - pw - w)
    return oh, ow, bottom, right


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
