"""No host syncs in a training step: on cuda-sim, N steps of ``Trainer`` (resident data, random shifts,
SGD with Nesterov momentum) copy nothing back to the host and wait for nothing.

Three things are counted per step: the backend's ``to_numpy`` copies and ``synchronize`` calls
(``CudaBackend.host_transfer_count`` and ``sync_count``, which the ``cuda`` backend counts too), and
the implicit reads a CuPy array would turn into a copy and a wait: ``float()``, ``int()``, ``bool()``,
``.item()`` or ``.tolist()`` of a device array, caught here by making the device's arrays a NumPy
subclass whose reductions stay arrays (``float(x.min())`` is one such read)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import training
from gpucnn.datasets import BatchIterator, normalize
from gpucnn.training import Trainer

from conftest import _sim_reason

pytestmark = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")


class _DeviceArray(np.ndarray):
    """A NumPy array standing in for a device array: reading a value on the host is counted."""

    reads = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [a.view(np.ndarray) if isinstance(a, _DeviceArray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, _DeviceArray) else a for a in kwargs["out"])
        return _device(getattr(ufunc, method)(*plain, **kwargs))

    def _read(self):
        _DeviceArray.reads += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._read())

    def __int__(self):
        return int(self._read())

    def __bool__(self):
        return bool(self._read())

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()


def _device(a):
    if type(a) is np.ndarray:
        return a.view(_DeviceArray)
    if isinstance(a, np.generic):  # a reduction's result: on CuPy a 0-d device array
        return np.asarray(a).view(_DeviceArray)
    if isinstance(a, tuple):
        return tuple(_device(x) for x in a)
    return a


@contextlib.contextmanager
def device_arrays(backend):
    """Within: the cuda-sim device hands out ``_DeviceArray``s."""
    device = backend.device
    empty, asarray = device.empty, device.asarray
    device.empty = lambda shape, dtype: _device(empty(shape, dtype))
    device.asarray = lambda a, dtype=None: _device(asarray(a, dtype))
    try:
        yield
    finally:
        del device.__dict__["empty"], device.__dict__["asarray"]


def _counts(backend) -> tuple[int, int, int]:
    return backend.host_transfer_count, backend.sync_count, _DeviceArray.reads


def per_step_counts(steps: int = 6, batch: int = 16, max_shift: int = 2,
                    progress_every: int | None = None) -> np.ndarray:
    """(host transfers, syncs, implicit reads) in each of ``steps`` Trainer steps on cuda-sim."""
    backend = gpucnn.get_backend("cuda-sim")
    marks = []

    class Counting(BatchIterator):
        """Notes the counters as each batch is handed out and after the last step."""

        def __iter__(self):
            for item in super().__iter__():
                marks.append(_counts(backend))
                yield item
            marks.append(_counts(backend))

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * batch, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, steps * batch)
    patch = pytest.MonkeyPatch()
    patch.setattr(training, "BatchIterator", Counting)
    if progress_every is not None:
        patch.setattr(training, "PROGRESS_EVERY", progress_every)
    try:
        with gpucnn.use_backend("cuda-sim"), device_arrays(backend):
            model = gpucnn.LeNet5(rng=np.random.default_rng(0))
            opt = gpucnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            trainer = Trainer(model, opt, batch_size=batch, max_shift=max_shift, resident=True, progress=False,
                              prepare=normalize, log=lambda line: None)
            trainer.fit(images, labels, images[:batch], labels[:batch], epochs=1)
    finally:
        patch.undo()
    assert len(marks) == steps + 1
    return np.diff(np.array(marks), axis=0)


def test_trainer_steps_make_no_host_transfers_or_syncs():
    counts = per_step_counts()
    print("per step (to_numpy, synchronize, implicit reads):", counts.tolist())
    assert counts.sum() == 0, counts.tolist()


def test_trainer_steps_without_shifts_make_no_host_transfers_or_syncs():
    assert per_step_counts(steps=3, max_shift=0).sum() == 0


def test_counters_see_transfers_and_syncs():
    """The counters the test above relies on do count: to_numpy, synchronize, float() of a device array."""
    backend = gpucnn.get_backend("cuda-sim")
    before = _counts(backend)
    with device_arrays(backend):
        a = backend.asarray(np.arange(4, dtype=np.float32))
        backend.to_numpy(a)
        backend.synchronize()
        float(a.min())
    assert np.subtract(_counts(backend), before).tolist() == [1, 1, 1]


def test_out_of_range_labels_still_fail_in_training():
    """The range found by the BatchIterator is compared with the classes: a label >= C is still an error."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(8) + 5  # 5..12, with 10 classes
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    trainer = Trainer(model, gpucnn.optim.SGD(model.parameters(), lr=0.1), batch_size=4, progress=False,
                      prepare=normalize, log=lambda line: None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        trainer.fit(images, labels, images, labels, epochs=1)


def test_batch_iterator_finds_the_label_range():
    backend = gpucnn.get_backend("numpy")
    images = np.zeros((5, 1, 4, 4), np.float32)
    assert BatchIterator(images, np.array([3, 1, 4, 1, 5]), 2, backend).label_range == (1, 5)
    assert BatchIterator(images, np.zeros(5, np.float32), 2, backend).label_range is None


def test_checked_labels_still_have_their_shape_and_dtype_checked():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="integer labels of shape"):
        F.cross_entropy(logits, np.zeros(2, np.int64), labels_checked=True)
    with pytest.raises(ValueError, match="integer labels of shape"):
        F.cross_entropy(logits, np.zeros(3, np.float32), labels_checked=True)
    plain = F.cross_entropy(logits, np.array([0, 1, 3])).item()
    assert F.cross_entropy(logits, np.array([0, 1, 3]), labels_checked=True).item() == plain
