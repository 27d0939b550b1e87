"""The MPI communicator for host arrays (numpy, cuda-sim), with a sum whose order is fixed.

``MPI_Allreduce`` may add the ranks' values in any order its algorithm picks (message size, rank
count and the MPI build decide), so the same run could change in the last bit from one cluster to
another. Here a sum is an all-to-all, then each rank adds its slice of every rank's buffer in rank
order (((r0 + r1) + r2) + ...), then an all-gather: every rank gets the same bits, run after run, for a
given world size, and the bytes sent per rank are those of a ring all-reduce, 2 (n-1)/n of the buffer.
The NCCL communicator (``nccl.py``) runs the same three steps on the GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def padded_split(flat: Any, size: int, xp: Any) -> Any:
    """``flat`` zero-padded to a multiple of ``size`` and viewed as (size, chunk): row j goes to rank j."""
    chunk = -(-flat.size // size)
    rows = xp.zeros((size, chunk), dtype=flat.dtype)
    rows.reshape(-1)[:flat.size] = flat
    return rows


def sum_in_rank_order(received: Any) -> Any:
    """Row j is rank j's contribution; adding them one by one in rank order fixes the rounding."""
    total = received[0].copy()
    for row in received[1:]:
        total += row
    return total


class PendingSum:
    """A sum under way: the all-to-all is in flight; ``wait()`` adds and all-gathers, then returns
    the flat sum (the length given to ``start_sum``)."""

    def __init__(self, comm: Any, length: int, received: np.ndarray, request: Any) -> None:
        self.comm, self.length, self.received, self.request = comm, length, received, request

    def poll(self) -> None:
        # MPICH moves a non-blocking operation on only inside MPI calls: a test now and then lets the
        # all-to-all progress while backward computes the next gradients
        self.request.Test()

    def wait(self) -> np.ndarray:
        self.request.Wait()
        mine = sum_in_rank_order(self.received)
        out = np.empty_like(self.received)
        self.comm.Allgather(mine, out)
        return out.reshape(-1)[:self.length]


class MpiCommunicator:
    """Collectives on host arrays over an mpi4py communicator (``MPI.COMM_WORLD``)."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def start_sum(self, flat: np.ndarray) -> PendingSum:
        """Start summing a 1-D array over all ranks (the send buffer is a copy: ``flat`` may change)."""
        send = padded_split(np.ascontiguousarray(flat), self.size, np)
        received = np.empty_like(send)
        request = self.comm.Ialltoall(send, received)
        pending = PendingSum(self.comm, flat.size, received, request)
        pending.send = send  # kept alive until the all-to-all is done
        return pending

    def sum(self, flat: np.ndarray) -> np.ndarray:
        return self.start_sum(flat).wait()

    def broadcast_(self, array: np.ndarray, root: int) -> np.ndarray:
        """Overwrite ``array`` (C-contiguous) with rank ``root``'s values."""
        self.comm.Bcast(array, root=root)
        return array

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()
