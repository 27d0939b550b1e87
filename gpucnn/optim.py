"""Optimizers (SGD with momentum/Nesterov/weight decay, Adam, AdamW) and learning-rate schedules.

The arithmetic is each backend's fused update op, over all parameters at once (``sgd_update_many``,
one kernel launch on the CUDA backends) or over one parameter; the state arrays live on the
parameters (``param.state``) so that ``model.to(backend)`` moves them too.
"""

from __future__ import annotations

import math
from typing import Any

from .backends.base import adam_step_factors
from .core.tensor import Parameter
from .nn.module import Module


class Optimizer:
    #: hyper-parameters saved with a checkpoint
    hyper: tuple[str, ...] = ("lr",)

    def __init__(self, params: Any, lr: float) -> None:
        if isinstance(params, Module):
            params = params.parameters()
        self.params: list[Parameter] = list(params)
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: expected Parameters (model.parameters()), got "
                                f"{type(p).__name__}")
        if len({id(p) for p in self.params}) != len(self.params):
            # one launch updates every parameter at once: a parameter listed twice would race with itself
            raise ValueError(f"{type(self).__name__}: a parameter is listed more than once")
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimise")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.step_count = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.zero_grad(set_to_none)

    def step(self) -> None:
        self.step_count += 1
        for backend, params in self._groups():
            self._update(backend, params)

    def _groups(self) -> list[tuple[Any, list[Parameter]]]:
        # one update call per (backend, dtype): a model whose parameters all live on one backend in
        # one dtype is updated by one op
        groups: dict[tuple[int, Any], tuple[Any, list[Parameter]]] = {}
        for p in self.params:
            if p.grad is not None:
                groups.setdefault((id(p.backend), p.data.dtype), (p.backend, []))[1].append(p)
        return list(groups.values())

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        """Update ``params`` (all with gradients, on ``backend``, of one dtype)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- per-step tables (CUDA graphs)
    def table_row(self) -> list[float]:
        """This step's hyper-parameters as one row of the table ``step_from_table`` reads (after
        ``step_count`` has been advanced to the step, as ``step`` does before it updates)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-step table form (CUDA graphs)")

    def step_from_table(self, hyper: Any, step: Any) -> None:
        """What ``step()`` does, with the hyper-parameters read on the device from row ``step[0]`` of
        ``hyper`` (rows of ``table_row``, planned ahead by gpucnn.cuda_graph), so that a captured step
        replays with each step's values. ``step_count`` is not advanced: the plan advanced it."""
        groups = self._groups()
        if len(groups) > 1:
            raise ValueError(f"{type(self).__name__}.step_from_table: the parameters with gradients are on "
                             f"{len(groups)} (backend, dtype) pairs; a table-driven step needs them all on one")
        for backend, params in groups:
            self._ensure_state(backend, params)
            self._update_from_table(backend, params, hyper, step)

    def _ensure_state(self, backend: Any, params: list[Parameter]) -> None:
        """Create missing optimizer state (zeros) for ``params``."""

    def _update_from_table(self, backend: Any, params: list[Parameter], hyper: Any, step: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no per-step table form (CUDA graphs)")

    def hyperparameters(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.hyper} | {"step_count": self.step_count}

    def load_hyperparameters(self, values: dict[str, Any]) -> None:
        for name in self.hyper:
            if name in values:
                setattr(self, name, values[name])
        self.step_count = int(values.get("step_count", 0))


class SGD(Optimizer):
    """p -= lr * g with g = grad + wd*p; momentum keeps v = mu*v + g (PyTorch's form, dampening 0);
    Nesterov steps along g + mu*v."""

    hyper = ("lr", "momentum", "weight_decay", "nesterov")

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)

    def _ensure_state(self, backend: Any, params: list[Parameter]) -> None:
        if self.momentum:
            for p in params:
                if "velocity" not in p.state:
                    p.state["velocity"] = backend.xp.zeros_like(p.data)

    def _velocities(self, params: list[Parameter]) -> list[Any] | None:
        return [p.state["velocity"] for p in params] if self.momentum else None

    def table_row(self) -> list[float]:
        return [self.lr, self.momentum, self.weight_decay]

    def _update_from_table(self, backend: Any, params: list[Parameter], hyper: Any, step: Any) -> None:
        backend.sgd_update_many_stepped([p.data for p in params], [p.grad.data for p in params],
                                        self._velocities(params), hyper, step, self.nesterov)

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        self._ensure_state(backend, params)
        velocities = self._velocities(params)
        hyper = (self.lr, self.momentum, self.weight_decay, self.nesterov)
        if len(params) == 1:  # no table of pointers to build
            backend.sgd_update(params[0].data, params[0].grad.data, None if velocities is None else velocities[0],
                                *hyper)
        else:
            backend.sgd_update_many([p.data for p in params], [p.grad.data for p in params], velocities, *hyper)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight decay is L2 (added to the gradient)."""

    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    decoupled = False

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def _ensure_state(self, backend: Any, params: list[Parameter]) -> None:
        for p in params:
            if "m" not in p.state:
                p.state["m"] = backend.xp.zeros_like(p.data)
                p.state["v"] = backend.xp.zeros_like(p.data)

    def table_row(self) -> list[float]:
        # the factors CudaBackend.adam_update_many computes for an eager step, so the float32 values agree
        step_size, inv_bias2_sqrt = adam_step_factors(self.lr, self.beta1, self.beta2, self.step_count)
        return [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, step_size, inv_bias2_sqrt]

    @staticmethod
    def _arrays(params: list[Parameter]) -> tuple[list, list, list, list]:
        """The parameters', gradients', first and second moments' arrays, in parameter order."""
        return ([p.data for p in params], [p.grad.data for p in params], [p.state["m"] for p in params],
                [p.state["v"] for p in params])

    def _update_from_table(self, backend: Any, params: list[Parameter], hyper: Any, step: Any) -> None:
        backend.adam_update_many_stepped(*self._arrays(params), hyper, step, self.decoupled)

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        self._ensure_state(backend, params)
        hyper = (self.step_count, self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled)
        if len(params) == 1:  # no table of pointers to build
            p = params[0]
            backend.adam_update(p.data, p.grad.data, p.state["m"], p.state["v"], *hyper)
        else:
            backend.adam_update_many(*self._arrays(params), *hyper)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr*wd before the step."""

    decoupled = True

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class LRSchedule:
    """Sets ``optimizer.lr`` from the epoch (or step) count each time ``step()`` is called."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.count = 0

    def lr_at(self, count: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
        return self.optimizer.lr


class StepLR(LRSchedule):
    """lr = base * gamma ** (count // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, count: int) -> float:
        return self.base_lr * self.gamma ** (count // self.step_size)


class CosineLR(LRSchedule):
    """Cosine annealing from base to ``min_lr`` over ``total`` steps, then held at min_lr."""

    def __init__(self, optimizer: Optimizer, total: int, min_lr: float = 0.0) -> None:
        super().__init__(optimizer)
        self.total, self.min_lr = int(total), float(min_lr)

    def lr_at(self, count: int) -> float:
        t = min(count, self.total) / self.total
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


class OneCycleLR(LRSchedule):
    """The one-cycle policy (Smith & Topin), stepped once per optimizer step, with PyTorch's names
    and values (``torch.optim.lr_scheduler.OneCycleLR``, two phases): from ``max_lr / div_factor``
    up to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then down to
    ``max_lr / div_factor / final_div_factor``, by cosine (``anneal_strategy="cos"``) or linearly.
    With ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's ``beta1``) goes the other way,
    from ``max_momentum`` down to ``base_momentum`` and back. Made, it sets the first step's lr;
    past ``total_steps`` the final lr is held (PyTorch raises).

    ``per_step = True``: ``Trainer`` steps it after every optimizer step, not after every epoch."""

    per_step = True

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4) -> None:
        super().__init__(optimizer)
        if total_steps <= 0:
            raise ValueError(f"OneCycleLR: total_steps must be > 0, got {total_steps!r}")
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.max_lr, self.total_steps, self.pct_start = float(max_lr), int(total_steps), float(pct_start)
        self.anneal_strategy = anneal_strategy
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        self.base_lr = self.initial_lr
        self.momentum_name = None
        if cycle_momentum:
            self.momentum_name = next((n for n in ("momentum", "beta1") if hasattr(optimizer, n)), None)
            if self.momentum_name is None or (self.momentum_name == "momentum" and not optimizer.momentum):
                raise ValueError("OneCycleLR: cycle_momentum needs an optimizer with momentum (SGD momentum > 0 "
                                 "or Adam); pass cycle_momentum=False")
        self.base_momentum, self.max_momentum = float(base_momentum), float(max_momentum)
        # (end step, lr at the start, lr at the end, momentum at the start, momentum at the end)
        self.phases = [(float(self.pct_start * self.total_steps) - 1, self.initial_lr, self.max_lr,
                        self.max_momentum, self.base_momentum),
                       (self.total_steps - 1, self.max_lr, self.min_lr, self.base_momentum, self.max_momentum)]
        self._set(0)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def _at(self, count: int) -> tuple[float, float]:
        count = min(count, self.total_steps - 1)
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if count <= end or i == len(self.phases) - 1:
                pct = (count - start) / (end - start) if end != start else 1.0
                return self._anneal(lr0, lr1, pct), self._anneal(m0, m1, pct)
            start = end
        raise AssertionError("unreachable")

    def lr_at(self, count: int) -> float:
        return self._at(count)[0]

    def momentum_at(self, count: int) -> float:
        return self._at(count)[1]

    def _set(self, count: int) -> float:
        lr, momentum = self._at(count)
        self.optimizer.lr = lr
        if self.momentum_name is not None:
            setattr(self.optimizer, self.momentum_name, momentum)
        return lr

    def step(self) -> float:
        self.count += 1
        return self._set(self.count)
