"""The NumPy backend's scratch pool under a byte cap that the shapes in use overflow.

A training step at a large batch takes and gives back more bytes than the pool keeps, so it
evicts all the time; a stack emptied by ``take`` and left behind used to be evicted from
(``IndexError: pop from empty list``: LeNet-5 at batch 3,500, PyTorch's MNIST example network at
batch 300). A small cap makes the same happen at small, cheap shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn.backends.numpy.backend import NumpyBackend
from gpucnn.backends.numpy.scratch import ScratchPool

ITEMS = ScratchPool.MIN_BYTES // 4  # float32 elements in the smallest array the pool keeps


def _check_accounting(pool: ScratchPool) -> None:
    kept = [a for stack in pool._free.values() for a in stack]
    assert all(pool._free.values()), "an empty stack was left in the pool"
    assert pool._bytes == sum(a.nbytes for a in kept) <= pool.limit


def test_evicting_after_a_shape_was_taken_back_out():
    pool = ScratchPool(limit=3 * ScratchPool.MIN_BYTES)
    first = pool.take((ITEMS,), np.float32)
    pool.give(first)
    assert pool.take((ITEMS,), np.float32) is first  # its shape's stack is now empty
    for extra in (1, 2, 3, 4):  # four more shapes than the cap holds: eviction runs twice
        pool.give(np.empty((ITEMS + extra,), np.float32))
        _check_accounting(pool)


def test_least_recently_given_shape_is_dropped_first():
    pool = ScratchPool(limit=2 * (ITEMS + 2) * 4)
    a, b, c = (np.empty((ITEMS + i,), np.float32) for i in range(3))
    pool.give(a, b)
    pool.give(c)  # over the cap: a, the oldest, goes
    _check_accounting(pool)
    assert pool.take(a.shape, a.dtype) is not a
    assert pool.take(c.shape, c.dtype) is c
    assert pool.take(b.shape, b.dtype) is b
    assert pool._free == {} and pool._bytes == 0


def test_random_takes_and_gives_keep_the_pool_consistent():
    rng = np.random.default_rng(0)
    pool = ScratchPool(limit=5 * ScratchPool.MIN_BYTES)
    shapes = [(ITEMS + i,) for i in range(8)]
    held: list[np.ndarray] = []
    for _ in range(2000):
        if held and rng.random() < 0.5:
            pool.give(held.pop(rng.integers(len(held))))
        else:
            held.append(pool.take(shapes[rng.integers(len(shapes))], np.float32))
        _check_accounting(pool)
        # an array handed out is never also still in the pool
        kept = {id(a) for stack in pool._free.values() for a in stack}
        assert not kept & {id(a) for a in held}


def _train_steps(backend: NumpyBackend, batches: list[int]) -> list[np.ndarray]:
    """Forward and backward of conv -> ReLU -> (conv -> ReLU -> 2x2 max pool, fused), as a training
    step calls them, at each batch size in turn; returns every output and gradient."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.3
    b1, b2 = np.zeros(8, np.float32), np.full(16, 0.1, np.float32)
    conv = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    results = []
    for n in batches:
        x = rng.standard_normal((n, 1, 16, 16)).astype(np.float32)
        h = backend.conv2d_forward(x, w1, b1, *conv, relu=True, keep_for_backward=True)
        y, saved = backend.conv2d_relu_maxpool2d_forward(h, w2, b2, *conv, (2, 2), (2, 2), (0, 0), False,
                                                         keep_for_backward=True)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dh, dw2, db2 = backend.conv2d_relu_maxpool2d_backward(dy, saved, h, w2, *conv, (2, 2), (2, 2), (0, 0))
        _, dw1, db1 = backend.conv2d_backward(dh * (h > 0), x, w1, *conv, need_input_grad=False)
        results += [h, y, dh, dw2, db2, dw1, db1]
    return results


@pytest.mark.parametrize("limit_mib", [1, 3])
def test_training_steps_over_the_cap_match_an_uncapped_pool(limit_mib):
    # batches of 64-image chunks plus remainders: im2col matrices of several shapes, each ~1 MiB
    # for the second convolution, so the cap is overflowed on every step
    batches = [70, 130, 70, 200, 5]
    capped = NumpyBackend()
    capped._scratch.limit = limit_mib << 20  # the backend's pool is still empty: as if made with this cap
    uncapped = NumpyBackend()
    uncapped._scratch.limit = 1 << 40
    for got, want in zip(_train_steps(capped, batches), _train_steps(uncapped, batches), strict=True):
        np.testing.assert_array_equal(got, want)
    _check_accounting(capped._scratch)
