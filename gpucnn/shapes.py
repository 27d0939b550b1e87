"""Output-size rules shared by every backend and layer (PyTorch's rules)."""

from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                     dilation: int = 1) -> int:
    """floor((i + p_before + p_after - d*(k-1) - 1) / s) + 1."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling rule: with ceil_mode the last window must start inside the
    input or its left padding, never wholly in the right padding."""
    span = size + 2 * padding - kernel
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out


def pair(value: int | tuple[int, int] | list[int], name: str, owner: str) -> tuple[int, int]:
    """Accept an int or a pair of ints; reject anything else with a clear message."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")


def conv_output_hw(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: tuple[int, int],
                   padding: tuple[int, int, int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """(OH, OW) of a convolution: x (N, C, H, W), w (K, C/G, KH, KW), padding (top, bottom, left, right)."""
    return (conv_output_size(x_shape[2], w_shape[2], stride[0], padding[0], padding[1], dilation[0]),
            conv_output_size(x_shape[3], w_shape[3], stride[1], padding[2], padding[3], dilation[1]))


def pool_output_hw(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], ceil_mode: bool) -> tuple[int, int]:
    """(OH, OW) of a pooling over an (H, W) plane."""
    return (pool_output_size(hw[0], kernel[0], stride[0], padding[0], ceil_mode),
            pool_output_size(hw[1], kernel[1], stride[1], padding[1], ceil_mode))
