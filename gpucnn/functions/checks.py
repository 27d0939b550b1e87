"""Input checks shared by the Functions' wrappers: each error names the layer or function,
what it expected and what it got."""

from __future__ import annotations

from typing import Any

from ..backends.base import FLOAT_DTYPES
from ..core.tensor import Tensor
from ..shapes import pair


def as_tensor(x: Any, owner: str) -> Tensor:
    """Tensors pass through; a backend array is wrapped (no gradient)."""
    if isinstance(x, Tensor):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return Tensor(x)
    raise TypeError(f"{owner}: expected a gpucnn Tensor or an array, got {type(x).__module__}.{type(x).__name__}")


def optional_tensor(x: Any, owner: str) -> Tensor | None:
    """An optional tensor argument (a bias, a weight): None stays None."""
    return None if x is None else as_tensor(x, owner)


def activation_input(x: Any, owner: str) -> Tensor:
    """The input of an elementwise function (any shape): a float Tensor with a non-empty batch."""
    x = as_tensor(x, owner)
    check_float_input(x, None, owner, layout="(N, ...)")
    return x


def positive_int(value: Any, label: str, owner: str) -> int:
    """A layer's count (channels, features, groups, a 1-D kernel size): an int >= 1, checked before
    anything is initialised (a zero fan-in would divide by zero in the default initialisation)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {label} must be a positive int, got {value!r}")
    return value


def positive_pair(value: Any, label: str, owner: str) -> tuple[int, int]:
    """A kernel size, stride or dilation: an int or a pair of ints, each >= 1."""
    result = pair(value, label, owner)
    if min(result) < 1:
        raise ValueError(f"{owner}: {label} must be >= 1, got {value!r}")
    return result


def check_float_input(x: Any, ndim: int | None, owner: str, channels: int | None = None,
                      layout: str = "(N, C, H, W)") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: expected a gpucnn Tensor, got {type(x).__module__}.{type(x).__name__}")
    data = x.data  # its array's attributes directly: these checks run on every layer call
    shape = data.shape
    if data.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: expected a float32 or float64 input, got dtype {data.dtype}")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{owner}: expected a {ndim}-D input {layout}, got shape {shape}")
    if shape and shape[0] == 0:
        raise ValueError(f"{owner}: got an empty batch, shape {shape}")
    if channels is not None and shape[1] != channels:
        expected = layout.replace("C", str(channels), 1)
        raise ValueError(f"{owner}: expected input of shape {expected}, got {shape}")


def check_same_dtype(x: Tensor, weight: Tensor | None, owner: str) -> None:
    """Layers with parameters refuse another dtype instead of promoting (which would leave a
    float64 gradient on a float32 weight)."""
    if weight is not None and x.data.dtype != weight.data.dtype:
        raise TypeError(f"{owner}: input dtype {x.dtype} differs from weight dtype {weight.dtype}; "
                        f"convert one of them (e.g. x.astype(np.{weight.dtype}))")
