"""The PyTorch-style module API: names, state_dict/load_state_dict, summary, containers, BatchNorm
statistics, default initialisation, argument and dtype errors, moving models, and ResNet."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F


def _small():
    """conv -> BN -> ReLU -> linear: parameters, buffers and a gap (ReLU, Flatten) in the names."""
    return gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3), gpucnn.BatchNorm2d(2), gpucnn.ReLU(), gpucnn.Flatten(),
                             gpucnn.Linear(8, 3))


SMALL_KEYS = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
              "1.num_batches_tracked", "4.weight", "4.bias"]


def _host_state(model):
    return {k: model.backend.to_numpy(v).copy() for k, v in model.state_dict().items()}


def _assert_state_equal(state, expected):
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def _trained_small(seed=0, make=_small):
    """A small model after one Adam step, so that no entry of its state has its initial value."""
    rng = np.random.default_rng(seed)
    gpucnn.manual_seed(seed)
    with gpucnn.use_backend("numpy"):
        model = make()
    opt = gpucnn.optim.Adam(model.parameters(), lr=0.01)
    x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    gpucnn.CrossEntropyLoss()(model(x), np.array([0, 1, 2, 0])).backward()
    opt.step()
    return model, opt, x


# ---------------------------------------------------------------------------- names
def test_lenet5_state_dict_has_pytorch_names():
    model = gpucnn.LeNet5()
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
                           "11.weight", "11.bias"]
    assert [name for name, _ in model.named_parameters()] == list(state)
    for (name, p), value in zip(model.named_parameters(), state.values()):
        assert value is p.data, name  # the live arrays, as PyTorch's state_dict gives
    assert state["0.weight"].shape == (6, 1, 5, 5) and state["11.weight"].shape == (10, 84)
    classic = gpucnn.LeNet5Classic().state_dict()
    assert list(classic)[:6] == ["0.weight", "0.bias", "2.coefficient", "2.bias", "4.weight", "4.bias"]
    assert classic["4.weight"].shape == (60, 5, 5)  # C3 stores only its 60 connected filters


def test_resnet_state_dict_has_pytorch_names():
    model = gpucnn.ResNet(20, 16, num_classes=10, in_channels=3)
    state = model.state_dict()
    keys = list(state)
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    for key in ("conv1.weight", "layer1.0.bn1.running_mean", "layer1.0.bn1.num_batches_tracked",
                "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_var", "layer3.2.conv2.weight",
                "fc.bias"):
        assert key in state, key
    # stage 1 keeps its shape: identity shortcuts, no parameters; the others start with a projection
    assert not any(k.startswith("layer1.0.shortcut") for k in keys)
    assert not any(k.startswith("layer2.1.shortcut") for k in keys)
    assert "layer3.0.shortcut.0.weight" in state
    assert state["layer2.0.shortcut.0.weight"].shape == (32, 16, 1, 1)
    assert state["layer1.0.bn1.num_batches_tracked"].shape == ()
    assert state["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    assert state["fc.weight"].shape == (10, 64)
    assert [name for name, _ in model.named_children()] == ["conv1", "bn1", "layer1", "layer2", "layer3",
                                                            "avgpool", "fc"]
    assert list(model.children())[0] is model.conv1
    names = [name for name, _ in model.named_modules()]
    assert names[0] == "" and "layer2.0.shortcut.0" in names and len(names) == len(set(names))
    assert sum(1 for _ in model.modules()) == len(names)
    assert len(keys) == len(set(keys))
    params = dict(model.named_parameters())
    assert "layer1.0.bn1.running_mean" not in params and "layer1.0.bn1.weight" in params


def _resnet_cifar_count(depth, width, num_classes, in_channels):
    """He et al.'s CIFAR ResNet with BN after every conv and option-B (1x1 conv + BN) projections,
    counted from the architecture, not from gpucnn."""
    n = (depth - 2) // 6
    conv = lambda c_in, c_out, k: c_in * c_out * k * k  # noqa: E731 (no biases: BN follows)
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(in_channels, width, 3) + bn(width)
    planes = width
    for channels in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += conv(planes, channels, 3) + bn(channels) + conv(channels, channels, 3) + bn(channels)
            if planes != channels:
                total += conv(planes, channels, 1) + bn(channels)
            planes = channels
    return total + planes * num_classes + num_classes


def test_resnet20_has_the_well_known_parameter_count():
    model = gpucnn.ResNet(20, 16, num_classes=10, in_channels=3)
    assert _resnet_cifar_count(20, 16, 10, 3) == 272_474
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) == 272_474
    bn = sum(p.numel() for name, p in model.named_parameters() if ".bn" in name or name.startswith("bn")
             or "shortcut.1" in name)
    assert bn == 1_568 and model.fc.weight.numel() + model.fc.bias.numel() == 650
    assert gpucnn.ResNet(8, 8, 5, 1).num_parameters() == _resnet_cifar_count(8, 8, 5, 1)
    with pytest.raises(ValueError, match="ResNet: depth must be 6n\\+2"):
        gpucnn.ResNet(10)


def test_resnet8_forward_and_backward_shapes():
    model = gpucnn.ResNet(8, 8, num_classes=5, in_channels=1, rng=np.random.default_rng(0))
    x = gpucnn.tensor(np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32),
                      requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5) and out.dtype == np.float32
    gpucnn.CrossEntropyLoss()(out, np.array([1, 3])).backward()
    assert x.grad.shape == x.shape and np.isfinite(x.grad.numpy()).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype, name
    assert int(model.bn1.num_batches_tracked) == 1
    assert int(model.layer2[0].shortcut[1].num_batches_tracked) == 1
    model.eval()
    with gpucnn.no_grad():
        assert model(x).shape == (2, 5)
    assert int(model.bn1.num_batches_tracked) == 1


# ---------------------------------------------------------------------------- load_state_dict
class _ArrayLike:
    """Neither a NumPy array nor a Tensor: something with __array__ (a PyTorch CPU tensor is one)."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


@pytest.mark.parametrize("kind", ["numpy", "tensor", "array-like"])
def test_load_state_dict_round_trip(backend, kind):
    source, _, x = _trained_small()
    expected = _host_state(source)
    assert int(expected["1.num_batches_tracked"]) == 1
    wrap = {"numpy": lambda a: a.copy(), "tensor": gpucnn.tensor, "array-like": _ArrayLike}[kind]
    given = {k: wrap(v) for k, v in expected.items()}
    with gpucnn.use_backend(backend.name):
        target = _small()
    params = list(target.parameters())
    result = target.load_state_dict(given)
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    _assert_state_equal(_host_state(target), expected)
    assert list(target.parameters()) == params  # the same Parameter objects (an optimizer keeps working)
    for v in target.state_dict().values():
        assert backend.owns(v)
    source.eval()
    target.eval()
    np.testing.assert_allclose(target(backend.asarray(x)).numpy(), source(x).numpy(), rtol=1e-5, atol=1e-6)


def test_loaded_state_is_a_copy_not_shared_with_the_source():
    source, opt, x = _trained_small()
    target = _small()
    target.load_state_dict(source.state_dict())
    loaded = _host_state(target)
    # training the source (in-place updates of its parameters and running statistics) leaves the target alone
    gpucnn.CrossEntropyLoss()(source(x), np.array([0, 1, 2, 0])).backward()
    opt.step()
    assert not np.array_equal(source[0].weight.numpy(), loaded["0.weight"])
    assert not np.array_equal(source[1].running_mean, loaded["1.running_mean"])
    _assert_state_equal(_host_state(target), loaded)


def test_load_state_dict_converts_dtypes_to_the_models():
    source, _, _ = _trained_small()
    given = {k: (v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int32))
             for k, v in _host_state(source).items()}
    target = _small()
    target.load_state_dict(given)
    for key, value in target.state_dict().items():
        assert value.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32), key
        np.testing.assert_allclose(value, given[key], rtol=1e-6)


def test_load_pytorch_state_dict():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8, 3))
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32)
    net(torch.tensor(x))  # training mode: running statistics and num_batches_tracked move
    net(torch.tensor(x + 1))
    state = net.state_dict()
    assert list(state) == SMALL_KEYS
    model = _small()
    assert model.load_state_dict(state) == ([], [])
    assert int(model[1].num_batches_tracked) == 2
    np.testing.assert_allclose(model[1].running_var, state["1.running_var"].numpy(), rtol=1e-6)
    net.eval()
    model.eval()
    with torch.no_grad():
        expected = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # parameters that require grad are accepted as they are (no .detach() needed)
    assert model.load_state_dict(dict(net.named_parameters()), strict=False).missing_keys == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]


def test_load_state_dict_names_every_problem_and_changes_nothing():
    source, _, _ = _trained_small()
    given = _host_state(source)
    del given["4.bias"], given["1.running_var"]
    given["5.weight"] = np.zeros((2, 2), np.float32)
    given["0.weight"] = np.zeros((2, 1, 3, 4), np.float32)
    given["1.num_batches_tracked"] = np.array([3])
    model = _small()
    before = _host_state(model)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(given)
    message = str(info.value)
    assert message.startswith("load_state_dict: the state does not fit Sequential")
    assert "missing: 1.running_var, 4.bias" in message
    assert "unexpected: 5.weight" in message
    assert "0.weight (given (2, 1, 3, 4), model (2, 1, 3, 3))" in message
    assert "1.num_batches_tracked (given (1,), model ())" in message
    _assert_state_equal(_host_state(model), before)
    # strict=False forgives missing and unexpected keys, never a wrong shape
    with pytest.raises(ValueError, match=r"wrong shape: 0.weight .*1.num_batches_tracked") as info:
        model.load_state_dict(given, strict=False)
    assert "missing" not in str(info.value) and "unexpected" not in str(info.value)
    _assert_state_equal(_host_state(model), before)


def test_load_state_dict_not_strict_loads_what_fits():
    source, _, _ = _trained_small()
    expected = _host_state(source)
    given = {k: v for k, v in expected.items() if not k.startswith("4.")}
    given["head.weight"] = np.zeros((3, 8), np.float32)
    model = _small()
    before = _host_state(model)
    with pytest.raises(ValueError, match="missing: 4.weight, 4.bias; unexpected: head.weight"):
        model.load_state_dict(given)
    result = model.load_state_dict(given, strict=False)
    assert result.missing_keys == ["4.weight", "4.bias"] and result.unexpected_keys == ["head.weight"]
    state = _host_state(model)
    for key in SMALL_KEYS:
        np.testing.assert_array_equal(state[key], (before if key.startswith("4.") else expected)[key], err_msg=key)


# ---------------------------------------------------------------------------- summary
def test_summary_lists_each_layers_output_shape_and_parameters(capsys):
    model = gpucnn.LeNet5()
    summary = model.summary((1, 28, 28))
    assert capsys.readouterr().out == ""  # it returns the table; printing it shows it once
    text = str(summary)
    print(summary)
    assert capsys.readouterr().out == text + "\n" and repr(summary) == text
    assert summary.total_parameters == 61_706 and summary.input_shape == (1, 1, 28, 28)
    assert summary.rows[0] == ("0", "Conv2d", (1, 6, 28, 28), 156)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "parameters"]
    rows = {line.split()[0]: line for line in lines[2:-1]}
    expected = {"0": ("Conv2d", "(1, 6, 28, 28)", "156"), "2": ("MaxPool2d", "(1, 6, 14, 14)", "0"),
                "3": ("Conv2d", "(1, 16, 10, 10)", "2,416"), "5": ("MaxPool2d", "(1, 16, 5, 5)", "0"),
                "6": ("Flatten", "(1, 400)", "0"), "7": ("Linear", "(1, 120)", "48,120"),
                "9": ("Linear", "(1, 84)", "10,164"), "11": ("Linear", "(1, 10)", "850")}
    assert len(rows) == 12  # every layer, the fused Conv2d -> ReLU -> MaxPool2d runs too
    for name, (kind, shape, count) in expected.items():
        cells = rows[name].split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        assert cells == [name, kind, shape, count], rows[name]
    assert lines[-1] == "total parameters: 61,706"


def test_summary_of_nested_modules_and_what_it_leaves_alone():
    model = _small()
    before = _host_state(model)
    text = str(model.summary((1, 4, 4), batch_size=3))
    assert "1      BatchNorm2d  (3, 2, 2, 2)" in text and "4      Linear       (3, 3)" in text
    assert text.endswith("total parameters: 51")  # 20 + 4 + 27
    assert model.training  # back in training mode, and eval mode did not touch the statistics
    _assert_state_equal(_host_state(model), before)
    resnet = str(gpucnn.ResNet(8, 4, 10, 1).summary((1, 8, 8)))
    assert "layer2.0.shortcut.0" in resnet and "(1, 8, 4, 4)" in resnet
    assert resnet.endswith(f"total parameters: {gpucnn.ResNet(8, 4, 10, 1).num_parameters():,}")


def test_summary_given_the_batch_axis_says_what_it_wants():
    model = gpucnn.LeNet5()
    with pytest.raises(ValueError) as error:
        model.summary((1, 1, 28, 28))
    message = str(error.value)
    assert "without the batch axis" in message and "input_shape=(1, 28, 28), batch_size=1" in message, message
    with pytest.raises(ValueError, match="positive ints"):
        model.summary((1, 0, 28))
    lines = []
    model.summary((1, 28, 28), print_fn=lines.append)  # print_fn still gets the table when given
    assert len(lines) == 1 and lines[0].endswith("total parameters: 61,706")


# ---------------------------------------------------------------------------- containers
def test_sequential_indexing_slicing_len_iter_append():
    model = gpucnn.LeNet5()
    layers = list(model)
    assert len(model) == len(layers) == 12
    assert model[0] is layers[0] and model[-1] is layers[11] and isinstance(model[-1], gpucnn.Linear)
    with pytest.raises(IndexError):
        model[12]
    features = model[:6]
    assert isinstance(features, gpucnn.Sequential) and len(features) == 6
    assert all(a is b for a, b in zip(features, layers[:6]))  # the same layers, not copies
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(model[6:](features(x)).numpy(), model(x).numpy())
    assert len(model[::2]) == 6 and model[::2][1] is layers[2]
    model.eval()
    assert not model[:3].training
    grown = gpucnn.Sequential(gpucnn.Linear(4, 3))
    assert grown.append(gpucnn.ReLU()).append(gpucnn.Linear(3, 2)) is grown
    assert len(grown) == 3 and [n for n, _ in grown.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                                            "2.bias"]
    assert grown(np.ones((5, 4), np.float32)).shape == (5, 2)
    with pytest.raises(TypeError, match="Sequential: item 0 must be a gpucnn Module"):
        grown.append(lambda x: x)
    grown[-1] = gpucnn.Linear(3, 4)  # replaced under its name, as PyTorch's Sequential does
    assert grown(np.ones((5, 4), np.float32)).shape == (5, 4) and "2.weight" in grown.state_dict()
    with pytest.raises(TypeError, match="Sequential: item 0 must be a gpucnn Module"):
        grown[0] = "relu"
    with pytest.raises(IndexError):
        grown[3] = gpucnn.ReLU()


def test_module_list_registers_parameters():
    class Net(gpucnn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = gpucnn.ModuleList([gpucnn.Linear(2, 2) for _ in range(3)])
            self.blocks.append(gpucnn.Linear(2, 1))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    net = Net()
    assert len(net.blocks) == 4 and isinstance(net.blocks[1:], gpucnn.ModuleList)
    assert [n for n, _ in net.named_parameters()] == [f"blocks.{i}.{w}" for i in range(4) for w in ("weight", "bias")]
    assert list(net.state_dict()) == [n for n, _ in net.named_parameters()]
    assert [n for n, _ in net.named_modules()] == ["", "blocks", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    opt = gpucnn.optim.SGD(net.parameters(), lr=0.1)
    before = net.blocks[0].weight.numpy().copy()
    gpucnn.MSELoss()(net(np.ones((3, 2), np.float32)), np.zeros((3, 1), np.float32)).backward()
    opt.step()
    assert not np.array_equal(net.blocks[0].weight.numpy(), before)


def test_concat_is_indexable_and_a_slice_keeps_its_axis():
    concat = gpucnn.Concat(gpucnn.Conv2d(3, 2, 1), gpucnn.Conv2d(3, 4, 1), gpucnn.MaxPool2d(3, 1, 1))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert len(concat) == 3 and isinstance(concat[2], gpucnn.MaxPool2d)
    y = concat(x).numpy()
    assert y.shape == (2, 9, 5, 5)
    np.testing.assert_array_equal(y[:, 2:6], concat[1](x).numpy())
    tail = concat[1:]
    assert isinstance(tail, gpucnn.Concat) and len(tail) == 2 and tail.dim == 1
    np.testing.assert_array_equal(tail(x).numpy(), y[:, 2:])
    assert list(concat.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_shared_parameters_come_once():
    shared = gpucnn.Linear(3, 3)
    model = gpucnn.Sequential(shared, gpucnn.ReLU(), shared)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(model.parameters())) == 2 and model.num_parameters() == 12
    tied = gpucnn.Linear(3, 3)
    tied.weight = shared.weight  # tied weights, separate biases
    pair = gpucnn.Sequential(shared, tied)
    assert [n for n, _ in pair.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert pair.num_parameters() == 9 + 3 + 3
    # the tied weight's gradient sums both uses
    x = gpucnn.tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    pair(x).sum().backward()
    alone = gpucnn.Linear(3, 3)
    alone.weight.data, alone.bias.data = shared.weight.data, shared.bias.data
    h = alone(x)
    g_second = np.ones((4, 3), np.float32)
    g_first = g_second @ shared.weight.numpy() * 1.0
    expected = g_second.T @ h.numpy() + g_first.T @ x.numpy()
    np.testing.assert_allclose(shared.weight.grad.numpy(), expected, rtol=1e-5, atol=1e-5)
    opt = gpucnn.optim.SGD(pair.parameters(), lr=0.1)
    assert len(opt.params) == 3


# ---------------------------------------------------------------------------- BatchNorm
def _bn_reference(xs, momentum, eps=1e-5):
    """PyTorch's running statistics over a list of batches: biased variance normalises, the unbiased
    one is tracked; momentum None is the cumulative average."""
    mean, var = None, None
    for count, x in enumerate(xs, start=1):
        axes = (0,) + tuple(range(2, x.ndim))
        m, v = x.mean(axis=axes), x.var(axis=axes, ddof=1)
        if mean is None:
            mean, var = np.zeros_like(m), np.ones_like(v)
        factor = 1.0 / count if momentum is None else momentum
        mean, var = (1 - factor) * mean + factor * m, (1 - factor) * var + factor * v
    return mean, var


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_num_batches_tracked_and_running_statistics_follow_pytorch(momentum):
    rng = np.random.default_rng(0)
    xs = [(rng.standard_normal((4, 3, 2, 2)) * (i + 1) + i).astype(np.float32) for i in range(4)]
    bn = gpucnn.BatchNorm2d(3, momentum=momentum)
    assert bn.num_batches_tracked.shape == () and int(bn.num_batches_tracked) == 0
    for count, x in enumerate(xs[:3], start=1):
        bn(x)
        assert int(bn.num_batches_tracked) == count
    bn.eval()
    bn(xs[3])  # eval: the statistics are used, not counted nor changed
    assert int(bn.num_batches_tracked) == 3
    bn.train()
    with gpucnn.no_grad():  # no_grad changes nothing here, as in PyTorch
        bn(xs[3])
    assert int(bn.num_batches_tracked) == 4
    assert bn.num_batches_tracked.dtype == np.int64
    mean, var = _bn_reference(xs, momentum)
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-5, atol=1e-6)
    off = gpucnn.BatchNorm2d(3, track_running_stats=False)
    off(xs[0])
    assert list(off.state_dict()) == ["weight", "bias"] and not hasattr(off, "num_batches_tracked")


def test_batchnorm_statistics_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for momentum in (0.1, None):
        ours, theirs = gpucnn.BatchNorm1d(3, momentum=momentum), torch.nn.BatchNorm1d(3, momentum=momentum)
        for i in range(3):
            x = (rng.standard_normal((5, 3, 4)) * (i + 1) + i).astype(np.float32)
            np.testing.assert_allclose(ours(x).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5,
                                       atol=1e-5)
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)], ids=["NC", "NCL"])
def test_batchnorm1d_matches_the_numpy_formula(shape):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    bn = gpucnn.BatchNorm1d(3)
    gamma, beta = rng.uniform(0.5, 2, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    bn.weight.data, bn.bias.data = gamma.copy(), beta.copy()
    axes = (0,) if len(shape) == 2 else (0, 2)
    channel = (1, 3) if len(shape) == 2 else (1, 3, 1)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    xhat = (x64 - mean.reshape(channel)) / np.sqrt(var.reshape(channel) + 1e-5)
    xt = gpucnn.tensor(x, requires_grad=True)
    y = bn(xt)
    np.testing.assert_allclose(y.numpy(), xhat * gamma.reshape(channel) + beta.reshape(channel), rtol=1e-4,
                               atol=1e-5)
    g = rng.standard_normal(shape).astype(np.float32)
    y.backward(g)
    np.testing.assert_allclose(bn.weight.grad.numpy(), (g * xhat).sum(axis=axes), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.bias.grad.numpy(), g.sum(axis=axes), rtol=1e-4, atol=1e-4)
    assert xt.grad.shape == shape
    n = x.size // 3
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    bn.eval()
    rm, rv = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
    expected = (x64 - rm.reshape(channel)) / np.sqrt(rv.reshape(channel) + 1e-5) * gamma.reshape(channel) \
        + beta.reshape(channel)
    np.testing.assert_allclose(bn(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected a 2 or 3-D input \(N, C\) or \(N, C, L\)"):
        bn(np.zeros((2, 3, 4, 4), np.float32))


# ---------------------------------------------------------------------------- argument errors
class _MyConv(gpucnn.Conv2d):
    """A user's subclass with no __init__ of its own."""


@pytest.mark.parametrize("make, layer", [
    (lambda: gpucnn.MaxPool2d(2, foo=1), "MaxPool2d"),
    (lambda: gpucnn.AvgPool2d(2, foo=1), "AvgPool2d"),
    (lambda: gpucnn.Conv2d(1, 1, 3, foo=1), "Conv2d"),
    (lambda: gpucnn.Conv1d(1, 1, 3, foo=1), "Conv1d"),
    (lambda: _MyConv(1, 1, 3, foo=1), "_MyConv"),
    (lambda: gpucnn.Linear(2, 2, foo=1), "Linear"),
    (lambda: gpucnn.BatchNorm1d(2, foo=1), "BatchNorm1d"),
    (lambda: gpucnn.BatchNorm2d(2, foo=1), "BatchNorm2d"),
    (lambda: gpucnn.GlobalAvgPool2d(foo=1), "GlobalAvgPool2d"),
    (lambda: gpucnn.ReLU(foo=1), "ReLU"),
    (lambda: gpucnn.Sigmoid(foo=1), "Sigmoid"),
    (lambda: gpucnn.Softmax(foo=1), "Softmax"),
    (lambda: gpucnn.LogSoftmax(foo=1), "LogSoftmax"),
    (lambda: gpucnn.CrossEntropyLoss(foo=1), "CrossEntropyLoss"),
    (lambda: gpucnn.Sequential(foo=1), "Sequential"),
    (lambda: gpucnn.LeNet5(foo=1), "LeNet5"),
    (lambda: gpucnn.ResNet(8, foo=1), "ResNet"),
])
def test_unknown_keyword_names_the_layer_called(make, layer):
    with pytest.raises(TypeError) as info:
        make()
    message = str(info.value)
    assert message.startswith(f"{layer}: unexpected keyword argument 'foo'"), message
    assert f"{layer} takes " in message


def test_pytorch_only_features_say_so():
    for make, name, value in ((lambda: gpucnn.MaxPool2d(2, dilation=2), "dilation", 2),
                              (lambda: gpucnn.AvgPool2d(2, divisor_override=3), "divisor_override", 3)):
        with pytest.raises(ValueError) as info:
            make()
        assert f"Pool2d: {name}={value!r} is not supported by gpucnn (PyTorch has it" in str(info.value)
    for layer in (gpucnn.Conv2d, gpucnn.Conv1d):
        with pytest.raises(ValueError, match=f"{layer.__name__}: padding_mode must be one of 'zeros', 'reflect', "
                                             f"'replicate', 'circular', got 'mirror'"):
            layer(1, 1, 3, padding_mode="mirror")
    with pytest.raises(TypeError, match=r"Conv2d: unexpected keyword argument 'device'; device: gpucnn layers are "
                                        r"created on the current backend"):
        gpucnn.Conv2d(1, 1, 3, device="cuda")
    with pytest.raises(TypeError, match="GELU: unexpected keyword argument 'inplace'; GELU takes approximate"):
        gpucnn.GELU(inplace=True)  # as in PyTorch, which has no inplace on GELU
    relu = gpucnn.ReLU(inplace=True)  # accepted, as PyTorch's signature has it; the output is a new tensor
    x = gpucnn.tensor(np.array([-1.0, 2.0], np.float32))
    assert relu(x).numpy().tolist() == [0.0, 2.0] and x.numpy().tolist() == [-1.0, 2.0]
    # PyTorch's positional order: kernel_size, stride, padding, dilation, return_indices, ceil_mode
    pool = gpucnn.MaxPool2d(3, 2, 1, 1, False, True)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == ((3, 3), (2, 2), (1, 1), True)
    assert pool(np.zeros((1, 1, 6, 6), np.float32)).shape == (1, 1, 4, 4)
    y, indices = gpucnn.MaxPool2d(2, return_indices=True)(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    assert y.shape == (1, 1, 2, 2) and indices.dtype == np.int64 and not indices.requires_grad
    assert indices.numpy().ravel().tolist() == [5, 7, 13, 15]


@pytest.mark.parametrize("make, shape", [
    (lambda: gpucnn.Linear(3, 2), (2, 3)),
    (lambda: gpucnn.Conv2d(1, 2, 3), (2, 1, 5, 5)),
    (lambda: gpucnn.Conv1d(1, 2, 3), (2, 1, 5)),
    (lambda: gpucnn.BatchNorm2d(2), (3, 2, 2, 2)),
], ids=["Linear", "Conv2d", "Conv1d", "BatchNorm2d"])
def test_mixed_dtype_is_refused_naming_the_layer(make, shape):
    layer = make()
    name = type(layer).__name__
    for x in (np.zeros(shape), gpucnn.tensor(np.zeros(shape), dtype=np.float64, requires_grad=True)):
        with pytest.raises(TypeError, match=f"{name}: input dtype float64 differs from weight dtype float32"):
            layer(x)
    assert all(p.grad is None for p in layer.parameters())
    with pytest.raises(TypeError, match=f"{name}: input dtype float32 differs from weight dtype float64"):
        _float64_twin(layer)(np.zeros(shape, np.float32))


def _float64_twin(layer):
    if isinstance(layer, gpucnn.BatchNorm2d):
        return gpucnn.BatchNorm2d(layer.num_features, dtype=np.float64)
    if isinstance(layer, gpucnn.Linear):
        return gpucnn.Linear(layer.in_features, layer.out_features, dtype=np.float64)
    return type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size[-1], dtype=np.float64)


def test_float64_input_leaves_no_float64_gradient_on_a_float32_weight():
    layer = gpucnn.Linear(3, 2)
    x = gpucnn.tensor(np.ones((2, 3)), dtype=np.float64, requires_grad=True)
    with pytest.raises(TypeError, match="Linear: input dtype float64"):
        layer(x)
    assert layer.weight.grad is None and layer.bias.grad is None and x.grad is None
    # the same product written with generic ops promotes to float64; the weight's gradient still comes
    # back in the weight's dtype
    y = (x.reshape(2, 1, 3) * layer.weight.reshape(1, 2, 3)).sum(dim=2)
    assert y.dtype == np.float64 and y.shape == (2, 2)
    y.sum().backward()
    assert layer.weight.grad.dtype == np.float32 and x.grad.dtype == np.float64
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.full((2, 3), 2.0))


def test_asarray_keeps_a_0d_array_0d(backend):
    for value in (np.array(1.0), np.array(3, np.int64), 2.5):
        a = backend.asarray(value)
        assert a.shape == () and backend.owns(a)
    assert backend.asarray(np.array(1.0), dtype=np.float32).shape == ()
    assert backend.asarray(np.array(1.0), dtype=np.float32).dtype == np.float32
    assert backend.asarray(np.ones((1,))).shape == (1,)


# ---------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("make, fan_in", [
    (lambda: gpucnn.Conv2d(32, 64, 3), 32 * 9),
    (lambda: gpucnn.Conv2d(8, 16, 3, groups=4), 2 * 9),
    (lambda: gpucnn.Linear(2048, 128), 2048),
    (lambda: gpucnn.Conv1d(16, 32, 5), 16 * 5),
], ids=["Conv2d", "Conv2d-groups", "Linear", "Conv1d"])
def test_default_init_is_pytorchs(make, fan_in):
    gpucnn.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.95 * bound  # uniform over the whole range
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)
    assert abs(w.mean()) < 4 * w.std() / math.sqrt(w.size) and np.count_nonzero(b) == b.size
    if isinstance(layer, gpucnn.Conv1d):
        assert w.shape == (32, 16, 5)
    # a named initialiser keeps its published form and zero biases
    named = (gpucnn.Linear(2048, 128, init="kaiming") if isinstance(layer, gpucnn.Linear)
             else type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size[-1], groups=layer.groups,
                              init="kaiming"))
    np.testing.assert_allclose(named.weight.numpy().std(), math.sqrt(2 / fan_in), rtol=0.05)
    assert not named.bias.numpy().any()


def _pytorch_mnist_net():
    """The network of PyTorch's examples/mnist."""
    return gpucnn.Sequential(
        gpucnn.Conv2d(1, 32, 3), gpucnn.ReLU(), gpucnn.Conv2d(32, 64, 3), gpucnn.ReLU(), gpucnn.MaxPool2d(2),
        gpucnn.Dropout(0.25), gpucnn.Flatten(), gpucnn.Linear(9216, 128), gpucnn.ReLU(), gpucnn.Dropout(0.5),
        gpucnn.Linear(128, 10))


def test_pytorch_mnist_net_starts_near_chance_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    for seed in (0, 1):
        gpucnn.manual_seed(seed)
        net = _pytorch_mnist_net()
        assert net.num_parameters() == 1_199_882  # as in PyTorch
        loss = gpucnn.CrossEntropyLoss()(net(x), y).item()
        assert abs(loss - math.log(10)) < 0.3, loss


def test_lenet5_keeps_he_normal_init():
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    for index, fan_in, tolerance in ((0, 25, 0.15), (3, 150, 0.08), (7, 400, 0.03), (9, 120, 0.05)):
        layer = model[index]
        np.testing.assert_allclose(layer.weight.numpy().std(), math.sqrt(2 / fan_in), rtol=tolerance)
        assert not layer.bias.numpy().any()
    # the output layer is Glorot-uniform: bound sqrt(6 / (84 + 10))
    out = model[11].weight.numpy()
    assert np.abs(out).max() <= math.sqrt(6 / 94) and np.abs(out).max() > 0.9 * math.sqrt(6 / 94)
    assert not model[11].bias.numpy().any()


# ---------------------------------------------------------------------------- moving models
def test_model_to_cuda_sim_and_back_keeps_parameters_and_optimizer_state():
    try:
        gpucnn.get_backend("cuda-sim")
    except Exception as error:  # pragma: no cover - depends on the machine's compiler
        pytest.skip(f"cuda-sim unavailable: {error}")
    def make():  # no conv bias before the BN: its gradient is rounding noise, which Adam would amplify
        return gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3, bias=False), gpucnn.BatchNorm2d(2), gpucnn.ReLU(),
                                 gpucnn.Flatten(), gpucnn.Linear(8, 3))

    moved, opt, x = _trained_small(0, make)
    stay, opt_stay, _ = _trained_small(0, make)
    before = _host_state(moved)
    state = {n: {k: v.copy() for k, v in p.state.items()} for n, p in moved.named_parameters()}
    assert moved.to("cuda-sim") is moved
    sim = gpucnn.get_backend("cuda-sim")
    assert gpucnn.backend_of(moved) == "cuda-sim" and all(m.backend is sim for m in moved.modules())
    _assert_state_equal(_host_state(moved), before)
    for name, p in moved.named_parameters():
        assert p.backend is sim and sorted(p.state) == ["m", "v"]
        for key, value in state[name].items():
            np.testing.assert_array_equal(p.state[key], value)
    # one more step there and one at home agree: the state really moved along
    labels = np.array([0, 1, 2, 0])
    for model, optimizer in ((moved, opt), (stay, opt_stay)):
        optimizer.zero_grad()
        gpucnn.CrossEntropyLoss()(model(model.backend.asarray(x)), labels).backward()
        optimizer.step()
    assert opt.step_count == 2
    moved.to("numpy")
    assert all(m.backend.name == "numpy" for m in moved.modules())
    expected = _host_state(stay)
    for key, value in _host_state(moved).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for (name, p), (_, q) in zip(moved.named_parameters(), stay.named_parameters()):
        assert type(p.state["m"]) is np.ndarray
        np.testing.assert_allclose(p.state["v"], q.state["v"], rtol=1e-5, atol=1e-9, err_msg=name)


# ---------------------------------------------------------------------------- small modules
def test_softmax_log_softmax_losses_and_identity():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    p = gpucnn.Softmax(dim=1)(logits).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5)
    logp = gpucnn.LogSoftmax(dim=1)(logits)
    np.testing.assert_allclose(logp.numpy(), np.log(p), rtol=1e-5, atol=1e-6)
    nll = gpucnn.NLLLoss()(logp, labels).item()
    assert nll == pytest.approx(gpucnn.CrossEntropyLoss()(logits, labels).item(), rel=1e-6)
    assert nll == pytest.approx(-np.log(p[np.arange(5), labels]).mean(), rel=1e-5)
    assert gpucnn.SoftmaxCrossEntropy is gpucnn.CrossEntropyLoss
    target = rng.standard_normal((5, 4)).astype(np.float32)
    assert gpucnn.MSELoss()(logits, target).item() == pytest.approx(((logits - target) ** 2).mean(), rel=1e-5)
    loss = gpucnn.CrossEntropyLoss()(logits, labels)
    assert loss.shape == () and isinstance(loss, gpucnn.Tensor)
    x = gpucnn.tensor(logits)
    assert gpucnn.Identity(3, foo=1)(x) is x  # PyTorch's Identity ignores its arguments too
    pooled = gpucnn.AdaptiveAvgPool2d((2, 3))(rng.standard_normal((2, 3, 4, 6)).astype(np.float32))
    assert pooled.shape == (2, 3, 2, 3)
    assert F.adaptive_avg_pool2d(np.ones((1, 1, 4, 4), np.float32), 1).numpy().item() == 1.0


def test_a_layer_used_twice_is_in_state_dict_under_both_names_as_in_pytorch(tmp_path):
    layer = gpucnn.Linear(3, 3)
    model = gpucnn.Sequential(layer, gpucnn.ReLU(), layer)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    model.load_state_dict({k: np.asarray(v) + 1 for k, v in model.state_dict().items()})
    gpucnn.save(tmp_path / "shared.npz", model)
    gpucnn.load(tmp_path / "shared.npz", model)


def test_sequential_slices_keep_layer_names():
    model = gpucnn.LeNet5()
    head = model[7:]
    assert type(head) is gpucnn.Sequential
    assert list(head.state_dict())[:2] == ["7.weight", "7.bias"]
    assert head[0] is model[7]


def test_zero_grad_without_set_to_none_zeroes_the_gradients():
    model = gpucnn.Linear(2, 2)
    model(np.ones((1, 2), np.float32)).sum().backward()
    model.zero_grad(set_to_none=False)
    assert np.array_equal(model.weight.grad.numpy(), np.zeros((2, 2), np.float32))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    assert model.weight.grad is None
