"""DataParallel: every rank holds the whole model, trains on its part of each batch, and averages
gradients in flat buckets while backward runs.

Buckets take the parameters in reverse order (backward produces the last layer's gradients first),
a few MiB each. A parameter's post-accumulate hook counts it ready; a bucket whose parameters are
all ready is started, buckets strictly in order so that every rank issues the same collectives in
the same order. When the last bucket has started, the sums are awaited, divided by the world size
and written back as the parameters' ``.grad``: when ``loss.backward()`` returns, the gradients are
the average over all ranks, bit for bit the same on each.
"""

from __future__ import annotations

from typing import Any

from ..core.tensor import Parameter, Tensor
from ..nn.module import Module
from .world import broadcast, communicator_for, world_size

DEFAULT_BUCKET_MIB = 4.0


class DataParallel(Module):
    """Wrap ``module`` for data-parallel training (``gpucnn.distributed.init()`` first).

    Broadcasts rank 0's parameters and buffers, so every rank starts from the same model, and
    rank 0's buffers after each training forward (``broadcast_buffers``). Its
    ``state_dict``, ``load_state_dict`` and parameter names are the wrapped module's (a checkpoint
    has no ``module.`` prefix and loads with any world size). The rules PyTorch's
    DistributedDataParallel has: every rank runs the same graph, and a parameter gets one gradient
    per backward (a weight used twice in one forward, e.g. tied embeddings, is refused with an
    error). Parameters no backward reached count as zero on that rank once
    ``finish_gradient_sync()`` is called (the Trainer does). With one rank it only forwards.
    """

    def __init__(self, module: Module, bucket_mib: float = DEFAULT_BUCKET_MIB, broadcast_buffers: bool = True) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "backend", module.backend)
        self.world, self.broadcast_buffers = world_size(), broadcast_buffers
        params = [p for p in module.parameters() if p.requires_grad]
        self._names = {id(p): name for name, p in module.named_parameters()}
        if self.world > 1:
            for p in params:
                broadcast(p.data)
            for _, buffer in module.named_buffers() if broadcast_buffers else ():
                broadcast(buffer)
        self.buckets = _buckets(params[::-1], int(bucket_mib * 2 ** 20))
        self._bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._hooks = [p.register_post_accumulate_grad_hook(self._ready) for p in params] if self.world > 1 else []
        self._reset()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.module(*args, **kwargs)
        if self.training and self.world > 1 and self.broadcast_buffers:
            # as PyTorch's DDP, BatchNorm's running statistics are rank 0's; after the forward that
            # updated them, so that every rank holds the same state at any time between steps and
            # evaluation on all ranks, and rank 0's checkpoint, agree
            for _, buffer in self.module.named_buffers():
                broadcast(buffer)
        return out

    # ---------------------------------------------------------------- the state is the module's
    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Any:
        return self.module.named_parameters(prefix, recurse)

    def named_buffers(self, prefix: str = "") -> Any:
        return self.module.named_buffers(prefix)

    def state_dict(self) -> Any:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any:
        return self.module.load_state_dict(state_dict, strict)

    def parameter_keys(self) -> set[str]:
        return self.module.parameter_keys()

    def extra_repr(self) -> str:
        sizes = ", ".join(str(len(b)) for b in self.buckets)
        return f"world_size={self.world}, buckets of {sizes} parameters"

    # ---------------------------------------------------------------- gradient averaging
    def _reset(self) -> None:
        self._seen: set[int] = set()
        self._count = [0] * len(self.buckets)
        self._next = 0                      # the next bucket to start
        self._pending: list[tuple[int, Any, list[bool]]] = []

    def _ready(self, p: Parameter) -> None:
        if id(p) in self._seen:
            self._reset()
            raise RuntimeError(f"DataParallel: parameter {self._names.get(id(p), '?')!r} received a second gradient "
                               f"in one backward pass (a weight used twice in one forward); DataParallel averages "
                               f"each parameter once per backward")
        self._seen.add(id(p))
        self._count[self._bucket_of[id(p)]] += 1
        while self._next < len(self.buckets) and self._count[self._next] == len(self.buckets[self._next]):
            self._start(self._next)
        for _, pending, _ in self._pending:
            pending.poll()
        if self._next == len(self.buckets):
            self.finish_gradient_sync()

    def _start(self, index: int) -> None:
        bucket = self.buckets[index]
        xp = bucket[0].backend.xp
        had_grad = [p.grad is not None for p in bucket]
        flat = xp.concatenate([(p.grad.data if p.grad is not None else xp.zeros_like(p.data)).reshape(-1)
                               for p in bucket])
        self._pending.append((index, communicator_for(flat).start_sum(flat), had_grad))
        self._next = index + 1

    def finish_gradient_sync(self) -> None:
        """Wait for the buckets under way and write the averaged gradients back. Backward calls it
        when the last bucket starts; call it after backward (the Trainer does) when some parameters
        may have had no gradient, so that their buckets are averaged too. Does nothing when no
        backward ran since the last call."""
        if not self._seen:
            return
        while self._next < len(self.buckets):
            self._start(self._next)
        pending, self._pending = self._pending, []
        self._reset()
        for index, sum_under_way, had_grad in pending:
            average = sum_under_way.wait()
            average /= self.world
            offset = 0
            for p, had in zip(self.buckets[index], had_grad):
                part = average[offset:offset + p.numel()].reshape(p.shape)
                offset += p.numel()
                # a parameter no rank reached keeps grad None, so the optimizer leaves it alone
                if had or bool(part.any()):
                    p.grad = Tensor(part, backend=p.backend)

    def remove_hooks(self) -> None:
        """Stop averaging (the model trains on this rank's gradients alone)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def _buckets(params: list[Parameter], limit: int) -> list[list[Parameter]]:
    """Consecutive runs of one dtype and backend of at most ``limit`` bytes (a larger parameter alone)."""
    buckets: list[list[Parameter]] = []
    size = 0
    for p in params:
        bytes_ = p.numel() * p.dtype.itemsize
        last = buckets[-1] if buckets else None
        if last is None or size + bytes_ > limit or last[0].dtype != p.dtype or last[0].backend is not p.backend:
            buckets.append([p])
            size = bytes_
        else:
            last.append(p)
            size += bytes_
    return buckets


def unwrap(model: Module) -> Module:
    """The model a DataParallel wraps (the model itself otherwise)."""
    return model.module if isinstance(model, DataParallel) else model
