"""Resampling, as compositions of existing ops (no kernel of its own): ``interpolate`` ('nearest' and
'bilinear') applies host-built interpolation matrices with the Linear op along W and then along H;
``pixel_shuffle`` / ``pixel_unshuffle`` are reshape + permute + reshape. Forward and backward run on
the ops they compose (GEMMs and copies), so they are deterministic as those are."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input, positive_int
from .linear import linear

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle"]

INTERPOLATE_MODES = ("nearest", "bilinear")
_NOT_YET = ("linear", "bicubic", "trilinear", "area", "nearest-exact")


# ---------------------------------------------------------------------------- interpolation matrices
def _kernel_scale(in_size: int, out_size: int, scale: float | None, dtype: Any) -> Any:
    """PyTorch's compute_scales_value: 1 / scale_factor where one was given, else in / out (in ``dtype``)."""
    if scale is not None and scale > 0:
        return dtype(1.0 / scale)
    return dtype(in_size) / dtype(out_size)


def nearest_matrix(in_size: int, out_size: int, scale: float | None) -> np.ndarray:
    """(out, in) float64, one 1 a row: PyTorch's legacy 'nearest' source index, min(floor(i * s), in - 1)
    in float32 arithmetic (as its kernels compute it), with its shortcuts for out == in and out == 2 in."""
    i = np.arange(out_size)
    if out_size == in_size:
        src = i
    elif out_size == 2 * in_size:
        src = i >> 1
    else:
        s = _kernel_scale(in_size, out_size, scale, np.float32)
        src = np.minimum(np.floor(i.astype(np.float32) * s).astype(np.int64), in_size - 1)
    matrix = np.zeros((out_size, in_size))
    matrix[i, src] = 1.0
    return matrix


def linear_matrix(in_size: int, out_size: int, scale: float | None, align_corners: bool) -> np.ndarray:
    """(out, in) float64, two weights a row: PyTorch's linear source coordinate (area_pixel_compute_scale and
    area_pixel_compute_source_index, the index clamped to [0, in - 1] and its fraction to [0, 1]). An axis
    whose size does not change is left as it is, whatever the scale_factor (as PyTorch's CPU kernels do:
    3 rows at scale 1.3 stay the 3 rows)."""
    if out_size == in_size:
        return np.eye(in_size)
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        s = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        real = s * i
    else:
        s = _kernel_scale(in_size, out_size, scale, np.float64)
        real = np.maximum(s * (i + 0.5) - 0.5, 0.0)
    low = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    frac = np.clip(real - low, 0.0, 1.0)
    high = np.where(low < in_size - 1, low + 1, low)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _identity(matrix: np.ndarray) -> bool:
    return matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(matrix.shape[0]))


def _along_last(x: Tensor, matrix: np.ndarray) -> Tensor:
    """x @ matrix.T over the last axis, with the Linear op (the matrix a constant on x's backend)."""
    weight = Tensor(x.backend.asarray(matrix.astype(x.dtype)), backend=x.backend)
    return linear(x, weight)


# ---------------------------------------------------------------------------- argument checks
def _spatial(value: Any, label: str, owner: str, kind: type) -> tuple:
    """``size`` or ``scale_factor``: one value for both spatial axes or a pair (H, W)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f"{owner}: {label} must be one value or a pair (H, W) for a 4-D input, got {value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{owner}: {label} must hold numbers, got {value!r}")
        if kind is int:
            if float(v) != int(v) or int(v) < 1:
                raise ValueError(f"{owner}: {label} must be positive ints, got {value!r}")
            out.append(int(v))
        else:
            if not math.isfinite(float(v)) or float(v) <= 0:
                raise ValueError(f"{owner}: {label} must be positive, got {value!r}")
            out.append(float(v))
    return tuple(out)


def interpolate_arguments(size: Any, scale_factor: Any, mode: Any, align_corners: Any, owner: str) -> None:
    """The checks ``interpolate`` and ``nn.Upsample`` share (PyTorch's, as ValueErrors naming ``owner``)."""
    if mode in _NOT_YET:
        raise ValueError(f"{owner}: mode {mode!r} is not supported yet; supported: {', '.join(INTERPOLATE_MODES)}")
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"{owner}: mode must be one of {', '.join(INTERPOLATE_MODES)}, got {mode!r}")
    if size is not None and scale_factor is not None:
        raise ValueError(f"{owner}: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError(f"{owner}: either size or scale_factor should be defined")
    if align_corners is not None and mode == "nearest":
        raise ValueError(f"{owner}: align_corners option can only be set with the interpolating modes: bilinear "
                         f"(got mode 'nearest')")
    if size is not None:
        _spatial(size, "size", owner, int)
    else:
        _spatial(scale_factor, "scale_factor", owner, float)


def interpolate(input: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resample a 4-D (N, C, H, W) input to ``size`` or by ``scale_factor`` (PyTorch's semantics and source
    indices, 'nearest' or 'bilinear').

    A composition, not an op of its own: both modes are separable linear maps, so the (OW, W) and (OH, H)
    interpolation matrices are built on the host in float64 (one 1 a row for 'nearest', two weights for
    'bilinear'), cast to the input's dtype, and applied with the Linear op along W, then along H after a
    transpose; the backward is those GEMMs' (an ordered reduction, no atomics)."""
    owner = "interpolate"
    x = as_tensor(input, owner)
    interpolate_arguments(size, scale_factor, mode, align_corners, owner)
    if antialias:
        raise ValueError(f"{owner}: antialias=True is not supported yet")
    check_float_input(x, None, owner)
    if x.ndim in (3, 5):
        raise ValueError(f"{owner}: {x.ndim}-D input is not supported yet; expected a 4-D input (N, C, H, W), "
                         f"got shape {x.shape}")
    if x.ndim != 4:
        raise ValueError(f"{owner}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    h, w = x.shape[2], x.shape[3]
    if size is not None:
        (oh, ow), scales = _spatial(size, "size", owner, int), (None, None)
    else:
        factors = _spatial(scale_factor, "scale_factor", owner, float)
        oh, ow = math.floor(h * factors[0]), math.floor(w * factors[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"{owner}: scale_factor {scale_factor!r} gives an empty output ({oh}, {ow}) for input "
                             f"shape {x.shape}")
        scales = (None, None) if recompute_scale_factor else factors
    if mode == "nearest":
        mw, mh = nearest_matrix(w, ow, scales[1]), nearest_matrix(h, oh, scales[0])
    else:
        corners = bool(align_corners)
        mw, mh = linear_matrix(w, ow, scales[1], corners), linear_matrix(h, oh, scales[0], corners)
    skip_h = _identity(mh)
    y = x if _identity(mw) and not skip_h else _along_last(x, mw)  # (N, C, H, OW); a new tensor either way
    if not skip_h:  # along H: (N, C, OW, H) -> (N, C, OW, OH), and back
        y = _along_last(y.transpose(2, 3), mh).transpose(2, 3)
    return y


# ---------------------------------------------------------------------------- pixel (un)shuffle
def _shuffle_input(input: Any, factor: Any, label: str, owner: str) -> tuple[Tensor, int]:
    x = as_tensor(input, owner)
    r = positive_int(factor, label, owner)
    check_float_input(x, None, owner)
    if x.ndim < 3:
        raise ValueError(f"{owner}: expected an input of at least 3 dims (*, C, H, W), got shape {x.shape}")
    return x, r


def pixel_shuffle(input: Any, upscale_factor: int) -> Tensor:
    """(*, C r^2, H, W) -> (*, C, H r, W r), PyTorch's order (output channel c, pixel (i, j) of each r x r
    block from input channel c r^2 + i r + j). A composition: reshape, permute, reshape."""
    owner = "pixel_shuffle"
    x, r = _shuffle_input(input, upscale_factor, "upscale_factor", owner)
    *batch, c, h, w = x.shape
    if c % (r * r):
        raise ValueError(f"{owner}: expected the channel axis to be divisible by upscale_factor^2 = {r * r}, got "
                         f"{c} channels (input shape {x.shape})")
    k, n = len(batch), c // (r * r)
    y = x.reshape(*batch, n, r, r, h, w)
    y = y.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)  # (*, C, H, r, W, r)
    return y.reshape(*batch, n, h * r, w * r)


def pixel_unshuffle(input: Any, downscale_factor: int) -> Tensor:
    """(*, C, H r, W r) -> (*, C r^2, H, W), the inverse of ``pixel_shuffle``. A composition: reshape,
    permute, reshape."""
    owner = "pixel_unshuffle"
    x, r = _shuffle_input(input, downscale_factor, "downscale_factor", owner)
    *batch, c, h, w = x.shape
    if h % r or w % r:
        raise ValueError(f"{owner}: expected height and width divisible by downscale_factor = {r}, got input shape "
                         f"{x.shape}")
    k, oh, ow = len(batch), h // r, w // r
    y = x.reshape(*batch, c, oh, r, ow, r)
    y = y.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)  # (*, C, r, r, H, W)
    return y.reshape(*batch, c * r * r, oh, ow)
