"""The backend contract (the abstract class contract.Backend): every registered backend class
implements each op with the contract's signature; and one walk over the ops: each has a kernel of
its name (or a declared composition of kernels), a caller in gpucnn/functions, the optimizers or
the CUDA-graph step. That a test runs each op is checked by tests/test_op_table.py, which records the
ops its table runs."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

from gpucnn.backends import base
from gpucnn.backends.contract import OPS, Backend, ConvPoolState, contract_ops, missing_ops, signature_mismatches
from gpucnn.backends.cuda.kernel_source import kernel_modules, kernel_names, kernel_source
from gpucnn.backends.cuda.launchers import CudaBackend
from gpucnn.backends.registry import backend_classes

ROOT = Path(__file__).resolve().parent.parent

#: ops with no kernel of their own name, and the kernels (or ops) they are made of
COMPOSED = {
    "conv2d_backward": ["conv2d_backward_input", "conv2d_backward_weight", "conv2d_reduce_weight_partials"],
    "conv2d_input_grad": ["conv2d_backward_input"],
    "conv2d_weight_grad": ["conv2d_backward_weight", "conv2d_reduce_weight_partials"],
    "conv2d_relu_maxpool2d_forward": ["conv2d_forward", "maxpool2d_forward"],
    "conv2d_relu_maxpool2d_backward": ["maxpool2d_backward", "conv2d_backward_input"],
    "linear_backward": ["linear_backward_weight", "linear_backward_input"],
    "softmax_cross_entropy_accumulate": ["softmax_cross_entropy", "loss_accumulate"],
}
#: host/device movement: no kernel, no Function
MOVERS = {"asarray", "to_numpy"}


def _kernels() -> set[str]:
    return {name for module in kernel_modules() for name in kernel_names(kernel_source(module))}


def _callers() -> str:
    # the CUDA-graph step (gather, loss sum, counter) calls its ops from gpucnn/cuda_graph.py
    files = sorted((ROOT / "gpucnn" / "functions").glob("*.py")) + [ROOT / "gpucnn" / n for n in ("optim.py",
                                                                                                  "cuda_graph.py")]
    return "\n".join(path.read_text() for path in files)


@pytest.mark.parametrize("name", list(backend_classes()))
def test_every_backend_class_implements_the_contract(name):
    cls = backend_classes()[name]
    assert issubclass(cls, Backend)
    assert not cls.__abstractmethods__, f"{name}: abstract ops left: {sorted(cls.__abstractmethods__)}"
    assert missing_ops(cls) == []
    # wherever in the class's bases the method is defined (a mixin, a generated method, the class itself)
    assert signature_mismatches(cls) == []


def test_base_backend_is_the_contract():
    assert base.Backend is Backend and base.ConvPoolState is ConvPoolState


def test_ops_are_the_abstract_methods_in_declaration_order():
    assert OPS == contract_ops() and set(OPS) == Backend.__abstractmethods__
    assert OPS[:2] == ("asarray", "to_numpy") and OPS.index("conv2d_forward") < OPS.index("adam_update_many_stepped")
    assert {"conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
            "avgpool2d_forward", "relu_forward", "softmax_cross_entropy", "sgd_update", "adam_update"} <= set(OPS)
    # non-ops keep their defaults: a backend need not implement them
    assert not {"owns", "synchronize", "over_batch", "name", "xp", "array_type"} & Backend.__abstractmethods__


def test_every_op_is_typed_and_documented():
    for op in OPS:
        method = getattr(Backend, op)
        assert method.__doc__ and method.__doc__.strip(), op
        typing.get_type_hints(method)  # every hint resolves at run time, not only under a type checker
        signature = inspect.signature(method)
        untyped = [p.name for p in list(signature.parameters.values())[1:] if p.annotation is inspect.Parameter.empty]
        assert not untyped and signature.return_annotation is not inspect.Signature.empty, (op, untyped)


def test_missing_ops_reports_gaps():
    class Partial:  # not even a Backend: judged by what it has
        def relu_forward(self, x):
            return x

    assert "conv2d_forward" in missing_ops(Partial) and "relu_forward" not in missing_ops(Partial)

    class Unfinished(Backend):
        def relu_forward(self, x):
            return x

    assert "conv2d_forward" in missing_ops(Unfinished) and "relu_forward" not in missing_ops(Unfinished)
    with pytest.raises(TypeError, match="abstract"):
        Unfinished()


def test_signature_mismatches_name_the_op_and_both_signatures():
    class Renamed(CudaBackend):
        def relu_forward(self, y):
            return y

        def linear_forward(self, x, w, b, relu=True):
            return x

        def tanh_forward(self, x, extra=None):
            return x

    lines = signature_mismatches(Renamed)
    assert len(lines) == 3
    assert "Renamed.relu_forward(self, y) != contract relu_forward(self, x)" in lines
    assert any("linear_forward" in line and "relu=True" in line and "relu=False" in line for line in lines)
    assert any("tanh_forward" in line and "extra=None" in line for line in lines)


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_has_a_kernel_and_a_caller(op):
    if op in MOVERS:
        return
    kernels = _kernels()
    parts = COMPOSED.get(op, [op])
    assert all(part in kernels for part in parts), f"{op}: no kernel for {set(parts) - kernels}"
    assert f".{op}(" in _callers(), f"{op}: no Function in gpucnn/functions (or optimizer) calls it"
    # that a test runs it: tests/test_op_table.py records the ops its table runs
