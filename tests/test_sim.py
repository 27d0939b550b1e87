"""The cuda-sim emulator itself: barriers, shuffles, shared memory and atomics really work, and
wrong launches, wrong argument types, deadlocks and out-of-bounds accesses are caught."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gpucnn
from gpucnn.backends.cuda.kernel_source import kernel_modules, kernel_names, kernel_source
from gpucnn.backends.elementwise import ELEMENTWISE_OPS

from conftest import _sim_reason

pytestmark = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")

PROBES = textwrap.dedent(r"""
    #include "common.cuh"

    // reverse each block's slice through static shared memory: needs a working barrier
    extern "C" __global__ void reverse_blocks(const float* x, float* y) {
        __shared__ float tile[256];
        tile[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
        __syncthreads();
        y[blockIdx.x * blockDim.x + threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
    }

    // the same through the launch's dynamic shared memory
    extern "C" __global__ void reverse_dynamic(const float* x, float* y) {
        extern __shared__ __align__(16) float scratch[];
        scratch[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
        __syncthreads();
        y[blockIdx.x * blockDim.x + threadIdx.x] = scratch[blockDim.x - 1 - threadIdx.x];
    }

    // each warp sums its 32 values with shuffles; lane 0 writes the total
    extern "C" __global__ void warp_totals(const float* x, float* totals) {
        float v = x[blockIdx.x * blockDim.x + threadIdx.x];
        v = warp_sum(v);
        float down = __shfl_down_sync(0xffffffffu, (float)threadIdx.x, 1);
        if (threadIdx.x % 32 == 0) totals[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v + 0 * down;
        if (threadIdx.x % 32 == 30 && down != (float)(threadIdx.x + 1)) __trap();
        if (threadIdx.x % 32 == 31 && down != (float)threadIdx.x) __trap();
    }

    extern "C" __global__ void count_positive(const float* x, int* count, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n && x[i] > 0) atomicAdd(count, 1);
    }

    // half the warp shuffles while the other half waits at the block barrier: neither completes
    extern "C" __global__ void divergent_shuffle(float* y) {
        float v = threadIdx.x;
        if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
        __syncthreads();
        y[threadIdx.x] = v;
    }

    extern "C" __global__ void write_past_end(float* y, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        y[i + n] = 1;  // every thread writes n elements too far
    }
""")


@pytest.fixture(scope="module")
def sim():
    backend = gpucnn.get_backend("cuda-sim")
    backend.device.add_source("probes", PROBES)
    return backend


def _launch(sim, kernel, grid, block, args, shared_mem=0):
    sim.device.launch("probes", kernel, grid, block, args, np.dtype(np.float32), False, shared_mem)


def test_barrier_and_static_shared_memory(sim, rng):
    x = rng.standard_normal(4 * 256).astype(np.float32)
    y = sim.device.empty(x.shape, np.float32)
    _launch(sim, "reverse_blocks", (4,), (256,), [x, y])
    np.testing.assert_array_equal(y, x.reshape(4, 256)[:, ::-1].ravel())


def test_dynamic_shared_memory(sim, rng):
    x = rng.standard_normal(3 * 128).astype(np.float32)
    y = sim.device.empty(x.shape, np.float32)
    _launch(sim, "reverse_dynamic", (3,), (128,), [x, y], shared_mem=128 * 4)
    np.testing.assert_array_equal(y, x.reshape(3, 128)[:, ::-1].ravel())


def test_warp_shuffles(sim, rng):
    x = rng.standard_normal(2 * 128).astype(np.float32)
    totals = sim.device.empty((8,), np.float32)
    _launch(sim, "warp_totals", (2,), (128,), [x, totals])
    np.testing.assert_allclose(totals, x.reshape(8, 32).sum(axis=1), rtol=1e-5)


def test_atomics_across_parallel_blocks(sim, rng):
    x = rng.standard_normal(100_000).astype(np.float32)
    count = np.zeros(1, np.int32)
    _launch(sim, "count_positive", (-(-x.size // 256),), (256,), [x, count, np.int32(x.size)])
    assert count[0] == (x > 0).sum()


def test_deadlock_is_reported_not_hung(sim):
    y = sim.device.empty((32,), np.float32)
    with pytest.raises(RuntimeError, match=r"divergent_shuffle: deadlock in block \(0, 0, 0\)"):
        _launch(sim, "divergent_shuffle", (1,), (32,), [y])


def test_wrong_argument_types_are_caught(sim):
    x = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match="count_positive parameter 2 is a 4-byte signed integer, but the launcher "
                                        "passed a 8-byte signed integer"):
        _launch(sim, "count_positive", (1,), (32,), [x, np.zeros(1, np.int32), np.int64(10)])
    with pytest.raises(TypeError, match="argument 2 is a Python int"):
        _launch(sim, "count_positive", (1,), (32,), [x, np.zeros(1, np.int32), 10])
    with pytest.raises(TypeError, match="takes 3 arguments, the launcher passed 2"):
        _launch(sim, "count_positive", (1,), (32,), [x, np.zeros(1, np.int32)])


def test_bad_launch_configuration(sim):
    with pytest.raises(RuntimeError, match="invalid launch configuration: 1 blocks of 2048 threads"):
        _launch(sim, "reverse_blocks", (1,), (2048,), [np.zeros(2048, np.float32), np.zeros(2048, np.float32)])


def test_too_small_grid_leaves_poisoned_outputs(sim, rng):
    """A conv launch that covers only the first 64-pixel tile: the rest stays NaN, and the
    parity check that every op test makes would fail."""
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = sim.device.empty((2, 4, 10, 10), np.float32)
    args = [x, w, w, y, *sim._geometry(x.shape, w.shape, (10, 10), (1, 1), (0, 0, 0, 0), (1, 1), 1), np.int32(0),
            np.int32(0)]
    sim._launch("conv2d", "conv2d_forward", (1, 1, 1), (256,), args, np.float32, (x,))
    assert np.isfinite(y.reshape(2, 4, 100)[0, :, :64]).all()
    assert np.isnan(y).sum() == 2 * 4 * 100 - 4 * 64
    good = sim.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert not np.allclose(y, good, equal_nan=False)


def test_every_kernel_is_emulated(sim, rng):
    """No kernel is left out of the emulator: each one is launched here and counted."""
    not_emulated = []  # kernels needing e.g. tensor-core instructions would be listed here
    device = sim.device
    device.launch_counts.clear()
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    y = sim.conv2d_forward(x, w, w[:, 0, 0, 0].copy(), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    sim.conv2d_backward(y, x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    for pool in ("maxpool2d", "avgpool2d"):
        forward = getattr(sim, f"{pool}_forward")
        out = forward(x, (2, 2), (2, 2), (0, 0), False) if pool == "maxpool2d" else \
            forward(x, (2, 2), (2, 2), (0, 0), False, True)
        if pool == "maxpool2d":
            sim.maxpool2d_backward(out[0], out[1], x.shape, (2, 2), (2, 2), (0, 0))
            unpooled = sim.maxunpool2d_forward(out[0], out[1].astype(np.int64), x.shape[2:])
            sim.maxunpool2d_backward(unpooled, out[1].astype(np.int64))
        else:
            sim.avgpool2d_backward(out, x.shape, (2, 2), (2, 2), (0, 0), False, True)
    y_adaptive, argmax_adaptive = sim.adaptive_maxpool2d_forward(x, (4, 5))
    sim.adaptive_maxpool2d_backward(y_adaptive, argmax_adaptive, x.shape)
    lp = sim.lppool2d_forward(np.abs(x), 2.0, (2, 2), (2, 2), False)
    sim.lppool2d_backward(lp, np.abs(x), lp, 2.0, (2, 2), (2, 2), False)
    sim.relu_backward(x, sim.relu_forward(x))
    for op in ELEMENTWISE_OPS:  # every row of backends/elementwise.py: arrays of x's shape, scalars 0.1
        getattr(sim, op.name)(*[x] * len(op.arrays), *[0.1] * len(op.scalars))
    _, mask = sim.dropout_forward(x, 0.5, 1)
    sim.dropout_backward(x, mask, 0.5)
    sim.softmax_cross_entropy(x.reshape(12, 12), np.zeros(12, np.int32))
    p = rng.standard_normal(5).astype(np.float32)
    sim.sgd_update(p, p.copy(), None, 0.1, 0, 0, False)
    sim.sgd_update(p, p.copy(), np.zeros(5, np.float32), 0.1, 0.9, 0, False)
    sim.adam_update(p, p.copy(), np.zeros(5, np.float32), np.zeros(5, np.float32), 1, 0.1, 0.9, 0.99, 1e-8, 0, False)
    sim.sgd_update_many([p], [p.copy()], None, 0.1, 0, 0, False)
    sim.adam_update_many([p], [p.copy()], [np.zeros(5, np.float32)], [np.zeros(5, np.float32)], 1, 0.1, 0.9, 0.99,
                         1e-8, 0, False)
    # the CUDA-graph step's kernels (tests/test_cuda_graph.py checks them against their references)
    step, keys = np.zeros(1, np.int64), np.zeros((1, 1), np.uint32)
    sim.dropout_forward_stepped(x, 0.5, keys, step, 0)
    sim.softmax_cross_entropy_accumulate(x.reshape(12, 12), np.zeros(12, np.int32), np.zeros(1))
    sim.gather_batch(x, np.zeros(2, np.int32), np.arange(2, dtype=np.int32), None, step, 2, 2, 0, x.min().reshape(1))
    sim.step_advance(step)
    sim.sgd_update_many_stepped([p], [p.copy()], None, np.zeros((2, 3), np.float32), step, False)
    sim.adam_update_many_stepped([p], [p.copy()], [np.zeros(5, np.float32)], [np.zeros(5, np.float32)],
                                 np.full((2, 7), 0.5, np.float32), step, False)
    rows, weight = x.reshape(24, 6), w.reshape(6, 6)
    sim.linear_backward(sim.linear_forward(rows, weight, None), rows, weight)
    normed, mean, rstd = sim.row_norm_forward(rows, 1e-5)
    sim.row_norm_backward(normed, rows, mean, rstd)
    padded = sim.pad2d_forward(x, (1, 2, 2, 0), "reflect", 0.0)
    sim.pad2d_backward(padded, x.shape, (1, 2, 2, 0), "reflect")
    every = {name for module in kernel_modules() for name in kernel_names(kernel_source(module))}
    assert every - set(device.launch_counts) == set(), "kernels never run on cuda-sim"
    assert not_emulated == []


def test_index64_build_gives_the_same_results(rng):
    backend = gpucnn.get_backend("cuda-sim")
    numpy_backend = gpucnn.get_backend("numpy")
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    args = ((2, 1), (1, 1, 2, 0), (1, 2), 1)
    backend.force_index64 = True
    try:
        y = backend.conv2d_forward(x, w, None, *args)
        dx, dw, db = backend.conv2d_backward(y, x, w, *args)
        pooled, idx = backend.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), True)
    finally:
        backend.force_index64 = False
    ry = numpy_backend.conv2d_forward(x, w, None, *args)
    np.testing.assert_allclose(y, ry, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, numpy_backend.conv2d_backward(ry, x, w, *args)[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pooled, numpy_backend.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), True)[0])


def test_compile_error_names_file_and_line(tmp_path, monkeypatch):
    from gpucnn.backends.sim.device import SimCompileError

    monkeypatch.setenv("GPUCNN_SIM_CACHE", str(tmp_path))
    sim = gpucnn.get_backend("cuda-sim")
    sim.device.add_source("broken", '#include "common.cuh"\nextern "C" __global__ void broken(real* y) {\n'
                                    '    y[0] = undefined_name;\n}\n')
    with pytest.raises(SimCompileError, match=r"broken.cu:3:\d+: error: .undefined_name. was not declared"):
        sim.device.launch("broken", "broken", (1,), (1,), [np.zeros(1, np.float32)], np.dtype(np.float32), False)


def test_missing_compiler_says_how_to_install(monkeypatch):
    from gpucnn.backends.sim import device as loader

    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(loader.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+20 compiler.*apt-get install g\\+\\+"):
        loader.find_compiler()


def _asan_runtime() -> str | None:
    out = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) else None


@pytest.mark.skipif(_asan_runtime() is None, reason="g++ has no AddressSanitizer runtime")
def test_out_of_bounds_write_is_caught_by_the_sanitizer(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, gpucnn
        sim = gpucnn.get_backend("cuda-sim")
        sim.device.add_source("oob", {PROBES!r})
        y = np.zeros(64, np.float32)
        sim.device.launch("oob", "write_past_end", (2,), (32,), [y, np.int32(64)], np.dtype(np.float32), False)
        print("no error")
    """)
    env = dict(os.environ, GPUCNN_SIM_SANITIZE="1", LD_PRELOAD=_asan_runtime(), ASAN_OPTIONS="detect_leaks=0",
               GPUCNN_SIM_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0 and "no error" not in out.stdout
    # the byte past the array is usually its redzone (heap-buffer-overflow), but where the allocator put a
    # chunk freed earlier right behind it ASan reports heap-use-after-free: both are the write caught
    assert ("heap-buffer-overflow" in out.stderr or "heap-use-after-free" in out.stderr), out.stderr[-2000:]
    assert "write_past_end" in out.stderr


def test_builds_are_cached_by_source_and_flags(tmp_path, monkeypatch):
    from gpucnn.backends.sim import device as loader

    monkeypatch.setenv("GPUCNN_SIM_CACHE", str(tmp_path))
    first = loader.build("activations", "float", False)
    stamp = first.stat().st_mtime_ns
    compiles = []
    real_run = loader.subprocess.run

    def counting_run(command, **kwargs):
        if "-o" in command:
            compiles.append(command)
        return real_run(command, **kwargs)

    monkeypatch.setattr(loader.subprocess, "run", counting_run)
    assert loader.build("activations", "float", False) == first and first.stat().st_mtime_ns == stamp
    assert compiles == []  # a second run starts from the cache
    other = loader.build("activations", "double", False)  # other flags: another library
    assert other != first and len(compiles) == 1
