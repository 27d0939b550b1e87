"""gpucnn: a CNN library whose layers run as raw CUDA kernels (through CuPy) or on NumPy.

Pick a backend with ``GPUCNN_BACKEND=numpy|cuda|cuda-sim`` or ``gpucnn.set_backend(...)``.

The submodules with optional dependencies or a slower import (``gpucnn.onnx``, ``gpucnn.interop``,
``gpucnn.training``, ``gpucnn.datasets``, ...) load on first use, as ``torch.onnx`` is there after ``import torch``:
``import gpucnn`` itself imports NumPy and nothing else outside the package.
"""

import importlib
from typing import Any

from . import distributed, functional, init, nn, optim
from .backends.registry import (
    available_backends,
    backend_of,
    cuda_is_available,
    current_backend_name,
    get_backend,
    register_backend,
    set_backend,
    use_backend,
)
from .core.autograd import Function, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .core.shape_ops import cat, flatten, stack
from .core.tensor import Parameter, Tensor, tensor
from .core.tensor_ops import where
from .init import manual_seed
from .models import LeNet5, LeNet5Classic, ResNet
from .nn import *  # noqa: F403
from .nn import __all__ as _nn_all
from .serialization import CheckpointError, load, save

__version__ = "0.1.0"

#: submodules reached as attributes on first use (``gpucnn.onnx.export(...)``) rather than imported here: they
#: are not needed to build and train a model, and their optional dependencies (onnx, tqdm, matplotlib) stay
#: unimported until one of their functions runs
LAZY_SUBMODULES = ("cuda_graph", "datasets", "info", "interop", "onnx", "plots", "progress", "safetensors_io",
                   "training")


def __getattr__(name: str) -> Any:
    if name in LAZY_SUBMODULES:
        # import_module binds the submodule on this package, so later lookups never come back here
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *LAZY_SUBMODULES})

__all__ = [
    "CheckpointError", "Function", "distributed", "LeNet5", "LeNet5Classic", "Parameter", "ResNet", "Tensor", "cat",
    "flatten", "stack", "where",
    "enable_grad", "functional", "is_grad_enabled", "no_grad", "set_grad_enabled", "tensor",
    "available_backends", "backend_of", "cuda_is_available",
    "current_backend_name", "get_backend", "init", "load", "manual_seed", "nn", "optim", "register_backend", "save",
    "set_backend", "use_backend", *_nn_all,
]
