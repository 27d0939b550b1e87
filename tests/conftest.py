"""Shared fixtures: the backends every op and layer test runs on, and the MNIST location."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

# parity runs compare against float32/float64 references: keep CuPy's matmuls (Linear) off TF32
os.environ.setdefault("CUPY_TF32", "0")

import gpucnn  # noqa: E402

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


@pytest.fixture(params=backend_params())
def backend(request):
    """Every op/layer test runs once per backend; unavailable ones are skipped with the reason."""
    return gpucnn.get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def mnist_dir() -> Path | None:
    candidates = [os.environ.get("GPUCNN_DATA_DIR"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate:
            for sub in (Path(candidate) / "mnist", Path(candidate)):
                if (sub / "train-images-idx3-ubyte.gz").exists() or (sub / "train-images-idx3-ubyte").exists():
                    return sub
    return None


@pytest.fixture
def mnist_path() -> Path:
    path = mnist_dir()
    if path is None:
        pytest.skip("MNIST not found: set GPUCNN_DATA_DIR or put it at ../shared/data/mnist")
    return path
