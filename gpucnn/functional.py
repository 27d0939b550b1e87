"""The functional API, ``import gpucnn.functional as F``: PyTorch's names, argument names and semantics.

Convolution, pooling and activations run as the backend's ops (our CUDA kernels on ``cuda`` and
``cuda-sim``); each function records one autograd Function. Inputs may be Tensors or backend arrays.

Each function lives beside its Function in ``gpucnn/functions/<op>.py``, with its argument checks
(and the Function's ONNX emitter); this module only lists them.
"""

from __future__ import annotations

from .core.tensor_ops import cat
from .functions.activations import leaky_relu, relu, sigmoid, tanh
from .functions.avgpool2d import adaptive_avg_pool2d, avg_pool2d
from .functions.batchnorm import batch_norm
from .functions.checks import as_tensor  # noqa: F401 (not in __all__: gpucnn.distributed imports it from here)
from .functions.conv2d import conv1d, conv2d, conv2d_relu_max_pool2d, expand_connections
from .functions.dropout import dropout
from .functions.linear import linear
from .functions.lppool2d import lp_pool2d
from .functions.maxpool2d import max_pool2d, relu_max_pool2d
from .functions.softmax_cross_entropy import cross_entropy, log_softmax, mse_loss, nll_loss, softmax

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "cat", "conv1d", "conv2d", "conv2d_relu_max_pool2d",
    "cross_entropy", "dropout", "expand_connections", "leaky_relu", "linear", "log_softmax", "lp_pool2d",
    "max_pool2d", "mse_loss", "nll_loss", "relu", "relu_max_pool2d", "sigmoid", "softmax", "tanh",
]
