"""Compiling kernels/*.cu with NVRTC from PyPI, without CuPy or a GPU: for checks and tools, not for running.

NVRTC comes from ``cuda-bindings`` (its Python bindings) and ``nvidia-cuda-nvrtc`` (the library they
load), both in the ``test`` extra. tests/test_nvrtc.py compiles every kernel with it for sm_80 and
sm_90 and reads ptxas' register and spill counts; dev/conv_sass.py also asks for the cubin to read
its SASS. Nothing here imports CuPy: the cuda backend compiles through CuPy's RawModule instead, with
the same options (``NVRTC_OPTIONS``), so what is checked here is what runs there.

    result = compile_source(kernel_source("conv2d"), "conv2d.cu", "sm_90", verbose=True)
    assert result.ok, result.log
    ptxas_report(result.log)  # {kernel: {"registers": .., "spill_stores": .., "spill_loads": ..}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .cupy_device import NVRTC_OPTIONS

INSTALL_HINT = "pip install cuda-bindings nvidia-cuda-nvrtc (the 'test' extra)"


def bindings() -> Any:
    """``cuda.bindings.nvrtc``, imported on first use so that importing this module needs neither package."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise ModuleNotFoundError(f"NVRTC from PyPI is not installed: {INSTALL_HINT}") from exc
    return nvrtc


def version() -> tuple[int, int]:
    """NVRTC's (major, minor), e.g. (13, 5)."""
    nvrtc = bindings()
    err, major, minor = nvrtc.nvrtcVersion()
    _check(nvrtc, err, "nvrtcVersion")
    return major, minor


def options(arch: str, real: str = "float", index64: bool = False, verbose: bool = False,
            defines: Mapping[str, object] | None = None) -> list[str]:
    """The command line of one kernel build: the cuda backend's options and build variant (GPUCNN_REAL,
    GPUCNN_INDEX64), for ``arch`` (``sm_90``); ``verbose`` adds ptxas' per-kernel register report;
    ``defines`` adds ``-DNAME=value`` (e.g. GPUCNN_CONV_VARIANT, to build one conv variant alone)."""
    out = [f"-arch={arch}", *NVRTC_OPTIONS, f"-DGPUCNN_REAL={real}", f"-DGPUCNN_INDEX64={int(index64)}"]
    if verbose:
        out.append("--ptxas-options=-v")
    out += [f"-D{name}={value}" for name, value in (defines or {}).items()]
    return out


@dataclass(frozen=True)
class Compiled:
    """One NVRTC compile: whether it succeeded, its log (ptxas' report with ``verbose``), and the cubin
    when it was asked for and the compile succeeded."""

    ok: bool
    log: str
    cubin: bytes | None = None


def compile_source(source: str, name: str, arch: str, real: str = "float", index64: bool = False,
                   verbose: bool = False, defines: Mapping[str, object] | None = None,
                   cubin: bool = False) -> Compiled:
    """Compile ``source`` (a self-contained program, as ``kernel_source`` gives it; ``name`` is the file
    name its messages use) for ``arch``. A failed compile is returned (``ok`` False, the errors in
    ``log``), not raised: callers word it for their own report."""
    nvrtc = bindings()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        args = [o.encode() for o in options(arch, real, index64, verbose, defines)]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(args), args)
        log = _read(nvrtc, prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog)
        ok = result == nvrtc.nvrtcResult.NVRTC_SUCCESS
        binary = _read(nvrtc, prog, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN, text=False) if ok and cubin else None
        return Compiled(ok, log, binary)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """{kernel: {registers, spill_stores, spill_loads}} from ptxas' verbose log (``verbose=True``)."""
    report: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = report.setdefault(m.group(1), {})
        elif current is not None and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m.group(1))
    return report


def _check(nvrtc: Any, err: Any, call: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC: {call} failed: {err!r}")


def _read(nvrtc: Any, prog: Any, size_of: Any, read: Any, text: bool = True) -> Any:
    """A program's log or cubin: NVRTC fills a buffer of the size it reports first."""
    err, size = size_of(prog)
    _check(nvrtc, err, size_of.__name__)
    buffer = b" " * size
    (err,) = read(prog, buffer)
    _check(nvrtc, err, read.__name__)
    # the log's size counts its terminating NUL
    return buffer.decode(errors="replace").rstrip("\x00 ") if text else buffer
