"""Padding of the last two axes, the NumPy reference of kernels/pad.cu.

pads = (left, right, top, bottom), PyTorch's F.pad order for the last two axes; mode one of
constant (negative pads crop), reflect, replicate, circular. The backward pass is the forward's
transpose: per axis a 0/1 matrix S (out, size) with S[o, i] = 1 where output position o reads input
position i, and dx = S_h^T @ dy @ S_w, summed in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_sources(out: int, before: int, size: int, mode: str) -> np.ndarray:
    """(out,): the input position each output position reads along one axis, -1 for a constant's value."""
    i = np.arange(out) - before
    inside = (i >= 0) & (i < size)
    if mode == "constant":
        return np.where(inside, i, -1)
    if mode == "reflect":
        outside = np.where(i < 0, -i, 2 * (size - 1) - i)
    elif mode == "replicate":
        outside = np.where(i < 0, 0, size - 1)
    else:  # circular
        outside = np.where(i < 0, i + size, i - size)
    return np.where(inside, i, outside)


def _reader_matrix(out: int, before: int, size: int, mode: str) -> np.ndarray:
    sources = pad_sources(out, before, size, mode)
    matrix = np.zeros((out, size), dtype=np.float64)
    rows = np.nonzero(sources >= 0)[0]
    matrix[rows, sources[rows]] = 1.0
    return matrix


def pad2d_forward(x: np.ndarray, pads: tuple[int, int, int, int], mode: str, value: float) -> np.ndarray:
    left, right, top, bottom = pads
    if mode == "constant":
        # negative pads crop first; np.pad takes the positive ones
        h, w = x.shape[2:]
        x = x[:, :, max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0)]
        widths = ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0)))
        return np.ascontiguousarray(np.pad(x, widths, mode="constant", constant_values=x.dtype.type(value)))
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return np.ascontiguousarray(np.pad(x, widths, mode=_NUMPY_MODES[mode]))


def pad2d_backward(dy: np.ndarray, x_shape: Any, pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    left, _, top, _ = pads
    h, w = x_shape[2:]
    rows = _reader_matrix(dy.shape[2], top, h, mode)
    cols = _reader_matrix(dy.shape[3], left, w, mode)
    dx = rows.T @ dy.astype(np.float64) @ cols
    return np.ascontiguousarray(dx.reshape(tuple(x_shape)), dtype=dy.dtype)
