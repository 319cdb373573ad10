"""Checkpoints: atomic files in the run directory, and the state assembled from components.

A checkpoint is the union of the state_dicts of the run's stateful components (the model and
optimizer, the RNGs, the loop's progress; `harness.train.run.Run.components`), one list, so a
new piece of state is one component's pair of methods (torchtitan's Stateful checkpointing).
The keys are flat, as they were before the components, so older checkpoints load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.atomic import atomic_write
from harness.errors import no_space
from harness.rundir import RunDir

__all__ = [
    "Checkpointing",
    "DiskFullError",
    "RngState",
    "Stateful",
    "gather",
    "load_latest_checkpoint",
    "restore",
    "save_checkpoint",
    "torch_save_atomic",
]

log = logging.getLogger("harness.train")


class Stateful(Protocol):
    """A part of the run that a checkpoint keeps (torch.distributed.checkpoint's protocol)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def gather(components: Sequence[Stateful]) -> dict[str, Any]:
    """The checkpoint: every component's state_dict, in order (each a collective under FSDP or
    a sum over ranks: every rank calls this, in the same order)."""
    state: dict[str, Any] = {}
    for c in components:
        state.update(c.state_dict())
    return state


def restore(components: Sequence[Stateful], state: dict[str, Any]) -> None:
    """A checkpoint back into every component."""
    for c in components:
        c.load_state_dict(state)


@dataclass(frozen=True)
class RngState:
    """torch's global RNGs (the CPU's, and the device's on a GPU): the masked LM's masks and
    any dropout draw from them, so a resumed run draws what the uninterrupted one would."""

    device: torch.device

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if cuda else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])


@dataclass(frozen=True)
class Checkpointing:
    """When to save a resumable checkpoint: every ``every_steps`` updates, every ``every_s``
    seconds of wall time (checked at step boundaries), and when the process is told to stop;
    never after the last step (the run finishes instead). 0 turns a cadence off."""

    every_steps: int
    every_s: float
    keep: int
    total_steps: int

    def due(self, step: int, t_last: float, stop_now: bool) -> bool:
        # The clock is read only when the step count does not already say so: the reads are
        # part of the behaviour (test_checkpoint_cadence_by_wall_time's fake clock counts them).
        return step < self.total_steps and bool(
            (self.every_steps and step % self.every_steps == 0)
            or (self.every_s and time.perf_counter() - t_last >= self.every_s)
            or stop_now
        )


class DiskFullError(OSError):
    """No space left on the device while writing a run's files; the run fails, nothing is torn."""


class _KeptWriteError:
    """A file whose first write error is kept. torch.save swallows an OSError that write()
    raises and fails later with "[enforce fail at inline_container.cc] unexpected pos", which
    says nothing of a full disk (found with a 2 MB tmpfs)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._f.write(data))
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def torch_save_atomic(obj: Any, path: Path, what: str) -> Path:
    """torch.save ``obj`` to ``path`` atomically (`atomic_write`).

    Raises
    ------
    DiskFullError
        The device is full: one line naming ``what`` and the file; the temp file is removed,
        so the previous file at ``path`` is intact.
    """

    def write(f: Any) -> None:
        kept = _KeptWriteError(f)
        try:
            torch.save(obj, kept)
        except RuntimeError:
            if kept.error is not None:
                raise kept.error from None
            raise

    try:
        return atomic_write(path, write)
    except OSError as e:
        if no_space(e):
            raise DiskFullError(
                e.errno,
                f"no space left on device while writing {what} {path} (any earlier one is "
                "intact; free space and run again to resume)",
            ) from e
        raise


def save_checkpoint(run: RunDir, state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically, then drop all but the newest ``keep``.

    Raises
    ------
    DiskFullError
        The device is full; the partial temp file is removed and older checkpoints are intact.
    """
    path = torch_save_atomic(state, run.checkpoint_path(state["step"]), "checkpoint")
    for old in run.checkpoints()[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run: RunDir, skipped: list[str] | None = None) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a corrupt one is logged and skipped, never used, and
    named in ``skipped`` ("step_....pt: why"), which result.json and `harness run` show."""
    for path in run.checkpoints():
        try:
            # weights_only: a checkpoint holds tensors, numbers, strings and containers of
            # them only, and torch's restricted unpickler refuses anything else, so a tampered
            # file on a shared file system is skipped instead of running its code.
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a harness checkpoint")
            return state
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped the same way
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            if skipped is not None:
                skipped.append(f"{path.name}: {str(e).splitlines()[0][:200] if str(e) else e!r}")
    return None
