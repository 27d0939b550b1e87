"""``python -m gpucnn info``: what gpucnn finds on this machine, for install checks and bug reports.

``collect()`` returns it as a dict and ``format()`` as the text the command prints. Every probe is
guarded: a broken CuPy, driver or compiler becomes a line of the report, never a traceback, since
the report is most wanted exactly when something is broken.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NOT_INSTALLED = "not installed"


def _guard(probe: Callable[[], Any]) -> Any:
    """``probe()``, or ``"error: ..."`` when it raises."""
    try:
        return probe()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def _cuda_version(code: int) -> str:
    """CUDA's integer version (12040) as text (12.4)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _import_cupy() -> tuple[Any, str]:
    """(the cupy module or None, its version line)."""
    try:
        if importlib.util.find_spec("cupy") is None:
            return None, NOT_INSTALLED
        import cupy
    except Exception as exc:  # installed but broken (e.g. a CUDA library it needs is missing)
        return None, f"installed but fails to import: {type(exc).__name__}: {exc}"
    version = str(getattr(cupy, "__version__", "unknown version"))
    try:  # which wheel: cupy-cuda12x and cupy-cuda13x both import as cupy
        dists = importlib.metadata.packages_distributions().get("cupy", [])
        version += f" ({', '.join(sorted(set(dists)))})" if dists else ""
    except Exception:
        pass
    return cupy, version


def _backends() -> dict[str, dict[str, Any]]:
    """Each backend and whether it can be created here: the reason is the one ``set_backend`` would give."""
    from .backends.registry import available_backends, get_backend

    report = {}
    for name in available_backends():
        try:
            get_backend(name)
            report[name] = {"usable": True, "reason": None}
        except Exception as exc:
            report[name] = {"usable": False, "reason": str(exc) or type(exc).__name__}
    return report


def _nvidia_smi_driver() -> str | None:
    """The driver's own version (e.g. 550.54.15), which CUDA's API does not give."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _gpus(cupy: Any, cupy_version: str) -> dict[str, Any]:
    """What CuPy sees: the GPUs, the driver's and CuPy's CUDA versions, NVRTC's version."""
    if cupy is None:
        return {"reason": f"CuPy {cupy_version}"}
    if _guard(lambda: bool(cupy.is_available())) is not True:
        return {"reason": "CuPy finds no usable GPU (cupy.is_available() is False)"}
    runtime = cupy.cuda.runtime

    def device(index: int) -> dict[str, Any]:
        props = runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1)}

    count = _guard(runtime.getDeviceCount)
    return {
        "devices": [_guard(lambda i=i: device(i)) for i in range(count)] if isinstance(count, int) else count,
        "driver": _guard(_nvidia_smi_driver),
        "driver_cuda": _guard(lambda: _cuda_version(runtime.driverGetVersion())),
        "cupy_cuda": _guard(lambda: _cuda_version(runtime.runtimeGetVersion())),
        "nvrtc": _guard(lambda: ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())),
    }


def _pypi_nvrtc() -> str:
    """The NVRTC from PyPI (the ``test`` extra) that checks every kernel compiles, GPU or not."""
    from .backends.cuda import nvrtc

    try:
        return ".".join(str(v) for v in nvrtc.version())
    except ModuleNotFoundError:  # cuda-bindings missing; a missing libnvrtc raises otherwise, an error line
        return f"{NOT_INSTALLED} ({nvrtc.INSTALL_HINT})"


def _sim_compiler() -> dict[str, Any]:
    """The host compiler cuda-sim would build with, and its version."""
    from .backends.sim import device as loader

    try:
        compiler = loader.find_compiler()
    except Exception as exc:
        return {"error": str(exc)}
    version = _guard(lambda: loader._compiler_version(compiler).strip().splitlines()[0])
    return {"compiler": compiler, "path": shutil.which(compiler), "version": version}


def _mnist() -> dict[str, Any]:
    from . import datasets

    return {
        "found_in": _guard(lambda: None if (d := datasets.find_mnist_dir()) is None else str(d)),
        "download_dir": _guard(lambda: str(datasets.mnist_cache_dir())),
        "search_paths": _guard(lambda: [str(p) for p in datasets.search_paths()]),
    }


def _kernel_caches() -> dict[str, Any]:
    from .backends.sim import device as loader

    # CuPy's own default, unless CUPY_CACHE_DIR moves it
    cupy_cache = os.environ.get("CUPY_CACHE_DIR") or str(Path("~/.cupy/kernel_cache").expanduser())
    return {"cuda-sim": _guard(lambda: str(loader.cache_root())), "cuda": cupy_cache}


def collect() -> dict[str, Any]:
    """Everything ``python -m gpucnn info`` reports, as plain data (JSON-serialisable)."""
    from . import __version__
    from .backends.registry import default_backend_name

    cupy, cupy_version = _import_cupy()
    return {
        "gpucnn": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": _guard(platform.platform),
        "numpy": np.__version__,
        "cupy": cupy_version,
        "backends": _guard(_backends),
        "default_backend": _guard(default_backend_name),
        "GPUCNN_BACKEND": os.environ.get("GPUCNN_BACKEND") or None,
        "gpu": _guard(lambda: _gpus(cupy, cupy_version)),
        "nvrtc_pypi": _guard(_pypi_nvrtc),
        "sim_compiler": _guard(_sim_compiler),
        "mnist": _guard(_mnist),
        "kernel_cache": _guard(_kernel_caches),
    }


def _lines(key: str, value: Any, indent: str = "") -> list[str]:
    if isinstance(value, dict):
        return [f"{indent}{key}:"] + [line for k, v in value.items() for line in _lines(k, v, indent + "  ")]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [f"{indent}{key}:"] + [line for i, v in enumerate(value) for line in _lines(str(i), v, indent + "  ")]
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value) or "(none)"
    return [f"{indent}{key + ':':<{16 - len(indent)}} {'-' if value is None else value}"]


def format(info: dict[str, Any] | None = None) -> str:
    """The report as text: one ``name: value`` line per fact, a backend per line with why it cannot run."""
    info = collect() if info is None else info
    lines = []
    for key, value in info.items():
        if key == "backends" and isinstance(value, dict):
            lines.append("backends:")
            for name, state in value.items():
                usable = state.get("usable") if isinstance(state, dict) else None
                why = "usable" if usable else f"not usable: {state.get('reason') if isinstance(state, dict) else state}"
                lines.append(f"  {name + ':':<14} {why}")
        elif key == "gpu" and isinstance(value, dict) and "reason" in value:
            lines.append(f"{'gpu:':<16} none: {value['reason']}")
        elif key == "mnist" and isinstance(value, dict) and not isinstance(value.get("found_in"), str):
            lines.append(f"{'mnist:':<16} not found; load_mnist() would download it into {value['download_dir']}")
            lines += _lines("searched", value.get("search_paths"), "  ")
        elif key == "mnist" and isinstance(value, dict):
            lines.append(f"{'mnist:':<16} found in {value['found_in']}")
            lines += _lines("searched", value.get("search_paths"), "  ")
        elif key == "sim_compiler" and isinstance(value, dict) and "compiler" in value:
            lines.append(f"{'sim_compiler:':<16} {value['compiler']} ({value['path']}): {value['version']}")
        else:
            lines += _lines(key, value)
    return "\n".join(lines) + "\n"
