"""Whole networks against PyTorch: forward, loss, every gradient and the BatchNorm statistics.

Each gpucnn network has a PyTorch twin with the same attribute names (ResNet's from
``gpucnn.interop.torch_resnet``, the others written here), so
``load_state_dict(torch_model.state_dict())`` carries the weights over as they are and every
gradient can be compared by name. Every case runs on each backend (numpy and cuda-sim; cuda where
a GPU is present) in float64 and float32.

Tolerances: float64 is checked to rtol 1e-9 -- the two libraries sum in different orders (im2col
GEMMs vs PyTorch's direct/oneDNN convolutions, pairwise vs sequential BatchNorm reductions), which
in float64 leaves ~1e-14 relative differences, so 1e-9 still catches any wrong formula. float32
keeps only ~7 digits: summation-order rounding of ~1e-7 per op grows through a dozen layers, and
BatchNorm in training mode divides by the batch standard deviation, which magnifies it, so float32
is checked to rtol 1e-4. Both compare against the largest magnitude of the expected array as well
(``atol = rtol * max|expected|``), because a gradient entry that cancels to near zero carries the
absolute, not the relative, rounding error of its terms.

PyTorch is optional (CI does not install it): without it the whole module is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
from gpucnn.interop import torch_basic_block, torch_resnet  # noqa: E402  (the ResNet twins, written once)

nn = torch.nn
TF = torch.nn.functional

RTOL = {np.float64: 1e-9, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]


# ---------------------------------------------------------------------------- helpers
def _np(value) -> np.ndarray:
    """A host float/int array from a gpucnn Tensor, a backend array or a PyTorch tensor."""
    if isinstance(value, gpucnn.Tensor):
        return value.numpy()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if type(value).__module__.split(".")[0] == "cupy":
        return value.get()
    return np.asarray(value)


def _close(actual, expected, dtype, what: str) -> None:
    actual, expected = _np(actual), _np(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs PyTorch's {expected.shape}"
    rtol = RTOL[dtype]
    atol = rtol * float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def _input(rng, shape, dtype, backend):
    """The same values as a gpucnn leaf on ``backend`` and as a PyTorch leaf, both requiring grad."""
    x = rng.standard_normal(shape).astype(dtype)
    return (gpucnn.tensor(x, requires_grad=True, backend=backend.name),
            torch.from_numpy(x.copy()).requires_grad_())


def _twin(torch_model: nn.Module, dtype) -> nn.Module:
    return torch_model.to(TORCH_DTYPE[dtype])


def _randomize_batchnorm(torch_model: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics: weight 1, bias 0 hide mistakes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in torch_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c, dt = m.num_features, m.weight.dtype
                m.weight.copy_(0.5 + torch.rand(c, generator=gen, dtype=dt))
                m.bias.copy_(torch.randn(c, generator=gen, dtype=dt))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=gen, dtype=dt))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen, dtype=dt))
                m.num_batches_tracked.fill_(3)


def _load(gmodel: gpucnn.Module, torch_model: nn.Module) -> None:
    """Load the twin's state_dict as is (PyTorch tensors, PyTorch's names), after checking both
    name the same entries. load_state_dict copies (test_load_state_dict_copies): were it to alias
    the tensors' memory, both libraries would update one shared running_mean, and comparing them
    would prove nothing."""
    assert list(gmodel.state_dict()) == list(torch_model.state_dict()), "state_dict names differ from PyTorch's"
    gmodel.load_state_dict(torch_model.state_dict())


def _compare_grads(gmodel: gpucnn.Module, torch_model: nn.Module, dtype, label: str = "") -> None:
    theirs = dict(torch_model.named_parameters())
    ours = dict(gmodel.named_parameters())
    assert list(ours) == list(theirs), "parameter names differ from PyTorch's"
    for name, p in ours.items():
        assert p.grad is not None, f"{label}{name}: no gradient"
        assert theirs[name].grad.abs().max() > 0, f"{label}{name}: PyTorch's gradient is all zero, a vacuous check"
        _close(p.grad, theirs[name].grad, dtype, f"{label}gradient of {name}")


def _compare_state(gmodel: gpucnn.Module, torch_model: nn.Module, dtype) -> None:
    """Every state_dict entry: parameters, running_mean/var (float), num_batches_tracked (exact)."""
    theirs = torch_model.state_dict()
    for name, value in gmodel.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert int(_np(value)) == int(theirs[name]), f"{name}: {int(_np(value))} vs {int(theirs[name])}"
        else:
            _close(value, theirs[name], dtype, f"state {name}")


# ---------------------------------------------------------------------------- ResNet basic block
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_planes, planes, stride", [
    pytest.param(4, 4, 1, id="identity-shortcut"),
    pytest.param(4, 6, 2, id="downsampling-shortcut"),
])
def test_basic_block_train_step_matches_pytorch(backend, dtype, in_planes, planes, stride):
    """Training mode (batch statistics): output, cross-entropy loss after flatten + linear head,
    every parameter gradient, the input gradient, the running statistics and num_batches_tracked
    after the step, and then an eval-mode forward with the updated running statistics."""
    from gpucnn.models import BasicBlock

    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    size, classes = 6, 5
    out_size = size // stride
    tblock = _twin(torch_basic_block(in_planes, planes, stride), dtype)
    thead = _twin(nn.Linear(planes * out_size * out_size, classes), dtype)
    _randomize_batchnorm(tblock, seed=7)
    with gpucnn.use_backend(backend.name):
        block = BasicBlock(in_planes, planes, stride, dtype=dtype)
        head = gpucnn.Linear(planes * out_size * out_size, classes, dtype=dtype)
    assert (len(block.shortcut) > 0) == (stride != 1 or in_planes != planes)
    _load(block, tblock)
    _load(head, thead)
    block.train()
    tblock.train()

    x, tx = _input(rng, (3, in_planes, size, size), dtype, backend)
    labels = np.array([0, 3, 4])
    y, ty = block(x), tblock(tx)
    _close(y, ty, dtype, "block output")
    loss = F.cross_entropy(head(y.flatten(1)), labels)
    tloss = TF.cross_entropy(thead(ty.flatten(1)), torch.from_numpy(labels))
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(block, tblock, dtype)
    _compare_grads(head, thead, dtype, "head ")
    _close(x.grad, tx.grad, dtype, "input gradient")
    _compare_state(block, tblock, dtype)
    assert int(_np(block.bn1.num_batches_tracked)) == 4

    block.eval()
    tblock.eval()
    x2, tx2 = _input(rng, (2, in_planes, size, size), dtype, backend)
    with gpucnn.no_grad(), torch.no_grad():
        _close(block(x2), tblock(tx2), dtype, "eval output with the updated running statistics")


def test_basic_block_sum_of_squares_loss(backend):
    """The same block with a plain sum-of-squares loss (float64, downsampling shortcut)."""
    from gpucnn.models import BasicBlock

    dtype = np.float64
    rng = np.random.default_rng(11)
    torch.manual_seed(11)
    tblock = _twin(torch_basic_block(3, 5, 2), dtype)
    _randomize_batchnorm(tblock, seed=11)
    with gpucnn.use_backend(backend.name):
        block = BasicBlock(3, 5, 2, dtype=dtype)
    _load(block, tblock)
    x, tx = _input(rng, (2, 3, 5, 5), dtype, backend)  # odd size: the stride-2 convs drop nothing
    y, ty = block(x), tblock(tx)
    loss, tloss = (y * y).sum(), (ty * ty).sum()
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(block, tblock, dtype)
    _close(x.grad, tx.grad, dtype, "input gradient")
    _compare_state(block, tblock, dtype)


# ---------------------------------------------------------------------------- whole ResNet
@pytest.mark.parametrize("dtype", DTYPES)
def test_resnet8_loss_and_gradients_match_pytorch(backend, dtype):
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    tnet = _twin(torch_resnet(depth=8, width=8, num_classes=10, in_channels=3), dtype)
    _randomize_batchnorm(tnet, seed=3)
    with gpucnn.use_backend(backend.name):
        net = gpucnn.ResNet(depth=8, width=8, in_channels=3, dtype=dtype)
    _load(net, tnet)
    net.train()
    tnet.train()
    x, tx = _input(rng, (4, 3, 16, 16), dtype, backend)
    labels = np.array([1, 9, 0, 4])
    logits, tlogits = net(x), tnet(tx)
    _close(logits, tlogits, dtype, "logits")
    loss = F.cross_entropy(logits, labels)
    tloss = TF.cross_entropy(tlogits, torch.from_numpy(labels))
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(net, tnet, dtype)
    _close(x.grad, tx.grad, dtype, "input gradient")
    _compare_state(net, tnet, dtype)


# ---------------------------------------------------------------------------- Inception-style block
def _branches(lib, in_ch: int, dtype=None) -> list:
    """1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, each conv followed by a ReLU."""
    kw = {} if dtype is None else {"dtype": dtype}
    return [
        lib.Sequential(lib.Conv2d(in_ch, 3, 1, **kw), lib.ReLU()),
        lib.Sequential(lib.Conv2d(in_ch, 2, 1, **kw), lib.ReLU(), lib.Conv2d(2, 4, 3, padding=1, **kw), lib.ReLU()),
        lib.Sequential(lib.Conv2d(in_ch, 2, 1, **kw), lib.ReLU(), lib.Conv2d(2, 3, 5, padding=2, **kw), lib.ReLU()),
        lib.Sequential(lib.MaxPool2d(3, stride=1, padding=1), lib.Conv2d(in_ch, 2, 1, **kw), lib.ReLU()),
    ]


class Inception(gpucnn.Module):
    """Four branches joined with gpucnn.cat on the channel axis."""

    def __init__(self, in_ch: int, dtype) -> None:
        super().__init__()
        self.branch1, self.branch2, self.branch3, self.branch4 = _branches(gpucnn, in_ch, dtype)

    def forward(self, x):
        return gpucnn.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchInception(nn.Module):
    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch1, self.branch2, self.branch3, self.branch4 = _branches(nn, in_ch)

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchConcat(nn.ModuleList):
    """gpucnn.Concat's twin: branches named 0, 1, ... run on the same input, joined on channels."""

    def forward(self, x):
        return torch.cat([branch(x) for branch in self], 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("join", ["cat", "Concat"])
def test_inception_block_matches_pytorch(backend, dtype, join):
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    in_ch = 3
    if join == "cat":
        tblock = _twin(TorchInception(in_ch), dtype)
        with gpucnn.use_backend(backend.name):
            block = Inception(in_ch, dtype)
    else:
        tblock = _twin(TorchConcat(_branches(nn, in_ch)), dtype)
        with gpucnn.use_backend(backend.name):
            block = gpucnn.Concat(*_branches(gpucnn, in_ch, dtype))
    # weights from NumPy's generator (stable across PyTorch versions), biases positive: with
    # PyTorch's draw for seed 5 the pool branch's ReLU is dead everywhere and its gradients all zero
    with torch.no_grad():
        for p in tblock.parameters():
            bound = 1 / np.sqrt(np.prod(p.shape[1:])) if p.ndim > 1 else 0.3
            p.copy_(torch.from_numpy(rng.uniform(-bound if p.ndim > 1 else 0.0, bound, p.shape)))
    _load(block, tblock)
    x, tx = _input(rng, (2, in_ch, 6, 6), dtype, backend)
    y, ty = block(x), tblock(tx)
    assert y.shape == (2, 12, 6, 6)
    _close(y, ty, dtype, "output")
    # a weighted sum, so each output channel sends back a different gradient
    w = rng.standard_normal(y.shape).astype(dtype)
    loss, tloss = (y * gpucnn.tensor(w, backend=backend.name)).sum(), (ty * torch.from_numpy(w)).sum()
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(block, tblock, dtype)
    _close(x.grad, tx.grad, dtype, "input gradient")


# ---------------------------------------------------------------------------- PyTorch's examples/mnist net
def _mnist_net(lib, dtype=None):
    kw = {} if dtype is None else {"dtype": dtype}
    return lib.Sequential(
        lib.Conv2d(1, 32, 3, **kw), lib.ReLU(), lib.Conv2d(32, 64, 3, **kw), lib.ReLU(), lib.MaxPool2d(2),
        lib.Dropout(0.25), lib.Flatten(), lib.Linear(9216, 128, **kw), lib.ReLU(), lib.Dropout(0.5),
        lib.Linear(128, 10, **kw),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_mnist_example_net_eval_mode(backend, dtype):
    """log_softmax + nll_loss, as examples/mnist trains it, with dropout off (eval mode)."""
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    tnet = _twin(_mnist_net(nn), dtype).eval()
    with gpucnn.use_backend(backend.name):
        net = _mnist_net(gpucnn, dtype).eval()
    _load(net, tnet)
    x, tx = _input(rng, (2, 1, 28, 28), dtype, backend)
    labels = np.array([7, 2])
    logits, tlogits = net(x), tnet(tx)
    _close(logits, tlogits, dtype, "logits")
    loss = F.nll_loss(F.log_softmax(logits, dim=1), labels)
    tloss = TF.nll_loss(TF.log_softmax(tlogits, dim=1), torch.from_numpy(labels))
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(net, tnet, dtype)
    _close(x.grad, tx.grad, dtype, "input gradient")


# ---------------------------------------------------------------------------- functional losses
N_CLASSES = 5
# rows 1 and 4 carry the label that ignore_index=2 drops; -100 (PyTorch's default) drops row 3
LABELS = np.array([0, 2, 4, -100, 2, 1])
CLASS_WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 1.5])


def _loss_inputs(rng, dtype, backend, ignore_index):
    labels = LABELS if ignore_index == -100 else np.where(LABELS == -100, 3, LABELS)
    logits, tlogits = _input(rng, (len(labels), N_CLASSES), dtype, backend)
    return logits, tlogits, labels


def _backward_both(loss, tloss, rng, dtype, backend):
    if loss.ndim == 0:
        loss.backward()
        tloss.backward()
    else:  # reduction="none": a different gradient per row
        g = rng.standard_normal(loss.shape).astype(dtype)
        loss.backward(gpucnn.tensor(g, backend=backend.name))
        tloss.backward(torch.from_numpy(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_log_softmax_nll_loss_matches_pytorch(backend, dtype, reduction, weighted, ignore_index):
    rng = np.random.default_rng(13)
    logits, tlogits, labels = _loss_inputs(rng, dtype, backend, ignore_index)
    weight = CLASS_WEIGHT.astype(dtype) if weighted else None
    loss = F.nll_loss(F.log_softmax(logits, dim=1), labels, weight=weight, ignore_index=ignore_index,
                      reduction=reduction)
    tloss = TF.nll_loss(TF.log_softmax(tlogits, dim=1), torch.from_numpy(labels),
                        weight=None if weight is None else torch.from_numpy(weight), ignore_index=ignore_index,
                        reduction=reduction)
    _close(loss, tloss, dtype, "loss")
    _backward_both(loss, tloss, rng, dtype, backend)
    _close(logits.grad, tlogits.grad, dtype, "gradient of the logits")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_options_match_pytorch(backend, dtype, reduction, weighted, ignore_index, label_smoothing):
    rng = np.random.default_rng(17)
    logits, tlogits, labels = _loss_inputs(rng, dtype, backend, ignore_index)
    weight = CLASS_WEIGHT.astype(dtype) if weighted else None
    loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    tloss = TF.cross_entropy(tlogits, torch.from_numpy(labels), weight=None if weight is None else
                             torch.from_numpy(weight), ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)
    _close(loss, tloss, dtype, "loss")
    _backward_both(loss, tloss, rng, dtype, backend)
    _close(logits.grad, tlogits.grad, dtype, "gradient of the logits")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_fused_path_matches_pytorch(backend, dtype, reduction, label_smoothing, monkeypatch):
    """No weight, no ignored label: the backend's fused softmax cross-entropy op, smoothed or not."""
    rng = np.random.default_rng(19)
    logits, tlogits = _input(rng, (4, 7), dtype, backend)
    labels = np.array([6, 0, 3, 3])
    calls, fused = [], backend.softmax_cross_entropy
    monkeypatch.setattr(backend, "softmax_cross_entropy", lambda *args: calls.append(args[2:]) or fused(*args))
    loss = F.cross_entropy(logits, labels, reduction=reduction, label_smoothing=label_smoothing)
    assert calls == [(label_smoothing,)]  # the fused op, not log_softmax + nll_loss
    tloss = TF.cross_entropy(tlogits, torch.from_numpy(labels), reduction=reduction, label_smoothing=label_smoothing)
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _close(logits.grad, tlogits.grad, dtype, "gradient of the logits")


# ---------------------------------------------------------------------------- default initialisation
@pytest.mark.parametrize("make", [
    pytest.param(lambda lib: lib.Linear(1000, 500), id="Linear(1000,500)"),
    pytest.param(lambda lib: lib.Conv2d(64, 128, 5), id="Conv2d(64,128,5)"),
    pytest.param(lambda lib: lib.Conv2d(64, 128, 3, groups=4), id="Conv2d(64,128,3,groups=4)"),
])
def test_default_init_matches_pytorch_distribution(backend, make):
    """PyTorch's default is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights (kaiming_uniform_ with
    a=sqrt(5)) and biases: same bounds, and the same variance and quantiles up to sampling noise."""
    torch.manual_seed(0)
    gpucnn.manual_seed(0)
    tlayer = make(nn)
    with gpucnn.use_backend(backend.name):
        layer = make(gpucnn)
    for name in ("weight", "bias"):
        ours, theirs = _np(getattr(layer, name)).ravel(), _np(getattr(tlayer, name)).ravel()
        assert ours.shape == theirs.shape
        fan_in = int(np.prod(tlayer.weight.shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        # both within the bound, and both reaching close to it (not a narrower distribution)
        for values, who in ((ours, "gpucnn"), (theirs, "PyTorch")):
            assert np.abs(values).max() <= bound * (1 + 1e-6), f"{who} {name} exceeds 1/sqrt(fan_in)"
            assert np.abs(values).max() >= bound * (1 - 20 / values.size), f"{who} {name} stops short of the bound"
        # U(-b, b): variance b^2/3; the sample variance's relative sd is sqrt(0.8 / n), allow 5 sd
        slack = 5 * np.sqrt(0.8 / ours.size)
        for values, who in ((ours, "gpucnn"), (theirs, "PyTorch")):
            assert abs(values.var() / (bound * bound / 3) - 1) < slack, f"{who} {name} variance"
            assert abs(values.mean()) < 5 * bound / np.sqrt(3 * values.size), f"{who} {name} mean"
        assert abs(ours.var() / theirs.var() - 1) < 2 * slack, f"{name}: variance differs from PyTorch's"
        if ours.size >= 10_000:
            q = np.linspace(0.05, 0.95, 19)
            np.testing.assert_allclose(np.quantile(ours, q), np.quantile(theirs, q), atol=0.02 * bound,
                                       err_msg=f"{name}: quantiles differ from PyTorch's")


# ---------------------------------------------------------------------------- LeNet-5 into PyTorch
def _torch_lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_lenet5_weights_in_pytorch_give_same_logits(backend, dtype):
    """gpucnn.LeNet5's own (He/Glorot) weights copied into a PyTorch twin: the same logits and
    gradients. Sequential runs Conv2d -> ReLU -> MaxPool2d fused, so this checks the fused op."""
    rng = np.random.default_rng(23)
    with gpucnn.use_backend(backend.name):
        net = gpucnn.LeNet5(rng=np.random.default_rng(23), dtype=dtype)
    tnet = _twin(_torch_lenet5(), dtype)
    assert list(net.state_dict()) == list(tnet.state_dict())
    tnet.load_state_dict({k: torch.from_numpy(_np(v).copy()) for k, v in net.state_dict().items()})
    x, tx = _input(rng, (3, 1, 28, 28), dtype, backend)
    logits, tlogits = net(x), tnet(tx)
    _close(logits, tlogits, dtype, "logits")
    labels = np.array([3, 8, 1])
    loss = F.cross_entropy(logits, labels)
    tloss = TF.cross_entropy(tlogits, torch.from_numpy(labels))
    _close(loss, tloss, dtype, "loss")
    loss.backward()
    tloss.backward()
    _compare_grads(net, tnet, dtype)
    _close(x.grad, tx.grad, dtype, "input gradient")
    net.eval()
    tnet.eval()
    with gpucnn.no_grad(), torch.no_grad():
        _close(net(x.detach()), tnet(tx.detach()), dtype, "eval-mode logits")


def test_lenet5_eval_batch_in_chunks_matches_pytorch(backend):
    """A batch larger than the numpy backend's eval_batch_chunk: Sequential runs it in slices
    there and joins them; the logits must still be PyTorch's."""
    rng = np.random.default_rng(29)
    with gpucnn.use_backend(backend.name):
        net = gpucnn.LeNet5(rng=np.random.default_rng(29), dtype=np.float64).eval()
    tnet = _twin(_torch_lenet5(), np.float64).eval()
    tnet.load_state_dict({k: torch.from_numpy(_np(v).copy()) for k, v in net.state_dict().items()})
    chunk = gpucnn.get_backend("numpy").eval_batch_chunk
    x = rng.standard_normal((chunk + chunk // 4, 1, 28, 28))  # a whole chunk and a partial one
    with gpucnn.no_grad(), torch.no_grad():
        _close(net(gpucnn.tensor(x, backend=backend.name)), tnet(torch.from_numpy(x)), np.float64, "logits")


# ---------------------------------------------------------------------------- load_state_dict copies
def test_load_state_dict_copies(backend):
    """PyTorch's load_state_dict copies into the module's own storage; gpucnn's must not alias the
    source either (np.asarray of a CPU tensor is a view of its memory): a gpucnn forward in training
    mode and an optimizer step may not change the PyTorch model the state came from."""
    torch.manual_seed(0)
    tmodel = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    before = {k: v.clone() for k, v in tmodel.state_dict().items()}
    with gpucnn.use_backend(backend.name):
        model = gpucnn.Sequential(gpucnn.Conv2d(2, 3, 3), gpucnn.BatchNorm2d(3))
    model.load_state_dict(tmodel.state_dict())
    x = gpucnn.tensor(np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32),
                      backend=backend.name)
    model(x).sum().backward()
    gpucnn.optim.SGD(model.parameters(), lr=0.1).step()
    changed = [k for k, v in tmodel.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"a gpucnn forward and SGD step changed the PyTorch model's {changed}"


# ---------------------------------------------------------------------------- tensor ops
# each written once for both libraries: ``lib`` is gpucnn or torch, the inputs that library's tensors
TENSOR_OPS = {
    "permute": (lambda lib, a: a.permute(2, 0, -2), [(2, 3, 4)]),
    "transpose_mT": (lambda lib, a: a.transpose(0, -1) + a.mT.transpose(0, 1).transpose(1, 2), [(2, 3, 4)]),
    "view_reshape_as": (lambda lib, a, b: a.view(4, -1).reshape_as(b) * b, [(2, 3, 4), (6, 4)]),
    "split_uneven": (lambda lib, a: lib.cat([p * (i + 1) for i, p in enumerate(a.split(2, dim=-1))], -1), [(3, 5)]),
    "split_sections": (lambda lib, a: a.split([3, 0, 2], 1)[0].sum(1) + a.split([3, 0, 2], 1)[2].sum(1), [(3, 5)]),
    "chunk_short_last": (lambda lib, a: lib.stack([c.sum(0) for c in a.chunk(3)]), [(7, 2)]),
    "chunk_fewer": (lambda lib, a: lib.cat([c * 2 for c in a.chunk(4, dim=1)], 1), [(2, 6)]),  # 3 chunks of 2
    "expand": (lambda lib, a: a.expand(2, -1, 4) * 2, [(3, 1)]),
    "expand_as": (lambda lib, a, b: a.expand_as(b) * b, [(1, 3, 1), (2, 3, 4)]),
    "clamp": (lambda lib, a: a.clamp(-0.5, 0.5) + a.clamp(max=0.2) * a.clip(min=-0.1), [(4, 5)]),
    "sqrt": (lambda lib, a: (a * a + 0.1).sqrt(), [(4, 5)]),
    "max_min": (lambda lib, a: a.max() * a + a.min(), [(3, 4)]),
    "max_dim": (lambda lib, a: a.max(1).values * (a.max(dim=-2)[1] + 1) + a.max(-1, keepdim=True)[0].sum(),
                [(2, 3, 4)]),
    "min_dim": (lambda lib, a: a.min(0, keepdim=True).values + a.min(dim=-2).indices, [(3, 4)]),
    "max_ties": (lambda lib, a: a.clamp(max=0.0).max(1).values + a.clamp(min=0.3).min(), [(4, 6)]),
    "where": (lambda lib, a, b: lib.where(a > b, a * 2, b), [(3, 4), (4,)]),
    "stack": (lambda lib, a, b: lib.stack([a, b, a * b], dim=-1), [(2, 3), (2, 3)]),
    "flatten": (lambda lib, a: lib.flatten(a, 1, -2) + lib.flatten(a, 1).sum(), [(2, 3, 2, 2)]),
}


@pytest.mark.parametrize("name", list(TENSOR_OPS))
def test_tensor_ops_match_pytorch(backend, name):
    """Forward values (and, for max/min with a dim, the indices) and the gradient of every input against
    PyTorch on the same float64 inputs."""
    fn, shapes = TENSOR_OPS[name]
    rng = np.random.default_rng(7)
    pairs = [_input(rng, shape, np.float64, backend) for shape in shapes]
    out, tout = fn(gpucnn, *(p[0] for p in pairs)), fn(torch, *(p[1] for p in pairs))
    _close(out, tout, np.float64, f"{name}: forward")
    weight = rng.standard_normal(tout.shape)
    (out * gpucnn.tensor(weight, dtype=np.float64, backend=backend.name)).sum().backward()
    (tout * torch.from_numpy(weight)).sum().backward()
    for i, (g, t) in enumerate(pairs):
        _close(g.grad, t.grad, np.float64, f"{name}: gradient of input {i}")


@pytest.mark.parametrize("dim, keepdim", [(0, False), (-1, True), (1, False)])
def test_max_min_with_dim_return_values_and_indices_as_pytorch(backend, dim, keepdim):
    x = np.random.default_rng(3).integers(0, 3, (4, 5)).astype(np.float64)  # many ties: the first one wins
    for op in ("max", "min"):
        got = getattr(gpucnn.tensor(x, backend=backend.name), op)(dim, keepdim)
        want = getattr(torch.from_numpy(x), op)(dim, keepdim)
        np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        assert got.indices.dtype == np.int64 and not got.indices.requires_grad
