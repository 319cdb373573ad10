"""The one exception type for bad input.

Every check on user input (TOML, overrides, CSV, run directories) raises `InputError` with a
single line naming the file, the field or column, the bad value and what is accepted. The CLI
prints it and exits 2; nothing else ever prints a traceback for bad input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["InputError", "naming"]


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
