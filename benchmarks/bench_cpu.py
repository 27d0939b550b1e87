"""gpucnn's NumPy backend against PyTorch on the CPU: LeNet-5 training steps and inference.

Model (both frameworks): conv 1->6 5x5 pad 2, ReLU, maxpool 2, conv 6->16 5x5, ReLU, maxpool 2,
linear 400-120-84-10; SGD with momentum; float32. Measured: one forward + backward + update at
batch 64, 128 and 256, and inference (forward only) at batch 1024.

Each framework runs in its own processes (``--processes`` of each, alternating); each process
reports the median of its timed steps, and the table shows the median of those medians and the
ratio gpucnn / PyTorch, and the range of the ratios of each round's two processes (run back to
back, so they share the machine's state). glibc's allocator settings (which move PyTorch between
two speeds) and the thread count are fixed for both and written into the report.

    python benchmarks/bench_cpu.py [--processes 5] [--steps 40] [--threads 2] [--out FILE.md]
    python benchmarks/bench_cpu.py --baseline ../old-checkout   # also time that checkout's gpucnn, interleaved

``--baseline DIR`` runs DIR's own ``benchmarks/bench_cpu.py`` gpucnn worker (its code, its API) as a
third framework in every round, so a change is compared with the code before it in one run.

PyTorch is needed only here: pip install torch==2.13.0 (the CPU build).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
              "MALLOC_TOP_PAD_": "268435456"}
TRAIN_BATCHES = (64, 128, 256)
INFER_BATCH = 1024


def _timed(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def worker_gpucnn(steps: int, warmup: int) -> dict[str, float]:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpucnn

    gpucnn.set_backend("numpy")
    rng = np.random.default_rng(0)
    model = gpucnn.LeNet5(rng=rng)
    opt = gpucnn.optim.SGD(model, lr=0.01, momentum=0.9)
    loss_fn = gpucnn.CrossEntropyLoss()
    results = {}
    for batch in TRAIN_BATCHES:
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, batch)

        def step(x=x, y=y):
            opt.zero_grad()
            loss_fn(model(x), y).backward()  # like PyTorch: no gradient for the images
            opt.step()

        results[f"train b{batch}"] = _timed(step, steps, warmup)
    x = rng.standard_normal((INFER_BATCH, 1, 28, 28)).astype(np.float32)
    model.eval()

    def infer():
        with gpucnn.no_grad():
            model(x)

    results[f"infer b{INFER_BATCH}"] = _timed(infer, max(5, steps // 4), 2)
    return results


def worker_torch(steps: int, warmup: int, threads: int) -> dict[str, float]:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                          nn.Linear(84, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    results = {}
    for batch in TRAIN_BATCHES:
        x = torch.randn(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))

        def step(x=x, y=y):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        results[f"train b{batch}"] = _timed(step, steps, warmup)
    x = torch.randn(INFER_BATCH, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        results[f"infer b{INFER_BATCH}"] = _timed(lambda: model(x), max(5, steps // 4), 2)
    return results


def run_worker(framework: str, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ)
    if not args.no_malloc_env:
        env.update(MALLOC_ENV)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    script, worker = __file__, framework
    if framework == "baseline":
        script, worker = str(Path(args.baseline) / "benchmarks" / "bench_cpu.py"), "gpucnn"
    command = [sys.executable, script, "--worker", worker, "--steps", str(args.steps), "--threads",
               str(args.threads)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-malloc-env", action="store_true", help="leave glibc's allocator at its defaults")
    parser.add_argument("--out", default=None, help="also write the table as markdown here")
    parser.add_argument("--baseline", default=None, help="another gpucnn checkout to time in the same rounds")
    parser.add_argument("--worker", choices=["gpucnn", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "gpucnn":
        print(json.dumps(worker_gpucnn(args.steps, 5)))
        return 0
    if args.worker == "torch":
        print(json.dumps(worker_torch(args.steps, 5, args.threads)))
        return 0

    frameworks = ("gpucnn", "torch") + (("baseline",) if args.baseline else ())
    per_process: dict[str, dict[str, list[float]]] = {framework: {} for framework in frameworks}
    for i in range(args.processes):
        for framework in frameworks:
            for case, ms in run_worker(framework, args).items():
                per_process[framework].setdefault(case, []).append(ms)
        print(f"process round {i + 1}/{args.processes} done", file=sys.stderr)

    import numpy
    import torch

    malloc = "defaults" if args.no_malloc_env else " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
    header = (f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} threads, numpy {numpy.__version__}, torch {torch.__version__}, glibc malloc: {malloc}; "
              f"median of {args.processes} per-process medians of {args.steps} steps")
    if args.baseline:
        header += f"; baseline: {args.baseline}"
    lines = [header, "", "| case | gpucnn numpy ms | PyTorch CPU ms | gpucnn / PyTorch | per-round ratios |"
             + (" baseline ms | gpucnn / baseline | per-round ratios |" if args.baseline else ""),
             "|---|---|---|---|---|" + ("---|---|---|" if args.baseline else "")]
    for case in per_process["gpucnn"]:
        ours = statistics.median(per_process["gpucnn"][case])
        theirs = statistics.median(per_process["torch"][case])
        # each round ran one process of each back to back: the spread of their ratios shows how
        # far this machine's drifts move the comparison
        rounds = [a / b for a, b in zip(per_process["gpucnn"][case], per_process["torch"][case])]
        row = f"| {case} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x | {min(rounds):.2f}-{max(rounds):.2f}x |"
        if args.baseline:
            before = statistics.median(per_process["baseline"][case])
            rounds = [a / b for a, b in zip(per_process["gpucnn"][case], per_process["baseline"][case])]
            row += f" {before:.2f} | {ours / before:.2f}x | {min(rounds):.2f}-{max(rounds):.2f}x |"
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(f"# CPU benchmark: LeNet-5, gpucnn numpy backend vs PyTorch\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
