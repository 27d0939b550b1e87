"""save/load: a model (and optionally its optimizer) as one ``.npz`` of plain arrays.

Two layers. ``write_checkpoint``/``read_checkpoint`` own the file format and turn every damaged or foreign
file into a ``CheckpointError`` that names the path and the reason; ``save``/``load`` only map a model and
its optimizer to and from named arrays.

Version 2 layout: a zip of ``.npy`` entries as ``np.savez`` writes it (``param/<name>``, ``buffer/<name>``,
``optim/<param name>/<state key>``) and ``meta``, a 0-d string array holding a JSON object with ``format``
(``"gpucnn-checkpoint"``), ``version`` (2), ``sha256``, ``model``, ``extra`` and, with an optimizer,
``optimizer``. ``sha256`` is the hex SHA-256 over every other entry in name order, each as one line of JSON
``[name, dtype.str, shape]`` and then its bytes in C order. Version 1 is the same without ``sha256``.

Files are read with ``allow_pickle=False``, so loading an untrusted file can never run code.
A save goes to a temporary file in the same directory, then replaces the target atomically (``files.py``).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from .files import CheckpointError, write_atomically
from .nn.module import Module, state_problems
from .optim import Optimizer

FORMAT = "gpucnn-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)

_META = "meta"
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
# what zipfile, its decompressors and numpy's .npy reader raise on damaged bytes (flipping a bit in each byte of
# a checkpoint, as tests/test_checkpoint_files.py does, meets most of them); OSError because bz2 and a seek to a
# corrupt offset report that way. A missing file fails earlier, in _check_signature, and stays FileNotFoundError.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error, zlib.error,
           lzma.LZMAError, NotImplementedError, RuntimeError, OSError)


# --- the file format ------------------------------------------------------------------------------------------


def write_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` as a version-2 checkpoint, atomically.

    ``meta`` gains ``format``, ``version`` and ``sha256``. The name ``meta`` is reserved, and object arrays are
    refused because reading them back would need pickle.
    """
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    if _META in arrays:
        raise ValueError(f"write_checkpoint: the array name {_META!r} is reserved for the metadata")
    objects = sorted(name for name, a in arrays.items() if a.dtype.hasobject)
    if objects:
        raise TypeError(f"write_checkpoint: object arrays need pickle and are not stored: {', '.join(objects)}")
    full = {**meta, "format": FORMAT, "version": VERSION, "sha256": _digest(arrays)}
    if Path(path).suffix == ".safetensors":
        from .safetensors_io import save_safetensors

        return save_safetensors(path, arrays, full)
    _write_atomically(Path(path), {**arrays, _META: np.array(json.dumps(full))})


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the meta of a checkpoint written by ``write_checkpoint`` (or a version-1 ``save``).

    Raises CheckpointError, naming ``path``, for a file that is truncated or corrupt, is not a gpucnn
    checkpoint, has a version this code cannot read or fails its checksum; a missing path raises
    FileNotFoundError.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from .safetensors_io import load_safetensors

        arrays, safetensors_meta = load_safetensors(path)
        arrays[_META] = np.array(json.dumps(safetensors_meta))  # then checked exactly as an .npz's meta
    else:
        _check_signature(path)
        arrays = _read_entries(path)
    if _META not in arrays:
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (it has no {_META!r} entry)")
    meta = _parse_meta(path, arrays.pop(_META))
    if meta["version"] >= 2:
        _check_digest(path, arrays, meta)
    return arrays, meta


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order: any change to one shows."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        # one JSON line per array keeps the stream unambiguous: JSON escapes newlines in names, and the dtype
        # and shape fix how many bytes follow
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\n")
        h.update(a.tobytes())
    return h.hexdigest()


def _write_atomically(path: Path, entries: dict[str, np.ndarray]) -> None:
    write_atomically(path, lambda f: np.savez(f, **entries))


def _check_signature(path: Path) -> None:
    """Sort out what np.load would misreport (a directory, an empty file, a bare .npy, text) before unzipping."""
    if path.is_dir():
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (it is a directory)")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return
    if _ZIP_MAGIC.startswith(head):  # cut off before the end of the zip signature
        size = "the file is empty" if not head else f"only {len(head)} bytes"
        raise CheckpointError(f"{path} is truncated or corrupt ({size})")
    what = "a single .npy array, not an .npz archive" if head.startswith(_NPY_MAGIC) else "not an .npz (zip) archive"
    raise CheckpointError(f"{path} is not a gpucnn checkpoint ({what})")


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the zip at ``path``; zipfile checks each entry's CRC-32 as its last byte is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return dict(_read_entry(path, archive, info) for info in archive.infolist())
    except CheckpointError:
        raise
    except zipfile.BadZipFile as exc:
        if str(exc).startswith("Bad CRC-32"):
            raise CheckpointError(f"{path} is corrupt: checksum mismatch ({exc})") from exc
        raise CheckpointError(f"{path} is truncated or corrupt (BadZipFile: {exc})") from exc
    except _DAMAGE as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def _read_entry(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, np.ndarray]:
    """One entry's name and array, its header checked before numpy reads the data."""
    # opened before the name is judged: opening compares the name in the zip directory with the entry's own,
    # so a damaged directory reads as corruption rather than as a foreign file
    with archive.open(info) as f:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path} is not a gpucnn checkpoint (entry {info.filename!r} is not an .npy array)")
        _check_header(path, info, f)
    with archive.open(info) as f:
        return info.filename[: -len(".npy")], npy_format.read_array(f, allow_pickle=False)


def _check_header(path: Path, info: zipfile.ZipInfo, f: IO[bytes]) -> None:
    """Refuse pickled objects by name, and a header that claims more data than the entry holds before numpy
    allocates it (a crafted shape could ask for terabytes). Headers of version 3 are left to numpy."""
    reader = _HEADER_READERS.get(npy_format.read_magic(f))
    if reader is None:
        return
    shape, _, dtype = reader(f)
    name = info.filename[: -len(".npy")]
    if dtype.hasobject:
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (entry {name!r} holds pickled Python objects, "
                              "which are never unpickled)")
    declared, held = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
    if declared != held:
        raise CheckpointError(f"{path} is truncated or corrupt (entry {name!r} says {declared} bytes of data "
                              f"but holds {held})")


def _parse_meta(path: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(raw.item()) if raw.dtype.kind == "U" and raw.ndim == 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (its {_META!r} entry is not a JSON object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gpucnn checkpoint (its meta says format {meta.get('format')!r})")
    version = meta.get("version")
    # type(...) is int: JSON true would pass as version 1
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has unsupported checkpoint version {version!r} (this gpucnn reads versions "
                              f"{READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]}; a newer gpucnn may have written it)")
    return meta


def _check_digest(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    stored = meta.get("sha256")
    if not isinstance(stored, str):
        raise CheckpointError(f"{path} is corrupt (a version-{meta['version']} checkpoint without its sha256 checksum)")
    if _digest(arrays) != stored:
        raise CheckpointError(f"{path} is corrupt: checksum mismatch (its arrays are not the ones that were saved)")


# --- models and optimizers <-> named arrays ----------------------------------------------------------------------


def _state_arrays(model: Module) -> dict[str, np.ndarray]:
    """The model's state_dict as host arrays, keyed ``param/<name>`` or ``buffer/<name>`` in the file."""
    params = model.parameter_keys()
    return {(f"param/{key}" if key in params else f"buffer/{key}"): model.backend.to_numpy(value)
            for key, value in model.state_dict().items()}


def save(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None,
         extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s state_dict (and ``optimizer``'s state) to ``path``.

    ``extra`` is JSON-serialisable metadata stored beside them (e.g. the epoch).
    """
    arrays = _state_arrays(model)
    meta: dict[str, Any] = {"model": type(model).__name__, "extra": extra or {}}
    if optimizer is not None:
        arrays.update(_optimizer_arrays(model, optimizer))
        meta["optimizer"] = {"class": type(optimizer).__name__, **optimizer.hyperparameters()}
    write_checkpoint(path, arrays, meta)


def _optimizer_arrays(model: Module, optimizer: Optimizer) -> dict[str, np.ndarray]:
    names = {id(p): name for name, p in model.named_parameters()}
    out: dict[str, np.ndarray] = {}
    for p in optimizer.params:
        if id(p) not in names:
            raise ValueError("save: the optimizer holds a parameter that is not in the model")
        out.update({f"optim/{names[id(p)]}/{key}": model.backend.to_numpy(v) for key, v in p.state.items()})
    return out


def load(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (on whatever backend it is now) and ``optimizer``.

    Returns the ``extra`` metadata given to ``save``. A damaged or foreign file, and missing, unexpected
    or mis-shaped arrays, raise a CheckpointError (a ValueError) that names every problem; nothing is
    changed in that case.
    """
    arrays, meta = read_checkpoint(path)
    state = {key.partition("/")[2]: value for key, value in arrays.items() if key.startswith(("param/", "buffer/"))}
    if meta["version"] == 1:
        state = _upgrade_version_1(model.state_dict(), state)
    problems = state_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"load: {path} does not fit {type(model).__name__}; " + "; ".join(problems))
    # check the optimizer part too before changing anything, so a bad file changes nothing
    optimizer_state = _optimizer_state(path, model, optimizer, arrays, meta) if optimizer is not None else {}
    model.load_state_dict(state)
    if optimizer is not None:
        backend = model.backend
        params = dict(model.named_parameters())
        for p in optimizer.params:
            p.state = {}
        for name, values in optimizer_state.items():
            params[name].state = {k: backend.asarray(v, dtype=params[name].dtype) for k, v in values.items()}
        optimizer.load_hyperparameters(meta["optimizer"])
    return meta.get("extra", {})


def _upgrade_version_1(own: dict[str, Any], state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Files from before autograd: BatchNorm had no ``num_batches_tracked`` (the model's is kept), and
    Conv1d weights were stored as (K, C/groups, 1, KL) (now PyTorch's (K, C/groups, KL))."""
    upgraded = dict(state)
    for key, value in own.items():
        if key not in upgraded and key.endswith("num_batches_tracked"):
            upgraded[key] = np.asarray(value.get() if hasattr(value, "get") else value)
        old = upgraded.get(key)
        if old is not None and old.ndim == 4 and len(value.shape) == 3 and old.shape[2] == 1 \
                and old.shape[:2] + old.shape[3:] == tuple(value.shape):
            upgraded[key] = old.reshape(value.shape)
    return upgraded


def _optimizer_state(path: str | os.PathLike, model: Module, optimizer: Optimizer, arrays: dict[str, np.ndarray],
                     meta: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """The file's optimizer state by parameter name, once the file is known to hold state for ``optimizer``."""
    info = meta.get("optimizer")
    if not isinstance(info, dict):
        raise CheckpointError(f"load: {path} holds no optimizer state")
    if info.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"load: {path} holds {info.get('class')} state, not {type(optimizer).__name__}")
    params = dict(model.named_parameters())
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            name, _, state_key = key[len("optim/"):].rpartition("/")
            if name not in params:
                raise CheckpointError(f"load: {path} holds optimizer state for unknown parameter {name!r}")
            state.setdefault(name, {})[state_key] = value
    return state
