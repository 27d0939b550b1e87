"""The NumPy backend's opt-in threads (gpucnn/backends/numpy/threads.py): convolutions and Linear
layers split into two batch halves run in two threads.

Tolerances: against the float64 loops in reference.py at rtol 1e-4 / atol 1e-5, as in
test_ops.py and test_cpu_paths.py. Each half is the unsplit op on half the images, so only the
weight and bias gradients change their summation order (the two halves' sums added), which moves
a float32 sum of a few hundred unit-normal products by a few 1e-6 at most.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gpucnn.backends.numpy import threads as cpu_threads
from gpucnn.backends.numpy.backend import NumpyBackend

import reference as ref

pytest.importorskip("threadpoolctl")

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture
def threads(monkeypatch):
    """Threads on (two cores assumed) and every op large enough to split."""
    monkeypatch.setenv("GPUCNN_CPU_THREADS", "2")
    monkeypatch.setattr(cpu_threads, "_cores", lambda: 2)
    cpu_threads.reset()
    backend = NumpyBackend()
    backend._halves.split_min_columns = 1
    backend._halves.split_min_products = 1
    yield backend
    cpu_threads.reset()


def _count_pairs(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = cpu_threads.run_pair

    def counted(first, second):
        calls.append(1)
        return original(first, second)

    monkeypatch.setattr(cpu_threads, "run_pair", counted)
    return calls


# N, C, H, W, K, kernel, stride, padding (top, bottom, left, right), flat_conv: the paths of
# backends/numpy/conv.py and conv_cnhw.py
CONV_CASES = [
    (5, 4, 16, 16, 6, 3, 1, (1, 1, 1, 1), True),    # shift (at 10x10 its padded grid would be too wasteful)
    (4, 3, 32, 32, 5, 3, 2, (1, 1, 1, 1), True),    # shift on two row phases (ResNet's first strided 3x3)
    (4, 3, 9, 8, 5, 3, 2, (1, 1, 1, 1), True),      # gather (its phase grid would be 1.5x the output)
    (4, 3, 9, 8, 5, 1, 2, (0, 0, 0, 0), True),      # pointwise
    (5, 2, 8, 7, 4, 3, 1, (1, 0, 2, 1), False),     # batch-innermost im2col
]


@pytest.mark.parametrize("case, mode", list(zip(CONV_CASES, ["shift", "shift", "gather", "pointwise", None])),
                         ids=["shift", "strided-shift", "gather", "pointwise", "im2col"])
def test_split_convolution_matches_reference(case, mode, threads, monkeypatch, rng):
    n, c, h, w, k, ks, s, padding, flat = case
    cnhw = threads._convolution.cnhw
    cnhw.flat_conv = flat  # on the whole: the halves follow it
    oh, ow = h + padding[0] + padding[1] - ks + 1, w + padding[2] + padding[3] - ks + 1
    oh, ow = (oh - 1) // s + 1, (ow - 1) // s + 1
    assert cnhw.mode((n // 2, c, h, w), (k, c, ks, ks), (s, s), padding, 1, oh, ow) == mode
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    spec = ((s, s), padding, (1, 1), 1)
    pairs = _count_pairs(monkeypatch)
    y = threads.conv2d_forward(x, weight, bias, *spec, relu=False, keep_for_backward=True)
    # with BLAS on one thread the (C, N, H, W) paths build their columns again in the backward pass;
    # the batch-innermost path keeps them (the pointwise path has none)
    kept = [len(part.kept_columns) for part in threads._halves._parts]
    assert kept == ([1, 1] if mode is None else [0, 0])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = threads.conv2d_backward(dy, x, weight, *spec)
    assert len(pairs) == 2
    assert not threads._halves._kept_halves  # the backward used the halves the forward kept
    np.testing.assert_allclose(y, ref.conv2d(x, weight, bias, *spec), **TOL)
    want_dx, want_dw, want_db = ref.conv2d_backward(dy, x, weight, *spec)
    np.testing.assert_allclose(dx, want_dx, **TOL)
    np.testing.assert_allclose(dw, want_dw, **TOL)
    np.testing.assert_allclose(db, want_db, **TOL)


def test_split_fused_conv_pool_matches_whole(threads, rng):
    x = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, (2, 2), (2, 2), (0, 0))
    y, state = threads.conv2d_relu_maxpool2d_forward(x, weight, bias, *args, False, True)
    assert state.kind == "halves"
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = threads.conv2d_relu_maxpool2d_backward(dy, state, x, weight, *args)
    whole = NumpyBackend()
    want_y, want_state = whole.conv2d_relu_maxpool2d_forward(x, weight, bias, *args, False, True)
    want = whole.conv2d_relu_maxpool2d_backward(dy, want_state, x, weight, *args)
    np.testing.assert_array_equal(y, want_y)  # per image: the halves compute exactly what the whole does
    np.testing.assert_array_equal(grads[0], want[0])
    for got, expected in zip(grads[1:], want[1:]):
        np.testing.assert_allclose(got, expected, **TOL)
    with pytest.raises(ValueError, match="used up"):
        threads.conv2d_relu_maxpool2d_backward(dy, state, x, weight, *args)


@pytest.mark.parametrize("relu", [False, True])
def test_split_linear_matches_whole(relu, threads, monkeypatch, rng):
    x = rng.standard_normal((7, 20)).astype(np.float32)
    weight = rng.standard_normal((9, 20)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    pairs = _count_pairs(monkeypatch)
    y = threads.linear_forward(x, weight, bias, relu)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = threads.linear_backward(dy, x, weight, True, y if relu else None)
    assert len(pairs) == 2
    whole = NumpyBackend()
    want_y = whole.linear_forward(x, weight, bias, relu)
    np.testing.assert_allclose(y, want_y, **TOL)
    for got, expected in zip((dx, dw, db), whole.linear_backward(dy, x, weight, True, want_y if relu else None)):
        np.testing.assert_allclose(got, expected, **TOL)


def test_threaded_runs_are_reproducible(threads, rng):
    x = rng.standard_normal((8, 4, 10, 10)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    spec = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    first = threads.conv2d_backward(np.ones((8, 6, 10, 10), np.float32), x, weight, *spec)
    again = threads.conv2d_backward(np.ones((8, 6, 10, 10), np.float32), x, weight, *spec)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_off_by_default_and_small_ops_stay_whole(monkeypatch):
    monkeypatch.delenv("GPUCNN_CPU_THREADS", raising=False)
    cpu_threads.reset()
    backend = NumpyBackend()
    assert not cpu_threads.parallel_available()
    assert backend._halves.split_point((256, 64, 32, 32), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)) is None
    monkeypatch.setenv("GPUCNN_CPU_THREADS", "2")
    monkeypatch.setattr(cpu_threads, "_cores", lambda: 2)
    cpu_threads.reset()
    assert backend._halves.split_point((256, 64, 32, 32), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)) == 128
    lenet_conv2 = ((128, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1))
    assert backend._halves.split_point(*lenet_conv2) is None
    cpu_threads.reset()


def test_threads_without_threadpoolctl_warn_and_run_whole(monkeypatch):
    monkeypatch.setenv("GPUCNN_CPU_THREADS", "2")
    monkeypatch.setattr(cpu_threads, "_cores", lambda: 2)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    cpu_threads.reset()
    with pytest.warns(RuntimeWarning, match="threadpoolctl"):
        assert not cpu_threads.parallel_available()
    cpu_threads.reset()


def test_bad_thread_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GPUCNN_CPU_THREADS", "two")
    cpu_threads.reset()
    with pytest.raises(ValueError, match="GPUCNN_CPU_THREADS.*'two'"):
        cpu_threads.parallel_available()
    cpu_threads.reset()


def test_blas_runs_on_one_thread_while_threads_are_on(monkeypatch):
    from threadpoolctl import ThreadpoolController

    def blas_threads():
        return [c.num_threads for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]

    monkeypatch.delenv("GPUCNN_CPU_THREADS", raising=False)
    cpu_threads.reset()
    before = blas_threads()
    monkeypatch.setenv("GPUCNN_CPU_THREADS", "2")
    monkeypatch.setattr(cpu_threads, "_cores", lambda: 2)
    cpu_threads.reset()
    assert cpu_threads.parallel_available()
    assert not cpu_threads.keeps_columns()
    assert blas_threads() == [1] * len(before)
    monkeypatch.delenv("GPUCNN_CPU_THREADS")
    cpu_threads.reset()  # threads off again: BLAS gets its threads back
    assert not cpu_threads.parallel_available()
    assert cpu_threads.keeps_columns()
    assert blas_threads() == before


def test_an_error_in_a_half_is_raised_and_blas_threads_come_back(threads):
    blas = cpu_threads._blas_controllers()
    before = [c.num_threads for c in blas]

    def fails():
        raise RuntimeError("second half")

    with pytest.raises(RuntimeError, match="second half"):
        cpu_threads.run_pair(lambda: 1, fails)
    assert [c.num_threads for c in blas] == before
    assert cpu_threads.run_pair(lambda: 1, lambda: 2) == (1, 2)


def test_split_relu_and_batchnorm_match_whole(threads, monkeypatch, rng):
    from gpucnn import functional as F
    from gpucnn.core.tensor import Tensor

    threads._rows.split_min_elements = 1
    x = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    pairs = _count_pairs(monkeypatch)
    np.testing.assert_array_equal(threads.relu_forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(threads.relu_backward(dy, x), dy * (x > 0))
    assert len(pairs) == 2

    weight = np.linspace(0.5, 1.5, 3, dtype=np.float32)

    def batch_norm(backend, training):
        inputs = [Tensor(a, requires_grad=True, backend=backend) for a in (x, weight, weight - 1)]
        stats = (np.full(3, 0.1, np.float32), np.full(3, 2.0, np.float32))
        y = F.batch_norm(inputs[0], *stats, inputs[1], inputs[2], training=training)
        y.backward(Tensor(dy, backend=backend))
        return [np.asarray(y.data)] + [np.asarray(t.grad.data) for t in inputs]

    for training in (True, False):
        del pairs[:]
        split, whole = batch_norm(threads, training), batch_norm(NumpyBackend(), training)
        assert len(pairs) >= 3  # the sums, the normalisation and dx each ran as two halves
        for got, want in zip(split, whole):
            # the halves' per-channel sums are added, not summed in one pass: a few float32 ulps apart
            np.testing.assert_allclose(got, want, **TOL)
        if not training:  # running statistics: no sums over the batch, so no rounding moves
            np.testing.assert_array_equal(split[0], whole[0])
            np.testing.assert_array_equal(split[1], whole[1])
