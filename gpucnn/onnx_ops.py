"""The op table of ``gpucnn.onnx.load`` (gpucnn/onnx_load.py): each ONNX op as gpucnn Tensor methods and
``gpucnn.functional`` calls (so a loaded graph runs on any backend and back-propagates), and ``FOLD``, the
NumPy forms of the ops that compute shapes, indices and other constants (what exporters write around a
``Reshape``: ``Shape -> Gather -> Unsqueeze -> Concat``): run at load time when every input is a constant,
at run time when one is a shape read off a Tensor.

Each entry is ``fn(n, backend, *inputs) -> value or tuple``: ``n`` is the node (``n.a`` its attributes,
``n.error(...)`` an OnnxLoadError naming it), an absent optional input is None, a constant input is a NumPy
array, the rest are Tensors. Needs no ``onnx`` import (the loader decodes attributes and dtypes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import functional as F
from .core.tensor import Tensor

OpFn = Any


# ---------------------------------------------------------------------------- helpers
def host(v: Any) -> np.ndarray:
    """A constant input (a NumPy array, or a Tensor holding one: a buffer) as a NumPy array."""
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def ints(v: Any) -> list[int]:
    return [int(i) for i in host(v).reshape(-1)]


def scalar(v: Any) -> float:
    return float(host(v).reshape(-1)[0])


def tensor(be: Any, v: Any) -> Tensor:
    return v if isinstance(v, Tensor) else Tensor(be.asarray(np.ascontiguousarray(v)), backend=be)


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _reshape(x: Any, shape: list[int]) -> Any:
    return x.reshape(*shape) if isinstance(x, Tensor) else np.reshape(x, shape)


def reshape_target(shape: tuple[int, ...], target: list[int], allowzero: int) -> list[int]:
    """ONNX Reshape's rules: 0 copies the input's size on that axis (unless allowzero), -1 is inferred."""
    return [shape[i] if t == 0 and not allowzero else t for i, t in enumerate(target)]


def squeezed(shape: tuple[int, ...], axes: Any) -> list[int]:
    if axes is None:
        return [s for s in shape if s != 1]
    drop = {_axis(a, len(shape)) for a in ints(axes)}
    return [s for i, s in enumerate(shape) if i not in drop]


def unsqueezed(shape: tuple[int, ...], axes: Any) -> list[int]:
    out_ndim = len(shape) + len(ints(axes))
    new = {_axis(a, out_ndim) for a in ints(axes)}
    rest = iter(shape)
    return [1 if i in new else next(rest) for i in range(out_ndim)]


def flattened(shape: tuple[int, ...], axis: int) -> list[int]:
    axis = _axis(axis, len(shape))
    return [math.prod(shape[:axis]), math.prod(shape[axis:])]


def slices(shape: tuple[int, ...], starts: Any, ends: Any, axes: Any, steps: Any) -> tuple[slice, ...]:
    """ONNX Slice as Python slices: both clamp out-of-range starts and ends the same way."""
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[_axis(axis, len(shape))] = slice(start, end, step)
    return tuple(index)


def split_sizes(n: Any, length: int, split: Any) -> list[int]:
    if split is not None:
        return ints(split)
    parts = n.a.get("num_outputs", len(n.outputs))
    size = -(-length // parts)
    return [min(size, length - i * size) for i in range(parts)]


def reduce_axes(n: Any, ndim: int, axes_input: Any) -> list[int] | None:
    """The axes of a Reduce* node (an input from opset 13 for ReduceSum, 18 for the rest; else the attribute);
    None for all of them."""
    axes = ints(axes_input) if axes_input is not None else n.a.get("axes")
    if not axes:
        return [] if n.a.get("noop_with_empty_axes", 0) else None
    return sorted(_axis(a, ndim) for a in axes)


def same_pads(size: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int],
              mode: str) -> list[int]:
    """auto_pad SAME_UPPER / SAME_LOWER: the output is ceil(size / stride); the odd pixel at the end (upper)
    or the start (lower)."""
    begin, end = [], []
    for i, s in enumerate(size):
        span = (kernel[i] - 1) * dilations[i] + 1
        total = max(0, (-(-s // strides[i]) - 1) * strides[i] + span - s)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def window_attrs(n: Any, size: tuple[int, ...], kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and ONNX pads [begin..., end...] of a Conv or pooling node."""
    nd = len(kernel)
    strides, dilations = n.a.get("strides", [1] * nd), n.a.get("dilations", [1] * nd)
    auto = n.a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(size, kernel, strides, dilations, auto)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    elif auto == "NOTSET":
        pads = n.a.get("pads", [0] * (2 * nd))
    else:
        raise n.error(f"auto_pad {auto!r} is not supported")
    return list(strides), list(dilations), list(pads)


def _as_2d(x: Tensor) -> tuple[Tensor, bool]:
    """A 1-D signal (N, C, L) runs as an (N, C, 1, L) image."""
    if x.ndim == 3:
        return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), True
    return x, False


def _lift(values: list[int], fill: int, was_1d: bool) -> list[int]:
    return [fill] + values if was_1d else values


# ---------------------------------------------------------------------------- convolution, linear algebra
def conv(n: Any, be: Any, x: Tensor, w: Any, b: Any = None) -> Tensor:
    kernel = list(w.shape[2:])
    if len(kernel) not in (1, 2):
        raise n.error(f"only 1-D and 2-D convolutions are supported, got kernel_shape {kernel}")
    strides, dilations, pads = window_attrs(n, tuple(x.shape[2:]), kernel)
    w = tensor(be, w)
    x, was_1d = _as_2d(x)
    if was_1d:
        w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
        strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads
    y = F.conv2d(x, w, None if b is None else tensor(be, b), tuple(strides), (top, bottom, left, right),
                 tuple(dilations), n.a.get("group", 1))
    return y.reshape(y.shape[0], y.shape[1], y.shape[3]) if was_1d else y


def gemm(n: Any, be: Any, a: Any, b: Any, c: Any = None) -> Tensor:
    alpha, beta = n.a.get("alpha", 1.0), n.a.get("beta", 1.0)
    a, b = tensor(be, a), tensor(be, b)
    if n.a.get("transA", 0):
        a = a.transpose(0, 1)
    if n.a.get("transB", 0):
        fused = c is not None and alpha == 1.0 and beta == 1.0 and c.ndim == 1 and c.shape[0] == b.shape[0]
        y = F.linear(a, b, tensor(be, c) if fused else None)
        if fused:
            return y
    else:
        y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (tensor(be, c) * beta if beta != 1.0 else tensor(be, c))
    return y


def matmul(n: Any, be: Any, a: Any, b: Any) -> Tensor:
    return tensor(be, a) @ tensor(be, b)


# ---------------------------------------------------------------------------- pooling
def _window_means(mask: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(mask, [(k - 1) * d + 1 for k, d in zip(kernel, dilations)])
    windows = windows[::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    return windows.mean(axis=(-2, -1))


def pool(n: Any, be: Any, x: Tensor, kind: str) -> Tensor:
    """MaxPool / AveragePool / LpPool with ONNX's pads, ceil_mode and count_include_pad. Symmetric pads and no
    extra ceil-mode window run as gpucnn's pooling directly; otherwise the input is padded first (-inf for max,
    0 for averages, which are then divided by each window's count of counted cells)."""
    if x.ndim not in (3, 4):
        raise n.error(f"only 1-D and 2-D pooling is supported, got an input of shape {tuple(x.shape)}")
    kernel = list(n.a["kernel_shape"])
    strides, dilations, pads = window_attrs(n, tuple(x.shape[2:]), kernel)
    x, was_1d = _as_2d(x)
    if was_1d:
        kernel, strides, dilations = [1] + kernel, [1] + strides, [1] + dilations
        pads = [0, pads[0], 0, pads[1]]
    if dilations != [1, 1]:
        raise n.error(f"dilated pooling (dilations {n.a['dilations']}) is not supported")
    p = n.a.get("p", 2)
    if kind == "lp":
        x = (F.relu(x) + F.relu(-x)) ** float(p)
    size, ceil = x.shape[2:], n.a.get("ceil_mode", 0)
    begin, end, extra = pads[:2], pads[2:], []
    for i in range(2):
        reach = (kernel[i] - 1) * dilations[i] + 1
        padded = size[i] + begin[i] + end[i]
        out = (-(-(padded - reach) // strides[i]) if ceil else (padded - reach) // strides[i]) + 1
        if ceil and (out - 1) * strides[i] >= size[i] + begin[i]:
            out -= 1  # a last window may not start in the end padding (ONNX Runtime, PyTorch)
        extra.append(max(0, (out - 1) * strides[i] + reach - padded))
    direct = begin == end and extra == [0, 0] and all(b <= k // 2 for b, k in zip(begin, kernel))
    if kind == "max":
        if direct:
            y = F.max_pool2d(x, tuple(kernel), tuple(strides), tuple(begin), tuple(dilations))
        else:
            xp = F.pad(x, (begin[1], end[1] + extra[1], begin[0], end[0] + extra[0]), "constant", -np.inf)
            y = F.max_pool2d(xp, tuple(kernel), tuple(strides), 0, tuple(dilations))
    else:
        counted = bool(n.a.get("count_include_pad", 0))
        if direct and (counted or begin == [0, 0]) and kind == "avg":
            y = F.avg_pool2d(x, tuple(kernel), tuple(strides), tuple(begin), False, counted)
        else:
            xp = F.pad(x, (begin[1], end[1] + extra[1], begin[0], end[0] + extra[0]), "constant", 0.0)
            y = F.avg_pool2d(xp, tuple(kernel), tuple(strides), 0)
            mask = np.zeros(xp.shape[2:], np.float64)
            if counted:
                mask[:size[0] + begin[0] + end[0], :size[1] + begin[1] + end[1]] = 1
            else:
                mask[begin[0]:begin[0] + size[0], begin[1]:begin[1] + size[1]] = 1
            share = _window_means(mask, kernel, strides, [1, 1])
            if kind == "lp":
                share = np.full_like(share, 1.0)  # LpPool sums over the window: no average
            y = y / share.astype(x.dtype)
        if kind == "lp":
            y = (y * float(kernel[0] * kernel[1])) ** (1.0 / float(p))
    return y.reshape(y.shape[0], y.shape[1], y.shape[3]) if was_1d else y


def global_pool(n: Any, be: Any, x: Tensor, kind: str) -> Tensor:
    axes = tuple(range(2, x.ndim))
    if kind == "avg":
        return x.mean(dim=axes, keepdim=True)
    for axis in axes:
        x = x.max(dim=axis, keepdim=True).values
    return x


# ---------------------------------------------------------------------------- shapes
def expand(be: Any, x: Any, shape: Any) -> Any:
    target = list(np.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))
    if not isinstance(x, Tensor):
        return np.broadcast_to(x, target).copy()
    if x.ndim < len(target):
        x = x.reshape(*([1] * (len(target) - x.ndim) + list(x.shape)))
    return x if list(x.shape) == target else x.expand(*target)


def gather(n: Any, be: Any, x: Any, indices: Any) -> Any:
    axis, index = n.a.get("axis", 0), host(indices)
    if not isinstance(x, Tensor):
        return np.take(x, index, axis=axis)
    if index.ndim != 0:
        raise n.error("Gather of a Tensor is supported with a scalar index only")
    axis = _axis(axis, x.ndim)
    return x[(slice(None),) * axis + (int(index),)]


def pad(n: Any, be: Any, x: Tensor, pads: Any, value: Any = None, axes: Any = None) -> Tensor:
    mode = n.a.get("mode", "constant")
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    if mode not in modes:
        raise n.error(f"Pad mode {mode!r} is not supported")
    pads, ndim = ints(pads), x.ndim
    axes = [_axis(a, ndim) for a in ints(axes)] if axes is not None else list(range(ndim))
    full = [[0, 0] for _ in range(ndim)]
    for i, axis in enumerate(axes):
        full[axis] = [pads[i], pads[i + len(axes)]]
    padded = [i for i in range(ndim) if full[i] != [0, 0]]
    if ndim not in (3, 4) or any(i < 2 for i in padded):
        raise n.error(f"Pad supports the last (1-D) or last two (2-D) axes of a 3-D or 4-D input, got pads "
                      f"{pads} for shape {tuple(x.shape)}")
    torch_pads: list[int] = []
    for axis in reversed(range(2, ndim)):
        torch_pads += full[axis]
    return F.pad(x, tuple(torch_pads), modes[mode], scalar(value) if value is not None and host(value).size else 0.0)


def resize(n: Any, be: Any, x: Tensor, roi: Any = None, scales: Any = None, sizes: Any = None) -> Tensor:
    mode = n.a.get("mode", "nearest")
    transform = n.a.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest" and transform == "asymmetric" and n.a.get("nearest_mode", "round_prefer_floor") == "floor":
        kwargs: dict[str, Any] = {"mode": "nearest"}
    elif mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        kwargs = {"mode": "bilinear", "align_corners": transform == "align_corners"}
    else:
        raise n.error(f"Resize mode {mode!r} with coordinate_transformation_mode {transform!r} (nearest_mode "
                      f"{n.a.get('nearest_mode', 'round_prefer_floor')!r}) is not supported: PyTorch's nearest "
                      f"(asymmetric, floor) and bilinear are")
    if x.ndim != 4:
        raise n.error(f"Resize supports 4-D inputs, got shape {tuple(x.shape)}")
    if sizes is not None and host(sizes).size:
        size = ints(sizes)
        if size[:2] != list(x.shape[:2]):
            raise n.error("Resize may change the spatial axes only")
        return F.interpolate(x, size=tuple(size[2:]), **kwargs)
    factors = [float(s) for s in host(scales).reshape(-1)]
    if factors[:2] != [1.0, 1.0]:
        raise n.error("Resize may change the spatial axes only")
    return F.interpolate(x, scale_factor=tuple(factors[2:]), **kwargs)


def reduce(n: Any, be: Any, x: Tensor, axes_input: Any, kind: str) -> Tensor:
    axes = reduce_axes(n, x.ndim, axes_input)
    keep = bool(n.a.get("keepdims", 1))
    if axes == []:
        return x
    axes = list(range(x.ndim)) if axes is None else axes
    if kind in ("sum", "mean"):
        return getattr(x, kind)(dim=tuple(axes), keepdim=keep)
    shape = list(x.shape)
    for axis in axes:
        x = getattr(x, kind)(dim=axis, keepdim=True).values
    return x if keep else x.reshape(*[s for i, s in enumerate(shape) if i not in axes])


def arg_extreme(n: Any, be: Any, x: Tensor, largest: bool) -> Tensor:
    if n.a.get("select_last_index", 0):
        raise n.error("select_last_index=1 is not supported")
    axis = _axis(n.a.get("axis", 0), x.ndim)
    y = (x if largest else -x).argmax(axis)
    if n.a.get("keepdims", 1):
        y = y.reshape(*[1 if i == axis else s for i, s in enumerate(x.shape)])
    return y


def power(be: Any, x: Any, y: Any) -> Tensor:
    if not isinstance(y, Tensor) and host(y).size == 1:
        return tensor(be, x) ** scalar(y)
    return (tensor(be, y) * tensor(be, x).log()).exp()  # x > 0 only, as a Tensor exponent needs


def hard_sigmoid(n: Any, be: Any, x: Tensor) -> Tensor:
    alpha, beta = n.a.get("alpha", 0.2), n.a.get("beta", 0.5)
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        return F.hardsigmoid(x)
    return (x * alpha + beta).clamp(0.0, 1.0)


def clip(be: Any, x: Tensor, low: Any = None, high: Any = None) -> Tensor:
    low = None if low is None or not host(low).size else scalar(low)
    high = None if high is None or not host(high).size else scalar(high)
    return x if low is None and high is None else x.clamp(low, high)


def erf(x: Tensor) -> Tensor:
    """erf as Tensor ops (so it back-propagates): Abramowitz and Stegun's 7.1.26, absolute error under 1.5e-7 (a
    float32 rounding), odd by construction: E(relu(x)) - E(relu(-x)) with E(0) = 0."""
    def positive(z: Tensor) -> Tensor:
        t = 1.0 / (z * 0.3275911 + 1.0)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        return 1.0 - poly * (-(z * z)).exp()
    return positive(F.relu(x)) - positive(F.relu(-x))


def where(be: Any, condition: Any, x: Any, y: Any) -> Tensor:
    from . import where as select  # gpucnn.where, the public name

    return select(tensor(be, condition), tensor(be, x), tensor(be, y))


def cast(n: Any, be: Any, x: Tensor) -> Tensor:
    if np.dtype(n.a["to"]) != x.dtype:
        raise n.error(f"Cast of a Tensor from {x.dtype} to {np.dtype(n.a['to'])} is not supported")
    return x


def _one_output(n: Any, be: Any, x: Tensor, *rest: Any) -> Tensor:
    return x


def batch_norm(n: Any, be: Any, x: Tensor, scale: Any, bias: Any, mean: Any, var: Any) -> Tensor:
    if len([o for o in n.outputs if o]) > 1:
        raise n.error("BatchNormalization's training outputs (running statistics) are not supported")
    stats = [tensor(be, s) for s in (mean, var)]
    return F.batch_norm(x, *stats, tensor(be, scale), tensor(be, bias), training=False,
                        eps=n.a.get("epsilon", 1e-5))


def layer_norm(n: Any, be: Any, x: Tensor, scale: Any, bias: Any = None) -> Tensor:
    axis = _axis(n.a.get("axis", -1), x.ndim)
    return F.layer_norm(x, tuple(x.shape[axis:]), tensor(be, scale), None if bias is None else tensor(be, bias),
                        n.a.get("epsilon", 1e-5))


OPS: dict[str, OpFn] = {
    "Conv": conv, "Gemm": gemm, "MatMul": matmul,
    "Add": lambda n, be, a, b: tensor(be, a) + tensor(be, b),
    "Sub": lambda n, be, a, b: tensor(be, a) - tensor(be, b),
    "Mul": lambda n, be, a, b: tensor(be, a) * tensor(be, b),
    "Div": lambda n, be, a, b: tensor(be, a) / tensor(be, b),
    "Pow": lambda n, be, a, b: power(be, a, b),
    "Relu": lambda n, be, x: F.relu(x),
    "LeakyRelu": lambda n, be, x: F.leaky_relu(x, n.a.get("alpha", 0.01)),
    "PRelu": lambda n, be, x, slope: F.relu(x) - tensor(be, slope) * F.relu(-x),
    "Sigmoid": lambda n, be, x: F.sigmoid(x),
    "Tanh": lambda n, be, x: F.tanh(x),
    "Clip": lambda n, be, x, low=None, high=None: clip(be, x, low, high),
    "HardSigmoid": hard_sigmoid,
    "HardSwish": lambda n, be, x: F.hardswish(x),
    "Elu": lambda n, be, x: F.elu(x, n.a.get("alpha", 1.0)),
    "Softplus": lambda n, be, x: F.softplus(x),
    "Mish": lambda n, be, x: F.mish(x),
    "Gelu": lambda n, be, x: F.gelu(x, n.a.get("approximate", "none")),
    "Softmax": lambda n, be, x: F.softmax(x, dim=n.a.get("axis", -1)),
    "LogSoftmax": lambda n, be, x: F.log_softmax(x, dim=n.a.get("axis", -1)),
    "MaxPool": lambda n, be, x: pool(n, be, x, "max"),
    "AveragePool": lambda n, be, x: pool(n, be, x, "avg"),
    "LpPool": lambda n, be, x: pool(n, be, x, "lp"),
    "GlobalAveragePool": lambda n, be, x: global_pool(n, be, x, "avg"),
    "GlobalMaxPool": lambda n, be, x: global_pool(n, be, x, "max"),
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "InstanceNormalization": lambda n, be, x, s, b: F.instance_norm(x, weight=tensor(be, s), bias=tensor(be, b),
                                                                    eps=n.a.get("epsilon", 1e-5)),
    "Flatten": lambda n, be, x: x.reshape(*flattened(tuple(x.shape), n.a.get("axis", 1))),
    "Reshape": lambda n, be, x, s: x.reshape(*reshape_target(tuple(x.shape), ints(s), n.a.get("allowzero", 0))),
    "Transpose": lambda n, be, x: x.permute(*n.a.get("perm", list(reversed(range(x.ndim))))),
    "Concat": lambda n, be, *xs: F.cat([tensor(be, x) for x in xs], dim=n.a["axis"]),
    "Split": lambda n, be, x, split=None: x.split(split_sizes(n, x.shape[_axis(n.a.get("axis", 0), x.ndim)], split),
                                                  dim=n.a.get("axis", 0)),
    "Squeeze": lambda n, be, x, axes=None: x.reshape(*squeezed(tuple(x.shape), axes)),
    "Unsqueeze": lambda n, be, x, axes: x.reshape(*unsqueezed(tuple(x.shape), axes)),
    "Slice": lambda n, be, x, starts, ends, axes=None, steps=None: x[slices(tuple(x.shape), starts, ends, axes,
                                                                              steps)],
    "Expand": lambda n, be, x, shape: expand(be, x, shape),
    "Gather": gather,
    "Identity": lambda n, be, x: x,
    "Dropout": _one_output,
    "Pad": pad,
    "Resize": resize,
    "ReduceMean": lambda n, be, x, axes=None: reduce(n, be, x, axes, "mean"),
    "ReduceSum": lambda n, be, x, axes=None: reduce(n, be, x, axes, "sum"),
    "ReduceMax": lambda n, be, x, axes=None: reduce(n, be, x, axes, "max"),
    "ReduceMin": lambda n, be, x, axes=None: reduce(n, be, x, axes, "min"),
    "ArgMax": lambda n, be, x: arg_extreme(n, be, x, True),
    "ArgMin": lambda n, be, x: arg_extreme(n, be, x, False),
    "Sqrt": lambda n, be, x: x.sqrt(),
    "Exp": lambda n, be, x: x.exp(),
    "Log": lambda n, be, x: x.log(),
    "Neg": lambda n, be, x: -x,
    "Abs": lambda n, be, x: F.relu(x) + F.relu(-x),
    "Reciprocal": lambda n, be, x: 1.0 / x,
    "Erf": lambda n, be, x: erf(x),
    "Cast": cast,
    "Greater": lambda n, be, a, b: tensor(be, a) > tensor(be, b),
    "Less": lambda n, be, a, b: tensor(be, a) < tensor(be, b),
    "GreaterOrEqual": lambda n, be, a, b: tensor(be, a) >= tensor(be, b),
    "LessOrEqual": lambda n, be, a, b: tensor(be, a) <= tensor(be, b),
    "Equal": lambda n, be, a, b: tensor(be, a) == tensor(be, b),
    "Where": lambda n, be, c, a, b: where(be, c, a, b),
    "Shape": lambda n, be, x: np.array(x.shape[n.a.get("start", 0):n.a.get("end", None)], np.int64),
}

#: the inputs that are sizes, axes or scalars (never Tensors): their constants stay NumPy arrays
STATIC_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Split": {1}, "Slice": {1, 2, 3, 4}, "Expand": {1},
    "Clip": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "Gather": {1}, "Pow": {1}, "Dropout": {1, 2},
}


# ---------------------------------------------------------------------------- NumPy forms (constant folding)
def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return (np.trunc(a / b)).astype(np.result_type(a, b))  # ONNX integer Div truncates
    return np.asarray(a / b, dtype=np.result_type(a, b))


def _fold_slice(n: Any, be: Any, x: Any, starts: Any, ends: Any, axes: Any = None, steps: Any = None) -> Any:
    return np.asarray(x)[slices(np.shape(x), starts, ends, axes, steps)]


def _fold_split(n: Any, be: Any, x: Any, split: Any = None) -> tuple[np.ndarray, ...]:
    axis = _axis(n.a.get("axis", 0), np.ndim(x))
    bounds = np.cumsum(split_sizes(n, np.shape(x)[axis], split))[:-1]
    return tuple(np.split(x, bounds, axis=axis))


def _fold_reduce(kind: str) -> OpFn:
    def fold(n: Any, be: Any, x: Any, axes: Any = None) -> np.ndarray:
        found = reduce_axes(n, np.ndim(x), axes)
        if found == []:
            return np.asarray(x)
        return getattr(np, kind)(x, axis=None if found is None else tuple(found), keepdims=bool(n.a.get("keepdims", 1)))
    return fold


FOLD: dict[str, OpFn] = {
    "Constant": lambda n, be: n.a["value"] if "value" in n.a else np.asarray(
        n.a.get("value_float", n.a.get("value_int", n.a.get("value_floats", n.a.get("value_ints"))))),
    "Identity": lambda n, be, x: x,
    "Shape": OPS["Shape"],
    "Gather": gather,
    "Cast": lambda n, be, x: np.asarray(x).astype(n.a["to"]),
    "Unsqueeze": lambda n, be, x, axes: np.reshape(x, unsqueezed(np.shape(x), axes)),
    "Squeeze": lambda n, be, x, axes=None: np.reshape(x, squeezed(np.shape(x), axes)),
    "Concat": lambda n, be, *xs: np.concatenate([np.asarray(x) for x in xs], axis=n.a["axis"]),
    "Reshape": lambda n, be, x, s: np.reshape(x, reshape_target(np.shape(x), ints(s), n.a.get("allowzero", 0))),
    "Flatten": lambda n, be, x: np.reshape(x, flattened(np.shape(x), n.a.get("axis", 1))),
    "Transpose": lambda n, be, x: np.transpose(x, n.a.get("perm")),
    "Slice": _fold_slice, "Split": _fold_split,
    "Expand": lambda n, be, x, shape: expand(be, x, shape),
    "Add": lambda n, be, a, b: np.add(a, b), "Sub": lambda n, be, a, b: np.subtract(a, b),
    "Mul": lambda n, be, a, b: np.multiply(a, b), "Div": lambda n, be, a, b: _int_div(np.asarray(a), np.asarray(b)),
    "Pow": lambda n, be, a, b: np.power(a, b).astype(np.asarray(a).dtype),
    "Neg": lambda n, be, x: np.negative(x), "Abs": lambda n, be, x: np.abs(x),
    "Sqrt": lambda n, be, x: np.sqrt(x), "Exp": lambda n, be, x: np.exp(x), "Log": lambda n, be, x: np.log(x),
    "Reciprocal": lambda n, be, x: np.reciprocal(x), "Floor": lambda n, be, x: np.floor(x),
    "Ceil": lambda n, be, x: np.ceil(x),
    "Equal": lambda n, be, a, b: np.equal(a, b), "Less": lambda n, be, a, b: np.less(a, b),
    "Greater": lambda n, be, a, b: np.greater(a, b), "Not": lambda n, be, x: np.logical_not(x),
    "Where": lambda n, be, c, a, b: np.where(c, a, b),
    "Min": lambda n, be, *xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
    "Max": lambda n, be, *xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
    "Range": lambda n, be, start, limit, delta: np.arange(host(start).item(), host(limit).item(), host(delta).item(),
                                                          dtype=host(start).dtype),
    "ConstantOfShape": lambda n, be, shape: np.full(ints(shape), n.a["value"].reshape(-1)[0] if "value" in n.a
                                                    else np.float32(0), dtype=n.a["value"].dtype if "value" in n.a
                                                    else np.float32),
    "ReduceProd": _fold_reduce("prod"), "ReduceSum": _fold_reduce("sum"), "ReduceMax": _fold_reduce("max"),
    "ReduceMin": _fold_reduce("min"), "ReduceMean": _fold_reduce("mean"),
}
