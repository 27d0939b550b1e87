"""Data-parallel training over MPI: one process per CPU socket or GPU, on one node or many.

    mpiexec -n 2 python examples/train_mnist.py --distributed

``init()`` joins the job an MPI launcher (``mpiexec``, ``srun``) started, and is world size 1 in a
plain ``python`` run. Host arrays (the ``numpy`` and ``cuda-sim`` backends) travel over MPI
(mpi4py); CuPy arrays travel over NCCL on the current stream, with NCCL's unique id sent over MPI,
each rank on GPU ``local_rank % GPUs per node``. Every sum adds the ranks in rank order (see
``comm.py``), so a run is bitwise reproducible for a given world size. mpi4py is optional:
``pip install 'gpucnn[mpi]'`` brings it and an MPI (the MPICH wheel).

The modules: ``world`` (``init``, the rank and world size, the collectives), ``comm`` (MPI),
``nccl`` (NCCL, loaded when the first CuPy array is reduced), ``parallel`` (DataParallel) and
``sync_batchnorm``; this file only re-exports.
"""

from .parallel import DataParallel, unwrap
from .world import MPI_HINT as MPI_HINT  # reachable as before, though not in __all__
from .world import (
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    communicator_for,
    init,
    is_initialized,
    is_main,
    launched_by_mpi,
    local_rank,
    rank,
    shard,
    world_size,
)

__all__ = [
    "DataParallel", "all_gather_object", "all_reduce", "barrier", "broadcast", "communicator_for", "init",
    "is_initialized", "is_main", "launched_by_mpi", "local_rank", "rank", "shard", "unwrap", "world_size",
]
