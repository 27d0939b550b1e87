"""gpucnn.onnx.load: every model tests/test_onnx.py exports comes back as a Module equal to the original and to
ONNX Runtime at another batch size; a PyTorch export (BatchNorm, a residual add, a Shape -> Reshape chain)
matches torch; the loaded weights fine-tune; single ops with the attributes exporters write match ONNX Runtime;
an unsupported op or an old opset is named."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_onnx import Inception, _Signal, _TensorOps, _train_a_little  # noqa: E402

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
from gpucnn import nn  # noqa: E402
from gpucnn.onnx import export, load  # noqa: E402
from gpucnn.onnx_load import OnnxLoadError, OnnxModule  # noqa: E402


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gpucnn.use_backend("numpy"):
        yield


def _outputs(result):
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def _ort(source, feeds):
    data = source.SerializeToString() if isinstance(source, onnx.ModelProto) else str(source)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _close(got, want):
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def _conv_pool_linear():
    rng = np.random.default_rng(5)
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, rng=rng), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 2 * 2, 5, rng=rng))


MODELS = {
    "lenet5": (lambda: gpucnn.LeNet5(rng=np.random.default_rng(0)), (1, 28, 28)),
    "lenet5_classic": (lambda: gpucnn.LeNet5Classic(rng=np.random.default_rng(0)), (1, 32, 32)),
    "resnet8": (lambda: gpucnn.ResNet(depth=8, width=8, rng=np.random.default_rng(0)), (3, 16, 16)),
    "conv_pool_linear": (_conv_pool_linear, (3, 16, 16)),
    "inception": (Inception, (4, 11, 11)),
    "signal": (_Signal, (3, 9)),
    "tensor_ops": (_TensorOps, (4, 3, 5)),
}


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_matches_the_model_and_onnx_runtime(tmp_path, name, opset):
    build, shape = MODELS[name]
    model = build()
    if name in ("resnet8", "inception", "lenet5_classic"):
        _train_a_little(model, shape, classes=5 if name == "inception" else 10)
    rng = np.random.default_rng(1)
    path = tmp_path / "m.onnx"
    loaded = load(export(model, path, rng.standard_normal((2, *shape)).astype(np.float32), opset=opset))
    assert isinstance(loaded, OnnxModule) and not loaded.training and loaded.opset == opset
    model.eval()
    for batch in (1, 5):  # the traced batch was 2: the batch axis stays dynamic
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        with gpucnn.no_grad():
            want, got = _outputs(model(gpucnn.tensor(x))), _outputs(loaded(x))
        runtime = _ort(path, {"input": x})
        assert len(got) == len(want) == len(runtime)
        for g, w, r in zip(got, want, runtime):
            _close(g, w)
            _close(g, r)


LAYERS = {
    "reflect_pad": lambda: nn.ReflectionPad2d(1), "replicate_pad": lambda: nn.ReplicationPad2d((1, 2, 0, 1)),
    "zero_pad": lambda: nn.ZeroPad2d(1), "upsample_nearest": lambda: nn.Upsample(scale_factor=2),
    "upsample_bilinear": lambda: nn.Upsample(size=(7, 9), mode="bilinear", align_corners=True),
    "prelu": lambda: nn.PReLU(3), "hardswish": lambda: nn.Hardswish(), "hardsigmoid": lambda: nn.Hardsigmoid(),
    "gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU("tanh"), "elu": lambda: nn.ELU(), "mish": lambda: nn.Mish(),
    "softplus": lambda: nn.Softplus(), "relu6": lambda: nn.ReLU6(), "silu": lambda: nn.SiLU(),
    "layer_norm": lambda: nn.LayerNorm([4, 6]), "group_norm": lambda: nn.GroupNorm(3, 3),
    "instance_norm": lambda: nn.InstanceNorm2d(3, affine=True), "lrn": lambda: nn.LocalResponseNorm(2),
    "pixel_shuffle": lambda: nn.Sequential(nn.Conv2d(3, 12, 1, rng=np.random.default_rng(0)), nn.PixelShuffle(2)),
    "pixel_unshuffle": lambda: nn.PixelUnshuffle(2),
    **{f"ceil_{i}": (lambda layer=layer: nn.Sequential(nn.Sigmoid(), layer)) for i, layer in enumerate([
        nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.AvgPool2d(3, 3, 1, ceil_mode=True, count_include_pad=True),
        nn.AvgPool2d(4, 3, 2, ceil_mode=True, count_include_pad=False), nn.LPPool2d(2, 3, 2, ceil_mode=True),
        nn.LPPool2d(float("inf"), 2, 2, ceil_mode=True)])},
}


@pytest.mark.parametrize("opset", [13, 20])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip_of_single_layers(name, opset):
    """GELU is Erf below opset 20 (erf then runs as a 1.5e-7-accurate composition), Gelu from 20."""
    layer = LAYERS[name]()
    rng = np.random.default_rng(2)
    proto = export(layer, None, rng.standard_normal((2, 3, 4, 6)).astype(np.float32), opset=opset)
    x = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)
    layer.eval()
    with gpucnn.no_grad():
        want = layer(gpucnn.tensor(x)).numpy()
    got = load(proto)(x).numpy()
    _close(got, want)
    _close(got, _ort(proto, {"input": x})[0])


def test_round_trip_keeps_the_weights_as_named_parameters(tmp_path):
    model = gpucnn.ResNet(depth=8, width=8, rng=np.random.default_rng(0))
    loaded = load(export(model, None, np.zeros((2, 3, 16, 16), np.float32)))
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    params = dict(loaded.named_parameters())
    assert len(params) == len(list(model.parameters()))
    for attr, p in params.items():
        np.testing.assert_array_equal(p.numpy(), state[loaded.onnx_names[attr]])
    assert loaded.onnx_names["conv1_weight"] == "conv1.weight"
    buffers = dict(loaded.named_buffers())
    np.testing.assert_array_equal(buffers["bn1_running_var"], state["bn1.running_var"])
    # the file's path, its bytes and the ModelProto load alike
    path = export(model, None, np.zeros((2, 3, 16, 16), np.float32))
    assert sorted(dict(load(path.SerializeToString()).named_parameters())) == sorted(params)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_export_with_batchnorm_and_a_residual(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(8)
            self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.bn2 = torch.nn.BatchNorm2d(8)  # after the add: the exporter cannot fold it into a Conv
            self.fc = torch.nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(y + self.conv2(y)))
            y = torch.nn.functional.max_pool2d(y, 2)
            y = torch.nn.functional.avg_pool2d(y, 2)
            return torch.log_softmax(self.fc(y.view(y.size(0), -1)), dim=1)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics off their initial values
            net(torch.randn(8, 3, 16, 16))
    net.eval()
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert {"BatchNormalization", "Add", "Shape", "Reshape", "Gemm"} <= set(ops)
    loaded = load(path)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = net(x).numpy()
    got = loaded(x.numpy()).numpy()
    _close(got, want)
    _close(got, _ort(path, {"x": x.numpy()})[0])
    names = set(loaded.onnx_names[attr] for attr, _ in loaded.named_parameters())
    assert {"conv2.weight", "conv2.bias", "bn2.weight", "bn2.bias", "fc.weight", "fc.bias"} <= names


def test_gradients_match_the_original_model():
    model = gpucnn.ResNet(depth=8, width=8, rng=np.random.default_rng(0))
    _train_a_little(model, (3, 16, 16))
    loaded = load(export(model, None, np.zeros((2, 3, 16, 16), np.float32)))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    model.eval()  # both normalise with the running statistics
    for net in (model, loaded):
        net.zero_grad()
        F.cross_entropy(net(gpucnn.tensor(x)), y).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for attr, p in loaded.named_parameters():
        want = np.asarray(grads[loaded.onnx_names[attr]])
        np.testing.assert_allclose(np.asarray(p.grad), want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_fine_tuning_reduces_the_loss():
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    loaded = load(export(model, None, np.zeros((2, 1, 28, 28), np.float32)))
    params = list(loaded.parameters())
    assert len(params) == 10 and all(p.requires_grad for p in params)
    before = [p.numpy().copy() for p in params]
    rng = np.random.default_rng(0)
    x = gpucnn.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, 16)
    opt = gpucnn.optim.SGD(loaded.parameters(), lr=0.05, momentum=0.9)
    loaded.train()
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(loaded(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, params))


# ---------------------------------------------------------------------------- single ops against ONNX Runtime
def _single(op, shape, attrs=None, consts=(), opset=18, outputs=1, extra_inputs=()):
    """A one-node model: input x of ``shape`` (then ``extra_inputs``), the constants as initializers."""
    names = ["x"] + [name for name, _ in extra_inputs]
    inits = []
    for i, value in enumerate(consts):
        if value is None:
            names.append("")
            continue
        names.append(f"c{i}")
        inits.append(numpy_helper.from_array(np.asarray(value), f"c{i}"))
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **(attrs or {}))
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in [("x", shape), *extra_inputs]]
    graph = helper.make_graph([node], "g", ins, [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


F32 = np.float32
CASES = {
    "maxpool_ceil_pads": ("MaxPool", (2, 3, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                    "ceil_mode": 1}, ()),
    "maxpool_ceil_8": ("MaxPool", (1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1],
                                                 "ceil_mode": 1}, ()),
    "maxpool_asym": ("MaxPool", (1, 2, 9, 8), {"kernel_shape": [2, 3], "pads": [0, 1, 1, 1]}, ()),
    "maxpool_same_upper": ("MaxPool", (1, 2, 7, 6), {"kernel_shape": [2, 2], "strides": [2, 2],
                                                     "auto_pad": "SAME_UPPER"}, ()),
    "maxpool_1d": ("MaxPool", (2, 3, 10), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, ()),
    "avgpool_excl_ceil": ("AveragePool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2],
                                                        "pads": [1, 1, 1, 1], "ceil_mode": 1}, ()),
    "avgpool_incl_ceil": ("AveragePool", (1, 2, 10, 10), {"kernel_shape": [4, 4], "strides": [3, 3],
                                                          "pads": [2, 2, 2, 2], "ceil_mode": 1,
                                                          "count_include_pad": 1}, ()),
    "avgpool_asym": ("AveragePool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}, ()),
    "avgpool_same_lower_incl": ("AveragePool", (1, 2, 5, 5), {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER",
                                                              "strides": [2, 2], "count_include_pad": 1}, ()),
    "lppool": ("LpPool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}, ()),
    "global_max": ("GlobalMaxPool", (2, 3, 4, 5), {}, ()),
    "conv_same_lower_stride": ("Conv", (1, 2, 7, 7), {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
                               (np.random.default_rng(0).standard_normal((4, 2, 2, 2)).astype(F32),)),
    "conv_1d_groups": ("Conv", (2, 4, 9), {"pads": [2, 1], "group": 2, "dilations": [2]},
                       (np.random.default_rng(1).standard_normal((6, 2, 3)).astype(F32),
                        np.arange(6, dtype=F32))),
    "gemm_trans_alpha_beta": ("Gemm", (5, 3), {"transA": 1, "alpha": 0.5, "beta": 2.0},
                              (np.ones((5, 4), F32), np.arange(4, dtype=F32).reshape(1, 4))),
    "pad_reflect": ("Pad", (1, 2, 4, 5), {"mode": "reflect"}, (np.array([0, 0, 1, 2, 0, 0, 2, 1]),)),
    "pad_edge": ("Pad", (1, 2, 4, 5), {"mode": "edge"}, (np.array([0, 0, 0, 3, 0, 0, 0, 1]),)),
    "pad_constant": ("Pad", (1, 2, 4, 5), {}, (np.array([0, 0, 1, -1, 0, 0, 2, 1]), np.array(1.5, F32))),
    "resize_nearest": ("Resize", (1, 2, 3, 4), {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                                "nearest_mode": "floor"}, (None, np.array([1, 1, 2, 3], F32))),
    "resize_linear_sizes": ("Resize", (1, 2, 3, 4), {"mode": "linear"}, (None, None, np.array([1, 2, 5, 7]))),
    "resize_linear_corners": ("Resize", (1, 2, 3, 4), {"mode": "linear",
                                                       "coordinate_transformation_mode": "align_corners"},
                              (None, np.array([1, 1, 2, 2], F32))),
    "hardsigmoid": ("HardSigmoid", (3, 4), {}, ()),
    "clip": ("Clip", (3, 4), {}, (np.array(-0.3, F32), np.array(0.5, F32))),
    "elu": ("Elu", (3, 4), {"alpha": 0.7}, ()),
    "softplus": ("Softplus", (3, 4), {}, ()),
    "softmax_axis": ("Softmax", (2, 3, 4), {"axis": 1}, ()),
    "reducemax_axes": ("ReduceMax", (2, 3, 4), {"keepdims": 0}, (np.array([0, 2]),)),
    "reducemean_all": ("ReduceMean", (2, 3, 4), {"keepdims": 0}, ()),
    "flatten_2": ("Flatten", (2, 3, 4, 5), {"axis": 2}, ()),
    "layernorm": ("LayerNormalization", (2, 3, 4), {"epsilon": 1e-3},
                  (np.linspace(0.5, 1.5, 4).astype(F32), np.linspace(-1, 1, 4).astype(F32))),
    "prelu": ("PRelu", (2, 3, 4, 4), {}, (np.array([0.1, 0.2, 0.3], F32).reshape(3, 1, 1),)),
    "expand": ("Expand", (3, 1), {}, (np.array([2, 3, 4]),)),
    "gather_scalar": ("Gather", (2, 3, 4), {"axis": 1}, (np.array(-1),)),
    "argmin": ("ArgMin", (2, 3, 4), {"axis": 2}, ()),
    "pow": ("Pow", (2, 3), {}, (np.array(3.0, F32),)),
    "erf": ("Erf", (4, 50), {}, ()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_op_matches_onnx_runtime(case):
    op, shape, attrs, consts = CASES[case]
    model = _single(op, shape, attrs, consts)
    x = np.random.default_rng(7).standard_normal(shape).astype(F32)
    want = _ort(model, {"x": x})[0]
    got = load(model)(x).numpy()
    _close(got, want)


def test_split_by_count_and_unsqueeze_squeeze_chain():
    split = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)
    unsq = helper.make_node("Unsqueeze", ["c", "axes"], ["d"])
    sq = helper.make_node("Squeeze", ["d", "axes"], ["e"])
    graph = helper.make_graph([split, unsq, sq], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                     ["n", 7])],
                              [helper.make_empty_tensor_value_info(o) for o in "abe"],
                              [numpy_helper.from_array(np.array([0, -1]), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(F32)
    for got, want in zip(_outputs(load(model)(x)), _ort(model, {"x": x})):
        _close(got, want)


def test_unsupported_op_names_the_op_node_and_index():
    model = _single("Einsum", (2, 3), {"equation": "ij->ji"})
    with pytest.raises(OnnxLoadError, match=r"unsupported ONNX op 'Einsum' \(node 'the_einsum', index 0\)"):
        load(model)


def test_opset_before_13_is_refused():
    with pytest.raises(OnnxLoadError, match="opset 12; opset 13 or later"):
        load(_single("Relu", (2, 3), opset=12))


def test_a_node_failing_at_run_time_is_named():
    model = _single("Resize", (1, 2, 3, 4), {"mode": "cubic"}, (None, np.array([1, 1, 2, 2], F32)))
    with pytest.raises(OnnxLoadError, match=r"Resize node 'the_resize' \(node 0\).*mode 'cubic'"):
        load(model)(np.zeros((1, 2, 3, 4), F32))


def test_shape_chains_run_at_call_time_and_a_constant_op_on_a_tensor_is_named():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"]),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["y", "nf"], ["z"])]
    inits = [numpy_helper.from_array(np.array([v]), name) for name, v in (("zero", 0), ("one", 1))]
    inits.append(numpy_helper.from_array(np.array([2, 3]), "rest"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                              [helper.make_empty_tensor_value_info("z")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    loaded = load(model)
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(F32)
        _close(loaded(x).numpy(), _ort(model, {"x": x})[0])
    with pytest.raises(OnnxLoadError, match=r"Floor node 'the_floor' \(node 0\): it runs on constants"):
        load(_single("Floor", (2, 3)))(np.zeros((2, 3), F32))
