"""The NumPy backend: vectorised reference implementations of every contract op.

No Python loop runs over pixels or single images: the loops are over kernel offsets (at most
KH*KW iterations, each a whole-tensor strided operation) and, in convolutions, over chunks of
images. These are also the references the CUDA kernels are tested against (see each
``kernels/*.cu``).

``NumpyBackend`` lists every op, in the contract's order. The short ones are computed here
(ReLU, dropout, the losses, a training step's data, the optimizers; the other activations are rows of
../elementwise.py, whose NumPy references ``implemented_by`` installs); the others go
to the parts it holds, one object each:
- ``BatchHalves`` (threads.py): convolutions and Linear layers, whole or, with the opt-in threads,
  as two batch halves at once; it runs the convolutions on a ``Convolution`` (conv.py, with its
  (C, N, H, W) paths in conv_cnhw.py);
- ``RowHalves`` (threads.py): ReLU and ``over_batch``, the elementwise passes that may split too;
- ``Pooling`` (pooling.py, on the window views of windows.py): the pooling ops;
- ``ScratchPool`` (scratch.py): the large temporaries the convolutions reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..base import Backend, adam_step_factors, dropout_key, dropout_scale, dropout_threshold, hash32
from ..elementwise import implemented_by
from . import pad as _pad
from .conv import Convolution
from .pooling import Pooling
from .scratch import ScratchPool
from .threads import BatchHalves, RowHalves


# the elementwise ops of backends/elementwise.py run their NumPy reference
@implemented_by(lambda op: lambda self, *args: op.reference(*args))
class NumpyBackend(Backend):
    """Every contract op, in the contract's order: computed here or handed to a part (see the module)."""

    name = "numpy"
    xp = np
    array_type = np.ndarray
    #: LeNet-5 inference at batch 1024 on the 2-core machine: 57 ms whole, 44 ms in chunks of 32;
    #: chunks of 48 are 5-10% faster again than 32 and than 64 in quiet minutes (interleaved in one
    #: process; in loaded minutes 32 and 48 trade places within +-6%), and as fast as 64 for ResNet-8
    #: and the examples/mnist net, whose larger GEMMs like bigger chunks
    eval_batch_chunk = 48

    def __init__(self) -> None:
        self._scratch = ScratchPool()
        self._rows = RowHalves()
        self._pooling = Pooling(self._rows)
        self._convolution = Convolution(self._scratch, self._pooling)
        self._halves = BatchHalves(self._convolution, self._rows)

    def over_batch(self, body: Callable[[int, int], Any], n: int, elements: int) -> list[Any]:
        """Backend.over_batch, as two halves at once where the threads are on and the pass is large."""
        return self._rows.over_batch(body, n, elements)

    # ---------------------------------------------------------------- host/device movement
    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype, order="C")  # ascontiguousarray would make a 0-d array 1-d

    def to_numpy(self, a):
        return np.asarray(a)

    # ---------------------------------------------------------------- convolution
    # x: (N, C, H, W), w: (K, C/G, KH, KW) -> y: (N, K, OH, OW)
    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False, keep_for_backward=False):
        return self._halves.conv2d_forward(x, w, b, stride, padding, dilation, groups, relu, keep_for_backward)

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_backward(self, dy, x, w, stride, padding, dilation, groups, need_input_grad=True):
        return self._halves.conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_input_grad)

    # dy: (N, K, OH, OW), w: (K, C/G, KH, KW) -> dx: x_shape (N, C, H, W)
    def conv2d_input_grad(self, dy, w, x_shape, stride, padding, dilation, groups):
        return self._convolution.conv2d_input_grad(dy, w, x_shape, stride, padding, dilation, groups)

    # dy: (N, K, OH, OW), x: (N, C, H, W) -> dw: w_shape (K, C/G, KH, KW), db: (K,)
    def conv2d_weight_grad(self, dy, x, w_shape, stride, padding, dilation, groups):
        return self._convolution.conv2d_weight_grad(dy, x, w_shape, stride, padding, dilation, groups)

    # x: (N, C, H, W) -> y: (N, K, PH, PW) = maxpool(relu(conv(x) + b)), and what the backward needs
    def conv2d_relu_maxpool2d_forward(self, x, w, b, stride, padding, dilation, groups, kernel, pool_stride,
                                      pool_padding, ceil_mode, keep_for_backward=False):
        return self._halves.conv2d_relu_maxpool2d_forward(x, w, b, stride, padding, dilation, groups, kernel,
                                                          pool_stride, pool_padding, ceil_mode, keep_for_backward)

    # dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_relu_maxpool2d_backward(self, dy, saved, x, w, stride, padding, dilation, groups, kernel,
                                       pool_stride, pool_padding, need_input_grad=True):
        return self._halves.conv2d_relu_maxpool2d_backward(dy, saved, x, w, stride, padding, dilation, groups,
                                                           kernel, pool_stride, pool_padding, need_input_grad)

    # ---------------------------------------------------------------- pooling
    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW)
    def maxpool2d_forward(self, x, kernel, stride, padding, ceil_mode):
        return self._pooling.maxpool2d_forward(x, kernel, stride, padding, ceil_mode)

    # dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W)
    def maxpool2d_backward(self, dy, argmax, x_shape, kernel, stride, padding, relu_output=None):
        return self._pooling.maxpool2d_backward(dy, argmax, x_shape, kernel, stride, padding, relu_output)

    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW) over PyTorch's adaptive windows
    def adaptive_maxpool2d_forward(self, x, out_hw):
        return self._pooling.adaptive_maxpool2d_forward(x, out_hw)

    # dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W)
    def adaptive_maxpool2d_backward(self, dy, argmax, x_shape):
        return self._pooling.adaptive_maxpool2d_backward(dy, argmax, x_shape)

    # x, indices: (N, C, H, W) -> y: (N, C, OH, OW)
    def maxunpool2d_forward(self, x, indices, out_hw):
        return self._pooling.maxunpool2d_forward(x, indices, out_hw)

    # dy: (N, C, OH, OW), indices: (N, C, H, W) -> dx: (N, C, H, W)
    def maxunpool2d_backward(self, dy, indices):
        return self._pooling.maxunpool2d_backward(dy, indices)

    def avgpool2d_forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        return self._pooling.avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        return self._pooling.avgpool2d_backward(dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad)

    def lppool2d_forward(self, x, norm_type, kernel, stride, ceil_mode):
        return self._pooling.lppool2d_forward(x, norm_type, kernel, stride, ceil_mode)

    def lppool2d_backward(self, dy, x, y, norm_type, kernel, stride, ceil_mode):
        return self._pooling.lppool2d_backward(dy, x, y, norm_type, kernel, stride, ceil_mode)

    # ---------------------------------------------------------------- activations
    def relu_forward(self, x):
        return self._rows.relu_forward(x)

    def relu_backward(self, dy, y):
        return self._rows.relu_backward(dy, y)

    def dropout_forward(self, x, p, seed):
        return _dropout_with_key(x, p, dropout_key(seed))

    # keys: uint32 (steps, slots), step: int64 (1,): the key of row step[0], column slot (CUDA graphs)
    def dropout_forward_stepped(self, x, p, keys, step, slot):
        return _dropout_with_key(x, p, int(keys[int(step[0]), slot]))

    def dropout_backward(self, dy, mask, p):
        scale = dy.dtype.type(dropout_scale(p))
        return dy * mask * scale

    # ---------------------------------------------------------------- fully connected
    # x: (M, K), w: (N, K), b: (N,) -> y: (M, N)
    def linear_forward(self, x, w, b, relu=False):
        return self._halves.linear_forward(x, w, b, relu)

    # dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
    def linear_backward(self, dy, x, w, need_input_grad=True, relu_output=None):
        return self._halves.linear_backward(dy, x, w, need_input_grad, relu_output)

    # ---------------------------------------------------------------- loss
    # logits: (N, K), labels: (N,) -> loss: (), dlogits: (N, K); label_smoothing eps as PyTorch's (unweighted)
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        losses, grad = _softmax_rows(logits, labels, label_smoothing)
        if not logits.shape[0]:  # the mean over no rows, as PyTorch's: NaN (without 0/0's warning)
            return np.asarray(np.nan, dtype=logits.dtype), grad
        return np.asarray(losses.sum() / logits.shape[0], dtype=logits.dtype), grad

    # total: float64 (1,), in place += the rows' losses added in order (cumsum is sequential)
    def softmax_cross_entropy_accumulate(self, logits, labels, total, label_smoothing=0.0):
        losses, grad = _softmax_rows(logits, labels, label_smoothing)
        if len(losses):  # no rows add nothing (cumsum of nothing has no last element)
            total += np.cumsum(losses.astype(np.float64))[-1:]
        return grad

    # ---------------------------------------------------------------- a step's data and counter (CUDA graphs)
    def gather_batch(self, images, labels, order, offsets, step, batch_stride, count, max_shift, background):
        rows = int(step[0]) * batch_stride + np.arange(count)
        x, y = images[order[rows]], labels[order[rows]].astype(np.int32)
        if max_shift <= 0:
            return x, y
        _, _, h, w = x.shape
        sh = np.arange(h)[None, :] + offsets[rows, :1]  # (count, H) source rows
        sw = np.arange(w)[None, :] + offsets[rows, 1:]  # (count, W) source columns
        inside = ((sh >= 0) & (sh < h))[:, None, :, None] & ((sw >= 0) & (sw < w))[:, None, None, :]
        picked = x[np.arange(count)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                   np.clip(sh, 0, h - 1)[:, None, :, None], np.clip(sw, 0, w - 1)[:, None, None, :]]
        return np.where(inside, picked, background).astype(x.dtype), y

    def step_advance(self, step):
        step += 1

    # ---------------------------------------------------------------- optimizers
    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay, nesterov):
        g = grad + param * param.dtype.type(weight_decay) if weight_decay else grad
        if velocity is not None:
            velocity *= param.dtype.type(momentum)
            velocity += g
            g = g + velocity * param.dtype.type(momentum) if nesterov else velocity
        param -= param.dtype.type(lr) * g

    def adam_update(self, param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        root = param.dtype.type(np.sqrt(1 - beta2 ** step))
        step_size, _ = adam_step_factors(lr, beta1, beta2, step)  # 1/sqrt of it would round differently here
        _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
              lambda v: np.sqrt(v) / root)

    def sgd_update_many(self, params, grads, velocities, lr, momentum, weight_decay, nesterov):
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            self.sgd_update(param, grad, None if velocities is None else velocities[i], lr, momentum, weight_decay,
                            nesterov)

    def adam_update_many(self, params, grads, ms, vs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
            self.adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)

    # hyper: (steps, 3) rows of lr, momentum, weight decay; (steps, 7) for Adam, as optimizers.cu's
    def sgd_update_many_stepped(self, params, grads, velocities, hyper, step, nesterov):
        lr, momentum, weight_decay = (float(h) for h in hyper[int(step[0])])
        self.sgd_update_many(params, grads, velocities, lr, momentum, weight_decay, nesterov)

    def adam_update_many_stepped(self, params, grads, ms, vs, hyper, step, decoupled):
        lr, beta1, beta2, eps, weight_decay, step_size, inv_bias2_sqrt = (float(h) for h in hyper[int(step[0])])
        scale = hyper.dtype.type(inv_bias2_sqrt)
        for param, grad, m, v in zip(params, grads, ms, vs, strict=True):
            _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
                  lambda v: np.sqrt(v) * scale)

    # ---------------------------------------------------------------- per-row normalisation (layernorm.cu's order)
    # x: (rows, cols) -> y: (rows, cols), mean, rstd: (rows,)
    def row_norm_forward(self, x, eps):
        rows, cols = x.shape
        if not cols:  # no values: NaN statistics, as a mean over nothing (without NumPy's warning)
            nan = np.full(rows, np.nan, dtype=x.dtype)
            return np.empty_like(x), nan, nan.copy()
        mean = x.sum(axis=1) / x.dtype.type(cols)
        centered = x - mean[:, None]
        var = (centered * centered).sum(axis=1) / x.dtype.type(cols)
        rstd = x.dtype.type(1) / np.sqrt(var + x.dtype.type(eps))
        return centered * rstd[:, None], mean, rstd

    # dy, x: (rows, cols), mean, rstd: (rows,) -> dx: (rows, cols)
    def row_norm_backward(self, dy, x, mean, rstd):
        cols = x.shape[1]
        if not cols:
            return np.empty_like(x)
        xhat = (x - mean[:, None]) * rstd[:, None]
        mean_dy = dy.sum(axis=1, keepdims=True) / x.dtype.type(cols)
        mean_dy_xhat = (dy * xhat).sum(axis=1, keepdims=True) / x.dtype.type(cols)
        return rstd[:, None] * (dy - mean_dy - xhat * mean_dy_xhat)

    # ---------------------------------------------------------------- padding (pad.py)
    # x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right), pads = (left, right, top, bottom)
    def pad2d_forward(self, x, pads, mode, value):
        return _pad.pad2d_forward(x, pads, mode, value)

    def pad2d_backward(self, dy, x_shape, pads, mode):
        return _pad.pad2d_backward(dy, x_shape, pads, mode)


# ---------------------------------------------------------------- dropout
def dropout_mask(shape: tuple[int, ...], p: float, seed: int) -> np.ndarray:
    """uint8 keep-mask, a pure function of (seed, flat index): the reference for dropout.cu."""
    return _dropout_mask_for_key(shape, p, dropout_key(seed))


def _dropout_with_key(x, p, key):
    mask = _dropout_mask_for_key(x.shape, p, key)
    return x * mask * x.dtype.type(dropout_scale(p)), mask


def _hash32_in_place(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array, overwriting it (wrap-around multiply is what the kernel does too;
    one scratch array instead of ten temporaries)."""
    shifted = np.empty_like(x)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        np.right_shift(x, np.uint32(shift), out=shifted)
        x ^= shifted
        x *= np.uint32(multiplier)
    np.right_shift(x, np.uint32(16), out=shifted)
    x ^= shifted
    return x


def _dropout_mask_for_key(shape: tuple[int, ...], p: float, key: int) -> np.ndarray:
    count = int(np.prod(shape))
    if count <= 1 << 32:
        # every index's high half is 0, so the inner hash is one number, hash32(key): one hash in
        # place over uint32 indices instead of two over uint64 temporaries, the same bits 3x faster
        # (7.1 -> 2.3 ms for the examples/mnist net's first dropout at batch 64)
        h = np.arange(count, dtype=np.uint32)
        h ^= np.uint32(hash32(key))
        _hash32_in_place(h)
        h >>= np.uint32(8)
        return np.greater_equal(h, np.uint32(dropout_threshold(p))).view(np.uint8).reshape(shape)
    index = np.arange(count, dtype=np.uint64)
    low = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    h = _hash32_in_place(low ^ _hash32_in_place(high ^ np.uint32(key)))
    keep = (h >> np.uint32(8)) >= np.uint32(dropout_threshold(p))
    return keep.astype(np.uint8).reshape(shape)


# ---------------------------------------------------------------- loss
def _softmax_rows(logits, labels, label_smoothing):
    """(per-row loss, dlogits of the batch mean): what softmax_cross_entropy.cu writes."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_total = np.log(total[:, 0])
    rows = np.arange(n)
    grad = exp / total
    if label_smoothing:  # target (1 - eps) * onehot + eps / K
        losses = _smoothed_rows(shifted, log_total, labels, label_smoothing)
        grad -= logits.dtype.type(label_smoothing / logits.shape[1])
        grad[rows, labels] -= logits.dtype.type(1 - label_smoothing)
    else:  # no 0 * inf terms: an infinite logit must not make the plain loss NaN
        losses = log_total - shifted[rows, labels]
        grad[rows, labels] -= 1
    grad /= n
    return losses, grad


def _smoothed_rows(shifted, log_total, labels, eps):
    """Per-row loss (1 - eps) * -log p[label] + eps * mean_k -log p[k], with -log p = log_total - shifted."""
    nll = log_total - shifted[np.arange(len(shifted)), labels]
    return (1 - eps) * nll + eps * (log_total - shifted.mean(axis=1))


# ---------------------------------------------------------------- optimizers
def _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, corrected_root):
    """One Adam update; corrected_root(v) = sqrt(v / (1 - beta2^t)), which the two callers round differently."""
    t = param.dtype.type
    if weight_decay and decoupled:
        param *= t(1 - lr * weight_decay)
    g = grad + param * t(weight_decay) if weight_decay and not decoupled else grad
    m *= t(beta1)
    m += t(1 - beta1) * g
    v *= t(beta2)
    v += t(1 - beta2) * g * g
    param -= t(step_size) * m / (corrected_root(v) + t(eps))
