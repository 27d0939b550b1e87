"""Train LeNet-5 on MNIST with gpucnn.

    python examples/train_mnist.py                      # default backend, 10 epochs, modern LeNet-5
    python examples/train_mnist.py --backend cuda-sim --limit 512 --epochs 1
    python examples/train_mnist.py --model lenet5-classic --plot runs/classic.png
    python examples/train_mnist.py --speedrun           # the fewest-steps recipe to >= 99.0% (gpucnn.recipes)
    python examples/train_mnist.py --speedrun --graph --backend cuda   # each step one CUDA-graph replay
    mpiexec -n 2 python examples/train_mnist.py --distributed   # 2 processes, the same global batch
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

import gpucnn
from gpucnn import distributed, optim
from gpucnn.datasets import DatasetNotFoundError, load_mnist, normalize
from gpucnn.models import MODELS
from gpucnn.recipes import SPEEDRUN  # --speedrun's recipe, shared with benchmarks/gpu_report.py
from gpucnn.serialization import CheckpointError
from gpucnn.training import Trainer, evaluate


def _number(convert: Callable[[str], int | float], kind: str, low: float, high: float | None = None,
            low_open: bool = False) -> Callable[[str], int | float]:
    """An argparse type: ``convert`` the text, refused (as argparse words it) outside [low, high]
    (low excluded with ``low_open``), so that e.g. --limit -5 does not slice from the end."""
    bound = f"> {low}" if low_open else f">= {low}"
    wanted = f"{kind} in [{low}, {high}]" if high is not None else f"{kind} {bound}"

    def check(text: str) -> int | float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low or (low_open and value == low) or (high is not None and value > high) or value != value:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return check


positive_int = _number(int, "an integer", 1)
non_negative_int = _number(int, "an integer", 0)
positive_float = _number(float, "a number", 0, low_open=True)
non_negative_float = _number(float, "a number", 0)
fraction = _number(float, "a number", 0, 1)


def _check_output(p: argparse.ArgumentParser, flag: str, path: str, make_parents: bool = False) -> None:
    """Refuse an output path that would fail only once it is written (after an epoch, or after training):
    a directory, a missing folder (unless the writer makes it) or a folder this process cannot write in."""
    target = Path(path)
    if target.is_dir():
        example = target / {"--save": "ck.npz", "--plot": "run.png"}.get(flag, "model.onnx")
        p.error(f"{flag} {path}: expected a file path, got a directory (e.g. {example})")
    folder = target.parent
    while make_parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the first folder that exists is where the writer creates the rest
    if not folder.is_dir():
        p.error(f"{flag} {path}: expected an existing folder to write in, but {folder} "
                f"{'is not a folder' if folder.exists() else 'does not exist'}")
    try:
        # a file made and removed there: os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        p.error(f"{flag} {path}: expected a folder this process can write in, but {folder} is not "
                f"({exc.strerror or exc})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=gpucnn.available_backends(), default=None,
                   help="default: $GPUCNN_BACKEND, else cuda when a GPU is usable, else numpy")
    p.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="the epochs of the whole run: a resumed run trains those its checkpoint has not done")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="the global batch: split over the ranks with --distributed")
    p.add_argument("--lr", type=positive_float, default=None, help="default: 0.05 for SGD, 0.001 for Adam/AdamW")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    p.add_argument("--momentum", type=non_negative_float, default=0.9)
    p.add_argument("--weight-decay", type=non_negative_float, default=5e-4)
    p.add_argument("--shift", type=non_negative_int, default=2, help="random-shift augmentation in pixels (0: off)")
    p.add_argument("--schedule", choices=["cosine", "onecycle"], default="cosine",
                   help="cosine: per epoch from --lr to 0; onecycle: per step, up to --lr and down (OneCycleLR)")
    p.add_argument("--pct-start", type=fraction, default=0.3,
                   help="onecycle: the fraction of the steps spent rising to --lr (PyTorch's default 0.3)")
    p.add_argument("--label-smoothing", type=fraction, default=0.0, help="label smoothing of the training loss")
    p.add_argument("--speedrun", action="store_true",
                   help="the fewest-steps recipe to >= 99.0%% test accuracy: " +
                        " ".join(f"--{k.replace('_', '-')} {v}" for k, v in SPEEDRUN.items()) +
                        " (flags given beside it override)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default: search, then download)")
    p.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    p.add_argument("--test-limit", type=positive_int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--save", default=None, help="checkpoint path, written after every epoch")
    p.add_argument("--resume", default=None,
                   help="checkpoint to continue from; when there is none yet the run starts fresh, so that a job "
                        "script can always give --save ck.npz --resume ck.npz")
    p.add_argument("--stop-after", type=positive_int, default=None,
                   help="stop once this many epochs are done (as if interrupted); --resume continues")
    p.add_argument("--plot", default=None, help="PNG path for curves; also writes confusion matrix and filters")
    p.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    p.add_argument("--graph", action="store_true",
                   help="cuda (or cuda-sim): capture one training step as a CUDA graph and replay it for every "
                        "full batch (Trainer(graph=True)); the last partial batch runs eagerly")
    p.add_argument("--export-onnx", default=None, help="ONNX path written after training (needs gpucnn[onnx])")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI launch (mpiexec -n N ...; needs gpucnn[mpi]): "
                        "each trains on its part of every batch, rank 0 prints and saves")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.speedrun:  # the recipe as defaults, so that flags given explicitly still win
        p.set_defaults(**SPEEDRUN)
        args = p.parse_args(argv)
    # checked now rather than when first written, which is after an epoch (--save) or after training
    if args.save:
        _check_output(p, "--save", args.save)
    if args.plot:
        _check_output(p, "--plot", args.plot, make_parents=True)  # plots makes the folders it needs
    if args.export_onnx:
        _check_output(p, "--export-onnx", args.export_onnx)
    if args.resume and os.path.isdir(args.resume):
        p.error(f"--resume {args.resume}: expected a checkpoint file, got a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # before the backend: init() gives each rank its own GPU
    world = distributed.init() if args.distributed else 1
    say = print if distributed.is_main() else _quiet
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'gpucnn[examples]' (or pip install matplotlib)",
                  file=sys.stderr)
            return 2
    try:
        backend = gpucnn.set_backend(args.backend) if args.backend else gpucnn.get_backend()
    except RuntimeError as exc:  # e.g. --backend cuda without CuPy or a GPU: say which, no traceback
        print(exc, file=sys.stderr)
        return 2
    try:
        data = load_mnist(args.data_dir)
    except DatasetNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1

    train_x, train_y = data.train_images[:args.limit], data.train_labels[:args.limit]
    test_x, test_y = data.test_images[:args.test_limit], data.test_labels[:args.test_limit]
    model_class = MODELS[args.model]
    pad = (model_class.input_shape[-1] - train_x.shape[-1]) // 2  # the classic net wants 32x32
    prepare = partial(normalize, pad=pad)

    gpucnn.manual_seed(args.seed)
    model = model_class(rng=np.random.default_rng(args.seed))
    if world > 1:
        model = distributed.DataParallel(model)  # rank 0's weights everywhere; gradients averaged in backward
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model, lr=args.lr or 0.05, momentum=args.momentum, weight_decay=args.weight_decay,
                              nesterov=args.momentum > 0)
    else:
        make = optim.Adam if args.optimizer == "adam" else optim.AdamW
        optimizer = make(model, lr=args.lr or 1e-3, weight_decay=args.weight_decay)
    if args.schedule == "onecycle":  # stepped after every optimizer step: count the steps of the run
        full, rest = divmod(len(train_x), args.batch_size)
        steps_per_epoch = full + (1 if rest >= world else 0)
        schedule = optim.OneCycleLR(optimizer, max_lr=optimizer.lr, total_steps=args.epochs * steps_per_epoch,
                                    pct_start=args.pct_start,
                                    cycle_momentum=args.optimizer != "sgd" or args.momentum > 0)
    else:
        schedule = optim.CosineLR(optimizer, total=args.epochs)
    try:
        trainer = Trainer(model, optimizer, schedule, batch_size=args.batch_size, seed=args.seed,
                          max_shift=args.shift, progress=not args.no_progress, checkpoint=args.save, prepare=prepare,
                          label_smoothing=args.label_smoothing, graph=args.graph)
    except ValueError as exc:  # e.g. --graph on the numpy backend: say what it needs, no traceback
        print(exc, file=sys.stderr)
        return 2
    if args.resume and not os.path.exists(args.resume):
        # the first run of a job that always passes --resume: nothing to continue yet
        say(f"no checkpoint at {args.resume} yet: starting fresh")
    elif args.resume:
        try:
            trainer.resume(args.resume)
        except (CheckpointError, OSError) as exc:  # damaged, or written by another run: say which, no traceback
            print(exc if isinstance(exc, CheckpointError) else f"--resume {args.resume}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
        say(f"resumed from {args.resume} after epoch {trainer.epoch}")
    done_before = trainer.epoch

    ranks = f", {world} ranks of {args.batch_size // world}-{-(-args.batch_size // world)} images a step" \
        if world > 1 else ""
    say(f"gpucnn {gpucnn.__version__}: {args.model} ({model.num_parameters():,} parameters) on backend "
        f"{backend.name!r}, {len(train_x):,} training / {len(test_x):,} test images{ranks}")
    started = time.perf_counter()
    until = args.epochs if args.stop_after is None else min(args.stop_after, args.epochs)
    if done_before >= until:
        say(f"{args.resume} already holds {_count(done_before, 'epoch')}: nothing left to train up to epoch {until}")
    history = trainer.fit(train_x, train_y, test_x, test_y, until)
    elapsed = time.perf_counter() - started
    if history:
        # the run's epochs in all (a resumed run's history holds those before it too), and those of this run
        trained = trainer.epoch - done_before
        this_run = f"{elapsed:.1f} s" if not done_before else \
            f"{_count(trained, 'epoch')} in {elapsed:.1f} s" if trained else "none"
        say(f"final test accuracy {100 * history[-1].test_accuracy:.2f}% after {_count(trainer.epoch, 'epoch')} "
            f"({this_run} this run)")
    if args.plot:
        from gpucnn import plots

        _, _, predicted = evaluate(model, test_x, test_y, prepare=prepare)  # every rank: a collective
        if distributed.is_main():
            for path in plots.write_all(args.plot, history, test_y, predicted, distributed.unwrap(model),
                                        prepare(test_x[:1])):
                print(f"wrote {path}")
    if args.export_onnx and distributed.is_main():
        from gpucnn import onnx as gpucnn_onnx

        sample = prepare(test_x[:8])
        model = distributed.unwrap(model)
        gpucnn_onnx.export(model, args.export_onnx, sample)
        print(f"wrote {args.export_onnx}: {gpucnn_onnx.verify(args.export_onnx, model, sample)}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _quiet(*args: object) -> None:
    """print on ranks other than 0"""


if __name__ == "__main__":
    sys.exit(main())
