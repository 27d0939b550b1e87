"""Ready-made networks: LeNet-5 as it is trained today, and as LeCun et al. (1998) built it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .nn import (
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Subsampling2d,
    Tanh,
)

#: LeNet-5's C3 connection table (LeCun et al. 1998, Table I): rows are S2 maps 0-5, columns
#: C3 maps 0-15; 60 of the 96 possible connections.
LENET5_C3_TABLE = np.array([
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1],
    [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1],
    [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1],
    [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1],
], dtype=bool)


class LeNet5(Sequential):
    """Modern LeNet-5 for 28x28 inputs: ReLU and max pooling, 61,706 parameters.

    conv 1->6 5x5 pad 2, ReLU, maxpool 2 | conv 6->16 5x5, ReLU, maxpool 2 | 400-120-84-10.
    """

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(
            Conv2d(1, 6, 5, padding=2, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
            Conv2d(6, 16, 5, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
            Flatten(),
            Linear(400, 120, rng=rng, dtype=dtype), ReLU(),
            Linear(120, 84, rng=rng, dtype=dtype), ReLU(),
            Linear(84, num_classes, init="xavier", rng=rng, dtype=dtype),
        )


class LeNet5Classic(Sequential):
    """LeNet-5 as published: 32x32 input, C1 6@28x28, S2 trainable subsampling, C3 16@10x10 with
    the partial connection table, S4, C5 120, F6 84, 10 outputs; scaled tanh 1.7159*tanh(2x/3).

    The RBF output layer of the paper is replaced by a linear layer trained with softmax
    cross-entropy. Parameters: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164, out 850.
    """

    input_shape = (1, 32, 32)

    def __init__(self, num_classes: int = 10, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(
            Conv2d(1, 6, 5, init="lecun", rng=rng, dtype=dtype), Tanh.lecun(),                 # C1
            Subsampling2d(6, 2, dtype=dtype), Tanh.lecun(),                                     # S2
            Conv2d(6, 16, 5, connection=LENET5_C3_TABLE, init="lecun", rng=rng, dtype=dtype),  # C3
            Tanh.lecun(),
            Subsampling2d(16, 2, dtype=dtype), Tanh.lecun(),                                    # S4
            Conv2d(16, 120, 5, init="lecun", rng=rng, dtype=dtype), Tanh.lecun(),             # C5
            Flatten(),
            Linear(120, 84, init="lecun", rng=rng, dtype=dtype), Tanh.lecun(),                # F6
            Linear(84, num_classes, init="lecun", rng=rng, dtype=dtype),
        )


MODELS = {"lenet5": LeNet5, "lenet5-classic": LeNet5Classic}
