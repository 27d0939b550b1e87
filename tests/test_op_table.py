"""Tests generated from tests/op_table.py: for every entry, on every backend, the gradients against
float64 finite differences and agreement with the NumPy backend; against PyTorch, the forward, the
gradients and the state after the call; through ONNX Runtime, the exported graph. A last test checks
that the table (with the few ops only a training step runs) exercises every contract op."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients
from op_table import OPS, OpCase
from support import host, make_input, on_backend, recording_ops

import gpucnn
from gpucnn.backends.contract import OPS as CONTRACT_OPS

IDS = [case.name for case in OPS]


def _inputs(case: OpCase, dtype=np.float64) -> tuple[list[np.ndarray], tuple]:
    rng = np.random.default_rng(7)
    inputs = [make_input(rng, shape, kind).astype(dtype) for shape, kind in zip(case.shapes, case.kinds())]
    return inputs, case.extra(rng) if case.extra else ()


@pytest.mark.parametrize("case", OPS, ids=IDS)
def test_gradients_match_finite_differences(backend, case):
    inputs, extra = _inputs(case)
    if case.call:
        check_gradients(case.call, inputs, backend)
        return
    layer = on_backend(backend, lambda: case.make(np.float64))
    check_gradients(lambda *xs: layer(*xs, *extra), inputs, backend, params=list(layer.parameters()))


def _run(backend, case: OpCase, state: dict | None = None):
    """Forward and backward of ``case`` on ``backend`` (with ``state`` loaded): output, input gradients,
    parameter gradients by name and the state after the call, all as NumPy arrays."""
    layer = on_backend(backend, lambda: case.make(np.float64)) if case.make else gpucnn.Sequential()
    call = case.call or layer
    if state is not None:
        layer.load_state_dict(state)
    before = {k: host(v) for k, v in layer.state_dict().items()}
    inputs, extra = _inputs(case)
    leaves = [gpucnn.Tensor(backend.asarray(x), requires_grad=True, backend=backend) for x in inputs]
    y = call(*leaves, *extra)
    r = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(backend.asarray(r))
    return (host(y), [host(leaf.grad) for leaf in leaves],
            {name: host(p.grad) for name, p in layer.named_parameters()},
            {k: host(v) for k, v in layer.state_dict().items()}, before, r)


@pytest.mark.parametrize("case", OPS, ids=IDS)
def test_backends_agree_with_numpy(backend, case):
    if backend.name == "numpy":
        pytest.skip("numpy is the reference here")
    y, dx, dp, after, before, _ = _run(gpucnn.get_backend("numpy"), case)
    y2, dx2, dp2, after2, _, _ = _run(backend, case, before)
    tolerance = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(y2, y, **tolerance, err_msg="output")
    for k, (a, b) in enumerate(zip(dx2, dx)):
        np.testing.assert_allclose(a, b, **tolerance, err_msg=f"input {k} gradient")
    for name in dp:
        np.testing.assert_allclose(dp2[name], dp[name], **tolerance, err_msg=f"{name} gradient")
    for name in after:
        np.testing.assert_allclose(after2[name], after[name], **tolerance, err_msg=f"{name} after the call")


@pytest.mark.parametrize("case", [c for c in OPS if c.torch], ids=[c.name for c in OPS if c.torch])
def test_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    y, dx, dp, after, before, r = _run(gpucnn.get_backend("numpy"), case)
    twin = case.torch(torch).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in before.items()}, strict=True)
    inputs, extra = _inputs(case)
    leaves = [torch.tensor(x, requires_grad=True) for x in inputs]
    expected = twin(*leaves, *[torch.tensor(e) for e in extra])
    expected.backward(torch.tensor(r))
    tolerance = dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y, expected.detach().numpy(), **tolerance, err_msg="output")
    for k, leaf in enumerate(leaves):
        np.testing.assert_allclose(dx[k], leaf.grad.numpy(), **tolerance, err_msg=f"input {k} gradient")
    theirs = dict(twin.named_parameters())
    assert set(dp) == set(theirs), f"parameters {sorted(dp)} vs PyTorch's {sorted(theirs)}"
    for name, grad in dp.items():
        np.testing.assert_allclose(grad, theirs[name].grad.numpy(), **tolerance, err_msg=f"{name} gradient")
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(after[name], value.numpy(), **tolerance, err_msg=f"{name} after the call")


@pytest.mark.parametrize("case", [c for c in OPS if c.onnx], ids=[c.name for c in OPS if c.onnx])
def test_onnx_export_runs_in_onnxruntime(case, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    layer = on_backend(gpucnn.get_backend("numpy"), lambda: case.make(np.float32))
    (x,), _ = _inputs(case, np.float32)
    path = tmp_path / f"{case.name}.onnx"
    gpucnn.onnx.export(layer, path, x)
    result = gpucnn.onnx.verify(path, layer, x, rtol=1e-4, atol=1e-5)
    assert result["match"], result


def test_every_functional_op_is_in_the_table(monkeypatch):
    import gpucnn.functional as F

    called = set()
    for name in F.__all__:
        function = getattr(F, name)
        monkeypatch.setattr(F, name, lambda *a, _f=function, _n=name, **k: called.add(_n) or _f(*a, **k))
    backend = gpucnn.get_backend("numpy")
    for case in OPS:
        _run(backend, case)
    missing = sorted(set(F.__all__) - called)
    assert not missing, f"gpucnn.functional ops no op-table entry calls: {missing}; add an Fn case to tests/op_table.py"


# the contract ops a layer call does not run, and the test that runs each on every backend
RUN_ELSEWHERE = {
    "dropout_forward": "test_ops.py::test_dropout_mask_is_shared_and_fair",
    "dropout_backward": "test_gradients.py::test_dropout_gradient",
    "dropout_forward_stepped": "test_cuda_graph.py::test_step_advance_and_dropout_forward_stepped",
    "softmax_cross_entropy_accumulate":
        "test_cuda_graph.py::test_softmax_cross_entropy_accumulate_matches_the_reference",
    "gather_batch": "test_cuda_graph.py::test_gather_batch_matches_the_reference",
    "step_advance": "test_cuda_graph.py::test_step_advance_and_dropout_forward_stepped",
    "sgd_update": "test_ops.py::test_sgd_update",
    "adam_update": "test_ops.py::test_adam_update",
    "sgd_update_many": "test_optimizer_kernels.py::test_sgd_update_many_is_the_per_tensor_update",
    "adam_update_many": "test_optimizer_kernels.py::test_adam_update_many_is_the_per_tensor_update",
    "sgd_update_many_stepped": "test_optimizer_kernels.py::test_sgd_update_many_stepped_reads_its_row_bit_for_bit",
    "adam_update_many_stepped": "test_optimizer_kernels.py::test_adam_update_many_stepped_reads_its_row_bit_for_bit",
}


def test_every_contract_op_is_exercised_by_the_table_or_named_here():
    from conftest import REPO

    backend = gpucnn.get_backend("numpy")
    with recording_ops(backend) as called:
        for case in OPS:
            _run(backend, case)
    missing = set(CONTRACT_OPS) - called - set(RUN_ELSEWHERE) - {"asarray", "to_numpy"}
    assert not missing, f"contract ops no op-table entry runs: {sorted(missing)}; add an entry to tests/op_table.py"
    for op, where in RUN_ELSEWHERE.items():
        file, _, test = where.partition("::")
        text = (REPO / "tests" / file).read_text()
        assert op in CONTRACT_OPS and f"def {test}(" in text, f"{op}: {where} does not exist"
