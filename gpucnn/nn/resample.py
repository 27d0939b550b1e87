"""Resampling layers: Upsample ('nearest', 'bilinear'), PixelShuffle and PixelUnshuffle, each a
composition of existing ops (``gpucnn/functions/resample.py``); no parameters."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functions.checks import positive_int
from ..functions.resample import interpolate_arguments
from .module import Module

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["PixelShuffle", "PixelUnshuffle", "Upsample"]


class Upsample(Module):
    """``F.interpolate`` as a layer: (N, C, H, W) -> (N, C, OH, OW), to ``size`` or by ``scale_factor``,
    PyTorch's arguments and source indices (modes 'nearest' and 'bilinear')."""

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        interpolate_arguments(size, scale_factor, mode, align_corners, "Upsample")
        self.size = tuple(size) if isinstance(size, list) else size
        self.scale_factor = tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list)) \
            else (float(scale_factor) if scale_factor is not None else None)
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def extra_repr(self) -> str:
        shown = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{shown}, mode={self.mode!r}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, 4)
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)


class PixelShuffle(Module):
    """(*, C r^2, H, W) -> (*, C, H r, W r), r = ``upscale_factor`` (PyTorch's channel order)."""

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = positive_int(upscale_factor, "upscale_factor", "PixelShuffle")

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(*, C, H, W)")
        r = self.upscale_factor
        if x.ndim < 3 or x.shape[-3] % (r * r):
            raise ValueError(f"PixelShuffle: expected an input (*, C, H, W) with C divisible by upscale_factor^2 = "
                             f"{r * r}, got shape {x.shape}")
        return F.pixel_shuffle(x, r)


class PixelUnshuffle(Module):
    """(*, C, H r, W r) -> (*, C r^2, H, W), r = ``downscale_factor``: PixelShuffle's inverse."""

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = positive_int(downscale_factor, "downscale_factor", "PixelUnshuffle")

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"

    def forward(self, x: Any) -> Any:
        self._check_input(x, None, layout="(*, C, H, W)")
        r = self.downscale_factor
        if x.ndim < 3 or x.shape[-2] % r or x.shape[-1] % r:
            raise ValueError(f"PixelUnshuffle: expected an input (*, C, H, W) with H and W divisible by "
                             f"downscale_factor = {r}, got shape {x.shape}")
        return F.pixel_unshuffle(x, r)
