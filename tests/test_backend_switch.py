"""The backend switch and moving models (the contract every backend implements: test_contract.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gpucnn
from gpucnn.backends.registry import backend_classes


def test_every_backend_name_has_a_class():
    assert set(backend_classes()) == {"numpy", "cuda", "cuda-sim"}


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown gpucnn backend 'tpu'; valid backends are 'numpy', 'cuda', "
                                         r"'cuda-sim'"):
        gpucnn.set_backend("tpu")


def test_set_and_use_backend():
    before = gpucnn.current_backend_name()
    gpucnn.set_backend("numpy")
    assert gpucnn.current_backend_name() == "numpy"
    assert gpucnn.get_backend().name == "numpy"
    with gpucnn.use_backend("numpy") as b:
        assert b.name == "numpy"
    gpucnn.set_backend(before)


@pytest.mark.skipif(gpucnn.cuda_is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match=r"(needs CuPy, which is not installed: pip install 'gpucnn\[cuda12\]')|"
                                           r"(finds no usable GPU)"):
        gpucnn.get_backend("cuda")


def _run(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "GPUCNN_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_environment_variable_is_read_at_import():
    out = _run("import gpucnn; print(gpucnn.current_backend_name())", GPUCNN_BACKEND="numpy")
    assert out.returncode == 0 and out.stdout.strip() == "numpy"
    bad = _run("import gpucnn", GPUCNN_BACKEND="opencl")
    assert bad.returncode != 0 and "valid backends are 'numpy', 'cuda', 'cuda-sim'" in bad.stderr


def test_default_is_numpy_without_gpu():
    out = _run("import gpucnn; print(gpucnn.current_backend_name())")
    assert out.stdout.strip() == ("cuda" if gpucnn.cuda_is_available() else "numpy")


def test_backend_of_arrays_and_models():
    model = gpucnn.LeNet5()
    assert gpucnn.backend_of(model) == "numpy"
    assert gpucnn.backend_of(np.zeros(3)) == "numpy"


def test_model_to_moves_parameters_and_optimizer_state(backend):
    rng = np.random.default_rng(0)
    with gpucnn.use_backend("numpy"):
        model = gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3), gpucnn.BatchNorm2d(2), gpucnn.ReLU(), gpucnn.Flatten(),
                                  gpucnn.Linear(8, 3))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = rng.standard_normal((4, 1, 4, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    loss_fn = gpucnn.CrossEntropyLoss()
    loss_fn(model(x), labels).backward()
    opt.step()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
    model.to(backend.name)
    assert gpucnn.backend_of(model) == backend.name
    for name, p in model.named_parameters():
        assert backend.owns(p.data) and backend.owns(p.state["velocity"])
        assert p.backend is backend and p.grad.backend is backend and backend.owns(p.grad.data)
        np.testing.assert_array_equal(backend.to_numpy(p.data), before[name])
        np.testing.assert_array_equal(p.grad.numpy(), grads[name])
    assert backend.owns(model[1].running_mean)
    # a training step on the new backend continues from the moved state
    opt.zero_grad()
    loss_fn(model(backend.asarray(x)), labels).backward()
    opt.step()
    model.to("numpy")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert all(isinstance(p.state["velocity"], np.ndarray) for p in model.parameters())
