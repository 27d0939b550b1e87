"""Shared fixtures: the backends every op and layer test runs on, and the MNIST location."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

# parity runs compare against float32/float64 references: keep CuPy's matmuls (Linear) off TF32
os.environ.setdefault("CUPY_TF32", "0")

import gpucnn  # noqa: E402
from gpucnn.datasets import find_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _sim_reason() -> str | None:
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return f"cuda-sim needs a C++20 compiler ({compiler} not found)"
    return None


def _cuda_reason() -> str | None:
    if gpucnn.cuda_is_available():
        return None
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "cuda backend needs CuPy and a GPU: CuPy is not installed"
    return "cuda backend needs a GPU: cupy.is_available() is False"


def _wanted(name: str) -> bool:
    wanted = os.environ.get("GPUCNN_TEST_BACKENDS")
    return wanted is None or name in [w.strip() for w in wanted.split(",")]


def backend_params() -> list:
    reasons = {"numpy": None, "cuda-sim": _sim_reason(), "cuda": _cuda_reason()}
    params = []
    for name, reason in reasons.items():
        if not _wanted(name):
            reason = f"GPUCNN_TEST_BACKENDS={os.environ['GPUCNN_TEST_BACKENDS']} leaves out {name}"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(autouse=True)
def _numpy_is_current():
    """Every test starts on the numpy backend, and the backend current before it comes back after.

    The default backend is ``cuda`` on a machine whose CuPy sees a GPU: a test that builds a layer
    without naming a backend and feeds it NumPy arrays would then fail there only. Tests of other
    backends ask for the ``backend`` fixture or say ``use_backend``; tests/test_default_backend_pin.py
    checks this pin on a stand-in for such a machine.
    """
    with gpucnn.use_backend("numpy"):
        yield


@pytest.fixture(params=backend_params())
def backend(request):
    """Every op/layer test runs once per backend; unavailable ones are skipped with the reason."""
    return gpucnn.get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def mnist_dir() -> Path | None:
    """Where the MNIST tests read from: wherever ``load_mnist()`` would find it (the loader's own search,
    so a user's download in the cache counts), else the project's ``../shared/data``."""
    for data_dir in (None, REPO.parent / "shared" / "data"):
        found = find_mnist_dir(data_dir)
        if found is not None:
            return found
    return None


@pytest.fixture
def mnist_path() -> Path:
    path = mnist_dir()
    if path is None:
        pytest.skip("MNIST not found where load_mnist() looks (see gpucnn.datasets.search_paths) nor in "
                    "../shared/data: run examples/train_mnist.py once to download it, or set GPUCNN_DATA_DIR")
    return path


def script_module(path: str):
    """A script of the repository that is not part of the package (``benchmarks/gpu_report.py``,
    ``dev/gemm_floor.py``) imported once, as the module named by its stem (registered in sys.modules,
    where its dataclasses and named tuples look their module up, and where the script's own imports of
    its neighbours find it)."""
    name = Path(path).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)  # a half-run module left there would hide the error from the next test
            raise
    return sys.modules[name]
