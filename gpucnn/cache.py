"""gpucnn's per-user cache folder: ``$XDG_CACHE_HOME/gpucnn``, or ``~/.cache/gpucnn`` without it.

Its users keep their own subfolders: MNIST downloads in ``mnist/`` (``gpucnn.datasets``), cuda-sim's
compiled kernels in ``sim/`` (``gpucnn/backends/sim/device.py``, unless ``$GPUCNN_SIM_CACHE`` moves them).
A module of its own, with no gpucnn imports, so that a backend can find the folder without importing
the data loaders.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """gpucnn's per-user cache folder (read from the environment at each call, so a changed
    ``XDG_CACHE_HOME`` is seen at once)."""
    # an empty XDG_CACHE_HOME counts as unset, as the XDG base directory spec says
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpucnn"
