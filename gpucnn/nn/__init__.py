"""Layers, PyTorch-style: each holds its parameters and writes only ``forward``; none imports CuPy."""

from ..core.tensor import Parameter
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .basic import Dropout, Flatten, Identity, Linear
from .containers import Concat, ModuleList, Sequential
from .conv import Conv1d, Conv2d
from .loss import CrossEntropyLoss, MSELoss, NLLLoss, SoftmaxCrossEntropy, accuracy
from .module import Module
from .norm import BatchNorm1d, BatchNorm2d, SyncBatchNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, LPPool2d, MaxPool2d, Subsampling2d

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Concat", "Conv1d", "Conv2d",
    "CrossEntropyLoss", "Dropout", "Flatten", "GlobalAvgPool2d", "Identity", "LPPool2d", "LeakyReLU", "Linear",
    "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleList", "NLLLoss", "Parameter", "ReLU", "Sequential",
    "Sigmoid", "Softmax", "SoftmaxCrossEntropy", "Subsampling2d", "SyncBatchNorm", "Tanh", "accuracy",
]
