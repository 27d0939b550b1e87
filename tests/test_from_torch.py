"""``gpucnn.interop.from_torch``: PyTorch models (LeNet-5-like, ResNet-18-like, a functional forward, nested
containers), traced with torch.fx, become gpucnn modules with torch's state_dict, outputs, gradients and SGD
steps (float64, so equal to rounding); on cuda-sim too; an op gpucnn lacks is named with its place."""

from __future__ import annotations

import operator

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
tF = torch.nn.functional

import gpucnn  # noqa: E402
from gpucnn.interop import FxModule, TorchConversionError, from_torch  # noqa: E402
from gpucnn.interop_fx import check_outputs  # noqa: E402


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gpucnn.use_backend("numpy"):
        yield


# ---------------------------------------------------------------------------------------------- models
def lenet5() -> tnn.Module:
    return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2), tnn.Flatten(),
                          tnn.Linear(400, 120), tnn.ReLU(inplace=True), tnn.Dropout(0.3), tnn.Linear(120, 84),
                          tnn.GELU(), tnn.Linear(84, 10))


class BasicBlock(tnn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(tnn.Module):
    """torchvision's resnet18 layout (stem, 4 stages of 2 blocks, avgpool, fc), narrow for CPU tests."""

    def __init__(self, widths=(4, 8, 8, 16), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(widths[0])
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", tnn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
            cin = width
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Functional(tnn.Module):
    """A forward of functions: F.relu, torch.flatten, an operator.add residual, torch.cat, views, a learned
    scale (get_attr), a buffer, F.dropout following the mode, methods."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tnn.Conv2d(3, 6, 3, padding=1)
        self.b = tnn.Conv2d(6, 6, 3, padding=1)
        self.c = tnn.Conv2d(3, 2, 1)
        self.fc = tnn.Linear(8 * 4 * 4, 5)
        self.scale = tnn.Parameter(torch.full((1, 8, 1, 1), 0.5))
        self.register_buffer("shift", torch.linspace(-1, 1, 8).reshape(1, 8, 1, 1))

    def forward(self, x):
        h = tF.relu(self.a(x))
        h = operator.add(h, self.b(h))          # residual
        h = torch.cat([h, torch.sigmoid(self.c(x))], dim=1)
        h = tF.max_pool2d(h, kernel_size=2)
        h = h * self.scale + self.shift
        h = tF.dropout(h, 0.5, self.training)
        s = h.mean((2, 3), keepdim=True).relu()
        h = (h - s).permute(0, 2, 3, 1).transpose(1, 2).contiguous()
        h = torch.flatten(h.transpose(1, 2).permute(0, 3, 1, 2), 1)
        h = h.view(h.size(0), -1)
        return tF.log_softmax(self.fc(h), dim=1) + torch.tanh(h).sum(1, keepdim=True) / h.shape[1]


class Nested(tnn.Module):
    """Nested Sequentials, a ModuleList of them run in a loop, a ModuleDict, a shared layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = tnn.Sequential(tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4)),
                                       tnn.SiLU(), tnn.Sequential(tnn.Conv2d(4, 4, 3), tnn.LeakyReLU(0.1)))
        self.stages = tnn.ModuleList([tnn.Sequential(tnn.Conv2d(4, 4, 3, padding=1), tnn.ReLU()) for _ in range(3)])
        self.heads = tnn.ModuleDict({"pool": tnn.AdaptiveAvgPool2d(1), "fc": tnn.Linear(4, 3)})
        self.act = tnn.Hardswish()

    def forward(self, x):
        x = self.features(x)
        for stage in self.stages:
            x = self.act(stage(x)) + x
        return self.heads["fc"](self.heads["pool"](x).flatten(1))


# ---------------------------------------------------------------------------------------------- helpers
def _assert_same(torch_model, model, x, backend="numpy"):
    """outputs, state_dict, gradients of a loss, one SGD step: gpucnn's equal torch's (float64)."""
    rng = np.random.default_rng(3)
    tx = torch.from_numpy(x)
    tout = torch_model(tx)
    weights = rng.standard_normal(tuple(tout.shape))
    gb = gpucnn.get_backend(backend)
    gin = gb.asarray(x)
    out = model(gin)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    (tout * torch.from_numpy(weights)).sum().backward()
    (out * gpucnn.tensor(weights, backend=gb)).sum().backward()
    tgrads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    assert grads.keys() == tgrads.keys()
    for k in grads:
        np.testing.assert_allclose(grads[k], tgrads[k], rtol=1e-9, atol=1e-10, err_msg=k)
    torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9).step()
    gpucnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
    _assert_state_equal(torch_model, model)
    np.testing.assert_allclose(model(gin).numpy(), torch_model(tx).detach().numpy(), rtol=1e-10, atol=1e-10)


def _assert_state_equal(torch_model, model):
    tstate, state = torch_model.state_dict(), model.state_dict()
    assert list(state) == list(tstate)
    for key, value in state.items():
        np.testing.assert_allclose(np.asarray(model.backend.to_numpy(value)), tstate[key].numpy(), rtol=1e-12,
                                   atol=1e-12, err_msg=key)


def _input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------------------- tests
def test_lenet5_sequential():
    torch.manual_seed(0)
    t = lenet5().double().eval()
    x = _input((4, 1, 28, 28))
    model = from_torch(t, example_input=x)
    assert isinstance(model, FxModule) and not model.training
    assert isinstance(model._modules["0"], gpucnn.nn.Conv2d) and model._modules["0"].weight.dtype == np.float64
    assert isinstance(model._modules["9"], gpucnn.nn.Dropout) and model._modules["9"].p == 0.3
    _assert_state_equal(t, model)
    _assert_same(t, model, x)


def test_resnet18_trains_like_torch():
    torch.manual_seed(1)
    t = ResNet18().double().train()
    x = _input((2, 3, 32, 32), seed=1)
    model = from_torch(t)
    assert model.training
    assert isinstance(model.layer1, gpucnn.nn.Sequential) and isinstance(model.layer1[0], FxModule)
    assert isinstance(model.layer2[0].downsample, gpucnn.nn.Sequential)
    assert "layer4.1.bn2.num_batches_tracked" in model.state_dict()
    _assert_same(t, model, x)  # batch statistics, running averages, gradients, the step
    # a block runs by itself too (its own traced graph)
    t.eval(), model.eval()
    h = _input((2, 4, 8, 8), seed=2)
    np.testing.assert_allclose(model.layer1[0](h).numpy(), t.layer1[0](torch.from_numpy(h)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)


def test_functional_forward():
    torch.manual_seed(2)
    t = Functional().double().eval()
    x = _input((3, 3, 8, 8), seed=4)
    model = from_torch(t, example_input=x)
    assert model.state_dict().keys() == t.state_dict().keys()
    assert "shift" in model.state_dict() and "scale" in dict(model.named_parameters())
    assert "torch.cat" not in model.code and "dropout" in model.code
    _assert_same(t, model, x)
    # F.dropout(training=self.training) follows the converted module's mode, not the trace's
    model.train()
    assert not np.allclose(model(x).numpy(), t(torch.from_numpy(x)).detach().numpy())


def test_nested_containers():
    torch.manual_seed(3)
    t = Nested().double().train()
    x = _input((2, 3, 9, 9), seed=5)
    model = from_torch(t)
    assert isinstance(model.features[0], gpucnn.nn.Sequential)
    assert isinstance(model.stages, gpucnn.nn.ModuleList) and len(model.stages) == 3
    assert isinstance(model.heads, FxModule) and isinstance(model.heads.fc, gpucnn.nn.Linear)
    _assert_same(t, model, x)


def test_shared_layer_stays_shared():
    relu_conv = tnn.Conv2d(2, 2, 3, padding=1)
    t = tnn.Sequential(relu_conv, tnn.ReLU(), relu_conv).double()
    model = from_torch(t)
    assert model._modules["0"] is model._modules["2"]
    assert list(model.state_dict()) == list(t.state_dict())
    _assert_same(t, model, _input((1, 2, 5, 5)))


def test_float32_model_and_example_check():
    torch.manual_seed(4)
    t = lenet5().eval()
    x = _input((2, 1, 28, 28)).astype(np.float32)
    model = from_torch(t, example_input=torch.from_numpy(x))
    assert model._modules["0"].weight.dtype == np.float32
    model._modules["12"].bias.data[0] += 1.0  # no longer the same model
    with pytest.raises(ValueError, match="output 0 of the converted model differs"):
        check_outputs(t, model, x)


def test_a_leaf_root_becomes_its_twin():
    t = tnn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1, groups=1).double()
    model = from_torch(t, example_input=_input((1, 3, 8, 8)))
    assert type(model) is gpucnn.nn.Conv2d and model.stride == (2, 2)


def test_runs_on_cuda_sim():
    torch.manual_seed(5)
    t = tnn.Sequential(tnn.Conv2d(1, 3, 3, padding=1), tnn.BatchNorm2d(3), tnn.ReLU(), tnn.MaxPool2d(2),
                       tnn.Flatten(), tnn.Linear(3 * 3 * 3, 4)).double().train()
    model = from_torch(t).to("cuda-sim")
    assert model.backend.name == "cuda-sim"
    _assert_same(t, model, _input((2, 1, 6, 6), seed=6), backend="cuda-sim")


class _Decoder(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), dim=1)


class _WithDecoder(tnn.Module):
    def __init__(self, decoder: tnn.Module) -> None:
        super().__init__()
        self.stem = tnn.Conv2d(2, 2, 1)
        self.decoder = decoder

    def forward(self, x):
        return self.decoder(self.stem(x))


def test_unsupported_function_is_named_with_its_place():
    with pytest.raises(NotImplementedError, match=r"no gpucnn equivalent for torch\.cumsum at model\.decoder "
                                                  r"\(node cumsum\)"):
        from_torch(_WithDecoder(_Decoder()))


def test_unsupported_module_is_named_with_its_place():
    decoder = tnn.Sequential(tnn.Conv2d(2, 2, 1), tnn.Unfold(2))
    with pytest.raises(TorchConversionError, match=r"no gpucnn equivalent for torch\.nn\.Unfold at "
                                                   r"model\.decoder\.1 \(node decoder_1\)"):
        from_torch(_WithDecoder(decoder))


def test_unsupported_method_and_arguments_are_named():
    class Cumsum(tnn.Module):
        def forward(self, x):
            return x.cumsum(1)

    with pytest.raises(NotImplementedError, match=r"Tensor\.cumsum at model \(node cumsum\)"):
        from_torch(Cumsum())

    class Divisor(tnn.Module):
        def forward(self, x):
            return tF.avg_pool2d(x, 2, divisor_override=3)

    # gpucnn refuses divisor_override when it runs; a note names the step
    with pytest.raises(ValueError, match="divisor_override=3 is not supported") as error:
        from_torch(Divisor(), example_input=_input((1, 1, 4, 4)))
    assert "avg_pool2d = gpucnn.functions.avgpool2d.avg_pool2d(x, 2, divisor_override=3)" in error.value.__notes__[-1]
    # a constructor argument gpucnn's twin refuses: the layer, its place and gpucnn's reason
    with pytest.raises(TorchConversionError, match=r"torch\.nn\.MaxPool2d at model\.1 \(node _1\): .*dilation"):
        from_torch(tnn.Sequential(tnn.Conv2d(1, 1, 3), tnn.MaxPool2d(2, dilation=2)))


def test_import_gpucnn_interop_fx_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import gpucnn.interop, gpucnn.interop_fx; "
            "print(callable(gpucnn.interop.from_torch))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


#: torch layer -> an input; each converts to its gpucnn twin (when gpucnn.nn has it) with equal outputs
_LAYERS = [
    lambda: tnn.Conv2d(4, 6, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2, bias=False),
    lambda: tnn.Conv2d(4, 4, 3, padding="same"), lambda: tnn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2),
    lambda: tnn.Linear(8, 3), lambda: tnn.BatchNorm2d(4, eps=1e-3, momentum=0.2),
    lambda: tnn.BatchNorm1d(4, affine=False), lambda: tnn.BatchNorm2d(4, track_running_stats=False),
    lambda: tnn.LayerNorm((8, 8), bias=False), lambda: tnn.GroupNorm(2, 4), lambda: tnn.InstanceNorm2d(4, affine=True),
    lambda: tnn.LocalResponseNorm(3), lambda: tnn.MaxPool2d(3, 2, 1, ceil_mode=True),
    lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False), lambda: tnn.AdaptiveAvgPool2d((3, 2)),
    lambda: tnn.ReLU6(), lambda: tnn.LeakyReLU(0.2), lambda: tnn.ELU(0.5), lambda: tnn.GELU("tanh"),
    lambda: tnn.Mish(), lambda: tnn.Softplus(2.0, 5.0), lambda: tnn.Hardsigmoid(), lambda: tnn.Softmax(1),
    lambda: tnn.LogSoftmax(dim=-1), lambda: tnn.Dropout2d(0.2), lambda: tnn.Flatten(1, 2), lambda: tnn.Identity(),
    lambda: tnn.ZeroPad2d((1, 2, 0, 3)), lambda: tnn.ReflectionPad2d(2), lambda: tnn.PReLU(4, 0.1),
    lambda: tnn.PixelShuffle(2), lambda: tnn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
]


@pytest.mark.parametrize("make", _LAYERS, ids=lambda make: type(make()).__name__ + str(_LAYERS.index(make)))
def test_each_layer_converts_to_its_twin(make):
    layer = make().double().eval()
    if not hasattr(gpucnn.nn, type(layer).__name__):
        pytest.skip(f"gpucnn.nn has no {type(layer).__name__} yet")
    x = _input((2, 4, 8) if isinstance(layer, (tnn.Conv1d, tnn.BatchNorm1d)) else (2, 4, 8, 8))
    model = from_torch(tnn.Sequential(layer), example_input=x)
    assert type(model._modules["0"]).__name__ == type(layer).__name__
    _assert_state_equal(tnn.Sequential(layer), model)
