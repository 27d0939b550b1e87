"""Every kernel compiles with NVRTC for sm_80 and sm_90, in every build variant, without spills.

Runs without a GPU: NVRTC comes from PyPI (``cuda-bindings`` + ``nvidia-cuda-nvrtc``, in the
``test`` extra). Registers per kernel are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import pytest

from gpucnn.backends.cuda import nvrtc
from gpucnn.backends.cuda.kernel_source import kernel_modules, kernel_names, kernel_source

pytest.importorskip("cuda.bindings.nvrtc", reason=f"NVRTC check needs: {nvrtc.INSTALL_HINT}")

ARCHES = ("sm_80", "sm_90")
VARIANTS = [("float", 0), ("double", 0), ("float", 1)]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-index{64 if v[1] else 32}")
@pytest.mark.parametrize("module", kernel_modules())
def test_kernel_compiles_without_spills(module, arch, variant):
    real, index64 = variant
    result = nvrtc.compile_source(kernel_source(module), f"{module}.cu", arch, real, bool(index64), verbose=True)
    assert result.ok, f"NVRTC failed on kernels/{module}.cu for {arch}:\n{result.log}"
    report = nvrtc.ptxas_report(result.log)
    assert set(report) == set(kernel_names(kernel_source(module))), "ptxas did not report every kernel"
    for kernel, info in sorted(report.items()):
        print(f"{arch} {variant[0]:6s} index{64 if variant[1] else 32} {kernel:28s} {info['registers']:3d} registers")
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, f"{kernel} spills registers: {info}"
