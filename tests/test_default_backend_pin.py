"""The suite passes whatever the machine's default backend is: conftest.py pins ``numpy`` per test.

On a machine whose CuPy sees a GPU the default backend is ``cuda``, and a test that builds a
layer without naming a backend, then feeds it NumPy arrays, would fail there only. These tests
stand in for such a machine without a GPU: a pytest plugin registers, as the default, a backend
whose arrays are not ``numpy.ndarray`` (as ``cupy.ndarray`` is not), then runs a tiny test file
in a subprocess with and without the suite's conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

FAKE_GPU_PLUGIN = '''
import numpy as np

import gpucnn
from gpucnn.backends.registry import register_backend
from gpucnn.backends.numpy.backend import NumpyBackend


class DeviceArray(np.ndarray):
    """Stands in for cupy.ndarray: a NumPy array is not one."""


class FakeGpuBackend(NumpyBackend):
    name = "fake-gpu"
    array_type = DeviceArray

    def asarray(self, a, dtype=None):
        return super().asarray(a, dtype).view(DeviceArray)


register_backend("fake-gpu", FakeGpuBackend, default=True)


def pytest_sessionfinish(session):
    print(f"\\ncurrent backend after the session: {gpucnn.current_backend_name()}")
'''

# what tests/test_errors.py and others do: no backend named, NumPy arrays in
LAYER_TEST = '''
import numpy as np

import gpucnn


def test_layer_on_the_default_backend_takes_numpy_arrays():
    conv = gpucnn.Conv2d(1, 2, 3)
    assert conv(np.zeros((1, 1, 5, 5), np.float32)).shape == (1, 2, 3, 3)


def test_a_test_that_switches_backend_does_not_leak():
    gpucnn.set_backend("fake-gpu")  # and never switches back


def test_the_next_test_starts_on_numpy_again():
    assert gpucnn.current_backend_name() == "numpy"
'''


def _run_pytest(folder: Path, *plugins: str) -> subprocess.CompletedProcess:
    """pytest on ``folder`` in a fresh interpreter, with ``plugins`` loaded before collection."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPUCNN_BACKEND", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(TESTS), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(folder)]
    for plugin in plugins:
        args += ["-p", plugin]
    return subprocess.run(args + [str(folder)], capture_output=True, text=True, env=env, cwd=folder, timeout=300)


@pytest.fixture
def simulated_gpu_machine(tmp_path: Path) -> Path:
    (tmp_path / "fake_gpu_default.py").write_text(FAKE_GPU_PLUGIN)
    (tmp_path / "test_layer.py").write_text(textwrap.dedent(LAYER_TEST))
    return tmp_path


def test_conftest_pins_numpy_when_the_default_is_a_gpu_backend(simulated_gpu_machine):
    # "-p conftest" loads this suite's own tests/conftest.py, fixtures and all
    run = _run_pytest(simulated_gpu_machine, "fake_gpu_default", "conftest")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    # the pin gives back the backend that was current before: here the (fake) machine's default
    assert "current backend after the session: fake-gpu" in run.stdout


def test_without_the_pin_the_same_test_fails(simulated_gpu_machine):
    run = _run_pytest(simulated_gpu_machine, "fake_gpu_default")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Conv2d is on backend 'fake-gpu' and expects a" in run.stdout
    assert "2 failed, 1 passed" in run.stdout
