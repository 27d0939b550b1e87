"""Checkpoints as ``.safetensors`` files (the optional ``safetensors`` package: ``pip install 'gpucnn[safetensors]'``).

The arrays are the file's tensors under their own names; ``meta`` is one JSON object stored as the
metadata entry ``gpucnn`` (safetensors metadata holds only strings). ``gpucnn.save``/``gpucnn.load``
use this format for a path ending in ``.safetensors``, with the same ``sha256`` in the meta as in the
``.npz`` format: safetensors itself checks the header, not the data bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .files import CheckpointError, write_atomically

__all__ = ["load_safetensors", "save_safetensors"]

META_KEY = "gpucnn"


def _require() -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as error:
        raise ImportError("gpucnn's .safetensors checkpoints need the optional package 'safetensors': "
                          "pip install 'gpucnn[safetensors]'") from error
    return safetensors


def save_safetensors(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically (a temporary file beside it,
    fsync, then a rename over it: readers never see half a file)."""
    safetensors = _require()
    path = Path(path)
    tensors = {name: np.asarray(a, order="C") for name, a in arrays.items()}
    try:
        data = safetensors.numpy.save(tensors, metadata={META_KEY: json.dumps(meta)})
    except (ValueError, TypeError, KeyError) as error:  # a dtype safetensors has no code for (strings, objects)
        kinds = sorted({f"{name}: {a.dtype}" for name, a in tensors.items() if a.dtype.kind not in "biuf"})
        raise TypeError(f"save_safetensors: cannot store {', '.join(kinds) or 'these arrays'} in {path} "
                        f"({error})") from error
    write_atomically(path, lambda f: f.write(data))


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the meta written by ``save_safetensors``. A damaged file, or a safetensors file that
    gpucnn did not write (no ``gpucnn`` metadata), raises CheckpointError naming ``path``; a missing path
    raises FileNotFoundError."""
    safetensors = _require()
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (it is a directory)")
    data = path.read_bytes()  # FileNotFoundError stays itself, as for .npz checkpoints
    if len(data) < 8:
        raise CheckpointError(f"{path} is truncated or corrupt (only {len(data)} bytes)")
    try:
        arrays = safetensors.numpy.load(data)
        # the header safetensors has just validated: 8 bytes of length, then JSON (metadata included)
        metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except (safetensors.SafetensorError, ValueError, TypeError, OSError, OverflowError, MemoryError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt, or not a safetensors file "
                              f"({type(error).__name__}: {error})") from error
    raw = metadata.get(META_KEY)
    if raw is None:
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (a safetensors file without {META_KEY!r} "
                              f"metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (its {META_KEY!r} metadata is not a JSON object)")
    return arrays, meta
