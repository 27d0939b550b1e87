"""Train a small CNN with the Trainer, under mpiexec (any world size) or alone, for tests/test_distributed.py.

    mpiexec -n 2 python tests/distributed_scripts/train_small.py --out run.npz --dtype float64 --norm sync

Writes (rank 0) the final state_dict and, under ``ranks_identical``, whether every rank ended with the
same parameter bytes. ``--fail-on-rank R`` makes rank R raise before its first collective instead.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's gpucnn, not an installed one

import gpucnn  # noqa: E402
from gpucnn import distributed, nn, optim  # noqa: E402
from gpucnn.training import Trainer  # noqa: E402

SAMPLES, BATCH = 37, 16  # 3 steps an epoch, the last one split 3/2 over 2 ranks


def data(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    images = rng.standard_normal((SAMPLES + 8, 1, 8, 8)).astype(dtype)
    return images, rng.integers(0, 4, size=SAMPLES + 8)


def model(dtype: str, norm: str) -> nn.Module:
    rng = np.random.default_rng(3)
    bn = {"none": [], "batch": [nn.BatchNorm2d(4, dtype=dtype)], "sync": [nn.SyncBatchNorm(4, dtype=dtype)]}[norm]
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype), *bn, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 4, rng=rng, dtype=dtype))


def train(dtype: str, norm: str, epochs: int, save: str | None = None, resume: str | None = None) -> Trainer:
    images, labels = data(dtype)
    net = distributed.DataParallel(model(dtype, norm), bucket_mib=0.001)  # ~1 KiB: several buckets
    opt = optim.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3)
    trainer = Trainer(net, opt, batch_size=BATCH, seed=5, max_shift=1, progress=False, checkpoint=save,
                      log=lambda line: None)
    if resume:
        trainer.resume(resume)
    trainer.fit(images[:SAMPLES], labels[:SAMPLES], images[SAMPLES:], labels[SAMPLES:], epochs)
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--norm", choices=["none", "batch", "sync"], default="none")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--save", default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--fail-on-rank", type=int, default=None)
    args = p.parse_args()
    distributed.init()
    if args.fail_on_rank == distributed.rank():
        raise ValueError(f"rank {distributed.rank()} fails on purpose")
    trainer = train(args.dtype, args.norm, args.epochs, args.save, args.resume)
    state = {k: gpucnn.get_backend("numpy").to_numpy(v) for k, v in trainer.model.state_dict().items()}
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for v in state.values())).hexdigest()
    identical = len(set(distributed.all_gather_object(digest))) == 1
    again = train(args.dtype, args.norm, args.epochs, None, args.resume).model.state_dict()
    reproducible = all(np.array_equal(state[k], np.asarray(v)) for k, v in again.items())
    if distributed.is_main():
        np.savez(args.out, ranks_identical=identical, reproducible=reproducible,
                 test_accuracy=trainer.history[-1].test_accuracy, **state)


if __name__ == "__main__":
    main()
