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

PyTorch is imported only inside ``from_torch``: this module imports without it, and a converted model runs
without touching PyTorch (its graph is held as plain Python records, not fx nodes).
"""

from __future__ import annotations

import builtins
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import functional as F
from . import nn as gnn
from .core.autograd import no_grad
from .core.tensor import Parameter, Tensor
from .core.tensor_ops import cat, flatten, stack, where
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


def _qualname(fn: Any) -> str:
    module = {"_operator": "operator", "gpucnn.interop_fx": ""}.get(fn.__module__, fn.__module__) \
        if isinstance(getattr(fn, "__module__", None), str) else ""
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}".lstrip(".")


class FxModule(Module):
    """A converted torch module whose forward is its traced ``torch.fx`` graph, run node by node over gpucnn
    (as ``torch.fx.Interpreter`` does); it holds the converted children under their torch names.

    What the nodes become:

    - ``placeholder``: the forward's arguments, by position then by name (a default where fx kept one);
    - ``call_module``: the child at that dotted path (a gpucnn layer, container or FxModule);
    - ``get_attr``: the parameter (a Parameter, so gradients reach it) or buffer at that path; tensor
      constants fx made are non-persistent buffers of this module;
    - ``call_function``: ``operator`` add/sub/mul/truediv/floordiv/mod/pow/neg/matmul/getitem and
      comparisons (in-place forms out of place); ``getattr`` (``x.shape``); ``torch`` flatten, cat, stack,
      where, add/sub/mul/div, matmul, mean/sum (with dims), reshape/permute/transpose/squeeze/unsqueeze,
      exp/log/sqrt/clamp, max/min, relu/sigmoid/tanh/softmax/log_softmax; every
      ``torch.nn.functional`` function ``gpucnn.functional`` has under the same name (relu, relu6,
      leaky_relu, elu, gelu, silu, mish, softplus, sigmoid, tanh, hardsigmoid, hardswish, softmax,
      log_softmax, conv1d, conv2d, linear, max_pool2d, avg_pool2d, adaptive_avg_pool2d, lp_pool2d,
      dropout, dropout2d, batch_norm, layer_norm, group_norm, instance_norm, local_response_norm,
      cross_entropy, nll_loss, mse_loss, and whatever else both have), torch-only keywords at their
      defaults dropped (``_stacklevel``, ``dtype=None``, ``size_average=None``); the ``training``
      argument of dropout, dropout2d and batch_norm follows this module's mode (fx records the trace's);
    - ``call_method``: the gpucnn Tensor method of the same name (view, reshape, flatten, mean, sum,
      permute, transpose, size, dim, numel, chunk, split, expand, clamp, exp, log, sqrt, max, min, ...),
      and relu/sigmoid/tanh/softmax/log_softmax/add/sub/mul/div/unsqueeze/squeeze/contiguous;
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
        positional = list(args)
        for step in self._steps:
            op = step.op
            try:
                if op == "placeholder":
                    env[step.name] = self._argument(step, positional, kwargs)
                    continue
                if op == "output":
                    return _load(step.args[0], env)
                a, k = _load(step.args, env), _load(step.kwargs, env)
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


def _load(value: Any, env: dict[str, Any]) -> Any:
    if isinstance(value, _Ref):
        return env[value.name]
    if isinstance(value, tuple):
        return tuple(_load(v, env) for v in value)
    if isinstance(value, list):
        return [_load(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _load(v, env) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_load(value.start, env), _load(value.stop, env), _load(value.step, env))
    return value


# ---------------------------------------------------------------------------------------------- op tables
def _dims(dim: Any) -> Any:
    return tuple(dim) if isinstance(dim, list) else dim


def _reduce(name: str) -> Any:
    def reduce(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:  # noqa: A002
        if dtype is not None:
            raise TypeError(f"torch.{name}: dtype= is not supported by gpucnn")
        return getattr(input, name)(_dims(dim), keepdim)
    return reduce


def _squeeze(input: Any, dim: Any = None) -> Any:  # noqa: A002
    shape = list(input.shape)
    dims = range(len(shape)) if dim is None else [d % len(shape) for d in (dim if isinstance(dim, (tuple, list))
                                                                          else (dim,))]
    keep = [s for i, s in enumerate(shape) if not (i in dims and s == 1)]
    return input.reshape(tuple(keep))


def _unsqueeze(input: Any, dim: int) -> Any:  # noqa: A002
    shape = list(input.shape)
    shape.insert(dim % (len(shape) + 1), 1)
    return input.reshape(tuple(shape))


def _extreme(name: str) -> Any:
    def extreme(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A002
        if isinstance(dim, Tensor):  # torch.max(a, b): elementwise
            return where(input >= dim, input, dim) if name == "max" else where(input <= dim, input, dim)
        return getattr(input, name)(dim, keepdim)
    return extreme


def _scaled(op: Any) -> Any:
    def apply(input: Any, other: Any, *, alpha: Any = 1) -> Any:  # noqa: A002
        return op(input, other if alpha == 1 else other * alpha)
    return apply


def _cat(tensors: Any, dim: int = 0) -> Any:
    return cat(list(tensors), dim)


def _stack(tensors: Any, dim: int = 0) -> Any:
    return stack(list(tensors), dim)


def _reshape(input: Any, shape: Any) -> Any:  # noqa: A002
    return input.reshape(tuple(shape))


def _permute(input: Any, dims: Any) -> Any:  # noqa: A002
    return input.permute(tuple(dims))


def _transpose(input: Any, dim0: int, dim1: int) -> Any:  # noqa: A002
    return input.transpose(dim0, dim1)


def _method(name: str) -> Any:
    def call(input: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return getattr(input, name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = f"Tensor.{name}"
    return call


def _contiguous(input: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
    return input


def _div(input: Any, other: Any, *, rounding_mode: Any = None) -> Any:  # noqa: A002
    if rounding_mode is not None:
        raise TypeError("torch.div: rounding_mode is not supported by gpucnn")
    return input / other


#: Tensor methods gpucnn's Tensor lacks, or whose torch form differs; the rest are called by name
_METHODS: dict[str, Any] = {
    "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "softmax": F.softmax, "log_softmax": F.log_softmax,
    "add": _scaled(operator.add), "sub": _scaled(operator.sub), "mul": operator.mul, "div": _div,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "contiguous": _contiguous,
    "mean": _reduce("mean"), "sum": _reduce("sum"),
}

#: Python operators; the in-place forms (``+=``) compute out of place
_OPERATORS: dict[Any, Any] = {getattr(operator, name): getattr(operator, name) for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "matmul", "getitem", "eq", "ne", "lt",
    "le", "gt", "ge")}
_OPERATORS.update({getattr(operator, "i" + name): getattr(operator, name) for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul")})
_OPERATORS[builtins.getattr] = builtins.getattr

#: functional names whose ``training`` argument follows the converted module's mode
_FOLLOW_TRAINING = {"dropout", "dropout2d", "batch_norm"}


def _torch_functions(torch: Any) -> dict[Any, Any]:
    """torch callable -> gpucnn callable."""
    tF = torch.nn.functional
    table: dict[Any, Any] = dict(_OPERATORS)
    for name in F.__all__:  # every functional op both have, under one name
        if hasattr(tF, name):
            table[getattr(tF, name)] = getattr(F, name)
    table.update({
        torch.flatten: flatten, torch.cat: _cat, torch.concat: _cat, torch.stack: _stack, torch.where: where,
        torch.add: _scaled(operator.add), torch.sub: _scaled(operator.sub), torch.mul: operator.mul,
        torch.div: _div, torch.matmul: operator.matmul, torch.mean: _reduce("mean"), torch.sum: _reduce("sum"),
        torch.reshape: _reshape, torch.permute: _permute, torch.transpose: _transpose,
        torch.squeeze: _squeeze, torch.unsqueeze: _unsqueeze, torch.exp: _method("exp"), torch.log: _method("log"),
        torch.sqrt: _method("sqrt"), torch.clamp: _method("clamp"),
        torch.max: _extreme("max"), torch.min: _extreme("min"),
        torch.relu: F.relu, torch.sigmoid: F.sigmoid, torch.tanh: F.tanh,
        torch.softmax: F.softmax, torch.log_softmax: F.log_softmax,
    })
    return table


def _torch_name(torch: Any, target: Any) -> str:
    """``torch.cumsum``, ``torch.nn.functional.interpolate``, ``operator.lshift``: how the user wrote it."""
    for prefix, namespace in (("torch.nn.functional", torch.nn.functional), ("torch", torch),
                              ("operator", operator), ("builtins", builtins)):
        name = getattr(target, "__name__", None)
        if name and getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    return _qualname(target)


def _torch_class_name(torch: Any, cls: type) -> str:
    return f"torch.nn.{cls.__name__}" if getattr(torch.nn, cls.__name__, None) is cls \
        else f"{cls.__module__}.{cls.__qualname__}"


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

    def convert(arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return _Ref(arg.name)
        if isinstance(arg, (tuple, list)):
            converted = [convert(a) for a in arg]
            return tuple(converted) if isinstance(arg, tuple) else converted
        if isinstance(arg, dict):
            return {k: convert(v) for k, v in arg.items()}
        if isinstance(arg, slice):
            return slice(convert(arg.start), convert(arg.stop), convert(arg.step))
        if isinstance(arg, torch.Size):
            return tuple(arg)
        if isinstance(arg, (torch.dtype, torch.device, torch.Tensor)):
            raise TorchConversionError(f"a {type(arg).__name__} argument ({arg!r})")
        return arg

    def refuse(node: Any, what: str, why: str = "") -> TorchConversionError:
        return TorchConversionError(f"from_torch: no gpucnn equivalent for {what} at {_node_place(node, root)} "
                                    f"(node {node.name}){why}")

    steps: list[_Step] = []
    for node in graph_module.graph.nodes:
        what = (_torch_name(torch, node.target) if node.op == "call_function" else
                f"Tensor.{node.target}" if node.op == "call_method" else str(node.target))
        try:
            args, kwargs = convert(tuple(node.args)), convert(dict(node.kwargs))
        except TorchConversionError as error:
            raise refuse(node, what, f": {error} gpucnn cannot take") from None
        step = _Step(node.op, node.name, node.target, args, kwargs)
        if node.op == "call_function":
            fn = functions.get(node.target)
            if fn is None:
                raise refuse(node, what)
            step.fn = fn
            step.kwargs = _gpucnn_kwargs(node, fn, kwargs, lambda why, n=node, w=what: refuse(n, w, why))
            step.follow_training = (getattr(fn, "__name__", "") in _FOLLOW_TRAINING and fn is getattr(F, fn.__name__)
                                    and "training" in inspect.signature(fn).parameters)
            if step.follow_training:
                step.kwargs.pop("training", None)
                step.args = _drop_training_positional(fn, step.args)
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


def _drop_training_positional(fn: Any, args: tuple) -> tuple:
    names = list(inspect.signature(fn).parameters)
    i = names.index("training")
    return args[:i] + args[i + 1:] if len(args) > i else args


def _gpucnn_kwargs(node: Any, fn: Any, kwargs: dict, refuse: Any) -> dict:
    """``kwargs`` without the torch-only keywords at their torch defaults; one set otherwise is refused."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    try:
        torch_defaults = {k: p.default for k, p in inspect.signature(node.target).parameters.items()}
    except (TypeError, ValueError):
        torch_defaults = {}
    torch_defaults.update({"_stacklevel": ..., "dtype": None, "size_average": None, "reduce": None})
    kept = {}
    for key, value in kwargs.items():
        if key in params:
            kept[key] = value
        elif key in torch_defaults and (torch_defaults[key] is ... or value is torch_defaults[key]
                                        or (not isinstance(value, _Ref) and value == torch_defaults[key])):
            continue
        else:
            raise refuse(f": gpucnn's {getattr(fn, '__name__', fn)} has no {key}= (given {value!r})")
    return kept


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
    gmodule.register_buffer(name, gmodule.backend.asarray(value.detach().cpu().numpy()), persistent=False)
    return name


def _mark_last_uses(steps: list[_Step]) -> None:
    last: dict[str, int] = {}

    def refs(value: Any) -> Any:
        if isinstance(value, _Ref):
            yield value.name
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from refs(v)
        elif isinstance(value, dict):
            for v in value.values():
                yield from refs(v)
        elif isinstance(value, slice):
            yield from refs((value.start, value.stop, value.step))

    for i, step in enumerate(steps):
        for name in refs((step.args, step.kwargs)):
            last[name] = i
    frees: dict[int, list[str]] = {}
    for name, i in last.items():
        frees.setdefault(i, []).append(name)
    for i, step in enumerate(steps):
        step.free = tuple(frees.get(i, ()))


# ---------------------------------------------------------------------------------------------- modules
#: gpucnn.nn names that are not layers with a torch twin of the same name
_NOT_TWINS = {"Module", "Parameter", "Sequential", "ModuleList", "Concat", "accuracy"}


def _numpy_dtype(module: Any) -> np.dtype | None:
    for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if tensor is not None and tensor.is_floating_point():
            return np.dtype(str(tensor.dtype).removeprefix("torch."))
    return None


def _twin_arguments(torch: Any, tmodule: Any, gcls: type) -> dict[str, Any]:
    """The gpucnn constructor's keyword arguments, read from the torch module's attributes of the same name
    (``bias`` as whether it has one, ``dtype`` from its parameters)."""
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(gcls.__init__).parameters.items():
        if name in ("self", "rng") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "dtype":
            dtype = _numpy_dtype(tmodule)
            if dtype is not None:
                kwargs["dtype"] = dtype
            continue
        if not hasattr(tmodule, name):
            continue
        value = getattr(tmodule, name)
        if name == "bias" and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None
        elif isinstance(value, torch.Tensor) or callable(value):
            continue
        kwargs[name] = value
    if gcls is gnn.Conv1d:  # torch keeps 1-tuples
        for name in ("kernel_size", "stride", "dilation", "padding"):
            if isinstance(kwargs.get(name), tuple):
                kwargs[name] = kwargs[name][0]
    if issubclass(gcls, gnn.Softmax) and kwargs.get("dim", -1) is None:
        raise ValueError(f"{gcls.__name__}(dim=None) (PyTorch's implicit dim) is not supported; give dim")
    return kwargs


class _Builder:
    def __init__(self, torch: Any, callers: dict[str, str]) -> None:
        self.torch = torch
        self.callers = callers  # call_module target -> node name, in the root graph
        self.done: dict[int, Module] = {}  # id(torch module) -> its conversion (shared modules stay shared)

    def twin_class(self, tmodule: Any) -> type | None:
        cls = type(tmodule)
        if not cls.__module__.startswith("torch.nn.") or cls.__name__ in _NOT_TWINS:
            return None
        gcls = getattr(gnn, cls.__name__, None) if cls.__name__ in gnn.__all__ else None
        return gcls if isinstance(gcls, type) and issubclass(gcls, Module) else None

    def build(self, tmodule: Any, path: str, root: bool = False) -> Module:
        if id(tmodule) in self.done:
            return self.done[id(tmodule)]
        tnn = self.torch.nn
        gcls = self.twin_class(tmodule)
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
            raise TorchConversionError(
                f"from_torch: no gpucnn equivalent for {_torch_class_name(self.torch, type(tmodule))} at "
                f"{_where('model', path)} ({f'node {node}' if node else 'not called in the traced forward'})")
        else:
            module = self.container(tmodule, path, root)
        object.__setattr__(module, "training", tmodule.training)
        self.done[id(tmodule)] = module
        return module

    def twin(self, tmodule: Any, gcls: type, path: str) -> Module:
        where = _where("model", path)
        node = self.callers.get(path)
        place = f"{where} (node {node})" if node else where
        try:
            module = gcls(**_twin_arguments(self.torch, tmodule, gcls))
            module.load_state_dict(tmodule.state_dict())
        except (TypeError, ValueError) as error:
            raise TorchConversionError(f"from_torch: no gpucnn equivalent for this "
                                       f"{_torch_class_name(self.torch, type(tmodule))} at {place}: {error}") from error
        return module

    def container(self, tmodule: Any, path: str, root: bool) -> FxModule:
        tnn = self.torch.nn
        name = _torch_class_name(self.torch, type(tmodule))
        module = FxModule(name)
        for attr, param in tmodule._parameters.items():
            if param is not None:
                setattr(module, attr, Parameter(module.backend.asarray(param.detach().cpu().numpy()),
                                                backend=module.backend))
        for attr, buffer in tmodule._buffers.items():
            if buffer is not None:
                module.register_buffer(attr, module.backend.asarray(buffer.detach().cpu().numpy()),
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
    module) becomes an FxModule running its traced graph (see FxModule for the ops that map); a
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
    gcls = builder.twin_class(torch_module)
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
    host = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else
            x.numpy() if isinstance(x, Tensor) else np.asarray(x) for x in inputs]
    modes = [(m, m.training) for m in torch_module.modules()]
    ours_modes = [(m, m.training) for m in model.modules()]
    try:
        torch_module.eval()
        model.eval()
        with torch.no_grad():
            expected = _leaves(torch_module(*(torch.from_numpy(np.array(x)) for x in host)))
        with no_grad():
            got = _leaves(model(*(model.backend.asarray(x) for x in host)))
    finally:
        for m, mode in modes:
            m.training = mode
        for m, mode in ours_modes:
            object.__setattr__(m, "training", mode)
    if len(expected) != len(got):
        raise ValueError(f"from_torch: PyTorch's model gives {len(expected)} outputs, the converted one {len(got)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        e = e.detach().cpu().numpy() if isinstance(e, torch.Tensor) else np.asarray(e)
        g = g.numpy() if isinstance(g, Tensor) else np.asarray(model.backend.to_numpy(g)
                                                                   if hasattr(g, "shape") else g)
        if e.shape != g.shape or not np.allclose(g, e, rtol=rtol, atol=atol):
            error = float(np.max(np.abs(g - e))) if e.shape == g.shape else None
            raise ValueError(f"from_torch: output {i} of the converted model differs from PyTorch's on the example "
                             f"input: shapes {tuple(g.shape)} / {tuple(e.shape)}"
                             + (f", max |difference| {error:.3g} (rtol={rtol}, atol={atol})" if error is not None
                                else ""))
