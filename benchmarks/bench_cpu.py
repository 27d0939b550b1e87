"""gpucnn's NumPy backend against PyTorch on the CPU: three models, training steps and inference.

Models (the same in both frameworks, float32):
- ``lenet5``: conv 1->6 5x5 pad 2, ReLU, maxpool 2, conv 6->16 5x5, ReLU, maxpool 2, 400-120-84-10;
  SGD with momentum; 28x28 inputs.
- ``mnist-net``: PyTorch's examples/mnist network, Conv2d(1,32,3) ReLU Conv2d(32,64,3) ReLU
  MaxPool2d(2) Dropout Flatten Linear(9216,128) ReLU Dropout Linear(128,10); Adam; 28x28.
- ``resnet8``: gpucnn.ResNet(depth=8, width=16) on 32x32x3 (3 stages of basic blocks at 16/32/64
  channels, BatchNorm, global average pooling); SGD with momentum.
Cases: one forward + backward + update at batch 64, 128 and 256, and inference (forward only, no
graph) at batch 1024 (256 for the ResNet).

Each (framework, model, case) runs in its own process, ``--processes`` rounds of them alternating,
so each process's peak resident memory belongs to one case. A process reports the median of its
timed steps; the table shows the median of those medians, the ratio gpucnn / PyTorch, the range of
the ratios of each round's two processes (run back to back, so they share the machine's state),
and each framework's peak resident memory (MiB, median over rounds). glibc's allocator settings
(which move PyTorch between two speeds) and the thread count are fixed for both.

    python benchmarks/bench_cpu.py [--models lenet5,mnist-net,resnet8] [--processes 3] [--out FILE.md]
    python benchmarks/bench_cpu.py --models lenet5 --baseline ../old-checkout
    python benchmarks/bench_cpu.py --gpucnn-threads --out FILE.md

``--gpucnn-threads`` also times gpucnn with the NumPy backend's opt-in two-thread halves in every round
(``GPUCNN_CPU_THREADS=2``; needs threadpoolctl), as three more columns.

``--baseline DIR`` also runs DIR's own ``benchmarks/bench_cpu.py`` gpucnn worker (its code) for every
case in every round, so a change is compared with the code before it in one run. A checkout from
before the model axis has a worker that takes no --model and times LeNet-5 only: then only LeNet-5
gets a baseline.

PyTorch is needed only here: pip install torch==2.13.0 (the CPU build).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
              "MALLOC_TOP_PAD_": "268435456"}
TRAIN_BATCHES = (64, 128, 256)
#: input shape, inference batch, timed training steps (at --steps 40), optimizer
MODELS = {
    "lenet5": ((1, 28, 28), 1024, 40, "sgd"),
    "mnist-net": ((1, 28, 28), 1024, 12, "adam"),
    "resnet8": ((3, 32, 32), 256, 8, "sgd"),
}


def _env_words(env: dict[str, str]) -> str:
    """NAME=value NAME=value ..., as the results print environment settings."""
    return " ".join(f"{k}={v}" for k, v in env.items())


def cases(model: str) -> list[str]:
    return [f"train b{b}" for b in TRAIN_BATCHES] + [f"infer b{MODELS[model][1]}"]


def median_ms(step, steps: int, warmup: int = 0) -> float:
    """The median time of ``steps`` calls of step() in ms, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _steps(model: str, steps: int, case: str) -> int:
    scaled = max(3, steps * MODELS[model][2] // 40)
    return scaled if case.startswith("train") else max(3, scaled // 4)


def _batch(case: str) -> int:
    return int(case.split("b")[-1])


# ---------------------------------------------------------------------------- gpucnn
def gpucnn_model(name: str):
    import gpucnn

    if name == "lenet5":
        return gpucnn.LeNet5(rng=__import__("numpy").random.default_rng(0))
    if name == "mnist-net":
        return gpucnn.Sequential(gpucnn.Conv2d(1, 32, 3), gpucnn.ReLU(), gpucnn.Conv2d(32, 64, 3), gpucnn.ReLU(),
                                 gpucnn.MaxPool2d(2), gpucnn.Dropout(0.25), gpucnn.Flatten(),
                                 gpucnn.Linear(9216, 128), gpucnn.ReLU(), gpucnn.Dropout(0.5), gpucnn.Linear(128, 10))
    return gpucnn.ResNet(depth=8, width=16, in_channels=3)


def gpucnn_optimizer(model_name: str, params):
    """The model's optimizer in these benchmarks: Adam for the mnist net (as PyTorch's example), else SGD
    with momentum."""
    import gpucnn

    if MODELS[model_name][3] == "adam":
        return gpucnn.optim.Adam(params, lr=1e-3)
    return gpucnn.optim.SGD(params, lr=0.01, momentum=0.9)


def worker_gpucnn(model_name: str, case: str, steps: int) -> float:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpucnn

    gpucnn.set_backend("numpy")
    gpucnn.manual_seed(0)
    rng = np.random.default_rng(0)
    model = gpucnn_model(model_name)
    shape, batch = MODELS[model_name][0], _batch(case)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    if case.startswith("infer"):
        model.eval()

        def infer():
            with gpucnn.no_grad():
                model(x)

        return median_ms(infer, _steps(model_name, steps, case), warmup=2)
    opt = gpucnn_optimizer(model_name, model.parameters())
    loss_fn = gpucnn.CrossEntropyLoss()
    y = rng.integers(0, 10, batch)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()  # like PyTorch: no gradient for the images
        opt.step()

    return median_ms(step, _steps(model_name, steps, case), warmup=3)


# ---------------------------------------------------------------------------- PyTorch
def torch_model(name: str):
    from torch import nn

    if name == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, 10))
    if name == "mnist-net":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(128, 10))
    # gpucnn.ResNet(depth=8, width=16, in_channels=3)'s twin, from the package (it imports gpucnn into this
    # process: about 5 MiB more peak memory than PyTorch alone, on ResNet-8's rows only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gpucnn.interop import torch_resnet

    return torch_resnet(depth=8, width=16, in_channels=3)


def worker_torch(model_name: str, case: str, steps: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(model_name)
    shape, batch = MODELS[model_name][0], _batch(case)
    x = torch.randn(batch, *shape)
    if case.startswith("infer"):
        model.eval()
        with torch.no_grad():
            return median_ms(lambda: model(x), _steps(model_name, steps, case), warmup=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if MODELS[model_name][3] == "adam" else \
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return median_ms(step, _steps(model_name, steps, case), warmup=3)


# ---------------------------------------------------------------------------- the driver
def short_commit() -> str:
    """This checkout's short commit hash, or '?' outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "?"
    except OSError:
        return "?"


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if not args.no_malloc_env:
        env.update(MALLOC_ENV)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    return env


#: the gpucnn-threads runs: the NumPy backend's two-thread halves (BLAS on one thread meanwhile)
THREADS_ENV = {"GPUCNN_CPU_THREADS": "2"}


def run_worker(framework: str, model: str, case: str, args: argparse.Namespace) -> tuple[float, float] | None:
    """(median ms, peak resident MiB) of one case in a fresh process; None where a baseline checkout's
    worker cannot run the case (one from before the model axis, for a model other than LeNet-5)."""
    env = _environment(args)
    script = __file__
    if framework == "gpucnn-threads":
        env.update(THREADS_ENV)
        framework = "gpucnn"
    elif framework == "baseline":
        script = str(Path(args.baseline) / "benchmarks" / "bench_cpu.py")
        framework = "gpucnn"
    command = [sys.executable, script, "--worker", framework, "--model", model, "--case", case, "--steps",
               str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0 and script != __file__ and "unrecognized arguments" in out.stderr:
        return _run_pre_model_axis_baseline(script, model, case, args, env)
    out.check_returncode()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["ms"], result["peak_mib"]


def _run_pre_model_axis_baseline(script: str, model: str, case: str, args: argparse.Namespace,
                                 env: dict[str, str]) -> tuple[float, float] | None:
    """A baseline worker from before the model axis: no --model or --case, every LeNet-5 case timed in one
    call and returned as {case: ms}, no peak memory."""
    if model != "lenet5":
        return None
    command = [sys.executable, script, "--worker", "gpucnn", "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])[case], float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps for LeNet-5 (others scaled)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-malloc-env", action="store_true", help="leave glibc's allocator at its defaults")
    parser.add_argument("--out", default=None, help="also write the table as markdown here")
    parser.add_argument("--baseline", default=None, help="another gpucnn checkout to time in the same rounds")
    parser.add_argument("--gpucnn-threads", action="store_true",
                        help="also time gpucnn with " + _env_words(THREADS_ENV))
    parser.add_argument("--worker", choices=["gpucnn", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(MODELS), default="lenet5", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="train b128", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        ms = worker_gpucnn(args.model, args.case, args.steps) if args.worker == "gpucnn" else \
            worker_torch(args.model, args.case, args.steps, args.threads)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps({"ms": ms, "peak_mib": peak}))
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    times: dict[tuple[str, str, str], list[float]] = {}
    peaks: dict[tuple[str, str, str], list[float]] = {}
    frameworks = (("gpucnn", "torch") + (("gpucnn-threads",) if args.gpucnn_threads else ())
                  + (("baseline",) if args.baseline else ()))
    for i in range(args.processes):
        for model in models:
            for case in cases(model):
                for framework in frameworks:
                    result = run_worker(framework, model, case, args)
                    if result is not None:
                        times.setdefault((framework, model, case), []).append(result[0])
                        peaks.setdefault((framework, model, case), []).append(result[1])
        print(f"process round {i + 1}/{args.processes} done", file=sys.stderr)
    table = _table(args, models, times, peaks)
    print(table)
    if args.out:
        Path(args.out).write_text(f"# CPU benchmark: gpucnn numpy backend vs PyTorch\n\n{table}\n")
    return 0


def _ratio_cells(ours: list[float], theirs: list[float]) -> str:
    # each round ran the two processes back to back: the spread of their ratios shows how far this
    # machine's drifts move the comparison
    rounds = [a / b for a, b in zip(ours, theirs)]
    return (f"{statistics.median(ours) / statistics.median(theirs):.2f}x | "
            f"{min(rounds):.2f}-{max(rounds):.2f}x")


def _table(args: argparse.Namespace, models: list[str], times: dict, peaks: dict) -> str:
    import numpy
    import torch

    malloc = "defaults" if args.no_malloc_env else _env_words(MALLOC_ENV)
    commit = short_commit()
    header = (f"{datetime.date.today()}, commit {commit}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, {args.threads} threads, numpy {numpy.__version__}, torch {torch.__version__}, "
              f"glibc malloc: {malloc}; median of {args.processes} per-process medians")
    baseline, threaded = bool(args.baseline), args.gpucnn_threads
    extra = "; threads: " + _env_words(THREADS_ENV) if threaded else ""
    lines = [header + (f"; baseline: {args.baseline}" if baseline else "") + extra, "",
             "| model | case | gpucnn ms | PyTorch ms | gpucnn / PyTorch | per-round ratios | gpucnn peak MiB "
             "| PyTorch peak MiB |" + (" baseline ms | gpucnn / baseline | per-round ratios |" if baseline else "")
             + (" threads ms | threads / PyTorch | per-round ratios | threads peak MiB |" if threaded else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if baseline else "")
             + ("---|---|---|---|" if threaded else "")]
    for model in models:
        for case in cases(model):
            ours, theirs = times[("gpucnn", model, case)], times[("torch", model, case)]
            row = (f"| {model} | {case} | {statistics.median(ours):.2f} | {statistics.median(theirs):.2f} | "
                   f"{_ratio_cells(ours, theirs)} | {statistics.median(peaks[('gpucnn', model, case)]):.0f} | "
                   f"{statistics.median(peaks[('torch', model, case)]):.0f} |")
            before = times.get(("baseline", model, case))
            if baseline and before:
                row += f" {statistics.median(before):.2f} | {_ratio_cells(ours, before)} |"
            if threaded:
                with_threads = times[("gpucnn-threads", model, case)]
                row += (f" {statistics.median(with_threads):.2f} | {_ratio_cells(with_threads, theirs)} | "
                        f"{statistics.median(peaks[('gpucnn-threads', model, case)]):.0f} |")
            lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
