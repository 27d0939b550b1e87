"""``import gpucnn`` stays NumPy-only, and the submodules the README writes as ``gpucnn.onnx.export(...)`` are there.

Each check runs in a fresh interpreter: this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gpucnn

# what a plain ``import gpucnn`` must not pull in: the optional extras and the GPU stack
OPTIONAL = ("onnx", "onnxruntime", "mpi4py", "cupy", "torch", "matplotlib", "tqdm", "safetensors", "threadpoolctl")


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_gpucnn_loads_no_optional_dependency():
    out = _fresh("import sys, json, gpucnn; print(json.dumps(sorted(sys.modules)))")
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert loaded.isdisjoint(OPTIONAL), sorted(loaded & set(OPTIONAL))
    assert not {f"gpucnn.{name}" for name in gpucnn.LAZY_SUBMODULES} & set(json.loads(out))


@pytest.mark.parametrize("expression", ["gpucnn.onnx.export", "gpucnn.interop.to_torch_state_dict",
                                        "gpucnn.training.Trainer", "gpucnn.datasets.load_mnist",
                                        "gpucnn.cuda_graph.GraphedStep"])
def test_readme_submodules_reachable_after_import_gpucnn(expression):
    assert _fresh(f"import gpucnn; print(callable({expression}))").strip() == "True"


def test_every_lazy_name_is_a_submodule_and_listed():
    for name in gpucnn.LAZY_SUBMODULES:
        assert getattr(gpucnn, name).__name__ == f"gpucnn.{name}"
        assert name in dir(gpucnn)


def test_unknown_attribute_still_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_submodule'"):
        gpucnn.not_a_submodule  # noqa: B018
