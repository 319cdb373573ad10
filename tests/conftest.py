"""Shared fixtures. Tests run with one torch thread (see README and .ci/run)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any test module imports torch


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_disk("500k")``: a real tmpfs of that size mounted in tmp_path, for writes that
    fill a device. Needs root (CI runs as root and sets HARNESS_TMPFS=1, which makes a failed
    mount an error rather than a skip); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            why = f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}"
            if os.environ.get("HARNESS_TMPFS") == "1":
                pytest.fail(why)
            pytest.skip(why)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
