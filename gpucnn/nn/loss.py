"""Softmax cross-entropy loss and accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_backend
from ..backends.base import FLOAT_DTYPES


class SoftmaxCrossEntropy:
    """Mean over the batch of -log softmax(logits)[label], computed stably (max-shifted).

    ``forward(logits, labels)`` returns the loss as a Python float; ``backward()`` returns
    d loss / d logits = (softmax - onehot) / N.
    """

    def __init__(self, backend: Any = None) -> None:
        self._backend_name = backend

    def __call__(self, logits: Any, labels: Any) -> float:
        return self.forward(logits, labels)

    def forward(self, logits: Any, labels: Any) -> float:
        backend = get_backend(self._backend_name) if self._backend_name else _backend_for(logits)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ValueError(f"SoftmaxCrossEntropy: expected logits of shape (N, K) with N > 0, "
                             f"got {tuple(logits.shape)}")
        if logits.dtype not in FLOAT_DTYPES:
            raise TypeError(f"SoftmaxCrossEntropy: expected float32 or float64 logits, got {logits.dtype}")
        labels_host = np.asarray(backend.to_numpy(labels))
        if labels_host.shape != (logits.shape[0],) or labels_host.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxCrossEntropy: expected integer labels of shape ({logits.shape[0]},), "
                             f"got {labels_host.dtype} {labels_host.shape}")
        if labels_host.size and (labels_host.min() < 0 or labels_host.max() >= logits.shape[1]):
            raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {logits.shape[1]}), got "
                             f"values from {labels_host.min()} to {labels_host.max()}")
        loss, self._grad = backend.softmax_cross_entropy(logits, backend.asarray(labels_host, dtype=np.int32))
        return float(backend.to_numpy(loss))

    def backward(self) -> Any:
        return self._grad


def _backend_for(array: Any) -> Any:
    from ..backend import backend_of, current_backend_name

    owner = backend_of(array)
    # host arrays belong to the current backend when it computes on the host (numpy or cuda-sim)
    current = current_backend_name()
    if owner == "numpy" and current != "cuda":
        return get_backend(current)
    return get_backend(owner)


def accuracy(logits: Any, labels: Any) -> float:
    """Fraction of rows whose largest logit is the label."""
    from ..backend import backend_of

    logits_host, labels_host = (get_backend(backend_of(a)).to_numpy(a) for a in (logits, labels))
    return float((logits_host.argmax(axis=1) == labels_host).mean())
