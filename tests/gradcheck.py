"""``check_gradients``: autograd's gradients against float64 central finite differences.

One call checks a function (a layer, a functional op, a Tensor expression) on one backend: the
gradient of a random projection ``L = sum(fn(*inputs) * r)`` with respect to every input and every
parameter, as ``backward`` computes it, against ``(L(v + eps) - L(v - eps)) / 2eps`` element by
element (all elements of small tensors, a random sample of larger ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import gpucnn
from gpucnn import Tensor

EPS = 1e-6


def check_gradients(fn: Callable[..., Tensor], inputs: Sequence[np.ndarray], backend: Any,
                    params: Sequence[gpucnn.Parameter] | None = None, reset: Callable[[], None] | None = None,
                    samples: int = 16, rtol: float = 1e-5, atol: float = 1e-7, seed: int = 0) -> Tensor:
    """Check d sum(fn(*inputs) * r) / d(each input and parameter) against finite differences.

    ``inputs`` are float64 host arrays; each becomes a leaf Tensor on ``backend`` that requires grad.
    ``params`` defaults to ``fn.parameters()`` when ``fn`` is a Module. ``reset`` runs before every
    evaluation (to replay a random mask). Returns the recorded output.
    """
    backend = gpucnn.get_backend(backend)
    rng = np.random.default_rng(seed)
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    if params is None:
        params = list(fn.parameters()) if isinstance(fn, gpucnn.Module) else []
    for p in params:
        assert p.dtype == np.float64, f"parameter {p.shape} is {p.dtype}: finite differences need float64"
        p.grad = None

    leaves = [Tensor(backend.asarray(a), requires_grad=True, backend=backend) for a in inputs]
    if reset:
        reset()
    y = fn(*leaves)
    assert isinstance(y, Tensor) and y.requires_grad, "fn recorded no graph"
    assert y.dtype == np.float64 and y.backend is backend, f"output is {y.dtype} on {y.backend.name}"
    r = rng.standard_normal(y.shape)
    y.backward(backend.asarray(r))

    def projected(values: Sequence[np.ndarray]) -> float:
        return float((_replay(fn, values, backend, reset) * r).sum())

    # the forward without a graph (used below) computes exactly what the recorded one did
    assert np.array_equal(y.numpy(), _replay(fn, inputs, backend, reset), equal_nan=True), \
        "fn gives another output under no_grad()"

    failures: list[str] = []
    for k, (leaf, host) in enumerate(zip(leaves, inputs)):
        analytic = _grad_of(leaf, f"input {k}")

        def at(i: tuple, delta: float, k: int = k) -> float:
            moved = [v.copy() for v in inputs]
            moved[k][i] += delta
            return projected(moved)

        failures += _compare(analytic, at, host.shape, rng, samples, rtol, atol, f"input {k}")
    for j, p in enumerate(params):
        analytic = _grad_of(p, f"parameter {j} {p.shape}")
        host = p.numpy().copy()

        def at(i: tuple, delta: float, p: gpucnn.Parameter = p, host: np.ndarray = host) -> float:
            moved = host.copy()
            moved[i] += delta
            p.data = backend.asarray(moved)
            try:
                return projected(inputs)
            finally:
                p.data = backend.asarray(host)

        failures += _compare(analytic, at, host.shape, rng, samples, rtol, atol, f"parameter {j} {p.shape}")
    assert not failures, "gradient differs from finite differences:\n" + "\n".join(failures[:20])
    return y


def _replay(fn: Callable[..., Tensor], inputs: Sequence[np.ndarray], backend: Any,
            reset: Callable[[], None] | None) -> np.ndarray:
    if reset:
        reset()
    with gpucnn.no_grad():
        return fn(*[Tensor(backend.asarray(v), backend=backend) for v in inputs]).numpy()


def _grad_of(t: Tensor, label: str) -> np.ndarray:
    assert t.grad is not None, f"{label}: backward left no gradient"
    assert isinstance(t.grad, Tensor) and t.grad.backend is t.backend, f"{label}: gradient on the wrong backend"
    grad = t.grad.numpy()
    assert grad.shape == t.shape and grad.dtype == t.dtype, f"{label}: gradient {grad.dtype}{grad.shape}"
    return grad


def _compare(analytic: np.ndarray, at: Callable[[tuple, float], float], shape: tuple, rng: np.random.Generator,
             samples: int, rtol: float, atol: float, label: str) -> list[str]:
    size = int(np.prod(shape))
    chosen = range(size) if size <= samples else rng.choice(size, samples, replace=False)
    failures = []
    for flat in chosen:
        i = np.unravel_index(flat, shape)
        numeric = (at(i, EPS) - at(i, -EPS)) / (2 * EPS)
        if not abs(analytic[i] - numeric) <= atol + rtol * abs(numeric):
            failures.append(f"  {label} at {tuple(int(n) for n in i)}: autograd {analytic[i]!r}, "
                            f"finite differences {numeric!r}")
    return failures
