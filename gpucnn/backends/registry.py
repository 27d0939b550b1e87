"""The backend switch: which backend new layers and arrays use.

``GPUCNN_BACKEND`` is read when gpucnn is imported; ``set_backend`` changes the current
backend and ``use_backend`` changes it for a ``with`` block. Without either, the default is
``cuda`` when CuPy is importable and sees a GPU, else ``numpy`` (silently), unless
``register_backend(..., default=True)`` named another.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from .base import Backend


def _make_numpy() -> Backend:
    from .numpy.backend import NumpyBackend

    return NumpyBackend()


def _make_cuda() -> Backend:
    from .cuda.cupy_device import make_cuda_backend

    return make_cuda_backend()


def _make_cuda_sim() -> Backend:
    from .cuda.launchers import CudaBackend
    from .sim.device import SimDevice

    return CudaBackend(SimDevice(), name="cuda-sim")


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "numpy": _make_numpy,
    "cuda": _make_cuda,
    "cuda-sim": _make_cuda_sim,
}
_instances: dict[str, Backend] = {}
_current: str | None = None
_default: str | None = None  # set by register_backend(default=True); None: chosen by cuda_is_available()


def available_backends() -> list[str]:
    """Every backend name gpucnn knows (whether or not this machine can run it)."""
    return list(_FACTORIES)


def backend_classes() -> dict[str, type]:
    """The class behind each backend name, without instantiating (for the contract test)."""
    from .cuda.launchers import CudaBackend
    from .numpy.backend import NumpyBackend

    return {"numpy": NumpyBackend, "cuda": CudaBackend, "cuda-sim": CudaBackend}


def register_backend(name: str, factory: Callable[[], Backend], default: bool = False) -> None:
    """Make ``name`` a backend that ``factory()`` creates on first use (replacing one of that name).

    With ``default=True`` it becomes the default backend: the current one until ``set_backend``,
    ``use_backend`` or ``GPUCNN_BACKEND`` picks another. The default is settled the first time
    the current backend is asked for, so register before that (at the top of a script, or in a
    pytest plugin: the test suite uses this to stand in for a GPU machine, whose default is ``cuda``).
    """
    global _default
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backend: name must be a non-empty string, got {name!r}")
    _FACTORIES[name] = factory
    _instances.pop(name, None)
    if default:
        _default = name


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in _FACTORIES:
        valid = ", ".join(repr(n) for n in _FACTORIES)
        raise ValueError(f"unknown gpucnn backend {name!r}; valid backends are {valid}")
    return name


def get_backend(name: str | Backend | None = None) -> Backend:
    """The backend object for ``name`` (default: the current backend), created once."""
    if isinstance(name, Backend):
        return name
    name = _check_name(name) if name is not None else current_backend_name()
    if name not in _instances:
        _instances[name] = _FACTORIES[name]()
    return _instances[name]


def cuda_is_available() -> bool:
    """True when CuPy imports and sees a usable GPU."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def default_backend_name() -> str:
    """What the current backend is until one is chosen: see the module docstring."""
    if _default is not None:
        return _default
    return "cuda" if cuda_is_available() else "numpy"


def current_backend_name() -> str:
    global _current
    if _current is None:
        _current = default_backend_name()
    return _current


def set_backend(name: str) -> Backend:
    """Make ``name`` the current backend (raises if it cannot run here) and return it."""
    global _current
    backend = get_backend(_check_name(name))
    _current = name
    return backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """``with gpucnn.use_backend("cuda-sim"): ...`` — the previous backend comes back after."""
    global _current
    previous = current_backend_name()
    backend = set_backend(name)
    try:
        yield backend
    finally:
        _current = previous


def backend_of(obj: Any) -> str:
    """Which backend an array or model is on.

    A model (anything with a ``backend`` attribute) answers exactly; a CuPy array is
    ``'cuda'``; any other array lives in host memory, reported as ``'numpy'`` (the
    ``cuda-sim`` backend computes on host arrays too).
    """
    backend = getattr(obj, "backend", None)
    if isinstance(backend, Backend):
        return backend.name
    if type(obj).__module__.split(".")[0] == "cupy":
        return "cuda"
    return "numpy"


def _read_environment() -> None:
    global _current
    requested = os.environ.get("GPUCNN_BACKEND", "").strip()
    if requested:
        set_backend(requested)


_read_environment()
