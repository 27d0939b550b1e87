"""What backend implementations share: dtypes, dropout's hash, Adam's factors and the composed
Conv2d -> ReLU -> MaxPool2d op. The contract class ``Backend`` and the op state ``ConvPoolState`` live in
contract.py; they are imported here too, so ``from gpucnn.backends.base import Backend`` names the same class."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .contract import Backend, ConvPoolState

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dropout_threshold(p: float) -> int:
    """Elements whose 24-bit hash is below this are dropped: P(drop) = p exactly to 2^-24."""
    return int(round(p * (1 << 24)))


def adam_step_factors(lr: float, beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """Adam's bias corrections as optimizers.cu takes them, in float64 on the host: (step size
    lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)); the eager launchers and the CUDA-graph step tables
    both use this, so their float32 values agree."""
    return lr / (1 - beta1 ** step), 1 / math.sqrt(1 - beta2 ** step)


def dropout_scale(p: float) -> float:
    """What kept elements are multiplied by: 1/(1-p), and 0 when everything is dropped."""
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


def dropout_key(seed: int) -> int:
    """Fold a 64-bit seed into the 32-bit key the mask hash starts from (host side, once)."""
    seed &= (1 << 64) - 1
    return hash32(hash32(seed & 0xFFFFFFFF) ^ (seed >> 32))


def hash32(value: int) -> int:
    """The integer hash (lowbias32) that ``kernels/dropout.cu`` uses, for one host int."""
    x = value & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


# x: (N, C, H, W) -> y: (N, K, PH, PW)
def composed_conv2d_relu_maxpool2d_forward(backend: Backend, x: Any, w: Any, b: Any, stride: Any, padding: Any,
                                           dilation: Any, groups: int, kernel: Any, pool_stride: Any,
                                           pool_padding: Any, ceil_mode: bool,
                                           keep_for_backward: bool = False) -> tuple[Any, Any]:
    """conv2d_relu_maxpool2d_forward as its three ops in a row (conv with the ReLU epilogue, then
    max pooling): what a backend without a fused version runs."""
    conv = backend.conv2d_forward(x, w, b, stride, padding, dilation, groups, relu=True,
                                  keep_for_backward=keep_for_backward)
    y, argmax = backend.maxpool2d_forward(conv, kernel, pool_stride, pool_padding, ceil_mode)
    return y, (ConvPoolState("composed", (y, argmax, tuple(conv.shape))) if keep_for_backward else None)


# dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
def composed_conv2d_relu_maxpool2d_backward(backend: Backend, dy: Any, saved: Any, x: Any, w: Any, stride: Any,
                                            padding: Any, dilation: Any, groups: int, kernel: Any,
                                            pool_stride: Any, pool_padding: Any,
                                            need_input_grad: bool = True) -> tuple[Any, Any, Any]:
    """The backward of the composed forward: the pooling's backward with the ReLU mask on the pooled
    gradient (each window routes to its argmax, where the ReLU's output is the pooled output), then
    the convolution's backward."""
    if not isinstance(saved, ConvPoolState) or saved.kind != "composed":
        raise ValueError("conv2d_relu_maxpool2d_backward: needs the state of a forward run with "
                         "keep_for_backward=True on this backend")
    y, argmax, conv_shape = saved.use()
    dconv = backend.maxpool2d_backward(dy, argmax, conv_shape, kernel, pool_stride, pool_padding, relu_output=y)
    return backend.conv2d_backward(dconv, x, w, stride, padding, dilation, groups, need_input_grad=need_input_grad)
