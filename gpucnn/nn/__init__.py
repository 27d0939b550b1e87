"""Layers, PyTorch-style: each holds its parameters and writes only ``forward``; none imports CuPy.

Each module's ``__all__`` lists its layers, so a new layer is listed where it is written.
"""

from ..core.tensor import Parameter as Parameter
from . import activation as _activation
from . import basic as _basic
from . import containers as _containers
from . import conv as _conv
from . import loss as _loss
from . import norm as _norm
from . import padding as _padding
from . import pooling as _pooling
from . import resample as _resample
from .activation import *  # noqa: F403
from .basic import *  # noqa: F403
from .containers import *  # noqa: F403
from .conv import *  # noqa: F403
from .loss import *  # noqa: F403
from .module import Module as Module
from .norm import *  # noqa: F403
from .padding import *  # noqa: F403
from .pooling import *  # noqa: F403
from .resample import *  # noqa: F403

__all__ = sorted(["Module", "Parameter", *_activation.__all__, *_basic.__all__, *_containers.__all__, *_conv.__all__,
                  *_loss.__all__, *_norm.__all__, *_padding.__all__,
                  *_pooling.__all__, *_resample.__all__])
