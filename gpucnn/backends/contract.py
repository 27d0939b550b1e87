"""The backend contract: every op a backend must implement, with its shapes.

Layers call only these ops (plus the array namespace ``backend.xp`` for glue such as
reshapes and matmuls), so a new backend slots in by implementing this list. The test
``tests/test_backend_switch.py`` checks that every registered backend class does.

Conventions:
- Arrays are NCHW and C-contiguous on return; ``real`` is float32 or float64.
- ``stride`` and ``dilation`` are ``(sh, sw)``; ``padding`` is ``(top, bottom, left, right)``
  so that asymmetric ``'same'`` padding for even kernels needs no special case.
- Pooling ``kernel``/``stride``/``padding`` are ``(kh, kw)``, ``(sh, sw)``, ``(ph, pw)``.
- Ops never modify their inputs unless the contract says "in place".
"""

from __future__ import annotations

OPS: dict[str, str] = {
    # convolution
    "conv2d_forward": (
        "(x, w, b|None, stride, padding, dilation, groups, relu=False, keep_for_backward=False) -> y; "
        "x: (N, C, H, W), w: (K, C/groups, KH, KW), b: (K,) -> y: (N, K, OH, OW); "
        "relu=True fuses max(y, 0) into the epilogue; keep_for_backward hints that conv2d_backward "
        "will follow on the same x (a backend may keep work for it)"
    ),
    "conv2d_backward": (
        "(dy, x, w, stride, padding, dilation, groups, need_input_grad=True) -> (dx|None, dw, db); "
        "dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/groups, KH, KW), db: (K,)"
    ),
    "conv2d_relu_maxpool2d_forward": (
        "(x, w, b|None, stride, padding, dilation, groups, kernel, pool_stride, pool_padding, ceil_mode, "
        "keep_for_backward=False) -> (y, saved); y = maxpool2d(relu(conv2d(x))), bit for bit what the three "
        "ops give; x: (N, C, H, W) -> y: (N, K, PH, PW); saved: backend-specific state for the backward "
        "(None unless keep_for_backward), used up by one backward pass (ValueError on a second). "
        "base.composed_conv2d_relu_maxpool2d_forward runs the three ops; a backend may fuse them"
    ),
    "conv2d_relu_maxpool2d_backward": (
        "(dy, saved, x, w, stride, padding, dilation, groups, kernel, pool_stride, pool_padding, "
        "need_input_grad=True) -> (dx|None, dw, db); dy: (N, K, PH, PW); the same gradients, bit for bit, "
        "as relu_backward on the pooled output, maxpool2d_backward and conv2d_backward"
    ),
    # pooling
    "maxpool2d_forward": (
        "(x, kernel, stride, padding, ceil_mode) -> (y, argmax); "
        "x: (N, C, H, W) -> y: (N, C, OH, OW), argmax: int32 (N, C, OH, OW) index into the H*W plane"
    ),
    "maxpool2d_backward": (
        "(dy, argmax, x_shape, kernel, stride, padding, relu_output=None) -> dx: (N, C, H, W); relu_output: "
        "the pooled output y when the pooling's input was a ReLU's output: dy is masked by y > 0 first, bit for "
        "bit relu_backward(dy, y), so ReLU -> MaxPool2d's backward is one op"
    ),
    "avgpool2d_forward": (
        "(x, kernel, stride, padding, ceil_mode, count_include_pad) -> y; "
        "x: (N, C, H, W) -> y: (N, C, OH, OW)"
    ),
    "avgpool2d_backward": (
        "(dy, x_shape, kernel, stride, padding, ceil_mode, count_include_pad) -> dx: (N, C, H, W)"
    ),
    "lppool2d_forward": (
        "(x, norm_type, kernel, stride, ceil_mode) -> y; x: (N, C, H, W) -> y: (N, C, OH, OW); "
        "norm_type > 0, or inf for the window max of |x| (as PyTorch)"
    ),
    "lppool2d_backward": (
        "(dy, x, y, norm_type, kernel, stride, ceil_mode) -> dx: (N, C, H, W); only zero-norm windows pass "
        "no gradient (NaN stays NaN); y is not read when norm_type is inf"
    ),
    # activations (elementwise, any shape)
    "relu_forward": "(x) -> y",
    "relu_backward": "(dy, y) -> dx  (from the saved output, so the forward may run in place)",
    "leaky_relu_forward": "(x, negative_slope) -> y",
    "leaky_relu_backward": "(dy, x, negative_slope) -> dx",
    "sigmoid_forward": "(x) -> y",
    "sigmoid_backward": "(dy, y) -> dx",
    "tanh_forward": "(x) -> y",
    "tanh_backward": "(dy, y) -> dx",
    "dropout_forward": (
        "(x, p, seed) -> (y, mask); mask: uint8, same shape; the mask is a pure function of "
        "(seed, flat index), identical on every backend"
    ),
    "dropout_forward_stepped": (
        "(x, p, keys, step, slot) -> (y, mask); dropout_forward with the key (dropout_key of a seed) read from "
        "device memory: keys: uint32 (steps, slots), step: int64 (1,), the key keys[step[0], slot] (CUDA graphs)"
    ),
    "dropout_backward": "(dy, mask, p) -> dx",
    # fully connected
    "linear_forward": (
        "(x, w, b|None, relu=False) -> y; x: (M, K), w: (N, K), b: (N,) -> y: (M, N) = x @ w.T + b; "
        "relu=True fuses max(y, 0) into the epilogue"
    ),
    "linear_backward": (
        "(dy, x, w, need_input_grad=True, relu_output=None) -> (dx|None, dw, db); dy: (M, N) -> dx: (M, K) = "
        "dy @ w, dw: (N, K) = dy.T @ x, db: (N,) = dy summed over rows; relu_output: the forward's output when "
        "it ran with relu=True: dy is masked by y > 0 first, bit for bit relu_backward(dy, y)"
    ),
    # loss
    "softmax_cross_entropy": (
        "(logits, labels, label_smoothing=0.0) -> (loss, dlogits); logits: (N, K), labels: int (N,) -> "
        "loss: 0-d array (mean over N of (1 - eps) * -log p[label] + eps * mean_k -log p[k], eps = "
        "label_smoothing in [0, 1], PyTorch's unweighted definition), dlogits: (N, K) = "
        "(softmax - (1 - eps) * onehot - eps / K) / N; eps = 0 is exactly the plain (softmax - onehot) / N; "
        "N = 0 gives a NaN loss (the mean of nothing, as PyTorch's) and an empty dlogits"
    ),
    "softmax_cross_entropy_accumulate": (
        "(logits, labels, total, label_smoothing=0.0) -> dlogits; labels: int32 (N,); dlogits bit for bit "
        "softmax_cross_entropy's; total: float64 (1,), in place += the N rows' losses, added in order in float64"
    ),
    # a training step's data and counter, on the device (CUDA graphs: nothing per step is an argument)
    "gather_batch": (
        "(images, labels, order, offsets|None, step, batch_stride, count, max_shift, background) -> (x, y); "
        "images: (N, C, H, W), labels, order: int32 (N,), offsets: int32 (N, 2), step: int64 (1,), background: a "
        "0-d or (1,) array of the images' dtype; row b is image order[step[0] * batch_stride + b] shifted by its "
        "offsets row (dy, dx) (x[b, c, h, w] = image[c, h + dy, w + dx], background outside) when max_shift > 0; "
        "x: (count, C, H, W), y: int32 (count,) its labels"
    ),
    "step_advance": "(step) -> None; step: int64 (1,), in place += 1",
    # optimizer updates (in place on param and state)
    "sgd_update": "(param, grad, velocity|None, lr, momentum, weight_decay, nesterov) -> None",
    "adam_update": (
        "(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled) -> None"
    ),
    "sgd_update_many": (
        "(params, grads, velocities|None, lr, momentum, weight_decay, nesterov) -> None; equally long lists, "
        "bit for bit sgd_update on each (param, grad, velocity); a backend may update them all at once"
    ),
    "adam_update_many": (
        "(params, grads, ms, vs, step, lr, beta1, beta2, eps, weight_decay, decoupled) -> None; bit for bit "
        "adam_update on each (param, grad, m, v); a backend may update them all at once"
    ),
    "sgd_update_many_stepped": (
        "(params, grads, velocities|None, hyper, step, nesterov) -> None; bit for bit sgd_update_many with lr, "
        "momentum, weight_decay from row step[0] of hyper: (steps, 3) of the params' dtype; step: int64 (1,)"
    ),
    "adam_update_many_stepped": (
        "(params, grads, ms, vs, hyper, step, decoupled) -> None; bit for bit adam_update_many with row step[0] of "
        "hyper: (steps, 7) of lr, beta1, beta2, eps, weight_decay, lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)"
    ),
    # host/device movement
    "asarray": "(array_like, dtype=None) -> array on this backend",
    "to_numpy": "(array) -> numpy.ndarray",
}


def missing_ops(backend_class: type) -> list[str]:
    """Names of contract ops that ``backend_class`` does not implement."""
    return [name for name in OPS if not callable(getattr(backend_class, name, None))]
