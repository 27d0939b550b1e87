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
import math
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



def relu6_forward(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0), 6)


def relu6_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    # from the saved output: 0 < y < 6 exactly where 0 < x < 6 (a 0/1 mask multiplied, as the kernel does)
    return dy * ((y > 0) & (y < 6))


def hardsigmoid_forward(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x + 3, 0), 6) / 6


def hardsigmoid_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.where((x > -3) & (x < 3), dy / 6, dy.dtype.type(0))


def hardswish_forward(x: np.ndarray) -> np.ndarray:
    # x * (relu6(x + 3) / 6): dividing first, huge x does not overflow (as in the kernel)
    return x * hardsigmoid_forward(x)


def hardswish_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.where(x < -3, dy.dtype.type(0), np.where(x <= 3, dy * (x / 3 + x.dtype.type(0.5)), dy))


_ERF = np.frompyfunc(math.erf, 1, 1)
_SQRT1_2 = 0.70710678118654752440  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.39894228040143267794  # 1 / sqrt(2 pi)
_SQRT_2_PI = 0.79788456080286535588  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


def erf(x: np.ndarray) -> np.ndarray:
    """The error function elementwise, in x's dtype: math.erf (libm's, correctly rounded to float64 or
    nearly) on each element; NumPy has none. A Python call per element: the slow part of GELU here."""
    return np.asarray(_ERF(x), dtype=x.dtype)


def gelu_forward(x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    return x * t(0.5) * (1 + erf(x * t(_SQRT1_2)))


def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    cdf = t(0.5) * (1 + erf(x * t(_SQRT1_2)))
    with np.errstate(over="ignore"):  # -x^2 / 2 overflows to -inf for huge x, and exp gives the right 0
        pdf = np.exp(t(-0.5) * x * x) * t(_INV_SQRT_2PI)
    return dy * (cdf + x * pdf)


def gelu_tanh_forward(x: np.ndarray) -> np.ndarray:
    # x * sigmoid(2u) = 0.5 x (1 + tanh(u)) without 1 + tanh's cancellation, as in the kernel
    t = x.dtype.type
    with np.errstate(over="ignore"):  # x^3 overflows for huge x: the sigmoid of +-inf (1 or 0) is right
        u = t(_SQRT_2_PI) * (x + t(_GELU_KAPPA) * (x * x * x))
        return x * sigmoid_forward(t(2) * u)


def gelu_tanh_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    # x^2, x^3 overflow for huge x; there the sigmoid has saturated, and the 0 * inf of the second term is
    # replaced by 0, as the kernel's branch does
    with np.errstate(over="ignore", invalid="ignore"):
        x2 = x * x
        s = sigmoid_forward(t(2) * (t(_SQRT_2_PI) * (x + t(_GELU_KAPPA) * (x2 * x))))
        slope = s * (1 - s)
        du = t(_SQRT_2_PI) * (1 + t(3) * t(_GELU_KAPPA) * x2)
        right = np.where(slope == 0, t(0), t(2) * x * slope * du)
    return dy * (s + right)


def elu_forward(x: np.ndarray, alpha: float) -> np.ndarray:
    # expm1 only of the negative side (np.where evaluates both), so nothing overflows
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


def elu_backward(dy: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, dy, dy * (x.dtype.type(alpha) * np.exp(np.minimum(x, 0))))


def _tanh_softplus(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    # tanh(log(1 + exp(x))) from e = exp(-|x|), in the kernel's two branches
    p = 1 + 2 * e
    q = e * (e + 2)
    return np.where(x >= 0, p / (p + 2 * e * e), q / (q + 2))


def mish_forward(x: np.ndarray) -> np.ndarray:
    return x * _tanh_softplus(x, np.exp(-np.abs(x)))


def mish_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    t = _tanh_softplus(x, e)
    s = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return dy * (t + x * ((1 - t * t) * s))


def softplus_forward(x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    with np.errstate(over="ignore"):  # beta x may overflow to +-inf: the threshold or exp(-inf) = 0 handle it
        b = x * x.dtype.type(beta)
    soft = (np.log1p(np.exp(-np.abs(b))) + np.maximum(b, 0)) / x.dtype.type(beta)
    return np.where(b > x.dtype.type(threshold), x, soft)


def softplus_backward(dy: np.ndarray, x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        b = x * x.dtype.type(beta)
    return np.where(b > x.dtype.type(threshold), dy, dy * sigmoid_forward(b))

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
    ElementwiseOp("relu6_forward", "activations", ("x",), (), relu6_forward, "x -> y = min(max(x, 0), 6)"),
    ElementwiseOp("relu6_backward", "activations", ("dy", "y"), (), relu6_backward,
                  "dy, y -> dx = dy where 0 < y < 6, else 0, from the saved output"),
    ElementwiseOp("hardsigmoid_forward", "activations", ("x",), (), hardsigmoid_forward,
                  "x -> y = relu6(x + 3) / 6"),
    ElementwiseOp("hardsigmoid_backward", "activations", ("dy", "x"), (), hardsigmoid_backward,
                  "dy, x -> dx = dy / 6 where -3 < x < 3, else 0, from the saved input"),
    ElementwiseOp("hardswish_forward", "activations", ("x",), (), hardswish_forward,
                  "x -> y = x * (relu6(x + 3) / 6)"),
    ElementwiseOp("hardswish_backward", "activations", ("dy", "x"), (), hardswish_backward,
                  "dy, x -> dx = 0 below -3, dy * (x / 3 + 1/2) up to 3, dy above, from the saved input"),
    ElementwiseOp("gelu_forward", "activations", ("x",), (), gelu_forward,
                  "x -> y = x * 0.5 * (1 + erf(x / sqrt(2))) (GELU, exact)"),
    ElementwiseOp("gelu_backward", "activations", ("dy", "x"), (), gelu_backward,
                  "dy, x -> dx = dy * (Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)), from the saved input"),
    ElementwiseOp("gelu_tanh_forward", "activations", ("x",), (), gelu_tanh_forward,
                  "x -> y = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2 / pi) (x + 0.044715 x^3)"),
    ElementwiseOp("gelu_tanh_backward", "activations", ("dy", "x"), (), gelu_tanh_backward,
                  "dy, x -> dx = dy * (s + 2 x s (1 - s) u'(x)), s = sigmoid(2u), from the saved input"),
    ElementwiseOp("elu_forward", "activations", ("x",), ("alpha",), elu_forward,
                  "x -> y = x where x > 0, else alpha * expm1(x)"),
    ElementwiseOp("elu_backward", "activations", ("dy", "x"), ("alpha",), elu_backward,
                  "dy, x -> dx = dy where x > 0, else dy * alpha * exp(x), from the saved input"),
    ElementwiseOp("mish_forward", "activations", ("x",), (), mish_forward, "x -> y = x * tanh(softplus(x))"),
    ElementwiseOp("mish_backward", "activations", ("dy", "x"), (), mish_backward,
                  "dy, x -> dx = dy * (t + x * (1 - t^2) * sigmoid(x)), t = tanh(softplus(x)), from the saved input"),
    ElementwiseOp("softplus_forward", "activations", ("x",), ("beta", "threshold"), softplus_forward,
                  "x -> y = log(1 + exp(beta * x)) / beta, or x where beta * x > threshold"),
    ElementwiseOp("softplus_backward", "activations", ("dy", "x"), ("beta", "threshold"), softplus_backward,
                  "dy, x -> dx = dy * sigmoid(beta * x), or dy where beta * x > threshold, from the saved input"),
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
