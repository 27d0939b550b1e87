"""The floor under im2col + BLAS: a training step's matrix products alone, against PyTorch's step.

For each model and batch, one recorded training step lists every convolution and Linear layer the
NumPy backend runs, with its shapes. Their products are then timed by themselves: each layer's
forward product, weight gradient and input gradient (none for a layer whose input needs no
gradient, like the first convolution), each over column chunks of ``--chunk-mib`` with both
operands already in cache, as the backend's chunked paths run them at best. No im2col, col2im,
layout change, BatchNorm, ReLU, pooling, dropout or optimizer work is in that time, so no step that
forms its convolutions as im2col products on this BLAS can be faster than it.

Each round times gpucnn's step and PyTorch's step in fresh processes (bench_cpu.py's workers, with
its allocator settings and threads) and the products here between them, for ``--rounds`` rounds; the
table shows medians, and what PyTorch's step leaves for everything but the products ("room"). Where
the room is small against what those passes over memory cost here, only convolution kernels that
fuse the column copies into the product (PyTorch's oneDNN) get there.

    python dev/gemm_floor.py [--models lenet5,mnist-net,resnet8] [--batches 64,128,256]
                             [--rounds 5] [--threads 2] [--chunk-mib 4] [--out FILE.md]

PyTorch is needed (pip install torch==2.13.0, the CPU build). BLAS and PyTorch run on ``--threads``
threads, 2 by default, as in bench_cpu.py.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_cpu's models, optimizers and workers: the same steps it times

import bench_cpu  # noqa: E402

import gpucnn  # noqa: E402


class Product(NamedTuple):
    """One matrix product of a step: (groups x) (rows x inner) @ (inner x columns)."""

    layer: str
    kind: str  # "forward", "weight grad" or "input grad"
    groups: int
    rows: int
    inner: int
    columns: int

    @property
    def flops(self) -> int:
        return 2 * self.groups * self.rows * self.inner * self.columns


def _conv_products(x_shape, w_shape, stride, padding, dilation, groups, need_input_grad) -> list[Product]:
    """The im2col products of one convolution: (K, R) @ (R, L) forward, (K, L) @ (L, R) for the
    weights, (R, K) @ (K, L) for the input, per group, R = C/G*KH*KW and L = N*OH*OW."""
    from gpucnn.shapes import conv_output_hw

    k, cg, kh, kw = w_shape
    oh, ow = conv_output_hw(x_shape, w_shape, stride, padding, dilation)
    name = f"conv {x_shape[1]}->{k} {kh}x{kw}/{stride[0]} at {x_shape[2]}x{x_shape[3]}"
    r, length, kg = cg * kh * kw, x_shape[0] * oh * ow, k // groups
    products = [Product(name, "forward", groups, kg, r, length), Product(name, "weight grad", groups, kg, length, r)]
    if need_input_grad:
        products.append(Product(name, "input grad", groups, r, kg, length))
    return products


def _linear_products(x_shape, w_shape, need_input_grad) -> list[Product]:
    n, (out, inp) = x_shape[0], w_shape
    name = f"linear {inp}->{out}"
    products = [Product(name, "forward", 1, n, inp, out), Product(name, "weight grad", 1, out, n, inp)]
    if need_input_grad:
        products.append(Product(name, "input grad", 1, n, out, inp))
    return products


def recorded_products(model, optimizer, x, y) -> list[list[Product]]:
    """The products one training step of ``model`` makes, per layer in the order the backward pass
    meets them (last layer first), read from the backend's backward calls, which see every layer's
    input, weights and whether the input needs a gradient."""
    backend = gpucnn.get_backend()
    layers: list[list[Product]] = []
    patched: list[str] = []

    def recording(name, record):
        original = getattr(backend, name)
        patched.append(name)

        def call(*args, **kwargs):
            layers.append(record(*args, **kwargs))
            return original(*args, **kwargs)

        setattr(backend, name, call)

    recording("conv2d_backward", lambda dy, x, w, stride, padding, dilation, groups, need_input_grad=True, **_:
              _conv_products(x.shape, w.shape, stride, padding, dilation, groups, need_input_grad))
    recording("conv2d_relu_maxpool2d_backward",
              lambda dy, saved, x, w, stride, padding, dilation, groups, *pool, need_input_grad=True, **_:
              _conv_products(x.shape, w.shape, stride, padding, dilation, groups, need_input_grad))
    recording("linear_backward", lambda dy, x, w, need_input_grad=True, **_:
              _linear_products(x.shape, w.shape, need_input_grad))
    try:
        _training_step(model, optimizer, x, y)
    finally:
        for name in patched:
            delattr(backend, name)  # back to the class's methods
    return layers


def _training_step(model, optimizer, x, y) -> None:
    optimizer.zero_grad()
    gpucnn.CrossEntropyLoss()(model(x), y).backward()
    optimizer.step()


class _HotProduct:
    """One product's operands for a single column chunk, allocated once, so that each timed call
    finds them in cache; the whole product's time is the chunk's times the number of chunks."""

    def __init__(self, product: Product, chunk_bytes: int, rng: np.random.Generator) -> None:
        g, rows, inner, columns = product.groups, product.rows, product.inner, product.columns
        if product.kind == "weight grad":  # the long axis is the inner one: chunk it
            chunk = min(inner, max(1, chunk_bytes // (4 * max(rows, columns))))
            self.a = rng.standard_normal((g, rows, chunk), dtype=np.float32)
            self.b = rng.standard_normal((g, chunk, columns), dtype=np.float32)
            self.chunks = inner / chunk
        else:
            chunk = min(columns, max(1, chunk_bytes // (4 * max(rows, inner))))
            self.a = rng.standard_normal((g, rows, inner), dtype=np.float32)
            self.b = rng.standard_normal((g, inner, chunk), dtype=np.float32)
            self.chunks = columns / chunk
        self.out = np.empty((g, self.a.shape[1], self.b.shape[2]), dtype=np.float32)

    def seconds(self, repeats: int = 5) -> float:
        np.matmul(self.a, self.b, out=self.out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(self.a, self.b, out=self.out)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * self.chunks


def recorded_for(name: str, batch: int) -> list[list[Product]]:
    """The products of one training step of bench_cpu's ``name`` model at ``batch``."""
    rng = np.random.default_rng(0)
    gpucnn.manual_seed(0)
    x = rng.standard_normal((batch, *bench_cpu.MODELS[name][0])).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = bench_cpu.gpucnn_model(name)
    return recorded_products(model, bench_cpu.gpucnn_optimizer(name, model.parameters()), x, y)


def measure(name: str, batch: int, rounds: int, chunk_bytes: int, threads: int) -> dict:
    """Medians over rounds of gpucnn's step, the products alone and PyTorch's step, in ms. The two
    steps run in fresh processes (bench_cpu's workers), the products here, in turns: PyTorch's
    OpenMP threads keep spinning after a step and would take a core from the products timed next."""
    layers = recorded_for(name, batch)
    products = [product for layer in layers for product in layer]
    rng = np.random.default_rng(1)
    hot = [_HotProduct(product, chunk_bytes, rng) for product in products]
    worker_args = argparse.Namespace(no_malloc_env=False, threads=threads, steps=40, baseline=None)
    case = f"train b{batch}"
    times: dict[str, list[float]] = {"gpucnn": [], "products": [], "torch": []}
    per_product: list[list[float]] = [[] for _ in products]
    for _ in range(rounds):
        times["gpucnn"].append(bench_cpu.run_worker("gpucnn", name, case, worker_args)[0])
        seconds = [item.seconds() for item in hot]
        for bucket, value in zip(per_product, seconds):
            bucket.append(value * 1e3)
        times["products"].append(sum(seconds) * 1e3)
        times["torch"].append(bench_cpu.run_worker("torch", name, case, worker_args)[0])
    result = {key: statistics.median(values) for key, values in times.items()}
    result["gflop"] = sum(product.flops for product in products) / 1e9
    medians = iter([statistics.median(bucket) for bucket in per_product])
    per_layer = [(layer[0].layer, [next(medians) for _ in layer]) for layer in layers]
    result["per_layer"] = per_layer[::-1]  # first layer first
    return result


def report(results: dict, rounds: int, chunk_mib: float) -> str:
    lines = [f"# The im2col + BLAS floor ({datetime.date.today().isoformat()}, commit {bench_cpu.short_commit()})", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}, "
             f"torch {importlib.metadata.version('torch')}; {rounds} rounds, each running the two steps in fresh "
             f"processes (bench_cpu.py's workers) and the products here between them; products timed over "
             f"{chunk_mib:g} MiB column chunks with hot operands; "
             f"{bench_cpu._env_words(bench_cpu.MALLOC_ENV)}.", "",
             "| model | training step | gpucnn | products alone | PyTorch | products / PyTorch | room | "
             "gpucnn outside products |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, batch), r in results.items():
        lines.append(f"| {name} | batch {batch} | {r['gpucnn']:.1f} ms | {r['products']:.1f} ms "
                     f"({r['gflop']:.2f} GFLOP, {r['gflop'] / r['products'] * 1e3:.0f} GFLOP/s) | "
                     f"{r['torch']:.1f} ms | "
                     f"{r['products'] / r['torch']:.2f} | {r['torch'] - r['products']:.1f} ms | "
                     f"{r['gpucnn'] - r['products']:.1f} ms |")
    lines += ["", "room: PyTorch's step less the products, what a step made of these products has left for its "
              "column copies, col2im, layouts, BatchNorm, ReLU, pooling and optimizer.", "",
              "Per layer, largest batch of each model: forward / weight-gradient / input-gradient products (ms):",
              ""]
    largest: dict[str, tuple[int, dict]] = {}
    for (name, batch), r in results.items():
        if name not in largest or batch > largest[name][0]:
            largest[name] = (batch, r)
    for name, (batch, r) in largest.items():
        lines.append(f"- {name}, batch {batch}: " + "; ".join(
            f"{layer} {' / '.join(f'{ms:.2f}' for ms in times)}" for layer, times in r["per_layer"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(bench_cpu.MODELS))
    parser.add_argument("--batches", default=",".join(map(str, bench_cpu.TRAIN_BATCHES)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-mib", type=float, default=4.0,
                        help="column chunk of a timed product (the backend's flat_chunk_bytes)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS's and PyTorch's threads, as in bench_cpu.py")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    models = [name for name in args.models.split(",") if name]
    unknown = [name for name in models if name not in bench_cpu.MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected some of {list(bench_cpu.MODELS)}")
    wanted = {**bench_cpu.MALLOC_ENV, "OPENBLAS_NUM_THREADS": str(args.threads)}
    if any(os.environ.get(key) != value for key, value in wanted.items()):
        # glibc and OpenBLAS read these at start-up only: run again with them, as bench_cpu's workers do
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **wanted})
    gpucnn.set_backend("numpy")
    results = {}
    for name in models:
        for batch in (int(b) for b in args.batches.split(",") if b):
            results[(name, batch)] = measure(name, batch, args.rounds, int(args.chunk_mib * (1 << 20)),
                                             args.threads)
            print(f"{name} b{batch}: " + ", ".join(
                f"{key} {value:.1f}" for key, value in results[(name, batch)].items() if key != "per_layer"),
                flush=True)
    text = report(results, args.rounds, args.chunk_mib)
    print(text)
    if args.out:
        from gpucnn.files import write_atomically

        write_atomically(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
