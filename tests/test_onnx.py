"""ONNX export: every model in the repo, and a block using every exportable Function, run under ONNX Runtime
at batch sizes 1 and 7 (one dynamic-batch file) and compared with gpucnn; and every Function of gpucnn
declares its emitter (with its forward's parameters) or why it cannot be exported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
from gpucnn import nn  # noqa: E402
from gpucnn.onnx import ExportError, emitter_of, export, verify  # noqa: E402


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gpucnn.use_backend("numpy"):
        yield


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _reference(model, x):
    model.eval()
    with gpucnn.no_grad():
        return model(gpucnn.tensor(x)).numpy()


def _check_model(model, shape, tmp_path, seed=0):
    """Export from a batch-2 trace; ONNX Runtime at batch 1 and 7 must match gpucnn to 1e-5 of the output's scale."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "model.onnx"
    proto = export(model, path, rng.standard_normal((2, *shape)).astype(np.float32))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    for batch in (1, 7):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        expected, got = _reference(model, x), _run(path, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
    return proto


def _initializers(proto):
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def _train_a_little(model, shape, classes=10, steps=2):
    """A few SGD steps, so BatchNorm's running statistics and every weight are not at their initial values."""
    rng = np.random.default_rng(1)
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = gpucnn.tensor(rng.standard_normal((8, *shape)).astype(np.float32))
        loss = F.cross_entropy(model(x), rng.integers(0, classes, 8))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_lenet5(tmp_path):
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    proto = _check_model(model, (1, 28, 28), tmp_path)
    ops = [n.op_type for n in proto.graph.node]
    # Sequential fuses Conv2d -> ReLU -> MaxPool2d; the export writes the three ops
    assert ops[:3] == ["Conv", "Relu", "MaxPool"] and "Gemm" in ops
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    inits = _initializers(proto)
    for name in ("0.weight", "0.bias", "7.weight", "11.bias"):
        np.testing.assert_array_equal(inits[name], state[name])
    reshape = next(n for n in proto.graph.node if n.op_type == "Reshape")
    assert list(inits[reshape.input[1]]) == [-1, 400]  # dynamic batch
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_lenet5_classic_connection_table_and_scaled_tanh(tmp_path):
    model = gpucnn.LeNet5Classic(rng=np.random.default_rng(0))
    _train_a_little(model, (1, 32, 32))
    proto = _check_model(model, (1, 32, 32), tmp_path)
    dense = _initializers(proto)["4.weight"]
    assert dense.shape == (16, 6, 5, 5) and int((dense != 0).any(axis=(2, 3)).sum()) == 60
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Tanh") == 6 and "AveragePool" in ops


def test_resnet8(tmp_path):
    model = gpucnn.ResNet(depth=8, width=8, rng=np.random.default_rng(0))
    _train_a_little(model, (3, 16, 16))
    proto = _check_model(model, (3, 16, 16), tmp_path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("BatchNormalization") == 9 and "GlobalAveragePool" in ops and ops.count("Add") == 3
    assert "layer2.0.shortcut.1.running_var" in _initializers(proto)


class Inception(nn.Module):
    """Branches concatenated on channels plus a residual and a tour of the other ops; every argument that
    changes an ONNX attribute (asymmetric 'same', dilation, groups, ceil_mode, count_include_pad) appears."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        self.b1 = nn.Conv2d(4, 4, 1, rng=rng)
        self.b2 = nn.Sequential(nn.Conv2d(4, 4, 1, rng=rng), nn.ReLU(), nn.Conv2d(4, 6, 4, padding="same", rng=rng))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(4, 4, 1, rng=rng), nn.ReLU())
        self.b4 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, rng=rng)
        self.bn = nn.BatchNorm2d(18)
        self.squeeze = nn.Conv2d(18, 4, 1, rng=rng)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Conv2d(4, 8, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                                  nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), nn.LeakyReLU(0.1))
        self.lp2 = nn.LPPool2d(2, 2, ceil_mode=True)
        self.lpinf = nn.LPPool2d(float("inf"), 3, 2)
        self.adaptive = nn.AdaptiveAvgPool2d((3, 2))
        self.fc = nn.Linear(8 * 3 * 2 + 4 + 2, 5, rng=rng)

    def forward(self, x):
        y = gpucnn.cat([self.b1(x), self.b2(x), F.relu(self.b3(x)), self.b4(x)], dim=1)
        y = self.squeeze(self.drop(F.relu(self.bn(y))))
        y = F.sigmoid(y + x) * 2.0 - x / 3.0  # a residual, and scalar operands as initializers
        z = self.head(y)
        pooled = self.adaptive(z).flatten(1)
        lp = self.lp2(y).mean(dim=(2, 3)) + (-self.lpinf(y)).sum(dim=(2, 3))
        window = F.avg_pool2d(y[:, :2, 1:, ::2], 2, 1, 0, True).sum((2, 3))
        stats = (y[:, 1:3] ** 2).mean(dim=(2, 3)).exp().log() + window
        logits = self.fc(gpucnn.cat([pooled, lp, stats.sum(1, keepdim=True).reshape(-1, 1) * y[:, 0, 0, :2]], 1))
        return F.log_softmax(logits, dim=1) + F.softmax(logits, 1) - F.tanh(logits)


def test_inception_block_and_every_op(tmp_path):
    model = Inception()
    _train_a_little(model, (4, 11, 11), classes=5)
    proto = _check_model(model, (4, 11, 11), tmp_path)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Concat", "Slice", "BatchNormalization", "LeakyRelu", "Sigmoid", "Softmax", "LogSoftmax", "Pow",
            "Exp", "Log", "ReduceSum", "ReduceMean", "Abs", "MatMul", "Gemm", "Neg", "Sub", "Div"} <= ops
    conv = next(n for n in proto.graph.node if n.op_type == "Conv" and n.name.startswith("b2.2"))
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 2, 2]  # even kernel, 'same'


def test_static_batch_and_verify(tmp_path):
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    proto = export(model, tmp_path / "m.onnx", x, opset=18, dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    result = verify(tmp_path / "m.onnx", model, x)
    assert result["checker"] == "ok" and result["match"]
    assert model.training  # export and verify leave the mode as they found it


class _Twice(gpucnn.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, dy):
        return 2 * dy


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.odd = _Odd()

    def forward(self, x):
        return self.odd(self.conv(x))


class _Odd(nn.Module):
    def forward(self, x):
        return _Twice.apply(x)


def test_unexportable_function_names_function_and_layer(tmp_path):
    with pytest.raises(ExportError, match=r"_Twice.*'odd'"):
        export(_Custom(), tmp_path / "x.onnx", np.zeros((1, 1, 5, 5), np.float32))


def test_batch_merging_reshape_needs_static_batch(tmp_path):
    class Merge(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(ExportError, match="dynamic_batch=False"):
        export(Merge(), None, np.zeros((2, 3), np.float32))
    proto = export(Merge(), None, np.zeros((2, 3), np.float32), dynamic_batch=False)
    onnx.checker.check_model(proto, full_check=True)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'gpucnn\[onnx\]'"):
        export(gpucnn.LeNet5(), None, np.zeros((1, 1, 28, 28), np.float32))


@pytest.mark.parametrize("size, kernel, stride, padding", [(7, 3, 2, 1), (8, 3, 3, 1), (10, 4, 3, 2), (5, 2, 2, 0),
                                                           (9, 3, 2, 0)])
def test_ceil_mode_pooling(tmp_path, size, kernel, stride, padding):
    """ONNX's ceil_mode lets a last window start in the right padding, PyTorch's (gpucnn's) does not."""
    layers = [nn.MaxPool2d(kernel, stride, padding, ceil_mode=True),
              nn.AvgPool2d(kernel, stride, padding, ceil_mode=True, count_include_pad=True),
              nn.AvgPool2d(kernel, stride, padding, ceil_mode=True, count_include_pad=False),
              nn.LPPool2d(2, kernel, stride, ceil_mode=True), nn.LPPool2d(float("inf"), kernel, stride, ceil_mode=True)]
    for layer in layers:
        model = nn.Sequential(nn.Sigmoid(), layer)  # LPPool's x^p needs x > 0 for odd p; keep it well defined
        _check_model(model, (2, size, size), tmp_path)


class _Signal(nn.Module):
    """Conv1d (a reshape to a (1, k) conv2d), BatchNorm1d, indexing with ints, None and negative steps, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(4)
        self.conv = nn.Conv1d(3, 5, 3, padding="same", dilation=2, rng=rng)
        self.bn = nn.BatchNorm1d(5)
        self.fc = nn.Linear(9, 4, rng=rng)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))  # (N, 5, 9)
        flipped = y[:, ::-1, None, 2:][:, :, 0]  # (N, 5, 7)
        return self.fc(y)[..., 1:3], flipped[:, -1] + y[:, 0, :7].mean(dim=1, keepdim=True)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_conv1d_indexing_two_outputs_and_opsets(tmp_path, opset):
    model = _Signal()
    _ = model(gpucnn.tensor(np.ones((4, 3, 9), np.float32)))  # one training pass moves the running statistics
    x = np.random.default_rng(0).standard_normal((2, 3, 9)).astype(np.float32)
    export(model, tmp_path / "s.onnx", x, opset=opset)
    onnx.checker.check_model(onnx.load(str(tmp_path / "s.onnx")), full_check=True)
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        xb = np.random.default_rng(batch).standard_normal((batch, 3, 9)).astype(np.float32)
        model.eval()
        with gpucnn.no_grad():
            expected = [t.numpy() for t in model(gpucnn.tensor(xb))]
        for got, want in zip(session.run(["output_0", "output_1"], {"input": xb}), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _gpucnn_functions():
    """Every Function subclass defined in gpucnn, each module imported first (the CLI's __main__ aside)."""
    for info in pkgutil.walk_packages(gpucnn.__path__, "gpucnn."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, stack = {}, [gpucnn.Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("gpucnn."):
                found[f"{sub.__module__}.{sub.__qualname__}"] = sub
    return found


def test_every_function_has_an_emitter_with_its_forwards_parameters_or_a_refusal():
    """An emitter gets the forward's arguments by position: renaming or reordering a forward parameter without
    its emitter's fails here, not silently in an export."""
    functions = _gpucnn_functions()
    assert len(functions) >= 30
    for name, cls in sorted(functions.items()):
        emit = emitter_of(cls)
        assert emit is not None, f"{name} has neither a symbolic (its ONNX emitter) nor a not_exportable reason"
        if isinstance(emit, str):
            assert emit.startswith("cannot export") and "symbolic" not in vars(cls), name
            continue
        forward = list(inspect.signature(cls.forward).parameters.values())[1:]  # after ctx
        symbolic = list(inspect.signature(emit).parameters.values())
        assert symbolic[0].name == "g", name
        assert [(p.name, p.kind) for p in symbolic[1:]] == [(p.name, p.kind) for p in forward], \
            f"{name}.symbolic's parameters differ from its forward's"


@pytest.mark.parametrize("forward, match", [
    (lambda x: F.dropout(x, 0.5, training=True), r"cannot export Dropout in training mode \(F\.dropout.*"
                                                  r"\(in layer '\(top level\)'\)"),
    (lambda x: F.nll_loss(F.log_softmax(x, 1), np.zeros(2, np.int64)),
     r"cannot export a loss \(NllLoss\); export the network alone \(in layer '\(top level\)'\)"),
    (lambda x: F.cross_entropy(x, np.zeros(2, np.int64)), r"cannot export a loss \(SoftmaxCrossEntropy\)"),
    (lambda x: F.batch_norm(x, None, None, training=True),
     r"cannot export BatchNorm in layer '\(top level\)' normalising with batch statistics"),
])
def test_refusals_give_the_functions_reason(forward, match):
    class Refused(nn.Module):
        def forward(self, x):
            return forward(x)

    with pytest.raises(ExportError, match=match):
        export(Refused(), None, np.ones((2, 3), np.float32))


def test_connection_table_folds_under_the_packed_name_once(tmp_path):
    """ExpandConnections' emitter folds: one initializer, the dense bank, under the packed parameter's name."""
    conv = nn.Conv2d(2, 3, 2, connection=np.array([[1, 0, 1], [0, 1, 1]], bool), rng=np.random.default_rng(0))
    proto = _check_model(nn.Sequential(conv), (2, 4, 4), tmp_path)
    inits = _initializers(proto)
    assert sorted(inits) == ["0.bias", "0.weight"] and inits["0.weight"].shape == (3, 2, 2, 2)


class _TensorOps(nn.Module):
    """The Tensor shape ops and reductions a forward calls: permute, split, expand, cat, clamp, max/min (values
    and indices), stack, sqrt, transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, rng=np.random.default_rng(0))

    def forward(self, x):
        h = self.conv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        a, b = h.split([1, 3], dim=-1)
        c = gpucnn.cat([b, a.expand(-1, -1, -1, 2)], dim=-1).clamp(-0.5, 0.8)
        top = c.max(dim=1)
        low = c.min(1, keepdim=True).values.transpose(1, 2)  # (N, W, 1, C)
        s = gpucnn.stack([top.values, (c * c).sqrt().sum(1), low.sum(2)], dim=1) + h.max() - c.clamp(max=0.1).min()
        first, second = s.chunk(2, dim=-1)
        return first.flatten(1), second.sum(-1), top.indices


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_tensor_ops_round_trip(tmp_path, opset):
    model = _TensorOps()
    rng = np.random.default_rng(0)
    path = tmp_path / "ops.onnx"
    proto = export(model, path, rng.standard_normal((2, 4, 3, 5)).astype(np.float32), opset=opset)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Transpose", "Split", "Expand", "Concat", "Clip", "ReduceMax", "ReduceMin", "ArgMax", "Unsqueeze",
            "Sqrt"} <= ops
    assert sum(n.op_type == "Split" for n in proto.graph.node) == 2  # one node per split, not one per piece
    for batch in (1, 2, 7):
        report = verify(path, model, rng.standard_normal((batch, 4, 3, 5)).astype(np.float32))
        assert report["match"], report


def test_tensor_ops_that_move_the_batch_axis_need_a_static_batch(tmp_path):
    class Moves(nn.Module):
        def forward(self, x):
            return x.permute(1, 0, 2)

    with pytest.raises(ExportError, match=r"Permute \(1, 0, 2\) in layer '\(top level\)' moves the batch axis"):
        export(Moves(), None, np.ones((2, 3, 4), np.float32))
    proto = export(Moves(), None, np.ones((2, 3, 4), np.float32), dynamic_batch=False)
    assert [n.op_type for n in proto.graph.node][0] == "Transpose"


class _Masks(nn.Module):
    """where() on comparisons of the input: each mask must be an ONNX op on the input, not the traced mask
    written as a constant (which would give the example input's mask for every input)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 5, rng=np.random.default_rng(0))

    def forward(self, x):
        h = self.linear(x)
        leaky = gpucnn.where(h > 0, h, 0.1 * h)
        picked = gpucnn.where((x < h) == (0.2 <= x), x, h) + gpucnn.where(h >= x, x, -1.0)
        masked = gpucnn.where((x != h) != (x <= -0.3), picked, 0.0)
        return leaky + masked * gpucnn.where(0 == (x > 0.5), 2.0 * x, 3.0)


@pytest.mark.parametrize("opset", [13, 17])
def test_where_on_comparisons_follows_the_input(tmp_path, opset):
    model = _Masks()
    rng = np.random.default_rng(0)
    path = tmp_path / "masks.onnx"
    proto = export(model, path, rng.standard_normal((4, 5)).astype(np.float32), opset=opset)
    ops = [n.op_type for n in proto.graph.node]
    assert {"Greater", "Less", "Equal", "Not", "GreaterOrEqual", "LessOrEqual", "Where"} <= set(ops)
    assert "Cast" not in ops  # the scalars take the input's dtype, as in arithmetic
    assert not [t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.BOOL and t.dims]  # no mask
    for batch in (1, 4, 9):
        report = verify(path, model, rng.standard_normal((batch, 5)).astype(np.float32))
        assert report["match"], report
