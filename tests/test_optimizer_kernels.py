"""sgd_update_many / adam_update_many: every parameter in one op (one launch on the CUDA backends),
bit for bit the per-tensor updates, and the optimizers that use them."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn

from conftest import _sim_reason

#: sizes around the kernel's 1024-element chunks, an empty tensor and a one-element one
SHAPES = [(6, 1, 5, 5), (6,), (0,), (16, 6, 5, 5), (1,), (120, 400), (1024,), (1025,), (3, 7)]


def _arrays(backend, rng, dtype=np.float32, shapes=SHAPES):
    return [backend.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _copies(backend, arrays):
    return [backend.asarray(backend.to_numpy(a).copy()) for a in arrays]


def _same(backend, first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.0, False, 1e-2), (0.9, False, 0.0),
                                                              (0.9, True, 1e-4)])
def test_sgd_update_many_is_the_per_tensor_update(backend, rng, dtype, momentum, nesterov, weight_decay):
    params = _arrays(backend, rng, dtype)
    state = [backend.xp.zeros_like(p) for p in params] if momentum else None
    ref_params, ref_state = _copies(backend, params), (_copies(backend, state) if momentum else None)
    for _ in range(3):
        grads = _arrays(backend, rng, dtype)
        backend.sgd_update_many(params, grads, state, 0.05, momentum, weight_decay, nesterov)
        for i, (p, g) in enumerate(zip(ref_params, grads)):
            backend.sgd_update(p, g, ref_state[i] if momentum else None, 0.05, momentum, weight_decay, nesterov)
    _same(backend, params, ref_params)
    if momentum:
        _same(backend, state, ref_state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.0), (False, 1e-2), (True, 1e-2)])
def test_adam_update_many_is_the_per_tensor_update(backend, rng, dtype, decoupled, weight_decay):
    params = _arrays(backend, rng, dtype)
    ms, vs = [backend.xp.zeros_like(p) for p in params], [backend.xp.zeros_like(p) for p in params]
    refs = [_copies(backend, a) for a in (params, ms, vs)]
    for step in range(1, 4):
        grads = _arrays(backend, rng, dtype)
        backend.adam_update_many(params, grads, ms, vs, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
        for p, g, m, v in zip(*refs[:1], grads, *refs[1:]):
            backend.adam_update(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for mine, ref in zip((params, ms, vs), refs):
        _same(backend, mine, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, True)])
def test_sgd_update_many_stepped_reads_its_row_bit_for_bit(backend, rng, dtype, momentum, nesterov):
    """The CUDA-graph form: lr, momentum and weight decay of row step[0] of a device table, bit for
    bit sgd_update_many given those values, and another row at each step."""
    hyper = np.array([[0.05, momentum, 1e-4], [0.02, momentum * 0.9, 0.0], [0.1, momentum, 1e-3]], dtype)
    params = _arrays(backend, rng, dtype)
    state = [backend.xp.zeros_like(p) for p in params] if momentum else None
    ref_params, ref_state = _copies(backend, params), (_copies(backend, state) if momentum else None)
    table = backend.asarray(hyper)
    for row in (0, 2, 1):
        step = backend.asarray(np.array([row], np.int64))
        grads = _arrays(backend, rng, dtype)
        backend.sgd_update_many_stepped(params, grads, state, table, step, nesterov)
        lr, mu, wd = (float(h) for h in hyper[row])
        backend.sgd_update_many(ref_params, grads, ref_state, lr, mu, wd, nesterov)
    _same(backend, params, ref_params)
    if momentum:
        _same(backend, state, ref_state)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_update_many_stepped_reads_its_row_bit_for_bit(backend, rng, decoupled):
    """Row t-1 holds step t's values as Adam.table_row computes them: bit for bit adam_update_many."""
    opt = gpucnn.optim.AdamW if decoupled else gpucnn.optim.Adam
    with gpucnn.use_backend(backend.name):
        optimizer = opt([gpucnn.nn.Parameter(backend.asarray(np.zeros(1, np.float32)))], lr=1e-2, weight_decay=1e-2)
    rows = []
    for _ in range(3):
        optimizer.step_count += 1
        rows.append(optimizer.table_row())
    hyper = backend.asarray(np.asarray(rows, np.float32))
    params = _arrays(backend, rng)
    ms, vs = [backend.xp.zeros_like(p) for p in params], [backend.xp.zeros_like(p) for p in params]
    refs = [_copies(backend, a) for a in (params, ms, vs)]
    for t in range(1, 4):
        grads = _arrays(backend, rng)
        step = backend.asarray(np.array([t - 1], np.int64))
        backend.adam_update_many_stepped(params, grads, ms, vs, hyper, step, decoupled)
        backend.adam_update_many(*refs[:1], grads, *refs[1:], t, 1e-2, 0.9, 0.999, 1e-8, 1e-2, decoupled)
    if backend.name == "numpy":  # the reference rounds 1/sqrt(1 - beta2^t) as the kernel does, not as adam_update
        for mine, ref in zip((params, ms, vs), refs):
            for a, b in zip(mine, ref):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        return
    for mine, ref in zip((params, ms, vs), refs):
        _same(backend, mine, ref)


def test_many_updates_check_their_lists(backend, rng):
    params = _arrays(backend, rng)
    with pytest.raises(ValueError, match="equal|strict|shorter|longer"):
        backend.sgd_update_many(params, params[:-1], None, 0.1, 0.0, 0.0, False)
    backend.sgd_update_many([], [], None, 0.1, 0.0, 0.0, False)  # nothing to do


sim_only = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")


@sim_only
def test_one_launch_updates_every_parameter_and_the_table_is_reused(rng):
    sim = gpucnn.get_backend("cuda-sim")
    params = _arrays(sim, rng)
    velocities = [np.zeros_like(p) for p in params]
    grads = _arrays(sim, rng)
    sim._many_tables.clear()
    before = sim.launch_count
    for _ in range(3):
        sim.sgd_update_many(params, grads, velocities, 0.1, 0.9, 0.0, False)
    assert sim.launch_count - before == 3
    assert len(sim._many_tables) == 1  # same arrays: the table was built and copied once


@sim_only
def test_index64_build_of_the_many_kernels(rng):
    sim = gpucnn.get_backend("cuda-sim")
    params, grads = _arrays(sim, rng), _arrays(sim, rng)
    ms, vs = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    refs = [_copies(sim, a) for a in (params, ms, vs)]
    sim.force_index64 = True
    try:
        sim.adam_update_many(params, grads, ms, vs, 1, 1e-2, 0.9, 0.999, 1e-8, 0.0, False)
    finally:
        sim.force_index64 = False
    sim.adam_update_many(*refs[:1], grads, *refs[1:], 1, 1e-2, 0.9, 0.999, 1e-8, 0.0, False)
    for mine, ref in zip((params, ms, vs), refs):
        _same(sim, mine, ref)


def _lenet_after(backend_name, make_opt, per_tensor=False, steps=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, 8, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, (steps, 8))
    with gpucnn.use_backend(backend_name) as backend:
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
        opt = make_opt(model.parameters())
        if per_tensor:  # the optimizer's own arithmetic, one parameter at a time (the update before *_many)
            opt.step = _one_at_a_time(opt)
        loss_fn = gpucnn.CrossEntropyLoss()
        launches = []
        for step in range(steps):
            opt.zero_grad()
            loss_fn(model(backend.asarray(x[step])), labels[step]).backward()
            before = getattr(backend, "launch_count", 0)
            opt.step()
            launches.append(getattr(backend, "launch_count", 0) - before)
        return [backend.to_numpy(p.data).copy() for p in model.parameters()], launches


def _one_at_a_time(opt):
    step = type(opt).step

    def per_parameter():
        params = opt.params
        opt.step_count += 1
        try:
            for p in params:  # each _update call sees one parameter: the per-tensor op
                opt.params = [p]
                opt.step_count -= 1  # step() counts it again
                step(opt)
        finally:
            opt.params = params
    return per_parameter


OPTIMIZERS = {
    "sgd": lambda p: gpucnn.optim.SGD(p, lr=0.05),
    "sgd-nesterov": lambda p: gpucnn.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda p: gpucnn.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    "adamw": lambda p: gpucnn.optim.AdamW(p, lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_step_is_one_update_bit_for_bit_the_per_tensor_steps(backend, name):
    params, launches = _lenet_after(backend.name, OPTIMIZERS[name])
    reference, _ = _lenet_after(backend.name, OPTIMIZERS[name], per_tensor=True)
    for mine, ref in zip(params, reference, strict=True):
        np.testing.assert_array_equal(mine, ref)
    if backend.name != "numpy":
        assert launches == [1, 1, 1]


def test_parameters_of_two_dtypes_get_one_update_each():
    layer64 = gpucnn.nn.Linear(3, 2, dtype=np.float64)
    layer32 = gpucnn.nn.Linear(3, 2, dtype=np.float32)
    opt = gpucnn.optim.SGD(list(layer64.parameters()) + list(layer32.parameters()), lr=0.1)
    for layer, dtype in ((layer64, np.float64), (layer32, np.float32)):
        layer(gpucnn.tensor(np.ones((4, 3), dtype))).sum().backward()
    before = [p.data.copy() for p in opt.params]
    opt.step()
    for p, old in zip(opt.params, before):
        assert p.data.dtype == old.dtype
        np.testing.assert_array_equal(p.data, old - old.dtype.type(0.1) * p.grad.data)


def test_a_parameter_listed_twice_is_refused():
    layer = gpucnn.Linear(2, 2)
    with pytest.raises(ValueError, match="SGD: a parameter is listed more than once"):
        gpucnn.optim.SGD([layer.weight, layer.bias, layer.weight], lr=0.1)
