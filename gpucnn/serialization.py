"""save/load: a model (and optionally its optimizer) as one ``.npz`` of plain arrays.

Files are read with ``allow_pickle=False``, so loading an untrusted file can never run code.
A save goes to a temporary file in the same directory, then replaces the target atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .nn.module import Module
from .optim import Optimizer

FORMAT = "gpucnn-checkpoint"
VERSION = 1


class _Slot:
    """One saved array of a model: a parameter's data or a buffer, read and replaced alike."""

    def __init__(self, owner: Any, attr: str) -> None:
        self.owner, self.attr = owner, attr

    def get(self) -> Any:
        return getattr(self.owner, self.attr)

    def set(self, value: Any) -> None:
        object.__setattr__(self.owner, self.attr, value)


def _slots(model: Module) -> dict[str, _Slot]:
    """Every array a checkpoint holds for ``model``, by its key in the file."""
    slots = {f"param/{name}": _Slot(p, "data") for name, p in model.named_parameters()}
    slots.update({f"buffer/{name}": _Slot(owner, attr) for name, owner, attr in model.named_buffers()})
    return slots


def save(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None,
         extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s parameters and buffers (and ``optimizer``'s state) to ``path``.

    ``extra`` is JSON-serialisable metadata stored beside them (e.g. the epoch).
    """
    path = Path(path)
    backend = model.backend
    out: dict[str, np.ndarray] = {key: backend.to_numpy(slot.get()) for key, slot in _slots(model).items()}
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": type(model).__name__,
                            "extra": extra or {}}
    if optimizer is not None:
        names = {id(p): name for name, p in model.named_parameters()}
        for p in optimizer.params:
            if id(p) not in names:
                raise ValueError("save: the optimizer holds a parameter that is not in the model")
            for key, value in p.state.items():
                out[f"optim/{names[id(p)]}/{key}"] = backend.to_numpy(value)
        meta["optimizer"] = {"class": type(optimizer).__name__, **optimizer.hyperparameters()}
    out["meta"] = np.array(json.dumps(meta))

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (on whatever backend it is now) and ``optimizer``.

    Returns the ``extra`` metadata given to ``save``. Missing, unexpected or mis-shaped arrays
    raise a ValueError that names every one of them; nothing is changed in that case.
    """
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"load: {path} is not a gpucnn checkpoint (no readable 'meta' entry)") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"load: {path} is not a gpucnn checkpoint (format {meta.get('format')!r})")

    slots = _slots(model)
    expected = {key: tuple(slot.get().shape) for key, slot in slots.items()}
    model_keys = {k: v for k, v in arrays.items() if not k.startswith("optim/")}
    missing = sorted(set(expected) - set(model_keys))
    unexpected = sorted(set(model_keys) - set(expected))
    misshaped = [f"{k} (file {arrays[k].shape}, model {expected[k]})" for k in sorted(expected)
                 if k in arrays and tuple(arrays[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if misshaped:
        problems.append("wrong shape: " + ", ".join(misshaped))
    if problems:
        raise ValueError(f"load: {path} does not fit {type(model).__name__}; " + "; ".join(problems))

    # check the optimizer part too before changing anything, so a bad file changes nothing
    params = dict(model.named_parameters())
    optimizer_state: dict[str, dict[str, np.ndarray]] = {}
    if optimizer is not None:
        info = meta.get("optimizer")
        if info is None:
            raise ValueError(f"load: {path} holds no optimizer state")
        if info["class"] != type(optimizer).__name__:
            raise ValueError(f"load: {path} holds {info['class']} state, not {type(optimizer).__name__}")
        for key, value in arrays.items():
            if key.startswith("optim/"):
                name, state_key = key[len("optim/"):].rsplit("/", 1)
                if name not in params:
                    raise ValueError(f"load: optimizer state for unknown parameter {name!r}")
                optimizer_state.setdefault(name, {})[state_key] = value

    backend = model.backend
    for key, slot in slots.items():
        slot.set(backend.asarray(arrays[key], dtype=slot.get().dtype))
    if optimizer is not None:
        for p in optimizer.params:
            p.state = {}
        for name, state in optimizer_state.items():
            params[name].state = {k: backend.asarray(v, dtype=params[name].data.dtype) for k, v in state.items()}
        optimizer.load_hyperparameters(info)
    return meta.get("extra", {})
