"""The one module that imports CuPy: device arrays, and kernels compiled by NVRTC via RawModule.

Creating the ``cuda`` backend compiles and runs one tiny kernel (``check_compiler``), so that a
CuPy without its compiler or the CUDA headers is reported by ``set_backend('cuda')``, with the fix.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .kernel_source import kernel_source, real_type
from .launchers import CaptureGuard, CudaBackend

INSTALL_HINT = ("pip install 'gpucnn[cuda12]' for a CUDA 12 driver or 'gpucnn[cuda13]' for CUDA 13 "
                "(see nvidia-smi for your driver's CUDA version)")
#: NVRTC options every kernel module is compiled with (the start-up check uses them too)
NVRTC_OPTIONS = ("-std=c++17",)

# The start-up check: one kernel through the same RawModule path as kernels/*.cu, then one of CuPy's
# own elementwise kernels, which include the CUDA headers that a driver-only machine lacks.
PROBE_KERNEL = "gpucnn_probe"
PROBE_SOURCE = r"""
extern "C" __global__ void gpucnn_probe(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * i + 1.0f;
}
"""
PROBE_SIZE = 32


class CupyDevice(CaptureGuard):
    """Arrays are ``cupy.ndarray``; each kernel module is compiled once per process per
    (dtype, index width) and cached (CuPy also caches the binary on disk).

    CUDA-graph capture (gpucnn/cuda_graph.py drives it): ``pool = new_graph_pool()``; a warm-up step
    ``with using_graph_pool(pool)``; ``begin_capture(pool)``; one step; ``end_capture()`` -> a
    ``CupyGraph`` whose ``replay()`` launches it on the current stream. The capture runs on a side
    stream of its own (CUDA cannot capture the legacy default stream) with every allocation taken
    from ``pool``, a private ``cupy.cuda.MemoryPool`` that the graph keeps: memory a graph reads and
    writes is never handed to another array (PyTorch keeps a private pool per graph for the same
    reason). The warm-up under the same pool and stream leaves freed blocks of the step's sizes in
    the pool, so the capture needs no new cudaMalloc.
    """

    device_name = "cuda"

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self.xp = cupy
        self.array_type = cupy.ndarray
        self.multiprocessor_count = int(cupy.cuda.Device().attributes["MultiProcessorCount"])
        self._modules: dict[tuple[str, str, bool], Any] = {}
        self._functions: dict[tuple[str, str, str, bool], Any] = {}
        #: device->host copies (to_numpy) and stream synchronizations asked for through this device
        self.host_transfer_count = 0
        self.sync_count = 0
        self._capture: _Capture | None = None

    @property
    def capturing(self) -> bool:
        return self._capture is not None

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        self._refuse_during_capture("asarray (a host->device copy)")
        return self.cupy.asarray(a, dtype=dtype, order="C")  # ascontiguousarray would make a 0-d array 1-d

    def to_numpy(self, a: Any) -> np.ndarray:
        self._refuse_during_capture("to_numpy (a device->host copy)")
        self.host_transfer_count += 1
        return self.cupy.asnumpy(a)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.cupy.empty(shape, dtype=dtype)

    def synchronize(self) -> None:
        self._refuse_during_capture("synchronize")
        self.sync_count += 1
        self.cupy.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------------ CUDA-graph capture
    def new_graph_pool(self) -> Any:
        return _GraphPool(self.cupy)

    def using_graph_pool(self, pool: _GraphPool) -> contextlib.AbstractContextManager:
        """Within: CuPy allocates from ``pool`` and works on its stream (after what the current stream
        has queued; the current stream then waits for it)."""
        return pool.entered()

    def begin_capture(self, pool: _GraphPool) -> None:
        if self._capture is not None:
            raise RuntimeError("cuda: begin_capture: a capture is already under way")
        stack = contextlib.ExitStack()
        stack.enter_context(pool.entered())
        try:
            pool.stream.begin_capture()  # CuPy's default mode is relaxed: the pool may still cudaMalloc
        except BaseException:
            stack.close()
            raise
        self._capture = _Capture(pool, stack)

    def end_capture(self) -> CupyGraph:
        capture, self._capture = self._capture, None
        if capture is None:
            raise RuntimeError("cuda: end_capture without begin_capture")
        try:
            graph = capture.pool.stream.end_capture()
        finally:
            capture.stack.close()
        for dst, host in capture.uploads:  # on the current stream, before any replay is queued on it
            dst.set(host)
        return CupyGraph(graph, capture.pool)

    def upload_after_capture(self, dst: Any, host: np.ndarray) -> None:
        if self._capture is None:
            raise RuntimeError("cuda: upload_after_capture is for use during a capture")
        self._capture.uploads.append((dst, np.array(host, copy=True)))

    def copy_from_host(self, dst: Any, host: np.ndarray) -> None:
        """Overwrite ``dst`` in place (its address stays what a graph captured), on the current stream."""
        self._refuse_during_capture("copy_from_host (a host->device copy)")
        host = np.ascontiguousarray(host)
        if host.shape != dst.shape or host.dtype != dst.dtype:
            raise ValueError(f"cuda: copy_from_host: the device array is {dst.dtype} {dst.shape}, the host array "
                             f"{host.dtype} {host.shape}")
        dst.set(host)

    def _function(self, module: str, kernel: str, real: np.dtype, index64: bool) -> Any:
        key = (module, kernel, real.name, index64)
        if key not in self._functions:
            mod_key = (module, real.name, index64)
            if mod_key not in self._modules:
                options = (*NVRTC_OPTIONS, f"-DGPUCNN_REAL={real_type(real)}", f"-DGPUCNN_INDEX64={int(index64)}")
                self._modules[mod_key] = self.cupy.RawModule(code=kernel_source(module), options=options)
            self._functions[key] = self._modules[mod_key].get_function(kernel)
        return self._functions[key]

    def launch(self, module: str, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: list[Any],
               real: np.dtype, index64: bool, shared_mem: int = 0) -> None:
        self._function(module, kernel, real, index64)(grid, block, tuple(args), shared_mem=shared_mem)


class _GraphPool:
    """A private memory pool and the side stream a graph is captured on."""

    def __init__(self, cupy: Any) -> None:
        self.cupy = cupy
        self.memory = cupy.cuda.MemoryPool()
        self.stream = cupy.cuda.Stream(non_blocking=True)

    @contextlib.contextmanager
    def entered(self) -> Any:
        outer = self.cupy.cuda.get_current_stream()
        self.stream.wait_event(outer.record())
        try:
            with self.cupy.cuda.using_allocator(self.memory.malloc), self.stream:
                yield self
        finally:
            if not self.stream.is_capturing():
                outer.wait_event(self.stream.record())


class _Capture:
    def __init__(self, pool: _GraphPool, stack: contextlib.ExitStack) -> None:
        self.pool, self.stack = pool, stack
        self.uploads: list[tuple[Any, np.ndarray]] = []


class CupyGraph:
    """A captured step: ``replay()`` launches it on the current stream. It holds the private pool
    whose memory the graph uses, so that memory outlives every replay."""

    def __init__(self, graph: Any, pool: _GraphPool) -> None:
        self.graph, self.pool = graph, pool
        #: how often the graph has been replayed
        self.replays = 0

    def replay(self) -> None:
        # on the current stream, in order with the eager work and the table uploads queued there
        self.graph.launch(stream=self.pool.cupy.cuda.get_current_stream())
        self.replays += 1


def _cuda_major(cupy: Any) -> int | None:
    """The CUDA major version CuPy was built for (12 for cupy-cuda12x), or None if it cannot say."""
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:
        return None


def toolkit_hint(cupy: Any) -> str:
    """How to get NVRTC and the CUDA headers for the installed CuPy build."""
    major = _cuda_major(cupy)
    if major in (12, 13):
        return (f"pip install 'gpucnn[cuda{major}]' (it installs cupy-cuda{major}x[ctk]: CuPy with the CUDA {major} "
                f"compiler and headers from PyPI), or install the CUDA {major} toolkit and set CUDA_PATH")
    return ("pip install 'gpucnn[cuda12]' or 'gpucnn[cuda13]', the one matching your CuPy build (they install "
            "cupy-cuda12x[ctk] / cupy-cuda13x[ctk]: CuPy with the CUDA compiler and headers from PyPI), or install "
            "the CUDA toolkit and set CUDA_PATH")


def _is_driver_error(exc: Exception) -> bool:
    # CuPy reports a module the driver cannot load or run (e.g. PTX newer than the driver) as a
    # CUDADriverError/CUDARuntimeError; a missing NVRTC or header is a CompileException or a load error
    return type(exc).__name__ in ("CUDADriverError", "CUDARuntimeError")


def check_compiler(device: CupyDevice) -> None:
    """Compile, run and check one tiny kernel, so that a machine without the CUDA compiler or headers
    (a driver-only install: CuPy 14 compiles every kernel at run time) fails when the backend is
    chosen, with the fix, instead of at the first layer deep inside training."""
    cupy = device.cupy
    try:
        function = cupy.RawModule(code=PROBE_SOURCE, options=NVRTC_OPTIONS).get_function(PROBE_KERNEL)
        out = device.empty((PROBE_SIZE,), np.float32)
        function((1,), (PROBE_SIZE,), (out, np.int32(PROBE_SIZE)))
        got = device.to_numpy(out * 2)
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}".strip()
        if _is_driver_error(exc):
            raise RuntimeError(f"the GPU driver could not load or run the cuda backend's test kernel ({what}). "
                               f"The driver is probably older than the CUDA version of your CuPy build: update the "
                               f"NVIDIA driver, or install the build that matches it: {INSTALL_HINT}") from exc
        raise RuntimeError(f"the cuda backend could not compile and run a test kernel with CuPy's NVRTC ({what}). "
                           f"CuPy compiles kernels when they are first used and needs the CUDA compiler library "
                           f"(NVRTC) and the CUDA headers, which a machine with only the GPU driver lacks: "
                           f"{toolkit_hint(cupy)}") from exc
    expected = (2 * np.arange(PROBE_SIZE, dtype=np.float32) + 1) * 2
    if not np.array_equal(np.asarray(got), expected):
        raise RuntimeError(f"the cuda backend's test kernel ran but computed {np.asarray(got)[:4]}..., expected "
                           f"{expected[:4]}...: the GPU, driver or CuPy install is broken; try "
                           f"GPUCNN_BACKEND=cuda-sim to check the kernels on the CPU")


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
    device = CupyDevice()
    check_compiler(device)
    return CudaBackend(device, name="cuda")


# ---------------------------------------------------------------------------- for gpucnn.distributed
def use_device_for_rank(local_rank: int) -> int | None:
    """Make GPU ``local_rank % count`` this process's current device (one GPU per rank on a node);
    None when CuPy or a GPU is missing. Must run before the cuda backend compiles anything."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, or a CuPy without a driver: the host backends need no device
        return None
    if count == 0:
        return None
    cupy.cuda.Device(local_rank % count).use()
    return local_rank % count


def nccl_modules() -> tuple[Any, Any]:
    """``(cupy, cupy.cuda.nccl)`` for gpucnn/distributed/nccl.py: its NCCL communicator reaches CuPy
    through here, so that gpucnn.distributed imports no CuPy of its own."""
    import cupy
    from cupy.cuda import nccl

    return cupy, nccl
