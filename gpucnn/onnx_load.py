"""Load an ONNX model (opset 13 or later) as a gpucnn Module: ``gpucnn.onnx.load("model.onnx")``.

The graph's float initializers that are the weights of a layer (the weight and bias inputs of Conv, Gemm,
MatMul, PRelu, LayerNormalization and InstanceNormalization, BatchNormalization's scale and bias, and the bias
``Add`` after a ``MatMul``) become Parameters, so the loaded model fine-tunes; BatchNormalization's mean and
variance and the other float constants become buffers; sizes, axes and scalars stay NumPy constants. Nodes
whose inputs are all constants (the ``Shape -> Gather -> Concat -> Reshape`` chains exporters write) are
folded with NumPy at load time, and those fed by a ``Shape`` of a Tensor run in NumPy at call time, so a
dynamic batch axis keeps working. ``forward`` runs the remaining nodes in the file's (topological) order as
gpucnn ops (gpucnn/onnx_ops.py, the op table). BatchNormalization always uses its running statistics and
Dropout is the identity, in training mode as well (fine-tuning keeps the exported inference graph).

Needs the optional ``onnx`` package (``pip install 'gpucnn[onnx]'``).
"""

from __future__ import annotations

import keyword
import os
import re
from typing import Any

import numpy as np

from .core.tensor import Parameter, Tensor
from .nn.module import Module
from .onnx_ops import FOLD, OPS, STATIC_INPUTS

__all__ = ["OnnxLoadError", "OnnxModule", "load"]

_INSTALL = "pip install 'gpucnn[onnx]'"

#: the input slots holding a layer's trainable weights, per op
PARAM_INPUTS: dict[str, set[int]] = {
    "Conv": {1, 2}, "Gemm": {1, 2}, "MatMul": {1}, "BatchNormalization": {1, 2}, "PRelu": {1},
    "LayerNormalization": {1, 2}, "InstanceNormalization": {1, 2},
}


class OnnxLoadError(ValueError):
    """The ONNX file holds something ``gpucnn.onnx.load`` cannot run; the message names the op and node."""


class _Node:
    """One ONNX node: its op type, name, index in the graph, input and output names ('' for an absent
    optional one) and its decoded attributes ``a``."""

    __slots__ = ("op", "name", "index", "inputs", "outputs", "a")

    def __init__(self, op: str, name: str, index: int, inputs: list[str], outputs: list[str],
                 a: dict[str, Any]) -> None:
        self.op, self.name, self.index, self.inputs, self.outputs, self.a = op, name, index, inputs, outputs, a

    @property
    def where(self) -> str:
        return f"{self.op} node {self.name!r} (node {self.index})"

    def error(self, message: str) -> OnnxLoadError:
        return OnnxLoadError(f"gpucnn.onnx.load: {self.where}: {message}")


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:
        raise ImportError(f"gpucnn.onnx.load needs the optional package 'onnx': {_INSTALL}") from error
    return onnx


def _attributes(onnx: Any, node: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        elif isinstance(value, onnx.TensorProto):
            value = onnx.numpy_helper.to_array(value)
        elif isinstance(value, (onnx.GraphProto, onnx.SparseTensorProto)) or (
                isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto)):
            raise OnnxLoadError(f"gpucnn.onnx.load: {node.op_type} node {node.name!r} has a graph or sparse "
                                f"attribute {attr.name!r}: control flow and sparse tensors are not supported")
        attrs[attr.name] = value
    if node.op_type in ("Cast", "CastLike") and "to" in attrs:
        attrs["to"] = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
    return attrs


def _attribute_name(onnx_name: str, taken: set[str]) -> str:
    """A valid Python attribute name for an initializer: '0.weight' -> 'p0_weight', 'conv1/W' -> 'conv1_W'."""
    name = re.sub(r"\W", "_", onnx_name) or "param"
    if not (name[0].isalpha() or name[0] == "_"):
        name = "p" + name
    if keyword.iskeyword(name) or hasattr(Module, name):
        name += "_"
    base, k = name, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _opset(model: Any) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxLoadError("gpucnn.onnx.load: the model imports no default-domain (ai.onnx) opset")
    opset = max(versions)
    if opset < 13:
        raise OnnxLoadError(f"gpucnn.onnx.load: the model uses opset {opset}; opset 13 or later is supported "
                            f"(convert it with onnx.version_converter.convert_version(model, 13))")
    return opset


#: ops an exporter puts between a weight initializer and its layer (a Conv1d's weight reshaped, a Linear's
#: transposed): the initializer stays a Parameter and the op runs in the forward pass
_WEIGHT_VIEWS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Identity")


def _parameter_names(nodes: list[_Node], floats: dict[str, np.ndarray]) -> set[str]:
    """The float initializers in a weight slot of their op (through reshapes and transposes), and the bias (not a
    scalar) added to the output of a MatMul or a Conv."""
    found: set[str] = set()
    producer = {out: node for node in nodes for out in node.outputs}

    def weight(name: str) -> None:
        while name not in floats and name in producer and producer[name].op in _WEIGHT_VIEWS:
            name = producer[name].inputs[0]
        if name in floats:
            found.add(name)

    for node in nodes:
        slots = PARAM_INPUTS.get(node.op, set())
        for i, name in enumerate(node.inputs):
            if name and i in slots:
                weight(name)
        if node.op == "Add" and len(node.inputs) == 2:
            for mine, other in ((0, 1), (1, 0)):
                source = producer.get(node.inputs[other])
                if source is not None and source.op in ("MatMul", "Conv") and floats.get(
                        node.inputs[mine], np.zeros(())).size > 1:
                    found.add(node.inputs[mine])
    return found


class OnnxModule(Module):
    """An ONNX graph as a gpucnn Module. ``forward(*inputs)`` takes the graph's inputs in order and returns its
    output (a tuple for several). ``onnx_names`` maps each Parameter's and buffer's attribute name to its
    initializer's ONNX name; ``input_names``, ``output_names`` and ``opset`` describe the graph."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        onnx = _require_onnx()
        self.opset = _opset(model)
        graph = model.graph
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise OnnxLoadError(f"gpucnn.onnx.load: unsupported op {node.domain}.{node.op_type} (node "
                                    f"{node.name!r}, index {list(graph.node).index(node)}): only the default "
                                    f"ONNX domain is supported")
        nodes = [_Node(n.op_type, n.name, i, list(n.input), list(n.output), _attributes(onnx, n))
                 for i, n in enumerate(graph.node)]
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        self.output_names = [o.name for o in graph.output]
        floats = {k: v for k, v in initializers.items() if v.dtype.kind == "f"}
        param_names = _parameter_names(nodes, floats)
        consts = {k: v for k, v in initializers.items() if k not in param_names}
        self._plan = self._fold(nodes, consts)
        # constants the remaining nodes (or the outputs) read: floats outside a static slot become buffers
        static: set[str] = set()
        used: set[str] = set(self.output_names)
        for node in self._plan:
            used.update(node.inputs)
            static.update(name for i, name in enumerate(node.inputs)
                          if i in STATIC_INPUTS.get(node.op, set()) or node.op not in OPS)
        self.onnx_names: dict[str, str] = {}
        self._params: dict[str, str] = {}  # ONNX name -> attribute
        self._buffers_of: dict[str, str] = {}
        self._consts: dict[str, np.ndarray] = {}
        taken: set[str] = set()
        for name in initializers:  # the file's order: parameters() lists them as the file does
            if name in param_names:
                attr = _attribute_name(name, taken)
                setattr(self, attr, Parameter(self.backend.asarray(np.array(floats[name], order="C")),
                                              backend=self.backend))
                self._params[name], self.onnx_names[attr] = attr, name
        for name in sorted(used & set(consts)):
            value = consts[name]
            if value.dtype.kind == "f" and name not in static:
                attr = _attribute_name(name, taken)
                self.register_buffer(attr, self.backend.asarray(np.array(value, order="C")))
                self._buffers_of[name], self.onnx_names[attr] = attr, name
            else:
                self._consts[name] = value
        for name in self.output_names:
            if name not in self._params and name not in consts and not any(name in n.outputs for n in self._plan) \
                    and name not in self.input_names:
                raise OnnxLoadError(f"gpucnn.onnx.load: the graph output {name!r} is computed by no node")

    @staticmethod
    def _fold(nodes: list[_Node], consts: dict[str, np.ndarray]) -> list[_Node]:
        """Run the nodes whose inputs are all constants now (adding their outputs to ``consts``); return the rest,
        each checked to have an op in the table."""
        plan = []
        for node in nodes:
            present = [name for name in node.inputs if name]
            if node.op in FOLD and all(name in consts for name in present):
                args = [consts[name] if name else None for name in node.inputs]
                try:
                    result = FOLD[node.op](node, None, *args)
                except Exception as error:
                    raise node.error(f"folding its constant inputs failed: {error}") from error
                for out, value in zip(node.outputs, result if isinstance(result, tuple) else (result,)):
                    consts[out] = np.asarray(value)
                continue
            if node.op not in OPS and node.op not in FOLD:
                raise OnnxLoadError(f"gpucnn.onnx.load: unsupported ONNX op {node.op!r} (node {node.name!r}, "
                                    f"index {node.index})")
            plan.append(node)
        return plan

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"OnnxModule.forward: the graph takes {len(self.input_names)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        be = self.backend
        env: dict[str, Any] = dict(self._consts)
        for name, attr in self._params.items():
            env[name] = getattr(self, attr)
        for name, attr in self._buffers_of.items():
            env[name] = Tensor(getattr(self, attr), backend=be)
        for name, x in zip(self.input_names, inputs):
            env[name] = x if isinstance(x, Tensor) else Tensor(be.asarray(np.asarray(x)), backend=be)
        for node in self._plan:
            args = [env[name] if name else None for name in node.inputs]
            constant = all(not isinstance(a, Tensor) for a in args)
            if not constant and node.op not in OPS:
                raise node.error("it runs on constants and shapes only (folded with NumPy), not on a Tensor")
            fn = FOLD[node.op] if constant and node.op in FOLD else OPS[node.op]
            try:
                result = fn(node, be, *args)
            except OnnxLoadError:
                raise
            except Exception as error:
                raise OnnxLoadError(f"gpucnn.onnx.load: running {node.where} failed: "
                                    f"{type(error).__name__}: {error}") from error
            results = result if isinstance(result, tuple) else (result,)
            if len([o for o in node.outputs if o]) > len(results):
                raise node.error(f"it has {len(node.outputs)} outputs; only the first {len(results)} are supported")
            for out, value in zip(node.outputs, results):
                if out:
                    env[out] = value
        outputs = tuple(env[name] if isinstance(env[name], Tensor) else tensor_of(be, env[name])
                        for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return (f"opset={self.opset}, inputs={self.input_names}, outputs={self.output_names}, "
                f"nodes={len(self._plan)}")


def tensor_of(be: Any, value: Any) -> Tensor:
    return Tensor(be.asarray(np.ascontiguousarray(value)), backend=be)


def load(source: Any) -> OnnxModule:
    """An ONNX model (a path, the bytes of a file, or an ``onnx.ModelProto``, as ``gpucnn.onnx.export`` returns)
    as an ``OnnxModule`` (eval mode) on the current backend. Raises OnnxLoadError for an opset before 13 or an
    op it cannot run (naming the op type, the node's name and its index), ImportError without ``onnx``."""
    onnx = _require_onnx()
    if isinstance(source, (str, os.PathLike)):
        model = onnx.load(os.fspath(source))
    elif isinstance(source, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(source))
    elif isinstance(source, onnx.ModelProto):
        model = source
    else:
        raise TypeError(f"gpucnn.onnx.load: expected a path, bytes or an onnx.ModelProto, got {type(source).__name__}")
    return OnnxModule(model).eval()
