"""The one module that imports CuPy: device arrays, and kernels compiled by NVRTC via RawModule."""

from __future__ import annotations

from typing import Any

import numpy as np

from .cuda_backend import CudaBackend
from .kernel_source import kernel_source, real_type

INSTALL_HINT = ("pip install 'gpucnn[cuda12]' for a CUDA 12 driver or 'gpucnn[cuda13]' for CUDA 13 "
                "(see nvidia-smi for your driver's CUDA version)")


class CupyDevice:
    """Arrays are ``cupy.ndarray``; each kernel module is compiled once per process per
    (dtype, index width) and cached (CuPy also caches the binary on disk)."""

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self.xp = cupy
        self.array_type = cupy.ndarray
        self.multiprocessor_count = int(cupy.cuda.Device().attributes["MultiProcessorCount"])
        self._modules: dict[tuple[str, str, bool], Any] = {}
        self._functions: dict[tuple[str, str, str, bool], Any] = {}

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.cupy.ascontiguousarray(self.cupy.asarray(a, dtype=dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.cupy.asnumpy(a)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.cupy.empty(shape, dtype=dtype)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def _function(self, module: str, kernel: str, real: np.dtype, index64: bool) -> Any:
        key = (module, kernel, real.name, index64)
        if key not in self._functions:
            mod_key = (module, real.name, index64)
            if mod_key not in self._modules:
                options = ("-std=c++17", f"-DGPUCNN_REAL={real_type(real)}", f"-DGPUCNN_INDEX64={int(index64)}")
                self._modules[mod_key] = self.cupy.RawModule(code=kernel_source(module), options=options)
            self._functions[key] = self._modules[mod_key].get_function(kernel)
        return self._functions[key]

    def launch(self, module: str, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: list[Any],
               real: np.dtype, index64: bool, shared_mem: int = 0) -> None:
        self._function(module, kernel, real, index64)(grid, block, tuple(args), shared_mem=shared_mem)


def make_cuda_backend() -> CudaBackend:
    """The ``cuda`` backend, or a RuntimeError that says what is missing and how to get it."""
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(f"the cuda backend needs CuPy, which is not installed: {INSTALL_HINT}") from exc
    try:
        available = cupy.is_available()
    except Exception:  # a broken driver install raises instead of answering
        available = False
    if not available:
        raise RuntimeError("the cuda backend needs a GPU, but CuPy finds no usable GPU (cupy.is_available() is "
                           "False): check that nvidia-smi lists one and that the driver matches your CuPy build; "
                           "use GPUCNN_BACKEND=numpy (or cuda-sim to run the kernels on the CPU)")
    return CudaBackend(CupyDevice(), name="cuda")
