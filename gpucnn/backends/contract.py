"""The backend contract: every op a backend must implement, with its signature and shapes.

Layers call only these ops (plus the array namespace ``backend.xp`` for glue such as
reshapes and matmuls), so a new backend slots in by subclassing ``Backend`` and implementing
each abstract method with the signature given here (same parameter names, order and defaults;
Python cannot instantiate a subclass that leaves one out). ``tests/test_contract.py`` checks
both for every registered backend class.

Conventions:
- Arrays are NCHW and C-contiguous on return; ``real`` is float32 or float64.
- ``stride`` and ``dilation`` are ``(sh, sw)``; ``padding`` is ``(top, bottom, left, right)``
  so that asymmetric ``'same'`` padding for even kernels needs no special case.
- Pooling ``kernel``/``stride``/``padding`` are ``(kh, kw)``, ``(sh, sw)``, ``(ph, pw)``.
- Ops never modify their inputs unless the contract says "in place".

``base.py`` re-exports ``Backend`` beside the helpers implementations share, so either import works.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .elementwise import declare_in_contract

#: a NumPy or CuPy ndarray: whichever this backend's ``array_type`` is (NumPy for ``cuda-sim``)
Array = Any
#: ``(h, w)``: a stride, dilation, pooling kernel, pooling stride or pooling padding
Pair = tuple[int, int]
#: a convolution's ``(top, bottom, left, right)`` padding
Padding = tuple[int, int, int, int]
Shape = tuple[int, ...]


class ConvPoolState:
    """What conv2d_relu_maxpool2d_forward keeps for its backward pass: opaque to the caller, and
    used up by one backward (the CPU backend recycles its buffers then), on every backend alike."""

    __slots__ = ("kind", "_parts")

    def __init__(self, kind: str, parts: tuple) -> None:
        self.kind = kind  # which forward made it: "composed" or a backend's own fused version
        self._parts: tuple | None = parts

    def use(self) -> tuple:
        if self._parts is None:
            raise ValueError("conv2d_relu_maxpool2d_backward: this forward state was used up by an earlier "
                             "backward pass; run the forward again")
        parts, self._parts = self._parts, None
        return parts


class Backend(ABC):
    """What every backend is: a name, an array namespace, host/device movement and the contract ops."""

    name: str = "abstract"
    xp: ModuleType = np
    #: the array type this backend computes on (``numpy.ndarray`` or ``cupy.ndarray``)
    array_type: type = np.ndarray
    #: in eval mode a Sequential runs batches larger than this in chunks of this many samples,
    #: so that every layer's activations stay in cache (None: whole batches, as a GPU wants)
    eval_batch_chunk: int | None = None

    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array this backend computes on."""
        return isinstance(a, self.array_type)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the host)."""
        return None  # a default, not an op left to implement: host backends have nothing to wait for

    def over_batch(self, body: Callable[[int, int], Any], n: int, elements: int) -> list[Any]:
        """Runs ``body(lo, hi)`` over the batch rows [0, n) and returns its results in row order.
        Here that is one call, ``[body(0, n)]``; the NumPy backend with its threads on may run a pass
        over ``elements`` >= a threshold as two halves at once (numpy/threads.py, BatchHalves). Glue written
        on the array namespace (BatchNorm) uses it for its whole-array passes; a caller sums the results
        in the order given, so a one-call run is bit for bit the unsplit code."""
        return [body(0, n)]

    def __repr__(self) -> str:
        return f"<gpucnn backend {self.name!r}>"

    # ------------------------------------------------------------------ host/device movement
    @abstractmethod
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """``a`` (anything array-like) as an array on this backend, of ``dtype`` when given."""

    @abstractmethod
    def to_numpy(self, a: Array) -> np.ndarray:
        """``a`` as a ``numpy.ndarray`` in host memory."""

    # ------------------------------------------------------------------ convolution
    @abstractmethod
    def conv2d_forward(self, x: Array, w: Array, b: Array | None, stride: Pair, padding: Padding, dilation: Pair,
                       groups: int, relu: bool = False, keep_for_backward: bool = False) -> Array:
        """The grouped 2-D convolution of ``x`` with the filters ``w``, plus ``b`` when given.

        x: (N, C, H, W), w: (K, C/groups, KH, KW), b: (K,) -> y: (N, K, OH, OW)

        ``relu=True`` fuses max(y, 0) into the epilogue; ``keep_for_backward`` hints that
        conv2d_backward will follow on the same x (a backend may keep work for it).
        """

    @abstractmethod
    def conv2d_backward(self, dy: Array, x: Array, w: Array, stride: Pair, padding: Padding, dilation: Pair,
                        groups: int, need_input_grad: bool = True) -> tuple[Array | None, Array, Array]:
        """The gradients of conv2d_forward: ``(dx, dw, db)``, dx None unless ``need_input_grad``.

        dy: (N, K, OH, OW) -> dx: (N, C, H, W), dw: (K, C/groups, KH, KW), db: (K,)
        """

    @abstractmethod
    def conv2d_input_grad(self, dy: Array, w: Array, x_shape: Shape, stride: Pair, padding: Padding,
                          dilation: Pair, groups: int) -> Array:
        """conv2d_backward's input gradient alone (the transposed convolution's forward).

        dy: (N, K, OH, OW), w: (K, C/groups, KH, KW), x_shape: (N, C, H, W) -> dx: (N, C, H, W)

        H, W may exceed what the conv maps to OH, OW (a transposed conv's output_padding): the rows
        and columns no window reads get zero.
        """

    @abstractmethod
    def conv2d_weight_grad(self, dy: Array, x: Array, w_shape: Shape, stride: Pair, padding: Padding,
                           dilation: Pair, groups: int) -> tuple[Array, Array]:
        """conv2d_backward's ``(dw, db)`` alone, bit for bit, without the input gradient.

        dy: (N, K, OH, OW), x: (N, C, H, W), w_shape: (K, C/groups, KH, KW) -> dw: w_shape, db: (K,)

        OH, OW are the conv's output size for x (conv_output_hw).
        """

    @abstractmethod
    def conv2d_relu_maxpool2d_forward(self, x: Array, w: Array, b: Array | None, stride: Pair, padding: Padding,
                                      dilation: Pair, groups: int, kernel: Pair, pool_stride: Pair,
                                      pool_padding: Pair, ceil_mode: bool,
                                      keep_for_backward: bool = False) -> tuple[Array, ConvPoolState | None]:
        """``(y, saved)``: y = maxpool2d(relu(conv2d(x))), bit for bit what the three ops give.

        x: (N, C, H, W) -> y: (N, K, PH, PW)

        ``saved`` is backend-specific state for the backward (None unless ``keep_for_backward``),
        used up by one backward pass (ValueError on a second).
        ``base.composed_conv2d_relu_maxpool2d_forward`` runs the three ops; a backend may fuse them.
        """

    @abstractmethod
    def conv2d_relu_maxpool2d_backward(self, dy: Array, saved: ConvPoolState, x: Array, w: Array, stride: Pair,
                                       padding: Padding, dilation: Pair, groups: int, kernel: Pair,
                                       pool_stride: Pair, pool_padding: Pair,
                                       need_input_grad: bool = True) -> tuple[Array | None, Array, Array]:
        """``(dx, dw, db)`` of conv2d_relu_maxpool2d_forward, from its ``saved`` state.

        dy: (N, K, PH, PW) -> dx: (N, C, H, W), dw: (K, C/groups, KH, KW), db: (K,)

        The same gradients, bit for bit, as relu_backward on the pooled output, maxpool2d_backward
        and conv2d_backward.
        """

    # ------------------------------------------------------------------ pooling
    @abstractmethod
    def maxpool2d_forward(self, x: Array, kernel: Pair, stride: Pair, padding: Pair,
                          ceil_mode: bool) -> tuple[Array, Array]:
        """``(y, argmax)``: each window's maximum and where it is.

        x: (N, C, H, W) -> y: (N, C, OH, OW), argmax: int32 (N, C, OH, OW) index into the H*W plane
        """

    @abstractmethod
    def maxpool2d_backward(self, dy: Array, argmax: Array, x_shape: Shape, kernel: Pair, stride: Pair,
                           padding: Pair, relu_output: Array | None = None) -> Array:
        """Routes each window's gradient to its argmax.

        dy: (N, C, OH, OW) -> dx: (N, C, H, W)

        ``relu_output``: the pooled output y when the pooling's input was a ReLU's output: dy is
        masked by y > 0 first, bit for bit relu_backward(dy, y), so ReLU -> MaxPool2d's backward is one op.
        """

    @abstractmethod
    def adaptive_maxpool2d_forward(self, x: Array, out_hw: Pair) -> tuple[Array, Array]:
        """``(y, argmax)`` over PyTorch's adaptive windows, rows [floor(i*H/OH), ceil((i+1)*H/OH)).

        x: (N, C, H, W) -> y: (N, C, OH, OW), argmax: int32 (N, C, OH, OW) index into the H*W plane
        """

    @abstractmethod
    def adaptive_maxpool2d_backward(self, dy: Array, argmax: Array, x_shape: Shape) -> Array:
        """Routes each window's gradient to its argmax, summing over the (overlapping) windows in order.

        dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W)
        """

    @abstractmethod
    def maxunpool2d_forward(self, x: Array, indices: Array, out_hw: Pair) -> Array:
        """Zeros with each x placed at its index into the output's OH*OW plane; of a repeated index the
        last in input order wins; an index outside the plane is skipped.

        x: (N, C, H, W), indices: int64 (N, C, H, W) -> y: (N, C, OH, OW)
        """

    @abstractmethod
    def maxunpool2d_backward(self, dy: Array, indices: Array) -> Array:
        """The gather dx = dy[indices] in each plane (0 for an index outside it).

        dy: (N, C, OH, OW), indices: int64 (N, C, H, W) -> dx: (N, C, H, W)
        """

    @abstractmethod
    def avgpool2d_forward(self, x: Array, kernel: Pair, stride: Pair, padding: Pair, ceil_mode: bool,
                          count_include_pad: bool) -> Array:
        """Each window's mean.

        x: (N, C, H, W) -> y: (N, C, OH, OW)
        """

    @abstractmethod
    def avgpool2d_backward(self, dy: Array, x_shape: Shape, kernel: Pair, stride: Pair, padding: Pair,
                           ceil_mode: bool, count_include_pad: bool) -> Array:
        """The gradient of avgpool2d_forward.

        dy: (N, C, OH, OW) -> dx: (N, C, H, W)
        """

    @abstractmethod
    def lppool2d_forward(self, x: Array, norm_type: float, kernel: Pair, stride: Pair, ceil_mode: bool) -> Array:
        """Each window's L_p norm, p = ``norm_type``.

        x: (N, C, H, W) -> y: (N, C, OH, OW)

        norm_type > 0, or inf for the window max of |x| (as PyTorch).
        """

    @abstractmethod
    def lppool2d_backward(self, dy: Array, x: Array, y: Array, norm_type: float, kernel: Pair, stride: Pair,
                          ceil_mode: bool) -> Array:
        """The gradient of lppool2d_forward, from its input x and output y.

        dy: (N, C, OH, OW) -> dx: (N, C, H, W)

        Only zero-norm windows pass no gradient (NaN stays NaN); y is not read when norm_type is inf.
        """

    # ------------------------------------------------------------------ activations (elementwise, any shape)
    @abstractmethod
    def relu_forward(self, x: Array) -> Array:
        """x -> y = max(x, 0)"""

    @abstractmethod
    def relu_backward(self, dy: Array, y: Array) -> Array:
        """dy, y -> dx, from the saved output (so the forward may run in place)."""

    # leaky_relu, sigmoid and tanh (and any elementwise op without a special CPU path): elementwise.py

    @abstractmethod
    def dropout_forward(self, x: Array, p: float, seed: int) -> tuple[Array, Array]:
        """``(y, mask)``: x with a fraction p of its elements dropped.

        x -> y, mask: uint8, both x's shape

        The mask is a pure function of (seed, flat index), identical on every backend.
        """

    @abstractmethod
    def dropout_forward_stepped(self, x: Array, p: float, keys: Array, step: Array, slot: int) -> tuple[Array, Array]:
        """dropout_forward with the key (dropout_key of a seed) read from device memory (CUDA graphs).

        keys: uint32 (steps, slots), step: int64 (1,); x -> y, mask: uint8, both x's shape

        The key is keys[step[0], slot].
        """

    @abstractmethod
    def dropout_backward(self, dy: Array, mask: Array, p: float) -> Array:
        """dy, mask -> dx"""

    # ------------------------------------------------------------------ fully connected
    @abstractmethod
    def linear_forward(self, x: Array, w: Array, b: Array | None, relu: bool = False) -> Array:
        """y = x @ w.T + b (no bias term when b is None).

        x: (M, K), w: (N, K), b: (N,) -> y: (M, N)

        ``relu=True`` fuses max(y, 0) into the epilogue.
        """

    @abstractmethod
    def linear_backward(self, dy: Array, x: Array, w: Array, need_input_grad: bool = True,
                        relu_output: Array | None = None) -> tuple[Array | None, Array, Array]:
        """``(dx, dw, db)`` of linear_forward, dx None unless ``need_input_grad``.

        dy: (M, N) -> dx: (M, K) = dy @ w, dw: (N, K) = dy.T @ x, db: (N,) = dy summed over rows

        ``relu_output``: the forward's output when it ran with relu=True: dy is masked by y > 0
        first, bit for bit relu_backward(dy, y).
        """

    # ------------------------------------------------------------------ loss
    @abstractmethod
    def softmax_cross_entropy(self, logits: Array, labels: Array,
                              label_smoothing: float = 0.0) -> tuple[Array, Array]:
        """``(loss, dlogits)``: the mean softmax cross-entropy and its gradient.

        logits: (N, K), labels: int (N,) -> loss: 0-d array, dlogits: (N, K)

        loss is the mean over N of (1 - eps) * -log p[label] + eps * mean_k -log p[k], eps =
        label_smoothing in [0, 1] (PyTorch's unweighted definition); dlogits =
        (softmax - (1 - eps) * onehot - eps / K) / N; eps = 0 is exactly the plain (softmax - onehot) / N.
        N = 0 gives a NaN loss (the mean of nothing, as PyTorch's) and an empty dlogits.
        """

    @abstractmethod
    def softmax_cross_entropy_accumulate(self, logits: Array, labels: Array, total: Array,
                                         label_smoothing: float = 0.0) -> Array:
        """dlogits, bit for bit softmax_cross_entropy's, with the loss summed on the device.

        logits: (N, K), labels: int32 (N,), total: float64 (1,) -> dlogits: (N, K)

        ``total``, in place: += the N rows' losses, added in order in float64.
        """

    # ------------------------------------------------------------------ a training step's data and counter
    # on the device (CUDA graphs: nothing per step is an argument)
    @abstractmethod
    def gather_batch(self, images: Array, labels: Array, order: Array, offsets: Array | None, step: Array,
                     batch_stride: int, count: int, max_shift: int, background: Array) -> tuple[Array, Array]:
        """``(x, y)``: the step's batch, gathered (and shifted) from the whole data set.

        images: (N, C, H, W), labels, order: int32 (N,), offsets: int32 (N, 2), step: int64 (1,)
        -> x: (count, C, H, W), y: int32 (count,) its labels

        ``background``: a 0-d or (1,) array of the images' dtype. Row b is image
        order[step[0] * batch_stride + b], shifted by its offsets row (dy, dx) when max_shift > 0
        (x[b, c, h, w] = image[c, h + dy, w + dx], background outside).
        """

    @abstractmethod
    def step_advance(self, step: Array) -> None:
        """step: int64 (1,), in place += 1."""

    # ------------------------------------------------------------------ optimizer updates
    # in place on param and state
    @abstractmethod
    def sgd_update(self, param: Array, grad: Array, velocity: Array | None, lr: float, momentum: float,
                   weight_decay: float, nesterov: bool) -> None:
        """One SGD step on ``param`` (and its ``velocity``, when momentum keeps one), in place."""

    @abstractmethod
    def adam_update(self, param: Array, grad: Array, m: Array, v: Array, step: int, lr: float, beta1: float,
                    beta2: float, eps: float, weight_decay: float, decoupled: bool) -> None:
        """One Adam step on ``param`` and its moments ``m``, ``v``, in place."""

    @abstractmethod
    def sgd_update_many(self, params: Sequence[Array], grads: Sequence[Array], velocities: Sequence[Array] | None,
                        lr: float, momentum: float, weight_decay: float, nesterov: bool) -> None:
        """Equally long lists, bit for bit sgd_update on each (param, grad, velocity); a backend may
        update them all at once."""

    @abstractmethod
    def adam_update_many(self, params: Sequence[Array], grads: Sequence[Array], ms: Sequence[Array],
                         vs: Sequence[Array], step: int, lr: float, beta1: float, beta2: float, eps: float,
                         weight_decay: float, decoupled: bool) -> None:
        """Bit for bit adam_update on each (param, grad, m, v); a backend may update them all at once."""

    @abstractmethod
    def sgd_update_many_stepped(self, params: Sequence[Array], grads: Sequence[Array],
                                velocities: Sequence[Array] | None, hyper: Array, step: Array,
                                nesterov: bool) -> None:
        """Bit for bit sgd_update_many with lr, momentum, weight_decay from row step[0] of ``hyper``.

        hyper: (steps, 3) of the params' dtype, step: int64 (1,)
        """

    @abstractmethod
    def adam_update_many_stepped(self, params: Sequence[Array], grads: Sequence[Array], ms: Sequence[Array],
                                 vs: Sequence[Array], hyper: Array, step: Array, decoupled: bool) -> None:
        """Bit for bit adam_update_many with row step[0] of ``hyper``.

        hyper: (steps, 7) of lr, beta1, beta2, eps, weight_decay, lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t);
        step: int64 (1,)
        """

    # ------------------------------------------------------------------ per-row normalisation
    # LayerNorm, GroupNorm and InstanceNorm2d view their input as (rows, cols); the affine part is glue
    @abstractmethod
    def row_norm_forward(self, x: Array, eps: float) -> tuple[Array, Array, Array]:
        """``(y, mean, rstd)``: each row normalised by its own mean and biased variance.

        x: (rows, cols) -> y: (rows, cols), mean: (rows,), rstd: (rows,), all of x's dtype

        y = (x - mean) * rstd, rstd = 1 / sqrt(var + eps), var the mean of (x - mean)^2 (two passes).
        """

    @abstractmethod
    def row_norm_backward(self, dy: Array, x: Array, mean: Array, rstd: Array) -> Array:
        """dx of row_norm_forward, from its input and its saved per-row statistics.

        dy, x: (rows, cols), mean, rstd: (rows,) -> dx: (rows, cols)

        dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) per row, xhat = (x - mean) * rstd.
        """

    # ------------------------------------------------------------------ padding (F.pad, the *Pad2d layers)
    @abstractmethod
    def pad2d_forward(self, x: Array, pads: tuple[int, int, int, int], mode: str, value: float) -> Array:
        """The last two axes padded: ``pads`` = (left, right, top, bottom), F.pad's order.

        x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right)

        ``mode``: 'constant' (``value`` outside; a negative pad crops), 'reflect' (mirrored without
        repeating the edge, pads < the axis size), 'replicate' (the edge repeated) or 'circular'
        (wrapped around, pads <= the axis size); the non-constant modes take pads >= 0.
        """

    @abstractmethod
    def pad2d_backward(self, dy: Array, x_shape: Shape, pads: tuple[int, int, int, int], mode: str) -> Array:
        """dx of pad2d_forward: each input element's dy summed over the output positions that read it.

        dy: (N, C, OH, OW) -> dx: x_shape = (N, C, H, W)
        """


# the elementwise ops are declared by their rows in elementwise.py (one row: contract, reference, kernel)
declare_in_contract(Backend)


def contract_ops() -> tuple[str, ...]:
    """The contract's op names (Backend's abstract methods), in the order this file declares them."""
    # vars() keeps definition order, which __abstractmethods__ (a frozenset) does not
    return tuple(name for name in vars(Backend) if name in Backend.__abstractmethods__)


#: contract_ops() once, for readers that want a constant
OPS: tuple[str, ...] = contract_ops()


def missing_ops(backend_class: type) -> list[str]:
    """Names of contract ops that ``backend_class`` does not implement (left abstract, or absent)."""
    missing = []
    for name in OPS:
        method = getattr(backend_class, name, None)
        if not callable(method) or getattr(method, "__isabstractmethod__", False):
            missing.append(name)
    return missing


def _untyped(signature: inspect.Signature) -> inspect.Signature:
    # implementations need not repeat the contract's type hints: names, kinds, order and defaults must match
    return signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                         for p in signature.parameters.values()],
                             return_annotation=inspect.Signature.empty)


def signature_mismatches(backend_class: type) -> list[str]:
    """One line per contract op whose implementation on ``backend_class`` takes other parameters than
    the contract's (names, order, kinds or defaults), wherever in its classes the method is defined."""
    lines = []
    for name in OPS:
        method = getattr(backend_class, name, None)
        if not callable(method):
            continue  # missing_ops reports it
        want, got = (_untyped(inspect.signature(f)) for f in (getattr(Backend, name), method))
        if got != want:
            lines.append(f"{backend_class.__name__}.{name}{got} != contract {name}{want}")
    return lines
