"""save/load: round trips, across backends, atomic writes, and clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpucnn


def _trained(rng):
    model = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(12, 2))
    opt = gpucnn.optim.Adam(model, lr=0.01)
    loss = gpucnn.SoftmaxCrossEntropy()
    x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    loss(model(x), np.array([0, 1, 1, 0]))
    model.backward(loss.backward())
    opt.step()
    return model, opt, x


def test_round_trip_with_optimizer(tmp_path, rng):
    model, opt, x = _trained(rng)
    path = tmp_path / "ck.npz"
    gpucnn.save(path, model, opt, extra={"epoch": 3})
    other = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(12, 2))
    opt2 = gpucnn.optim.Adam(other, lr=0.5)
    assert gpucnn.load(path, other, opt2) == {"epoch": 3}
    assert opt2.lr == 0.01 and opt2.step_count == 1
    for (_n, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.state["m"], b.state["m"])
    np.testing.assert_array_equal(model[1].running_var, other[1].running_var)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(model(x), other(x))


def test_saved_on_one_backend_loads_on_another(tmp_path, rng, backend):
    model, _, x = _trained(rng)
    gpucnn.save(tmp_path / "m.npz", model)
    with gpucnn.use_backend(backend.name):
        other = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.BatchNorm2d(3), gpucnn.ReLU(), gpucnn.Flatten(),
                                  gpucnn.Linear(12, 2))
    gpucnn.load(tmp_path / "m.npz", other)
    model.eval()
    other.eval()
    np.testing.assert_allclose(backend.to_numpy(other(backend.asarray(x))), model(x), rtol=1e-5, atol=1e-6)


def test_mismatch_names_every_problem(tmp_path, rng):
    model, _, _ = _trained(rng)
    gpucnn.save(tmp_path / "m.npz", model)
    wrong = gpucnn.Sequential(gpucnn.Conv2d(1, 4, 3), gpucnn.BatchNorm2d(4), gpucnn.ReLU(), gpucnn.Flatten(),
                              gpucnn.Linear(16, 2, bias=False), gpucnn.Linear(2, 2))
    with pytest.raises(ValueError) as info:
        gpucnn.load(tmp_path / "m.npz", wrong)
    message = str(info.value)
    assert "missing: param/5.bias, param/5.weight" in message
    assert "unexpected: param/4.bias" in message
    assert "param/0.weight (file (3, 1, 3, 3), model (4, 1, 3, 3))" in message
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
    before = [p.data.copy() for p in other.params()]
    with pytest.raises(ValueError, match="holds Adam state, not SGD"):
        gpucnn.load(tmp_path / "ck.npz", other, gpucnn.optim.SGD(other, lr=0.1))
    for a, p in zip(before, other.params()):
        np.testing.assert_array_equal(p.data, a)
