"""What ``from_torch`` maps to what: the tables ``gpucnn.interop_fx`` converts a traced torch model with.

- torch functions, Python operators and Tensor methods -> the gpucnn callables that run them
  (``_torch_functions``, ``_OPERATORS``, ``_METHODS``), with the small adapters where torch's form differs
  (``torch.add(..., alpha=)``, ``torch.max(a, b)``, list dims, ``contiguous``, ...):

  - functions: ``operator`` add/sub/mul/truediv/floordiv/mod/pow/neg/matmul/getitem and comparisons
    (in-place forms out of place); ``getattr`` (``x.shape``); ``torch`` flatten, cat, stack, where,
    add/sub/mul/div, matmul, mean/sum (with dims), reshape/permute/transpose/squeeze/unsqueeze,
    exp/log/sqrt/clamp, max/min, relu/sigmoid/tanh/softmax/log_softmax; every ``torch.nn.functional``
    function ``gpucnn.functional`` has under the same name (relu, relu6, leaky_relu, elu, gelu, silu, mish,
    softplus, sigmoid, tanh, hardsigmoid, hardswish, softmax, log_softmax, conv1d, conv2d, linear,
    max_pool2d, avg_pool2d, adaptive_avg_pool2d, lp_pool2d, dropout, dropout2d, batch_norm, layer_norm,
    group_norm, instance_norm, local_response_norm, cross_entropy, nll_loss, mse_loss, and whatever else
    both have);
  - methods: the gpucnn Tensor method of the same name (view, reshape, flatten, mean, sum, permute,
    transpose, size, dim, numel, chunk, split, expand, clamp, exp, log, sqrt, max, min, ...), and
    relu/sigmoid/tanh/softmax/log_softmax/add/sub/mul/div/unsqueeze/squeeze/contiguous;

- argument fix-ups (``_gpucnn_arguments``): torch-only keywords at their defaults dropped (``_stacklevel``,
  ``dtype=None``, ``size_average=None``, ...); the ``training`` argument of dropout, dropout2d and batch_norm
  left out, for each call to give the converted module's mode (fx recorded the trace's);
- ``torch.nn`` leaves -> their gpucnn twins (``_twin_class``) and the twin's constructor arguments, read off
  the torch module (``_twin_arguments``);
- how a torch op or class is named in messages (``_torch_name``, ``_torch_class_name``).

PyTorch is imported only inside functions (most are handed the ``torch`` module): this module imports
without it.
"""

from __future__ import annotations

import builtins
import inspect
import operator
from typing import Any

import numpy as np

from . import functional as F
from . import nn as gnn
from .core.shape_ops import cat, flatten, stack
from .core.tensor import Tensor
from .core.tensor_ops import where
from .nn.module import Module


def _qualname(fn: Any) -> str:
    """``operator.add``, ``gpucnn.functions.relu.relu``; this package's adapters by their bare names."""
    module = {"_operator": "operator", "gpucnn.interop_fx": "", __name__: ""}.get(fn.__module__, fn.__module__) \
        if isinstance(getattr(fn, "__module__", None), str) else ""
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}".lstrip(".")


# ---------------------------------------------------------------------------------------------- op adapters
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
            return where(input >= dim if name == "max" else input <= dim, input, dim)
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


# ---------------------------------------------------------------------------------------------- op tables
_add, _sub = _scaled(operator.add), _scaled(operator.sub)
_mean, _sum = _reduce("mean"), _reduce("sum")

#: torch functions and Tensor methods of one name that gpucnn.functional runs
_ACTIVATIONS: dict[str, Any] = {name: getattr(F, name) for name in ("relu", "sigmoid", "tanh", "softmax",
                                                                     "log_softmax")}

#: Tensor methods gpucnn's Tensor lacks, or whose torch form differs; the rest are called by name
_METHODS: dict[str, Any] = {
    **_ACTIVATIONS, "add": _add, "sub": _sub, "mul": operator.mul, "div": _div,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "contiguous": _contiguous, "mean": _mean, "sum": _sum,
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
        torch.add: _add, torch.sub: _sub, torch.mul: operator.mul, torch.div: _div, torch.matmul: operator.matmul,
        torch.mean: _mean, torch.sum: _sum, torch.reshape: _reshape, torch.permute: _permute,
        torch.transpose: _transpose, torch.squeeze: _squeeze, torch.unsqueeze: _unsqueeze,
        torch.exp: _method("exp"), torch.log: _method("log"), torch.sqrt: _method("sqrt"),
        torch.clamp: _method("clamp"), torch.max: _extreme("max"), torch.min: _extreme("min"),
    })
    table.update({getattr(torch, name): fn for name, fn in _ACTIVATIONS.items()})
    return table


# ---------------------------------------------------------------------------------------------- arguments
def _gpucnn_arguments(node: Any, fn: Any, args: tuple, kwargs: dict, refuse: Any) -> tuple[tuple, dict, bool]:
    """``node``'s (converted) arguments as ``fn`` takes them, and whether its ``training`` argument is to follow
    the converted module's mode rather than the trace's: then it is left out, for each call to give."""
    kwargs = _gpucnn_kwargs(node, fn, kwargs, refuse)
    follow = (getattr(fn, "__name__", "") in _FOLLOW_TRAINING and fn is getattr(F, fn.__name__)
              and "training" in inspect.signature(fn).parameters)
    if follow:
        kwargs.pop("training", None)
        i = list(inspect.signature(fn).parameters).index("training")
        args = args[:i] + args[i + 1:] if len(args) > i else args
    return args, kwargs, follow


def _gpucnn_kwargs(node: Any, fn: Any, kwargs: dict, refuse: Any) -> dict:
    """``kwargs`` (``node``'s, converted) without the torch-only keywords at their torch defaults; one set
    otherwise is refused. A traced value (an fx node) is never taken for a default."""
    import torch.fx as fx

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
                                        or (not isinstance(node.kwargs[key], fx.Node)
                                            and value == torch_defaults[key])):
            continue
        else:
            raise refuse(f": gpucnn's {getattr(fn, '__name__', fn)} has no {key}= (given {value!r})")
    return kept


# ---------------------------------------------------------------------------------------------- names
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


# ---------------------------------------------------------------------------------------------- layers
#: gpucnn.nn names that are not layers with a torch twin of the same name
_NOT_TWINS = {"Module", "Parameter", "Sequential", "ModuleList", "Concat", "accuracy"}


def _twin_class(tmodule: Any) -> type | None:
    """The gpucnn layer of the same name as the ``torch.nn`` leaf ``tmodule``; None where there is none."""
    cls = type(tmodule)
    if not cls.__module__.startswith("torch.nn.") or cls.__name__ in _NOT_TWINS:
        return None
    gcls = getattr(gnn, cls.__name__, None) if cls.__name__ in gnn.__all__ else None
    return gcls if isinstance(gcls, type) and issubclass(gcls, Module) else None


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
