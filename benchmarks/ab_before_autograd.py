"""LeNet-5 on the numpy backend, this checkout against the code before autograd (ee749a8), in ONE process.

The autograd issue asks that the training step at batch 128 be no slower than before it. This machine
drifts by up to 40% from minute to minute, so two processes minutes apart (even alternating) disagree
by more than the difference measured. Here both versions live in one process: ``git archive`` puts
the old package in a temporary folder as ``gpucnn_before`` (it has relative imports only), and the
rounds alternate which version goes first. Each round times 20 training steps (SGD momentum, batch
128) and 5 eval forwards at batch 1024 of each version; the ratio is taken per round.

    python benchmarks/ab_before_autograd.py [--rounds 20] [--commit ee749a8]

Set the allocator as bench_cpu.py does (MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
MALLOC_TOP_PAD_=268435456) to compare like with like.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_cpu import median_ms  # noqa: E402  (this script's folder is on sys.path)

import gpucnn  # noqa: E402


def load_before(commit: str, folder: Path) -> object:
    archive = folder / "before.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit, "gpucnn"], cwd=REPO, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "gpucnn").rename(folder / "gpucnn_before")
    sys.path.insert(0, str(folder))
    return importlib.import_module("gpucnn_before")


def steps_now(x: np.ndarray, y: np.ndarray, xi: np.ndarray) -> tuple[Callable[[], None], Callable[[], None]]:
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = gpucnn.CrossEntropyLoss()

    def train() -> None:
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with gpucnn.no_grad():
            model(xi)
        model.train()

    return train, infer


def steps_before(old: object, x: np.ndarray, y: np.ndarray, xi: np.ndarray) -> tuple[Callable[[], None],
                                                                                   Callable[[], None]]:
    model = old.LeNet5(rng=np.random.default_rng(0))  # the pre-autograd API: layers run their own backward
    opt = old.optim.SGD(model, lr=0.01, momentum=0.9)
    loss = old.SoftmaxCrossEntropy(backend="numpy")

    def train() -> None:
        opt.zero_grad()
        loss(model(x), y)
        model.backward_params(loss.backward())
        opt.step()

    def infer() -> None:
        model.eval()
        model(xi)
        model.train()

    return train, infer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--commit", default="ee749a8", help="the code before autograd (its API is assumed)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    xi = rng.standard_normal((1024, 1, 28, 28)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        old = load_before(args.commit, Path(folder))
        gpucnn.set_backend("numpy")
        old.set_backend("numpy")
        versions = {"now": steps_now(x, y, xi), "before": steps_before(old, x, y, xi)}
        for train, infer in versions.values():  # warm-up: scratch pools, BLAS threads
            for _ in range(3):
                train()
            infer()
        times: dict[tuple[str, str], list[float]] = {(v, c): [] for v in versions for c in ("train", "infer")}
        for r in range(args.rounds):
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for case, index, count in (("train", 0, 20), ("infer", 1, 5)):
                for version in order:
                    times[version, case].append(median_ms(versions[version][index], count))
    print(f"LeNet-5, numpy backend, {args.rounds} rounds in one process; this checkout against {args.commit}")
    for case, label in (("train", "training step, batch 128"), ("infer", "inference, batch 1024")):
        now, before = times["now", case], times["before", case]
        ratios = [a / b for a, b in zip(now, before)]
        print(f"{label}: now {statistics.median(now):.2f} ms, before {statistics.median(before):.2f} ms; per-round "
              f"ratio median {statistics.median(ratios):.3f} (range {min(ratios):.2f}-{max(ratios):.2f}), "
              f"now slower in {sum(r > 1 for r in ratios)}/{len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
