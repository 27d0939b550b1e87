"""Optimizers (SGD with momentum/Nesterov/weight decay, Adam, AdamW) and learning-rate schedules.

The arithmetic is each backend's fused update op, over all parameters at once (``sgd_update_many``,
one kernel launch on the CUDA backends) or over one parameter; the state arrays live on the
parameters (``param.state``) so that ``model.to(backend)`` moves them too.
"""

from __future__ import annotations

import math
from typing import Any

from .nn.module import Module
from .tensor import Parameter


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
        # one update call per (backend, dtype): a model whose parameters all live on one backend in
        # one dtype is updated by one op
        groups: dict[tuple[int, Any], tuple[Any, list[Parameter]]] = {}
        for p in self.params:
            if p.grad is not None:
                groups.setdefault((id(p.backend), p.data.dtype), (p.backend, []))[1].append(p)
        for backend, params in groups.values():
            self._update(backend, params)

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        """Update ``params`` (all with gradients, on ``backend``, of one dtype)."""
        raise NotImplementedError

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

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        velocities = None
        if self.momentum:
            for p in params:
                if "velocity" not in p.state:
                    p.state["velocity"] = backend.xp.zeros_like(p.data)
            velocities = [p.state["velocity"] for p in params]
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

    def _update(self, backend: Any, params: list[Parameter]) -> None:
        for p in params:
            if "m" not in p.state:
                p.state["m"] = backend.xp.zeros_like(p.data)
                p.state["v"] = backend.xp.zeros_like(p.data)
        hyper = (self.step_count, self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled)
        if len(params) == 1:  # no table of pointers to build
            p = params[0]
            backend.adam_update(p.data, p.grad.data, p.state["m"], p.state["v"], *hyper)
        else:
            backend.adam_update_many([p.data for p in params], [p.grad.data for p in params],
                                     [p.state["m"] for p in params], [p.state["v"] for p in params], *hyper)


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
