"""Sequential and Concat (parallel branches joined on the channel axis)."""

from __future__ import annotations

from typing import Any

from .activation import ReLU
from .conv import Conv2d
from .module import Module
from .pooling import MaxPool2d


class Sequential(Module):
    can_skip_input_grad = True

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} must be a gpucnn Module, got {type(layer).__name__}")
            setattr(self, str(i), layer)
        self.layers = list(layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x: Any) -> Any:
        chunk = self.backend.eval_batch_chunk
        if not self.training and chunk and getattr(x, "ndim", 0) >= 1 and x.shape[0] > chunk:
            # eval mode: every layer treats samples independently, so run the whole stack over
            # cache-sized slices of the batch (the CPU backend asks for this; a GPU does not)
            parts = [self._forward_layers(x[start:start + chunk]) for start in range(0, x.shape[0], chunk)]
            return self.backend.xp.concatenate(parts)
        return self._forward_layers(x)

    def _forward_layers(self, x: Any) -> Any:
        # Runs of layers done by one op, or whose backward is (each exactly equal to the layers one
        # by one); the backward pass walks the same runs, mirroring the forward that ran.
        self._runs: list[tuple[int, str]] = []
        i = 0
        while i < len(self.layers):
            first, second, third = (self.layers[i:i + 3] + [None, None])[:3]
            if type(first) is Conv2d and type(second) is ReLU and type(third) is MaxPool2d:
                # the conv, its ReLU and the pooling in one op: the CPU pools each batch chunk in cache
                x = first.forward_relu_maxpool(x, second, third)
                run = "conv_relu_maxpool"
            elif type(first) is Conv2d and type(second) is ReLU:
                # one op instead of two: the conv kernel's epilogue rectifies its output
                x = second.adopt_output(first.forward(x, relu=True))
                run = "conv_relu"
            elif type(first) is ReLU and type(second) is MaxPool2d:
                x = second.forward(first.forward(x))
                run = "relu_maxpool"  # two forwards, one backward
            else:
                x = first.forward(x)
                run = "single"
            self._runs.append((i, run))
            i += _RUN_WIDTH[run]
        return x

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if not hasattr(self, "_runs"):
            raise RuntimeError("Sequential: backward called before forward")
        for i, run in reversed(self._runs):
            layer, need = self.layers[i], need_input_grad or i > 0
            if run == "conv_relu_maxpool":
                dy = layer.backward_relu_maxpool(dy, self.layers[i + 2], need_input_grad=need)
            elif run == "conv_relu":
                dy = layer._backward_maybe_input(self.layers[i + 1].backward(dy), need)
            elif run == "relu_maxpool":
                # the ReLU mask on the pooled gradient, a quarter of the size for 2x2 windows
                dy = self.layers[i + 1].backward_through_relu(dy)
            else:
                dy = layer._backward_maybe_input(dy, need)
        return dy


_RUN_WIDTH = {"conv_relu_maxpool": 3, "conv_relu": 2, "relu_maxpool": 2, "single": 1}


class Concat(Module):
    """Runs every branch on the same input and concatenates their outputs on ``axis`` (channels):
    the shape of an Inception block, e.g. 1x1, 1x1->3x3 and pool->1x1 branches side by side."""

    can_skip_input_grad = True

    def __init__(self, *branches: Module, axis: int = 1) -> None:
        super().__init__()
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        for i, branch in enumerate(branches):
            if not isinstance(branch, Module):
                raise TypeError(f"Concat: branch {i} must be a gpucnn Module, got {type(branch).__name__}")
            setattr(self, str(i), branch)
        self.branches = list(branches)
        self.axis = axis

    def forward(self, x: Any) -> Any:
        outputs = [branch.forward(x) for branch in self.branches]
        shapes = [tuple(o.shape) for o in outputs]
        rest = {s[:self.axis] + s[self.axis + 1:] for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"Concat: branch outputs must agree on every axis but {self.axis}, got {shapes}")
        self._sizes = [s[self.axis] for s in shapes]
        return self.backend.xp.concatenate(outputs, axis=self.axis)

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        xp = self.backend.xp
        bounds = [sum(self._sizes[:i + 1]) for i in range(len(self._sizes) - 1)]
        pieces = xp.split(dy, bounds, axis=self.axis)
        dx = None
        for branch, piece in zip(self.branches, pieces):
            grad = branch._backward_maybe_input(xp.ascontiguousarray(piece), need_input_grad)
            if grad is not None:
                dx = grad if dx is None else dx + grad
        return dx
