"""Ready-made networks: LeNet-5 as it is trained today and as LeCun et al. (1998) built it, and a
small ResNet of basic blocks for 28x28 / 32x32 inputs (He et al. 2016, the CIFAR variant)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F
from .nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    Module,
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
    He-normal weights and zero biases (Glorot for the output layer): the initialisation its MNIST
    recipe was tuned with (99.24%), not the library default.
    """

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(
            Conv2d(1, 6, 5, padding=2, init="kaiming", rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
            Conv2d(6, 16, 5, init="kaiming", rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),
            Flatten(),
            Linear(400, 120, init="kaiming", rng=rng, dtype=dtype), ReLU(),
            Linear(120, 84, init="kaiming", rng=rng, dtype=dtype), ReLU(),
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


class BasicBlock(Module):
    """Two 3x3 convolutions with BatchNorm and a residual add:
    relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is a strided 1x1 conv with
    BatchNorm where the shape changes, else the identity. x: (N, C, H, W) -> (N, planes, H/s, W/s)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride, 1, bias=False, rng=rng, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, rng=rng, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        self.shortcut = Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = Sequential(Conv2d(in_planes, planes, 1, stride, bias=False, rng=rng, dtype=dtype),
                                       BatchNorm2d(planes, dtype=dtype))

    def forward(self, x: Any) -> Any:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Module):
    """ResNet-(6n+2) for small images: a 3x3 stem, three stages of n basic blocks at ``width``,
    2*width and 4*width channels (the last two starting at stride 2), global average pooling and a
    linear classifier. ``depth=20, width=16`` is He et al.'s ResNet-20 (0.27 M parameters); ``depth=8``
    is a quick one. PyTorch's names: ``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
        blocks = (depth - 2) // 6
        self.conv1 = Conv2d(in_channels, width, 3, 1, 1, bias=False, rng=rng, dtype=dtype)
        self.bn1 = BatchNorm2d(width, dtype=dtype)
        planes = width
        for stage, (channels, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), start=1):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(planes, channels, stride if i == 0 else 1, rng, dtype))
                planes = channels
            setattr(self, f"layer{stage}", Sequential(*layers))
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc = Linear(planes, num_classes, rng=rng, dtype=dtype)

    # x: (N, C, H, W) -> logits: (N, num_classes)
    def forward(self, x: Any) -> Any:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.avgpool(out).flatten(1))


MODELS = {"lenet5": LeNet5, "lenet5-classic": LeNet5Classic}
