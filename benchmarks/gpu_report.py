"""One-call GPU report: tests, kernel benchmarks, time to 99.0% and launches/syncs per step, in one Markdown file.

    python benchmarks/gpu_report.py --out benchmarks/results/            # on a GPU machine
    python benchmarks/gpu_report.py --dry-run --out /tmp/report/         # the same plumbing on cuda-sim

On a GPU it runs: the whole test suite with GPUCNN_BACKEND=cuda; benchmarks/bench_kernels.py (each
kernel against PyTorch + cuDNN, TF32 off); the speed-run recipe of ``examples/train_mnist.py
--speedrun`` (``gpucnn.recipes.SPEEDRUN``, which the example reads too: LeNet-5, SGD Nesterov with weight
decay under OneCycleLR stepped every optimizer step, which also cycles the momentum, label
smoothing, random shifts) until the test accuracy first reaches 99.0%, in gpucnn eager, gpucnn with
CUDA graphs, PyTorch eager and PyTorch with CUDA graphs (a hand-written SGD step that reads each
step's lr and momentum from device tables, so that one capture serves the whole run); the example's
own ``--speedrun`` command line; and the launches, device->host copies and syncs of one training
step, eager and as a graph replay. Warm-up (kernel compilation, the first launches, graph capture)
is timed apart from the training. A section whose prerequisite is missing says "not available in
this version: <why>" instead of a number.

The file is named ``gpu-<device>-<date>.md`` (``dryrun-cuda-sim-<date>.md`` with ``--dry-run``: a
small test subset, cuda-sim on a 512-image subset for one epoch, PyTorch on the CPU with the CUDA-graph
step's code run eagerly, no accuracy target); tests/test_gpu_report.py runs the dry run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
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
sys.path.insert(0, str(REPO / "dev"))  # speedrun_runs (the PyTorch runs), also when this file is loaded by path

from speedrun_runs import Run, torch_run  # noqa: E402

import gpucnn  # noqa: E402
from gpucnn import optim, training  # noqa: E402
from gpucnn.cuda_graph import GraphedStep  # noqa: E402
from gpucnn.datasets import MNIST, DatasetNotFoundError, load_mnist, normalize  # noqa: E402
from gpucnn.files import write_atomically  # noqa: E402
from gpucnn.recipes import SPEEDRUN  # noqa: E402  (the recipe train_mnist.py --speedrun runs)
from gpucnn.training import Trainer  # noqa: E402

NOT_AVAILABLE = "not available in this version"
SKIPPED = "skipped"


@dataclass
class Recipe:
    """examples/train_mnist.py's speed-run recipe (``gpucnn.recipes.SPEEDRUN``), the one the report times."""

    epochs: int
    batch_size: int
    lr: float  # OneCycleLR's peak
    momentum: float  # > 0: Nesterov; OneCycleLR then cycles it 0.95 -> 0.85 -> 0.95
    weight_decay: float
    pct_start: float
    label_smoothing: float
    shift: int
    seed: int = 0
    target: float | None = 0.99  # stop once the test accuracy reaches it; None: run all epochs

    @classmethod
    def speedrun(cls, epochs: int | None = None, target: float | None = 0.99, seed: int = 0) -> Recipe:
        """The recipe of ``train_mnist.py --speedrun``; ``epochs`` overrides its epochs, as --epochs does there."""
        s = SPEEDRUN
        if s.get("optimizer", "sgd") != "sgd" or s.get("schedule") != "onecycle" or not s.get("momentum", 0.9) > 0:
            # the four runs below implement SGD Nesterov + OneCycleLR only: fail rather than time another recipe
            raise ValueError(f"gpu_report: gpucnn.recipes.SPEEDRUN is no longer SGD Nesterov with OneCycleLR "
                             f"({dict(s)}); update benchmarks/gpu_report.py's training runs")
        return cls(epochs=epochs or s["epochs"], batch_size=s["batch_size"], lr=s["lr"], momentum=s["momentum"],
                   weight_decay=s["weight_decay"], pct_start=s["pct_start"], label_smoothing=s["label_smoothing"],
                   shift=s["shift"], seed=seed, target=target)

    def describe(self) -> str:
        return (f"the speed-run recipe (`train_mnist.py --speedrun`): SGD Nesterov, OneCycleLR peak lr {self.lr} "
                f"(pct_start {self.pct_start}, stepped every step, momentum cycled 0.95 -> 0.85 -> 0.95), weight "
                f"decay {self.weight_decay}, batch {self.batch_size}, label smoothing {self.label_smoothing}, "
                f"shifts {self.shift}, {self.epochs} epoch{'s' if self.epochs != 1 else ''}")


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
    test_workers: int = 0  # pytest-xdist processes for the test suite (0: one process)


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
    workers: list[str] = []
    if cfg.test_workers > 0:
        if importlib.util.find_spec("xdist") is None:
            what += f" in one process (--test-workers {cfg.test_workers}: pytest-xdist is not installed)"
        else:
            workers = ["-n", str(cfg.test_workers)]
    command = [sys.executable, "-m", "pytest", "-q", *workers, "-p", "no:cacheprovider", *files]
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


def _recipe_training(cfg: Config, seed: int, total_steps: int) -> tuple[Any, Any, Any]:
    """LeNet-5 on cfg.backend, the recipe's SGD (Nesterov) over it and its OneCycleLR over total_steps."""
    recipe = cfg.recipe
    with gpucnn.use_backend(cfg.backend):
        model = gpucnn.LeNet5(rng=np.random.default_rng(seed))
    opt = optim.SGD(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True)
    schedule = optim.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps, pct_start=recipe.pct_start)
    return model, opt, schedule


def _gpucnn_run(cfg: Config, name: str, options: dict[str, Any]) -> Run:
    """The recipe through ``Trainer`` on cfg.backend, epoch by epoch, stopping at the target."""
    data, recipe = cfg.data, cfg.recipe
    backend = gpucnn.get_backend(cfg.backend)

    def make(epochs: int, images: int) -> tuple[Trainer, Any]:
        gpucnn.manual_seed(recipe.seed)
        # per step, over the run's steps, as train_mnist.py --speedrun counts them (graph mode runs the last
        # partial batch eagerly, so it has as many steps)
        model, opt, schedule = _recipe_training(cfg, recipe.seed, epochs * math.ceil(images / recipe.batch_size))
        trainer = Trainer(model, opt, schedule, batch_size=recipe.batch_size, seed=recipe.seed,
                          max_shift=recipe.shift, progress=False, prepare=normalize, log=lambda line: None,
                          label_smoothing=recipe.label_smoothing, **options)
        return trainer, model

    # warm-up: a throwaway model, a few steps and an evaluation, so every kernel is compiled and launched once
    started = time.perf_counter()
    count = min(len(data.train_images), 4 * recipe.batch_size)
    warm, _ = make(1, count)
    warm.fit(data.train_images[:count], data.train_labels[:count], data.test_images[:256], data.test_labels[:256], 1)
    backend.synchronize()
    run = Run(name, time.perf_counter() - started)

    images = len(data.train_images)
    trainer, _ = make(recipe.epochs, images)
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
    run.note = ("each full batch one graph replay (each step's lr and momentum read from device tables), the last "
                "partial batch eager; the timed run captures its own graph in its first epoch (one eager step, then "
                "the capture)")
    run.warmup_what = "compilation, first launches, a throwaway model's graph capture"
    return _run_table(cfg, run)


def section_torch_eager(cfg: Config) -> str:
    torch = _torch()
    if torch is None:
        return f"{SKIPPED}: PyTorch is not importable\n"
    device = "cuda" if torch.cuda.is_available() and not cfg.dry_run else "cpu"
    if device == "cpu" and not cfg.dry_run:
        return f"{SKIPPED}: PyTorch has no CUDA device ({torch.__version__})\n"
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return _run_table(cfg, torch_run(torch, cfg.data, cfg.recipe, device, graphs=False))


def section_torch_graphs(cfg: Config) -> str:
    torch = _torch()
    if torch is None:
        return f"{SKIPPED}: PyTorch is not importable\n"
    if cfg.dry_run:  # no capture on the CPU, but the step's code (tables, counter, hand-written SGD) runs
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        return _run_table(cfg, torch_run(torch, cfg.data, cfg.recipe, "cpu", graphs=True))
    if not torch.cuda.is_available():
        return f"{SKIPPED}: torch.cuda.graphs needs a CUDA GPU ({torch.__version__})\n"
    return _run_table(cfg, torch_run(torch, cfg.data, cfg.recipe, "cuda", graphs=True))


def section_speedrun(cfg: Config) -> str:
    # the sections above rebuild its recipe from gpucnn.recipes.SPEEDRUN; this runs the example's own command line
    command = [sys.executable, "examples/train_mnist.py", "--speedrun", "--no-progress"]
    if cfg.dry_run:
        command += ["--backend", "cuda-sim", "--limit", "512", "--test-limit", "256", "--epochs", "1"]
    rc, out, seconds = _run(command, cfg.timeout)
    return (f"examples/train_mnist.py's own command line for the recipe timed above, end to end: "
            f"`{shlex.join(command[1:])}`: exit code {rc}, {seconds:.1f} s\n\n{_fence(out, 20)}")


def _counting_data(cfg: Config, images: int) -> tuple[np.ndarray, np.ndarray]:
    """``images`` training images (the set repeated if it is smaller: only the shapes matter to the counts)."""
    take = np.arange(images) % len(cfg.data.train_images)
    return cfg.data.train_images[take], cfg.data.train_labels[take]


def _counters(backend: Any) -> np.ndarray:
    return np.array([backend.launch_count, backend.host_transfer_count, backend.sync_count], dtype=float)


def step_counts(cfg: Config, steps: int) -> dict[str, float]:
    """Mean our-kernel launches, device->host copies and syncs per eager Trainer step (after the first)."""
    backend = gpucnn.get_backend(cfg.backend)
    marks: list[np.ndarray] = []

    class Counting(training.BatchIterator):
        def __iter__(self):
            for item in super().__iter__():
                marks.append(_counters(backend))
                yield item
            marks.append(_counters(backend))

    recipe = cfg.recipe
    images, labels = _counting_data(cfg, (steps + 1) * recipe.batch_size)
    model, opt, schedule = _recipe_training(cfg, 0, steps + 1)
    trainer = Trainer(model, opt, schedule, batch_size=recipe.batch_size, max_shift=recipe.shift, progress=False,
                      prepare=normalize, log=lambda line: None, label_smoothing=recipe.label_smoothing)
    original, training.BatchIterator = training.BatchIterator, Counting
    try:
        trainer.fit(images, labels, cfg.data.test_images[:100], cfg.data.test_labels[:100], 1)
    finally:
        training.BatchIterator = original
    per_step = np.diff(np.array(marks), axis=0)[1:]  # the first step may create optimizer state
    mean = per_step.mean(axis=0) if len(per_step) else np.full(3, np.nan)
    return {"steps": len(per_step), "launches": float(mean[0]), "transfers": float(mean[1]), "syncs": float(mean[2])}


def graph_step_counts(cfg: Config, replays: int) -> dict[str, float]:
    """A ``GraphedStep`` on the recipe's batches: the kernels recorded into the graph (launches across the
    capture step, which runs the step once while recording), and per replayed step the host-side gpucnn
    launches, graph replays, device->host copies and syncs."""
    backend = gpucnn.get_backend(cfg.backend)
    recipe = cfg.recipe
    images, labels = _counting_data(cfg, (replays + 2) * recipe.batch_size)  # warm-up, capture, replays
    model, opt, schedule = _recipe_training(cfg, 0, replays + 2)
    step = GraphedStep(model, opt, normalize(images), labels, recipe.batch_size, max_shift=recipe.shift,
                       label_smoothing=recipe.label_smoothing)
    step.begin_epoch(np.random.default_rng(0), schedule)
    step.step()  # eager: compiles, fills the graph's pool, creates the optimizer state
    before = _counters(backend)
    step.step()  # the capture (then its first replay)
    recorded = (_counters(backend) - before)[0]
    before, replays_before = _counters(backend), step.graph.replays
    for _ in range(replays):
        step.step()
    after = _counters(backend)
    backend.synchronize()  # after the counts: the replays' work done before the next section
    per_step = (after - before) / replays
    return {"steps": replays, "recorded": float(recorded), "launches": float(per_step[0]),
            "replays": (step.graph.replays - replays_before) / replays, "transfers": float(per_step[1]),
            "syncs": float(per_step[2])}


def section_launches(cfg: Config) -> str:
    eager = step_counts(cfg, 4 if cfg.dry_run else 20)
    graph = graph_step_counts(cfg, 2 if cfg.dry_run else 20)
    return ("Counted by the backend over LeNet-5 training steps of the recipe above (batch "
            f"{cfg.recipe.batch_size}, shifts {cfg.recipe.shift}, label smoothing {cfg.recipe.label_smoothing}, "
            "OneCycleLR): eager, `Trainer` steps after the first; graph, `GraphedStep` (gpucnn.cuda_graph) replays "
            "after its eager warm-up step and its capture step. Kernels per step are gpucnn's own, as the host "
            "launches them eagerly or records them into the graph (CuPy's elementwise/reduction kernels around "
            "them are not counted here; tests/test_launches.py lists them); a replayed step launches the whole "
            "recorded graph with one call and goes through the backend for none of them.\n\n"
            "| backend | mode | steps counted | kernels per step | host-side gpucnn launches per step | "
            "graph replays per step | device->host copies per step | syncs per step |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| {cfg.backend} | eager | {eager['steps']} | {eager['launches']:.1f} | {eager['launches']:.1f} | 0 | "
            f"{eager['transfers']:.1f} | {eager['syncs']:.1f} |\n"
            f"| {cfg.backend} | CUDA graph, replayed | {graph['steps']} | {graph['recorded']:.0f} (recorded at the "
            f"capture) | {graph['launches']:.1f} | {graph['replays']:.1f} | {graph['transfers']:.1f} | "
            f"{graph['syncs']:.1f} |\n")


def _run_table(cfg: Config, run: Run) -> str:
    recipe = cfg.recipe
    images = len(cfg.data.train_images)
    lines = [f"{run.name}: LeNet-5, {recipe.describe()}; {images:,} training / {len(cfg.data.test_images):,} test "
             f"images" + (f"; {run.note}" if run.note else "") + "\n",
             "| epoch | train s | eval s | img/s | train loss | test acc % |", "|---|---|---|---|---|---|"]
    for i, (t, e, loss, acc) in enumerate(zip(run.train_s, run.eval_s, run.train_loss, run.test_acc), 1):
        lines.append(f"| {i} | {t:.3f} | {e:.3f} | {(run.images or images) / t:,.0f} | {loss:.4f} | {100 * acc:.2f} |")
    lines.append("")
    lines.append(f"- warm-up ({run.warmup_what}): {run.warmup_s:.3f} s")
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


#: (key for --sections, heading, section), in the report's order
SECTIONS: list[tuple[str, str, Callable[[Config], str]]] = [
    ("tests", "Test suite", section_tests),
    ("kernels", "Kernel benchmarks (bench_kernels.py)", section_kernels),
    ("gpucnn-eager", "Training: gpucnn eager", section_gpucnn_eager),
    ("gpucnn-graph", "Training: gpucnn CUDA graphs", section_gpucnn_graph),
    ("torch-eager", "Training: PyTorch eager", section_torch_eager),
    ("torch-graphs", "Training: PyTorch CUDA graphs", section_torch_graphs),
    ("speedrun", "Speed-run recipe", section_speedrun),
    ("launches", "Launches and syncs per step", section_launches),
]
NOT_RUN = "not run yet"


def report_sections(text: str) -> dict[str, str]:
    """A report's section bodies by heading: what an earlier call wrote into the same file. Only the
    report's own headings start a section, so a "## " line inside a body (a test log) stays in it."""
    headings = "|".join(re.escape(heading) for _, heading, _ in SECTIONS)
    found = re.findall(rf"^## ({headings})\n\n(.*?)(?=^## (?:{headings})\n|\Z)", text, re.M | re.S)
    return {heading: body.rstrip() + "\n" for heading, body in found}


def render_report(title: str, info: dict[str, str], bodies: dict[str, str]) -> str:
    """The whole file: the header table, then every section in SECTIONS' order (a section no call has run
    yet says which ``--sections`` key runs it)."""
    parts = [f"# gpucnn GPU report: {title}\n", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()], ""]
    for key, heading, _ in SECTIONS:
        body = bodies.get(heading) or f"{NOT_RUN}: `python benchmarks/gpu_report.py --sections {key}`\n"
        parts.append(f"## {heading}\n\n{body}")
    return "\n".join(parts)


def _chosen_sections(value: str | None) -> list[str]:
    keys = [key for key, _, _ in SECTIONS]
    if value is None:
        return keys
    chosen = [key.strip() for key in value.split(",") if key.strip()]
    unknown = [key for key in chosen if key not in keys]
    if unknown or not chosen:
        raise SystemExit(f"gpu_report: --sections takes a comma-separated list from {', '.join(keys)}; "
                         f"got {value!r}")
    return chosen


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
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of the speed-run recipe (default {SPEEDRUN['epochs']}; dry run 1)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed to the test suite and bench_kernels")
    p.add_argument("--sections", default=None,
                   help="comma-separated sections to run (default: all): " + ", ".join(k for k, _, _ in SECTIONS) +
                        "; the others are kept from the report file already in --out for the same device and day")
    p.add_argument("--commit", default=None,
                   help="the commit to record where the checkout has no git history (a copied working tree)")
    p.add_argument("--test-workers", type=int, default=0,
                   help="pytest-xdist processes for the test suite (0: one process)")
    args = p.parse_args(argv)
    chosen = _chosen_sections(args.sections)
    command = shlex.join(["python", "benchmarks/gpu_report.py", *(sys.argv[1:] if argv is None else argv)])
    if not args.dry_run and not gpucnn.cuda_is_available():
        print("gpu_report: no usable GPU (CuPy and a CUDA device are needed); --dry-run runs the plumbing on "
              "cuda-sim", file=sys.stderr)
        return 2
    data, note = load_data(args)
    recipe = Recipe.speedrun(epochs=args.epochs or (1 if args.dry_run else None),
                             target=None if args.dry_run else 0.99)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(args.dry_run, "cuda-sim" if args.dry_run else "cuda", data, note, recipe, out, args.timeout, command,
                 test_workers=args.test_workers)
    today = datetime.date.today()
    info = device_info(args.dry_run)
    if args.commit:
        info["commit"] = f"{args.commit} (given by --commit)"
    info["command"] = f"`{command}`"
    info["data"] = note
    title = "dry run on cuda-sim" if args.dry_run else info["device"]
    path = out / report_name(info, args.dry_run, today)
    # a report can be built over several calls (each within a time limit): the sections not run now stay
    bodies = report_sections(path.read_text()) if path.exists() else {}
    commit = info["commit"][:12]
    for key, heading, section in SECTIONS:
        if key not in chosen:
            continue
        started = time.perf_counter()
        print(f"gpu_report: {heading} ...", file=sys.stderr, flush=True)
        try:
            body = section(cfg)
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
            body = f"failed: {type(exc).__name__}: {exc}\n"
        bodies[heading] = f"{body.rstrip()}\n\n_section took {time.perf_counter() - started:.1f} s, commit {commit}_\n"
        # after each section, whole (temporary file, then rename): a call killed at its time limit keeps what finished
        report = render_report(f"{title}, {today.isoformat()}", info, bodies).encode()
        write_atomically(path, lambda f, report=report: f.write(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
