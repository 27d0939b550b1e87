"""Sequential, ModuleList and Concat (parallel branches joined on the channel axis)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..functions.basic import cat
from ..functions.linear import Linear as LinearFunction
from .activation import ReLU
from .basic import Linear
from .conv import Conv2d
from .module import Module, summary_is_recording
from .pooling import MaxPool2d


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

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Runs its layers in order. Runs of layers that one op does (or whose backward one step
    does), each exactly equal to the layers one by one, run fused:
    Conv2d -> ReLU -> MaxPool2d, Conv2d -> ReLU, ReLU -> MaxPool2d, Linear -> ReLU."""

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
        layers = self.layers
        fuse = not summary_is_recording()
        i = 0
        while i < len(layers):
            first, second, third = (layers[i:i + 3] + [None, None])[:3]
            if fuse and type(first) is Conv2d and type(second) is ReLU and type(third) is MaxPool2d:
                x, i = first.forward_relu_maxpool(first._as_input(x), third), i + 3
            elif fuse and type(first) is Conv2d and type(second) is ReLU:
                x, i = first.forward(first._as_input(x), relu=True), i + 2
            elif fuse and type(first) is ReLU and type(second) is MaxPool2d:
                x, i = second.forward_after_relu(first._as_input(x)), i + 2
            elif fuse and type(first) is Linear and type(second) is ReLU:
                # not while an exporter traces the calls: it reads Linear as Gemm without the ReLU
                x, i = _linear_relu(first, first._as_input(x)), i + 2
            else:
                x, i = first(x), i + 1
        return x


def _linear_relu(layer: Linear, x: Any) -> Any:
    """relu(layer(x)) as one op (the ReLU in the GEMM's epilogue), after Linear.forward's checks."""
    layer._check_input(x, None, layout="(N, C)")
    if x.ndim < 1 or x.shape[-1] != layer.in_features:
        raise ValueError(f"Linear: expected input of shape (N, {layer.in_features}), got {x.shape}")
    return LinearFunction.apply(x, layer.weight, layer.bias, True)


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
