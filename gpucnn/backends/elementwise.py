"""Elementwise ops declared once: a row of ``ELEMENTWISE_OPS`` is a contract op (an abstract method of
``contract.Backend``), its NumPy reference (the ``numpy`` backend's implementation) and its CUDA launch
(kernel ``name`` in ``kernels/<module>.cu``, launched by the ``cuda`` and ``cuda-sim`` backends over
all elements, arrays first, then the output, then the scalars, then the element count).

An activation without a special CPU path (ReLU has one: the opt-in threads split it) is added here and
nowhere else in backends/: see docs/adding-an-op.md. Both faces compute in the arrays' dtype, with the
same operations in the same order, so float32 results agree to a few ulps.

Reference functions take equally shaped arrays of one float dtype and return a new array of it.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ElementwiseOp:
    name: str  # the contract op and its kernel
    module: str  # kernels/<module>.cu
    arrays: tuple[str, ...]  # equally shaped array parameters, in the kernel's order
    scalars: tuple[str, ...]  # real parameters, passed after the output
    reference: Callable[..., np.ndarray]
    doc: str

    def signature(self) -> inspect.Signature:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("self", kind)]
        params += [inspect.Parameter(a, kind, annotation="Array") for a in self.arrays]
        params += [inspect.Parameter(s, kind, annotation="float") for s in self.scalars]
        return inspect.Signature(params, return_annotation="Array")


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> np.ndarray:
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(dy: np.ndarray, x: np.ndarray, negative_slope: float) -> np.ndarray:
    return np.where(x > 0, dy, dy * dy.dtype.type(negative_slope))


def sigmoid_forward(x: np.ndarray) -> np.ndarray:
    # the two-sided form: exp() only ever sees -|x|, so it never overflows (as in the kernel)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * y * (1 - y)


def tanh_forward(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dy * (1 - y * y)


def silu_forward(x: np.ndarray) -> np.ndarray:
    return x * sigmoid_forward(x)


def silu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    # from the saved input: d(x s)/dx = s + x s (1 - s) = s (1 + x (1 - s)), in the kernel's order
    s = sigmoid_forward(x)
    return dy * (s * (1 + x * (1 - s)))


ELEMENTWISE_OPS: tuple[ElementwiseOp, ...] = (
    ElementwiseOp("leaky_relu_forward", "activations", ("x",), ("negative_slope",), leaky_relu_forward,
                  "x -> y = x where x > 0, else negative_slope * x"),
    ElementwiseOp("leaky_relu_backward", "activations", ("dy", "x"), ("negative_slope",), leaky_relu_backward,
                  "dy, x -> dx = dy where x > 0, else negative_slope * dy"),
    ElementwiseOp("sigmoid_forward", "activations", ("x",), (), sigmoid_forward,
                  "x -> y = 1 / (1 + exp(-x)), in the two-sided form that never overflows"),
    ElementwiseOp("sigmoid_backward", "activations", ("dy", "y"), (), sigmoid_backward,
                  "dy, y -> dx = dy * y * (1 - y), from the saved output"),
    ElementwiseOp("tanh_forward", "activations", ("x",), (), tanh_forward, "x -> y = tanh(x)"),
    ElementwiseOp("tanh_backward", "activations", ("dy", "y"), (), tanh_backward,
                  "dy, y -> dx = dy * (1 - y * y), from the saved output"),
    ElementwiseOp("silu_forward", "activations", ("x",), (), silu_forward, "x -> y = x * sigmoid(x) (SiLU, swish)"),
    ElementwiseOp("silu_backward", "activations", ("dy", "x"), (), silu_backward,
                  "dy, x -> dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x), from the saved input"),
)


def _method(op: ElementwiseOp, body: Callable[..., Any]) -> Callable[..., Any]:
    """``body`` as a method that presents ``op``'s signature, name and doc (the contract test reads them)."""

    def method(self: Any, *args: Any) -> Any:
        return body(self, *args)

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = op.doc
    method.__signature__ = op.signature()  # type: ignore[attr-defined]
    method.__annotations__ = {**{a: Any for a in op.arrays}, **{s: float for s in op.scalars}, "return": Any}
    return method


def declare_in_contract(contract: type) -> type:
    """Add each elementwise op to the contract class as an abstract method."""
    for op in ELEMENTWISE_OPS:
        setattr(contract, op.name, abc.abstractmethod(_method(op, lambda self, *args: None)))
    abc.update_abstractmethods(contract)
    return contract


def implemented_by(make: Callable[[ElementwiseOp], Callable[..., Any]]) -> Callable[[type], type]:
    """A class decorator giving a backend every elementwise op: ``make(op)(self, *arrays, *scalars)``."""

    def install(cls: type) -> type:
        for op in ELEMENTWISE_OPS:
            setattr(cls, op.name, _method(op, make(op)))
        abc.update_abstractmethods(cls)
        return cls

    return install
