"""Static numbers for the conv2d kernels, without a GPU: registers and spills (ptxas), and SASS
instruction counts in each kernel's main loop (NVRTC cubin + ``cuobjdump -sass``).

    pip install cuda-bindings nvidia-cuda-nvrtc nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    python dev/conv_sass.py                        # kernels/conv2d.cu, sm_90, float, index32
    python dev/conv_sass.py --source old.cu --arch sm_80 --real double --index64
    python dev/conv_sass.py --lenet                # useful work and instructions per useful FMA:
                                                   # LeNet-5 at batch 128, H100, against ee749a8
    python dev/conv_sass.py --tried                # the variants tried and dropped

The main loop is the innermost loop that holds every FMA of the kernel that sits in a loop (for the
GEMM kernels: one 16-deep reduction slice, loads included; for conv2d_forward_direct: one filter
tap). Integer divisions are counted by their MUFU.RCP (32-bit) or by calls (64-bit, a subroutine).
Results: benchmarks/results/conv-kernels-sass-2026-11-23.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpucnn.backends.cuda import nvrtc  # noqa: E402
from gpucnn.backends.cuda.conv_plan import (  # noqa: E402
    CONV_DIRECT,
    CONV_LAUNCH,
    DIRECT_CHANNELS,
    conv2d_variants,
    weight_grad_splits,
)
from gpucnn.backends.cuda.kernel_source import expand_includes, kernel_source  # noqa: E402

BASELINE = "ee749a8"  # the commit before the small-shape kernels: 64x64 tiles, divisions in the loop
H100_MULTIPROCESSORS = 132
TILE_K = 16  # conv2d.cu's reduction slice
LENET = {  # batch 128: (N, C, H, W, K, KH, KW, pad) at stride 1, LeNet5's conv1 and conv2
    "conv1": (128, 1, 28, 28, 6, 5, 5, 2),
    "conv2": (128, 6, 14, 14, 16, 5, 5, 0),
}

INTEGER = ("IMAD", "IADD3", "IADD", "ISETP", "LOP3", "SEL", "LEA", "SHF", "IABS", "IMNMX", "VIMNMX", "I2F", "F2I",
           "PRMT", "FLO", "POPC")
FMA = ("FFMA", "DFMA")


def cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    import nvidia  # the nvidia-cuda-cuobjdump wheel puts it under nvidia/cu*/bin

    for root in nvidia.__path__:
        for candidate in sorted(Path(root).glob("cu*/bin/cuobjdump")):
            return str(candidate)
    raise SystemExit("cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")


def compile_cubin(source: str, arch: str, real: str, index64: bool, variant: int | None = None) -> tuple[bytes, str]:
    # variant: conv2d.cu compiles only this variant (CONV_WIDE, CONV_NARROW, CONV_DIRECT)
    defines = {} if variant is None else {"GPUCNN_CONV_VARIANT": variant}
    result = nvrtc.compile_source(source, "conv2d.cu", arch, real, index64, verbose=True, defines=defines,
                                  cubin=True)
    if not result.ok:
        raise SystemExit(result.log)
    return result.cubin, result.log


def ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """{kernel: {registers, spills}}: the tables here print spill stores and loads as one number."""
    report = {}
    for kernel, counts in nvrtc.ptxas_report(log).items():
        report[kernel] = {k: v for k, v in counts.items() if k == "registers"}
        if "spill_stores" in counts:
            report[kernel]["spills"] = counts["spill_stores"] + counts["spill_loads"]
    return report


def sass(cubin: bytes) -> dict[str, list[tuple[int, str]]]:
    """{kernel: [(address, opcode with modifiers), ...]}"""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        tool = cuobjdump()  # it runs nvdisasm (nvidia-cuda-nvdisasm), which sits in the same folder
        env = {**os.environ, "PATH": f"{Path(tool).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        text = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True, env=env).stdout
    kernels, current = {}, None
    for line in text.splitlines():
        if m := re.match(r"\s*Function : (\w+)", line):
            current = kernels.setdefault(m.group(1), [])
        elif current is not None and (m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)):
            body = re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())  # drop the predicate
            current.append((int(m.group(1), 16), body))
    return kernels


def opcode(body: str) -> str:
    return body.split()[0].split(".")[0]


def loops(code: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(first, last) address of every loop: a branch back to a lower address."""
    found = []
    for address, body in code:
        if opcode(body) == "BRA" and (m := re.search(r"0x([0-9a-f]+)", body)) and int(m.group(1), 16) < address:
            found.append((int(m.group(1), 16), address))
    return found


def main_loop(code: list[tuple[int, str]], fma_per_slice: int = 256) -> tuple[list[tuple[int, str]], int, int]:
    """The instructions of the innermost loop that both loads from global memory and multiplies, how
    many run per pass of it and how many of those are FMAs: a loop nested in it (a kk loop unrolled
    only in part) counts as often as it must run to make the slice's fma_per_slice FMAs (GEMM: 4x4
    outputs x 16-deep slice)."""
    ranges = loops(code)

    def inside(lo, hi):
        return [(a, b) for a, b in code if lo <= a <= hi]

    candidates = [(lo, hi) for lo, hi in ranges
                  if any(opcode(b) == "LDG" for _, b in inside(lo, hi)) and
                  any(opcode(b) in FMA for _, b in inside(lo, hi))]
    if not candidates:
        return [], 0, 0
    lo, hi = min(candidates, key=lambda r: r[1] - r[0])
    body = inside(lo, hi)
    dynamic = len(body)
    nested = [(a, b) for a, b in ranges if lo <= a and b <= hi and (a, b) != (lo, hi)]
    fma_total = sum(opcode(b) in FMA for _, b in body)
    staged = any(opcode(b) == "STS" for _, b in body)
    for a, b in nested:  # a partly unrolled inner loop runs trip times per slice
        fma_inner = sum(opcode(x) in FMA for _, x in inside(a, b))
        if staged and fma_inner and fma_total < fma_per_slice:
            trip = (fma_per_slice - (fma_total - fma_inner)) // fma_inner
            dynamic += (trip - 1) * len(inside(a, b))
            fma_total += (trip - 1) * fma_inner
    return body, dynamic, max(fma_total, sum(opcode(b) in FMA for _, b in body))


def summarize(code: list[tuple[int, str]]) -> dict[str, int]:
    ops = Counter(opcode(b) for _, b in code)
    return {"instructions": len(code), "fma": sum(ops[o] for o in FMA),
            "integer": sum(ops[o] for o in INTEGER), "imad": ops["IMAD"],
            "divisions": ops["MUFU"] + ops["CALL"],  # no float divisions or math calls in these loops
            "global": ops["LDG"], "branches": ops["BRA"]}


VARIANTS = {0: "wide", 1: "narrow", 2: "direct"}  # conv2d.cu's CONV_WIDE, CONV_NARROW, CONV_DIRECT
VARIANT_KERNELS = {"conv2d_forward": (0, 1, 2), "conv2d_backward_input": (0, 1), "conv2d_backward_weight": (0, 1)}


def report(source: str, arch: str, real: str, index64: bool) -> list[dict]:
    """One row per kernel, or per kernel variant where the source has variants (GPUCNN_CONV_VARIANT):
    registers as launched (all variants in one kernel) and alone, and the variant's main loop."""
    cubin, log = compile_cubin(source, arch, real, index64)
    launched = ptxas_report(log)
    builds = {None: (sass(cubin), launched)}
    has_variants = "GPUCNN_CONV_VARIANT" in source
    if has_variants:
        for variant in VARIANTS:
            cubin, log = compile_cubin(source, arch, real, index64, variant)
            builds[variant] = (sass(cubin), ptxas_report(log))
    rows = []
    for kernel in sorted(builds[None][0]):
        variants = VARIANT_KERNELS.get(kernel, (None,)) if has_variants else (None,)
        for variant in variants:
            code, regs = builds[variant][0][kernel], builds[variant][1].get(kernel, {})
            body, dynamic, fma = main_loop(code)
            loop = summarize(body)
            rows.append({"kernel": kernel, "variant": VARIANTS.get(variant, "-"),
                         "registers": launched.get(kernel, {}).get("registers", "?"),
                         "alone": regs.get("registers", "?"), "spills": regs.get("spills", "?"),
                         "total": len(code), "dynamic": dynamic, "fma": fma,
                         **{f"loop_{key}": value for key, value in loop.items()}})
    return rows


def _padded(count: int, block: int) -> int:
    return -(-count // block) * block


def gemm_useful(m: int, n: int, reduce_lengths: list[int], tile: tuple[int, int]) -> float:
    """Useful share of the multiply-adds a grid of tiles issues: m x n outputs, each reduction range
    padded to whole TILE_K slices."""
    useful = m * n * sum(reduce_lengths)
    issued = _padded(m, tile[0]) * _padded(n, tile[1]) * sum(_padded(r, TILE_K) for r in reduce_lengths)
    return useful / issued


def _split_lengths(pixels: int, splits: int, per_split: int) -> list[int]:
    return [min(per_split, pixels - s * per_split) for s in range(splits)]


def lenet_utilization() -> list[dict]:
    """Per LeNet layer and product: the useful share of the work of the old (64x64 everywhere) and
    the new launch, and the blocks each launches, on an H100."""
    rows = []
    for layer, (n, c, h, w, k, kh, kw, pad) in LENET.items():
        oh, ow = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
        pixels, taps, in_pixels = n * oh * ow, c * kh * kw, n * h * w
        variants = conv2d_variants((k, c, kh, kw), 1)
        # forward
        threads, rows_, cols = CONV_LAUNCH["forward"][variants["forward"]]
        if variants["forward"] == CONV_DIRECT:
            new = pixels * k / (_padded(pixels, rows_) * _padded(k, DIRECT_CHANNELS))
            new_blocks = -(-pixels // rows_)
        else:
            new = gemm_useful(pixels, k, [taps], (rows_, cols))
            new_blocks = -(-pixels // rows_) * -(-k // cols)
        rows.append({"layer": layer, "product": "forward", "variant": variants["forward"],
                     "old": gemm_useful(pixels, k, [taps], (64, 64)), "new": new,
                     "old_blocks": -(-pixels // 64) * -(-k // 64), "new_blocks": new_blocks})
        # input gradient (LeNet5 skips it for conv1: the images need none)
        _, *tile = CONV_LAUNCH["backward_input"][variants["backward_input"]]
        rows.append({"layer": layer, "product": "backward_input", "variant": variants["backward_input"],
                     "old": gemm_useful(in_pixels, c, [k * kh * kw], (64, 64)),
                     "new": gemm_useful(in_pixels, c, [k * kh * kw], tile),
                     "old_blocks": -(-in_pixels // 64) * -(-c // 64),
                     "new_blocks": -(-in_pixels // tile[0]) * -(-c // tile[1])})
        # weight gradient: old splits (4 blocks of 256 per multiprocessor), taps columns only
        old_tiles = -(-taps // 64) * -(-k // 64)
        old_splits = max(1, min(-(-4 * H100_MULTIPROCESSORS // old_tiles), -(-pixels // 128)))
        old_per = -(-pixels // old_splits)
        old_splits = -(-pixels // old_per)
        variant = variants["backward_weight"]
        _, *tile = CONV_LAUNCH["backward_weight"][variant]
        splits, per = weight_grad_splits(pixels, taps, k, 1, variant, H100_MULTIPROCESSORS)
        useful = k * taps * pixels  # the bias column counts as overhead here, though it replaces a kernel
        issued = _padded(k, tile[0]) * _padded(taps + 1, tile[1]) * sum(
            _padded(r, TILE_K) for r in _split_lengths(pixels, splits, per))
        rows.append({"layer": layer, "product": "backward_weight", "variant": variant,
                     "old": gemm_useful(k, taps, _split_lengths(pixels, old_splits, old_per), (64, 64)),
                     "new": useful / issued, "old_blocks": old_tiles * old_splits,
                     "new_blocks": -(-(taps + 1) // tile[1]) * -(-k // tile[0]) * splits})
    return rows


def _per_fma(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["kernel"], r["variant"]): r["dynamic"] / r["fma"] for r in rows if r["fma"]}


def print_lenet() -> None:
    old = _per_fma(report(expand_includes(subprocess.run(["git", "show", f"{BASELINE}:kernels/conv2d.cu"],
                                                         capture_output=True, text=True, check=True,
                                                         cwd=Path(__file__).resolve().parents[1]).stdout,
                                          "conv2d.cu"), "sm_90", "float", False))
    new = _per_fma(report(kernel_source("conv2d"), "sm_90", "float", False))
    print("LeNet-5, batch 128, H100 (132 SMs), sm_90 float index32")
    print("| layer | product | old blocks | old useful | old instr./FMA | old instr./useful FMA | new variant | "
          "new blocks | new useful | new instr./FMA | new instr./useful FMA | gain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in lenet_utilization():
        kernel = f"conv2d_{r['product']}"
        o, v = old[(kernel, "-")], new[(kernel, r["variant"])]
        print(f"| {r['layer']} | {r['product']} | {r['old_blocks']} | {r['old']:.1%} | {o:.2f} | {o / r['old']:.1f} | "
              f"{r['variant']} | {r['new_blocks']} | {r['new']:.1%} | {v:.2f} | {v / r['new']:.1f} | "
              f"{(o / r['old']) / (v / r['new']):.1f}x |")


# Variants tried and dropped, as edits of kernels/conv2d.cu: (name, what, [(old text, new text)],
# [(kernel, variant) rows to show])
TRIED = [
    ("narrow forward 256x16", "256 threads per block, 4x fewer blocks",
     [("conv2d_forward_tile<64, 16>", "conv2d_forward_tile<256, 16>"),
      ("#define SCRATCH_ELEMENTS (TILE_K * 128)", "#define SCRATCH_ELEMENTS (TILE_K * 272)")],
     [("conv2d_forward", "narrow")]),
    ("narrow forward 128x16", "128 threads per block, 2x fewer blocks",
     [("conv2d_forward_tile<64, 16>", "conv2d_forward_tile<128, 16>"),
      ("#define SCRATCH_ELEMENTS (TILE_K * 128)", "#define SCRATCH_ELEMENTS (TILE_K * 144)")],
     [("conv2d_forward", "narrow")]),
    ("weight gradient 16x64", "64 threads: wider tap tiles",
     [("conv2d_backward_weight_tile<16, 32>", "conv2d_backward_weight_tile<16, 64>")],
     [("conv2d_backward_weight", "narrow")]),
    ("direct, 4 channels per pass", "", [("#define DIRECT_CHANNELS 8 ", "#define DIRECT_CHANNELS 4 ")],
     [("conv2d_forward", "direct")]),
    ("direct, 16 channels per pass", "",
     [("#define DIRECT_CHANNELS 8 ", "#define DIRECT_CHANNELS 16"),
      ("#define DIRECT_MAX_TAPS 64 ", "#define DIRECT_MAX_TAPS 32 ")], [("conv2d_forward", "direct")]),
    ("rows not kept times width", "h = h0 + i*dh, address h*W + w (one more IMAD per load)",
     [("(oh * g.sh - g.pad_top) * g.width,", "oh * g.sh - g.pad_top,"),
      ("g.dh * g.width, g.dw)}", "g.dh, g.dw)}"),
      ("g.height * g.width,\n                   g.width,", "g.height,\n                   g.width,"),
      ("v = x[at.hi + row + w]", "v = x[at.hi + row * width + w]")],
     [("conv2d_forward", "wide"), ("conv2d_forward", "narrow")]),
    ("branch-free patch loads", "always load (a valid address), select 0 outside",
     [("""            real v = 0;
            if (tap < end) {
                const index_t row = row0 + at.mid, w = w0 + at.lo;
                if (row >= 0 && row < plane && w >= 0 && w < width) v = x[at.hi + row + w];
            }
            tap += step;
            at.advance();
            return v;""", """            const index_t row = row0 + at.mid, w = w0 + at.lo;
            const bool ok = tap < end && row >= 0 && row < plane && w >= 0 && w < width;
            const real v = x[ok ? at.hi + row + w : 0];
            tap += step;
            at.advance();
            return ok ? v : (real)0;""")], [("conv2d_forward", "wide"), ("conv2d_forward", "narrow")]),
]


def print_tried() -> None:
    base = kernel_source("conv2d")
    print("sm_90 float index32; each row: the variant alone (GPUCNN_CONV_VARIANT), per FMA of its main loop")
    print("| tried | kernel | variant | registers (variant alone) | spill bytes | per pass | FMA per pass | "
          "instructions per FMA |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _, edits, kernels in TRIED:
        source = base
        for old, new in edits:
            if old not in source:
                raise SystemExit(f"{name}: kernels/conv2d.cu no longer holds {old!r}")
            source = source.replace(old, new)
        for r in report(source, "sm_90", "float", False):
            if (r["kernel"], r["variant"]) in kernels:
                print(f"| {name} | {r['kernel']} | {r['variant']} | {r['alone']} | {r['spills']} | {r['dynamic']} | "
                      f"{r['fma']} | {r['dynamic'] / r['fma']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a conv2d.cu to read instead of kernels/conv2d.cu (e.g. an older version)")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--real", default="float", choices=["float", "double"])
    parser.add_argument("--index64", action="store_true")
    parser.add_argument("--lenet", action="store_true", help="the LeNet-5 table: useful work, old against new")
    parser.add_argument("--tried", action="store_true", help="the variants tried and dropped (edits of conv2d.cu)")
    args = parser.parse_args()
    if args.lenet:
        print_lenet()
        return
    if args.tried:
        print_tried()
        return
    source = expand_includes(Path(args.source).read_text(), "conv2d.cu") if args.source else kernel_source("conv2d")
    rows = report(source, args.arch, args.real, args.index64)
    print(f"{args.arch} {args.real} index{64 if args.index64 else 32}")
    print("| kernel | variant | registers (launched) | registers (variant alone) | spill bytes | SASS | "
          "main loop (static) | per pass | FMA per pass | integer ops in loop (IMAD) | divisions in loop | "
          "global loads in loop | instructions per FMA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_fma = f"{r['dynamic'] / r['fma']:.2f}" if r["fma"] else "-"
        print(f"| {r['kernel']} | {r['variant']} | {r['registers']} | {r['alone']} | {r['spills']} | {r['total']} | "
              f"{r['loop_instructions']} | {r['dynamic']} | {r['fma']} | {r['loop_integer']} ({r['loop_imad']}) | "
              f"{r['loop_divisions']} | {r['loop_global']} | {per_fma} |")

if __name__ == "__main__":
    main()
