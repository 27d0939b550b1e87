"""Reusable training loop: ``evaluate``, ``train_epoch`` and ``Trainer.fit`` with checkpoints.

Every epoch's shuffling and augmentation come from a generator seeded by (seed, epoch), so a
run resumed from the checkpoint after epoch e sees exactly the batches the uninterrupted run saw.

``Trainer.fit`` checks its data before the first step (empty sets, labels outside the model's
classes) and, by default, stops with ``NonFiniteLossError`` once the training loss is NaN or
infinite; ``Trainer.resume`` refuses a checkpoint written with another seed, batch size or model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed
from . import functional as F
from .core.autograd import no_grad
from .cuda_graph import GRAPH_BACKENDS, GraphedStep
from .datasets import BatchIterator, as_array, check_label_range
from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .optim import LRSchedule, Optimizer
from .progress import progress_bar
from .serialization import CheckpointError, load, read_checkpoint, save


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite.

    The loss is summed on the device and read back only now and then (for the progress bar, and at
    the end of an epoch), so the step it went wrong at is known to lie in ``first_step`` ..
    ``last_step`` (1-based, within ``epoch``; equal when it was read after every step). ``loss`` is
    the running sum that was read (nan, inf or -inf)."""

    def __init__(self, message: str, epoch: int | None, first_step: int, last_step: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.first_step, self.last_step, self.loss = epoch, first_step, last_step, loss


class _LossWatch:
    """Looks at each loss sum the epoch reads back anyway; raises NonFiniteLossError at the first that is
    not finite (once one step's loss is NaN or infinite, so is every running sum after it)."""

    def __init__(self, owner: str, stop: bool, epoch: int | None, steps: int | None, every: int | None) -> None:
        self.owner, self.stop, self.epoch, self.steps, self.every = owner, stop, epoch, steps, every
        self.finite_through = 0  # the last step whose reading was finite

    def read(self, total: float, step: int) -> None:
        if math.isfinite(total):
            self.finite_through = step
            return
        if not self.stop:
            return
        first = self.finite_through + 1
        where = f"at step {step}" if first == step else f"between steps {first} and {step}"
        of = f" of {self.steps}" if self.steps else ""
        epoch = f" in epoch {self.epoch}" if self.epoch is not None else ""
        if first == step:
            why = ""
        else:
            when = f"every {self.every} steps and " if self.every else ""
            last = (f"the reading after step {first - 1} was finite" if first > 1
                    else "this was the epoch's first reading")
            why = f" (the loss is read back from the device only {when}at the end of an epoch; {last})"
        raise NonFiniteLossError(
            f"{self.owner}: the training loss became {total}{epoch}, {where}{of}{why}. Look for NaN or inf in the "
            f"inputs (an image with a NaN pixel?) or lower the learning rate; stop_on_nonfinite=False trains on "
            f"regardless", self.epoch, first, step, total)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    images_per_second: float
    seconds: float
    lr: float

    def line(self) -> str:
        return (f"epoch {self.epoch:3d}  train loss {self.train_loss:.4f}  test loss {self.test_loss:.4f}  "
                f"test acc {100 * self.test_accuracy:.2f}%  {self.images_per_second:,.0f} img/s  "
                f"{self.seconds:.1f} s  lr {self.lr:.4g}")


def evaluate(model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000,
             prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, predicted labels) over a whole set, in eval mode.

    With several ranks (``gpucnn.distributed``), each evaluates its part of the set and every rank
    gets the figures and predictions for the whole of it."""
    if len(images) == 0:  # every rank has the whole set: all of them stop here
        raise ValueError("evaluate: the set is empty (0 images); its mean loss and accuracy are undefined")
    if distributed.world_size() > 1:
        part = distributed.shard(len(images))
        loss, _, predicted = _evaluate_here(model, images[part], labels[part], batch_size, prepare)
        total = distributed.all_reduce(loss * len(predicted))
        predicted = np.concatenate(distributed.all_gather_object(predicted))
        return total / len(images), float((predicted == labels).mean()), predicted
    return _evaluate_here(model, images, labels, batch_size, prepare)


def _evaluate_here(model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int,
                   prepare: Callable[[np.ndarray], np.ndarray] | None) -> tuple[float, float, np.ndarray]:
    backend = model.backend
    was_training = model.training
    model.eval()
    loss_fn = CrossEntropyLoss(reduction="sum")
    total_loss, predictions = 0.0, []
    with no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            logits = model(backend.asarray(prepare(x) if prepare else x))
            total_loss += loss_fn(logits, backend.asarray(labels[start:start + batch_size])).item()
            predictions.append(logits.numpy().argmax(axis=1))
    model.train(was_training)
    predicted = np.concatenate(predictions)
    return total_loss / len(images), float((predicted == labels).mean()), predicted


#: how often (in steps) ``train_epoch`` reads the running loss back for the progress bar
PROGRESS_EVERY = 50


def train_epoch(model: Module, optimizer: Optimizer, batches: BatchIterator, bar: Any = None,
                refresh_every: int = PROGRESS_EVERY, schedule: LRSchedule | None = None,
                label_smoothing: float = 0.0, stop_on_nonfinite: bool = False,
                epoch: int | None = None) -> tuple[float, float]:
    """One pass over ``batches``; returns (mean training loss, images per second).

    ``schedule`` (a per-step one, such as ``optim.OneCycleLR``) is stepped after every optimizer
    step; ``label_smoothing`` goes to ``F.cross_entropy`` (the loss reported is the smoothed one).

    ``stop_on_nonfinite``: raise NonFiniteLossError (naming ``epoch``, when given, and the steps)
    once a loss sum read back is NaN or infinite, instead of training on. Only the readings made
    anyway are looked at: the progress bar's and the epoch's last (with several ranks, the last alone,
    after the ranks' sums are added, so that all of them stop together).

    A ``BatchIterator`` whose labels (its ``label_range``) do not fit the classes of the first logits
    raises before the first backward, naming the first bad label.

    No step waits for the device: the labels' range was found once when the ``BatchIterator`` was
    built (its ``label_range``; batches without one are checked per step by ``F.cross_entropy``),
    the shifts run on the device, and the loss is summed there, in float64, and read back only when
    the progress bar is refreshed (every ``refresh_every`` steps) and once at the end."""
    backend = model.backend
    model.train()
    label_range = getattr(batches, "label_range", None)
    total, seen, steps, started = backend.xp.zeros((), dtype=np.float64), 0, 0, time.perf_counter()
    # a DataParallel's gradients are averaged during backward; finishing after it averages the
    # parameters no backward reached too
    finish_sync = getattr(model, "finish_gradient_sync", None)
    checked = None
    several = distributed.world_size() > 1
    watch = _LossWatch("train_epoch", stop_on_nonfinite, epoch, _len_or_none(batches), refresh_every)

    def loss_sum() -> float:
        return float(backend.to_numpy(total))

    for x, y in batches:
        optimizer.zero_grad()
        logits = model(x)
        if checked is None:  # the iterator's label range against the class count the first logits show
            checked = label_range is not None and label_range[0] >= 0 and label_range[1] < logits.shape[1]
            if label_range is not None and not checked and hasattr(batches, "check_labels"):
                # raises, naming the first bad label, before any update
                batches.check_labels(logits.shape[1], source=f"the model's logits have {logits.shape[1]} classes")
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing, labels_checked=checked)
        weight = getattr(batches, "batch_weight", 1.0)  # 1 but for a last global batch split unevenly
        (loss if weight == 1.0 else loss * weight).backward()  # the images need no gradient: no dx
        if finish_sync is not None:
            finish_sync()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.data.astype(np.float64) * len(y)  # what float(loss) * len(y) would add, on the device
        seen += len(y)
        steps += 1
        # only rank 0 has a bar: a rank stopping mid-epoch alone would leave the others waiting in a collective
        _step_done(bar, steps, refresh_every, loss_sum, seen, started, None if several else watch)
    total = _epoch_done(backend, bar, loss_sum, seen, started)
    if several:  # the figures of the global batches: all images of all ranks
        total, seen = distributed.all_reduce(total), distributed.all_reduce(seen)
    if seen == 0:
        raise ValueError("train_epoch: the batches held no images (an empty training set, or drop_last with fewer "
                         "images than one batch); the epoch's mean loss is undefined")
    watch.read(total, steps)
    return total / seen, seen / (time.perf_counter() - started)


def _len_or_none(batches: Any) -> int | None:
    try:
        return len(batches)
    except TypeError:  # any iterable of batches will do
        return None


def train_epoch_graphed(step: GraphedStep, rng: np.random.Generator, bar: Any = None,
                        refresh_every: int = PROGRESS_EVERY, schedule: LRSchedule | None = None,
                        stop_on_nonfinite: bool = False, epoch: int | None = None) -> tuple[float, float]:
    """``train_epoch`` for a ``cuda_graph.GraphedStep``: the epoch's order and shifts from ``rng``,
    each full batch one graph replay; returns (mean training loss, images per second).
    ``stop_on_nonfinite`` and ``epoch`` as ``train_epoch``'s."""
    started = time.perf_counter()
    watch = _LossWatch("train_epoch_graphed", stop_on_nonfinite, epoch, step.steps, refresh_every)
    step.begin_epoch(rng, schedule)
    for done in range(1, step.steps + 1):
        step.step()
        _step_done(bar, done, refresh_every, step.loss_sum, step.images_done, started, watch)
    total = _epoch_done(step.backend, bar, step.loss_sum, step.count, started)
    watch.read(total, step.steps)
    return total / step.count, step.count / (time.perf_counter() - started)


def _step_done(bar: Any, done: int, refresh_every: int, loss_sum: Callable[[], float], seen: int,
               started: float, watch: _LossWatch | None = None) -> None:
    """The progress bar after step ``done``: a tick, and every ``refresh_every`` steps the running
    loss, which ``loss_sum`` reads back from the device (the only wait for it during an epoch) and
    ``watch`` looks at."""
    if bar is not None:
        bar.update(1)
        if done % refresh_every == 0:
            total = loss_sum()
            _show(bar, total, seen, started)
            if watch is not None:
                watch.read(total, done)


def _epoch_done(backend: Any, bar: Any, loss_sum: Callable[[], float], seen: int, started: float) -> float:
    """The epoch's loss sum, read once the device has finished, and the progress bar's last figures."""
    backend.synchronize()
    total = loss_sum()
    if bar is not None:
        _show(bar, total, seen, started)
    return total


def _show(bar: Any, total: float, seen: int, started: float) -> None:
    bar.set_postfix_str(f"loss {total / max(seen, 1):.4f}, {seen / (time.perf_counter() - started):,.0f} img/s")


class Trainer:
    """Train a classifier epoch by epoch, evaluating, logging and checkpointing after each.

    Under ``gpucnn.distributed`` with several ranks the model must be a ``DataParallel``;
    ``batch_size`` is then the global batch (each rank trains on its part), the figures are those of
    all ranks, and only rank 0 shows progress, calls ``log`` and writes the checkpoint (loadable
    with any world size).

    A ``schedule`` is stepped after every epoch, or after every optimizer step when it says
    ``per_step = True`` (``optim.OneCycleLR``); ``label_smoothing`` smooths the training loss.

    ``graph=True`` (cuda or cuda-sim, resident data, one process; label smoothing too) runs every full
    batch as one replay of a CUDA graph captured once (``gpucnn.cuda_graph.GraphedStep``): bit for bit
    the weights of ``graph=False``; the reported loss is summed in float64 in batch order instead.

    ``fit`` checks the data before the first step: no set may be empty, the labels must be integers
    in [0, classes) (the classes the model's logits have), and array-likes are converted once.
    ``stop_on_nonfinite`` (default True) stops training with ``NonFiniteLossError`` once the
    training loss is NaN or infinite (seen where it is read back anyway: by the progress bar every
    ``PROGRESS_EVERY`` steps, and at the end of each epoch); False trains on, as the layers
    propagate NaN. ``resume`` refuses a checkpoint written with another seed, batch size or model."""

    def __init__(self, model: Module, optimizer: Optimizer, schedule: LRSchedule | None = None,
                 batch_size: int = 128, seed: int = 0, max_shift: int = 0, resident: bool | None = None,
                 progress: bool = True, checkpoint: str | Path | None = None,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                 log: Callable[[str], None] = print, label_smoothing: float = 0.0, graph: bool = False,
                 stop_on_nonfinite: bool = True) -> None:
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if self.world_size > 1 and not isinstance(model, distributed.DataParallel):
            raise ValueError(f"Trainer: {self.world_size} ranks train together, but the model is no "
                             f"gpucnn.distributed.DataParallel; wrap it so that the ranks average their gradients")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.batch_size, self.seed, self.max_shift = batch_size, seed, max_shift
        self.label_smoothing = float(label_smoothing)
        self.per_step = bool(getattr(schedule, "per_step", False))
        self.graph = bool(graph)
        self.stop_on_nonfinite = bool(stop_on_nonfinite)
        # keeping the whole set on the device pays off on a GPU (a graphed step needs it); on the host it
        # changes nothing
        self.resident = (self.graph or model.backend.name == "cuda") if resident is None else resident
        if self.graph:
            self._check_graph_options(model)
        self._graphed: tuple[Any, Any, GraphedStep] | None = None
        self.progress, self.checkpoint, self.prepare = progress and self.rank == 0, checkpoint, prepare
        self.log = log if self.rank == 0 else _quiet
        self.history: list[EpochStats] = []
        self.epoch = 0

    def _check_graph_options(self, model: Module) -> None:
        problems = []
        if model.backend.name not in GRAPH_BACKENDS:
            problems.append(f"the cuda or cuda-sim backend (the model is on {model.backend.name!r})")
        if not self.resident:
            problems.append("resident data (got resident=False)")
        if self.world_size > 1:
            problems.append(f"one process (got {self.world_size} ranks)")
        if problems:
            raise ValueError(f"Trainer: graph=True needs {', '.join(problems)}")

    def _graphed_step(self, train_images: np.ndarray, train_labels: np.ndarray) -> GraphedStep:
        """One GraphedStep per training set: captured once, reused by every later fit() on the same arrays."""
        if self._graphed is None or self._graphed[0] is not train_images or self._graphed[1] is not train_labels:
            train_x = self.prepare(train_images) if self.prepare else train_images
            step = GraphedStep(self.model, self.optimizer, train_x, train_labels, self.batch_size, self.max_shift,
                               label_smoothing=self.label_smoothing)
            self._graphed = (train_images, train_labels, step)
        return self._graphed[2]

    def _run_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint to continue it: the model,
        and the seed and batch size that choose every epoch's batches."""
        return {"model": type(distributed.unwrap(self.model)).__name__, "seed": self.seed,
                "batch_size": self.batch_size}

    def _check_checkpoint_settings(self, path: str | Path) -> None:
        _, meta = read_checkpoint(path)
        extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
        written = {"model": meta.get("model"), **{key: extra.get(key) for key in ("seed", "batch_size")}}
        mine = self._run_settings()
        # a field an older checkpoint lacks (None) is not held against it
        differ = [key for key, value in mine.items() if written.get(key) is not None and written[key] != value]
        if differ:
            raise CheckpointError(
                f"Trainer.resume: checkpoint {path} was written with "
                f"{', '.join(f'{key}={written[key]}' for key in differ)}; this trainer has "
                f"{', '.join(f'{key}={mine[key]}' for key in differ)}. Resuming would not continue that run; make "
                f"the Trainer (and model) as that run made them, or start afresh without resume")

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by this trainer: weights, optimizer, epoch, history.

        A CheckpointError, before anything is loaded, when the checkpoint was written with another
        seed, batch size or model class (checkpoints from before these were stored are not checked
        for them); a model whose parameters do not fit gets load's CheckpointError."""
        self._check_checkpoint_settings(path)
        extra = load(path, distributed.unwrap(self.model), self.optimizer)
        self.epoch = int(extra.get("epoch", 0))
        self.history = [EpochStats(**h) for h in extra.get("history", [])]
        if self.schedule is not None and self.per_step:  # counted in optimizer steps
            self.schedule.count = self.optimizer.step_count - 1
            self.schedule.step()
        elif self.schedule is not None:
            self.schedule.count = self.epoch
            self.optimizer.lr = self.schedule.lr_at(self.epoch)

    def _checked_sets(self, train_images: Any, train_labels: Any, test_images: Any,
                      test_labels: Any) -> tuple[Any, Any, Any, Any]:
        """The four arrays (array-likes converted once), refused when a set is empty or its sizes differ."""
        backend = self.model.backend
        arrays = []
        for name, data, kinds, expected in (
                ("train_images", train_images, "biuf", "numbers"),
                ("train_labels", train_labels, "iu", "integers (class indices)"),
                ("test_images", test_images, "biuf", "numbers"),
                ("test_labels", test_labels, "iu", "integers (class indices)")):
            arrays.append(as_array(data, "Trainer.fit", name, backend, kinds, expected))
        for kind, (images, labels) in (("training", arrays[:2]), ("test", arrays[2:])):
            prefix = "train" if kind == "training" else "test"
            if len(images) != len(labels):
                raise ValueError(f"Trainer.fit: {len(images)} {prefix}_images but {len(labels)} {prefix}_labels")
            if len(images) == 0:
                use = "train on" if kind == "training" else "evaluate each epoch on"
                raise ValueError(f"Trainer.fit: the {kind} set is empty ({prefix}_images and {prefix}_labels have 0 "
                                 f"entries); there is nothing to {use}")
        return arrays[0], arrays[1], arrays[2], arrays[3]

    def _classes(self, prepared: Any) -> int:
        """The number of classes the model's logits have, from a forward of one prepared image in eval
        mode without gradients: it changes no state, and only the shape is looked at (no device read)."""
        model, backend = self.model, self.model.backend
        was_training = model.training
        model.eval()
        try:
            with no_grad():
                logits = model(backend.asarray(prepared[:1]))
        finally:
            model.train(was_training)
        if len(logits.shape) != 2:
            raise ValueError(f"Trainer.fit: the model must return logits (N, classes), got shape {tuple(logits.shape)}")
        return int(logits.shape[1])

    def _check_labels(self, prepared: Any, train_labels: Any, test_labels: Any,
                      train_range: tuple[int, int] | None = None) -> None:
        """Both sets' labels against the model's classes, once, before the first step: a bad label
        would otherwise stop training only at the batch that holds it, or after the epoch, in evaluation."""
        backend = self.model.backend
        classes = self._classes(prepared)
        for name, labels, known in (("train_labels", train_labels, train_range), ("test_labels", test_labels, None)):
            host = backend.to_numpy(labels) if not isinstance(labels, np.ndarray) else labels
            check_label_range(host, classes, "Trainer.fit", name, known, f"the model gives {classes} classes")

    def fit(self, train_images: Any, train_labels: Any, test_images: Any, test_labels: Any,
            epochs: int) -> list[EpochStats]:
        """Train until ``epochs`` epochs are done in all (so a resumed run trains the rest).

        Before the first step: ValueError for an empty set, sizes that differ, or a label outside the
        model's classes (naming the first, e.g. ``train_labels[1234] is 10``); TypeError for data that
        are no numbers or labels that are no integers. NonFiniteLossError (with ``stop_on_nonfinite``)
        once the training loss is NaN or infinite; the epoch it happened in is neither logged nor saved."""
        train_images, train_labels, test_images, test_labels = self._checked_sets(
            train_images, train_labels, test_images, test_labels)
        graphed, batches = None, None
        if self.graph:
            graphed = self._graphed_step(train_images, train_labels)
            self._check_labels(graphed.images, train_labels, test_labels)
        else:  # built once: a resident iterator copies the whole set to the device when it is made
            train_x = self.prepare(train_images) if self.prepare else train_images
            batches = BatchIterator(train_x, train_labels, self.batch_size, self.model.backend,
                                    resident=self.resident, max_shift=self.max_shift, rank=self.rank,
                                    world_size=self.world_size)
            self._check_labels(train_x, train_labels, test_labels, batches.label_range)
        while self.epoch < epochs:
            rng = np.random.default_rng([self.seed, self.epoch])
            bar = progress_bar(graphed.steps if graphed else len(batches), f"epoch {self.epoch + 1}/{epochs}",
                               self.progress)
            started = time.perf_counter()
            lr = self.optimizer.lr
            schedule = self.schedule if self.per_step else None
            stop, epoch = self.stop_on_nonfinite, self.epoch + 1
            try:
                if graphed is not None:
                    train_loss, speed = train_epoch_graphed(graphed, rng, bar, schedule=schedule,
                                                            stop_on_nonfinite=stop, epoch=epoch)
                else:
                    batches.rng = rng
                    train_loss, speed = train_epoch(self.model, self.optimizer, batches, bar, schedule=schedule,
                                                    label_smoothing=self.label_smoothing, stop_on_nonfinite=stop,
                                                    epoch=epoch)
            except NonFiniteLossError:
                # a graphed step stopped mid-epoch cannot begin another: a later fit() captures afresh
                self._graphed = None
                raise
            finally:
                if bar is not None:
                    bar.close()
            test_loss, test_acc, _ = evaluate(self.model, test_images, test_labels, prepare=self.prepare)
            self.epoch += 1
            if self.schedule is not None and not self.per_step:
                self.schedule.step()
            stats = EpochStats(self.epoch, train_loss, test_loss, test_acc, speed,
                               time.perf_counter() - started, lr)
            self.history.append(stats)
            self.log(stats.line())
            if self.checkpoint is not None and self.rank == 0:
                save(self.checkpoint, distributed.unwrap(self.model), self.optimizer,
                     extra={"epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size,
                            "history": [asdict(h) for h in self.history]})
            distributed.barrier()  # no rank runs ahead of a checkpoint it might resume from
        return self.history


def _quiet(line: str) -> None:
    """The log of ranks other than 0."""
