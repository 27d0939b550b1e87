"""Layers. Each holds its parameters and calls its backend's ops; none imports CuPy."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .basic import Dropout, Flatten, Linear
from .containers import Concat, Sequential
from .conv import Conv1d, Conv2d
from .loss import SoftmaxCrossEntropy, accuracy
from .module import Module, Parameter
from .norm import BatchNorm2d
from .pooling import AvgPool2d, GlobalAvgPool2d, LPPool2d, MaxPool2d, Subsampling2d

__all__ = [
    "AvgPool2d", "BatchNorm2d", "Concat", "Conv1d", "Conv2d", "Dropout", "Flatten", "GlobalAvgPool2d",
    "LPPool2d", "LeakyReLU", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential",
    "Sigmoid", "SoftmaxCrossEntropy", "Subsampling2d", "Tanh", "accuracy",
]
