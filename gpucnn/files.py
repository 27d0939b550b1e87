"""The file layer under both checkpoint formats (``.npz`` in serialization, ``.safetensors`` in safetensors_io).

``write_atomically`` writes beside the target and renames over it, so a reader (or a run resumed after a crash)
only ever sees the old file or the new one. The final file gets the mode a plain ``open()`` would give it:
0666 less the umask for a new file, the old file's mode for a replaced one. A writer killed half-way leaves its
temporary behind; the next successful write of the same path removes it (only temporaries of that path, and
only those no live writer holds).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

try:  # POSIX: a writer holds a lock on its temporary, so a cleaner can tell a dead writer's from a live one's
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class CheckpointError(ValueError):
    """A file that is no readable gpucnn checkpoint, or one that does not fit the model; the message names the path.

    A ValueError, so code that caught the errors of earlier versions still catches it.
    """


def _temporary_name(target: str) -> str:
    return f".{target}.{secrets.token_hex(4)}.tmp"


def _temporary_pattern(target: str) -> re.Pattern[str]:
    # 8 characters of [a-z0-9_]: our own hex names and tempfile.mkstemp's, which earlier versions used
    return re.compile(rf"\.{re.escape(target)}\.[a-z0-9_]{{8}}\.tmp")


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """``write`` into a temporary file beside ``path``, fsync, then rename over it: readers never see half a file.

    On any error (a full disk included) the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 lets the kernel apply the umask, as open() would (mkstemp's 0600 would survive the rename)
    while True:
        tmp = path.parent / _temporary_name(path.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            if fcntl is not None:
                # a cleaner landing between the open and this lock would need another process saving this very
                # path in that microsecond: the one window left, and it costs that writer an error, not a file
                fcntl.flock(fd, fcntl.LOCK_EX)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if path.exists():  # open() on an existing file keeps its mode
                os.chmod(f.fileno(), stat.S_IMODE(path.stat().st_mode))
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # while still locked: no cleaner can take the finished file for a dead one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    remove_stale_temporaries(path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that writers of ``path`` killed half-way left beside it; return what was removed.

    A temporary whose lock can be taken has no live writer. Without ``fcntl`` (Windows) only those older than an
    hour are taken for dead.
    """
    path = Path(path)
    pattern = _temporary_pattern(path.name)
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if fcntl is None:
                if time.time() - candidate.stat().st_mtime < 3600:
                    continue
                candidate.unlink()
            else:
                with open(candidate, "rb") as f:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live writer
                    candidate.unlink()
            removed.append(candidate)
        except FileNotFoundError:
            continue  # its writer finished (renamed it) or another cleaner was first
    return removed
