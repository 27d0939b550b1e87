"""State dicts to and from PyTorch: gpucnn already uses PyTorch's names and (out, in, kh, kw) layouts, so
the only conversions are to host NumPy arrays and for the connection tables (LeNet-5's C3), whose packed
(connections, KH, KW) weight becomes the dense, zero-filled (K, C, KH, KW) bank a ``torch.nn.Conv2d`` holds.

    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()})
    load_torch_state_dict(model, torch_model.state_dict())

No PyTorch import here: tensors are read through ``numpy()`` / ``__array__``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .nn.conv import Conv2d
from .nn.module import Module

__all__ = ["from_torch_state_dict", "load_torch_state_dict", "to_torch_state_dict"]


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
