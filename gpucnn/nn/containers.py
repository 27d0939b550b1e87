"""Sequential, ModuleList and Concat (parallel branches joined on the channel axis)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..core.shape_ops import cat
from .activation import ReLU
from .basic import Linear
from .conv import Conv2d
from .module import Module, summary_is_recording
from .pooling import MaxPool2d

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["Concat", "ModuleList", "Sequential"]


def _check_modules(owner: str, items: Iterable[Any], what: str = "item") -> list[Module]:
    items = list(items)
    for i, item in enumerate(items):
        if not isinstance(item, Module):
            raise TypeError(f"{owner}: {what} {i} must be a gpucnn Module, got {type(item).__name__}")
    return items


class ModuleList(Module):
    """A list of modules whose parameters are registered (named ``0``, ``1``, ...)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for module in _check_modules(type(self).__name__, modules):
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        _check_modules(type(self).__name__, [module])
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index: int | slice) -> Any:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            part = type(self).__new__(type(self))
            ModuleList.__init__(part, layers[index])
            for key, value in self.__dict__.items():  # the container's own settings (Concat's dim), backend
                if key not in ("_parameters", "_buffers", "_modules") and not key.isdigit():
                    object.__setattr__(part, key, value)
            return part.train(self.training)
        return layers[index]

    def __setitem__(self, index: int, module: Module) -> None:
        """Replace one layer, keeping its name (``model[1] = nn.Tanh()``, as in PyTorch)."""
        _check_modules(type(self).__name__, [module])
        setattr(self, list(self._modules)[index], module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Runs its layers in order. Runs of layers that one op does (or whose backward one step
    does), each exactly equal to the layers one by one, run fused:
    Conv2d -> ReLU -> MaxPool2d, Conv2d -> ReLU, ReLU -> MaxPool2d, Linear -> ReLU (a MaxPool2d with
    return_indices runs by itself: the fused ops return the pooled output alone)."""

    def __init__(self, *layers: Module) -> None:
        super().__init__(_check_modules("Sequential", layers))

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        if not isinstance(index, slice):
            return super().__getitem__(index)
        # a plain Sequential that keeps the layers' names (so its state_dict keys stay those of
        # the whole), as PyTorch's Sequential slices do
        part = Sequential()
        for name, layer in list(self._modules.items())[index]:
            part.add_module(name, layer)
        object.__setattr__(part, "backend", self.backend)
        return part.train(self.training)

    def forward(self, x: Any) -> Any:
        chunk = self.backend.eval_batch_chunk
        if not self.training and chunk and getattr(x, "ndim", 0) >= 1 and x.shape[0] > chunk:
            # eval mode: every layer treats samples independently, so run the whole stack over
            # cache-sized slices of the batch (the CPU backend asks for this; a GPU does not)
            return cat([self._forward_layers(x[start:start + chunk]) for start in range(0, x.shape[0], chunk)])
        return self._forward_layers(x)

    def _forward_layers(self, x: Any) -> Any:
        layers = tuple(self._modules.values())
        if summary_is_recording():  # one row per layer: nothing fused
            for layer in layers:
                x = layer(x)
            return x
        for step, i in _fusion_plan(tuple(map(type, layers))):
            x = step(layers, i, x)
        return x


# The fused runs depend only on the layers' types, so each sequence of types is planned once: a
# LeNet-5 eval forward runs in batch chunks (eval_batch_chunk), each of which would plan again.
_fusion_plans: dict[tuple[type, ...], tuple[tuple[Any, int], ...]] = {}


def _fusion_plan(kinds: tuple[type, ...]) -> tuple[tuple[Any, int], ...]:
    """(step, index of its first layer) for each run of layers one op does, else for each layer."""
    plan = _fusion_plans.get(kinds)
    if plan is not None:
        return plan
    steps, i = [], 0
    while i < len(kinds):
        first, second, third = (kinds[i:i + 3] + (None, None))[:3]
        if first is Conv2d and second is ReLU and third is MaxPool2d:
            steps.append((_conv_relu_max_pool, i))
            i += 3
        elif first in (Conv2d, Linear) and second is ReLU:
            steps.append((_with_relu, i))
            i += 2
        elif first is ReLU and second is MaxPool2d:
            steps.append((_relu_max_pool, i))
            i += 2
        else:
            steps.append((_one_layer, i))
            i += 1
    plan = _fusion_plans[kinds] = tuple(steps)
    return plan


def _one_layer(layers: tuple[Module, ...], i: int, x: Any) -> Any:
    return layers[i](x)


def _conv_relu_max_pool(layers: tuple[Module, ...], i: int, x: Any) -> Any:
    conv, pool = layers[i], layers[i + 2]
    if pool.return_indices:  # the fused op returns the pooled output alone: the pooling runs by itself
        return pool(_with_relu(layers, i, x))
    return conv.forward_relu_maxpool(conv._as_input(x), pool)


def _with_relu(layers: tuple[Module, ...], i: int, x: Any) -> Any:
    # Conv2d or Linear with the ReLU in its epilogue
    layer = layers[i]
    return layer.forward(layer._as_input(x), relu=True)


def _relu_max_pool(layers: tuple[Module, ...], i: int, x: Any) -> Any:
    pool = layers[i + 1]
    if pool.return_indices:  # (y, indices): not the fused op's single output
        return pool(layers[i](x))
    return pool.forward_after_relu(layers[i]._as_input(x))


class Concat(ModuleList):
    """Runs every branch on the same input and concatenates their outputs on ``dim`` (channels):
    the shape of an Inception block, e.g. 1x1, 1x1->3x3 and pool->1x1 branches side by side."""

    def __init__(self, *branches: Module, dim: int = 1) -> None:
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        super().__init__(_check_modules("Concat", branches, "branch"))
        self.dim = dim

    @property
    def branches(self) -> list[Module]:
        return list(self._modules.values())

    def forward(self, x: Any) -> Any:
        outputs = [branch(x) for branch in self.branches]
        try:
            return cat(outputs, self.dim)
        except ValueError as error:
            raise ValueError(f"Concat: branch outputs must agree on every axis but {self.dim}, got "
                             f"{[o.shape for o in outputs]}") from error
