"""One-call GPU report: tests, kernel benchmarks, time to 99.0% and launches/syncs per step, in one Markdown file.

    python benchmarks/gpu_report.py --out benchmarks/results/            # on a GPU machine
    python benchmarks/gpu_report.py --dry-run --out /tmp/report/         # the same plumbing on cuda-sim

On a GPU it runs: the whole test suite with GPUCNN_BACKEND=cuda; benchmarks/bench_kernels.py (each
kernel against PyTorch + cuDNN, TF32 off); the MNIST recipe of examples/train_mnist.py (LeNet-5, SGD
Nesterov lr 0.05 with cosine decay, weight decay 5e-4, batch 128, random shifts of 2 pixels) until
the test accuracy first reaches 99.0%, in gpucnn eager, gpucnn with CUDA graphs, PyTorch eager and
PyTorch with CUDA graphs; the speed-run recipe where examples/train_mnist.py has one; and the
launches, device->host copies and syncs of one training step. Warm-up (kernel compilation, the
first launches, graph capture) is timed apart from the training. A section whose prerequisite is
missing says "not available in this version: <why>" instead of a number.

The file is named ``gpu-<device>-<date>.md`` (``dryrun-cuda-sim-<date>.md`` with ``--dry-run``: a
small test subset, cuda-sim on a 512-image subset for one epoch, PyTorch on the CPU, no accuracy
target); tests/test_gpu_report.py runs the dry run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import io
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gpucnn  # noqa: E402
from gpucnn import optim, training  # noqa: E402
from gpucnn.datasets import MNIST, DatasetNotFoundError, load_mnist, normalize  # noqa: E402
from gpucnn.training import Trainer  # noqa: E402

NOT_AVAILABLE = "not available in this version"
SKIPPED = "skipped"


@dataclass
class Recipe:
    """examples/train_mnist.py's defaults (the MNIST recipe the report times)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: int = 2
    seed: int = 0
    target: float | None = 0.99  # stop once the test accuracy reaches it; None: run all epochs


@dataclass
class Config:
    dry_run: bool
    backend: str
    data: MNIST
    data_note: str
    recipe: Recipe
    out: Path
    timeout: int
    command: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One training run: per-epoch train seconds, eval seconds, loss and accuracy; warm-up apart."""

    name: str
    warmup_s: float
    train_s: list[float] = field(default_factory=list)
    eval_s: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    note: str = ""


# ------------------------------------------------------------------------------------------ helpers
def _run(command: list[str], timeout: int, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - started
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n(timed out after {timeout} s)", time.perf_counter() - started


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _module_version(name: str) -> str:
    try:
        module = __import__(name)
    except Exception as exc:  # noqa: BLE001 - a broken install is a line in the report, not a crash
        return f"not importable ({type(exc).__name__})"
    return getattr(module, "__version__", "unknown")


def _torch() -> Any:
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    return torch


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _fence(text: str, lines: int = 30) -> str:
    tail = "\n".join(text.strip().splitlines()[-lines:])
    return f"```\n{tail}\n```\n"


def device_info(dry_run: bool) -> dict[str, str]:
    info = {"device": "cuda-sim (the CUDA kernels compiled for the CPU)" if dry_run else "unknown",
            "driver": "none (dry run)" if dry_run else "unknown", "CUDA": "none (dry run)" if dry_run else "unknown",
            "CuPy": _module_version("cupy"), "PyTorch": _module_version("torch"),
            "NumPy": np.__version__, "Python": platform.python_version(), "gpucnn": gpucnn.__version__,
            "host": f"{platform.machine()}, {os.cpu_count()} cores"}
    if not dry_run:
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            info["device"] = f"{name} ({props['multiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.0f} GiB)"
            driver, runtime = cupy.cuda.runtime.driverGetVersion(), cupy.cuda.runtime.runtimeGetVersion()
            info["driver"] = f"CUDA driver API {driver // 1000}.{driver % 1000 // 10}"
            info["CUDA"] = f"runtime {runtime // 1000}.{runtime % 1000 // 10}"
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            if smi.returncode == 0 and smi.stdout.strip():
                info["driver"] = f"{smi.stdout.strip().splitlines()[0]} ({info['driver']})"
        except Exception as exc:  # noqa: BLE001
            info["device"] = f"unknown ({type(exc).__name__}: {exc})"
    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    info["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    return info


def report_name(info: dict[str, str], dry_run: bool, today: datetime.date) -> str:
    if dry_run:
        return f"dryrun-cuda-sim-{today.isoformat()}.md"
    return f"gpu-{_slug(info['device'].split(' (')[0])}-{today.isoformat()}.md"


# ------------------------------------------------------------------------------------------ sections
def section_tests(cfg: Config) -> str:
    if cfg.dry_run:
        files = ["tests/test_host_syncs.py", "tests/test_launches.py"]
        env = {"GPUCNN_BACKEND": "cuda-sim", "GPUCNN_TEST_BACKENDS": "numpy,cuda-sim"}
        what = f"a fast subset on cuda-sim ({', '.join(files)})"
    else:
        files = ["tests"]
        env = {"GPUCNN_BACKEND": "cuda"}
        what = "the whole suite"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    rc, out, seconds = _run(command, cfg.timeout, env)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", out)}
    passed, failed = counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    lines = [f"{what}: `{' '.join(f'{k}={v}' for k, v in env.items())} {shlex.join(command[1:])}`\n",
             "| passed | failed | skipped | exit code | seconds |", "|---|---|---|---|---|",
             f"| {passed} | {failed} | {counts.get('skipped', 0)} | {rc} | {seconds:.1f} |", ""]
    if rc != 0:
        lines.append(_fence(out))
    return "\n".join(lines)


def section_kernels(cfg: Config) -> str:
    if cfg.dry_run:
        return f"{SKIPPED}: bench_kernels.py needs CuPy and PyTorch on a GPU (dry run on cuda-sim)\n"
    torch = _torch()
    if torch is None or not torch.cuda.is_available():
        return f"{SKIPPED}: bench_kernels.py needs PyTorch with CUDA ({_module_version('torch')})\n"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "kernels.md"
        rc, text, seconds = _run([sys.executable, "benchmarks/bench_kernels.py", "--out", str(out)], cfg.timeout)
        if rc != 0 or not out.exists():
            return f"bench_kernels.py failed (exit code {rc}, {seconds:.0f} s):\n\n{_fence(text)}"
        body = out.read_text().replace("# Kernel benchmark\n", "", 1).strip()
    return f"`python benchmarks/bench_kernels.py` ({seconds:.0f} s):\n\n{body}\n"


def _gpucnn_run(cfg: Config, name: str, options: dict[str, Any]) -> Run:
    """The recipe through ``Trainer`` on cfg.backend, epoch by epoch, stopping at the target."""
    data, recipe = cfg.data, cfg.recipe
    backend = gpucnn.get_backend(cfg.backend)

    def make(epochs: int) -> tuple[Trainer, Any]:
        gpucnn.manual_seed(recipe.seed)
        with gpucnn.use_backend(cfg.backend):
            model = gpucnn.LeNet5(rng=np.random.default_rng(recipe.seed))
        opt = optim.SGD(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                        nesterov=recipe.momentum > 0)
        trainer = Trainer(model, opt, optim.CosineLR(opt, total=epochs), batch_size=recipe.batch_size,
                          seed=recipe.seed, max_shift=recipe.shift, progress=False, prepare=normalize,
                          log=lambda line: None, **options)
        return trainer, model

    # warm-up: a throwaway model, a few steps and an evaluation, so every kernel is compiled and launched once
    started = time.perf_counter()
    warm, _ = make(1)
    count = min(len(data.train_images), 4 * recipe.batch_size)
    warm.fit(data.train_images[:count], data.train_labels[:count], data.test_images[:256], data.test_labels[:256], 1)
    backend.synchronize()
    run = Run(name, time.perf_counter() - started)

    trainer, _ = make(recipe.epochs)
    images = len(data.train_images)
    for epoch in range(1, recipe.epochs + 1):
        stats = trainer.fit(data.train_images, data.train_labels, data.test_images, data.test_labels, epoch)[-1]
        train_s = images / stats.images_per_second
        run.train_s.append(train_s)
        run.eval_s.append(max(stats.seconds - train_s, 0.0))
        run.train_loss.append(stats.train_loss)
        run.test_acc.append(stats.test_accuracy)
        if recipe.target is not None and stats.test_accuracy >= recipe.target:
            break
    return run


def section_gpucnn_eager(cfg: Config) -> str:
    return _run_table(cfg, _gpucnn_run(cfg, "gpucnn eager", {}))


def section_gpucnn_graph(cfg: Config) -> str:
    if "graph" not in inspect.signature(Trainer).parameters:
        return f"{NOT_AVAILABLE}: Trainer has no graph= option (CUDA-graph capture of a training step)\n"
    # the dry run captures and replays on cuda-sim, whose device implements the same capture API
    run = _gpucnn_run(cfg, "gpucnn CUDA graphs", {"graph": True})
    run.note = ("each full batch one graph replay, the last partial batch eager; the timed run captures its own "
                "graph in its first epoch (one eager step, then the capture)")
    return _run_table(cfg, run)


def _torch_lenet5(torch: Any) -> Any:
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                          nn.Linear(84, 10))
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:  # gpucnn's LeNet5: He-normal, Glorot for the output layer, zero biases
        if layer is layers[-1]:
            nn.init.xavier_normal_(layer.weight)
        else:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    return model


def _torch_run(cfg: Config, torch: Any, device: str, graphs: bool) -> Run:
    """The same recipe in PyTorch: data on the device, shifts on the device, the loss summed there.
    With ``graphs``, each step (gather, shift, forward, backward, SGD) is one CUDA-graph replay,
    captured again each epoch for the epoch's learning rate (capture time counts as warm-up); the
    last partial batch is dropped there (a graph has fixed shapes)."""
    data, recipe = cfg.data, cfg.recipe
    functional = torch.nn.functional
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(recipe.seed)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started = time.perf_counter()
    x_train = torch.from_numpy(normalize(data.train_images)).to(device)
    y_train = torch.from_numpy(data.train_labels).to(device)
    x_test = torch.from_numpy(normalize(data.test_images)).to(device)
    y_test = torch.from_numpy(data.test_labels).to(device)
    background = float(x_train.min())
    model = _torch_lenet5(torch).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0,
                          weight_decay=recipe.weight_decay)
    n, batch, s = len(x_train), recipe.batch_size, recipe.shift
    total = torch.zeros((), dtype=torch.float64, device=device)
    index = torch.zeros(batch, dtype=torch.long, device=device)
    h, w = x_train.shape[2:]
    arange_h, arange_w = torch.arange(h, device=device), torch.arange(w, device=device)

    def shift(x: Any) -> Any:
        if s <= 0:
            return x
        m = len(x)
        padded = functional.pad(x, (s, s, s, s), value=background)
        offsets = torch.randint(0, 2 * s + 1, (m, 2), device=device)
        rows = arange_h[None, :] + offsets[:, :1]
        cols = arange_w[None, :] + offsets[:, 1:]
        return padded[torch.arange(m, device=device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]

    def step(idx: Any) -> None:
        opt.zero_grad(set_to_none=not graphs)
        x, y = shift(x_train[idx]), y_train[idx]
        loss = functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        total.add_(loss.detach().double() * len(idx))

    def evaluate() -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad():
            for start in range(0, len(x_test), 1000):
                correct += (model(x_test[start:start + 1000]).argmax(1) == y_test[start:start + 1000]).sum()
        model.train()
        return int(correct) / len(x_test)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    if graphs:  # warm-up on a side stream, as CUDA-graph capture wants; then the weights are put back
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                index.copy_(torch.randint(0, n, (batch,), device=device))
                step(index)
        torch.cuda.current_stream().wait_stream(side)
    else:
        for _ in range(3):
            step(torch.randint(0, n, (batch,), device=device))
        evaluate()
    synchronize()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])
        for st in opt.state.values():  # a zero buffer gives SGD's first step, as no buffer would
            if st.get("momentum_buffer") is not None:
                st["momentum_buffer"].zero_()
    run = Run(f"PyTorch {'CUDA graphs' if graphs else 'eager'} ({device})", time.perf_counter() - started,
              note="last partial batch dropped (fixed shapes)" if graphs else "")

    steps = n // batch if graphs else math.ceil(n / batch)
    for epoch in range(recipe.epochs):
        lr = recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        graph = None
        if graphs:
            capture = time.perf_counter()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(index)
            synchronize()
            run.warmup_s += time.perf_counter() - capture
        total.zero_()
        synchronize()
        began = time.perf_counter()
        order = torch.randperm(n, device=device)
        for i in range(steps):
            part = order[i * batch:(i + 1) * batch]
            if graph is not None:
                index.copy_(part)
                graph.replay()
            else:
                step(part)
        synchronize()
        run.train_s.append(time.perf_counter() - began)
        run.train_loss.append(float(total) / (steps * batch if graphs else n))
        began = time.perf_counter()
        run.test_acc.append(evaluate())
        run.eval_s.append(time.perf_counter() - began)
        if recipe.target is not None and run.test_acc[-1] >= recipe.target:
            break
    return run


def section_torch_eager(cfg: Config) -> str:
    torch = _torch()
    if torch is None:
        return f"{SKIPPED}: PyTorch is not importable\n"
    device = "cuda" if torch.cuda.is_available() and not cfg.dry_run else "cpu"
    if device == "cpu" and not cfg.dry_run:
        return f"{SKIPPED}: PyTorch has no CUDA device ({torch.__version__})\n"
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return _run_table(cfg, _torch_run(cfg, torch, device, graphs=False))


def section_torch_graphs(cfg: Config) -> str:
    torch = _torch()
    if torch is None:
        return f"{SKIPPED}: PyTorch is not importable\n"
    if cfg.dry_run or not torch.cuda.is_available():
        return f"{SKIPPED}: torch.cuda.graphs needs a CUDA GPU" + (" (dry run)" if cfg.dry_run else "") + "\n"
    return _run_table(cfg, _torch_run(cfg, torch, "cuda", graphs=True))


def section_speedrun(cfg: Config) -> str:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_mnist
    except Exception as exc:  # noqa: BLE001
        return f"{NOT_AVAILABLE}: examples/train_mnist.py does not import ({type(exc).__name__}: {exc})\n"
    finally:
        sys.path.pop(0)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's complaint about an unknown option
            has_speedrun = "speedrun" in vars(train_mnist.parse_args(["--speedrun"]))
    except SystemExit:
        has_speedrun = False
    if not has_speedrun:
        return (f"{NOT_AVAILABLE}: examples/train_mnist.py has no --speedrun recipe; the sections above time "
                f"its default recipe\n")
    command = [sys.executable, "examples/train_mnist.py", "--speedrun", "--no-progress"]
    if cfg.dry_run:
        command += ["--backend", "cuda-sim", "--limit", "512", "--test-limit", "256", "--epochs", "1"]
    rc, out, seconds = _run(command, cfg.timeout)
    return f"`{shlex.join(command[1:])}`: exit code {rc}, {seconds:.1f} s\n\n{_fence(out, 20)}"


def step_counts(cfg: Config, steps: int) -> dict[str, float]:
    """Mean our-kernel launches, device->host copies and syncs per Trainer step (after the first)."""
    backend = gpucnn.get_backend(cfg.backend)
    marks: list[tuple[int, int, int]] = []

    def counts() -> tuple[int, int, int]:
        return backend.launch_count, backend.host_transfer_count, backend.sync_count

    class Counting(training.BatchIterator):
        def __iter__(self):
            for item in super().__iter__():
                marks.append(counts())
                yield item
            marks.append(counts())

    recipe = cfg.recipe
    count = min(len(cfg.data.train_images), (steps + 1) * recipe.batch_size)
    with gpucnn.use_backend(cfg.backend):
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    opt = optim.SGD(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True)
    trainer = Trainer(model, opt, batch_size=recipe.batch_size, max_shift=recipe.shift, progress=False,
                      prepare=normalize, log=lambda line: None)
    original, training.BatchIterator = training.BatchIterator, Counting
    try:
        trainer.fit(cfg.data.train_images[:count], cfg.data.train_labels[:count], cfg.data.test_images[:100],
                    cfg.data.test_labels[:100], 1)
    finally:
        training.BatchIterator = original
    per_step = np.diff(np.array(marks), axis=0)[1:]  # the first step may create optimizer state
    mean = per_step.mean(axis=0) if len(per_step) else np.full(3, np.nan)
    return {"steps": len(per_step), "launches": float(mean[0]), "transfers": float(mean[1]), "syncs": float(mean[2])}


def section_launches(cfg: Config) -> str:
    c = step_counts(cfg, 4 if cfg.dry_run else 20)
    return ("Counted by the backend over Trainer steps (LeNet-5, the recipe above); launches are gpucnn's own "
            "kernels (CuPy's elementwise/reduction kernels around them are not counted here; tests/test_launches.py "
            "lists them).\n\n"
            "| backend | steps | launches per step | device->host copies per step | syncs per step |\n"
            "|---|---|---|---|---|\n"
            f"| {cfg.backend} | {c['steps']} | {c['launches']:.1f} | {c['transfers']:.1f} | {c['syncs']:.1f} |\n")


def _run_table(cfg: Config, run: Run) -> str:
    recipe = cfg.recipe
    images = len(cfg.data.train_images)
    lines = [f"{run.name}: LeNet-5, SGD Nesterov lr {recipe.lr} cosine over {recipe.epochs} epochs, weight decay "
             f"{recipe.weight_decay}, batch {recipe.batch_size}, shifts {recipe.shift}; {images:,} training / "
             f"{len(cfg.data.test_images):,} test images" + (f"; {run.note}" if run.note else "") + "\n",
             "| epoch | train s | eval s | img/s | train loss | test acc % |", "|---|---|---|---|---|---|"]
    for i, (t, e, loss, acc) in enumerate(zip(run.train_s, run.eval_s, run.train_loss, run.test_acc), 1):
        lines.append(f"| {i} | {t:.3f} | {e:.3f} | {images / t:,.0f} | {loss:.4f} | {100 * acc:.2f} |")
    lines.append("")
    lines.append(f"- warm-up (compilation, first launches{', graph capture' if 'graph' in run.name else ''}): "
                 f"{run.warmup_s:.3f} s")
    lines.append(f"- time per epoch (median, training only): {statistics.median(run.train_s):.3f} s")
    if recipe.target is None:
        lines.append("- time to target: no accuracy target (dry run)")
    else:
        reached = next((i for i, acc in enumerate(run.test_acc) if acc >= recipe.target), None)
        if reached is None:
            lines.append(f"- time to {100 * recipe.target:.1f}%: not reached in {len(run.test_acc)} epochs "
                         f"(best {100 * max(run.test_acc):.2f}%)")
        else:
            lines.append(f"- time to {100 * recipe.target:.1f}%: {sum(run.train_s[:reached + 1]):.3f} s of training "
                         f"({reached + 1} epochs; {sum(run.eval_s[:reached + 1]):.3f} s of evaluation besides)")
    return "\n".join(lines) + "\n"


SECTIONS: list[tuple[str, Callable[[Config], str]]] = [
    ("Test suite", section_tests),
    ("Kernel benchmarks (bench_kernels.py)", section_kernels),
    ("Training: gpucnn eager", section_gpucnn_eager),
    ("Training: gpucnn CUDA graphs", section_gpucnn_graph),
    ("Training: PyTorch eager", section_torch_eager),
    ("Training: PyTorch CUDA graphs", section_torch_graphs),
    ("Speed-run recipe", section_speedrun),
    ("Launches and syncs per step", section_launches),
]


def load_data(args: argparse.Namespace) -> tuple[MNIST, str]:
    try:
        data = load_mnist(args.data_dir, download=not args.dry_run)
        note = "MNIST"
    except DatasetNotFoundError:
        if not args.dry_run:
            raise
        rng = np.random.default_rng(0)  # the plumbing only: random images
        data = MNIST(rng.integers(0, 256, (512, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 512),
                     rng.integers(0, 256, (256, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 256))
        note = "random images (MNIST not found)"
    if args.dry_run:
        data = MNIST(data.train_images[:512], data.train_labels[:512], data.test_images[:256], data.test_labels[:256])
        note += ", first 512 training / 256 test images"
    return data, note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/", help="folder the report is written into")
    p.add_argument("--dry-run", action="store_true", help="the same plumbing on cuda-sim, small and fast (no GPU)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the recipe (default 10; dry run 1)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed to the test suite and bench_kernels")
    args = p.parse_args(argv)
    command = shlex.join(["python", "benchmarks/gpu_report.py", *(sys.argv[1:] if argv is None else argv)])
    if not args.dry_run and not gpucnn.cuda_is_available():
        print("gpu_report: no usable GPU (CuPy and a CUDA device are needed); --dry-run runs the plumbing on "
              "cuda-sim", file=sys.stderr)
        return 2
    data, note = load_data(args)
    recipe = Recipe(epochs=args.epochs or (1 if args.dry_run else 10), target=None if args.dry_run else 0.99)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(args.dry_run, "cuda-sim" if args.dry_run else "cuda", data, note, recipe, out, args.timeout, command)
    today = datetime.date.today()
    info = device_info(args.dry_run)
    info["command"] = f"`{command}`"
    info["data"] = note
    title = "dry run on cuda-sim" if args.dry_run else info["device"]
    parts = [f"# gpucnn GPU report: {title}, {today.isoformat()}\n", "| | |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in info.items()], ""]
    for heading, section in SECTIONS:
        started = time.perf_counter()
        print(f"gpu_report: {heading} ...", file=sys.stderr, flush=True)
        try:
            body = section(cfg)
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
            body = f"failed: {type(exc).__name__}: {exc}\n"
        parts.append(f"## {heading}\n\n{body}\n_section took {time.perf_counter() - started:.1f} s_\n")
    path = out / report_name(info, args.dry_run, today)
    path.write_text("\n".join(parts))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
