"""Loss modules (PyTorch's names) and accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..core.tensor import Tensor
from .module import Module

#: the layers this module adds to gpucnn.nn (and to gpucnn)
__all__ = ["CrossEntropyLoss", "MSELoss", "NLLLoss", "SoftmaxCrossEntropy", "accuracy"]


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C) against class indices (N,); returns a 0-d Tensor."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.weight, self.ignore_index = weight, ignore_index
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, input: Any, target: Any) -> Tensor:
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


#: the name earlier gpucnn versions used
SoftmaxCrossEntropy = CrossEntropyLoss


class NLLLoss(Module):
    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction

    def forward(self, input: Any, target: Any) -> Tensor:
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Any, target: Any) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


def accuracy(logits: Any, labels: Any) -> float:
    """Fraction of rows whose largest logit is the label."""
    from ..backends.registry import backend_of, get_backend

    def host(a: Any) -> np.ndarray:
        return a.numpy() if isinstance(a, Tensor) else get_backend(backend_of(a)).to_numpy(a)

    return float((host(logits).argmax(axis=1) == host(labels)).mean())
