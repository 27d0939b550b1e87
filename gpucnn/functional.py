"""The functional API, ``import gpucnn.functional as F``: PyTorch's names, argument names and semantics.

Convolution, pooling and activations run as the backend's ops (our CUDA kernels on ``cuda`` and
``cuda-sim``); each function records one autograd Function. Inputs may be Tensors or backend arrays.

Each function lives beside its Function in ``gpucnn/functions/<op>.py``, with its argument checks
(and the Function's ONNX emitter); this module only lists them.
"""

from __future__ import annotations

from .core.shape_ops import cat as cat
from .functions import activations as _activations
from .functions import avgpool2d as _avgpool2d
from .functions import batchnorm as _batchnorm
from .functions import conv2d as _conv2d
from .functions import conv_transpose2d as _conv_transpose2d
from .functions import dropout as _dropout
from .functions import linear as _linear
from .functions import lppool2d as _lppool2d
from .functions import maxpool2d as _maxpool2d
from .functions import norm as _norm
from .functions import pad as _pad
from .functions import resample as _resample
from .functions import softmax_cross_entropy as _losses
from .functions.activations import *  # noqa: F403
from .functions.avgpool2d import *  # noqa: F403
from .functions.batchnorm import *  # noqa: F403
from .functions.checks import as_tensor  # noqa: F401 (not in __all__: gpucnn.distributed imports it from here)
from .functions.conv2d import *  # noqa: F403
from .functions.conv_transpose2d import *  # noqa: F403
from .functions.dropout import *  # noqa: F403
from .functions.linear import *  # noqa: F403
from .functions.lppool2d import *  # noqa: F403
from .functions.maxpool2d import *  # noqa: F403
from .functions.norm import *  # noqa: F403
from .functions.pad import *  # noqa: F403
from .functions.resample import *  # noqa: F403
from .functions.softmax_cross_entropy import *  # noqa: F403

# each function module's __all__ is its part: a new op's function is listed where it is written
__all__ = sorted(["cat", *_activations.__all__, *_avgpool2d.__all__, *_batchnorm.__all__, *_conv2d.__all__,
                  *_conv_transpose2d.__all__,
                  *_dropout.__all__, *_linear.__all__, *_lppool2d.__all__, *_maxpool2d.__all__, *_norm.__all__,
                  *_pad.__all__, *_resample.__all__, *_losses.__all__])
