"""Launches per LeNet-5 training step on cuda-sim: our kernels, counted by the device, and the
array-library operations around them (on ``cuda`` each is a CuPy elementwise/reduction kernel, a
cuBLAS call or a memset), counted here by running the step on NumPy arrays that record every
ufunc, array function and copy made on them. benchmarks/results/launches-2026-11-23.md has the
numbers before and after one launch took over all parameter updates, Linear became our GEMM kernels
and the ReLU mask moved into the max-pool backward."""

from __future__ import annotations

import collections
import contextlib
import types

import numpy as np
import pytest

import gpucnn

from conftest import _sim_reason

pytestmark = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")


class _Recorded(np.ndarray):
    """A NumPy array that tallies each operation made on it (one per call, not the calls inside it)."""

    tally: collections.Counter | None = None
    depth = 0

    @classmethod
    @contextlib.contextmanager
    def _op(cls, name):
        if cls.depth == 0 and cls.tally is not None:
            cls.tally[name] += 1
        cls.depth += 1
        try:
            yield
        finally:
            cls.depth -= 1

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [a.view(np.ndarray) if isinstance(a, _Recorded) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, _Recorded) else a for a in kwargs["out"])
        with self._op(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"):
            result = getattr(ufunc, method)(*plain, **kwargs)
        return _record(result)

    def __array_function__(self, func, types, args, kwargs):
        with self._op(func.__name__):
            return super().__array_function__(func, types, args, kwargs)

    def astype(self, dtype, *args, **kwargs):
        if np.dtype(dtype) == self.dtype and kwargs.get("copy", True) is False:
            return self
        with self._op("astype"):
            return super().astype(dtype, *args, **kwargs)

    def copy(self, *args, **kwargs):
        with self._op("copy"):
            return super().copy(*args, **kwargs)

    def __getitem__(self, index):
        gathers = not isinstance(index, (int, slice, type(None), type(Ellipsis))) and not (
            isinstance(index, tuple) and all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index))
        with self._op("gather") if gathers else contextlib.nullcontext():
            return super().__getitem__(index)

    def __setitem__(self, index, value):
        with self._op("setitem"):
            super().__setitem__(index, value)


def _record(a):
    return a.view(_Recorded) if type(a) is np.ndarray else a


class _RecordedNumpy(types.SimpleNamespace):
    """numpy, with the array creators that a CuPy step would run as kernels (fills) recording."""

    def __getattr__(self, name):
        function = getattr(np, name)
        if name not in ("zeros", "ones", "full", "zeros_like", "ones_like", "full_like"):
            return function

        def made(*args, **kwargs):
            with _Recorded._op(name):
                return _record(function(*args, **kwargs))
        return made


@contextlib.contextmanager
def recording(backend):
    """Within: the device's arrays record the operations made on them into the yielded Counter."""
    device = backend.device
    empty, asarray, xp = device.empty, device.asarray, backend.xp
    tally = collections.Counter()
    device.empty = lambda shape, dtype: _record(empty(shape, dtype))
    device.asarray = lambda a, dtype=None: _record(asarray(a, dtype))
    backend.xp = _RecordedNumpy()
    _Recorded.tally = tally
    try:
        yield tally
    finally:
        device.empty, device.asarray, backend.xp = empty, asarray, xp
        _Recorded.tally = None
        del device.__dict__["empty"], device.__dict__["asarray"]
        del backend.__dict__["xp"]


def lenet_step_counts(optimizer: str = "sgd", batch: int = 16, classic: bool = False):
    """(our kernel launches by name, array-library operations by name) in the third training step
    of LeNet-5 on cuda-sim (the first steps create the optimizer state)."""
    rng = np.random.default_rng(0)
    size = 32 if classic else 28
    x = rng.standard_normal((3, batch, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, (3, batch))
    backend = gpucnn.get_backend("cuda-sim")
    with gpucnn.use_backend("cuda-sim"), recording(backend) as host_ops:
        model = (gpucnn.LeNet5Classic if classic else gpucnn.LeNet5)(rng=np.random.default_rng(0))
        opt = {"sgd": lambda p: gpucnn.optim.SGD(p, lr=0.05, momentum=0.9),
               "adam": lambda p: gpucnn.optim.Adam(p, lr=1e-3)}[optimizer](model.parameters())
        loss_fn = gpucnn.CrossEntropyLoss()
        for step in range(3):
            host_ops.clear()
            launches_before = collections.Counter(backend.device.launch_counts)
            opt.zero_grad()
            loss = loss_fn(model(backend.asarray(x[step])), labels[step])
            loss.backward()
            opt.step()
        ours = collections.Counter(backend.device.launch_counts)
        ours.subtract(launches_before)
    return +ours, +host_ops


def _report(ours, host_ops) -> str:
    return (f"ours {sum(ours.values())}: {dict(sorted(ours.items()))}\n"
            f"host {sum(host_ops.values())}: {dict(sorted(host_ops.items()))}")


#: LeNet-5, one training step, our kernels: 30 before, then 24 (the optimizer's 10 launches became one,
#: the 4 relu_backward and 2 relu_forward went into the pooling and Linear kernels, Linear's 9 CuPy
#: GEMMs and 3 bias adds and 3 bias-gradient sums became 9 launches of kernels/linear.cu), then 22
#: (the conv bias gradient became a column of the weight-gradient kernel)
LENET5_STEP = {"conv2d_forward": 2, "conv2d_backward_weight": 2, "conv2d_reduce_weight_partials": 2,
               "conv2d_backward_input": 1, "maxpool2d_forward": 2, "maxpool2d_backward": 2, "linear_forward": 3,
               "linear_backward_weight": 3, "linear_backward_input": 3, "softmax_cross_entropy": 1}
#: what is left outside our kernels: the loss's mean (a sum; on cuda also the division of the 0-d
#: result, a NumPy scalar here), the loss gradient times the incoming 1, and that 1 (xp.ones)
LENET5_HOST_OPS = {"add.reduce": 1, "multiply": 1, "ones": 1}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lenet5_step_launches(optimizer):
    ours, host_ops = lenet_step_counts(optimizer)
    print(_report(ours, host_ops))
    assert dict(ours) == LENET5_STEP | {f"{optimizer}_update_many": 1}
    assert dict(host_ops) == LENET5_HOST_OPS


@pytest.mark.parametrize("kernel, stride, padding", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)),
                                                     ((3, 2), (2, 1), (1, 0))])
def test_maxpool2d_backward_with_relu_output_is_relu_backward_then_maxpool2d_backward(backend, rng, kernel, stride,
                                                                                      padding):
    """The ReLU mask inside the pooling's backward (one launch): bit for bit the two ops, NaN and
    infinite gradients included (the mask is a multiply, as relu_backward's)."""
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    relu = backend.relu_forward(backend.asarray(x))
    y, argmax = backend.maxpool2d_forward(relu, kernel, stride, padding, False)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy.flat[::7] = np.nan
    dy.flat[3::11] = -np.inf
    dy = backend.asarray(dy)
    with np.errstate(invalid="ignore"):  # inf * 0 where the mask is 0, in the NumPy backend
        two_ops = backend.maxpool2d_backward(backend.relu_backward(dy, y), argmax, x.shape, kernel, stride, padding)
        one_op = backend.maxpool2d_backward(dy, argmax, x.shape, kernel, stride, padding, relu_output=y)
    np.testing.assert_array_equal(backend.to_numpy(one_op), backend.to_numpy(two_ops))
