"""State dicts to and from PyTorch: LeNet5 and ResNet(8), trained a few SGD steps on one side, give the same
outputs on the other; a connection-table LeNet5Classic's C3 weight goes to a dense torch Conv2d and back."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
from gpucnn.interop import (  # noqa: E402
    from_torch_state_dict,
    load_torch_state_dict,
    to_torch_state_dict,
    torch_resnet,
)


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gpucnn.use_backend("numpy"):
        yield


def torch_lenet5() -> tnn.Module:
    return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                          tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))


def _data(shape, n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def _train_gpucnn(model, shape, steps=3):
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        x, y = _data(shape, seed=step)
        loss = F.cross_entropy(model(gpucnn.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _train_torch(model, shape, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        x, y = _data(shape, seed=step)
        loss = tnn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _outputs(gmodel, tmodel, shape):
    x, _ = _data(shape, n=5, seed=9)
    gmodel.eval()
    tmodel.eval()
    with gpucnn.no_grad():
        ours = gmodel(gpucnn.tensor(x)).numpy()
    with torch.no_grad():
        theirs = tmodel(torch.from_numpy(x)).numpy()
    return ours, theirs


CASES = [
    ("lenet5", lambda: gpucnn.LeNet5(rng=np.random.default_rng(0)), torch_lenet5, (1, 28, 28)),
    ("resnet8", lambda: gpucnn.ResNet(depth=8, width=8, rng=np.random.default_rng(0)),
     lambda: torch_resnet(depth=8, width=8), (3, 16, 16)),
]


@pytest.mark.parametrize("name, make, make_torch, shape", CASES, ids=[c[0] for c in CASES])
def test_gpucnn_to_torch(name, make, make_torch, shape):
    model = make()
    _train_gpucnn(model, shape)
    state = to_torch_state_dict(model)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.int64 and v.shape == () and v == 3 for v in tracked)
    twin = make_torch()
    result = twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    assert not result.missing_keys and not result.unexpected_keys
    ours, theirs = _outputs(model, twin, shape)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, make, make_torch, shape", CASES, ids=[c[0] for c in CASES])
def test_torch_to_gpucnn(name, make, make_torch, shape):
    torch.manual_seed(0)
    twin = make_torch()
    _train_torch(twin, shape)
    model = make()
    load_torch_state_dict(model, twin.state_dict())
    ours, theirs = _outputs(model, twin, shape)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # and back: the same numbers PyTorch started with
    for key, value in to_torch_state_dict(model).items():
        np.testing.assert_array_equal(value, twin.state_dict()[key].numpy(), err_msg=key)


def test_connection_table_becomes_a_dense_conv():
    model = gpucnn.LeNet5Classic(rng=np.random.default_rng(0))
    state = to_torch_state_dict(model)
    dense = state["4.weight"]
    assert dense.shape == (16, 6, 5, 5)
    table = gpucnn.models.LENET5_C3_TABLE
    assert np.array_equal(dense.any(axis=(2, 3)), table.T)
    conv = tnn.Conv2d(6, 16, 5)
    conv.load_state_dict({"weight": torch.from_numpy(dense), "bias": torch.from_numpy(state["4.bias"])})
    x = np.random.default_rng(0).standard_normal((2, 6, 14, 14)).astype(np.float32)
    with gpucnn.no_grad():
        ours = model.layers[4](gpucnn.tensor(x)).numpy()
    np.testing.assert_allclose(ours, conv(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    packed = from_torch_state_dict(model, {"4.weight": torch.from_numpy(dense)})["4.weight"]
    np.testing.assert_array_equal(packed, np.asarray(model.state_dict()["4.weight"]))
    dense[0, 5] = 1.0  # table has no link from input map 5 to output map 0
    with pytest.raises(ValueError, match="connection table"):
        from_torch_state_dict(model, {"4.weight": dense})


@pytest.mark.parametrize("depth, width, num_classes, in_channels", [(8, 4, 10, 3), (14, 6, 7, 1), (20, 16, 10, 3)])
def test_torch_resnet_has_gpucnn_resnets_names_and_shapes(depth, width, num_classes, in_channels):
    ours = to_torch_state_dict(gpucnn.ResNet(depth, width, num_classes, in_channels))
    theirs = torch_resnet(depth, width, num_classes, in_channels).state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        assert value.shape == tuple(theirs[key].shape), key
    with pytest.raises(ValueError, match="6n\\+2"):
        torch_resnet(depth=10)
