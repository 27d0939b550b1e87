"""Every kernel compiles with NVRTC for sm_80 and sm_90, in every build variant, without spills.

Runs without a GPU: NVRTC comes from PyPI (``cuda-bindings`` + ``nvidia-cuda-nvrtc``, in the
``test`` extra). Registers per kernel are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import re

import pytest

from gpucnn.backends.cuda.kernel_source import kernel_modules, kernel_names, kernel_source

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC check needs: pip install cuda-bindings "
                                                          "nvidia-cuda-nvrtc (the 'test' extra)")

ARCHES = ("sm_80", "sm_90")
VARIANTS = [("float", 0), ("double", 0), ("float", 1)]


def _compile(module: str, arch: str, real: str, index64: int) -> tuple[bool, str]:
    source = kernel_source(module).encode()
    err, prog = nvrtc.nvrtcCreateProgram(source, f"{module}.cu".encode(), 0, [], [])
    options = [f"-arch={arch}".encode(), b"--ptxas-options=-v", b"-std=c++17",
               f"-DGPUCNN_REAL={real}".encode(), f"-DGPUCNN_INDEX64={index64}".encode()]
    (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    return result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace").rstrip("\x00 ")


def _ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """{kernel: {registers, spill_stores, spill_loads}} from ptxas' verbose log."""
    report, current = {}, None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = report.setdefault(m.group(1), {})
        elif current is not None and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
    return report


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-index{64 if v[1] else 32}")
@pytest.mark.parametrize("module", kernel_modules())
def test_kernel_compiles_without_spills(module, arch, variant):
    ok, log = _compile(module, arch, *variant)
    assert ok, f"NVRTC failed on kernels/{module}.cu for {arch}:\n{log}"
    report = _ptxas_report(log)
    assert set(report) == set(kernel_names(kernel_source(module))), "ptxas did not report every kernel"
    for kernel, info in sorted(report.items()):
        print(f"{arch} {variant[0]:6s} index{64 if variant[1] else 32} {kernel:28s} {info['registers']:3d} registers")
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, f"{kernel} spills registers: {info}"
