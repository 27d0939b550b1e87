"""Finding and reading ``kernels/*.cu`` (installed as ``gpucnn.kernels`` or in a source checkout).

Every compiler gpucnn uses (CuPy's NVRTC, the NVRTC compile check, the cuda-sim host compiler)
reads a kernel through ``kernel_source``: the ``#include "common.cuh"`` line is replaced by the
header's text with ``#line`` markers, so the program is self-contained (CuPy caches by source
text, so a header change invalidates the cache) and compiler messages still name the right
file and line.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([\w./-]+)"[ \t]*$', re.MULTILINE)


@functools.cache
def kernel_dir() -> Path:
    """The folder holding the .cu files: gpucnn/kernels/ when installed (pyproject.toml maps the
    repository's kernels/ there), or kernels/ beside the package in a source checkout."""
    package = Path(__file__).resolve().parents[2]  # gpucnn/, from gpucnn/backends/cuda/
    for candidate in (package / "kernels", package.parent / "kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    raise FileNotFoundError("gpucnn: kernels/*.cu not found (neither installed as gpucnn.kernels nor beside the "
                            "package in a source checkout); reinstall gpucnn")


def kernel_modules() -> list[str]:
    """Names of every kernel module (``conv2d`` for ``kernels/conv2d.cu``)."""
    return sorted(p.stem for p in kernel_dir().glob("*.cu"))


def expand_includes(text: str, name: str, seen: tuple[str, ...] = ()) -> str:
    """``text`` (the file ``name``) with each ``#include "x"`` of kernels/ replaced by x's text."""
    out, last = [f'#line 1 "{name}"\n'], 0
    for match in _INCLUDE.finditer(text):
        header = match.group(1)
        if header in seen or header == name:
            raise ValueError(f"{name}: recursive include of {header}")
        path = kernel_dir() / header
        if not path.is_file():
            raise FileNotFoundError(f"{name}: #include \"{header}\" not found in {kernel_dir()}")
        line_after = text.count("\n", 0, match.end()) + 2
        out.append(text[last:match.start()])
        out.append(f'{expand_includes(path.read_text(), header, seen + (name,))}\n#line {line_after} "{name}"')
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def kernel_source(module: str) -> str:
    """The self-contained source of ``kernels/<module>.cu``."""
    path = kernel_dir() / f"{module}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"gpucnn: no kernel module {module!r} in {kernel_dir()}")
    return expand_includes(path.read_text(), path.name)


def real_type(dtype: Any) -> str:
    """The C type a kernel build uses for ``real`` (GPUCNN_REAL) with this dtype."""
    return {"float32": "float", "float64": "double"}[np.dtype(dtype).name]


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` functions a source defines, in order."""
    pattern = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\('
    return re.findall(pattern, source)
