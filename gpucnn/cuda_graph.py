"""CUDA graphs: one training step of fixed shape captured once, then replayed with one call per step.

On a GPU a LeNet-5 step is ~25 small kernels, and launching them one by one from Python costs more
than running them. ``GraphedStep`` captures the whole step (batch gather and shifts from the
resident data set, forward, backward, loss sum, optimizer update, step counter) into one CUDA graph
and replays it. Nothing that changes from step to step is a kernel argument: the step counter, the
epoch's order and shifts, the learning rate and momentum of each step (``optim.OneCycleLR``), Adam's
bias corrections and the dropout keys live in device tables, filled once per epoch by one copy each,
and read by the kernels at the counter. A replayed step gives bit for bit the weights of the same
step run eagerly (tests/test_cuda_graph.py). ``Trainer(graph=True)`` uses it::

    step = GraphedStep(model, optimizer, images, labels, batch_size=128, max_shift=2)
    for epoch in range(epochs):
        step.begin_epoch(np.random.default_rng([seed, epoch]), schedule)   # a per-step schedule, or None
        for _ in range(step.steps):
            step.step()
        print(step.loss_sum() / step.count)                                 # one device->host copy

The first full batch runs eagerly (it warms up the kernels and, on ``cuda``, the graph's private
memory pool), the second is captured and every later full batch is a replay; a last partial
batch runs eagerly through the same kernels and tables. Only our kernels may run inside the step:
on ``cuda-sim`` an array-library operation during the capture raises (it would not be replayed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends.base import dropout_key
from .core.tensor import Tensor
from .datasets import shift_offsets
from .functions.dropout import TableSeed, draw_seed, seeds_from
from .nn.module import Module
from .optim import LRSchedule, Optimizer

GRAPH_BACKENDS = ("cuda", "cuda-sim")


class GraphedStep:
    """A training step on ``images``/``labels`` (host or device arrays: copied to the device once)
    with batches of ``batch_size`` in a shuffled order and random shifts up to ``max_shift`` pixels,
    drawn from the generator given to ``begin_epoch`` exactly as ``datasets.BatchIterator`` draws them.
    The loss is the cross-entropy of the model's logits (mean over the batch), with ``label_smoothing``
    as ``F.cross_entropy``'s (the same fused op, so a replay matches an eager ``train_epoch`` step)."""

    def __init__(self, model: Module, optimizer: Optimizer, images: Any, labels: Any, batch_size: int,
                 max_shift: int = 0, shuffle: bool = True, label_smoothing: float = 0.0) -> None:
        backend = model.backend
        if backend.name not in GRAPH_BACKENDS:
            raise ValueError(f"GraphedStep: CUDA graphs need the model on the cuda or cuda-sim backend, got "
                             f"{backend.name!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"GraphedStep: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"GraphedStep: max_shift must be an int >= 0, got {max_shift!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"GraphedStep: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"GraphedStep: needs as many labels as images, at least one; got {len(images)} images "
                             f"and {len(labels)} labels")
        if getattr(images, "ndim", 0) != 4:
            raise ValueError(f"GraphedStep: images must be (N, C, H, W), got shape {getattr(images, 'shape', None)}")
        host_labels = labels if isinstance(labels, np.ndarray) else backend.to_numpy(labels)
        if host_labels.dtype.kind not in "iu":
            raise TypeError(f"GraphedStep: labels must be integers, got dtype {host_labels.dtype}")
        self.model, self.optimizer, self.backend = model, optimizer, backend
        self.batch_size, self.max_shift, self.shuffle = batch_size, max_shift, shuffle
        self.label_smoothing = float(label_smoothing)  # a kernel argument: fixed for the graph's life
        self.count = len(images)
        full_steps, rest = divmod(self.count, batch_size)
        #: steps in an epoch: the full batches, then a partial one when batch_size does not divide the set
        self.steps = full_steps + (1 if rest else 0)
        self._label_range = (int(host_labels.min()), int(host_labels.max()))
        self._classes_checked = False
        upload = backend.asarray
        self.images = images if backend.owns(images) else upload(images)
        self.labels = upload(host_labels.astype(np.int32))
        self._background = self.images.min().reshape(1)  # what shifted-in pixels get (datasets.BatchIterator)
        # the per-step state on the device: addresses fixed once, contents rewritten each epoch
        self._step = upload(np.zeros(1, np.int64))
        self._total = upload(np.zeros(1, np.float64))
        self._order = upload(np.zeros(self.count, np.int32))
        self._offsets = upload(np.zeros((self.count, 2), np.int32)) if max_shift else None
        self._host_hyper: np.ndarray | None = None
        self._hyper: Any = None
        self._host_keys = np.zeros((self.steps, 1), np.uint32)
        self._keys = upload(self._host_keys)
        # the dropout calls of one step, in order: the generator each draws from (None until a step ran)
        self._slots: list[Any] | None = None
        self._calls: list[Any] = []
        self._next = 0  # this epoch's next step
        self._epoch_ready = False
        self._pool: Any = None
        self._warmed = False
        #: the captured step (None until the second full batch), with ``replay()`` and ``replays``
        self.graph: Any = None
        self._graph_grads: list[Any] = []
        self._captured_arrays: list[Any] = []

    # ------------------------------------------------------------------ an epoch's tables
    def begin_epoch(self, rng: np.random.Generator, schedule: LRSchedule | None = None) -> None:
        """Draw this epoch's order and shifts from ``rng``, plan every step's hyper-parameters (the
        optimizer's ``step_count``, and ``schedule`` when given, advance through the whole epoch
        now, as ``steps`` eager steps would advance them) and upload the tables."""
        if self._epoch_ready and self._next < self.steps:
            raise RuntimeError(f"GraphedStep.begin_epoch: {self.steps - self._next} steps of the last epoch have not "
                               f"run; run them first (the optimizer and schedule were planned through them)")
        order = rng.permutation(self.count) if self.shuffle else np.arange(self.count)
        device = self.backend.device
        device.copy_from_host(self._order, order.astype(np.int32))
        if self.max_shift:
            shifts = [shift_offsets(rng, len(order[start:start + self.batch_size]), self.max_shift)
                      for start in range(0, self.count, self.batch_size)]
            device.copy_from_host(self._offsets, np.concatenate(shifts).astype(np.int32))
        self._plan_hyper(schedule)
        if self._slots is not None:
            self._draw_keys(0)
        device.copy_from_host(self._step, np.zeros(1, np.int64))
        device.copy_from_host(self._total, np.zeros(1, np.float64))
        self._next, self._epoch_ready = 0, True
        self.model.train()

    def _plan_hyper(self, schedule: LRSchedule | None) -> None:
        rows = []
        for _ in range(self.steps):
            self.optimizer.step_count += 1
            rows.append(self.optimizer.table_row())
            if schedule is not None:
                schedule.step()
        host = np.asarray(rows, dtype=self.optimizer.params[0].dtype)
        if self._hyper is None:
            self._hyper = self.backend.asarray(host)
        else:
            self.backend.device.copy_from_host(self._hyper, host)

    def _draw_keys(self, first: int) -> None:
        """The dropout keys of steps first.. of this epoch, drawn step by step and call by call, in
        the order the eager steps would draw them from the calls' generators."""
        for row in range(first, self.steps):
            for slot, generator in enumerate(self._slots):
                self._host_keys[row, slot] = dropout_key(draw_seed(generator))
        self.backend.device.copy_from_host(self._keys, self._host_keys)

    def table_seed(self, generator: Any) -> TableSeed:
        """A dropout call of the step asks for its seed (``functions.dropout.seeds_from``)."""
        slot = len(self._calls)
        self._calls.append(generator)
        if self._slots is None:  # the first step: draw now, as an eager step would, and learn the calls
            grown = slot >= self._host_keys.shape[1]
            if grown:
                self._host_keys = np.pad(self._host_keys, ((0, 0), (0, 1)))
            self._host_keys[self._next, slot] = dropout_key(draw_seed(generator))
            if grown:  # one upload either way
                self._keys = self.backend.asarray(self._host_keys)
            else:
                self.backend.device.copy_from_host(self._keys, self._host_keys)
        elif slot >= len(self._slots) or self._slots[slot] is not generator:
            raise ValueError(f"GraphedStep: dropout call {slot + 1} of this step is not the one the first step made "
                             f"({len(self._slots)} calls then); a graphed step must make the same dropout calls, "
                             f"from the same generators, every step")
        return TableSeed(self._keys, self._step, slot)

    # ------------------------------------------------------------------ steps
    def step(self) -> None:
        """Run the epoch's next step: a replay for a full batch once the graph exists, else eagerly."""
        if not self._epoch_ready or self._next >= self.steps:
            raise RuntimeError("GraphedStep.step: no step left in this epoch; call begin_epoch(rng) first")
        count = min(self.batch_size, self.count - self._next * self.batch_size)
        if count < self.batch_size:
            self._run(count)
        elif self.graph is not None:
            self._check_arrays_unchanged()
            self.graph.replay()
            self._show_graph_grads()
        elif not self._warmed:  # warm-up: compile and load every kernel, fill the graph's pool
            device = self.backend.device
            self._pool = device.new_graph_pool()
            with device.using_graph_pool(self._pool):
                self._run(count)
            self._warmed = True
        else:
            self._capture()
            self.graph.replay()
        self._next += 1

    def _capture(self) -> None:
        device = self.backend.device
        device.begin_capture(self._pool)
        try:
            self._run(self.batch_size)
        except BaseException:
            try:
                device.end_capture()
            except Exception:  # noqa: BLE001 - the capture's own error is the one to report
                pass
            raise
        self.graph = device.end_capture()
        self._graph_grads = [p.grad for p in self.optimizer.params]
        self._captured_arrays = self._arrays_in_use()

    def _arrays_in_use(self) -> list[Any]:
        """The parameter and optimizer-state arrays the graph was captured with (it holds their addresses)."""
        return [a for p in self.optimizer.params for a in (p.data, *p.state.values())]

    def _check_arrays_unchanged(self) -> None:
        now = self._arrays_in_use()
        if len(now) != len(self._captured_arrays) or any(a is not b for a, b in zip(now, self._captured_arrays)):
            raise RuntimeError("GraphedStep: the parameters or the optimizer state were replaced since the step was "
                               "captured (load_state_dict, gpucnn.load, to(...)?); the graph would update the old "
                               "arrays. Make a new GraphedStep (or Trainer) after loading")

    def _show_graph_grads(self) -> None:
        # after a replay the gradients are in the graph's arrays: make .grad show them
        for p, grad in zip(self.optimizer.params, self._graph_grads):
            p.grad = grad

    def _run(self, count: int) -> None:
        """One step's launches (recorded instead of run while capturing)."""
        backend, optimizer = self.backend, self.optimizer
        self._calls = []
        optimizer.zero_grad()
        x, y = backend.gather_batch(self.images, self.labels, self._order, self._offsets, self._step,
                                    self.batch_size, count, self.max_shift, self._background)
        with seeds_from(self):
            logits = self.model(x)
        self._check_classes(logits.shape)
        dlogits = backend.softmax_cross_entropy_accumulate(logits.data, y, self._total, self.label_smoothing)
        logits.backward(Tensor(dlogits, backend=backend))
        optimizer.step_from_table(self._hyper, self._step)
        backend.step_advance(self._step)
        if self._slots is None:
            self._slots = self._calls
            self._draw_keys(self._next + 1)
        elif len(self._calls) != len(self._slots):
            raise ValueError(f"GraphedStep: this step made {len(self._calls)} dropout calls, the first step "
                             f"{len(self._slots)}; a graphed step must make the same calls every step")

    def _check_classes(self, shape: tuple[int, ...]) -> None:
        if self._classes_checked:
            return
        if len(shape) != 2:
            raise ValueError(f"GraphedStep: the model must return logits (N, classes), got shape {shape}")
        low, high = self._label_range
        if low < 0 or high >= shape[1]:
            raise ValueError(f"GraphedStep: labels must lie in [0, {shape[1]}), got labels from {low} to {high}")
        self._classes_checked = True

    # ------------------------------------------------------------------ results
    def loss_sum(self) -> float:
        """The summed loss of this epoch's steps so far (float64 on the device; one copy back)."""
        return float(self.backend.to_numpy(self._total)[0])

    @property
    def images_done(self) -> int:
        """Images trained on so far this epoch."""
        return min(self._next * self.batch_size, self.count)
