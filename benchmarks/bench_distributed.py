"""Scaling of gpucnn.distributed on the CPU: 1 rank against 2, LeNet-5 and a ResNet, and what a
multi-node run would send.

Weak scaling: every rank trains on the same per-rank batch (so 2 ranks train twice the global
batch), numpy backend, one BLAS thread per rank (so 2 ranks use the 2 cores of this machine and
1 rank uses one; ``1 rank, all threads`` is the one-process run a user gets without MPI). A
worker times ``--steps`` training steps (forward, backward with DataParallel's bucketed
averaging, SGD) after 3 warm-up steps, between barriers; it also times one averaging of all the
gradients by itself. Scaling efficiency = samples/s per rank on 2 ranks / samples/s on 1 rank.

    python benchmarks/bench_distributed.py [--models lenet5,resnet20] [--steps 20] [--out FILE.md]

Needs mpi4py and mpiexec (pip install 'gpucnn[mpi]'); the driver starts ``mpiexec -n 1`` and ``-n 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: input shape, per-rank batch
MODELS = {"lenet5": ((1, 28, 28), 64), "resnet20": ((3, 32, 32), 32)}
LINKS_GBIT = (25, 200)


def build(name: str):
    import gpucnn

    if name == "lenet5":
        return gpucnn.LeNet5(rng=np.random.default_rng(0))
    gpucnn.manual_seed(0)
    return gpucnn.ResNet(depth=20, width=16, in_channels=3)


def worker(name: str, steps: int) -> None:
    import gpucnn
    from gpucnn import distributed, optim

    distributed.init()
    shape, batch = MODELS[name]
    model = distributed.DataParallel(build(name))
    opt = optim.SGD(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(distributed.rank())
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn = gpucnn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        model.finish_gradient_sync()
        opt.step()

    for _ in range(3):
        step()
    distributed.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    distributed.barrier()
    seconds = (time.perf_counter() - started) / steps
    flat = np.concatenate([p.grad.data.reshape(-1) for p in model.parameters()])
    sync = 0.0
    if distributed.world_size() > 1:
        communicator = distributed.communicator_for(flat)
        distributed.barrier()
        started = time.perf_counter()
        for _ in range(steps):
            communicator.sum(flat)
        sync = (time.perf_counter() - started) / steps
    if distributed.is_main():
        print(json.dumps({"model": name, "ranks": distributed.world_size(), "step_s": seconds, "sync_s": sync,
                          "per_rank": batch / seconds, "params": int(flat.size), "bytes": int(flat.nbytes)}))


def launch(name: str, ranks: int, steps: int, threads: str) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    done = subprocess.run([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable,
                           __file__, "--worker", name, "--steps", str(steps)],
                          capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def traffic_lines(results: dict) -> list[str]:
    lines = ["| model | parameters | gradient bytes a step | sent per rank, 2 ranks | 25 Gbit/s | 200 Gbit/s |"
             " sent per rank, many ranks | 25 Gbit/s | 200 Gbit/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        size = r["bytes"]
        # all-to-all + all-gather (as a ring all-reduce): 2 (n-1)/n of the buffer each way per rank
        two, many = size, 2 * size
        cells = [f"{b / 2 ** 20:.2f} MiB" if i % 3 == 0 else f"{b * 8 / (g * 1e9) * 1e3:.2f} ms"
                 for i, (b, g) in enumerate([(two, 0), (two, LINKS_GBIT[0]), (two, LINKS_GBIT[1]),
                                             (many, 0), (many, LINKS_GBIT[0]), (many, LINKS_GBIT[1])])]
        lines.append(f"| {name} | {r['params']:,} | {size / 2 ** 20:.2f} MiB | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    rows = ["| model | per-rank batch | 1 rank, all threads | 1 rank, 1 thread | 2 ranks, 1 thread each | "
            "per rank | efficiency | averaging alone, 2 ranks |", "|---|---|---|---|---|---|---|---|"]
    results = {}
    for name in args.models.split(","):
        full, one, two = (launch(name, 1, args.steps, str(os.cpu_count())), launch(name, 1, args.steps, "1"),
                          launch(name, 2, args.steps, "1"))
        results[name] = two
        rows.append(f"| {name} | {MODELS[name][1]} | {full['per_rank']:,.0f} samples/s | {one['per_rank']:,.0f} | "
                    f"{2 * two['per_rank']:,.0f} in all | {two['per_rank']:,.0f} | "
                    f"**{two['per_rank'] / one['per_rank']:.0%}** | {two['sync_s'] * 1e3:.2f} ms of "
                    f"{two['step_s'] * 1e3:.1f} ms a step |")
    text = "\n".join(rows + [""] + traffic_lines(results))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
