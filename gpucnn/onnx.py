"""Export an eval-mode network to ONNX: ``gpucnn.onnx.export(model, "model.onnx", example_input)``.

One forward pass of ``example_input`` (requires_grad=True, so every op records an autograd node) is
traced; every recorded Function call that the output depends on becomes its ONNX op sequence. Any
Module exports, a user's own with residual adds or concatenations included, as long as each Function
it calls has a mapping here. Parameters and buffers become initializers named by their state_dict names.

Needs the optional ``onnx`` package (``pip install 'gpucnn[onnx]'``); ``verify`` also needs onnxruntime.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .core.autograd import enable_grad, tracing
from .core.tensor import Parameter, Tensor
from .functions.avgpool2d import adaptive_matrix
from .nn.module import Module
from .shapes import pool_output_size

__all__ = ["ExportError", "export", "verify"]

_INSTALL = "pip install 'gpucnn[onnx]'"
_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


class ExportError(ValueError):
    """The network holds something ONNX export cannot express; the message names the Function and layer."""


def _require(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as error:
        raise ImportError(f"gpucnn.onnx needs the optional package {name!r}: {_INSTALL}") from error


# ---------------------------------------------------------------------------- tracing
class _Call:
    """One recorded Function call with every argument (the autograd node keeps only those needing a gradient)."""

    __slots__ = ("function", "args", "outputs", "layer")

    def __init__(self, function: type, args: dict[str, Any], outputs: tuple[Tensor, ...], layer: str) -> None:
        self.function, self.args, self.outputs, self.layer = function, args, outputs, layer


class _Tracer:
    """Records each Function call of one forward pass with all its arguments, and the layer it ran
    in (the autograd node keeps only the inputs that need a gradient)."""

    def __init__(self, model: Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.calls: dict[int, _Call] = {}
        self.stack: list[str] = []

    def module_entered(self, module: Module) -> None:
        self.stack.append(self.names.get(id(module), self.stack[-1] if self.stack else ""))

    def module_left(self, module: Module) -> None:
        self.stack.pop()

    def function_called(self, cls: type, args: tuple, kwargs: dict[str, Any], result: Any) -> None:
        outputs = result if isinstance(result, tuple) else (result,)
        node = outputs[0]._node if outputs and isinstance(outputs[0], Tensor) else None
        if node is not None:
            bound = inspect.signature(cls.forward).bind(None, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])
            self.calls[id(node)] = _Call(cls, arguments, outputs, self.stack[-1] if self.stack else "")


# ---------------------------------------------------------------------------- the graph being built
class _Graph:
    def __init__(self, onnx: Any, opset: int, model: Module, input_tensor: Tensor, dynamic: bool) -> None:
        self.onnx, self.opset, self.dynamic = onnx, opset, dynamic
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.values: dict[int, str] = {id(input_tensor): "input"}  # id(Tensor or array) -> value name
        self.batched: set[str] = {"input"} if dynamic else set()  # values whose axis 0 is the batch
        self.keep: list[Any] = []  # holds every object whose id() is a key of self.values
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.params = {id(p): p for p in model.parameters()}
        backend = model.backend
        self.to_numpy: Callable[[Any], np.ndarray] = backend.to_numpy
        buffers = {name for name, _ in model.named_buffers()}
        self.buffer_names = {id(v): k for k, v in model.state_dict().items() if k in buffers}
        self.used: set[str] = set()
        self.layer = ""

    def fresh(self, hint: str) -> str:
        base = hint.replace(" ", "_") or "v"
        name, k = base, 1
        while name in self.used or name in self.initializers:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def const(self, array: Any, hint: str = "const", exact: bool = False) -> str:
        name = hint if exact and hint not in self.initializers else self.fresh(hint)
        self.initializers[name] = self.onnx.numpy_helper.from_array(np.array(array, order="C"), name)
        return name

    def ints(self, values: Any, hint: str = "axes") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint)

    def value(self, obj: Any) -> str:
        """The value name of a Tensor or backend array argument, making leaves into initializers."""
        key = id(obj)
        if key in self.values:
            return self.values[key]
        data = obj.data if isinstance(obj, Tensor) else obj
        if isinstance(obj, Parameter) or key in self.param_names:
            name = self.const(self.to_numpy(data), self.param_names.get(key, "param"), exact=True)
        elif id(data) in self.buffer_names:
            name = self.const(self.to_numpy(data), self.buffer_names[id(data)], exact=True)
        else:
            if isinstance(obj, Tensor) and obj._node is not None:
                raise ExportError(f"gpucnn.onnx.export: a tensor used in layer {self.layer or '(top level)'!r} was "
                                  f"computed outside the traced forward pass (by {obj._node.function.__name__}); "
                                  f"compute it inside forward()")
            name = self.const(self.to_numpy(data), "const")
        self.values[key] = name
        self.keep.append(obj)
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        names = [self.fresh(f"{self.layer}/{op_type}" if self.layer else op_type) for _ in range(outputs)]
        node_name = self.fresh(f"{self.layer}/{op_type}_node" if self.layer else f"{op_type}_node")
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, name=node_name, **attrs))
        return names[0] if outputs == 1 else names

    def reduce(self, op_type: str, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
        # ReduceSum took axes as an input from opset 13, the other reductions from opset 18
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))


# ---------------------------------------------------------------------------- one emitter per Function
def _conv(g: _Graph, a: dict[str, Any]) -> str:
    spec, w = a["spec"], a["w"]
    pt, pb, pl, pr = spec.padding
    inputs = [g.value(a["x"]), g.value(w)] + ([g.value(a["b"])] if a["b"] is not None else [])
    return g.op("Conv", inputs, kernel_shape=list(w.shape[2:]), strides=list(spec.stride), pads=[pt, pl, pb, pr],
                dilations=list(spec.dilation), group=spec.groups)


def _conv2d(g: _Graph, a: dict[str, Any]) -> str:
    y = _conv(g, a)
    return g.op("Relu", [y]) if a.get("relu") else y


def _pool_attrs(x_shape: tuple[int, ...], pool: Any, pads_counted: bool) -> dict[str, Any]:
    """Window attributes giving PyTorch's output size. ONNX's ceil_mode formula lets the last window start
    in the right padding, PyTorch's does not; where ceil mode adds a window, a floor-mode window with the end
    padding that yields PyTorch's size is written, exact for max pooling and for averages that do not count
    padding. An average that counts padding keeps ceil_mode: the two formulas differ only where PyTorch's
    size is the floor one, so where ceil mode adds a window they agree (and ONNX Runtime divides as PyTorch)."""
    kernel, stride, padding, ceil = pool
    end, use_ceil = list(padding), False
    for i in range(2):
        size, k, s, p = x_shape[2 + i], kernel[i], stride[i], padding[i]
        out = pool_output_size(size, k, s, p, ceil)
        if out != pool_output_size(size, k, s, p, False):
            extra = (out - 1) * s + k - size - p
            if pads_counted and extra > p:
                use_ceil = True
            end[i] = extra
    return {"kernel_shape": list(kernel), "strides": list(stride), "ceil_mode": int(use_ceil),
            "pads": list(padding) + (list(padding) if use_ceil else end)}


def _maxpool(g: _Graph, x: str, shape: tuple[int, ...], pool: Any) -> str:
    return g.op("MaxPool", [x], **_pool_attrs(shape, pool, pads_counted=False))


def _conv_relu_maxpool(g: _Graph, a: dict[str, Any]) -> str:
    y = g.op("Relu", [_conv(g, a)])
    return _maxpool(g, y, tuple(a["__out__"].shape[:2]) + _conv_hw(a), a["pool"])


def _conv_hw(a: dict[str, Any]) -> tuple[int, int]:
    from .shapes import conv_output_hw

    spec = a["spec"]
    return conv_output_hw(a["x"].shape, a["w"].shape, spec.stride, spec.padding, spec.dilation)


def _avgpool(g: _Graph, a: dict[str, Any]) -> str:
    x, pool = a["x"], a["pool"]
    if pool.padding == (0, 0) and tuple(pool.kernel) == tuple(x.shape[2:]):
        return g.op("GlobalAveragePool", [g.value(x)])
    attrs = _pool_attrs(x.shape, pool, pads_counted=a["count_include_pad"])
    return g.op("AveragePool", [g.value(x)], count_include_pad=int(a["count_include_pad"]), **attrs)


def _adaptive_avgpool(g: _Graph, a: dict[str, Any]) -> str:
    x, (oh, ow) = a["x"], a["out_hw"]
    dtype = np.dtype(x.dtype)
    rows = g.const(adaptive_matrix(x.shape[2], oh, dtype), "adaptive_rows")
    cols = g.const(adaptive_matrix(x.shape[3], ow, dtype).T, "adaptive_cols")
    return g.op("MatMul", [g.op("MatMul", [rows, g.value(x)]), cols])


def _lppool(g: _Graph, a: dict[str, Any]) -> str:
    x, p, pool = a["x"], a["norm_type"], a["pool"]
    if math.isinf(p):
        return _maxpool(g, g.op("Abs", [g.value(x)]), x.shape, pool)
    # ONNX's LpPool takes an integer p and |x|; gpucnn's (PyTorch's) is (sum x^p * area/count)^(1/p)
    dtype = np.dtype(x.dtype)
    powered = g.op("Pow", [g.value(x), g.const(np.asarray(p, dtype), "p")])
    attrs = _pool_attrs(x.shape, pool, pads_counted=True)
    mean = g.op("AveragePool", [powered], count_include_pad=1, **attrs)
    total = g.op("Mul", [mean, g.const(np.asarray(pool.kernel[0] * pool.kernel[1], dtype), "area")])
    return g.op("Pow", [total, g.const(np.asarray(1.0 / p, dtype), "inv_p")])


def _batchnorm(g: _Graph, a: dict[str, Any]) -> str:
    x = a["x"]
    if a["training"]:
        raise ExportError(f"gpucnn.onnx.export: cannot export BatchNorm in layer {g.layer or '(top level)'!r} "
                          f"normalising with batch statistics (track_running_stats=False or training=True); "
                          f"ONNX's BatchNormalization uses running statistics")
    c, dtype = x.shape[1], np.dtype(x.dtype)
    scale = g.value(a["weight"]) if a["weight"] is not None else g.const(np.ones(c, dtype), "bn_scale")
    bias = g.value(a["bias"]) if a["bias"] is not None else g.const(np.zeros(c, dtype), "bn_bias")
    return g.op("BatchNormalization", [g.value(x), scale, bias, g.value(a["running_mean"]),
                                       g.value(a["running_var"])], epsilon=float(a["eps"]))


def _linear(g: _Graph, a: dict[str, Any]) -> str:
    x, w, b = a["x"], a["w"], a["b"]
    if x.ndim == 2:
        y = g.op("Gemm", [g.value(x), g.value(w)] + ([g.value(b)] if b is not None else []), transB=1)
    else:
        y = g.op("MatMul", [g.value(x), g.op("Transpose", [g.value(w)], perm=[1, 0])])
        y = g.op("Add", [y, g.value(b)]) if b is not None else y
    return g.op("Relu", [y]) if a.get("relu") else y  # Sequential's Linear -> ReLU runs as one call


def _binary(op_type: str) -> Callable[[_Graph, dict[str, Any]], str]:
    return lambda g, a: g.op(op_type, [g.value(a["a"]), g.value(a["b"])])


def _unary(op_type: str, arg: str = "a") -> Callable[[_Graph, dict[str, Any]], str]:
    return lambda g, a: g.op(op_type, [g.value(a[arg])])


def _pow(g: _Graph, a: dict[str, Any]) -> str:
    return g.op("Pow", [g.value(a["a"]), g.const(np.asarray(a["exponent"], np.dtype(a["a"].dtype)), "exponent")])


def _axes(dim: Any, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    return tuple(sorted(d % ndim for d in ((dim,) if isinstance(dim, int) else dim)))


def _reduction(op_type: str) -> Callable[[_Graph, dict[str, Any]], str]:
    def emit(g: _Graph, a: dict[str, Any]) -> str:
        axes = _axes(a["dim"], a["a"].ndim)
        source = g.value(a["a"])
        y = g.reduce(op_type, source, axes, bool(a["keepdim"]))
        if source in g.batched and 0 not in axes:
            g.batched.add(y)
        return y
    return emit


def _reshape(g: _Graph, a: dict[str, Any]) -> str:
    x, out = a["a"], a["__out__"]
    source = g.value(x)
    target = list(out.shape)
    if source in g.batched:
        if not target or x.shape[0] != target[0]:
            raise ExportError(f"gpucnn.onnx.export: Reshape in layer {g.layer or '(top level)'!r} merges or moves "
                              f"the batch axis ({x.shape} -> {out.shape}), which a dynamic batch cannot express; "
                              f"export with dynamic_batch=False")
        target[0] = -1  # whatever batch arrives, with every other axis as traced
    y = g.op("Reshape", [source, g.ints(target, "shape")])
    if source in g.batched:
        g.batched.add(y)
    return y


def _getitem(g: _Graph, a: dict[str, Any]) -> str:
    x, index = a["a"], a["index"]
    items = list(index) if isinstance(index, tuple) else [index]
    basic = (slice, int, type(None), type(Ellipsis))
    if not all(isinstance(i, basic) and not isinstance(i, bool) for i in items) or items.count(Ellipsis) > 1:
        raise ExportError(f"gpucnn.onnx.export: cannot export GetItem in layer {g.layer or '(top level)'!r}: only "
                          f"basic indexing (slices, ints, None, one ...) maps to ONNX Slice, got {index!r}")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    at = items.index(Ellipsis) if Ellipsis in items else len(items)
    items[at:at + 1] = [slice(None)] * (x.ndim - consumed)
    source = g.value(x)
    batched = source in g.batched
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis, out_axis = 0, 0
    for item in items:
        if item is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        dynamic = axis == 0 and batched  # the traced size is no guide there: keep Python's bounds
        if isinstance(item, int):
            i = item if dynamic else item % x.shape[axis]
            starts.append(i)
            ends.append(_INT64_MAX if i == -1 else i + 1)
            steps.append(1)
            axes.append(axis)
            squeeze.append(axis)
        else:
            out_axis += 1
            if item != slice(None):
                step = 1 if item.step is None else item.step
                if dynamic:
                    start = item.start if item.start is not None else (0 if step > 0 else _INT64_MAX)
                    stop = item.stop if item.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN)
                else:
                    start, stop, step = item.indices(x.shape[axis])
                    stop = _INT64_MIN if step < 0 and stop < 0 else stop  # -1 would mean "the last" in ONNX
                starts.append(start)
                ends.append(stop)
                steps.append(step)
                axes.append(axis)
        axis += 1
    y = source
    if axes:
        y = g.op("Slice", [y, g.ints(starts, "starts"), g.ints(ends, "ends"), g.ints(axes), g.ints(steps, "steps")])
    if squeeze:
        y = g.op("Squeeze", [y, g.ints(squeeze)])
    if unsqueeze:
        y = g.op("Unsqueeze", [y, g.ints(unsqueeze)])
    if y == source:
        y = g.op("Identity", [y])
    if batched and 0 not in squeeze and 0 not in unsqueeze:
        g.batched.add(y)
    return y


def _cat(g: _Graph, a: dict[str, Any]) -> str:
    arrays = a["arrays"]
    return g.op("Concat", [g.value(t) for t in arrays], axis=a["dim"] % arrays[0].ndim)


def _softmax(op_type: str) -> Callable[[_Graph, dict[str, Any]], str]:
    return lambda g, a: g.op(op_type, [g.value(a["x"])], axis=a["dim"])


def _refuse(why: str) -> Callable[[_Graph, dict[str, Any]], str]:
    def emit(g: _Graph, a: dict[str, Any]) -> str:
        raise ExportError(f"gpucnn.onnx.export: {why} (in layer {g.layer or '(top level)'!r})")
    return emit


def _emitters() -> dict[str, Callable[[_Graph, dict[str, Any]], str]]:
    """Function class name -> what writes its ONNX ops; ExpandConnections is folded, not emitted."""
    return {
        "Conv2d": _conv2d, "Conv2dReluMaxPool2d": _conv_relu_maxpool,
        "MaxPool2d": lambda g, a: _maxpool(g, g.value(a["x"]), a["x"].shape, a["pool"]),
        "ReluMaxPool2d": lambda g, a: _maxpool(g, g.op("Relu", [g.value(a["x"])]), a["x"].shape, a["pool"]),
        "AvgPool2d": _avgpool, "AdaptiveAvgPool2d": _adaptive_avgpool, "LPPool2d": _lppool,
        "Relu": _unary("Relu", "x"), "Sigmoid": _unary("Sigmoid", "x"), "Tanh": _unary("Tanh", "x"),
        "LeakyRelu": lambda g, a: g.op("LeakyRelu", [g.value(a["x"])], alpha=float(a["negative_slope"])),
        "BatchNorm": _batchnorm, "Linear": _linear,
        "Add": _binary("Add"), "Sub": _binary("Sub"), "Mul": _binary("Mul"), "Div": _binary("Div"),
        "MatMul": _binary("MatMul"), "Neg": _unary("Neg"), "Exp": _unary("Exp"), "Log": _unary("Log"),
        "Pow": _pow, "Sum": _reduction("ReduceSum"), "Mean": _reduction("ReduceMean"),
        "Reshape": _reshape, "GetItem": _getitem, "Cat": _cat, "ToBackend": _unary("Identity"),
        "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"),
        "Dropout": _refuse("cannot export Dropout in training mode (F.dropout(..., training=True) inside forward); "
                           "pass training=self.training or use nn.Dropout, which is the identity in eval mode"),
        "SoftmaxCrossEntropy": _refuse("cannot export a loss (SoftmaxCrossEntropy); export the network alone"),
        "NllLoss": _refuse("cannot export a loss (NllLoss); export the network alone"),
    }


# ---------------------------------------------------------------------------- export
def _trace_input(model: Module, example_input: Any, dynamic_batch: bool) -> Tensor:
    data = example_input.numpy() if isinstance(example_input, Tensor) else np.asarray(example_input)
    chunk = model.backend.eval_batch_chunk
    if dynamic_batch and chunk and data.ndim >= 1 and data.shape[0] > chunk:
        # Sequential splits a bigger eval batch into chunks; one chunk traces the same per-sample graph
        data = data[:chunk]
    return Tensor(model.backend.asarray(np.array(data, order="C")), requires_grad=True, backend=model.backend)


def _layer_of(g: _Graph, call: _Call) -> str:
    """The layer owning a call's parameters (fused Sequential runs bypass Module.__call__), else the
    innermost module that was running."""
    for arg in call.args.values():
        name = g.param_names.get(id(arg))
        if name is not None:
            return name.rpartition(".")[0]
    return call.layer


def _reachable(calls: dict[int, _Call], outputs: list[Tensor]) -> set[int]:
    seen: set[int] = set()
    stack = [t._node for t in outputs if t._node is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen or id(node) not in calls:
            continue
        seen.add(id(node))
        for arg in _tensor_args(calls[id(node)]):
            if arg._node is not None:
                stack.append(arg._node)
    return seen


def _tensor_args(call: _Call) -> Iterator[Tensor]:
    for arg in call.args.values():
        for item in arg if isinstance(arg, tuple) else (arg,):
            if isinstance(item, Tensor):
                yield item


_SHAPE_OPS = ("Sum", "Mean", "GetItem", "Reshape")


def _depends_on_input(g: _Graph, call: _Call, live: set[str]) -> bool:
    return any(g.values.get(id(t)) in live for t in _tensor_args(call))


def export(model: Module, path: str | os.PathLike | None, example_input: Any, opset: int = 17,
           dynamic_batch: bool = True) -> Any:
    """Write ``model`` (in eval mode) as an ONNX file at ``path`` and return the ``onnx.ModelProto``.

    ``example_input`` (an array or Tensor, (N, ...)) is run through the model once to trace it; with
    ``dynamic_batch`` the input's first axis is the symbolic ``batch``. The graph's input is named
    ``input``, its outputs ``output`` (``output_0``, ... for a tuple). A connection-table weight is
    written expanded to its dense filter bank, under the packed parameter's name. ``path=None``
    returns the model without writing it. Raises ExportError naming the Function (and layer) that
    ONNX cannot express, ImportError without the ``onnx`` package.
    """
    onnx = _require("onnx")

    if not isinstance(model, Module):
        raise TypeError(f"gpucnn.onnx.export: expected a gpucnn Module, got {type(model).__name__}")
    if not 13 <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"gpucnn.onnx.export: opset must be 13 to {onnx.defs.onnx_opset_version()}, got {opset}")
    was_training = model.training
    x = _trace_input(model, example_input, dynamic_batch)
    model.eval()
    try:
        tracer = _Tracer(model)
        with enable_grad(), tracing(tracer):
            result = model(x)
        calls = tracer.calls
    finally:
        model.train(was_training)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    if not all(isinstance(t, Tensor) for t in outputs):
        raise ExportError(f"gpucnn.onnx.export: the model must return a Tensor or a tuple of Tensors, got "
                          f"{type(result).__name__}")
    g = _Graph(onnx, opset, model, x, dynamic_batch)
    live = {"input"}  # values computed from the input (the rest are constants, folded where needed)
    emitters = _emitters()
    reachable = _reachable(calls, outputs)
    for key, call in calls.items():
        if key not in reachable:
            continue
        g.layer = _layer_of(g, call)
        name = call.function.__name__
        emit = emitters.get(name) if call.function.__module__.startswith("gpucnn.") else None
        if name == "ExpandConnections" or (emit is None and not _depends_on_input(g, call, live)):
            # a function of parameters and constants alone: its traced value is the initializer
            packed = g.param_names.get(id(call.args.get("packed")))
            for out in call.outputs:
                g.values[id(out)] = g.const(g.to_numpy(out.data), packed or f"{g.layer}/{name}".strip("/"),
                                            exact=packed is not None)
                g.keep.append(out)
            continue
        if emit is None or len(call.outputs) != 1:
            raise ExportError(f"gpucnn.onnx.export: cannot export {name} (called in layer "
                              f"{g.layer or '(top level)'!r}): it has no ONNX mapping in gpucnn.onnx")
        call.args["__out__"] = call.outputs[0]
        y = emit(g, call.args)
        if _depends_on_input(g, call, live):
            live.add(y)
        # elementwise ops, convolutions and pooling keep the batch axis; the shape ops decide for themselves
        if name not in _SHAPE_OPS and any(g.values.get(id(t)) in g.batched for t in _tensor_args(call)):
            g.batched.add(y)
        g.values[id(call.outputs[0])] = y
        g.keep.append(call.outputs[0])
    return _finish(g, x, outputs, path)


def _finish(g: _Graph, x: Tensor, outputs: list[Tensor], path: str | os.PathLike | None) -> Any:
    onnx = g.onnx
    helper = onnx.helper
    names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    output_infos = []
    for name, out in zip(names, outputs):
        source = g.value(out)
        dims: list[Any] = list(out.shape)
        if source in g.batched and dims:
            dims[0] = "batch"
        g.nodes.append(helper.make_node("Identity", [source], [name], name=g.fresh(f"{name}_node")))
        output_infos.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(out.dtype), dims))
    in_dims: list[Any] = list(x.shape)
    if g.dynamic and in_dims:
        in_dims[0] = "batch"
    graph = helper.make_graph(g.nodes, "gpucnn", [helper.make_tensor_value_info(
        "input", helper.np_dtype_to_tensor_dtype(x.dtype), in_dims)], output_infos, list(g.initializers.values()))
    opsets = [helper.make_opsetid("", g.opset)]
    # the oldest IR version that holds this opset, so older runtimes (ONNX Runtime 1.17) load the file
    model_proto = helper.make_model(graph, opset_imports=opsets, producer_name="gpucnn",
                                    ir_version=helper.find_min_ir_version_for(opsets))
    if path is not None:
        onnx.save(model_proto, os.fspath(path))
    return model_proto


def verify(path: str | os.PathLike, model: Module, example_input: Any, rtol: float = 1e-5,
           atol: float = 1e-6) -> dict[str, Any]:
    """Check the file with ``onnx.checker`` (full_check) and compare ONNX Runtime (CPU) with ``model`` on
    ``example_input``: returns ``{"checker": "ok", "max_abs_diff": ..., "match": bool}``."""
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    data = example_input.numpy() if isinstance(example_input, Tensor) else np.asarray(example_input)
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": np.array(data, order="C")})
    was_training = model.training
    model.eval()
    try:
        from .core.autograd import no_grad

        with no_grad():
            expected = model(Tensor(model.backend.asarray(data), backend=model.backend))
    finally:
        model.train(was_training)
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    diff, match = 0.0, True
    for e, o in zip(expected, got):
        e = e.numpy()
        diff = max(diff, float(np.max(np.abs(e - o))) if e.size else 0.0)
        match = match and e.shape == o.shape and bool(np.allclose(o, e, rtol=rtol, atol=atol))
    return {"checker": "ok", "max_abs_diff": diff, "match": match}
