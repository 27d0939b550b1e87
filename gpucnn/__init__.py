"""gpucnn: a CNN library whose layers run as raw CUDA kernels (through CuPy) or on NumPy.

Pick a backend with ``GPUCNN_BACKEND=numpy|cuda|cuda-sim`` or ``gpucnn.set_backend(...)``.
"""

from . import distributed, functional, init, nn, optim
from .autograd import Function, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import (
    available_backends,
    backend_of,
    cuda_is_available,
    current_backend_name,
    get_backend,
    set_backend,
    use_backend,
)
from .functions.basic import cat
from .init import manual_seed
from .models import LeNet5, LeNet5Classic, ResNet
from .nn import *  # noqa: F403
from .nn import __all__ as _nn_all
from .serialization import CheckpointError, load, save
from .tensor import Parameter, Tensor, tensor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Function", "distributed", "LeNet5", "LeNet5Classic", "Parameter", "ResNet", "Tensor", "cat",
    "enable_grad", "functional", "is_grad_enabled", "no_grad", "set_grad_enabled", "tensor",
    "available_backends", "backend_of", "cuda_is_available",
    "current_backend_name", "get_backend", "init", "load", "manual_seed", "nn", "optim", "save",
    "set_backend", "use_backend", *_nn_all,
]
