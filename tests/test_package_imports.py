"""``import gpucnn`` stays NumPy-only, and the submodules the README writes as ``gpucnn.onnx.export(...)`` are there.

Each check runs in a fresh interpreter: this test process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gpucnn

from conftest import REPO

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


def _module_level_imports() -> dict[str, set[str]]:
    """gpucnn module -> the gpucnn modules it imports when it is imported (module-level statements,
    not those inside functions or under ``if TYPE_CHECKING``)."""
    import ast

    package = REPO / "gpucnn"
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for stmt in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(stmt, ast.ImportFrom):
                    base = here.split(".")
                    if stmt.level:
                        base = base[:len(base) - (stmt.level - 1)]
                        target = ".".join(base + ([stmt.module] if stmt.module else []))
                    else:
                        target = stmt.module or ""
                    candidates = [target] + [f"{target}.{alias.name}" for alias in stmt.names]
                elif isinstance(stmt, ast.Import):
                    candidates = [alias.name for alias in stmt.names]
                else:
                    continue
                found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_only_import_cycle_is_the_tensor_autograd_core():
    # a package importing its submodules (gpucnn/__init__.py imports nn, nn imports gpucnn.functional) is
    # not a cycle of modules: only the edges between non-package modules count, and package -> child
    graph = _module_level_imports()
    packages = {name for name in graph if (REPO / name.replace(".", "/") / "__init__.py").exists()}
    graph = {v: {w for w in targets if w not in packages} for v, targets in graph.items()}
    cycles = _cycles(graph)
    core = {"gpucnn.core.tensor", "gpucnn.core.autograd", "gpucnn.core.tensor_ops", "gpucnn.core.shape_ops"}
    assert all(cycle <= core for cycle in cycles), f"import cycles outside the core: " \
                                                   f"{[sorted(c) for c in cycles if not c <= core]}"
