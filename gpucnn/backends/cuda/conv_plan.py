"""The convolution launch plan: how conv2d.cu's kernels cut a convolution into blocks.

Which kernel variant computes each product (forward, input gradient, weight gradient) of a filter
shape, the threads and tile of each variant's blocks, and how many splits the weight-gradient
reduction takes. ``launchers.py`` launches by these numbers; ``dev/conv_sass.py`` counts by them;
tests/test_kernel_constants.py checks each against conv2d.cu.
"""

from __future__ import annotations

from .launch import _blocks

# conv2d.cu's kernel variants; a kernel learns which one it runs from its block size. Per product:
# variant -> (threads per block, tile rows, tile columns); each GEMM thread computes 4x4 outputs,
# a direct-forward thread one pixel for DIRECT_CHANNELS channels at a time.
DIRECT_CHANNELS = 8         # conv2d.cu's DIRECT_CHANNELS
CONV_WIDE, CONV_NARROW, CONV_DIRECT = "wide", "narrow", "direct"
CONV_LAUNCH = {
    "forward": {CONV_WIDE: (256, 64, 64), CONV_NARROW: (64, 64, 16), CONV_DIRECT: (128, 128, DIRECT_CHANNELS)},
    "backward_input": {CONV_WIDE: (256, 64, 64), CONV_NARROW: (64, 64, 16)},
    "backward_weight": {CONV_WIDE: (256, 64, 64), CONV_NARROW: (32, 16, 32)},
}
NARROW_CHANNELS = 16        # a group with at most this many channels on a tile's column axis takes CONV_NARROW
DIRECT_MAX_TAPS = 64        # conv2d.cu's DIRECT_MAX_TAPS: kh * kw that CONV_DIRECT takes
WEIGHT_GRAD_MIN_PIXELS = 128  # fewest pixels one split of the weight-gradient reduction takes
WEIGHT_GRAD_WARPS_PER_SM = 32  # the weight-gradient splits aim at this many warps per multiprocessor


def conv2d_variants(w_shape: tuple[int, ...], groups: int) -> dict[str, str]:
    """The conv2d.cu variant that computes each product for filters ``w_shape`` (K, C/G, KH, KW).

    64x64 tiles waste most of their work when a group has few channels (LeNet: 1 -> 6 and 6 -> 16):
    one input channel per group takes the direct forward, at most 16 channels on the tile's column
    axis (forward: K/G, input gradient: C/G, weight gradient's rows: K/G) a narrow tile
    (benchmarks/results/conv-kernels-sass-2026-11-23.md).
    """
    k, cg, kh, kw = w_shape
    kg = k // groups
    if cg == 1 and kh * kw <= DIRECT_MAX_TAPS:
        forward = CONV_DIRECT
    else:
        forward = CONV_NARROW if kg <= NARROW_CHANNELS else CONV_WIDE
    return {"forward": forward,
            "backward_input": CONV_NARROW if cg <= NARROW_CHANNELS else CONV_WIDE,
            "backward_weight": CONV_NARROW if kg <= NARROW_CHANNELS else CONV_WIDE}


def weight_grad_splits(pixels: int, taps: int, k_per_group: int, groups: int, variant: str,
                       multiprocessors: int) -> tuple[int, int]:
    """(splits, pixels per split) of the weight-gradient reduction: enough blocks for about
    WEIGHT_GRAD_WARPS_PER_SM warps on every multiprocessor, each split at least WEIGHT_GRAD_MIN_PIXELS."""
    threads, rows, cols = CONV_LAUNCH["backward_weight"][variant]
    tiles = _blocks(taps + 1, cols) * _blocks(k_per_group, rows) * groups
    wanted_blocks = WEIGHT_GRAD_WARPS_PER_SM * multiprocessors * 32 // threads
    splits = max(1, min(_blocks(wanted_blocks, tiles), _blocks(pixels, WEIGHT_GRAD_MIN_PIXELS), 65535 // groups))
    per_split = _blocks(pixels, splits)
    return _blocks(pixels, per_split), per_split
