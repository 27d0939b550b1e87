"""Window views shared by the NumPy backend's pooling ops (pooling.py) and its fused conv + ReLU +
max-pool op (conv.py): padding, strided window views, running maxima that remember the winning
offset, and the sum of window-shaped gradients back onto the input grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..contract import Pair, Shape


def pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float) -> np.ndarray:
    """Pad the last two axes; returns ``x`` itself when there is nothing to pad."""
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def window_view(xpad: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                oh: int, ow: int) -> np.ndarray:
    """A read-only view (N, C, KH, KW, OH, OW) of every window of a padded input."""
    s_n, s_c, s_h, s_w = xpad.strides
    n, c = xpad.shape[:2]
    return as_strided(xpad, shape=(n, c, kh, kw, oh, ow),
                      strides=(s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)


def spread_windows(contrib: Callable[[int, int], np.ndarray], dx_shape: Shape, kh: int, kw: int, sh: int,
                   sw: int, dh: int, dw: int, top: int, left: int, pad_h: int, pad_w: int) -> np.ndarray:
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


def windows_tile(kernel: Pair, stride: Pair, padding: Pair, in_hw: Pair, out_hw: Pair) -> bool:
    """True when pooling windows neither overlap nor stick out: each input cell is in at most one."""
    return (tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)
            and out_hw[0] * kernel[0] <= in_hw[0] and out_hw[1] * kernel[1] <= in_hw[1])


def tiled_windows(a: np.ndarray, kernel: Pair, out_hw: Pair) -> list[np.ndarray]:
    """For a: (K, H, W, m) and non-overlapping windows, one strided view (K, OH, OW, m) per kernel
    offset, in row-major offset order; writing to a view writes into ``a``."""
    (kh, kw), (oh, ow) = kernel, out_hw
    return [a[:, i:oh * kh:kh, j:ow * kw:kw] for i in range(kh) for j in range(kw)]


def running_max(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
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


def max_of_four_with_offset(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``running_max`` of exactly four views (a 2x2 pooling window), the same values and indices
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


def mark_dead_windows(offset: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Offsets (uint8) set to 255 where the window's maximum is not > 0 (or is NaN): after the
    ReLU such windows pass no gradient. Byte arithmetic: (best > 0) - 1 is 0 or 255."""
    if offset.dtype != np.uint8:
        np.copyto(offset, np.iinfo(offset.dtype).max, where=~(best > 0))
        return offset
    dead = np.greater(best, 0).view(np.uint8)
    np.subtract(dead, 1, out=dead)
    return np.bitwise_or(offset, dead, out=offset)
