"""Atomic file writes: a temp file in the same directory, fsync, then rename.

A reader (or a crash) never sees a half-written file: it sees the old one or the new one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.errors import InputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; accepted: a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a path the user gave (--out, results_dir): one line, not a traceback
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is not bad input
            raise
        why = "a part of its folder path is a file" if isinstance(
            e, FileExistsError | NotADirectoryError) else e.strerror
        raise InputError(f"{path}: cannot write here: {why}; accepted: a file path in a folder "
                         "that exists or can be created") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """JSON with sorted keys and a trailing newline, so equal objects give equal bytes."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
