"""One walk over the backend contract: each op has a NumPy and a CUDA face with the same signature,
a kernel of its name (or a declared composition of kernels), a caller in gpucnn/functions, the
optimizers or the CUDA-graph step, and a test that names it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gpucnn.backends.contract import OPS
from gpucnn.backends.cuda.kernel_source import kernel_modules, kernel_names, kernel_source
from gpucnn.backends.cuda.launchers import CudaBackend
from gpucnn.backends.numpy.backend import NumpyBackend

ROOT = Path(__file__).resolve().parent.parent

#: ops with no kernel of their own name, and the kernels (or ops) they are made of
COMPOSED = {
    "conv2d_backward": ["conv2d_backward_input", "conv2d_backward_weight", "conv2d_reduce_weight_partials"],
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


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_has_both_faces_a_kernel_a_caller_and_a_test(op):
    numpy_face, cuda_face = getattr(NumpyBackend, op), getattr(CudaBackend, op)
    assert list(inspect.signature(numpy_face).parameters) == list(inspect.signature(cuda_face).parameters), op
    if op in MOVERS:
        return
    kernels = _kernels()
    parts = COMPOSED.get(op, [op])
    assert all(part in kernels for part in parts), f"{op}: no kernel for {set(parts) - kernels}"
    assert f".{op}(" in _callers(), f"{op}: no Function in gpucnn/functions (or optimizer) calls it"
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_contract.py")
    assert op in tests, f"{op}: no test names it"
