"""Export an eval-mode network to ONNX: ``gpucnn.onnx.export(model, "model.onnx", example_input)``.

One forward pass of ``example_input`` (requires_grad=True, so every op records an autograd node) is
traced; every recorded Function call that the output depends on becomes its ONNX op sequence. Any
Module exports, a user's own with residual adds or concatenations included, as long as each Function
it calls has an emitter. Parameters and buffers become initializers named by their state_dict names.

Each of gpucnn's Functions carries its own emitter, beside its forward (gpucnn/functions/*.py,
gpucnn/core/tensor_ops.py, gpucnn/core/shape_ops.py), in PyTorch's ``Function.symbolic`` convention::

    class LeakyRelu(Function):
        @staticmethod
        def forward(ctx, x, negative_slope): ...

        @staticmethod
        def symbolic(g, x, negative_slope):
            return g.op("LeakyRelu", [x], alpha=float(negative_slope))

``symbolic`` takes the forward's parameters, in its order, after the graph ``g`` (a ``_Graph``): the
traced call's arguments are bound to the forward's signature and passed on by position, each Tensor
replaced by its ONNX value name (a ``Value``: a str with the traced ``shape``, ``dtype`` and ``ndim``);
it returns the name of its output. A Function ONNX cannot express says why in ``not_exportable``
instead. tests/test_onnx.py checks that every Function of gpucnn has one of the two, and that each
``symbolic`` has its forward's parameters. The emitters call methods of ``g`` only, so the Function
modules never import the ``onnx`` package (nor this module).

Needs the optional ``onnx`` package (``pip install 'gpucnn[onnx]'``); ``verify`` also needs onnxruntime.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .core.autograd import enable_grad, tracing
from .core.tensor import Parameter, Tensor
from .nn.module import Module
from .shapes import pool_output_size

__all__ = ["ExportError", "export", "load", "verify"]

_INSTALL = "pip install 'gpucnn[onnx]'"


class ExportError(ValueError):
    """The network holds something ONNX export cannot express; the message names the Function and layer."""


def _require(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as error:
        raise ImportError(f"gpucnn.onnx needs the optional package {name!r}: {_INSTALL}") from error


# ---------------------------------------------------------------------------- tracing
class _Call:
    """One recorded Function call with every argument bound to its forward's parameters: ``args`` by
    position (the ctx left out, a ``*args`` parameter spread), ``kwargs`` the keyword-only ones."""

    __slots__ = ("function", "args", "kwargs", "outputs", "layer")

    def __init__(self, function: type, args: tuple, kwargs: dict[str, Any], outputs: tuple[Tensor, ...],
                 layer: str) -> None:
        self.function, self.args, self.kwargs, self.outputs, self.layer = function, args, kwargs, outputs, layer

    def tensors(self) -> Iterator[Tensor]:
        for arg in (*self.args, *self.kwargs.values()):
            if isinstance(arg, Tensor):
                yield arg


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
            self.calls[id(node)] = _Call(cls, bound.args[1:], bound.kwargs, outputs,
                                         self.stack[-1] if self.stack else "")


# ---------------------------------------------------------------------------- the graph being built
class Value(str):
    """The name of a value in the ONNX graph, with the traced shape and dtype of what it holds: what an
    emitter gets in place of a Tensor argument (usable as an op input as it is)."""

    def __new__(cls, name: str, shape: tuple[int, ...], dtype: Any) -> Value:
        value = super().__new__(cls, name)
        value.shape, value.dtype = tuple(shape), np.dtype(dtype)
        return value

    @property
    def ndim(self) -> int:
        return len(self.shape)


class _Graph:
    """The ONNX graph being built; an emitter's ``g``. What emitters use: ``op``, ``const``, ``scalar``,
    ``ints``, ``value``, ``reduce``, ``conv``, ``max_pool``, ``pool_attrs``, ``fold``, ``is_batched``,
    ``set_batched``, ``error``, and ``where`` / ``out_shape`` (the current call's layer and output shape)."""

    def __init__(self, onnx: Any, opset: int, model: Module, input_tensor: Tensor, dynamic: bool) -> None:
        self.onnx, self.opset, self.dynamic = onnx, opset, dynamic
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.values: dict[int, str] = {id(input_tensor): "input"}  # id(Tensor or array) -> value name
        self.batched: set[str] = {"input"} if dynamic else set()  # values whose axis 0 is the batch
        self.decided: set[str] = set()  # values whose emitter said whether axis 0 is the batch
        self.keep: list[Any] = []  # holds every object whose id() is a key of self.values
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self.params = {id(p): p for p in model.parameters()}
        backend = model.backend
        self.to_numpy: Callable[[Any], np.ndarray] = backend.to_numpy
        buffers = {name for name, _ in model.named_buffers()}
        self.buffer_names = {id(v): k for k, v in model.state_dict().items() if k in buffers}
        self.used: set[str] = set()
        self.layer = ""
        self.output: Tensor | None = None  # the traced output of the call being emitted
        self.bound: set[str] = set()  # initializers made for the call being emitted, when binding its arguments

    # ------------------------------------------------------------------ names and constants
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

    def scalar(self, value: float, dtype: Any, hint: str) -> str:
        """A 0-d constant of ``dtype`` (an operand's: ONNX does not promote)."""
        return self.const(np.asarray(value, np.dtype(dtype)), hint)

    def ints(self, values: Any, hint: str = "axes") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint)

    def value(self, obj: Any) -> Value:
        """The value of a Tensor or backend array, making leaves into initializers."""
        data = obj.data if isinstance(obj, Tensor) else obj
        key = id(obj)
        if key in self.values:
            return Value(self.values[key], data.shape, data.dtype)
        if isinstance(obj, Parameter) or key in self.param_names:
            name = self.const(self.to_numpy(data), self.param_names.get(key, "param"), exact=True)
        elif id(data) in self.buffer_names:
            name = self.const(self.to_numpy(data), self.buffer_names[id(data)], exact=True)
        else:
            if isinstance(obj, Tensor) and obj._node is not None:
                raise ExportError(f"gpucnn.onnx.export: a tensor used in layer {self.where} was "
                                  f"computed outside the traced forward pass (by {obj._node.function.__name__}); "
                                  f"compute it inside forward()")
            name = self.const(self.to_numpy(data), "const")
        self.bound.add(name)
        self.values[key] = name
        self.keep.append(obj)
        return Value(name, data.shape, data.dtype)

    def fold(self, like: str) -> str:
        """The call's traced output as a constant (a function of parameters alone). Written under ``like``'s
        name where binding this call's arguments made that initializer (nothing else uses it yet): a
        connection table's dense bank under its packed parameter's name."""
        data = np.array(self.to_numpy(self.output.data), order="C")
        if like not in self.bound:
            return self.const(data, like)
        self.initializers[like] = self.onnx.numpy_helper.from_array(data, like)
        for key in [key for key, name in self.values.items() if name == like]:
            del self.values[key]  # the argument itself would get a new initializer if used again
        return like

    # ------------------------------------------------------------------ nodes
    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        names = [self.fresh(f"{self.layer}/{op_type}" if self.layer else op_type) for _ in range(outputs)]
        node_name = self.fresh(f"{self.layer}/{op_type}_node" if self.layer else f"{op_type}_node")
        self.nodes.append(self.onnx.helper.make_node(op_type, [str(i) for i in inputs], names, name=node_name,
                                                     **attrs))
        return names[0] if outputs == 1 else names

    def reduce(self, op_type: str, x: str, axes: tuple[int, ...], keepdims: bool) -> str:
        # ReduceSum took axes as an input from opset 13, the other reductions from opset 18
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def conv(self, x: Value, w: Value, b: Value | None, spec: Any) -> str:
        """ONNX Conv for a ConvSpec (its pads are (top, left, bottom, right))."""
        pt, pb, pl, pr = spec.padding
        return self.op("Conv", [x, w] + ([b] if b is not None else []), kernel_shape=list(w.shape[2:]),
                       strides=list(spec.stride), pads=[pt, pl, pb, pr], dilations=list(spec.dilation),
                       group=spec.groups)

    def pool_attrs(self, x_shape: tuple[int, ...], pool: Any, pads_counted: bool) -> dict[str, Any]:
        """Window attributes giving PyTorch's output size. ONNX's ceil_mode formula lets the last window start
        in the right padding, PyTorch's does not; where ceil mode adds a window, a floor-mode window with the
        end padding that yields PyTorch's size is written, exact for max pooling and for averages that do not
        count padding. An average that counts padding keeps ceil_mode: the two formulas differ only where
        PyTorch's size is the floor one, so where ceil mode adds a window they agree (and ONNX Runtime divides
        as PyTorch)."""
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

    def max_pool(self, x: str, x_shape: tuple[int, ...], pool: Any) -> str:
        return self.op("MaxPool", [x], **self.pool_attrs(x_shape, pool, pads_counted=False))

    # ------------------------------------------------------------------ the batch axis, errors
    def is_batched(self, name: str) -> bool:
        """Is axis 0 of this value the (dynamic) batch?"""
        return name in self.batched

    def set_batched(self, name: str, batched: bool) -> None:
        """For an emitter that moves axes (reshapes, reductions, indexing): whether axis 0 of its output is
        the batch. Otherwise an output is batched when an input is (elementwise ops, convolutions, pooling)."""
        self.decided.add(name)
        if batched:
            self.batched.add(name)

    @property
    def where(self) -> str:
        """The current layer, for messages: ``'features.0'`` or ``'(top level)'``."""
        return repr(self.layer or "(top level)")

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The traced shape of the current call's output."""
        return tuple(self.output.shape)

    def error(self, message: str) -> ExportError:
        """The ExportError for an emitter to raise."""
        return ExportError(f"gpucnn.onnx.export: {message}")


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
    for arg in call.tensors():
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
        for arg in calls[id(node)].tensors():
            if arg._node is not None:
                stack.append(arg._node)
    return seen


def _depends_on_input(g: _Graph, call: _Call, live: set[str]) -> bool:
    return any(g.values.get(id(t)) in live for t in call.tensors())


def emitter_of(function: type) -> Callable[..., str] | str | None:
    """A Function's ``symbolic`` (its emitter), or the reason it is ``not_exportable``, or None (no
    mapping). Only gpucnn's own Functions are asked: a user's Function may carry a ``symbolic`` of
    another convention (PyTorch's, say), so it stays unexportable, as it has always been."""
    if not function.__module__.startswith("gpucnn."):
        return None
    refusal = getattr(function, "not_exportable", None)
    return refusal if refusal is not None else getattr(function, "symbolic", None)


def _bound(g: _Graph, call: _Call) -> tuple[tuple, dict[str, Any]]:
    """The call's arguments for its emitter: each Tensor replaced by its value (so named initializers
    for parameters and buffers), the rest as the forward got them."""
    g.bound = set()
    args = tuple(g.value(a) if isinstance(a, Tensor) else a for a in call.args)
    return args, {k: g.value(v) if isinstance(v, Tensor) else v for k, v in call.kwargs.items()}


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
    reachable = _reachable(calls, outputs)
    for key, call in calls.items():
        if key not in reachable:
            continue
        g.layer = _layer_of(g, call)
        name = call.function.__name__
        emit = emitter_of(call.function)
        if isinstance(emit, str):
            raise ExportError(f"gpucnn.onnx.export: {emit} (in layer {g.where})")
        if emit is None and not _depends_on_input(g, call, live):
            # a function of parameters and constants alone: its traced value is the initializer
            for out in call.outputs:
                g.values[id(out)] = g.const(g.to_numpy(out.data), f"{g.layer}/{name}".strip("/"))
                g.keep.append(out)
            continue
        if emit is None or len(call.outputs) != 1:
            raise ExportError(f"gpucnn.onnx.export: cannot export {name} (called in layer "
                              f"{g.where}): it has no ONNX mapping in gpucnn.onnx")
        g.output = call.outputs[0]
        args, kwargs = _bound(g, call)
        y = emit(g, *args, **kwargs)
        if _depends_on_input(g, call, live):
            live.add(y)
        # elementwise ops, convolutions and pooling keep the batch axis; the shape ops decide for themselves
        if y not in g.decided and any(g.values.get(id(t)) in g.batched for t in call.tensors()):
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


def load(source: str | os.PathLike | bytes | Any) -> Module:
    """An ONNX model (opset 13 or later: a path, bytes or an ``onnx.ModelProto``) as a gpucnn ``OnnxModule``
    whose weights are Parameters, checked against ONNX Runtime by tests/test_onnx_load.py; see gpucnn/onnx_load.py."""
    from .onnx_load import load as load_model

    return load_model(source)
