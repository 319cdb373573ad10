"""Atomic file writes: a temp file in the same directory, fsync, then rename.

A reader (or a crash) never sees a half-written file: it sees the old one or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.errors import InputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "file_mode",
]


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask.

    Read from /proc where Linux gives it (setting the umask to read it, the fallback, changes
    it for every thread of the process for an instant)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it onto ``path``.

    The file gets the mode the user's umask gives a new file (mkstemp's temp files are 0600:
    on a shared cluster filesystem colleagues could not read the results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
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


def check_writable(path: str | os.PathLike[str], *, folder: bool, what: str) -> None:
    """Refuse, before any work, a path the user named (--out, --out-dir, execution.results_dir)
    that cannot be written: a folder where a file goes or the reverse, a file among its parent
    folders, or a parent this process may not write in. Checks only; atomic_write stays a plain
    primitive whose OSErrors (a full disk, a lost NFS mount) are runtime failures, not input.

    Raises
    ------
    InputError
        One line naming ``what``, the path and what is accepted.
    """
    path = Path(path)
    accepted = "a folder" if folder else "a file path"
    if path.exists() and path.is_dir() != folder:
        raise InputError(
            f"{what} = {path}: is a {'file' if folder else 'folder'}; accepted: {accepted}"
        )
    # The folder the write happens in: the folder itself, or an existing file's own folder.
    parent = path if path.exists() and folder else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"{what} = {path}: {parent} is a file; accepted: {accepted} in a folder "
            "that exists or can be created"
        )
    if not os.access(parent, os.W_OK):
        raise InputError(
            f"{what} = {path}: {parent} is not writable; accepted: {accepted} in a writable folder"
        )
    # os.access trusts the mode bits: root may "write" /proc, a read-only mount looks writable.
    # Creating (and removing) a scratch folder there is what a run will do, so try it.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".harness-probe-", dir=parent))
    except OSError as exc:
        raise InputError(
            f"{what} = {path}: cannot create anything in {parent} ({exc.strerror}); accepted: "
            f"{accepted} in a writable folder"
        ) from None
