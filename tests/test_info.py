"""The cuda backend's start-up compile check, and ``python -m gpucnn info``.

There is no GPU or CuPy in CI: a fake ``cupy`` module (NumPy arrays underneath) stands in for
a machine where CuPy sees a GPU, with or without the CUDA compiler and headers.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import datasets, info
from gpucnn.backends import registry as backend_module
from gpucnn.backends.cuda import cupy_device
from gpucnn.backends.sim import device as loader

REPO = Path(__file__).resolve().parent.parent


class CompileException(Exception):
    """Named as CuPy's (cupy.cuda.compiler.CompileException)."""


class CUDADriverError(Exception):
    """Named as CuPy's (cupy.cuda.driver.CUDADriverError)."""


NO_HEADERS = CompileException('catastrophic error: cannot open source file "vector_types.h"')


def make_fake_cupy(compile_error: Exception | None = None, run_error: Exception | None = None,
                   wrong_result: bool = False, cuda_version: int = 12080) -> types.ModuleType:
    """A ``cupy`` that sees one GPU and runs the start-up kernel in NumPy (or fails as told)."""
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cupy.__version__ = "14.2.0"

    class ndarray(np.ndarray):
        pass

    cupy.ndarray = ndarray
    cupy.is_available = lambda: True
    cupy.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(ndarray)
    cupy.ascontiguousarray = lambda a: np.ascontiguousarray(a).view(ndarray)
    cupy.empty = lambda shape, dtype=None: np.zeros(shape, dtype=dtype).view(ndarray)
    cupy.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: cuda_version, driverGetVersion=lambda: 12040, getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"Fake GPU 80GB", "major": 9, "minor": 0, "totalGlobalMem": 80 << 30})
    cupy.cuda = types.SimpleNamespace(
        Device=lambda *a: types.SimpleNamespace(attributes={"MultiProcessorCount": 4}),
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
        runtime=runtime, nvrtc=types.SimpleNamespace(getVersion=lambda: (12, 8)))
    cupy.compiled = []  # (source, options) of every RawModule asked for

    class RawModule:
        def __init__(self, code: str, options: tuple = ()) -> None:
            cupy.compiled.append((code, options))

        def get_function(self, name: str):
            if compile_error is not None:
                raise compile_error

            def run(grid, block, args, shared_mem=0):
                if run_error is not None:
                    raise run_error
                out, n = args
                out[:n] = 2 * np.arange(n) + 1 + (1 if wrong_result else 0)

            return run

    cupy.RawModule = RawModule
    return cupy


@pytest.fixture
def fake_cupy(monkeypatch):
    """Install a fake CuPy (``fake_cupy(**how)``) and forget every backend made so far but numpy's."""
    monkeypatch.setattr(backend_module, "_instances", {"numpy": gpucnn.get_backend("numpy")})

    def install(**how) -> types.ModuleType:
        cupy = make_fake_cupy(**how)
        monkeypatch.setitem(sys.modules, "cupy", cupy)
        return cupy

    return install


# ---------------------------------------------------------------- the start-up check

def test_set_backend_cuda_reports_missing_headers_with_the_extra_to_install(fake_cupy):
    fake_cupy(compile_error=NO_HEADERS)
    with pytest.raises(RuntimeError, match=r"could not compile and run a test kernel") as error:
        gpucnn.set_backend("cuda")
    message = str(error.value)
    assert 'cannot open source file "vector_types.h"' in message  # CuPy's own words
    assert "pip install 'gpucnn[cuda12]'" in message and "cupy-cuda12x[ctk]" in message
    assert gpucnn.current_backend_name() == "numpy"  # nothing switched
    with pytest.raises(RuntimeError, match=r"cupy-cuda12x\[ctk\]"):  # and get_backend says the same
        gpucnn.get_backend("cuda")


def test_the_hint_follows_the_cuda_version_of_the_cupy_build(fake_cupy):
    fake_cupy(compile_error=OSError("libnvrtc.so.13: cannot open shared object file"), cuda_version=13000)
    with pytest.raises(RuntimeError, match=r"pip install 'gpucnn\[cuda13\]' \(it installs cupy-cuda13x\[ctk\]"):
        gpucnn.get_backend("cuda")


def test_the_check_compiles_once_when_the_backend_is_made(fake_cupy):
    cupy = fake_cupy()
    backend = gpucnn.set_backend("cuda")
    assert backend.name == "cuda" and gpucnn.current_backend_name() == "cuda"
    assert [code for code, _ in cupy.compiled] == [cupy_device.PROBE_SOURCE]
    assert cupy.compiled[0][1] == cupy_device.NVRTC_OPTIONS  # the options every kernel module gets
    gpucnn.get_backend("cuda")
    assert len(cupy.compiled) == 1


def test_a_driver_that_cannot_run_the_kernel_is_told_apart(fake_cupy):
    fake_cupy(run_error=CUDADriverError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the provided PTX was compiled with "
                                        "an unsupported toolchain."))
    with pytest.raises(RuntimeError, match=r"GPU driver could not load or run .*UNSUPPORTED_PTX.*update the NVIDIA "
                                           r"driver"):
        gpucnn.set_backend("cuda")


def test_a_kernel_that_computes_garbage_is_reported(fake_cupy):
    fake_cupy(wrong_result=True)
    with pytest.raises(RuntimeError, match=r"test kernel ran but computed \[ 4\. +8\. +12\. +16\.\]"):
        gpucnn.set_backend("cuda")


# ---------------------------------------------------------------- python -m gpucnn info

def test_collect_on_a_gpu_machine(fake_cupy):
    fake_cupy()
    report = info.collect()
    assert report["gpucnn"] == gpucnn.__version__ and report["numpy"] == np.__version__
    assert report["cupy"].startswith("14.2.0")
    assert report["backends"]["cuda"] == {"usable": True, "reason": None}
    assert report["default_backend"] == "cuda"
    gpu = report["gpu"]
    assert gpu["devices"] == [{"name": "Fake GPU 80GB", "compute_capability": "9.0", "memory_gib": 80.0}]
    assert (gpu["driver_cuda"], gpu["cupy_cuda"], gpu["nvrtc"]) == ("12.4", "12.8", "12.8")
    text = info.format(report)
    assert "Fake GPU 80GB" in text and "cuda:" in text
    json.dumps(report)  # --json prints it


def test_collect_names_a_missing_toolkit(fake_cupy):
    fake_cupy(compile_error=NO_HEADERS)
    report = info.collect()
    assert report["backends"]["cuda"]["usable"] is False
    assert "cupy-cuda12x[ctk]" in report["backends"]["cuda"]["reason"]
    assert "cuda:          not usable: the cuda backend could not compile" in info.format(report)


def test_collect_without_cupy(fake_cupy, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    report = info.collect()
    assert report["cupy"] == "not installed"
    assert report["backends"]["numpy"] == {"usable": True, "reason": None}
    assert "needs CuPy, which is not installed" in report["backends"]["cuda"]["reason"]
    assert report["gpu"] == {"reason": "CuPy not installed"}
    assert "gpu:             none: CuPy not installed" in info.format(report)


def test_collect_without_a_host_compiler(fake_cupy, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(loader.shutil, "which", lambda *args, **kwargs: None)
    report = info.collect()
    assert report["backends"]["cuda-sim"]["usable"] is False
    assert "needs a C++20 compiler" in report["backends"]["cuda-sim"]["reason"]
    assert "needs a C++20 compiler" in report["sim_compiler"]["error"]
    assert "cuda-sim:      not usable: the cuda-sim backend compiles" in info.format(report)


def test_collect_reports_the_sim_compiler_and_the_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GPUCNN_SIM_CACHE", raising=False)
    report = info.collect()
    if "compiler" in report["sim_compiler"]:
        assert report["sim_compiler"]["version"] and not report["sim_compiler"]["version"].startswith("error")
    assert report["mnist"] == {"found_in": None, "download_dir": str(tmp_path / "cache" / "gpucnn" / "mnist"),
                               "search_paths": [str(tmp_path / "data"), str(tmp_path / "cache" / "gpucnn" / "mnist")]}
    assert report["kernel_cache"]["cuda-sim"] == str(tmp_path / "cache" / "gpucnn" / "sim")
    text = info.format(report)
    assert f"not found; load_mnist() would download it into {tmp_path / 'cache' / 'gpucnn' / 'mnist'}" in text


def test_a_failing_probe_is_a_line_not_a_crash(monkeypatch):
    def broken(*args, **kwargs):
        raise PermissionError("no home directory")

    monkeypatch.setattr(datasets, "search_paths", broken)
    monkeypatch.setattr(info.platform, "platform", broken)
    report = info.collect()
    assert report["platform"] == "error: PermissionError: no home directory"
    assert report["mnist"]["search_paths"].startswith("error: PermissionError")
    assert "platform:        error: PermissionError: no home directory" in info.format(report)


def _python_m_gpucnn(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "GPUCNN_BACKEND"} | env
    return subprocess.run([sys.executable, "-m", "gpucnn", *args], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=300)


def test_python_m_gpucnn_info():
    run = _python_m_gpucnn("info")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert f"gpucnn:          {gpucnn.__version__}" in lines and f"numpy:           {np.__version__}" in lines
    assert any(line.startswith("python:          3.") for line in lines)
    assert "backends:" in lines and "  numpy:         usable" in lines
    assert any(line.startswith("  cuda:") for line in lines) and any(line.startswith("  cuda-sim:") for line in lines)
    for key in ("cupy:", "gpu:", "sim_compiler:", "mnist:", "kernel_cache:"):
        assert any(line.startswith(key) for line in lines), key
    report = json.loads(_python_m_gpucnn("info", "--json").stdout)
    assert set(report["backends"]) >= {"numpy", "cuda", "cuda-sim"}


def test_python_m_gpucnn_info_with_a_broken_cupy(tmp_path):
    """A CuPy that fails to import (a CUDA library missing) is reported, not raised."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text("raise RuntimeError('libcudart.so.12: cannot open shared object')")
    run = _python_m_gpucnn("info", PYTHONPATH=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "cupy:            installed but fails to import: RuntimeError: libcudart.so.12" in run.stdout
    assert "  cuda:          not usable: " in run.stdout


def test_python_m_gpucnn_without_a_command_shows_usage():
    run = _python_m_gpucnn()
    assert run.returncode == 2 and "usage: python -m gpucnn" in run.stderr and "info" in run.stderr
