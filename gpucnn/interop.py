"""State dicts to and from PyTorch: gpucnn already uses PyTorch's names and (out, in, kh, kw) layouts, so
the only conversions are to host NumPy arrays and for the connection tables (LeNet-5's C3), whose packed
(connections, KH, KW) weight becomes the dense, zero-filled (K, C, KH, KW) bank a ``torch.nn.Conv2d`` holds.

    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()})
    load_torch_state_dict(model, torch_model.state_dict())

``from_torch(torch_model)`` (in ``interop_fx``) converts a whole PyTorch model, traced with ``torch.fx``.

``torch_resnet`` (and ``torch_basic_block``) build ``gpucnn.ResNet``'s twin in PyTorch, module for module
under the same state_dict names, for moving a ResNet between the two and comparing them.

PyTorch is imported only inside those two builders: the state-dict functions read tensors through
``numpy()`` / ``__array__``, so this module imports without PyTorch.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from .interop_fx import FxModule, TorchConversionError, from_torch
from .nn.conv import Conv2d
from .nn.module import Module

if TYPE_CHECKING:  # for the annotations only: importing this module needs no PyTorch
    import torch

__all__ = ["FxModule", "TorchConversionError", "from_torch", "from_torch_state_dict",
           "load_torch_state_dict", "to_torch_state_dict", "torch_basic_block",
           "torch_resnet"]


def _connection_convs(model: Module) -> dict[str, Conv2d]:
    """state_dict key of each connection-table weight -> its layer."""
    return {f"{name}.weight" if name else "weight": m for name, m in model.named_modules()
            if isinstance(m, Conv2d) and m.connection is not None}


def to_torch_state_dict(model: Module) -> OrderedDict[str, np.ndarray]:
    """``model``'s state_dict as host NumPy arrays (copies) with PyTorch's names and layouts; BatchNorm's
    ``num_batches_tracked`` is an int64 0-d array as PyTorch keeps it."""
    convs = _connection_convs(model)
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in model.state_dict().items():
        array = np.array(model.backend.to_numpy(value))
        if key in convs:
            layer = convs[key]
            dense = np.zeros(layer._dense_shape(), dtype=array.dtype)
            dense[layer._conn_out, layer._conn_in] = array
            array = dense
        elif key.endswith("num_batches_tracked"):
            array = np.asarray(array, dtype=np.int64).reshape(())
        out[key] = np.array(array, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    return out


def _host(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, maybe on a GPU or requiring grad
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_torch_state_dict(model: Module, state_dict: Any) -> OrderedDict[str, np.ndarray]:
    """A PyTorch state_dict (tensors or arrays) as arrays ``model.load_state_dict`` takes: connection-table
    weights are packed back, refusing a dense weight with non-zero filters where the table has no link."""
    convs = _connection_convs(model)
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in state_dict.items():
        array = _host(value)
        layer = convs.get(key)
        if layer is not None and array.shape == layer._dense_shape():
            mask = np.zeros(array.shape[:2], dtype=bool)
            mask[layer._conn_out, layer._conn_in] = True
            if np.any(array[~mask]):
                raise ValueError(f"from_torch_state_dict: {key!r} has non-zero filters where the connection table "
                                 f"of {type(layer).__name__} has no link; they cannot be kept")
            array = array[layer._conn_out, layer._conn_in]
        out[key] = array
    return out


def load_torch_state_dict(model: Module, state_dict: Any, strict: bool = True) -> Any:
    """Load a PyTorch state_dict into ``model``; returns ``model.load_state_dict``'s IncompatibleKeys."""
    return model.load_state_dict(from_torch_state_dict(model, state_dict), strict=strict)


@functools.cache
def _torch_resnet_classes() -> tuple[type, type]:
    """The PyTorch classes of the twins, made once on first use (the same classes on every call, so that
    isinstance works across calls), so that importing this module needs no PyTorch."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """gpucnn.models.BasicBlock in PyTorch, attribute for attribute."""

        def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        """gpucnn.ResNet (the CIFAR ResNet-(6n+2)) in PyTorch, attribute for attribute."""

        def __init__(self, depth: int, width: int, num_classes: int, in_channels: int) -> None:
            super().__init__()
            blocks = (depth - 2) // 6
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            planes = width
            for stage, (channels, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), start=1):
                layers = []
                for i in range(blocks):
                    layers.append(BasicBlock(planes, channels, stride if i == 0 else 1))
                    planes = channels
                setattr(self, f"layer{stage}", nn.Sequential(*layers))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(planes, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return self.fc(self.avgpool(out).flatten(1))

    return BasicBlock, ResNet


def torch_basic_block(in_planes: int, planes: int, stride: int = 1) -> torch.nn.Module:
    """``gpucnn.models.BasicBlock(in_planes, planes, stride)`` as a ``torch.nn.Module`` with the same
    state_dict names; PyTorch's default initialisation (load weights into it to compare)."""
    return _torch_resnet_classes()[0](in_planes, planes, stride)


def torch_resnet(depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 3) -> torch.nn.Module:
    """``gpucnn.ResNet(depth, width, num_classes, in_channels)`` as a ``torch.nn.Module`` with the same
    state_dict names (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``), so that a state dict moves
    between them unchanged (``to_torch_state_dict`` / ``load_torch_state_dict``). PyTorch's default
    initialisation, float32 on the CPU, in training mode, as a new ``torch.nn.Module`` is.

        twin = torch_resnet(depth=8, width=16)
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()})
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        # gpucnn.ResNet's own check: a depth it refuses has no twin
        raise ValueError(f"torch_resnet: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
    return _torch_resnet_classes()[1](depth, width, num_classes, in_channels)
