"""gpucnn.distributed: 2 MPI ranks against one process (mpiexec from the mpich wheel, numpy backend),
and the pieces that need no launcher (sharding, buckets, SyncBatchNorm with one rank, NCCL on one GPU)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import distributed, nn
from gpucnn.datasets import BatchIterator, shard_slice
from gpucnn.distributed.comm import padded_split, sum_in_rank_order
from gpucnn.distributed.parallel import _buckets

SCRIPT = Path(__file__).resolve().parent / "distributed_scripts" / "train_small.py"
TIMEOUT = 60  # seconds for one mpiexec run: a hung collective fails the test instead of CI


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # where the mpich wheel puts it in a virtual environment
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason="needs mpi4py and mpiexec: pip install 'gpucnn[mpi]'")


def run(tmp_path: Path, name: str, ranks: int | None, *args: str) -> dict[str, np.ndarray]:
    """Run the training script on ``ranks`` MPI ranks (None: plain python, no launcher); its rank 0's output."""
    out = tmp_path / f"{name}.npz"
    command = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    if ranks is not None:
        command = [MPIEXEC, "-n", str(ranks), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    with np.load(out) as f:
        return dict(f)


def assert_close(one: dict, many: dict, rtol: float) -> None:
    assert many["ranks_identical"], "the ranks ended with different parameters"
    assert many["reproducible"], "a second run on the same ranks gave other bits"
    for key, value in one.items():
        if value.dtype.kind == "f" and value.ndim:
            error = np.linalg.norm(value - many[key]) / np.linalg.norm(value)
            assert error <= rtol, f"{key}: relative difference {error:.2e} > {rtol:.0e}"


@needs_mpi
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-12)])
def test_two_ranks_train_as_one_process_with_the_global_batch(tmp_path, dtype, rtol):
    # 2 epochs of 3 steps (batches 16, 16, 5: the last split 3/2 and weighted), shifts, momentum, weight decay
    assert_close(run(tmp_path, "one", None, "--dtype", dtype), run(tmp_path, "two", 2, "--dtype", dtype), rtol)


@needs_mpi
def test_sync_batchnorm_on_two_ranks_is_batchnorm_on_the_global_batch(tmp_path):
    one = run(tmp_path, "one", None, "--dtype", "float64", "--norm", "batch")
    assert_close(one, run(tmp_path, "two", 2, "--dtype", "float64", "--norm", "sync"), 1e-12)
    # plain BatchNorm keeps per-rank statistics: not the one-process result
    per_rank = run(tmp_path, "per_rank", 2, "--dtype", "float64", "--norm", "batch")
    assert per_rank["ranks_identical"]
    assert not np.allclose(one["0.weight"], per_rank["0.weight"], rtol=1e-6)


@needs_mpi
def test_checkpoints_resume_with_another_world_size(tmp_path):
    whole = run(tmp_path, "whole", None, "--dtype", "float64")
    two_then_one = tmp_path / "by_two.npz"
    run(tmp_path, "first", 2, "--dtype", "float64", "--epochs", "1", "--save", str(two_then_one))
    assert_close(whole, run(tmp_path, "rest_one", None, "--dtype", "float64", "--resume", str(two_then_one)), 1e-12)
    one_then_two = tmp_path / "by_one.npz"
    run(tmp_path, "first_one", None, "--dtype", "float64", "--epochs", "1", "--save", str(one_then_two))
    assert_close(whole, run(tmp_path, "rest_two", 2, "--dtype", "float64", "--resume", str(one_then_two)), 1e-12)
    # rank 0 wrote a plain checkpoint: it loads into the bare model
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, dtype="float64"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 4, dtype="float64"))
    assert gpucnn.load(two_then_one, model)["epoch"] == 1


@needs_mpi
def test_a_rank_that_raises_aborts_the_job_and_shows_the_error(tmp_path):
    started = time.perf_counter()
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.npz"),
                           "--fail-on-rank", "1"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stdout + done.stderr
    assert "aborting all ranks" in done.stderr
    assert time.perf_counter() - started < TIMEOUT / 2  # rank 0 was stopped, not left waiting in a collective


# ---------------------------------------------------------------------------- without a launcher
def test_world_of_one_without_a_launcher(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init() == 1 and distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.is_main()
    distributed.barrier()
    t = gpucnn.tensor([1.0, 2.0])
    assert np.array_equal(distributed.all_reduce(t, "mean").numpy(), [1.0, 2.0])
    assert distributed.all_reduce(3) == 3 and distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(5) == [5]


def test_the_sum_adds_ranks_in_rank_order():
    flat = np.arange(7, dtype=np.float32)
    rows = padded_split(flat, 3, np)
    assert rows.shape == (3, 3) and np.array_equal(rows.reshape(-1)[:7], flat) and rows[2, 1:].sum() == 0
    a, b, c = np.float32([1e8]), np.float32([1.0]), np.float32([-1e8])
    assert sum_in_rank_order(np.stack([a, b, c]))[0] == np.float32((a + b) + c)[0] == 0.0  # not a + (b + c)


def test_buckets_run_backwards_through_the_parameters_and_respect_the_limit():
    model = gpucnn.LeNet5()
    params = list(model.parameters())[::-1]
    buckets = _buckets(params, 64 * 1024)
    assert [p for b in buckets for p in b] == params
    assert all(sum(p.numel() * 4 for p in b) <= 64 * 1024 or len(b) == 1 for b in buckets)
    assert len(_buckets(params, 2 ** 30)) == 1


def test_data_parallel_of_one_rank_is_the_model():
    model = gpucnn.LeNet5()
    wrapped = distributed.DataParallel(model)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(wrapped(x).numpy(), model(x).numpy())
    assert list(wrapped.state_dict()) == list(model.state_dict())
    assert [n for n, _ in wrapped.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert distributed.unwrap(wrapped) is model


def test_post_accumulate_grad_hook_sees_each_accumulation_and_can_be_removed():
    w = gpucnn.Parameter(np.ones(3, dtype=np.float32))
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda p: calls.append(p.grad.numpy().copy()))
    (w * 2).sum().backward()
    (w * w).sum().backward()  # w reaches the product twice: two accumulations, 2 + 1 + 1
    assert [c.tolist() for c in calls] == [[2, 2, 2], [3, 3, 3], [4, 4, 4]]
    handle.remove()
    (w * 2).sum().backward()
    assert len(calls) == 3


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("max_shift", [0, 2])
def test_rank_shards_make_up_the_one_process_batches(world, max_shift):
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((23, 1, 6, 6)).astype(np.float32), np.arange(23)
    numpy_backend = gpucnn.get_backend("numpy")

    def batches(rank: int, size: int) -> list:
        it = BatchIterator(images, labels, 8, numpy_backend, rng=np.random.default_rng(4), max_shift=max_shift,
                           rank=rank, world_size=size)
        out = [(x, y, it.batch_weight) for x, y in it]
        assert len(out) == len(it)
        return out

    single = batches(0, 1)
    parts = [batches(r, world) for r in range(world)]
    for step, (x, y, _) in enumerate(single):
        assert np.array_equal(np.concatenate([p[step][0] for p in parts]), x)
        assert np.array_equal(np.concatenate([p[step][1] for p in parts]), y)
        # weighted so that the ranks' average of weight * (mean loss of its part) is the batch's mean loss
        assert all(p[step][2] == len(p[step][1]) * world / len(y) for p in parts)
    assert shard_slice(10, 2, 3) == slice(7, 10) and shard_slice(10, 0, 3) == slice(0, 4)


def test_sync_batchnorm_with_one_rank_is_batchnorm_and_conversion_keeps_the_layers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 5))
    plain, sync = nn.BatchNorm2d(3, dtype=np.float64), nn.SyncBatchNorm(3, dtype=np.float64)
    assert np.array_equal(plain(x).numpy(), sync(x).numpy())
    assert np.array_equal(plain.running_var, sync.running_var)
    model = gpucnn.ResNet(depth=8, width=4, in_channels=1)
    params = [id(p) for p in model.parameters()]
    names = [n for n, _ in model.named_modules()]
    count = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert [id(p) for p in converted.parameters()] == params and [n for n, _ in converted.named_modules()] == names
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == count > 0


def test_nccl_communicator_on_one_gpu():
    if not gpucnn.cuda_is_available():
        pytest.skip("NCCL needs CuPy and a GPU")
    from gpucnn.distributed.nccl import NcclCommunicator

    cuda = gpucnn.get_backend("cuda")
    comm = NcclCommunicator(0, 1, lambda value: value)
    values = cuda.asarray(np.arange(10, dtype=np.float32))
    assert np.array_equal(cuda.to_numpy(comm.sum(values)), np.arange(10))
    assert np.array_equal(cuda.to_numpy(comm.start_sum(values).wait()), np.arange(10))
    assert np.array_equal(cuda.to_numpy(comm.broadcast_(values, 0)), np.arange(10))


def test_the_nccl_module_loads_without_importing_cupy():
    # it reaches CuPy through cupy_device.nccl_modules() when a communicator is made, never on import
    code = "import sys, gpucnn.distributed.nccl; print('cupy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
