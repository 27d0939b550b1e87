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


_SQRT1_2 = 0.70710678118654752440  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.39894228040143267794  # 1 / sqrt(2 pi)
_SQRT_2_PI = 0.79788456080286535588  # sqrt(2 / pi)
_GELU_KAPPA = 0.044715


# W. J. Cody's rational Chebyshev approximations to erf and erfc (Math. Comp. 23, 1969; the ranges and
# the exp(-x^2) splitting of his CALERF): |x| < 0.5 erf directly, 0.5 <= |x| <= 4 and |x| > 4
# erfc (erf = 1 - erfc), all in float64, vectorised.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
          1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# the numerator minus the denominator, coefficient by coefficient (a4 - 1, a0 - b0, .., a3 - b3), from
# the decimal values above, exactly, then rounded
_ERF_AB = (-0.8142222938153968, -20.440167208473554, -130.16048378339403, -905.1312883920702, 365.14075569929884)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
          8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
          2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
          3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
          6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
          2.33520497626869185e-3)
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1


def _erf64(x: np.ndarray) -> np.ndarray:
    """erf of a float64 array, to a few ulp."""
    y = np.abs(x)
    out = np.empty_like(x)
    small = y < 0.5
    if small.any():
        ys = y[small]
        ysq = ys * ys
        # erf = x * num / den = x + x * (num - den) / den: the rounding of the ratio (about 1.1) would
        # cost up to 3 ulp where erf is just under 0.5, that of (num - den) / den (about 0.1) costs little
        num, den = _ERF_AB[0] * ysq, ysq
        for i in range(3):
            num, den = (num + _ERF_AB[i + 1]) * ysq, (den + _ERF_B[i]) * ysq
        xs = x[small]
        out[small] = xs + xs * ((num + _ERF_AB[4]) / (den + _ERF_B[3]))
    mid = ~small & (y <= 4.0)
    big = y > 4.0
    for mask in (mid, big):
        if not mask.any():
            continue
        ys = y[mask]
        if mask is mid:
            num, den = _ERF_C[8] * ys, ys
            for i in range(7):
                num, den = (num + _ERF_C[i]) * ys, (den + _ERF_D[i]) * ys
            erfc = (num + _ERF_C[7]) / (den + _ERF_D[7])
        else:
            with np.errstate(over="ignore", under="ignore"):
                z = 1.0 / (ys * ys)
            num, den = _ERF_P[5] * z, z
            for i in range(4):
                num, den = (num + _ERF_P[i]) * z, (den + _ERF_Q[i]) * z
            erfc = (_ONE_OVER_SQRT_PI - z * (num + _ERF_P[4]) / (den + _ERF_Q[4])) / ys
        # exp(-y^2) with y^2 = t^2 + (y - t)(y + t), t = y rounded down to 1/16 (t^2 exact), in one exp
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            t = np.trunc(ys * 16.0) / 16.0
            erfc = np.exp(-t * t - (ys - t) * (ys + t)) * erfc
            erfc = np.where(ys < 27.0, erfc, 0.0)  # erfc underflows to 0 there (huge y: inf - inf); nan below
        out[mask] = np.copysign((0.5 - erfc) + 0.5, x[mask])
    nan = np.isnan(x)
    if nan.any():
        out[nan] = x[nan]
    return out


def erf(x: np.ndarray) -> np.ndarray:
    """The error function elementwise, in x's dtype (NumPy has none): Cody's approximations evaluated in
    float64 (within 2 ulp of math.erf, tests/test_erf.py), then cast to x's dtype."""
    x = np.asarray(x)
    return _erf64(x.astype(np.float64)).astype(x.dtype, copy=False)


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
