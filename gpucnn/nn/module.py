"""Module: parameters, buffers and child modules, PyTorch-style. A layer writes only ``forward``;
autograd does the backward pass."""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ..backends.base import FLOAT_DTYPES, Backend
from ..backends.registry import get_backend
from ..core.autograd import current_tracer, no_grad
from ..core.tensor import Parameter, Tensor
from ..functions.checks import check_float_input, check_same_dtype

#: keyword arguments PyTorch layers take that gpucnn's do not, and what to do instead
_PYTORCH_ONLY = {
    "device": "gpucnn layers are created on the current backend: gpucnn.set_backend('cuda') first, or "
              "model.to('cuda') after",
    "dilation": "this layer has no dilation in gpucnn",
    "divisor_override": "gpucnn's average pooling has no divisor override",
}


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model. Assigning a Parameter or a Module to an attribute
    registers it; ``register_buffer`` registers a saved, moved, non-trainable array."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())  # name -> persistent (saved in state_dict)
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "backend", get_backend())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _naming_unknown_keywords(cls.__dict__["__init__"])

    def __setattr__(self, name: str, value: Any) -> None:
        params, modules = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if params is None:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            value.backend = self.backend
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        elif value is None and name in ("weight", "bias"):
            params[name] = None  # registered as absent, as PyTorch's bias=False
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ structure
    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """A non-trainable array that moves with the model and, if persistent, is in state_dict."""
        self._buffers[name] = persistent
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        setattr(self, name, param)

    def add_module(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return iter(self._modules.items())

    def children(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """Every module below (and with) this one, depth first; a module used twice comes once
        unless ``remove_duplicate`` is False (state_dict lists it under each name, as PyTorch does)."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child}" if name else child, m) for child, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs; a parameter shared by two layers comes once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for name, module, attr in self._buffer_slots(prefix, persistent_only=False):
            yield name, getattr(module, attr)

    def parameter_keys(self) -> set[str]:
        """The state_dict keys that hold parameters (the rest are buffers)."""
        return {(f"{name}." if name else "") + attr for name, module in self.named_modules(remove_duplicate=False)
                for attr, param in module._parameters.items() if param is not None}

    def _buffer_slots(self, prefix: str = "", persistent_only: bool = True) -> Iterator[tuple[str, Module, str]]:
        for module_name, module in self.named_modules(prefix):
            for attr, persistent in module._buffers.items():
                if persistent or not persistent_only:
                    yield (f"{module_name}.{attr}" if module_name else attr), module, attr

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    # ------------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, backend: str | Backend) -> Module:
        """Move parameters, gradients, optimizer state and buffers to another backend, in place."""
        target = get_backend(backend)
        for m in self.modules():
            source = m.backend
            if source is target:
                continue

            def move(a: Any, source: Backend = source) -> Any:
                return None if a is None else target.asarray(source.to_numpy(a))

            for p in m._parameters.values():
                if p is None or p.backend is target:
                    continue
                p.data = move(p.data)
                p.grad = None if p.grad is None else Tensor(move(p.grad.data), backend=target)
                p.state = {k: move(v) if hasattr(v, "shape") else v for k, v in p.state.items()}
                p.backend = target
            for name in m._buffers:
                object.__setattr__(m, name, move(getattr(m, name)))
            m._moved(target)
            object.__setattr__(m, "backend", target)
        return self

    def _moved(self, target: Backend) -> None:
        """Hook for layers that keep backend arrays outside parameters and buffers."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, Any]:
        """Name -> array on the model's backend, with PyTorch's names (``0.weight``,
        ``layer1.0.bn1.running_mean``, ``num_batches_tracked``)."""
        state: OrderedDict[str, Any] = OrderedDict()
        for name, module in self.named_modules(remove_duplicate=False):
            dot = f"{name}." if name else ""
            for attr, param in module._parameters.items():
                if param is not None:
                    state[dot + attr] = param.data
            for attr, persistent in module._buffers.items():
                if persistent:
                    state[dot + attr] = getattr(module, attr)
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (NumPy, CuPy, Tensors, or anything with ``__array__``, such as a PyTorch
        CPU state_dict's tensors) into this model. Every missing (with ``strict``), unexpected
        (with ``strict``) or mis-shaped entry is named in one ValueError, and nothing is changed then."""
        own = self.state_dict()
        given = {key: _host_array(value) for key, value in state_dict.items()}
        problems = state_problems(own, given, strict)
        if problems:
            raise ValueError(f"load_state_dict: the state does not fit {type(self).__name__}; " + "; ".join(problems))
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        slots = self._state_slots()
        for key, value in given.items():
            if key in slots:
                slots[key](value)
        return IncompatibleKeys(missing, unexpected)

    def _state_slots(self) -> dict[str, Any]:
        """state_dict key -> a setter that stores a host array there (in the entry's dtype)."""
        slots = {}
        for name, module in self.named_modules(remove_duplicate=False):
            dot = f"{name}." if name else ""
            backend = module.backend
            for attr, param in module._parameters.items():
                if param is not None:
                    def set_param(value: np.ndarray, p: Parameter = param, b: Backend = backend) -> None:
                        # a copy: on a host backend asarray would alias the caller's array (another
                        # model's state_dict), and in-place updates of either would reach the other
                        p.data = b.asarray(np.array(value, dtype=p.dtype))
                    slots[dot + attr] = set_param
            for attr, persistent in module._buffers.items():
                if persistent:
                    def set_buffer(value: np.ndarray, m: Module = module, a: str = attr, b: Backend = backend) -> None:
                        object.__setattr__(m, a, b.asarray(np.array(value, dtype=getattr(m, a).dtype)))
                    slots[dot + attr] = set_buffer
        return slots

    # ------------------------------------------------------------------ running
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:
            args = (self._as_input(args[0]),)
        elif args:
            args = (self._as_input(args[0]),) + tuple(_wrap(a, self.backend) for a in args[1:])
        tracer = current_tracer()
        if tracer is None:
            out = self.forward(*args, **kwargs)
        else:
            tracer.module_entered(self)
            try:
                out = self.forward(*args, **kwargs)
            finally:
                tracer.module_left(self)
        if _summary_rows is not None:
            _summary_rows.append((self, out))
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def _as_input(self, x: Any) -> Any:
        """A backend array becomes a Tensor; an array of another backend is refused, naming the layer."""
        array = x.data if isinstance(x, Tensor) else x
        if not hasattr(array, "shape"):
            return x
        if not self.backend.owns(array):
            b = self.backend
            raise TypeError(f"{self._layer_name()} is on backend {b.name!r} and expects a "
                            f"{b.array_type.__module__}.ndarray, got {type(array).__module__}.{type(array).__name__}; "
                            f"move it with tensor.to({b.name!r}) or gpucnn.get_backend({b.name!r}).asarray(x)")
        return x if isinstance(x, Tensor) else Tensor(x, backend=self.backend)

    def _layer_name(self) -> str:
        return type(self).__name__

    def _check_input(self, x: Any, ndim: int | None, channels: int | None = None,
                     layout: str = "(N, C, H, W)") -> None:
        """Reject what the op cannot take, naming the layer, what it expected and what it got."""
        name = self._layer_name()
        check_float_input(x, ndim, name, channels, layout)
        for weight in self._parameters.values():
            if weight is not None:
                check_same_dtype(x, weight, name)
                break

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ summary
    def summary(self, input_shape: tuple[int, ...], batch_size: int = 1, dtype: Any = None,
                print_fn: Any = None) -> ModelSummary:
        """Run one eval-mode forward on zeros of ``(batch_size, *input_shape)`` and return each layer's
        output shape and parameter count as a ModelSummary: ``print(model.summary((1, 28, 28)))``, or
        let the REPL show it. ``input_shape`` is one sample's shape, without the batch axis (Keras's
        convention; torchinfo's ``input_size`` includes it). ``print_fn``, when given, is called with
        the table as well."""
        global _summary_rows
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
        if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise ValueError(f"{type(self).__name__}.summary: expected input_shape as positive ints (one sample's "
                             f"shape, without the batch axis, e.g. (1, 28, 28)), got {input_shape!r}")
        names = {id(m): name for name, m in self.named_modules()}
        dtype = dtype or next((p.dtype for p in self.parameters()), np.float32)
        x = Tensor(self.backend.xp.zeros((batch_size, *shape), dtype=dtype), backend=self.backend)
        was_training, _summary_rows = self.training, []
        try:
            self.eval()
            with no_grad():
                self(x)
            recorded = _summary_rows
        except (ValueError, TypeError) as error:
            hint = ""
            if len(shape) >= 2 and shape[0] in (1, batch_size):
                hint = (f"; if {shape} already has the batch axis, pass input_shape={shape[1:]}, "
                        f"batch_size={shape[0]}")
            raise ValueError(f"{type(self).__name__}.summary: input_shape is one sample's shape, without the batch "
                             f"axis: the forward on zeros of shape {(batch_size, *shape)} failed{hint}: "
                             f"{error}") from error
        finally:
            _summary_rows = None
            self.train(was_training)
        rows = [SummaryRow(names.get(id(module), "?"), type(module).__name__,
                           tuple(out.shape) if hasattr(out, "shape") else None,
                           sum(p.numel() for p in module.parameters()))
                for module, out in recorded if module is not self]
        table = ModelSummary(type(self).__name__, (batch_size, *shape), rows, self.num_parameters())
        if print_fn is not None:
            print_fn(str(table))
        return table


class SummaryRow(NamedTuple):
    layer: str  # the state_dict prefix: "0", "layer2.0.shortcut.0"
    type: str
    output_shape: tuple[int, ...] | None  # None for an output that is not an array
    parameters: int


class ModelSummary:
    """Module.summary's table. It prints as the table (so does its repr, which is what the REPL shows),
    and holds the rows for code: ``rows``, ``total_parameters``, ``input_shape`` (with the batch axis)."""

    def __init__(self, model: str, input_shape: tuple[int, ...], rows: list[SummaryRow],
                 total_parameters: int) -> None:
        self.model, self.input_shape, self.rows, self.total_parameters = model, input_shape, rows, total_parameters

    def __str__(self) -> str:
        table = [("layer", "type", "output shape", "parameters")]
        table += [(row.layer, row.type, str(row.output_shape) if row.output_shape is not None else "-",
                   f"{row.parameters:,}") for row in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in table]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total parameters: {self.total_parameters:,}")
        return "\n".join(lines)

    __repr__ = __str__


def state_problems(own: dict[str, Any], given: dict[str, Any], strict: bool = True) -> list[str]:
    """What keeps ``given`` from loading into a model whose state_dict is ``own``: missing and
    unexpected keys (when ``strict``) and mis-shaped entries, each named."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    misshaped = [f"{k} (given {tuple(given[k].shape)}, model {tuple(own[k].shape)})"
                 for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
    return [f"{label}: {', '.join(keys)}" for label, keys in
            (("missing", missing if strict else []), ("unexpected", unexpected if strict else []),
             ("wrong shape", misshaped)) if keys]


#: while Module.summary runs: (module, output) of every call, in call order
_summary_rows: list[tuple[Module, Any]] | None = None


def summary_is_recording() -> bool:
    """Containers run each layer by itself then (no fusion), so every layer shows its output."""
    return _summary_rows is not None


def _wrap(a: Any, backend: Backend) -> Any:
    if hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, Tensor) and backend.owns(a):
        return Tensor(a, backend=backend)
    return a


def _host_array(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    if type(value).__module__.split(".")[0] == "cupy":
        return value.get()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a PyTorch tensor that may require grad
        value = value.detach().cpu()
    return np.asarray(value)


def _naming_unknown_keywords(init: Any) -> Any:
    """Wrap a layer's __init__ so an unknown keyword argument raises a TypeError naming the layer
    the user called (not a base class), and says so when it is a PyTorch feature gpucnn lacks."""
    signature = inspect.signature(init)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return init
    accepted = [name for name in signature.parameters if name != "self"]

    @functools.wraps(init)
    def checked(self: Module, *args: Any, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            layer = type(self).__name__
            hints = "".join(f"; {k}: {_PYTORCH_ONLY[k]}" for k in unknown if k in _PYTORCH_ONLY)
            raise TypeError(f"{layer}: unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}{hints}; {layer} takes "
                            f"{', '.join(accepted) or 'no arguments'}")
        init(self, *args, **kwargs)

    return checked


# layers without an __init__ of their own (ReLU, Sigmoid) run this one: it names them too
Module.__init__ = _naming_unknown_keywords(Module.__init__)  # type: ignore[method-assign]


def as_float_dtype(dtype: Any, owner: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dt}")
    return dt


def new_parameter(module: Module, values: np.ndarray, dtype: Any) -> Parameter:
    """A Parameter on ``module``'s backend from host values."""
    return Parameter(module.backend.asarray(values, dtype=dtype), backend=module.backend)
