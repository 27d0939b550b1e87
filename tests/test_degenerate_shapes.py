"""Every contract op on 0-d and empty arrays, on every backend against NumPy: outputs keep their
shapes (the CUDA launchers once made a 0-d array 1-d on its way to a kernel, so ReLU on a 0-d tensor
had a (1,) gradient), and no launch is out of CUDA's limits (cuda-sim refuses a zero-sized grid, or
one beyond a limit, as a GPU does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import gpucnn
from gpucnn import nn
from gpucnn.backends.elementwise import ELEMENTWISE_OPS

CONV = ((1, 1), (1, 0, 1, 0), (1, 1), 1)  # stride, padding, dilation, groups
POOL = ((2, 2), (2, 2))  # kernel, stride


def _f(*shape: int) -> np.ndarray:
    """A float32 array of ``shape`` (0-d for no arguments) with values away from ReLU's kink."""
    values = np.linspace(-1.3, 1.7, max(1, int(np.prod(shape))), dtype=np.float32)
    return values[:int(np.prod(shape))].reshape(shape) if shape else np.float32(0.7)


def _updated(update: Callable[[Any, Any], None], param: np.ndarray) -> Callable[[Any], Any]:
    """An in-place optimizer op as a function of the backend returning the parameter it updated."""
    def run(b):
        p = b.asarray(param.copy())
        update(b, p)
        return p
    return run


def _zeros(b, like: np.ndarray) -> Any:
    return b.asarray(np.zeros_like(like))


# name -> (the op's call on a backend, the output shapes it must have)
CASES: dict[str, tuple[Callable[[Any], Any], Any]] = {}
for shape in [(), (0,), (2, 0, 3)]:
    tag = "0d" if shape == () else "x".join(map(str, shape))
    x, dy = _f(*shape), _f(*shape)[::-1] if shape else np.float32(-0.4)
    CASES |= {
        f"relu_forward_{tag}": (lambda b, x=x: b.relu_forward(b.asarray(x)), shape),
        f"relu_backward_{tag}": (lambda b, x=x, dy=dy: b.relu_backward(b.asarray(dy), b.asarray(x)), shape),
        f"dropout_forward_{tag}": (lambda b, x=x: b.dropout_forward(b.asarray(x), 0.5, 3), (shape, shape)),
        f"dropout_backward_{tag}": (lambda b, dy=dy, shape=shape: b.dropout_backward(
            b.asarray(dy), b.asarray(np.ones(shape, np.uint8)), 0.5), shape),
        f"sgd_update_{tag}": (_updated(lambda b, p, x=x: b.sgd_update(p, b.asarray(x), _zeros(b, x), 0.1, 0.9, 1e-4,
                                                                         False), _f(*shape) + 1), shape),
        f"adam_update_{tag}": (_updated(lambda b, p, x=x: b.adam_update(p, b.asarray(x), _zeros(b, x), _zeros(b, x),
                                                                           1, 0.1, 0.9, 0.999, 1e-8, 0.0, False),
                                        _f(*shape) + 1), shape),
        f"sgd_update_many_{tag}": (_updated(lambda b, p, x=x: b.sgd_update_many(
            [p, b.asarray(_f(3))], [b.asarray(x), b.asarray(_f(3))], None, 0.1, 0.0, 0.0, False),
            _f(*shape) + 1), shape),
        f"adam_update_many_{tag}": (_updated(lambda b, p, x=x: b.adam_update_many(
            [p], [b.asarray(x)], [_zeros(b, x)], [_zeros(b, x)], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, True),
            _f(*shape) + 1), shape),
    }
    for op in ELEMENTWISE_OPS:  # every row of backends/elementwise.py: x then dy for its arrays, scalars 0.5
        arrays = (x, dy, x)[:len(op.arrays)]
        CASES[f"{op.name}_{tag}"] = (lambda b, op=op, arrays=arrays: getattr(b, op.name)(
            *[b.asarray(a) for a in arrays], *[0.5] * len(op.scalars)), shape)

CASES |= {
    # an empty batch through convolution, pooling, Linear and the loss
    "conv2d_forward_n0": (lambda b: b.conv2d_forward(b.asarray(_f(0, 3, 5, 5)), b.asarray(_f(4, 3, 3, 3)),
                                                     b.asarray(_f(4)), *CONV), (0, 4, 4, 4)),
    "conv2d_backward_n0": (lambda b: b.conv2d_backward(b.asarray(_f(0, 4, 4, 4)), b.asarray(_f(0, 3, 5, 5)),
                                                       b.asarray(_f(4, 3, 3, 3)), *CONV),
                           ((0, 3, 5, 5), (4, 3, 3, 3), (4,))),
    "conv2d_relu_maxpool2d_n0": (lambda b: b.conv2d_relu_maxpool2d_forward(
        b.asarray(_f(0, 3, 5, 5)), b.asarray(_f(4, 3, 3, 3)), None, *CONV, *POOL, (0, 0), False)[0], (0, 4, 2, 2)),
    "maxpool2d_forward_n0": (lambda b: b.maxpool2d_forward(b.asarray(_f(0, 2, 4, 4)), *POOL, (0, 0), False),
                             ((0, 2, 2, 2), (0, 2, 2, 2))),
    "maxpool2d_backward_n0": (lambda b: b.maxpool2d_backward(
        b.asarray(_f(0, 2, 2, 2)), b.asarray(np.zeros((0, 2, 2, 2), np.int32)), (0, 2, 4, 4), *POOL, (0, 0)),
        (0, 2, 4, 4)),
    "maxpool2d_forward_c0": (lambda b: b.maxpool2d_forward(b.asarray(_f(2, 0, 4, 4)), *POOL, (0, 0), True),
                             ((2, 0, 2, 2), (2, 0, 2, 2))),
    "avgpool2d_forward_n0": (lambda b: b.avgpool2d_forward(b.asarray(_f(0, 2, 4, 4)), *POOL, (0, 0), False, True),
                             (0, 2, 2, 2)),
    "avgpool2d_backward_n0": (lambda b: b.avgpool2d_backward(b.asarray(_f(0, 2, 2, 2)), (0, 2, 4, 4), *POOL, (0, 0),
                                                             False, False), (0, 2, 4, 4)),
    "lppool2d_forward_n0": (lambda b: b.lppool2d_forward(b.asarray(_f(0, 2, 4, 4)), 2.0, *POOL, False),
                            (0, 2, 2, 2)),
    "lppool2d_backward_n0": (lambda b: b.lppool2d_backward(b.asarray(_f(0, 2, 2, 2)), b.asarray(_f(0, 2, 4, 4)),
                                                           b.asarray(_f(0, 2, 2, 2)), 2.0, *POOL, False),
                             (0, 2, 4, 4)),
    "linear_forward_m0": (lambda b: b.linear_forward(b.asarray(_f(0, 5)), b.asarray(_f(3, 5)), b.asarray(_f(3)),
                                                     relu=True), (0, 3)),
    "linear_backward_m0": (lambda b: b.linear_backward(b.asarray(_f(0, 3)), b.asarray(_f(0, 5)), b.asarray(_f(3, 5))),
                           ((0, 5), (3, 5), (3,))),
    "softmax_cross_entropy_n0": (lambda b: b.softmax_cross_entropy(b.asarray(_f(0, 10)),
                                                                   b.asarray(np.zeros(0, np.int64)), 0.1),
                                 ((), (0, 10))),
    "softmax_cross_entropy_accumulate_n0": (lambda b: (lambda total: (b.softmax_cross_entropy_accumulate(
        b.asarray(_f(0, 10)), b.asarray(np.zeros(0, np.int32)), total), total))(
            b.asarray(np.full(1, 2.5))), ((0, 10), (1,))),
    "gather_batch_count0": (lambda b: b.gather_batch(
        b.asarray(_f(4, 1, 3, 3)), b.asarray(np.arange(4, dtype=np.int32)), b.asarray(np.arange(4, dtype=np.int32)),
        None, b.asarray(np.zeros(1, np.int64)), 0, 0, 0, b.asarray(np.float32(0))), ((0, 1, 3, 3), (0,))),
    "sgd_update_many_no_params": (lambda b: b.sgd_update_many([], [], None, 0.1, 0.9, 0.0, False), None),
    "adam_update_many_no_params": (lambda b: b.adam_update_many([], [], [], [], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False),
                                   None),
}


def _host(b, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(_host(b, v) for v in value)
    return b.to_numpy(value)


def _shapes(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(_shapes(v) for v in value)
    return value.shape


def _flat(value: Any) -> list[np.ndarray]:
    if value is None:
        return []
    return [a for v in value for a in _flat(v)] if isinstance(value, tuple) else [value]


@pytest.mark.parametrize("name", sorted(CASES))
def test_degenerate_shapes_keep_their_shape_and_match_numpy(backend, name):
    call, expected_shapes = CASES[name]
    got = _host(backend, call(backend))
    assert _shapes(got) == expected_shapes, f"{name} on {backend.name}: shapes {_shapes(got)}, " \
                                            f"expected {expected_shapes}"
    reference = _host(gpucnn.get_backend("numpy"), call(gpucnn.get_backend("numpy")))
    for ours, theirs in zip(_flat(got), _flat(reference)):
        assert ours.dtype == theirs.dtype, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


def test_an_empty_batch_has_zero_weight_gradients_and_a_nan_loss(backend):
    _, dw, db = _host(backend, CASES["conv2d_backward_n0"][0](backend))
    assert not dw.any() and not db.any()
    loss, _ = _host(backend, CASES["softmax_cross_entropy_n0"][0](backend))
    assert np.isnan(loss)  # the mean over no rows, as torch.nn.functional.cross_entropy gives


@pytest.mark.parametrize("layer", [nn.ReLU, nn.Sigmoid, nn.Tanh, lambda: nn.LeakyReLU(0.2), nn.SiLU, nn.ReLU6,
                                   nn.Hardswish, nn.Hardsigmoid, nn.GELU, lambda: nn.GELU("tanh"), nn.ELU, nn.Mish,
                                   nn.Softplus],
                         ids=["ReLU", "Sigmoid", "Tanh", "LeakyReLU", "SiLU", "ReLU6", "Hardswish", "Hardsigmoid",
                              "GELU", "GELU-tanh", "ELU", "Mish", "Softplus"])
def test_activations_on_a_0d_tensor(backend, layer):
    # the reproduction: a (1,) gradient for a () input on cuda-sim
    gpucnn.set_backend(backend.name)
    x = gpucnn.tensor(np.float32(0.7), requires_grad=True)
    y = layer()(x)
    y.backward()
    assert y.shape == () and x.grad.shape == ()
    reference = {"ReLU": 1.0, "Tanh": 1 - np.tanh(0.7) ** 2, "Sigmoid": (s := 1 / (1 + np.exp(-0.7))) * (1 - s)}
    name = type(layer()).__name__
    if name in reference:
        np.testing.assert_allclose(x.grad.numpy(), reference[name], rtol=1e-6)


def test_cuda_sim_refuses_launches_outside_cudas_limits():
    from conftest import _sim_reason

    if _sim_reason() is not None:
        pytest.skip(_sim_reason())
    sim = gpucnn.get_backend("cuda-sim")
    y = sim.device.empty((4,), np.float32)
    x = sim.asarray(np.ones(4, np.float32))
    args = [x, y, np.int32(4)]
    for grid, block in [((0,), (256,)), ((1, 65536), (256,)), ((1, 1, 70000), (32,)), ((1,), (0,)),
                        ((1,), (2048,)), ((1,), (1, 1, 128))]:
        with pytest.raises(RuntimeError, match="invalid launch configuration"):
            sim.device.launch("activations", "relu_forward", grid, block, args, np.dtype(np.float32), False)
