"""The speed-run recipe in PyTorch, for benchmarks/gpu_report.py: LeNet-5 as gpucnn builds it, SGD Nesterov
under OneCycleLR, random shifts and the loss sum on the device, eager or as one CUDA graph per step (a
hand-written SGD step that reads each step's lr and momentum from device tables); and ``Run``, the
figures every timed run of the report fills (gpucnn's too)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpucnn.datasets import MNIST, normalize


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
    warmup_what: str = "compilation, first launches"
    images: int | None = None  # trained on per epoch, when not the whole set (a dropped partial batch)


def torch_lenet5(torch: Any) -> Any:
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


def one_cycle_table(torch: Any, max_lr: float, total_steps: int, pct_start: float,
                    momentum: float = 0.9) -> tuple[list[float], list[float]]:
    """Each step's (lr, momentum) under ``torch.optim.lr_scheduler.OneCycleLR`` for SGD (momentum cycled),
    read off a dummy optimizer on the host: the values torch.optim.SGD would use at steps 0..total_steps-1."""
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr, momentum=momentum, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(dummy, max_lr=max_lr, total_steps=total_steps,
                                                   pct_start=pct_start)
    group = dummy.param_groups[0]
    lrs, momentums = [], []
    for i in range(total_steps):
        lrs.append(float(group["lr"]))
        momentums.append(float(group["momentum"]))
        if i + 1 < total_steps:
            dummy.step()  # no gradients: nothing moves, but the scheduler sees the order it expects
            schedule.step()
    return lrs, momentums


def sgd_nesterov_update(torch: Any, params: Sequence[Any], buffers: Sequence[Any], lr: Any, momentum: Any,
                        weight_decay: float) -> None:
    """torch.optim.SGD(momentum, nesterov=True, dampening=0, weight_decay)'s step on ``params`` (their
    ``.grad``), with ``lr`` and ``momentum`` as 0-d tensors: g = grad + wd*p; buf = mom*buf + g;
    p -= lr * (g + mom*buf). Zero ``buffers`` give SGD's first step (it starts its buffer at g).
    Tensors rather than floats because a CUDA graph bakes a Python float into the captured kernel."""
    grads = [p.grad for p in params]
    with torch.no_grad():
        g = torch._foreach_add(grads, list(params), alpha=weight_decay) if weight_decay else grads
        torch._foreach_mul_(list(buffers), momentum)
        torch._foreach_add_(list(buffers), g)
        direction = torch._foreach_mul(list(buffers), momentum)
        torch._foreach_add_(direction, g)
        torch._foreach_mul_(direction, lr)
        torch._foreach_sub_(list(params), direction)


class TableSGD:
    """SGD Nesterov under a per-step schedule, all on the device, for a CUDA-graph step: each step's lr
    and momentum (``one_cycle_table``) live in device tables read at a device step counter that the step
    itself advances, so one captured step replays the whole schedule. Runs eagerly just the same."""

    def __init__(self, torch: Any, params: Sequence[Any], lrs: Sequence[float], momentums: Sequence[float],
                 weight_decay: float) -> None:
        self.torch, self.params, self.weight_decay = torch, list(params), float(weight_decay)
        device, dtype = self.params[0].device, self.params[0].dtype
        self.lr = torch.tensor(list(lrs), dtype=dtype, device=device)
        self.momentum = torch.tensor(list(momentums), dtype=dtype, device=device)
        self.count = torch.zeros(1, dtype=torch.long, device=device)
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def step(self) -> None:
        torch = self.torch
        # index_select, not table[count]: indexing by a 0-d integer tensor reads it back to the host (.item())
        lr = torch.index_select(self.lr, 0, self.count).reshape(())
        momentum = torch.index_select(self.momentum, 0, self.count).reshape(())
        sgd_nesterov_update(torch, self.params, self.buffers, lr, momentum, self.weight_decay)
        self.count.add_(1)

    def reset(self) -> None:
        """Back to step 0 with zero momentum buffers (after a warm-up)."""
        self.count.zero_()
        for buf in self.buffers:
            buf.zero_()


def torch_run(torch: Any, data: MNIST, recipe: Any, device: str, graphs: bool) -> Run:
    """The report's recipe (a gpu_report.Recipe) in PyTorch: data and shifts on the device, the loss summed
    there.

    Eager: torch.optim.SGD (Nesterov) with torch's OneCycleLR stepped after every optimizer step.
    With ``graphs``, each step (gather, shift, forward, backward, the ``TableSGD`` update, the step
    counter) is one replay of a CUDA graph captured once, after a warm-up on a side stream (capture
    time counts as warm-up); the last partial batch is dropped there (a graph has fixed shapes), so
    the schedule counts n // batch steps an epoch. On the CPU (``--dry-run``) the same step runs eagerly."""
    functional = torch.nn.functional
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(recipe.seed)
    capture = graphs and device == "cuda"
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started = time.perf_counter()
    x_train = torch.from_numpy(normalize(data.train_images)).to(device)
    y_train = torch.from_numpy(data.train_labels).to(device)
    x_test = torch.from_numpy(normalize(data.test_images)).to(device)
    y_test = torch.from_numpy(data.test_labels).to(device)
    background = float(x_train.min())
    model = torch_lenet5(torch).to(device)
    params = list(model.parameters())
    n, batch, s = len(x_train), recipe.batch_size, recipe.shift
    steps = n // batch if graphs else math.ceil(n / batch)
    if steps == 0:
        raise ValueError(f"{n} training images make no full batch of {batch}")
    total_steps = recipe.epochs * steps

    def make_sgd() -> Any:
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                               weight_decay=recipe.weight_decay)

    if graphs:
        table_sgd = TableSGD(torch, params, *one_cycle_table(torch, recipe.lr, total_steps, recipe.pct_start,
                                                             recipe.momentum), recipe.weight_decay)
        update = table_sgd.step
    else:
        opt = make_sgd()  # the warm-up's; the timed run gets a fresh one and its schedule
        update = opt.step
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
        # None: under capture, backward then allocates the gradients from the graph's pool (PyTorch's recipe)
        model.zero_grad(set_to_none=True)
        x, y = shift(x_train[idx]), y_train[idx]
        loss = functional.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        loss.backward()
        update()
        total.add_(loss.detach().double() * len(idx))

    def evaluate() -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad():
            for start in range(0, len(x_test), 1000):
                correct += (model(x_test[start:start + 1000]).argmax(1) == y_test[start:start + 1000]).sum()
        model.train()
        return int(correct) / len(x_test)

    # warm-up (on a side stream before a capture, as CUDA-graph capture wants); then the weights are put back
    state = {k: v.clone() for k, v in model.state_dict().items()}
    side = torch.cuda.Stream() if capture else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        for _ in range(3):
            if graphs:  # the table may be shorter than the warm-up (a dry run has one step)
                table_sgd.count.zero_()
            index.copy_(torch.randint(0, n, (batch,), device=device))
            step(index)
    if side is not None:
        torch.cuda.current_stream().wait_stream(side)
    evaluate()
    synchronize()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])
    schedule = None
    if graphs:
        table_sgd.reset()
    else:
        opt = make_sgd()
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps,
                                                       pct_start=recipe.pct_start)
        update = opt.step
    graph = None
    if capture:  # once for the whole run: the schedule is read from the tables at the step counter
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(index)
    synchronize()
    dropped = f"last partial batch dropped (fixed shapes): {steps * batch:,} of {n:,} images an epoch"
    if graphs and not capture:
        note = f"dry run: the graph step's code run eagerly on the CPU, no capture; {dropped}"
    elif graphs:
        note = ("one capture for the whole run, each full batch one replay (lr and momentum read from device "
                f"tables at a device step counter); {dropped}")
    else:
        note = ""
    run = Run(f"PyTorch {'CUDA graphs' if graphs else 'eager'} ({device})", time.perf_counter() - started, note=note,
              warmup_what="data upload, first launches" + (", graph capture" if capture else ""),
              images=steps * batch if graphs else None)

    for _ in range(recipe.epochs):
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
                if schedule is not None:
                    schedule.step()
        synchronize()
        run.train_s.append(time.perf_counter() - began)
        run.train_loss.append(float(total) / (steps * batch if graphs else n))
        began = time.perf_counter()
        run.test_acc.append(evaluate())
        run.eval_s.append(time.perf_counter() - began)
        if recipe.target is not None and run.test_acc[-1] >= recipe.target:
            break
    return run
