"""The autograd engine and every differentiable op: finite-difference checks (float64) of each
functional op and Tensor operator on every backend, graphs that branch and join, repeated
forwards and backwards, no_grad, custom Functions, dtype rules, and the fused Sequential paths
(bit for bit the layers run one by one)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from gradcheck import check_gradients
from support import make_input

import gpucnn
import gpucnn.functional as F
from gpucnn.functions.conv2d import Conv2d as Conv2dFunction

F64 = np.float64


def case(fn, *shapes, kind="normal"):
    """fn(*tensors) with inputs of ``shapes``; ``kind`` (a str, or one per input) as make_input."""
    kinds = (kind,) * len(shapes) if isinstance(kind, str) else kind
    return fn, shapes, kinds


def check_op(backend, fn, shapes, kinds, **options):
    rng = np.random.default_rng(0)
    return check_gradients(fn, [make_input(rng, s, k) for s, k in zip(shapes, kinds)], backend, **options)


def const(like: gpucnn.Tensor, values) -> gpucnn.Tensor:
    """A constant (no gradient) on the backend of ``like``."""
    return gpucnn.tensor(np.asarray(values), backend=like.backend)


MASK = np.array([[True, False, True], [False, True, True]])

TENSOR_OPS = {
    "add_broadcast": case(lambda a, b: a + b, (2, 3, 4), (3, 1)),
    "add_scalar_right": case(lambda a: a + 2.5, (3, 4)),
    "add_scalar_left": case(lambda a: 2 + a, (3, 4)),
    "add_same_tensor": case(lambda a: a + a, (3, 4)),
    "add_host_array_left": case(lambda a: np.full((2, 1), 0.5) + a, (2, 3)),
    "sub_broadcast": case(lambda a, b: a - b, (3, 1), (2, 1, 4)),
    "sub_scalar_right": case(lambda a: a - 3, (3, 4)),
    "sub_scalar_left": case(lambda a: 1.5 - a, (3, 4)),
    "mul_broadcast": case(lambda a, b: a * b, (4, 1, 3), (2, 1)),
    "mul_scalar_right": case(lambda a: a * -0.5, (3, 4)),
    "mul_scalar_left": case(lambda a: 3 * a, (3, 4)),
    "mul_same_tensor": case(lambda a: a * a, (3, 4)),
    "div_broadcast": case(lambda a, b: a / b, (2, 3), (3,), kind=("normal", "positive")),
    "div_scalar_right": case(lambda a: a / 4, (3, 4)),
    "div_scalar_left": case(lambda a: 2 / a, (3, 4), kind="positive"),
    "matmul": case(lambda a, b: a @ b, (3, 4), (4, 2)),
    "matmul_batched_broadcast": case(lambda a, b: a @ b, (2, 1, 3, 4), (3, 4, 5)),
    "matmul_vector_matrix": case(lambda a, b: a @ b, (4,), (4, 3)),
    "matmul_matrix_vector": case(lambda a, b: a @ b, (3, 4), (4,)),
    "matmul_vector_vector": case(lambda a, b: a @ b, (4,), (4,)),
    "matmul_batched_vector": case(lambda a, b: a @ b, (2, 3, 4), (4,)),
    "matmul_vector_batched": case(lambda a, b: a @ b, (4,), (2, 4, 3)),
    "matmul_host_array_left": case(lambda a: np.arange(6.0).reshape(2, 3) @ a, (3, 4)),
    "neg": case(lambda a: -a, (3, 4)),
    "pow_2": case(lambda a: a ** 2, (3, 4)),
    "pow_3": case(lambda a: a ** 3, (3, 4)),
    "pow_half": case(lambda a: a ** 0.5, (3, 4), kind="positive"),
    "pow_negative": case(lambda a: a ** -1.5, (3, 4), kind="positive"),
    "sum": case(lambda a: a.sum(), (2, 3, 4)),
    "sum_dim": case(lambda a: a.sum(dim=1), (2, 3, 4)),
    "sum_negative_dim": case(lambda a: a.sum(-1), (2, 3, 4)),
    "sum_dims_keepdim": case(lambda a: a.sum(dim=(0, 2), keepdim=True), (2, 3, 4)),
    "mean": case(lambda a: a.mean(), (2, 3, 4)),
    "mean_dim_keepdim": case(lambda a: a.mean(dim=1, keepdim=True), (2, 3, 4)),
    "mean_dims": case(lambda a: a.mean(dim=(0, -1)), (2, 3, 4)),
    "reshape": case(lambda a: a.reshape(4, -1), (2, 3, 4)),
    "reshape_tuple": case(lambda a: a.reshape((3, 8)), (2, 3, 4)),
    "view": case(lambda a: a.view(-1), (2, 3, 4)),
    "flatten": case(lambda a: a.flatten(), (2, 3, 4)),
    "flatten_start": case(lambda a: a.flatten(1), (2, 3, 2, 2)),
    "flatten_middle": case(lambda a: a.flatten(1, 2), (2, 3, 2, 2)),
    "exp": case(lambda a: a.exp(), (3, 4)),
    "log": case(lambda a: a.log(), (3, 4), kind="positive"),
    "index_int": case(lambda a: a[1], (3, 4)),
    "index_negative": case(lambda a: a[-1, -2:], (3, 4)),
    "index_slices": case(lambda a: a[:, 1:3], (3, 4)),
    "index_steps": case(lambda a: a[::-1, ::2], (3, 5)),
    "index_ellipsis_none": case(lambda a: a[..., None, 0], (2, 3, 4)),
    "index_repeated": case(lambda a: a[[0, 2, 0, 0]], (3, 4)),
    "index_repeated_pairs": case(lambda a: a[[0, 1, 0], [2, 2, 2]], (3, 4)),
    "index_repeated_tensor": case(lambda a: a[const(a, [1, 1, 0])], (3, 2)),
    "index_mask": case(lambda a: a[const(a, MASK)], (2, 3)),
    "cat": case(lambda a, b: gpucnn.cat([a, b]), (2, 3), (1, 3)),
    "cat_negative_dim_repeated": case(lambda a, b: gpucnn.cat([a, b, a * 2], dim=-1), (2, 3), (2, 1)),
    "permute": case(lambda a: a.permute(2, 0, 1), (2, 3, 4)),
    "permute_negative_tuple": case(lambda a: a.permute((-1, 0, -2)), (2, 3, 4)),
    "transpose": case(lambda a: a.transpose(0, -1), (2, 3, 4)),
    "T": case(lambda a: a.T @ a, (3, 2)),
    "mT": case(lambda a: a.mT, (2, 3, 4)),
    "view_reshape_as": case(lambda a, b: a.view(3, 4).reshape_as(b) * b, (2, 6), (4, 3)),
    "split_uneven": case(lambda a: gpucnn.cat([p * (i + 1) for i, p in enumerate(a.split(2, dim=1))], 1), (2, 5)),
    "split_sections_negative_dim": case(lambda a: a.split([1, 3], -1)[1] * 2 + a.split([3, 1], -1)[0], (2, 4)),
    "chunk_uneven": case(lambda a: a.chunk(3)[2] - a.chunk(3)[0][:1], (5, 3)),
    "expand": case(lambda a: a.expand(2, -1, 4) * 1.5, (3, 1)),
    "expand_as": case(lambda a, b: a.expand_as(b) * b, (1, 3), (2, 3)),
    "clamp": case(lambda a: a.clamp(-0.5, 0.7), (3, 4)),
    "clamp_min_clip_max": case(lambda a: a.clamp(min=0.1) + a.clip(max=-0.2), (3, 4)),
    "sqrt": case(lambda a: a.sqrt(), (3, 4), kind="positive"),
    "max": case(lambda a: a.max(), (3, 4)),
    "max_dim": case(lambda a: a.max(1).values, (2, 3, 4)),
    "max_negative_dim_keepdim": case(lambda a: a.max(-1, keepdim=True)[0] * a, (2, 3, 4)),
    "min": case(lambda a: a.min(), (3, 4)),
    "min_dim_keepdim": case(lambda a: a.min(dim=0, keepdim=True).values, (3, 4)),
    "where": case(lambda a, b: gpucnn.where(a > 0, a, b), (3, 4), (4,)),
    "where_scalar": case(lambda a: gpucnn.where(const(a, MASK), 0.5, a * a), (2, 3)),
    "where_leaky_relu": case(lambda a: gpucnn.where(a > 0, a, 0.1 * a), (3, 4)),
    "where_scalar_left_comparison": case(lambda a: gpucnn.where(0.2 >= a, a * a, -a), (3, 4)),
    "where_tensor_comparisons": case(lambda a, b: gpucnn.where((a <= b) == (a < 0.5), a, b) * (a != b), (2, 3), (3,)),
    "stack": case(lambda a, b: gpucnn.stack([a, b, a * b]), (2, 3), (2, 3)),
    "stack_negative_dim": case(lambda a: gpucnn.stack([a, -a], dim=-1), (2, 3)),
    "flatten_function": case(lambda a: gpucnn.flatten(a, 1, 2), (2, 3, 2, 2)),
    "composite": case(lambda a, b: ((a * b - a / (b * b + 1)).exp().sum(1, keepdim=True) + 1).log() @ b[:1],
                      (2, 3), (1, 3)),
}


@pytest.mark.parametrize("name", list(TENSOR_OPS))
def test_tensor_operator_gradient(backend, name):
    check_op(backend, *TENSOR_OPS[name])


def test_comparisons_are_recorded_bool_tensors_without_a_gradient(backend):
    """Each comparison is a Function in the graph (so that an export writes it), with the values and bool
    dtype of the NumPy comparison, scalars on either side, and no gradient."""
    rng = np.random.default_rng(0)
    x_np, y_np = rng.standard_normal((2, 3)), rng.standard_normal(3)
    x = gpucnn.tensor(x_np, requires_grad=True, backend=backend.name)
    y = gpucnn.tensor(y_np, requires_grad=True, backend=backend.name)
    cases = {
        "Greater": (x > 0, x_np > 0), "Less": (x < y, x_np < y_np), "Equal": (x == x[0], x_np == x_np[0]),
        "NotEqual": (x != 0.5, x_np != 0.5), "GreaterEqual": (x >= y, x_np >= y_np),
        "LessEqual": (x <= y, x_np <= y_np),
        "LessEqual, a scalar on the left": (1 >= x, 1 >= x_np), "Greater, a scalar on the left": (0 < x, 0 < x_np),
    }
    for name, (got, want) in cases.items():
        assert got.dtype == np.bool_ and not got.requires_grad and got.grad_fn is not None, name
        assert got.grad_fn.function.__name__ == name.split(",")[0]
        np.testing.assert_array_equal(got.numpy(), want)
    mask = x > 0
    both = mask == (x < y)  # comparing recorded masks is recorded too (an export writes it), still no gradient
    assert both.grad_fn is not None and not both.requires_grad and not mask.requires_grad
    np.testing.assert_array_equal(both.numpy(), (x_np > 0) == (x_np < y_np))
    gpucnn.where(x > y, x, 0.0).sum().backward()  # the mask passes no gradient, the selected x does
    np.testing.assert_array_equal(x.grad.numpy(), (x_np > y_np).astype(np.float64))
    assert y.grad is None
    ints = gpucnn.tensor(np.array([0, 1, 2]), backend=backend.name)
    assert (ints == 1.5).numpy().tolist() == [False] * 3  # not 1.5 cast to the int dtype
    assert (ints < 1.5).numpy().tolist() == [True, True, False]
    assert (gpucnn.tensor(np.array([True, False]), backend=backend.name) == 2).numpy().tolist() == [False, False]


# ---------------------------------------------------------------------------- graphs
def _graph_functions(t: gpucnn.Tensor) -> set[str]:
    """The names of the Functions recorded in ``t``'s graph."""
    names, stack, seen = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.function.__name__)
        stack.extend(node.parents())
    return names


class TwoHeads(gpucnn.Module):
    """A DAG: one conv used twice (its gradients accumulate), a residual add, a cat, and two heads
    whose losses are summed."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = gpucnn.Conv2d(2, 2, 3, padding=1, dtype=F64)
        self.head_a = gpucnn.Linear(4 * 16, 3, dtype=F64)
        self.head_b = gpucnn.Linear(2, 2, dtype=F64)
        self.act = gpucnn.Tanh()

    def forward(self, x):
        h = self.act(self.shared(x))
        h = self.shared(h) + x
        a = self.head_a(gpucnn.cat([h, x], dim=1).flatten(1))
        b = self.head_b(h.mean(dim=(2, 3)))
        return F.cross_entropy(a, np.array([0, 2])) + F.mse_loss(b, np.array([[0.5, -1.0], [1.0, 0.0]]))


def test_dag_gradients(backend):
    with gpucnn.use_backend(backend.name):
        model = TwoHeads()
    loss = check_gradients(model, [np.random.default_rng(1).standard_normal((2, 2, 4, 4))], backend, samples=12)
    assert loss.shape == ()
    assert {"Add", "Cat", "SoftmaxCrossEntropy", "Linear"} <= _graph_functions(loss)


def test_layer_instance_used_twice_in_sequential(backend):
    """One Tanh (and one Linear) object at two places in a Sequential: each call keeps its own state."""
    with gpucnn.use_backend(backend.name):
        linear, tanh = gpucnn.Linear(3, 3, dtype=F64), gpucnn.Tanh()
        model = gpucnn.Sequential(linear, tanh, linear, tanh)
    check_gradients(model, [np.random.default_rng(2).standard_normal((4, 3))], backend)


def _conv_net(backend):
    with gpucnn.use_backend(backend.name):
        gpucnn.manual_seed(3)
        return gpucnn.Sequential(gpucnn.Conv2d(2, 3, 3, padding=1, dtype=F64), gpucnn.ReLU(), gpucnn.MaxPool2d(2),
                                 gpucnn.Conv2d(3, 3, 1, dtype=F64), gpucnn.ReLU(), gpucnn.Flatten(),
                                 gpucnn.Linear(27, 2, dtype=F64))


def test_several_forwards_then_one_backward(backend):
    """Three forwards through the same layers (fused paths included), one backward of the summed
    losses: the gradients of three separate runs, added."""
    rng = np.random.default_rng(4)
    model = _conv_net(backend)
    images = [rng.standard_normal((2, 2, 6, 6)) for _ in range(3)]
    targets = [rng.standard_normal((2, 2)) for _ in range(3)]

    separate_inputs, separate_params = [], [np.zeros(p.shape) for p in model.parameters()]
    for image, target in zip(images, targets):
        model.zero_grad()
        x = gpucnn.tensor(image, requires_grad=True, backend=backend)
        F.mse_loss(model(x), target).backward()
        separate_inputs.append(x.grad.numpy())
        separate_params = [total + p.grad.numpy() for total, p in zip(separate_params, model.parameters())]

    model.zero_grad()
    xs = [gpucnn.tensor(image, requires_grad=True, backend=backend) for image in images]
    outputs = [model(x) for x in xs]
    assert "Conv2dReluMaxPool2d" in _graph_functions(outputs[0])
    sum(F.mse_loss(y, t) for y, t in zip(outputs, targets)).backward()
    for x, expected in zip(xs, separate_inputs):
        np.testing.assert_array_equal(x.grad.numpy(), expected)
    for p, expected in zip(model.parameters(), separate_params):
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_retain_graph_allows_a_second_backward(backend):
    """Through the fused Conv2d -> ReLU -> MaxPool2d of a Sequential too, whose first backward
    uses up the state its forward kept."""
    model = _conv_net(backend)
    x = gpucnn.tensor(np.random.default_rng(5).standard_normal((2, 2, 6, 6)), requires_grad=True, backend=backend)
    loss = (model(x) ** 2).sum()
    assert "Conv2dReluMaxPool2d" in _graph_functions(loss)
    leaves = [x, *model.parameters()]
    loss.backward(retain_graph=True)
    first = [t.grad.numpy() for t in leaves]
    assert all(np.abs(g).sum() > 0 for g in first)
    loss.backward(retain_graph=True)
    for t, g in zip(leaves, first):
        np.testing.assert_array_equal(t.grad.numpy(), 2 * g)
    loss.backward()  # the last one may free the graph
    for t, g in zip(leaves, first):
        np.testing.assert_allclose(t.grad.numpy(), 3 * g, rtol=1e-14)
    with pytest.raises(RuntimeError, match=r"second time.*retain_graph=True"):
        loss.backward()


def test_second_backward_without_retain_graph_raises(backend):
    x = gpucnn.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True, dtype=F64, backend=backend)
    y = x.exp()
    y.sum().backward()
    with pytest.raises(RuntimeError, match=r"second time.*freed by the first backward.*retain_graph=True"):
        (y * 2).sum().backward()  # another loss through the freed exp
    model = _conv_net(backend)
    loss = model(gpucnn.tensor(np.ones((1, 2, 6, 6)), backend=backend)).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_backward_errors_are_clear():
    constant = gpucnn.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        (constant * 2).sum().backward()
    x = gpucnn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element output.*shape \(2,\).*backward\(grad=\.\.\.\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\)"):
        (x * 2).backward(np.ones(3, np.float32))
    (x * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 20.0])


def test_no_grad_records_nothing(backend):
    with gpucnn.use_backend(backend.name):
        layer = gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, dtype=F64), gpucnn.ReLU(), gpucnn.MaxPool2d(2))
    x = gpucnn.tensor(np.random.default_rng(6).standard_normal((1, 1, 6, 6)), requires_grad=True, backend=backend)
    with gpucnn.no_grad():
        assert not gpucnn.is_grad_enabled()
        outputs = [layer(x), x * 2 + 1, F.relu(x), x[0], x.sum()]
        with gpucnn.enable_grad():
            recorded = x * 2
    assert gpucnn.is_grad_enabled()
    for y in outputs:
        assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert recorded.requires_grad and recorded.grad_fn is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        outputs[0].sum().backward()

    @gpucnn.no_grad()
    def infer(t):
        return layer(t)

    assert infer(x).grad_fn is None and layer(x).grad_fn is not None
    with pytest.raises(ZeroDivisionError), gpucnn.no_grad():
        _ = 1 / 0
    assert gpucnn.is_grad_enabled()
    assert x.grad is None and all(p.grad is None for p in layer.parameters())


def test_first_layer_input_gets_no_gradient(backend, monkeypatch):
    """Images do not require grad, so the first conv's backward is told not to compute dx."""
    calls = []
    original = Conv2dFunction.backward

    def spy(ctx, dy):
        grads = original(ctx, dy)
        calls.append((ctx.needs_input_grad, grads[0]))
        return grads

    monkeypatch.setattr(Conv2dFunction, "backward", staticmethod(spy))
    with gpucnn.use_backend(backend.name):
        model = gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, dtype=F64), gpucnn.ReLU(), gpucnn.Conv2d(2, 1, 1, dtype=F64))
    image = gpucnn.tensor(np.random.default_rng(7).standard_normal((2, 1, 5, 5)), backend=backend)
    model(image).sum().backward()
    assert image.grad is None
    assert [needs for needs, _ in calls] == [(True, True, True, False, False), (False, True, True, False, False)]
    assert calls[0][1] is not None and calls[1][1] is None
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------- custom Functions
class Square(gpucnn.Function):
    needs: list = []

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        Square.needs.append(ctx.needs_input_grad)
        return 2 * x * dy


class ScaledShift(gpucnn.Function):
    """y = a * x + b * k with a Tensor b and a plain float k: one gradient per positional input."""

    needs: list = []

    @staticmethod
    def forward(ctx, x, a, b, k):
        ctx.save_for_backward(x, a)
        ctx.k = k
        return a * x + b * k

    @staticmethod
    def backward(ctx, dy):
        x, a = ctx.saved_tensors
        ScaledShift.needs.append(ctx.needs_input_grad)
        dx = dy * a if ctx.needs_input_grad[0] else None
        da = (dy * x).sum(axis=0) if ctx.needs_input_grad[1] else None
        db = dy * ctx.k if ctx.needs_input_grad[2] else None
        return dx, da, db, None


class TwoOutputs(gpucnn.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x, ctx.xp.sin(x)

    @staticmethod
    def backward(ctx, d_square, d_sin):
        (x,) = ctx.saved_tensors
        return 2 * x * d_square + ctx.xp.cos(x) * d_sin


def test_custom_function(backend):
    Square.needs.clear()
    check_op(backend, *case(Square.apply, (3, 4)))
    assert Square.needs and set(Square.needs) == {(True,)}
    ScaledShift.needs.clear()
    b = gpucnn.tensor(np.full((2, 3), 0.25), backend=backend)  # no gradient wanted
    check_op(backend, *case(lambda x, a: ScaledShift.apply(x, a, b, 3.0), (2, 3), (3,)))
    assert set(ScaledShift.needs) == {(True, True, False, False)}
    check_op(backend, *case(lambda x: TwoOutputs.apply(x)[1] * 2 + TwoOutputs.apply(x)[0], (3, 2)))
    check_op(backend, *case(lambda x: TwoOutputs.apply(x)[1], (3, 2)))  # the unused output's gradient is zero


class WrongShape(gpucnn.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, dy):
        return dy[:1]


class TooFewGradients(gpucnn.Function):
    @staticmethod
    def forward(ctx, x, y):
        return x + y

    @staticmethod
    def backward(ctx, dy):
        return dy


def test_function_backward_returning_a_wrong_gradient_raises():
    x = gpucnn.tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"WrongShape.backward returned a gradient of shape \(1, 2\) for an "
                                           r"input of shape \(3, 2\)"):
        WrongShape.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match="TooFewGradients.backward returned 1 gradients for 2 inputs"):
        TooFewGradients.apply(x, x).sum().backward()


# ---------------------------------------------------------------------------- dtypes, depth, Tensor API
def test_dtype_rules(backend):
    x32 = gpucnn.tensor(np.linspace(0.5, 2, 6, dtype=np.float32).reshape(2, 3), requires_grad=True, backend=backend)
    for y in (x32 * 0.5, 0.5 * x32, x32 + 1, 2 - x32, x32 / 3, 2.0 / x32, x32 ** 2, -x32, x32.mean(1), x32.exp(),
              x32 @ np.ones((3, 2), np.float32), F.relu(x32), np.float64(2.0) * x32):
        assert y.dtype == np.float32, y
    (x32 * 0.5).sum().backward()
    assert x32.grad.dtype == np.float32
    x64 = gpucnn.tensor(np.ones((2, 3)), requires_grad=True, backend=backend)
    mixed = x64 * x32  # promotes, as NumPy does; each leaf's gradient keeps its own dtype
    assert mixed.dtype == np.float64
    x32.grad = None
    mixed.sum().backward()
    assert x32.grad.dtype == np.float32 and x64.grad.dtype == np.float64

    with gpucnn.use_backend(backend.name):
        layers = [(gpucnn.Linear(3, 2), (2, 3)), (gpucnn.Conv2d(1, 1, 2), (1, 1, 3, 3)),
                  (gpucnn.Conv1d(1, 1, 2), (1, 1, 4)), (gpucnn.BatchNorm2d(1), (2, 1, 2, 2)),
                  (gpucnn.BatchNorm1d(3), (2, 3))]
    for layer, shape in layers:
        name = type(layer).__name__
        with pytest.raises(TypeError, match=rf"^{name}: input dtype float64 differs from weight dtype float32"):
            layer(gpucnn.tensor(np.ones(shape), backend=backend))
        assert layer(gpucnn.tensor(np.ones(shape, np.float32), backend=backend)).dtype == np.float32
    with pytest.raises(TypeError, match="^linear: input dtype float64"):
        F.linear(gpucnn.tensor(np.ones((2, 3)), backend=backend), layers[0][0].weight)


def test_deep_chain_has_no_recursion_limit():
    x = gpucnn.tensor([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(3000):
        y = y + x
    y = (y * 0.5).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1500.5, 1500.5])
    del y  # freeing a deep graph must not recurse either


def test_tensor_api(backend):
    t = gpucnn.tensor([[1, 2], [3, 4.5]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.backend.name == "numpy"
    assert not t.requires_grad and t.grad is None and t.is_leaf and t.grad_fn is None
    assert gpucnn.tensor([1, 2]).dtype.kind == "i" and gpucnn.tensor(3.0).dtype == np.float32
    host = t.numpy()
    assert isinstance(host, np.ndarray) and host.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert gpucnn.tensor(2.5).item() == 2.5 and t[1, 1].item() == 4.5 and isinstance(t.sum().item(), float)
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    with pytest.raises(TypeError, match="only float tensors"):
        gpucnn.tensor([1, 2], requires_grad=True)

    x = gpucnn.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True, backend=backend)
    assert x.backend is backend and x.requires_grad and x.dtype == F64
    y = x * 3
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and np.array_equal(d.numpy(), y.numpy())
    (d * x).sum().backward()  # no gradient flows through the detached copy
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, -6.0, 9.0])
    assert x.grad.backend is backend and not x.grad.requires_grad

    for source, target in ((backend.name, "numpy"), ("numpy", backend.name)):
        a = gpucnn.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True, backend=source)
        moved = a.to(target)
        assert moved.backend.name == target and moved.requires_grad and np.array_equal(moved.numpy(), a.numpy())
        (moved * moved).sum().backward()
        assert a.grad.backend.name == source
        np.testing.assert_array_equal(a.grad.numpy(), [2.0, -4.0, 6.0])
        with gpucnn.no_grad():  # the same move without a graph (inference)
            moved = a.to(target)
        assert moved.backend.name == target and not moved.requires_grad


def test_tensor_truth_and_number_conversions():
    assert float(gpucnn.tensor(2.5)) == 2.5 and int(gpucnn.tensor([3.0])) == 3
    assert bool(gpucnn.tensor(1.0)) and not bool(gpucnn.tensor([0.0]))
    assert not (gpucnn.tensor([1.0]) > gpucnn.tensor([2.0]))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(gpucnn.tensor([1.0, 2.0]) == gpucnn.tensor([5.0, 6.0]))


# ---------------------------------------------------------------------------- fused Sequential paths
def _conv(backend, dtype):
    conv = gpucnn.Conv2d(2, 3, 3, padding=1, dtype=dtype)
    # channel 0 has windows whose maximum is <= 0 (no gradient through the ReLU), the others not
    conv.bias.data = backend.asarray(np.array([-1.5, 0.0, 0.5]), dtype=dtype)
    return conv


OVERLAPPING = {"kernel_size": 3, "stride": 2, "padding": 1}
FUSIONS = {  # name: (starts with a Conv2d, the MaxPool2d's arguments or None, the Function that does them all)
    "conv_relu_maxpool_tiled": (True, {"kernel_size": 2}, "Conv2dReluMaxPool2d"),
    "conv_relu_maxpool_overlapping": (True, {**OVERLAPPING, "ceil_mode": True}, "Conv2dReluMaxPool2d"),
    "conv_relu": (True, None, "Conv2d"),
    "relu_maxpool_tiled": (False, {"kernel_size": 2}, "ReluMaxPool2d"),
    "relu_maxpool_overlapping": (False, OVERLAPPING, "ReluMaxPool2d"),
}


@pytest.mark.parametrize("dtype", [np.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(FUSIONS))
def test_fused_sequential_matches_layers_one_by_one(backend, name, dtype):
    """Sequential runs these layer runs as one op (one backward step); output and every gradient
    must equal the layers called one by one, bit for bit, with negative window maxima and a NaN."""
    conv, pool, fused_function = FUSIONS[name]
    with gpucnn.use_backend(backend.name):
        layers = [_conv(backend, dtype)] * conv + [gpucnn.ReLU()] + ([gpucnn.MaxPool2d(**pool)] if pool else [])
        model = gpucnn.Sequential(*layers)
    x_host = np.random.default_rng(21).standard_normal((3, 2, 7, 9)).astype(dtype)
    x_host[2, 1, 3, 4] = np.nan

    def run(forward):
        model.zero_grad()
        x = gpucnn.tensor(x_host, requires_grad=True, backend=backend)
        y = forward(x)
        y.backward(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
        return _graph_functions(y), [y.numpy(), x.grad.numpy(), *(p.grad.numpy() for p in model.parameters())]

    graph_apart, apart = run(lambda x: functools.reduce(lambda h, layer: layer(h), layers, x))
    graph_fused, fused = run(model)
    assert fused_function in graph_fused and not graph_fused & {"Relu", "MaxPool2d"}
    assert graph_apart & {"Relu", "MaxPool2d"}
    y = fused[0]
    assert (y[:2] == 0).any() and (y[:2] > 0).any()
    assert np.isnan(y[2]).any() and not np.isnan(y[:2]).any()
    for a, b in zip(fused, apart):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)

    model.eval()
    with gpucnn.no_grad():
        assert np.array_equal(model(gpucnn.tensor(x_host, backend=backend)).numpy(), apart[0], equal_nan=True)


def test_sequential_fuses_by_its_current_layers(backend):
    """The fused runs are planned from the layers' types; a Sequential that grows, or whose layer is
    replaced, runs its new layers (fused where they now allow it) and matches them called one by one."""
    with gpucnn.use_backend(backend.name):
        conv = _conv(backend, np.float64)
        model = gpucnn.Sequential(conv, gpucnn.ReLU())
        pool = gpucnn.MaxPool2d(2)
    x = gpucnn.tensor(np.random.default_rng(5).standard_normal((2, 2, 8, 8)), backend=backend)

    def apart():
        h = x
        for layer in model:
            h = layer(h)
        return h.numpy()

    assert "Conv2d" in _graph_functions(model(x)) and model(x).shape == (2, 3, 8, 8)
    model.append(pool)
    y = model(x)
    assert "Conv2dReluMaxPool2d" in _graph_functions(y) and np.array_equal(y.numpy(), apart())
    model[1] = gpucnn.Tanh()
    y = model(x)
    assert "Conv2dReluMaxPool2d" not in _graph_functions(y) and np.array_equal(y.numpy(), apart())
    assert (y.numpy() < 0).any()  # the tanh, not a ReLU, ran


# ---------------------------------------------------------------------------- channel dropout, stochastic depth
@pytest.mark.parametrize("layer, per", [(gpucnn.Dropout2d, (6, 5, 1, 1)), (gpucnn.DropPath, (6, 1, 1, 1))])
def test_dropout2d_and_drop_path_masks(backend, layer, per):
    """One draw per (sample, channel) (Dropout2d) or per sample (DropPath), the kept ones scaled by 1/(1-p); the
    same mask from the same generator on every backend; the gradient is the mask; identity in eval."""
    x = gpucnn.tensor(np.random.default_rng(0).standard_normal((6, 5, 3, 4)), requires_grad=True,
                      backend=backend.name)
    y = layer(0.4, rng=np.random.default_rng(5))(x)
    mask = y.numpy() / x.numpy()
    drawn = mask[tuple(slice(None) if n > 1 else slice(0, 1) for n in per)]
    np.testing.assert_allclose(mask, np.broadcast_to(drawn, mask.shape), rtol=1e-12)
    np.testing.assert_allclose(np.unique(np.round(drawn, 9)), [0.0, round(1 / 0.6, 9)])
    with gpucnn.use_backend("numpy"):
        reference = layer(0.4, rng=np.random.default_rng(5))(gpucnn.tensor(x.numpy())).numpy()
    np.testing.assert_array_equal(y.numpy(), reference)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), mask, rtol=1e-12)
    assert layer(0.4).eval()(x) is x


@pytest.mark.parametrize("call, error, match", [
    (lambda a: a.permute(0, 1, 1, 2), ValueError, r"permute: expected a permutation of 0\.\.3, got \(0, 1, 1, 2\)"),
    (lambda a: a.permute(0, 1, 2), ValueError, r"permute: expected a permutation of 0\.\.3, got \(0, 1, 2\)"),
    (lambda a: a.transpose(0, 4), IndexError, r"transpose: dim 4 is out of range for a tensor with 4 dims "
                                              r"\(expected -4\.\.3\)"),
    (lambda a: a.split([1, 1], dim=1), ValueError, r"split: expected sizes >= 0 that add up to 3 \(the length of "
                                                   r"dim 1\), got \(1, 1\)"),
    (lambda a: a.split(0), ValueError, r"split: expected a split size of at least 1, got 0"),
    (lambda a: a.chunk(0), ValueError, r"chunk: expected a number of chunks of at least 1, got 0"),
    (lambda a: a.expand(2, 5, 1, 1), ValueError, r"expand: expected size 3 \(or 1 to stretch\) at dim 1, got 5"),
    (lambda a: a.expand(-1, 2, 3, 1, 1), ValueError, r"expand: -1 is not allowed for a new leading dim \(0\)"),
    (lambda a: a.max(dim=-5), IndexError, r"max: dim -5 is out of range for a tensor with 4 dims"),
    (lambda a: a.clamp(), ValueError, r"clamp: expected min or max \(or both\), got neither"),
    (lambda a: gpucnn.stack([a, a], dim=5), IndexError, r"stack: dim 5 is out of range for a tensor with 5 dims"),
    (lambda a: gpucnn.stack([a, a[:1]]), ValueError, r"stack: expected tensors of one shape, got shapes"),
    (lambda a: gpucnn.where(a, a, a), TypeError, r"where: expected a bool condition, got dtype float64"),
    (lambda a: gpucnn.Dropout2d()(a.flatten(1)), ValueError, r"dropout2d: expected an input of shape \(N, C, H, W\)"),
])
def test_tensor_op_errors_name_the_op_and_what_was_expected(call, error, match):
    a = gpucnn.tensor(np.ones((2, 3, 1, 1)))
    with pytest.raises(error, match=match):
        call(a)
