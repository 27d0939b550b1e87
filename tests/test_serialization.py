"""save/load: round trips, across backends, atomic writes, and clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpucnn


def _trained(rng):
    model = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(12, 2))
    opt = gpucnn.optim.Adam(model.parameters(), lr=0.01)
    x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    gpucnn.CrossEntropyLoss()(model(x), np.array([0, 1, 1, 0])).backward()
    opt.step()
    return model, opt, x


def test_round_trip_with_optimizer(tmp_path, rng):
    model, opt, x = _trained(rng)
    path = tmp_path / "ck.npz"
    gpucnn.save(path, model, opt, extra={"epoch": 3})
    other = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(12, 2))
    opt2 = gpucnn.optim.Adam(other.parameters(), lr=0.5)
    assert gpucnn.load(path, other, opt2) == {"epoch": 3}
    assert opt2.lr == 0.01 and opt2.step_count == 1
    for (_n, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.state["m"], b.state["m"])
    np.testing.assert_array_equal(model[1].running_var, other[1].running_var)
    assert int(other[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 1
    model.eval()
    other.eval()
    np.testing.assert_array_equal(model(x).numpy(), other(x).numpy())


def test_saved_on_one_backend_loads_on_another(tmp_path, rng, backend):
    model, _, x = _trained(rng)
    gpucnn.save(tmp_path / "m.npz", model)
    with gpucnn.use_backend(backend.name):
        other = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                                  gpucnn.Linear(12, 2))
    gpucnn.load(tmp_path / "m.npz", other)
    model.eval()
    other.eval()
    np.testing.assert_allclose(other(backend.asarray(x)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_mismatch_names_every_problem(tmp_path, rng):
    model, _, _ = _trained(rng)
    gpucnn.save(tmp_path / "m.npz", model)
    wrong = gpucnn.Sequential(gpucnn.Conv2d(1, 4, 3), gpucnn.BatchNorm2d(4), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(16, 2, bias=False), gpucnn.Linear(2, 2))
    with pytest.raises(ValueError) as info:
        gpucnn.load(tmp_path / "m.npz", wrong)
    message = str(info.value)
    assert "missing: 5.weight, 5.bias" in message
    assert "unexpected: 4.bias" in message
    assert "0.weight (given (3, 1, 3, 3), model (4, 1, 3, 3))" in message
    assert "1.running_mean (given (3,), model (4,))" in message
    # nothing was changed
    assert wrong[0].weight.data.shape == (4, 1, 3, 3)


def test_interrupted_save_keeps_the_previous_file(tmp_path, rng, monkeypatch):
    model, _, _ = _trained(rng)
    path = tmp_path / "m.npz"
    gpucnn.save(path, model)
    good = path.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(KeyboardInterrupt):
        gpucnn.save(path, model)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary left behind


def test_pickled_or_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        gpucnn.load(evil, gpucnn.Linear(2, 2))
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(2))
    with pytest.raises(ValueError, match="not a gpucnn checkpoint"):
        gpucnn.load(plain, gpucnn.Linear(2, 2))


def test_wrong_optimizer_changes_nothing(tmp_path, rng):
    model, opt, _ = _trained(rng)
    gpucnn.save(tmp_path / "ck.npz", model, opt)
    other = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(12, 2))
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="holds Adam state, not SGD"):
        gpucnn.load(tmp_path / "ck.npz", other, gpucnn.optim.SGD(other.parameters(), lr=0.1))
    after = other.state_dict()
    assert list(after) == list(before)
    for k, a in before.items():
        np.testing.assert_array_equal(after[k], a)
