"""``from_torch``: a PyTorch model as a gpucnn Module, through ``torch.fx``.

    import torch
    from gpucnn.interop import from_torch
    model = from_torch(torch_model, example_input=x)     # x: a NumPy array (or a torch tensor)
    model(x)                                              # same outputs, same state_dict names

The torch model is traced with ``torch.fx.symbolic_trace``; its module tree is mirrored in gpucnn (each
``torch.nn`` leaf by its gpucnn twin, same constructor arguments, weights and buffers copied; containers
and user modules as ``FxModule``\\ s holding their children under the same names), so ``state_dict`` keys are
PyTorch's. The root's forward is the traced graph, interpreted over gpucnn (``FxModule``). An op or a leaf
module gpucnn has no equivalent for raises ``TorchConversionError`` naming it and where it is.

This module holds the converter (``from_torch``, ``check_outputs``, the module-tree builder, the fx graph
compiled to steps) and the ``FxModule`` that runs the steps; what each torch op, argument and layer maps to
is in ``gpucnn.interop_fx_maps``.

PyTorch is imported only inside functions: this module imports without it, and a converted model runs
without touching PyTorch (its graph is held as plain Python records, not fx nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import nn as gnn
from .core.autograd import no_grad
from .core.tensor import Parameter, Tensor
from .interop_fx_maps import (
    _METHODS,
    _gpucnn_arguments,
    _qualname,
    _torch_class_name,
    _torch_functions,
    _torch_name,
    _twin_arguments,
    _twin_class,
)
from .nn.module import Module

__all__ = ["FxModule", "TorchConversionError", "from_torch"]


class TorchConversionError(NotImplementedError):
    """A torch op, method or leaf module with no gpucnn equivalent (or a graph that does not trace).

    A NotImplementedError rather than a ValueError: the model is valid, gpucnn just lacks the op; the
    message names the op, its place in the model (``model.layer1.0``) and the fx node."""


@dataclass(frozen=True)
class _Ref:
    """An fx node's value, by the node's name, inside a step's arguments."""

    name: str


@dataclass
class _Step:
    """One fx node, with its target resolved to gpucnn: ``fn`` for call_function, the method name for
    call_method, the dotted submodule / attribute path for call_module / get_attr."""

    op: str
    name: str
    target: Any
    args: tuple
    kwargs: dict
    fn: Any = None
    follow_training: bool = False  # F.dropout/batch_norm: ``training`` follows the module's mode
    free: tuple[str, ...] = field(default=())  # values last used here, dropped after it

    def __str__(self) -> str:
        def show(a: Any) -> str:
            if isinstance(a, _Ref):
                return a.name
            if isinstance(a, (tuple, list)):
                inner = ", ".join(map(show, a))
                return f"({inner}{',' if len(a) == 1 else ''})" if isinstance(a, tuple) else f"[{inner}]"
            if isinstance(a, dict):
                return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in a.items()) + "}"
            return repr(a)
        params = [show(a) for a in self.args] + [f"{k}={show(v)}" for k, v in self.kwargs.items()]
        if self.op == "placeholder":
            return f"{self.name} = input {self.target!r}"
        if self.op == "output":
            return f"return {show(self.args[0])}"
        if self.op == "get_attr":
            return f"{self.name} = self.{self.target}"
        if self.op == "call_method":
            return f"{self.name} = {params[0]}.{self.target}({', '.join(params[1:])})"
        head = f"self.{self.target}" if self.op == "call_module" else _qualname(self.fn)
        return f"{self.name} = {head}({', '.join(params)})"


class FxModule(Module):
    """A converted torch module whose forward is its traced ``torch.fx`` graph, run node by node over gpucnn
    (as ``torch.fx.Interpreter`` does); it holds the converted children under their torch names.

    What the nodes become:

    - ``placeholder``: the forward's arguments, by position then by name (a default where fx kept one);
    - ``call_module``: the child at that dotted path (a gpucnn layer, container or FxModule);
    - ``get_attr``: the parameter (a Parameter, so gradients reach it) or buffer at that path; tensor
      constants fx made are non-persistent buffers of this module;
    - ``call_function``: the gpucnn callable the torch function or operator maps to, ``call_method``: the
      gpucnn Tensor method of that name or its stand-in (the lists are in ``gpucnn.interop_fx_maps``); the
      ``training`` argument of dropout, dropout2d and batch_norm follows this module's mode;
    - ``output``: the returned value (a tensor, or tuples/lists/dicts of them).

    In-place torch ops (``inplace=True``, ``+=``) compute out of place, as gpucnn's layers do. A module
    without a graph (a ``ModuleDict``, or a submodule that does not trace by itself) raises when called,
    saying why. ``code`` shows the steps.
    """

    def __init__(self, torch_type: str = "", steps: list[_Step] | None = None, error: str | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_torch_type", torch_type)
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_graph_error", error)

    @property
    def code(self) -> str:
        """The graph, one step a line."""
        if self._steps is None:
            return f"# no graph: {self._graph_error}"
        return "\n".join(str(step) for step in self._steps)

    def extra_repr(self) -> str:
        return f"from {self._torch_type}" if self._torch_type else ""

    def _submodule(self, path: str) -> Any:
        module: Any = self
        for part in path.split("."):
            module = module._modules[part] if isinstance(module, Module) and part in module._modules \
                else getattr(module, part)
        return module

    def _attribute(self, path: str) -> Any:
        owner_path, _, attr = path.rpartition(".")
        owner = self._submodule(owner_path) if owner_path else self
        value = getattr(owner, attr)
        if isinstance(value, Tensor):
            return value
        return Tensor(value, backend=owner.backend) if hasattr(value, "shape") else value

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._steps is None:
            raise NotImplementedError(f"{self._torch_type or 'FxModule'} has no forward of its own here: "
                                      f"{self._graph_error}")
        env: dict[str, Any] = {}

        def load(value: Any) -> Any:
            return env[value.name] if isinstance(value, _Ref) else value

        positional = list(args)
        for step in self._steps:
            op = step.op
            try:
                if op == "placeholder":
                    env[step.name] = self._argument(step, positional, kwargs)
                    continue
                if op == "output":
                    return _map_args(step.args[0], load)
                a, k = _map_args(step.args, load), _map_args(step.kwargs, load)
                if step.follow_training:
                    k["training"] = self.training
                if op == "call_module":
                    value = self._submodule(step.target)(*a, **k)
                elif op == "call_function":
                    value = step.fn(*a, **k)
                elif op == "call_method":
                    method = _METHODS.get(step.target)
                    value = method(*a, **k) if method is not None else getattr(a[0], step.target)(*a[1:], **k)
                else:  # get_attr
                    value = self._attribute(step.target)
            except Exception as error:
                error.add_note(f"in {self._torch_type or 'FxModule'}'s converted graph, at: {step}")
                raise
            env[step.name] = value
            for name in step.free:
                env.pop(name, None)
        return None

    @staticmethod
    def _argument(step: _Step, positional: list[Any], kwargs: dict[str, Any]) -> Any:
        name = step.target
        if name.startswith("**"):
            return dict(kwargs)
        if name.startswith("*"):
            rest, positional[:] = tuple(positional), []
            return rest
        if positional:
            return positional.pop(0)
        if name in kwargs:
            return kwargs.pop(name)
        if step.args:
            return step.args[0]
        raise TypeError(f"{step.name}: missing the argument {name!r}")


def _map_args(value: Any, leaf: Any) -> Any:
    """``value`` with ``leaf`` applied to everything in it but the tuples, lists, dicts and slices holding it
    (rebuilt as plain ones): fx arguments to steps' (fx nodes to _Refs), steps' to values (_Refs to theirs)."""
    if isinstance(value, tuple):
        return tuple(_map_args(v, leaf) for v in value)
    if isinstance(value, list):
        return [_map_args(v, leaf) for v in value]
    if isinstance(value, dict):
        return {k: _map_args(v, leaf) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_map_args(value.start, leaf), _map_args(value.stop, leaf), _map_args(value.step, leaf))
    return leaf(value)


def _no_equivalent(what: str, place: str, note: str | None = None, why: str = "") -> TorchConversionError:
    return TorchConversionError(f"from_torch: no gpucnn equivalent for {what} at {place}"
                                f"{f' ({note})' if note else ''}{why}")


def _host(tensor: Any) -> Any:
    """A torch tensor's values as a NumPy array."""
    return tensor.detach().cpu().numpy()


def _where(prefix: str, path: str) -> str:
    """``prefix.path``, or ``path`` / ``prefix`` where the other is empty."""
    return f"{prefix}.{path}" if prefix and path else prefix or path


# ---------------------------------------------------------------------------------------------- graphs
def _node_place(node: Any, root: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return _where(root, next(reversed(stack)) if stack else "")


def _compile(torch: Any, graph_module: Any, gmodule: Module, root: str) -> list[_Step]:
    """The fx graph as _Steps; refuses the first node gpucnn cannot run, naming it."""
    import torch.fx as fx

    functions = _torch_functions(torch)

    def convert(arg: Any) -> Any:  # a leaf of an fx argument (a torch.Size is a tuple: not one)
        if isinstance(arg, fx.Node):
            return _Ref(arg.name)
        if isinstance(arg, (torch.dtype, torch.device, torch.Tensor)):
            raise TorchConversionError(f"a {type(arg).__name__} argument ({arg!r})")
        return arg

    def refuse(node: Any, what: str, why: str = "") -> TorchConversionError:
        return _no_equivalent(what, _node_place(node, root), f"node {node.name}", why)

    steps: list[_Step] = []
    for node in graph_module.graph.nodes:
        what = (_torch_name(torch, node.target) if node.op == "call_function" else
                f"Tensor.{node.target}" if node.op == "call_method" else str(node.target))
        try:
            args, kwargs = _map_args(tuple(node.args), convert), _map_args(dict(node.kwargs), convert)
        except TorchConversionError as error:
            raise refuse(node, what, f": {error} gpucnn cannot take") from None
        step = _Step(node.op, node.name, node.target, args, kwargs)
        if node.op == "call_function":
            fn = functions.get(node.target)
            if fn is None:
                raise refuse(node, what)
            step.fn = fn
            step.args, step.kwargs, step.follow_training = _gpucnn_arguments(
                node, fn, args, kwargs, lambda why, n=node, w=what: refuse(n, w, why))
        elif node.op == "call_method":
            if node.target not in _METHODS and not hasattr(Tensor, node.target):
                raise refuse(node, what, " (gpucnn's Tensor has no such method)")
        elif node.op == "get_attr":
            step.target = _attribute_target(torch, graph_module, gmodule, node.target)
        elif node.op == "call_module":
            try:
                FxModule._submodule(gmodule, node.target)  # type: ignore[arg-type]
            except (KeyError, AttributeError):
                raise refuse(node, f"the module at {node.target}") from None
        steps.append(step)
    _mark_last_uses(steps)
    return steps


def _attribute_target(torch: Any, graph_module: Any, gmodule: Module, target: str) -> str:
    """The path of a get_attr in the gpucnn tree; a tensor constant fx made on its GraphModule becomes a
    non-persistent buffer of ``gmodule``."""
    try:
        FxModule._attribute(gmodule, target)  # type: ignore[arg-type]
        return target
    except (KeyError, AttributeError):
        pass
    value = graph_module
    for part in target.split("."):
        value = getattr(value, part)
    name = "_fx_" + target.replace(".", "_")
    gmodule.register_buffer(name, gmodule.backend.asarray(_host(value)), persistent=False)
    return name


def _mark_last_uses(steps: list[_Step]) -> None:
    last: dict[str, int] = {}  # value name -> the step that uses it last
    for i, step in enumerate(steps):
        _map_args((step.args, step.kwargs), lambda v, i=i: last.__setitem__(v.name, i) if isinstance(v, _Ref) else v)
    frees: dict[int, list[str]] = {}
    for name, i in last.items():
        frees.setdefault(i, []).append(name)
    for i, step in enumerate(steps):
        step.free = tuple(frees.get(i, ()))


# ---------------------------------------------------------------------------------------------- modules
class _Builder:
    def __init__(self, torch: Any, callers: dict[str, str]) -> None:
        self.torch = torch
        self.callers = callers  # call_module target -> node name, in the root graph
        self.done: dict[int, Module] = {}  # id(torch module) -> its conversion (shared modules stay shared)

    def build(self, tmodule: Any, path: str, root: bool = False) -> Module:
        if id(tmodule) in self.done:
            return self.done[id(tmodule)]
        tnn = self.torch.nn
        gcls = _twin_class(tmodule)
        if gcls is not None:
            module = self.twin(tmodule, gcls, path)
        elif type(tmodule) in (tnn.Sequential, tnn.ModuleList) and not root and \
                list(tmodule._modules) == [str(i) for i in range(len(tmodule))]:
            children = [self.build(child, _where(path, name)) for name, child in tmodule._modules.items()]
            module = gnn.Sequential(*children) if isinstance(tmodule, tnn.Sequential) else gnn.ModuleList(children)
        elif type(tmodule).__module__.startswith("torch.nn.") and \
                type(tmodule) not in (tnn.Sequential, tnn.ModuleList, tnn.ModuleDict, tnn.ParameterList,
                                      tnn.ParameterDict):
            node = self.callers.get(path)
            raise _no_equivalent(_torch_class_name(self.torch, type(tmodule)), _where("model", path),
                                 f"node {node}" if node else "not called in the traced forward")
        else:
            module = self.container(tmodule, path, root)
        object.__setattr__(module, "training", tmodule.training)
        self.done[id(tmodule)] = module
        return module

    def twin(self, tmodule: Any, gcls: type, path: str) -> Module:
        node = self.callers.get(path)
        try:
            module = gcls(**_twin_arguments(self.torch, tmodule, gcls))
            module.load_state_dict(tmodule.state_dict())
        except (TypeError, ValueError) as error:
            raise _no_equivalent(f"this {_torch_class_name(self.torch, type(tmodule))}", _where("model", path),
                                 node and f"node {node}", f": {error}") from error
        return module

    def container(self, tmodule: Any, path: str, root: bool) -> FxModule:
        tnn = self.torch.nn
        name = _torch_class_name(self.torch, type(tmodule))
        module = FxModule(name)
        for attr, param in tmodule._parameters.items():
            if param is not None:
                setattr(module, attr, Parameter(module.backend.asarray(_host(param)), backend=module.backend))
        for attr, buffer in tmodule._buffers.items():
            if buffer is not None:
                module.register_buffer(attr, module.backend.asarray(_host(buffer)),
                                       attr not in tmodule._non_persistent_buffers_set)
        for attr, child in tmodule._modules.items():
            setattr(module, attr, self.build(child, _where(path, attr)))
        if root or isinstance(tmodule, (tnn.ModuleDict, tnn.ParameterList, tnn.ParameterDict, tnn.ModuleList)):
            if not root:
                object.__setattr__(module, "_graph_error", f"a {name} is not called in PyTorch either")
            return module
        try:  # a submodule's own graph, for calling it by itself; the root's graph is what runs the model
            traced = self.torch.fx.symbolic_trace(tmodule)
            object.__setattr__(module, "_steps", _compile(self.torch, traced, module, _where("model", path)))
        except Exception as error:  # noqa: BLE001 (any trace failure: the submodule just has no forward)
            object.__setattr__(module, "_graph_error", f"{_where('model', path)} did not convert by itself: {error}")
        return module


# ---------------------------------------------------------------------------------------------- from_torch
def from_torch(torch_module: Any, example_input: Any = None, rtol: float = 1e-4, atol: float = 1e-5) -> Module:
    """``torch_module`` (anything ``torch.fx.symbolic_trace`` traces) as a gpucnn Module on the current backend,
    with the same weights and ``state_dict`` names, that trains like it; move it with ``.to(...)``.

    A ``torch.nn`` leaf with a gpucnn twin of the same name (every layer of ``gpucnn.nn``: Conv1d/2d,
    Linear, BatchNorm1d/2d, LayerNorm, GroupNorm, pooling, activations, Dropout, Flatten, Identity, ...)
    becomes that twin, built with the torch module's constructor arguments; the root (and each user
    module) becomes an FxModule running its traced graph (``gpucnn.interop_fx_maps`` lists the ops); a
    Sequential / ModuleList becomes gpucnn's. Parameters keep their dtype (a ``.double()`` model gives
    float64 layers).

    ``example_input`` (an array, a torch tensor, or a tuple of them): run both models on it in eval mode
    (no running statistics change) and raise ValueError where outputs differ beyond ``rtol``/``atol``.

    Raises TorchConversionError (a NotImplementedError) naming the op or module gpucnn lacks, its place
    (``model.layer1.0``) and its fx node.
    """
    import torch
    import torch.fx

    if not isinstance(torch_module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(torch_module).__name__}")
    builder = _Builder(torch, {})
    gcls = _twin_class(torch_module)
    if gcls is not None:
        model: Module = builder.twin(torch_module, gcls, "")
        model.train(torch_module.training)
    else:
        try:
            traced = torch.fx.symbolic_trace(torch_module)
        except Exception as error:
            raise TorchConversionError(f"from_torch: torch.fx.symbolic_trace could not trace "
                                       f"{type(torch_module).__name__}: {error}") from error
        builder.callers = {node.target: node.name for node in traced.graph.nodes if node.op == "call_module"}
        model = builder.build(torch_module, "", root=True)
        object.__setattr__(model, "_steps", _compile(torch, traced, model, "model"))
    _check_keys(model, torch_module)
    if example_input is not None:
        check_outputs(torch_module, model, example_input, rtol, atol)
    return model


def _check_keys(model: Module, torch_module: Any) -> None:
    ours, theirs = list(model.state_dict()), list(torch_module.state_dict())
    if ours != theirs:
        raise TorchConversionError(f"from_torch: the converted state_dict's keys differ from PyTorch's: only in "
                                   f"gpucnn {sorted(set(ours) - set(theirs))}, only in torch "
                                   f"{sorted(set(theirs) - set(ours))}")


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for k in sorted(value) for leaf in _leaves(value[k])]
    return [value]


def check_outputs(torch_module: Any, model: Module, example_input: Any, rtol: float = 1e-4,
                  atol: float = 1e-5) -> None:
    """Run both in eval mode on ``example_input``; ValueError naming the outputs that differ."""
    import torch

    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    host = [_host(x) if isinstance(x, torch.Tensor) else
            x.numpy() if isinstance(x, Tensor) else np.asarray(x) for x in inputs]
    modes = [(m, m.training) for m in (*torch_module.modules(), *model.modules())]
    try:
        torch_module.eval()
        model.eval()
        with torch.no_grad():
            expected = _leaves(torch_module(*(torch.from_numpy(np.array(x)) for x in host)))
        with no_grad():
            got = _leaves(model(*(model.backend.asarray(x) for x in host)))
    finally:
        for m, mode in modes:  # as torch.nn.Module.__setattr__ stores a bool
            object.__setattr__(m, "training", mode)
    if len(expected) != len(got):
        raise ValueError(f"from_torch: PyTorch's model gives {len(expected)} outputs, the converted one {len(got)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        e = _host(e) if isinstance(e, torch.Tensor) else np.asarray(e)
        g = g.numpy() if isinstance(g, Tensor) else np.asarray(model.backend.to_numpy(g)
                                                                   if hasattr(g, "shape") else g)
        if e.shape != g.shape or not np.allclose(g, e, rtol=rtol, atol=atol):
            error = float(np.max(np.abs(g - e))) if e.shape == g.shape else None
            raise ValueError(f"from_torch: output {i} of the converted model differs from PyTorch's on the example "
                             f"input: shapes {tuple(g.shape)} / {tuple(e.shape)}"
                             + (f", max |difference| {error:.3g} (rtol={rtol}, atol={atol})" if error is not None
                                else ""))
