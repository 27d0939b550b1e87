"""The functional API, ``import gpucnn.functional as F``: PyTorch's names, argument names and semantics.

Convolution, pooling and activations run as the backend's ops (our CUDA kernels on ``cuda`` and
``cuda-sim``); each function records one autograd Function. Inputs may be Tensors or backend arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import tensor_ops
from .core.tensor import Tensor
from .functions import activations
from .functions.avgpool2d import adaptive_avg_pool2d as _adaptive_avg_pool2d
from .functions.avgpool2d import avg_pool2d as _avg_pool2d
from .functions.batchnorm import BatchNorm
from .functions.checks import check_float_input, check_same_dtype, positive_int, positive_pair
from .functions.conv2d import ConvSpec, ExpandConnections, resolve_padding
from .functions.conv2d import conv2d as _conv2d
from .functions.conv2d import conv2d_relu_max_pool2d as _conv2d_relu_max_pool2d
from .functions.dropout import Dropout, draw_seed, seed_source
from .functions.linear import Linear
from .functions.lppool2d import lp_pool2d as _lp_pool2d
from .functions.maxpool2d import max_pool2d as _max_pool2d
from .functions.maxpool2d import relu_max_pool2d as _relu_max_pool2d
from .functions.pooling import pool_spec
from .functions.softmax_cross_entropy import LogSoftmax, NllLoss, Softmax, SoftmaxCrossEntropy

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "cat", "conv1d", "conv2d", "conv2d_relu_max_pool2d",
    "cross_entropy", "dropout", "expand_connections", "leaky_relu", "linear", "log_softmax", "lp_pool2d",
    "max_pool2d", "mse_loss", "nll_loss", "relu", "relu_max_pool2d", "sigmoid", "softmax", "tanh",
]

cat = tensor_ops.cat


def as_tensor(x: Any, owner: str) -> Tensor:
    """Tensors pass through; a backend array is wrapped (no gradient)."""
    if isinstance(x, Tensor):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return Tensor(x)
    raise TypeError(f"{owner}: expected a gpucnn Tensor or an array, got {type(x).__module__}.{type(x).__name__}")


def _optional(x: Any, owner: str) -> Tensor | None:
    return None if x is None else as_tensor(x, owner)


def conv_spec(weight_hw: tuple[int, int], stride: Any, padding: Any, dilation: Any, groups: int,
              owner: str) -> ConvSpec:
    positive_int(groups, "groups", owner)
    stride = positive_pair(stride, "stride", owner)
    dilation = positive_pair(dilation, "dilation", owner)
    return ConvSpec(stride, resolve_padding(padding, weight_hw, stride, dilation, owner), dilation, groups)


# ---------------------------------------------------------------------------- convolution
def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """x: (N, C, H, W), weight: (K, C/groups, KH, KW) -> (N, K, OH, OW); padding may be an int, a
    pair, 'valid', 'same' or 'full'."""
    x, w = as_tensor(input, "conv2d"), as_tensor(weight, "conv2d")
    if w.ndim != 4:
        raise ValueError(f"conv2d: expected a 4-D weight (K, C/groups, KH, KW), got shape {w.shape}")
    spec = conv_spec(w.shape[2:], stride, padding, dilation, groups, "conv2d")
    return _conv2d(x, w, _optional(bias, "conv2d"), spec)


def conv1d(input: Any, weight: Any, bias: Any = None, stride: int = 1, padding: Any = 0, dilation: int = 1,
           groups: int = 1) -> Tensor:
    """x: (N, C, L), weight: (K, C/groups, KL) -> (N, K, OL), run as a (1, KL) conv2d."""
    x, w = as_tensor(input, "conv1d"), as_tensor(weight, "conv1d")
    check_float_input(x, 3, "conv1d", layout="(N, C, L)")
    if w.ndim != 3:
        raise ValueError(f"conv1d: expected a 3-D weight (K, C/groups, KL), got shape {w.shape}")
    spec = conv1d_spec(w.shape[2], stride, padding, dilation, groups, "conv1d")
    return conv1d_as_2d(x, w, _optional(bias, "conv1d"), spec, "conv1d")


def conv1d_spec(kernel: int, stride: int, padding: Any, dilation: int, groups: int, owner: str) -> ConvSpec:
    for label, value in (("stride", stride), ("dilation", dilation)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{owner}: {label} must be an int, got {value!r}")
    if not isinstance(padding, str) and (not isinstance(padding, int) or isinstance(padding, bool)):
        raise TypeError(f"{owner}: padding must be an int, 'valid', 'same' or 'full', got {padding!r}")
    spec = conv_spec((1, kernel), (1, stride), padding if isinstance(padding, str) else (0, padding),
                     (1, dilation), groups, owner)
    return spec._replace(padding=(0, 0) + spec.padding[2:])  # the height axis has size 1: never pad it


def conv1d_as_2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, owner: str) -> Tensor:
    # x: (N, C, L) -> y: (N, K, OL)
    n, c, length = x.shape
    y = _conv2d(x.reshape(n, c, 1, length), w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), b, spec, owner)
    return y.reshape(y.shape[0], y.shape[1], y.shape[3])


def expand_connections(packed: Tensor, index: tuple[Any, Any], dense_shape: tuple[int, ...]) -> Tensor:
    """A connection table's packed filters as a dense, zero-filled (K, C, KH, KW) bank (differentiable)."""
    return ExpandConnections.apply(packed, index, dense_shape)


def conv2d_relu_max_pool2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                           dilation: Any = 1, groups: int = 1, kernel_size: Any = 2, pool_stride: Any = None,
                           pool_padding: Any = 0, ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(conv2d(x))) as one op, bit for bit the three in a row (Sequential uses it
    for Conv2d -> ReLU -> MaxPool2d; call it from your own forward for the same speed)."""
    x, w = as_tensor(input, "conv2d_relu_max_pool2d"), as_tensor(weight, "conv2d_relu_max_pool2d")
    spec = conv_spec(w.shape[2:], stride, padding, dilation, groups, "conv2d_relu_max_pool2d")
    pool = pool_spec(kernel_size, pool_stride, pool_padding, ceil_mode, "conv2d_relu_max_pool2d")
    return _conv2d_relu_max_pool2d(x, w, _optional(bias, "conv2d_relu_max_pool2d"), spec, pool)


# ---------------------------------------------------------------------------- pooling
def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    check_unsupported_pool_options("max_pool2d", dilation=dilation, return_indices=return_indices)
    return _max_pool2d(as_tensor(input, "max_pool2d"),
                       pool_spec(kernel_size, stride, padding, ceil_mode, "max_pool2d"))


def relu_max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                    ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(x)) with one backward step (the ReLU mask on the pooled gradient)."""
    return _relu_max_pool2d(as_tensor(input, "relu_max_pool2d"),
                            pool_spec(kernel_size, stride, padding, ceil_mode, "relu_max_pool2d"))


def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Any = None) -> Tensor:
    check_unsupported_pool_options("avg_pool2d", divisor_override=divisor_override)
    return _avg_pool2d(as_tensor(input, "avg_pool2d"), pool_spec(kernel_size, stride, padding, ceil_mode,
                                                                  "avg_pool2d"), bool(count_include_pad))


def lp_pool2d(input: Any, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> Tensor:
    return _lp_pool2d(as_tensor(input, "lp_pool2d"), norm_type,
                      pool_spec(kernel_size, stride, 0, ceil_mode, "lp_pool2d"))


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    return _adaptive_avg_pool2d(as_tensor(input, "adaptive_avg_pool2d"), output_size)


#: options PyTorch's pooling has and ours lacks, with the value that means "off"
_UNSUPPORTED_POOL = {"dilation": 1, "return_indices": False, "divisor_override": None}


def check_unsupported_pool_options(owner: str, **options: Any) -> None:
    for name, value in options.items():
        off = _UNSUPPORTED_POOL[name]
        if not (value == off or (name == "dilation" and value == (1, 1))):
            raise ValueError(f"{owner}: {name}={value!r} is not supported by gpucnn (PyTorch has it; gpucnn's "
                             f"pooling kernels do not); leave {name} at {off!r}")


# ---------------------------------------------------------------------------- activations
def relu(input: Any, inplace: bool = False) -> Tensor:
    return activations.Relu.apply(_activation_input(input, "relu"))


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return activations.LeakyRelu.apply(_activation_input(input, "leaky_relu"), float(negative_slope))


def sigmoid(input: Any) -> Tensor:
    return activations.Sigmoid.apply(_activation_input(input, "sigmoid"))


def tanh(input: Any) -> Tensor:
    return activations.Tanh.apply(_activation_input(input, "tanh"))


def _activation_input(x: Any, owner: str) -> Tensor:
    x = as_tensor(x, owner)
    check_float_input(x, None, owner, layout="(N, ...)")
    return x


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False,
            seed: int | None = None, generator: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p (scaling the rest by 1/(1-p)) when ``training``.
    The mask is a hash of (seed, element index); without ``seed`` one is drawn from ``generator``,
    or gpucnn's default generator (``gpucnn.manual_seed``). Inside a CUDA-graph step
    (``gpucnn.cuda_graph``) the seed comes from the step's table on the device instead: the value
    this call would have drawn, drawn ahead for every step of the epoch."""
    x = _activation_input(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    if seed is None:
        if generator is None:
            from .init import default_rng

            generator = default_rng()
        source = seed_source()
        seed = source.table_seed(generator) if source is not None else draw_seed(generator)
    return Dropout.apply(x, float(p), seed)


# ---------------------------------------------------------------------------- normalisation, linear
def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise over every axis but 1. In training the batch statistics are used and the running
    ones (updated in place, when given) follow with ``momentum``; in eval the running ones are used."""
    x = as_tensor(input, "batch_norm")
    check_float_input(x, None, "batch_norm", layout="(N, C, ...)")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input (N, C, ...) of at least 2 dimensions, got shape {x.shape}")
    if training and x.numel() // x.shape[1] < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input shape {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode needs running_mean and running_var")
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    w, b = _optional(weight, "batch_norm"), _optional(bias, "batch_norm")
    check_same_dtype(x, w, "batch_norm")
    return BatchNorm.apply(x, w, b, *stats, bool(training), float(momentum), float(eps))


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """x: (*, in) @ weight.T (out, in) + bias -> (*, out)."""
    x, w = as_tensor(input, "linear"), as_tensor(weight, "linear")
    check_float_input(x, None, "linear", layout="(N, C)")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: expected input of shape (*, {w.shape[1]}), got {x.shape}")
    check_same_dtype(x, w, "linear")
    return Linear.apply(x, w, _optional(bias, "linear"))


# ---------------------------------------------------------------------------- softmax and losses
def softmax(input: Any, dim: int = -1) -> Tensor:
    return Softmax.apply(_activation_input(input, "softmax"), dim)


def log_softmax(input: Any, dim: int = -1) -> Tensor:
    return LogSoftmax.apply(_activation_input(input, "log_softmax"), dim)


def cross_entropy(input: Any, target: Any, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, labels_checked: bool = False) -> Tensor:
    """Softmax cross-entropy of logits (N, C) against class indices (N,). The unweighted case (no
    weight, no ignored label, mean or sum; with or without label smoothing) is one fused backend op.

    The labels' range is checked on the host, which on a GPU copies them back and waits for the
    device. ``labels_checked=True`` says the caller has already checked every label (gpucnn's
    ``train_epoch`` does, with the range a ``BatchIterator`` found once when it was built): only the
    shape and dtype are checked then, and a training step never waits."""
    logits = as_tensor(input, "cross_entropy")
    labels = check_labels(logits, target, "cross_entropy", ignore_index, checked=labels_checked)
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    fused = weight is None and reduction != "none"
    # checked labels lie in [0, C): none can be an ignore_index outside that range
    in_range = labels_checked and not 0 <= ignore_index < logits.shape[1]
    if fused and (in_range or not bool((logits.backend.to_numpy(labels) == ignore_index).any())):
        # the op Trainer(graph=True)'s captured step calls too, so eager and graphed steps agree bit for bit
        return SoftmaxCrossEntropy.apply(logits, logits.backend.asarray(labels, dtype=np.int32), reduction,
                                         float(label_smoothing))
    logp = log_softmax(logits, dim=1)
    loss = nll_loss(logp, labels, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    return (1 - label_smoothing) * loss + (label_smoothing / logits.shape[1]) * _smoothing_term(
        logp, labels, weight, ignore_index, reduction)


def _smoothing_term(logp: Tensor, labels: Any, weight: Any, ignore_index: int, reduction: str) -> Tensor:
    """PyTorch's label-smoothing term: -sum_c w_c logp[i, c] per row, reduced like the NLL."""
    xp = logp.backend.xp
    kept = (labels != ignore_index).astype(logp.dtype)
    w = None if weight is None else as_tensor(weight, "cross_entropy").data.astype(logp.dtype, copy=False)
    per_class = logp if w is None else logp * Tensor(w.reshape(1, -1), backend=logp.backend)
    rows = -per_class.sum(dim=1) * Tensor(kept, backend=logp.backend)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    safe = xp.where(labels != ignore_index, labels, 0)
    denominator = kept.sum() if w is None else (w[safe] * kept).sum()
    return rows.sum() / Tensor(xp.asarray(denominator, dtype=logp.dtype), backend=logp.backend)


def nll_loss(input: Any, target: Any, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """-weight[t] * input[i, t] from log-probabilities (N, C); 'mean' divides by the summed weights."""
    logp = as_tensor(input, "nll_loss")
    labels = check_labels(logp, target, "nll_loss", ignore_index)
    _check_reduction(reduction, "nll_loss")
    w = None if weight is None else as_tensor(weight, "nll_loss").data
    if w is not None and tuple(w.shape) != (logp.shape[1],):
        raise ValueError(f"nll_loss: weight must have shape ({logp.shape[1]},), got {tuple(w.shape)}")
    return NllLoss.apply(logp, labels, w, int(ignore_index), reduction)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    x = as_tensor(input, "mse_loss")
    t = target if isinstance(target, Tensor) else Tensor(x.backend.asarray(target, dtype=x.dtype),
                                                           backend=x.backend)
    if x.shape != t.shape:
        raise ValueError(f"mse_loss: input shape {x.shape} and target shape {t.shape} differ")
    _check_reduction(reduction, "mse_loss")
    diff = x - t
    squared = diff * diff
    return squared if reduction == "none" else squared.sum() if reduction == "sum" else squared.mean()


def check_labels(logits: Tensor, target: Any, owner: str, ignore_index: int = -100, checked: bool = False) -> Any:
    """Integer labels (N,) in [0, C) (or ignore_index), as a backend array; checked on the host.

    ``checked``: the caller vouches for the range; the shape and dtype alone are checked, from the
    array's metadata, so labels on a GPU are neither copied back nor waited for."""
    check_float_input(logits, 2, owner, layout="(N, C)")
    labels = target.data if isinstance(target, Tensor) else target
    if checked and hasattr(labels, "shape") and hasattr(labels, "dtype"):
        if tuple(labels.shape) != (logits.shape[0],) or np.dtype(labels.dtype).kind not in "iu":
            raise ValueError(f"{owner}: expected integer labels of shape ({logits.shape[0]},), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        return labels if logits.backend.owns(labels) else logits.backend.asarray(labels)
    host = np.asarray(logits.backend.to_numpy(labels) if logits.backend.owns(labels) else labels)
    if host.shape != (logits.shape[0],) or host.dtype.kind not in "iu":
        raise ValueError(f"{owner}: expected integer labels of shape ({logits.shape[0]},), "
                         f"got {host.dtype} {host.shape}")
    real = host[host != ignore_index]
    if real.size and (real.min() < 0 or real.max() >= logits.shape[1]):
        raise ValueError(f"{owner}: labels must lie in [0, {logits.shape[1]}), got values from {real.min()} "
                         f"to {real.max()}")
    return labels if logits.backend.owns(labels) else logits.backend.asarray(host)


def _check_reduction(reduction: str, owner: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{owner}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
