"""The one exception type for bad input.

Every check on user input (TOML, overrides, CSV, run directories) raises `InputError` with a
single line naming the file, the field or column, the bad value and what is accepted. The CLI
prints it and exits 2; nothing else ever prints a traceback for bad input.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

__all__ = ["NO_SPACE", "InputError", "naming", "no_space"]

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""The errnos of a full device or an exhausted quota."""


class InputError(ValueError):
    """Bad user input. The message is one line, fit to print as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@contextlib.contextmanager
def naming(source: str) -> Iterator[None]:
    """Prefix an InputError's line with the file it comes from (an experiment's TOML)."""
    try:
        yield
    except InputError as e:
        raise InputError(f"{source}: {e}") from None


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space (`NO_SPACE`): the CLI ends such a
    command in one line with exit 2, as it does bad input, since nothing is torn (every file is
    written atomically) and the same command resumes once there is room."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE
