"""Progress bars: tqdm when it is installed (the ``examples`` extra), a one-line stand-in otherwise."""

from __future__ import annotations

import sys
from typing import Any


class _TextBar:
    """A minimal stand-in for tqdm when it is not installed: one line, rewritten in place."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""

    def update(self, n: int = 1) -> None:
        self.n += n
        if sys.stderr.isatty():
            print(f"\r{self.desc} {self.n}/{self.total} {self.postfix}", end="", file=sys.stderr)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if sys.stderr.isatty():
            print(file=sys.stderr)


def progress_bar(total: int | None, desc: str, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar (``options`` go to tqdm, e.g. unit="B"), the plain stand-in without tqdm, or
    None when not ``enabled``."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total, desc)
    # disable=None: no bar when stderr is not a terminal, so logs (CI, nohup) stay readable
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None, **options)
