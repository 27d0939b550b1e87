"""The Python constants that mirror a kernel's, read out of kernels/*.cu and compared.

gpucnn/backends/cuda/launchers.py, conv_plan.py and launch.py size grids and blocks with numbers that
the kernels also hard-wire (tile sizes, threads per block, elements per block, table widths): a
kernel's ``#define`` or a template argument changed without its Python twin (or the reverse) launches
the wrong shape, which shows as wrong numbers or out-of-bounds accesses rather than a clear error.
Every pair is checked here, from the kernel text itself (``#define``, ``constexpr``/``const int``,
the template arguments and block sizes written in each entry point), and a failure names both sides.
dev/conv_sass.py's copies are checked too.

No compiler or GPU is needed: the kernels are only read.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from gpucnn.backends.cuda import conv_plan, launch, launchers
from gpucnn.backends.cuda.kernel_source import kernel_dir, kernel_source

from conftest import script_module

#: the modules whose constants mirror the kernels' (each read for comments naming a .cu file)
SOURCES = (conv_plan, launch, launchers)
#: conv_plan.CONV_LAUNCH's products -> conv2d.cu's entry point for each
CONV_KERNELS = {"forward": "conv2d_forward", "backward_input": "conv2d_backward_input",
                "backward_weight": "conv2d_backward_weight"}
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


# ---------------------------------------------------------------------------- reading the kernels
@functools.cache
def _code(file: str) -> str:
    """kernels/<file> without comments (a constant's old value quoted in a comment must not count);
    a .cu as ``kernel_source`` gives it (common.cuh expanded into it), a header as it is."""
    text = kernel_source(file.removesuffix(".cu")) if file.endswith(".cu") else (kernel_dir() / file).read_text()
    return _COMMENT.sub("", text)


@functools.cache
def _constants(file: str) -> dict[str, list[str]]:
    """Each object-like ``#define NAME value`` and ``constexpr``/``const`` integer of the file: name ->
    the expressions it is given (more than one: a local name reused, which cannot be looked up)."""
    code = _code(file)
    found: dict[str, list[str]] = {}
    # not function-like macros (NAME( ...) nor ones continued over lines (a trailing backslash)
    for name, value in re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n\\]*[^\s\\])[ \t]*$", code, re.M):
        found.setdefault(name, []).append(value)
    integer = r"(?:unsigned\s+|long\s+long\s+|int\s+|index_t\s+)+"
    pattern = rf"\b(?:static\s+)?(?:constexpr|const)\s+{integer}(\w+)\s*=\s*([^;,]+)"
    for name, value in re.findall(pattern, code):
        found.setdefault(name, []).append(value.strip())
    return found


_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Mod: operator.mod,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.Div: lambda a, b: int(a / b),  # C's integer division truncates toward zero
}


def _evaluate(file: str, expr: str, bindings: Mapping[str, int] | None = None, _seen: tuple[str, ...] = ()) -> int:
    """An integer constant expression of the file: literals, + - * / % << >>, parentheses, and names
    that are other constants of the file or given in ``bindings`` (template parameters)."""
    bindings = bindings or {}
    tree = ast.parse(re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr.strip()), mode="eval")

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id in bindings:
                return bindings[node.id]
            if node.id in _seen:
                raise ValueError(f"kernels/{file}: {node.id} is defined in terms of itself")
            return kernel_constant(file, node.id, _seen + (node.id,))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        raise ValueError(f"kernels/{file}: cannot evaluate {expr!r} (at {ast.unparse(node)!r}); this test's "
                         f"reader takes integer constant expressions only")

    return value(tree.body)


def kernel_constant(file: str, name: str, _seen: tuple[str, ...] = ()) -> int:
    """The value of ``name`` (a ``#define`` or ``constexpr``/``const`` integer) in kernels/<file>."""
    values = _constants(file).get(name)
    if not values:
        raise AssertionError(f"kernels/{file} no longer defines {name} (as #define, constexpr or const int): "
                             f"the Python constant that mirrored it needs a new counterpart, and this test too")
    if len(values) > 1:
        raise AssertionError(f"kernels/{file} defines {name} {len(values)} times ({values}): which one is meant?")
    return _evaluate(file, values[0], _seen=_seen or (name,))


@functools.cache
def entry_point(kernel: str) -> tuple[str | None, str]:
    """(the block-size bound of ``__launch_bounds__``, or None, the body) of conv2d.cu's ``kernel``."""
    code = _code("conv2d.cu")
    match = re.search(rf'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(\s*(\w+)[^)]*\)\s*)?'
                      rf'{kernel}\s*\(', code)
    assert match, f"kernels/conv2d.cu has no entry point {kernel}"
    start = code.index("{", match.end())
    depth = 0
    for at in range(start, len(code)):
        depth += {"{": 1, "}": -1}.get(code[at], 0)
        if depth == 0:
            return match.group(1), code[start:at + 1]
    raise AssertionError(f"kernels/conv2d.cu: the body of {kernel} does not end")


def _tile(kernel: str, variant: str) -> tuple[int, int]:
    """(BM, BN): the template arguments of the tile routine the entry point runs for ``variant``, where
    it picks it (``case CONV_NARROW: ..._tile<64, 16>`` or ``if (... == CONV_NARROW) ..._tile<...>``)."""
    _, body = entry_point(kernel)
    branch = {conv_plan.CONV_NARROW: r"(?:case\s+CONV_NARROW\s*:|==\s*CONV_NARROW\s*\))",
              conv_plan.CONV_WIDE: r"(?:default\s*:|\belse\b)"}[variant]
    match = re.search(branch + r"\s*\w+_tile\s*<\s*(\w+)\s*,\s*(\w+)\s*>", body)
    assert match, f"kernels/conv2d.cu: no {variant} tile found in {kernel} (this test's reader needs updating)"
    return _evaluate("conv2d.cu", match.group(1)), _evaluate("conv2d.cu", match.group(2))


def _narrow_threads(kernel: str) -> int:
    """The block size that makes ``kernel`` run its narrow variant: ``launched_variant(N)``'s argument."""
    match = re.search(r"launched_variant\s*\(\s*(\w+)\s*\)", entry_point(kernel)[1])
    assert match, f"kernels/conv2d.cu: {kernel} no longer calls launched_variant(narrow threads)"
    return _evaluate("conv2d.cu", match.group(1))


def _tile_threads(bm: int, bn: int) -> int:
    """Threads of a gemm_tile<BM, BN> block, by conv2d.cu's own ``constexpr int threads``."""
    return _evaluate("conv2d.cu", _constants("conv2d.cu")["threads"][0], {"BM": bm, "BN": bn})


# ---------------------------------------------------------------------------- the pairs
@dataclass(frozen=True)
class Mirror:
    python: str  # what the Python side is, as a reader finds it
    kernel: str  # what the kernel side is
    python_value: Callable[[], object]
    kernel_value: Callable[[], object]


def _define(python: str, file: str, name: str, value: Callable[[], object] | None = None,
            module: ModuleType = launchers) -> Mirror:
    """<module>.<python> against ``#define name`` (or constexpr) of kernels/<file>."""
    return Mirror(f"{Path(module.__file__).name} {python}", f"kernels/{file} {name}",
                  value or (lambda: getattr(module, python)), lambda: kernel_constant(file, name))


def _conv_launch_mirrors() -> list[Mirror]:
    out = []
    for product, variants in conv_plan.CONV_LAUNCH.items():
        kernel = CONV_KERNELS[product]
        for variant, (threads, rows, cols) in variants.items():
            where = f"conv_plan.py CONV_LAUNCH[{product!r}][{variant!r}]"
            if variant == conv_plan.CONV_DIRECT:
                out += [
                    Mirror(f"{where} threads", "kernels/conv2d.cu DIRECT_THREADS",
                           lambda t=threads: t, lambda: kernel_constant("conv2d.cu", "DIRECT_THREADS")),
                    # conv2d_forward_direct: one output pixel per thread, so a block's rows are its threads
                    Mirror(f"{where} rows (pixels per block)", "kernels/conv2d.cu DIRECT_THREADS",
                           lambda r=rows: r, lambda: kernel_constant("conv2d.cu", "DIRECT_THREADS")),
                    Mirror(f"{where} columns (channels per pass)", "kernels/conv2d.cu DIRECT_CHANNELS",
                           lambda c=cols: c, lambda: kernel_constant("conv2d.cu", "DIRECT_CHANNELS")),
                ]
                continue
            out += [
                Mirror(f"{where} (rows, columns)", f"kernels/conv2d.cu {kernel}'s {variant} <BM, BN>",
                       lambda r=rows, c=cols: (r, c), lambda k=kernel, v=variant: _tile(k, v)),
                Mirror(f"{where} threads", f"kernels/conv2d.cu gemm_tile's constexpr threads for {kernel}'s "
                       f"{variant} tile", lambda t=threads: t, lambda k=kernel, v=variant: _tile_threads(*_tile(k, v))),
            ]
            if variant == conv_plan.CONV_NARROW:
                out.append(Mirror(f"{where} threads", f"kernels/conv2d.cu {kernel}'s launched_variant(narrow threads)",
                                  lambda t=threads: t, lambda k=kernel: _narrow_threads(k)))
    return out


MIRRORS = [
    # conv2d.cu
    _define("DIRECT_CHANNELS", "conv2d.cu", "DIRECT_CHANNELS", module=conv_plan),
    _define("DIRECT_MAX_TAPS", "conv2d.cu", "DIRECT_MAX_TAPS", module=conv_plan),
    *_conv_launch_mirrors(),
    # linear.cu: its grid is LINEAR_TILE x LINEAR_TILE tiles, its blocks LINEAR_THREADS threads
    _define("LINEAR_TILE", "linear.cu", "LINEAR_TILE"),
    _define("LINEAR_THREADS", "linear.cu", "LINEAR_THREADS"),
    # optimizers.cu: the *_many updates' blocks each take MANY_CHUNK elements; the stepped tables' widths
    _define("MANY_CHUNK", "optimizers.cu", "MANY_CHUNK", module=launch),
    _define("SGD_HYPER", "optimizers.cu", "SGD_HYPER"),
    _define("ADAM_HYPER", "optimizers.cu", "ADAM_HYPER"),
    # pad.cu: the mode code the launchers pass for each F.pad mode
    *[_define(f"PAD_MODES[{mode!r}]", "pad.cu", f"PAD_{mode.upper()}", lambda mode=mode: launchers.PAD_MODES[mode])
      for mode in ("constant", "reflect", "replicate", "circular")],
]


def _conv_sass():
    return script_module("dev/conv_sass.py")


DEV_MIRRORS = [
    Mirror("dev/conv_sass.py TILE_K", "kernels/conv2d.cu TILE_K", lambda: _conv_sass().TILE_K,
           lambda: kernel_constant("conv2d.cu", "TILE_K")),
    # GPUCNN_CONV_VARIANT=<number> builds one variant alone: the numbers are conv2d.cu's, the names conv_plan.py's
    Mirror("dev/conv_sass.py VARIANTS", "kernels/conv2d.cu CONV_WIDE, CONV_NARROW, CONV_DIRECT (-> conv_plan's names)",
           lambda: _conv_sass().VARIANTS,
           lambda: {kernel_constant("conv2d.cu", f"CONV_{v.upper()}"): getattr(conv_plan, f"CONV_{v.upper()}")
                    for v in ("wide", "narrow", "direct")}),
]


@pytest.mark.parametrize("mirror", MIRRORS + DEV_MIRRORS, ids=lambda m: f"{m.python} == {m.kernel}")
def test_python_constant_equals_the_kernels(mirror):
    ours, kernels = mirror.python_value(), mirror.kernel_value()
    assert ours == kernels, (f"{mirror.python} is {ours!r} but {mirror.kernel} is {kernels!r}: they must change "
                             f"together")


# ---------------------------------------------------------------------------- what the values must also satisfy
@pytest.mark.parametrize("product", list(conv_plan.CONV_LAUNCH))
def test_conv_variants_are_the_kernels(product):
    """CONV_LAUNCH lists a product's variants as its entry point has them (the direct forward only where the
    kernel branches to it), and the block sizes tell them apart as launched_variant does: the narrow size
    first, then DIRECT_THREADS, anything else wide. Every block fits the kernel's __launch_bounds__."""
    kernel = CONV_KERNELS[product]
    bound, body = entry_point(kernel)
    variants = conv_plan.CONV_LAUNCH[product]
    expected = {conv_plan.CONV_WIDE, conv_plan.CONV_NARROW}
    if "CONV_DIRECT" in body:
        expected.add(conv_plan.CONV_DIRECT)
    assert set(variants) == expected, (f"conv_plan.py CONV_LAUNCH[{product!r}] has {sorted(variants)}, "
                                       f"kernels/conv2d.cu {kernel} branches to {sorted(expected)}")
    threads = {variant: shape[0] for variant, shape in variants.items()}
    direct = kernel_constant("conv2d.cu", "DIRECT_THREADS")
    picked = {v: conv_plan.CONV_NARROW if t == _narrow_threads(kernel) else
              conv_plan.CONV_DIRECT if t == direct else conv_plan.CONV_WIDE for v, t in threads.items()}
    assert picked == {v: v for v in variants}, (
        f"conv_plan.py CONV_LAUNCH[{product!r}] block sizes {threads}: kernels/conv2d.cu {kernel} would run "
        f"{picked} (launched_variant: {_narrow_threads(kernel)} threads narrow, DIRECT_THREADS {direct} direct)")
    if bound is not None:
        limit = _evaluate("conv2d.cu", bound)
        assert max(threads.values()) <= limit, (f"conv_plan.py CONV_LAUNCH[{product!r}] launches {threads}, above "
                                                f"kernels/conv2d.cu {kernel}'s __launch_bounds__({limit})")


def test_index32_limit_is_the_32_bit_index_type():
    """launch.INDEX32_LIMIT picks the 64-bit build from 2**31 elements on: the 32-bit build's index_t
    (common.cuh, GPUCNN_INDEX64 0) must be a signed 32-bit int, which holds indices below 2**31 only."""
    types = re.findall(r"typedef\s+([\w ]+?)\s+index_t\s*;", _code("common.cuh"))
    assert types == ["long long", "int"], f"kernels/common.cuh's index_t builds are {types}, not (long long, int)"
    assert launch.INDEX32_LIMIT == 2 ** 31, (f"launch.py INDEX32_LIMIT is {launch.INDEX32_LIMIT}, but "
                                             f"kernels/common.cuh's 32-bit index_t is int (indices below 2**31)")


def test_every_constant_that_names_a_kernel_is_checked():
    """A module-level constant of launchers.py, conv_plan.py or launch.py whose comment (on its line or just
    above it) names a .cu file mirrors that kernel: it must have a pair above, so that a new one is not left to
    a comment."""
    checked = {(file, where.split("[")[0]) for file, where, *_ in (m.python.split() for m in MIRRORS)}
    checked |= {("launch.py", "INDEX32_LIMIT")}
    named = set()
    for module in SOURCES:
        file = Path(module.__file__).name
        lines = Path(module.__file__).read_text().splitlines()
        found = set()
        for i, line in enumerate(lines):
            match = re.match(r"^([A-Z][A-Z0-9_]*(?:\s*,\s*[A-Z][A-Z0-9_]*)*)\s*=", line)
            if not match:
                continue
            context = [line.partition("#")[2]]
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                context.append(lines[j])
                j -= 1
            if re.search(r"\b\w+\.cu\b", " ".join(context)):
                found |= {(file, name.strip()) for name in match.group(1).split(",")}
        assert found, f"the reader of {file}'s comments found nothing: it needs updating (or {file} leaving SOURCES)"
        named |= found
    assert named <= checked, (f"constants whose comments name a kernel but that this test does not check against "
                              f"it: {sorted(f'{file} {name}' for file, name in named - checked)}")


def test_the_reader_reads():
    """The reader itself, on the kernels as they are: a #define in terms of another, a template's constexpr,
    comments ignored, function-like and multi-line macros left out."""
    assert kernel_constant("conv2d.cu", "SCRATCH_ELEMENTS") == kernel_constant("conv2d.cu", "TILE_K") * 128
    assert _tile_threads(64, 16) == 64
    assert "GRID_STRIDE_LOOP" not in _constants("optimizers.cu")  # function-like, from common.cuh
    assert "CONV_GEOMETRY_PARAMS" not in _constants("conv2d.cu")  # continued over lines
    assert _evaluate("conv2d.cu", "(7 - 9) / 2") == -1  # C truncates toward zero
    with pytest.raises(ValueError, match="cannot evaluate"):
        _evaluate("conv2d.cu", "threadIdx.x % 32")
