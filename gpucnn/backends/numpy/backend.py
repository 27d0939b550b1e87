"""The NumPy backend: vectorised reference implementations of every contract op.

No Python loop runs over pixels or single images: the loops are over kernel offsets (at most
KH*KW iterations, each a whole-tensor strided operation) and, in convolutions, over chunks of
images (numpy_conv.py). These are also the references the CUDA kernels are tested against (see
each ``kernels/*.cu``). Convolutions live in numpy_conv.py and numpy_conv_cnhw.py, the window views
that pooling shares with the fused conv + ReLU + max-pool op in numpy_windows.py.
"""

from __future__ import annotations

import threading

import numpy as np

from ..base import Backend, adam_step_factors, dropout_key, dropout_scale, dropout_threshold, hash32
from .conv import ConvolutionPaths
from .conv_cnhw import CnhwConvolutions
from .threads import BatchHalves
from .windows import (
    _avg_divisor,
    _pad,
    _pool_geometry,
    _running_max,
    _spread_windows,
    _window_view,
)


class _Scratch:
    """Large temporaries handed back after use and handed out again for the same shape.

    A training step allocates the same multi-megabyte arrays every time (im2col matrices, their
    products). With glibc's default settings each one is a fresh mmap whose pages fault in again:
    about 4,000 page faults and twice the time per LeNet-5 step on the 2-core machine. Arrays are
    kept by (shape, dtype) up to ``limit`` bytes in all, the least recently returned shapes
    dropped first. Only arrays that nothing else refers to may be given back. A lock keeps the
    pool whole when models on the numpy backend train in several threads.

    Every stack in ``_free`` holds at least one array: eviction takes the oldest key's first
    array, so an emptied stack left behind would be popped from (an IndexError once a batch is
    large enough for its shapes to overflow ``limit``).
    """

    #: smaller arrays come from malloc's heap anyway
    MIN_BYTES = 64 << 10

    def __init__(self, limit: int = 256 << 20) -> None:
        self.limit = limit
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of this shape and dtype."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            stack = self._free.get(key)
            if stack:
                array = stack.pop()
                if not stack:
                    del self._free[key]
                self._bytes -= array.nbytes
                return array
        return np.empty(shape, dtype=dtype)

    def give(self, *arrays: np.ndarray) -> None:
        with self._lock:
            for array in arrays:
                self._keep(array)

    def _keep(self, array: np.ndarray) -> None:
        if array.nbytes < self.MIN_BYTES or array.base is not None or array.nbytes > self.limit:
            return
        key = (array.shape, array.dtype)
        stack = self._free.pop(key, [])
        stack.append(array)
        self._free[key] = stack  # now the most recently returned shape
        self._bytes += array.nbytes
        while self._bytes > self.limit:
            oldest = next(iter(self._free))
            dropped = self._free[oldest].pop(0)
            self._bytes -= dropped.nbytes
            if not self._free[oldest]:
                del self._free[oldest]


def dropout_mask(shape: tuple[int, ...], p: float, seed: int) -> np.ndarray:
    """uint8 keep-mask, a pure function of (seed, flat index): the reference for dropout.cu."""
    return _dropout_mask_for_key(shape, p, dropout_key(seed))


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


class NumpyBackend(BatchHalves, ConvolutionPaths, CnhwConvolutions, Backend):
    name = "numpy"
    xp = np
    array_type = np.ndarray
    #: LeNet-5 inference at batch 1024 on the 2-core machine: 57 ms whole, 44 ms in chunks of 32;
    #: chunks of 48 are 5-10% faster again than 32 and than 64 in quiet minutes (interleaved in one
    #: process; in loaded minutes 32 and 48 trade places within +-6%), and as fast as 64 for ResNet-8
    #: and the examples/mnist net, whose larger GEMMs like bigger chunks
    eval_batch_chunk = 48

    def __init__(self) -> None:
        # id(x) -> (x, geometry, [(start, stop, cols)]): a training forward keeps its im2col
        # matrices so the backward pass need not build them again; holding x keeps its id from
        # being reused meanwhile
        self._saved_columns: dict[int, tuple[np.ndarray, tuple, list[tuple[int, int, np.ndarray]]]] = {}
        # id(argmax) -> (argmax, offset): max pooling's winning kernel offset per window (uint8), so
        # the backward pass compares a quarter of the bytes that the int32 argmax would take
        self._saved_offsets: dict[int, tuple[np.ndarray, None, np.ndarray]] = {}
        self._scratch = _Scratch()
        # id(x) -> (x, split, (x[:split], x[split:])): see BatchHalves
        self._saved_halves: dict[int, tuple] = {}

    def _new_part(self) -> NumpyBackend:
        part = type(self)()
        part._is_part = True
        return part

    @staticmethod
    def _remember(cache: dict, key: int, value: tuple, limit: int) -> None:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = value

    @staticmethod
    def _recall(cache: dict, x: np.ndarray, geometry) -> object | None:
        """What a forward remembered for x as (x, geometry, value), taken out of the cache; None when
        it kept nothing for this very array at this geometry."""
        saved = cache.pop(id(x), None)
        if saved is not None and saved[0] is x and saved[1] == geometry:
            return saved[2]
        return None

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype, order="C")  # ascontiguousarray would make a 0-d array 1-d

    def to_numpy(self, a):
        return np.asarray(a)

    # ---------------------------------------------------------------- pooling
    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW)
    def maxpool2d_forward(self, x, kernel, stride, padding, ceil_mode):
        # A running maximum over the KH*KW kernel offsets, each a strided view of the whole
        # input: no window copy. The rule is maxpool2d.cu's: padding is never a candidate, the
        # first maximum wins ties, and the first NaN wins over everything.
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        windows = _window_view(_pad(x, ph, bottom, pw, right, -np.inf), kh, kw, sh, sw, 1, 1, oh, ow)
        corner = (np.arange(oh) * sh - ph)[:, None] * w + (np.arange(ow) * sw - pw)[None, :]
        if not np.isfinite(x).all():
            return self._maxpool2d_nonfinite(x.shape, windows, kernel, stride, padding, corner)
        # Finite input: "strictly greater" is exact, since any real element beats the -inf padding.
        best, offset = _running_max([windows[:, :, i, j] for i in range(kh) for j in range(kw)])
        steps = (np.arange(kh)[:, None] * w + np.arange(kw)[None, :]).ravel().astype(np.int32)
        argmax = np.take(steps, offset)
        argmax += corner.astype(np.int32)
        self._remember(self._saved_offsets, id(argmax), (argmax, None, offset), self.SAVED_COLUMNS)
        return best, argmax

    @staticmethod
    def _maxpool2d_nonfinite(x_shape, windows, kernel, stride, padding, corner):
        """The scan with NaN and validity tracking, for inputs holding NaN or infinities."""
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = corner.shape
        best = np.full((n, c, oh, ow), -np.inf, dtype=windows.dtype)
        argmax = np.full((n, c, oh, ow), -1, dtype=np.int32)
        rows0, cols0 = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
        for i in range(kh):
            for j in range(kw):
                rows, cols = rows0 + i, cols0 + j
                valid = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
                v = windows[:, :, i, j]
                # x <= y is False when either is NaN: this takes v > best and a first NaN; the
                # first valid element always takes an empty window
                take = (~(v <= best) & (best == best) | (argmax < 0)) & valid
                np.copyto(best, v, where=take)
                np.copyto(argmax, (corner + i * w + j).astype(np.int32), where=take)
        return best, argmax

    # dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W)
    def maxpool2d_backward(self, dy, argmax, x_shape, kernel, stride, padding, relu_output=None):
        if relu_output is not None:
            dy = self.relu_backward(dy, relu_output)
        h, w = x_shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        oh, ow = dy.shape[2:]
        if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and (h, w) == (oh * kh, ow * kw):
            # the windows tile the input exactly: every input cell is written once, no zero fill
            dx = np.empty(x_shape, dtype=dy.dtype)
            tiles = dx.reshape(x_shape[0], x_shape[1], oh, kh, ow, kw)
            offset = self._recall(self._saved_offsets, argmax, None)
            if offset is not None:
                for i in range(kh):
                    for j in range(kw):
                        np.multiply(dy, offset == i * kw + j, out=tiles[:, :, :, i, :, j])
                return dx
            corner = (np.arange(oh) * kh)[:, None] * w + (np.arange(ow) * kw)[None, :]
            for i in range(kh):
                for j in range(kw):
                    np.multiply(dy, argmax == corner + (i * w + j), out=tiles[:, :, :, i, :, j])
            return dx

        def routed(i, j):
            rows = np.arange(oh) * sh - ph + i
            cols = np.arange(ow) * sw - pw + j
            target = rows.reshape(oh, 1) * w + cols.reshape(1, ow)
            # positions in the padding must not alias a real element of another row
            valid = ((rows >= 0) & (rows < h)).reshape(oh, 1) & ((cols >= 0) & (cols < w))
            chosen = argmax == target
            if not valid.all():
                chosen &= valid
            return dy * chosen

        return _spread_windows(routed, x_shape, kh, kw, sh, sw, 1, 1, ph, pw,
                               max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))

    def avgpool2d_forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        n, c, h, w = x.shape
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        xpad = _pad(x, padding[0], bottom, padding[1], right, 0.0)
        sums = _window_view(xpad, *kernel, *stride, 1, 1, oh, ow).sum(axis=(2, 3))
        divisor = _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, x.dtype)
        return np.ascontiguousarray(sums / divisor)

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        h, w = x_shape[2:]
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, padding, ceil_mode)
        share = dy / _avg_divisor(h, w, oh, ow, kernel, stride, padding, count_include_pad, dy.dtype)
        return _spread_windows(lambda i, j: share, x_shape, *kernel, *stride, 1, 1,
                               padding[0], padding[1], h + padding[0] + bottom, w + padding[1] + right)

    # y = (sum x^p * KH*KW / count)^(1/p): PyTorch's LPPool2d, whose ceil-mode partial windows
    # are scaled up to a full window's size; p = inf is the window's max |x|, as in PyTorch.
    def lppool2d_forward(self, x, norm_type, kernel, stride, ceil_mode):
        if norm_type == np.inf:
            return np.ascontiguousarray(self._abs_windows(x, kernel, stride, ceil_mode).max(axis=(2, 3)))
        # a negative x^p or the root of a negative sum is NaN, as in PyTorch: no warning for it
        with np.errstate(invalid="ignore"):
            mean = self.avgpool2d_forward(x ** norm_type, kernel, stride, (0, 0), ceil_mode, True)
            return (mean * (kernel[0] * kernel[1])) ** (1.0 / norm_type)

    def lppool2d_backward(self, dy, x, y, norm_type, kernel, stride, ceil_mode):
        if norm_type == np.inf:
            return self._max_norm_backward(dy, x, kernel, stride, ceil_mode)
        # dy/dx_i = KH*KW/count * x_i^(p-1) * y^(1-p). Only a zero norm is skipped (0/0, which
        # PyTorch sets to 0): a negative y (p = 1) passes its gradient and a NaN y passes NaN,
        # except at p = 1, a plain sum whose gradient (y^0 = 1) does not depend on x (PyTorch
        # gives 0 there). 0^(p-1) for p < 1 is inf, as in PyTorch.
        zero = y == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            outer = np.where(zero, 0, dy * np.where(zero, 1, y) ** (1 - norm_type)) * (kernel[0] * kernel[1])
            spread = self.avgpool2d_backward(outer, x.shape, kernel, stride, (0, 0), ceil_mode, True)
            return spread * x ** (norm_type - 1)

    @staticmethod
    def _abs_windows(x, kernel, stride, ceil_mode):
        """|x|'s windows (N, C, KH, KW, OH, OW); a ceil-mode window's cells past the input hold -1,
        below every |x|, so they never win."""
        h, w = x.shape[2:]
        oh, ow, bottom, right = _pool_geometry(h, w, kernel, stride, (0, 0), ceil_mode)
        return _window_view(_pad(np.abs(x), 0, bottom, 0, right, -1.0), *kernel, *stride, 1, 1, oh, ow)

    def _max_norm_backward(self, dy, x, kernel, stride, ceil_mode):
        """sign(x) * dy to the element each window's max |x| came from: the first on ties, as
        PyTorch, and the first NaN (lppool2d.cu's rule; np.argmax's too). sign(NaN) is NaN, where
        PyTorch's is 0: a NaN window's gradient stays NaN."""
        (kh, kw), (sh, sw) = kernel, stride
        h, w = x.shape[2:]
        windows = self._abs_windows(x, kernel, stride, ceil_mode)
        n, c, _, _, oh, ow = windows.shape
        winner = np.argmax(windows.reshape(n, c, kh * kw, oh, ow), axis=2)
        bottom, right = _pool_geometry(h, w, kernel, stride, (0, 0), ceil_mode)[2:]
        signs = np.sign(_window_view(_pad(x, 0, bottom, 0, right, 0.0), kh, kw, sh, sw, 1, 1, oh, ow))
        return _spread_windows(lambda i, j: np.where(winner == i * kw + j, dy * signs[:, :, i, j], 0), x.shape,
                               kh, kw, sh, sw, 1, 1, 0, 0, h + bottom, w + right)

    # ---------------------------------------------------------------- activations
    def relu_forward(self, x):
        if x.ndim == 0 or self._row_split(len(x), x.size) is None:
            return np.maximum(x, 0)
        y = np.empty(x.shape, x.dtype)
        self.over_batch(lambda lo, hi: np.maximum(x[lo:hi], 0, out=y[lo:hi]), len(x), x.size)
        return y

    def relu_backward(self, dy, y):
        # a multiply by the mask, as relu_backward in activations.cu: 13x faster than np.where
        if dy.ndim == 0 or dy.shape != y.shape or self._row_split(len(dy), dy.size) is None:
            return dy * (y > 0)
        dx = np.empty(dy.shape, np.result_type(dy, np.bool_))
        self.over_batch(lambda lo, hi: np.multiply(dy[lo:hi], y[lo:hi] > 0, out=dx[lo:hi]), len(dy), dy.size)
        return dx

    def leaky_relu_forward(self, x, negative_slope):
        return np.where(x > 0, x, x * x.dtype.type(negative_slope))

    def leaky_relu_backward(self, dy, x, negative_slope):
        return np.where(x > 0, dy, dy * dy.dtype.type(negative_slope))

    def sigmoid_forward(self, x):
        # the two-sided form never overflows exp()
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def sigmoid_backward(self, dy, y):
        return dy * y * (1 - y)

    def tanh_forward(self, x):
        return np.tanh(x)

    def tanh_backward(self, dy, y):
        return dy * (1 - y * y)

    def dropout_forward(self, x, p, seed):
        return self._dropout_with_key(x, p, dropout_key(seed))

    # keys: uint32 (steps, slots), step: int64 (1,): the key of row step[0], column slot (CUDA graphs)
    def dropout_forward_stepped(self, x, p, keys, step, slot):
        return self._dropout_with_key(x, p, int(keys[int(step[0]), slot]))

    @staticmethod
    def _dropout_with_key(x, p, key):
        mask = _dropout_mask_for_key(x.shape, p, key)
        return x * mask * x.dtype.type(dropout_scale(p)), mask

    def dropout_backward(self, dy, mask, p):
        scale = dy.dtype.type(dropout_scale(p))
        return dy * mask * scale

    # ---------------------------------------------------------------- fully connected
    # x: (M, K), w: (N, K), b: (N,) -> y: (M, N)
    def _whole_linear_forward(self, x, w, b, relu=False):
        y = x @ w.T
        if b is not None:
            y += b
        if relu:
            np.maximum(y, 0, out=y)
        return y

    # dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
    def _whole_linear_backward(self, dy, x, w, need_input_grad=True, relu_output=None):
        if relu_output is not None:
            dy = self.relu_backward(dy, relu_output)
        rows = dy.reshape(-1, dy.shape[-1])
        dx = dy @ w if need_input_grad else None
        return dx, rows.T @ x.reshape(-1, x.shape[-1]), rows.sum(axis=0)

    # ---------------------------------------------------------------- loss
    # logits: (N, K), labels: (N,) -> loss: (), dlogits: (N, K); label_smoothing eps as PyTorch's (unweighted)
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        losses, grad = self._softmax_rows(logits, labels, label_smoothing)
        if not logits.shape[0]:  # the mean over no rows, as PyTorch's: NaN (without 0/0's warning)
            return np.asarray(np.nan, dtype=logits.dtype), grad
        return np.asarray(losses.sum() / logits.shape[0], dtype=logits.dtype), grad

    # total: float64 (1,), in place += the rows' losses added in order (cumsum is sequential)
    def softmax_cross_entropy_accumulate(self, logits, labels, total, label_smoothing=0.0):
        losses, grad = self._softmax_rows(logits, labels, label_smoothing)
        if len(losses):  # no rows add nothing (cumsum of nothing has no last element)
            total += np.cumsum(losses.astype(np.float64))[-1:]
        return grad

    def _softmax_rows(self, logits, labels, label_smoothing):
        """(per-row loss, dlogits of the batch mean): what softmax_cross_entropy.cu writes."""
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_total = np.log(total[:, 0])
        rows = np.arange(n)
        grad = exp / total
        if label_smoothing:  # target (1 - eps) * onehot + eps / K
            losses = self._smoothed_rows(shifted, log_total, labels, label_smoothing)
            grad -= logits.dtype.type(label_smoothing / logits.shape[1])
            grad[rows, labels] -= logits.dtype.type(1 - label_smoothing)
        else:  # no 0 * inf terms: an infinite logit must not make the plain loss NaN
            losses = log_total - shifted[rows, labels]
            grad[rows, labels] -= 1
        grad /= n
        return losses, grad

    @staticmethod
    def _smoothed_rows(shifted, log_total, labels, eps):
        """Per-row loss (1 - eps) * -log p[label] + eps * mean_k -log p[k], with -log p = log_total - shifted."""
        nll = log_total - shifted[np.arange(len(shifted)), labels]
        return (1 - eps) * nll + eps * (log_total - shifted.mean(axis=1))

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
        self._adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
                   lambda v: np.sqrt(v) / root)

    @staticmethod
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
            self._adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size,
                       lambda v: np.sqrt(v) * scale)
