"""The one exception type for bad input.

Every check on user input (TOML, overrides, CSV, run directories) raises `InputError` with a
single line naming the file, the field or column, the bad value and what is accepted. The CLI
prints it and exits 2; nothing else ever prints a traceback for bad input.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input. The message is one line, fit to print as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
