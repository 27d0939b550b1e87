"""The CUDA backend: launchers for the kernels in ``kernels/*.cu``.

This file is shared by two backends. ``cuda`` gives it a CuPy device (``cupy_device.py``, the
only module that imports CuPy) and ``cuda-sim`` a device that runs the same kernels on the CPU
(``sim/loader.py``). A device provides the array namespace, allocation and ``launch``; the launch
logic (checks, output allocation, grid sizes, exact argument types) lives on this side, once:
here ``CudaBackend``, one method per contract op (its grids, blocks and arguments), on
``launch.py``'s plumbing (the ``Device`` interface, input checks, typed arguments, the launch
itself), with ``conv_plan.py`` choosing how each convolution is cut into blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...shapes import conv_output_hw, pool_output_hw
from ..base import (
    Backend,
    adam_step_factors,
    composed_conv2d_relu_maxpool2d_backward,
    composed_conv2d_relu_maxpool2d_forward,
    dropout_key,
    dropout_scale,
    dropout_threshold,
)
from ..elementwise import ElementwiseOp, implemented_by
from .conv_plan import CONV_DIRECT, CONV_LAUNCH, conv2d_variants, weight_grad_splits
from .launch import BLOCK, Device, Launcher, _blocks, _Index, _Real
from .launch import CaptureGuard as CaptureGuard  # re-exported: cupy_device.py and sim/device.py import it here

LINEAR_TILE = 64            # linear.cu's LINEAR_TILE (rows and columns of an output tile)
LINEAR_THREADS = 256        # linear.cu: threads of a block, each computing 4x4 outputs of a tile
SGD_HYPER, ADAM_HYPER = 3, 7  # optimizers.cu: columns of the *_many_stepped kernels' per-step tables
PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}  # pad.cu's mode codes


def _launched(op: ElementwiseOp) -> Any:
    """An elementwise op of backends/elementwise.py as one launch over all elements: its arrays, the
    output, its scalars (in the arrays' real type), the element count."""
    arrays = len(op.arrays)

    def run(self: CudaBackend, *args: Any) -> Any:
        return self._elementwise(op.module, op.name, list(args[:arrays]), [_Real(v) for v in args[arrays:]])

    return run


@implemented_by(_launched)
class CudaBackend(Launcher, Backend):
    """Every contract op as a kernel launch on ``device``."""

    name = "cuda"

    def __init__(self, device: Device, name: str = "cuda") -> None:
        self.device = device
        self.name = name
        #: use the 64-bit index build for every launch (tests set it to run that path on small tensors)
        self.force_index64 = False
        self.xp = device.xp
        self.array_type = device.array_type
        #: kernel launches made through this backend (tests count them per training step)
        self.launch_count = 0
        #: device->host copies (to_numpy) and synchronize calls made through this backend; a training
        #: step makes none (implicit ones, float() or .item() on a device array, are not counted here)
        self.host_transfer_count = 0
        self.sync_count = 0
        # (pointers and sizes) -> the *_many updates' table on the device; see _many_table
        self._many_tables: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ movement
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.device.asarray(a, dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        self.host_transfer_count += 1
        return self.device.to_numpy(a)

    def synchronize(self) -> None:
        self.sync_count += 1
        self.device.synchronize()

    # ------------------------------------------------------------------ convolution
    # x: (N, C, H, W), w: (K, C/G, KH, KW), b: (K,) -> y: (N, K, OH, OW)
    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups, relu=False, keep_for_backward=False):
        # implicit GEMM: nothing is materialised, so there is nothing to keep for the backward pass
        x = self._input(x, "conv2d_forward x")
        w = self._input(w, "conv2d_forward w", x.dtype)
        bias = w if b is None else self._input(b, "conv2d_forward b", x.dtype)
        n, k = x.shape[0], w.shape[0]
        oh, ow = conv_output_hw(x.shape, w.shape, stride, padding, dilation)
        y = self.device.empty((n, k, oh, ow), x.dtype)
        variant = conv2d_variants(w.shape, groups)["forward"]
        threads, rows, cols = CONV_LAUNCH["forward"][variant]
        # the direct variant's threads loop over all of a group's output channels
        grid = (_blocks(n * oh * ow, rows), 1 if variant == CONV_DIRECT else _blocks(k // groups, cols), groups)
        self._launch("conv2d", "conv2d_forward", grid, (threads,),
                     [x, w, bias, y, *self._geometry(x.shape, w.shape, (oh, ow), stride, padding, dilation, groups),
                      np.int32(b is not None), np.int32(bool(relu))], x.dtype, (x, w, y))
        return y

    @staticmethod
    def _geometry(x_shape, w_shape, out_hw, stride, padding, dilation, groups) -> list[Any]:
        n, c, h, w = x_shape
        k, _, kh, kw = w_shape
        i32 = np.int32
        return [_Index(n), _Index(c), _Index(h), _Index(w), _Index(k), _Index(out_hw[0]), _Index(out_hw[1]),
                i32(kh), i32(kw), i32(stride[0]), i32(stride[1]), i32(padding[0]), i32(padding[2]),
                i32(dilation[0]), i32(dilation[1]), i32(groups)]

    # dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/G, KH, KW), db: (K,)
    def conv2d_backward(self, dy, x, w, stride, padding, dilation, groups, need_input_grad=True):
        # the weight and bias gradient first, then the input gradient: the launches of the two ops below
        x = self._input(x, "conv2d_backward x")
        w = self._input(w, "conv2d_backward w", x.dtype)
        dw, db = self.conv2d_weight_grad(dy, x, w.shape, stride, padding, dilation, groups)
        if not need_input_grad:
            return None, dw, db
        return self.conv2d_input_grad(dy, w, x.shape, stride, padding, dilation, groups), dw, db

    # dy: (N, K, OH, OW), w: (K, C/G, KH, KW) -> dx: x_shape (N, C, H, W); conv2d_backward's input launch
    def conv2d_input_grad(self, dy, w, x_shape, stride, padding, dilation, groups):
        dy = self._input(dy, "conv2d_input_grad dy")
        w = self._input(w, "conv2d_input_grad w", dy.dtype)
        n, _, h, wd = x_shape
        geometry = self._geometry(tuple(x_shape), w.shape, dy.shape[2:], stride, padding, dilation, groups)
        dx = self.device.empty(tuple(x_shape), dy.dtype)
        threads, rows, cols = CONV_LAUNCH["backward_input"][conv2d_variants(w.shape, groups)["backward_input"]]
        grid = (_blocks(n * h * wd, rows), _blocks(w.shape[1], cols), groups)
        self._launch("conv2d", "conv2d_backward_input", grid, (threads,), [dy, w, dx, *geometry], dy.dtype,
                     (dy, w, dx))
        return dx

    # dy: (N, K, OH, OW), x: (N, C, H, W) -> dw: w_shape (K, C/G, KH, KW), db: (K,); conv2d_backward's
    # weight launches
    def conv2d_weight_grad(self, dy, x, w_shape, stride, padding, dilation, groups):
        x = self._input(x, "conv2d_weight_grad x")
        dy = self._input(dy, "conv2d_weight_grad dy", x.dtype)
        w_shape = tuple(w_shape)
        n = x.shape[0]
        k, cg, kh, kw = w_shape
        oh, ow = dy.shape[2:]
        geometry = self._geometry(x.shape, w_shape, (oh, ow), stride, padding, dilation, groups)
        # (K, taps + 1) per pixel split (the last column sums dy: db), enough splits to fill the device, then
        # an ordered sum of the splits
        variant = conv2d_variants(w_shape, groups)["backward_weight"]
        threads, rows, cols = CONV_LAUNCH["backward_weight"][variant]
        pixels, taps = n * oh * ow, cg * kh * kw
        splits, per_split = weight_grad_splits(pixels, taps, k // groups, groups, variant,
                                               self.device.multiprocessor_count)
        partial = self.device.empty((splits, k, taps + 1), x.dtype)
        grid = (_blocks(taps + 1, cols), _blocks(k // groups, rows), groups * splits)
        self._launch("conv2d", "conv2d_backward_weight", grid, (threads,),
                     [dy, x, partial, *geometry, _Index(per_split)], x.dtype, (x, dy, partial))
        dw = self.device.empty(w_shape, x.dtype)
        db = self.device.empty((k,), x.dtype)
        self._launch("conv2d", "conv2d_reduce_weight_partials", self._elementwise_grid(32 * k * (taps + 1)), (BLOCK,),
                     [partial, dw, db, _Index(splits), _Index(k), _Index(taps)], x.dtype, (x, dy, partial))
        return dw, db

    # ------------------------------------------------------------------ pooling
    def _pool_args(self, x_shape, out_hw, kernel, stride) -> list[Any]:
        n, c, h, w = x_shape
        i32 = np.int32
        return [_Index(n * c), _Index(h), _Index(w), _Index(out_hw[0]), _Index(out_hw[1]), i32(kernel[0]),
                i32(kernel[1]), i32(stride[0]), i32(stride[1])]

    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW)
    def maxpool2d_forward(self, x, kernel, stride, padding, ceil_mode):
        x = self._input(x, "maxpool2d_forward x")
        oh, ow = pool_output_hw(x.shape[2:], kernel, stride, padding, ceil_mode)
        y = self.device.empty(x.shape[:2] + (oh, ow), x.dtype)
        argmax = self.device.empty(y.shape, np.int32)
        self._launch("maxpool2d", "maxpool2d_forward", self._elementwise_grid(y.size), (BLOCK,),
                     [x, y, argmax, *self._pool_args(x.shape, (oh, ow), kernel, stride),
                      np.int32(padding[0]), np.int32(padding[1])], x.dtype, (x,))
        return y, argmax

    def maxpool2d_backward(self, dy, argmax, x_shape, kernel, stride, padding, relu_output=None):
        dy = self._input(dy, "maxpool2d_backward dy")
        argmax = self._input(argmax, "maxpool2d_backward argmax", np.int32)
        y = dy if relu_output is None else self._input(relu_output, "maxpool2d_backward relu_output", dy.dtype)
        dx = self.device.empty(tuple(x_shape), dy.dtype)
        self._launch("maxpool2d", "maxpool2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                     [dy, argmax, y, dx, *self._pool_args(x_shape, dy.shape[2:], kernel, stride),
                      np.int32(padding[0]), np.int32(padding[1]), np.int32(relu_output is not None)], dy.dtype, (dx,))
        return dx

    # x: (N, C, H, W) -> y, argmax: (N, C, OH, OW) over PyTorch's adaptive windows
    def adaptive_maxpool2d_forward(self, x, out_hw):
        x = self._input(x, "adaptive_maxpool2d_forward x")
        n, c, h, w = x.shape
        y = self.device.empty((n, c, *out_hw), x.dtype)
        argmax = self.device.empty(y.shape, np.int32)
        self._launch("maxpool2d", "adaptive_maxpool2d_forward", self._elementwise_grid(y.size), (BLOCK,),
                     [x, y, argmax, _Index(n * c), _Index(h), _Index(w), _Index(out_hw[0]), _Index(out_hw[1])],
                     x.dtype, (x,))
        return y, argmax

    def adaptive_maxpool2d_backward(self, dy, argmax, x_shape):
        dy = self._input(dy, "adaptive_maxpool2d_backward dy")
        argmax = self._input(argmax, "adaptive_maxpool2d_backward argmax", np.int32)
        n, c, h, w = x_shape
        dx = self.device.empty(tuple(x_shape), dy.dtype)
        self._launch("maxpool2d", "adaptive_maxpool2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                     [dy, argmax, dx, _Index(n * c), _Index(h), _Index(w), _Index(dy.shape[2]), _Index(dy.shape[3])],
                     dy.dtype, (dx,))
        return dx

    # x, indices: (N, C, H, W) -> y: (N, C, OH, OW); one thread per output row (an ordered scatter)
    def maxunpool2d_forward(self, x, indices, out_hw):
        x = self._input(x, "maxunpool2d_forward x")
        indices = self._input(indices, "maxunpool2d_forward indices", np.int64)
        n, c, h, w = x.shape
        y = self.device.empty((n, c, *out_hw), x.dtype)
        self._launch("maxpool2d", "maxunpool2d_forward", self._elementwise_grid(n * c * out_hw[0]), (BLOCK,),
                     [x, indices, y, _Index(n * c), _Index(h * w), _Index(out_hw[0]), _Index(out_hw[1])], x.dtype,
                     (x, y))
        return y

    def maxunpool2d_backward(self, dy, indices):
        dy = self._input(dy, "maxunpool2d_backward dy")
        indices = self._input(indices, "maxunpool2d_backward indices", np.int64)
        n, c, oh, ow = dy.shape
        dx = self.device.empty(indices.shape, dy.dtype)
        self._launch("maxpool2d", "maxunpool2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                     [dy, indices, dx, _Index(n * c), _Index(dx.size // (n * c)), _Index(oh * ow)], dy.dtype,
                     (dy, dx))
        return dx

    # Conv2d -> ReLU -> MaxPool2d: the conv kernel's ReLU epilogue, then the pooling kernel. No fused
    # kernel yet: a GEMM tile's outputs do not line up with pooling windows, and nothing here could
    # measure whether one pays.
    def conv2d_relu_maxpool2d_forward(self, x, w, b, stride, padding, dilation, groups, kernel, pool_stride,
                                      pool_padding, ceil_mode, keep_for_backward=False):
        return composed_conv2d_relu_maxpool2d_forward(self, x, w, b, stride, padding, dilation, groups, kernel,
                                                      pool_stride, pool_padding, ceil_mode, keep_for_backward)

    def conv2d_relu_maxpool2d_backward(self, dy, saved, x, w, stride, padding, dilation, groups, kernel,
                                       pool_stride, pool_padding, need_input_grad=True):
        return composed_conv2d_relu_maxpool2d_backward(self, dy, saved, x, w, stride, padding, dilation, groups,
                                                       kernel, pool_stride, pool_padding, need_input_grad)

    def avgpool2d_forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad):
        x = self._input(x, "avgpool2d_forward x")
        oh, ow = pool_output_hw(x.shape[2:], kernel, stride, padding, ceil_mode)
        y = self.device.empty(x.shape[:2] + (oh, ow), x.dtype)
        self._launch("avgpool2d", "avgpool2d_forward", self._elementwise_grid(y.size), (BLOCK,),
                     [x, y, *self._pool_args(x.shape, (oh, ow), kernel, stride), np.int32(padding[0]),
                      np.int32(padding[1]), np.int32(bool(count_include_pad))], x.dtype, (x,))
        return y

    def avgpool2d_backward(self, dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad):
        dy = self._input(dy, "avgpool2d_backward dy")
        dx = self.device.empty(tuple(x_shape), dy.dtype)
        self._launch("avgpool2d", "avgpool2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                     [dy, dx, *self._pool_args(x_shape, dy.shape[2:], kernel, stride), np.int32(padding[0]),
                      np.int32(padding[1]), np.int32(bool(count_include_pad))], dy.dtype, (dx,))
        return dx

    def lppool2d_forward(self, x, norm_type, kernel, stride, ceil_mode):
        x = self._input(x, "lppool2d_forward x")
        oh, ow = pool_output_hw(x.shape[2:], kernel, stride, (0, 0), ceil_mode)
        y = self.device.empty(x.shape[:2] + (oh, ow), x.dtype)
        self._launch("lppool2d", "lppool2d_forward", self._elementwise_grid(y.size), (BLOCK,),
                     [x, y, *self._pool_args(x.shape, (oh, ow), kernel, stride), _Real(norm_type)], x.dtype, (x,))
        return y

    def lppool2d_backward(self, dy, x, y, norm_type, kernel, stride, ceil_mode):
        x = self._input(x, "lppool2d_backward x")
        dy = self._input(dy, "lppool2d_backward dy", x.dtype)
        y = self._input(y, "lppool2d_backward y", x.dtype)
        dx = self.device.empty(x.shape, x.dtype)
        self._launch("lppool2d", "lppool2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                     [dy, x, y, dx, *self._pool_args(x.shape, dy.shape[2:], kernel, stride), _Real(norm_type)],
                     x.dtype, (x,))
        return dx

    # ------------------------------------------------------------------ padding
    def _pad_args(self, x_shape, out_hw, pads, mode) -> list[Any]:
        n, c, h, w = x_shape
        return [_Index(n * c), _Index(h), _Index(w), _Index(out_hw[0]), _Index(out_hw[1]), np.int32(pads[0]),
                np.int32(pads[2]), np.int32(PAD_MODES[mode])]

    # x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right), pads = (left, right, top, bottom)
    def pad2d_forward(self, x, pads, mode, value):
        x = self._input(x, "pad2d_forward x")
        left, right, top, bottom = pads
        y = self.device.empty(x.shape[:2] + (x.shape[2] + top + bottom, x.shape[3] + left + right), x.dtype)
        if y.size:
            self._launch("pad", "pad2d_forward", self._elementwise_grid(y.size), (BLOCK,),
                         [x, y, *self._pad_args(x.shape, y.shape[2:], pads, mode), _Real(value)], x.dtype, (x, y))
        return y

    def pad2d_backward(self, dy, x_shape, pads, mode):
        dy = self._input(dy, "pad2d_backward dy")
        dx = self.device.empty(tuple(x_shape), dy.dtype)
        if dx.size:
            self._launch("pad", "pad2d_backward", self._elementwise_grid(dx.size), (BLOCK,),
                         [dy, dx, *self._pad_args(x_shape, dy.shape[2:], pads, mode)], dy.dtype, (dy, dx))
        return dx

    # ------------------------------------------------------------------ activations
    def relu_forward(self, x):
        return self._elementwise("activations", "relu_forward", [x])

    def relu_backward(self, dy, y):
        return self._elementwise("activations", "relu_backward", [dy, y])

    def dropout_forward(self, x, p, seed):
        x = self._input(x, "dropout_forward x")
        y = self.device.empty(x.shape, x.dtype)
        mask = self.device.empty(x.shape, np.uint8)
        if x.size:
            self._launch("dropout", "dropout_forward", self._elementwise_grid(x.size), (BLOCK,),
                         [x, y, mask, np.uint32(dropout_key(seed)), np.uint32(dropout_threshold(p)),
                          _Real(dropout_scale(p)), _Index(x.size)], x.dtype, (x,))
        return y, mask

    def dropout_forward_stepped(self, x, p, keys, step, slot):
        x = self._input(x, "dropout_forward_stepped x")
        keys = self._input(keys, "dropout_forward_stepped keys", np.uint32)
        step = self._input(step, "dropout_forward_stepped step", np.int64)
        y = self.device.empty(x.shape, x.dtype)
        mask = self.device.empty(x.shape, np.uint8)
        if x.size:
            self._launch("dropout", "dropout_forward_stepped", self._elementwise_grid(x.size), (BLOCK,),
                         [x, y, mask, keys, step, np.int32(keys.shape[1]), np.int32(slot),
                          np.uint32(dropout_threshold(p)), _Real(dropout_scale(p)), _Index(x.size)], x.dtype, (x,))
        return y, mask

    def dropout_backward(self, dy, mask, p):
        dy = self._input(dy, "dropout_backward dy")
        mask = self._input(mask, "dropout_backward mask", np.uint8)
        dx = self.device.empty(dy.shape, dy.dtype)
        if dy.size:
            self._launch("dropout", "dropout_backward", self._elementwise_grid(dy.size), (BLOCK,),
                         [dy, mask, dx, _Real(dropout_scale(p)), _Index(dy.size)], dy.dtype, (dy,))
        return dx

    # ------------------------------------------------------------------ fully connected
    # x: (M, K), w: (N, K), b: (N,) -> y: (M, N); leading axes of x are flattened into M
    def linear_forward(self, x, w, b, relu=False):
        x = self._input(x, "linear_forward x")
        w = self._input(w, "linear_forward w", x.dtype)
        bias = w if b is None else self._input(b, "linear_forward b", x.dtype)
        out_features, in_features = w.shape
        rows = x.size // in_features
        y = self.device.empty(x.shape[:-1] + (out_features,), x.dtype)
        if y.size:
            grid = (_blocks(out_features, LINEAR_TILE), _blocks(rows, LINEAR_TILE))
            self._launch("linear", "linear_forward", grid, (LINEAR_THREADS,),
                         [x, w, bias, y, _Index(rows), _Index(in_features), _Index(out_features),
                          np.int32(b is not None), np.int32(bool(relu))], x.dtype, (x, w, y))
        return y

    # dy: (M, N) -> dx: (M, K), dw: (N, K), db: (N,)
    def linear_backward(self, dy, x, w, need_input_grad=True, relu_output=None):
        x = self._input(x, "linear_backward x")
        dy = self._input(dy, "linear_backward dy", x.dtype)
        w = self._input(w, "linear_backward w", x.dtype)
        y = dy if relu_output is None else self._input(relu_output, "linear_backward relu_output", x.dtype)
        masked = np.int32(relu_output is not None)
        out_features, in_features = w.shape
        rows = x.size // in_features
        arrays = (x, dy, w)
        dw = self.device.empty(w.shape, x.dtype)
        db = self.device.empty((out_features,), x.dtype)
        # column in_features of the weight-gradient product is the bias gradient
        grid = (_blocks(in_features + 1, LINEAR_TILE), _blocks(out_features, LINEAR_TILE))
        self._launch("linear", "linear_backward_weight", grid, (LINEAR_THREADS,),
                     [dy, y, x, dw, db, _Index(rows), _Index(in_features), _Index(out_features), masked], x.dtype,
                     arrays)
        if not need_input_grad:
            return None, dw, db
        dx = self.device.empty(x.shape, x.dtype)
        if dx.size:
            grid = (_blocks(in_features, LINEAR_TILE), _blocks(rows, LINEAR_TILE))
            self._launch("linear", "linear_backward_input", grid, (LINEAR_THREADS,),
                         [dy, y, w, dx, _Index(rows), _Index(in_features), _Index(out_features), masked], x.dtype,
                         arrays)
        return dx, dw, db

    # ------------------------------------------------------------------ loss
    # logits: (N, K), labels: (N,) -> loss: (), dlogits: (N, K); label_smoothing eps as PyTorch's (unweighted)
    def softmax_cross_entropy(self, logits, labels, label_smoothing=0.0):
        logits = self._input(logits, "softmax_cross_entropy logits")
        labels = self._input(self.xp.asarray(labels).astype(np.int32, copy=False), "labels", np.int32)
        row_loss, grad = self._softmax_rows(logits, labels, label_smoothing)
        if not logits.shape[0]:  # the mean over no rows, as PyTorch's: NaN
            return self.xp.full((), np.nan, dtype=logits.dtype), grad
        # a 0-d array, as the contract says: NumPy (cuda-sim) would give a scalar, which has no .flags
        return self.xp.asarray(row_loss.sum() / logits.dtype.type(logits.shape[0])), grad

    def softmax_cross_entropy_accumulate(self, logits, labels, total, label_smoothing=0.0):
        logits = self._input(logits, "softmax_cross_entropy_accumulate logits")
        labels = self._input(labels, "softmax_cross_entropy_accumulate labels", np.int32)
        total = self._in_place(total, "softmax_cross_entropy_accumulate total", np.float64)
        row_loss, grad = self._softmax_rows(logits, labels, label_smoothing)
        self._launch("graph_step", "loss_accumulate", (1,), (1,), [row_loss, total, _Index(len(row_loss))],
                     logits.dtype, (logits,))
        return grad

    def _softmax_rows(self, logits, labels, label_smoothing):
        """(per-row loss, dlogits of the batch mean) from the fused kernel, for checked inputs."""
        n, k = logits.shape
        row_loss = self.device.empty((n,), logits.dtype)
        grad = self.device.empty((n, k), logits.dtype)
        if not n:
            return row_loss, grad
        rows_per_block = 4  # one warp per row, 128 threads
        self._launch("softmax_cross_entropy", "softmax_cross_entropy", (_blocks(n, rows_per_block),), (128,),
                     [logits, labels, row_loss, grad, _Index(n), _Index(k), _Real(1.0 / n), _Real(label_smoothing)],
                     logits.dtype, (logits,))
        return row_loss, grad

    # ------------------------------------------------------------------ a step's data and counter (CUDA graphs)
    # images: (N, C, H, W), labels/order: int32 (N,), offsets: int32 (N, 2) -> x: (count, C, H, W), y: int32 (count,)
    def gather_batch(self, images, labels, order, offsets, step, batch_stride, count, max_shift, background):
        images = self._input(images, "gather_batch images")
        labels = self._input(labels, "gather_batch labels", np.int32)
        order = self._input(order, "gather_batch order", np.int32)
        step = self._input(step, "gather_batch step", np.int64)
        background = self._input(background, "gather_batch background", images.dtype)
        shifts = order if offsets is None else self._input(offsets, "gather_batch offsets", np.int32)
        if max_shift > 0 and offsets is None:
            raise ValueError(f"gather_batch: max_shift={max_shift} needs a table of offsets, got None")
        c, h, w = images.shape[1:]
        x = self.device.empty((count, c, h, w), images.dtype)
        y = self.device.empty((count,), np.int32)
        if x.size:
            self._launch("graph_step", "gather_batch", self._elementwise_grid(x.size), (BLOCK,),
                         [images, labels, order, shifts, step, background, x, y, _Index(batch_stride),
                          _Index(count), _Index(c), _Index(h), _Index(w), np.int32(max(max_shift, 0))],
                         images.dtype, (images,))
        return x, y

    def step_advance(self, step):
        step = self._in_place(step, "step_advance step", np.int64)
        self._launch("graph_step", "step_advance", (1,), (1,), [step], np.dtype(np.float32), (step,))

    # ------------------------------------------------------------------ optimizers
    def sgd_update(self, param, grad, velocity, lr, momentum, weight_decay, nesterov):
        param = self._in_place(param, "sgd_update param", None)
        grad = self._input(grad, "sgd_update grad", param.dtype)
        n, grid = _Index(param.size), self._elementwise_grid(param.size)
        if velocity is None:
            self._launch("optimizers", "sgd_update", grid, (BLOCK,), [param, grad, _Real(lr), _Real(weight_decay), n],
                         param.dtype, (param,))
            return
        velocity = self._in_place(velocity, "sgd_update velocity", param.dtype)
        self._launch("optimizers", "sgd_momentum_update", grid, (BLOCK,),
                     [param, grad, velocity, _Real(lr), _Real(momentum), _Real(weight_decay), np.int32(bool(nesterov)),
                      n], param.dtype, (param,))

    def adam_update(self, param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        param = self._in_place(param, "adam_update param", None)
        grad = self._input(grad, "adam_update grad", param.dtype)
        m = self._in_place(m, "adam_update m", param.dtype)
        v = self._in_place(v, "adam_update v", param.dtype)
        step_size, inv_bias2_sqrt = adam_step_factors(lr, beta1, beta2, step)
        self._launch("optimizers", "adam_update", self._elementwise_grid(param.size), (BLOCK,),
                     [param, grad, m, v, _Real(lr), _Real(beta1), _Real(beta2), _Real(eps), _Real(weight_decay),
                      np.int32(bool(decoupled)), _Real(step_size), _Real(inv_bias2_sqrt), _Index(param.size)],
                     param.dtype, (param,))

    # every tensor in one launch: the same arithmetic as the per-tensor kernels, element for element
    def sgd_update_many(self, params, grads, velocities, lr, momentum, weight_decay, nesterov):
        rows = [params, grads] + ([] if velocities is None else [velocities])
        many = self._many_table("sgd_update_many", rows)
        if many is not None:
            table, blocks, checked = many
            self._launch("optimizers", "sgd_update_many", (blocks,), (BLOCK,),
                         [table, np.int32(len(params)), np.int32(len(rows)), _Real(lr), _Real(momentum),
                          _Real(weight_decay), np.int32(bool(nesterov))], checked[0][0].dtype, tuple(checked[0]))

    def adam_update_many(self, params, grads, ms, vs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        many = self._many_table("adam_update_many", [params, grads, ms, vs])
        if many is not None:
            table, blocks, checked = many
            step_size, inv_bias2_sqrt = adam_step_factors(lr, beta1, beta2, step)
            self._launch("optimizers", "adam_update_many", (blocks,), (BLOCK,),
                         [table, np.int32(len(params)), _Real(lr), _Real(beta1), _Real(beta2), _Real(eps),
                          _Real(weight_decay), np.int32(bool(decoupled)), _Real(step_size), _Real(inv_bias2_sqrt)],
                         checked[0][0].dtype, tuple(checked[0]))

    def sgd_update_many_stepped(self, params, grads, velocities, hyper, step, nesterov):
        rows = [params, grads] + ([] if velocities is None else [velocities])
        many = self._many_table("sgd_update_many_stepped", rows)
        if many is not None:
            table, blocks, checked = many
            real = checked[0][0].dtype
            self._launch("optimizers", "sgd_update_many_stepped", (blocks,), (BLOCK,),
                         [table, np.int32(len(params)), np.int32(len(rows)),
                          self._hyper(hyper, "sgd_update_many_stepped", real, SGD_HYPER),
                          self._input(step, "sgd_update_many_stepped step", np.int64), np.int32(bool(nesterov))],
                         real, tuple(checked[0]))

    def adam_update_many_stepped(self, params, grads, ms, vs, hyper, step, decoupled):
        many = self._many_table("adam_update_many_stepped", [params, grads, ms, vs])
        if many is not None:
            table, blocks, checked = many
            real = checked[0][0].dtype
            self._launch("optimizers", "adam_update_many_stepped", (blocks,), (BLOCK,),
                         [table, np.int32(len(params)),
                          self._hyper(hyper, "adam_update_many_stepped", real, ADAM_HYPER),
                          self._input(step, "adam_update_many_stepped step", np.int64), np.int32(bool(decoupled))],
                         real, tuple(checked[0]))

    # ------------------------------------------------------------------ per-row normalisation
    # x: (rows, cols) -> y: (rows, cols), mean, rstd: (rows,); one block per row (layernorm.cu)
    def row_norm_forward(self, x, eps):
        x = self._input(x, "row_norm_forward x")
        rows, cols = x.shape
        y = self.device.empty(x.shape, x.dtype)
        mean, rstd = self.device.empty((rows,), x.dtype), self.device.empty((rows,), x.dtype)
        if rows and not cols:  # statistics of no values, as the NumPy reference's
            mean[...], rstd[...] = np.nan, np.nan
        elif x.size:
            self._launch("layernorm", "row_norm_forward", (rows,), (_row_threads(cols),),
                         [x, y, mean, rstd, _Index(cols), _Real(eps)], x.dtype, (x,))
        return y, mean, rstd

    # dy, x: (rows, cols), mean, rstd: (rows,) -> dx: (rows, cols)
    def row_norm_backward(self, dy, x, mean, rstd):
        x = self._input(x, "row_norm_backward x")
        dy = self._input(dy, "row_norm_backward dy", x.dtype)
        mean = self._input(mean, "row_norm_backward mean", x.dtype)
        rstd = self._input(rstd, "row_norm_backward rstd", x.dtype)
        rows, cols = x.shape
        dx = self.device.empty(x.shape, x.dtype)
        if x.size:
            self._launch("layernorm", "row_norm_backward", (rows,), (_row_threads(cols),),
                         [dy, x, mean, rstd, dx, _Index(cols)], x.dtype, (x,))
        return dx


def _row_threads(cols: int) -> int:
    """A row's block for layernorm.cu: whole warps, BLOCK threads at most, no idle warp on a short row."""
    return min(BLOCK, 32 * _blocks(cols, 32))

