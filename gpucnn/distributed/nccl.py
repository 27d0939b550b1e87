"""The NCCL communicator for CuPy arrays (the ``cuda`` backend), with the fixed-order sum of ``comm.py``.

``world.communicator_for`` makes one when the first CuPy array is reduced, so a host-only run never
loads this module. CuPy and its NCCL binding come from ``nccl_modules`` in
``gpucnn/backends/cuda/cupy_device.py``, the GPU device's file, where the cuda backend's CuPy imports are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.cuda.cupy_device import nccl_modules
from .comm import padded_split, sum_in_rank_order


class NcclCommunicator:
    """gpucnn.distributed's collectives on CuPy arrays, through NCCL on the current stream: nothing
    goes through host memory and nothing waits on the host. The sum has the fixed order of
    ``comm.py``: an all-to-all (grouped send/recv), each rank adds its slice of every rank's buffer
    in rank order, then an all-gather."""

    def __init__(self, rank: int, size: int, broadcast_object: Any) -> None:
        """``broadcast_object(value)`` returns rank 0's value on every rank (MPI's bcast): how the
        NCCL unique id travels."""
        cupy, nccl = nccl_modules()
        self.cupy, self.nccl, self.rank, self.size = cupy, nccl, rank, size
        unique_id = broadcast_object(nccl.get_unique_id() if rank == 0 else None)
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}

    def _type(self, dtype: Any) -> int:
        if np.dtype(dtype) not in self._types:
            raise TypeError(f"gpucnn.distributed: NCCL cannot reduce dtype {np.dtype(dtype)}")
        return self._types[np.dtype(dtype)]

    def start_sum(self, flat: Any) -> _Done:
        """The sum is queued on the current stream: already 'started and done' as far as the host knows."""
        return _Done(self.sum(flat))

    def sum(self, flat: Any) -> Any:
        cupy, n, kind = self.cupy, self.size, self._type(flat.dtype)
        stream = cupy.cuda.get_current_stream().ptr
        send = padded_split(cupy.ascontiguousarray(flat), n, cupy)
        received = cupy.empty_like(send)
        chunk, item = send.shape[1], send.dtype.itemsize
        self.nccl.groupStart()
        for peer in range(n):
            self.comm.send(send.data.ptr + peer * chunk * item, chunk, kind, peer, stream)
            self.comm.recv(received.data.ptr + peer * chunk * item, chunk, kind, peer, stream)
        self.nccl.groupEnd()
        mine = sum_in_rank_order(received)
        out = cupy.empty_like(send)
        self.comm.allGather(mine.data.ptr, out.data.ptr, chunk, kind, stream)
        return out.reshape(-1)[:flat.size]

    def broadcast_(self, array: Any, root: int) -> Any:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, self._type(array.dtype), root, stream)
        return array


class _Done:
    """A sum already queued on the stream, behind the ``PendingSum`` face DataParallel waits on."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def poll(self) -> None:
        pass

    def wait(self) -> Any:
        return self.result
