"""One run's directory: the single owner of its files' names and of the records in them.

```
results/NAME/runs/<run_id>/
  spec.json           the resolved RunSpec (written before training starts)
  metrics.csv         step, tokens, train_loss, val_loss, lr, wall_s (harness.train.metrics)
  result.json         written once, atomically, when the run ends (done | diverged | failed)
  result.failed.json  an earlier attempt's failure, set aside while the run trains again
  ckpt/step_*.pt      resumable checkpoints while the run is unfinished
  model.pt            a done run's final weights
  train.log           the run's log
  retry.json          a divergence retry: the run it retries (harness.execute.retry)
  downstream/         fine-tunes of the run (harness.finetune)
  .lock               held while a process trains the run (harness.execute.locks)
```

Every other module asks a `RunDir` for these paths and states ("is it finished?", "its newest
checkpoint"), so that each is answered once. It imports no settings, numpy or torch until a
spec is read, so the analysis (metrics.csv, spec.json) asks it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness import __version__
from harness.atomic import atomic_write_json
from harness.errors import InputError

if TYPE_CHECKING:  # the settings are read only where a spec is: the analysis reads file names
    from harness.grid import RunSpec

__all__ = ["FINISHED", "RunDir", "RunState", "read_json"]

RunState = Literal["done", "diverged", "failed", "started", "pending"]
FINISHED: tuple[RunState, ...] = ("done", "diverged")

# result.json's typed fields: read_result checks each (a record edited by hand fails one line).
_RESULT_NUMBERS = (
    "val_loss", "val_bpb", "train_loss", "peak_lr", "wall_s", "tokens_per_s", "epochs",
    "n_unique_tokens", "n_tokens", "steps", "peak_flops", "mfu", "mfu_total", "trained_tokens",
    "trained_flops", "world_size",
)  # fmt: skip
_RESULT_STRINGS = (
    "run_id", "reason", "error", "log", "device", "precision", "harness_version", "git_sha",
    "retried_as", "branched_from", "parallel",
)  # fmt: skip
# Neither the experiment's name nor the isoFLOP budget tag changes what a run computes.
_SPEC_TAGS = ("experiment", "flops_budget")
_CHECKPOINT = re.compile(r"step_(\d+)\.pt$")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises
    ------
    InputError
        The file is unreadable, not JSON, or not an object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class RunDir:
    """``results/NAME/runs/<run_id>``: its files, its records and its state."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- the files ---------------------------------------------------------------------------

    @property
    def experiment_root(self) -> Path:
        """``results/NAME``: where the experiment's cache, settings and runs.csv live."""
        return self.path.parent.parent

    def sibling(self, run_id: str) -> RunDir:
        """Another run of the same experiment (a WSD branch, a retry)."""
        return RunDir(self.path.parent / run_id)

    @property
    def spec_json(self) -> Path:
        return self.path / "spec.json"

    @property
    def result_json(self) -> Path:
        return self.path / "result.json"

    @property
    def failed_json(self) -> Path:
        return self.path / "result.failed.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tasks_csv(self) -> Path:
        """[eval]'s task scores at each task evaluation (`harness.train.task_eval`)."""
        return self.path / "tasks.csv"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def model_pt(self) -> Path:
        return self.path / "model.pt"

    @property
    def retry_json(self) -> Path:
        return self.path / "retry.json"

    @property
    def downstream_dir(self) -> Path:
        return self.path / "downstream"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "ckpt"

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:09d}.pt"

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest first."""
        if not self.ckpt_dir.is_dir():
            return []
        found = {p: _CHECKPOINT.search(p.name) for p in self.ckpt_dir.iterdir()}
        steps = {p: int(m.group(1)) for p, m in found.items() if m}
        return sorted(steps, key=steps.__getitem__, reverse=True)

    def newest_checkpoint_step(self) -> int | None:
        newest = self.checkpoints()
        return int(_CHECKPOINT.search(newest[0].name).group(1)) if newest else None  # type: ignore[union-attr]

    def remove_stale_temp_files(self) -> None:
        """Temp files of checkpoint writes that a killed process never renamed."""
        if self.ckpt_dir.is_dir():
            for tmp in self.ckpt_dir.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    # --- the records -------------------------------------------------------------------------

    def check_spec(self, spec: RunSpec) -> bool:
        """True when the directory holds this run's spec.json, False when it holds none.

        Raises
        ------
        InputError
            spec.json is unreadable or records different settings (a directory is never reused
            for another run: its checkpoints and results would be someone else's).
        """
        if not self.spec_json.exists():
            return False
        old, new = read_json(self.spec_json), spec.to_dict()

        def settings(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k not in _SPEC_TAGS}

        if settings(old) != settings(new):
            keys = set(old) | set(new)
            differ = sorted(k for k in keys if k not in _SPEC_TAGS and old.get(k) != new.get(k))
            raise InputError(
                f"{self.spec_json}: holds settings that differ from run {spec.run_id}'s "
                f"(in {', '.join(differ)}); move the directory away to rerun it"
            )
        return True

    def write_spec(self, spec: RunSpec) -> None:
        """Record the resolved spec; refuse a directory that holds a different run's spec."""
        if not self.check_spec(spec):
            atomic_write_json(self.spec_json, spec.to_dict())

    def read_spec(self) -> dict[str, Any]:
        """spec.json, checked by rebuilding the RunSpec from it (returned as plain data).

        Raises
        ------
        InputError
            Unreadable JSON, a missing key, or a setting of the wrong type or out of range.
        """
        path = self.spec_json
        data = read_json(path)
        expected = "expected a spec.json written by harness"
        kinds = {"run_id": str, "experiment": str, "n_tokens": int, "seed": int,
                 "model": dict, "data": dict, "train": dict}  # fmt: skip
        for key, kind in kinds.items():
            if key not in data:
                raise InputError(f"{path}: missing key '{key}'; {expected}")
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                name = {str: "a string", int: "an integer", dict: "an object"}[kind]
                raise InputError(f"{path}: {key} = {str(value)[:80]!r} is not {name}; {expected}")
        from harness.grid import spec_from_dict

        try:
            spec_from_dict(data)
        except InputError as e:
            raise InputError(f"{path}: {str(e).removeprefix('spec.json: ')}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(
                f"{path}: model = {str(data['model'])[:120]}: {e}; {expected}"
            ) from None
        return data

    def spec(self) -> RunSpec:
        """The RunSpec of spec.json (`read_spec` checks it)."""
        from harness.grid import spec_from_dict

        return spec_from_dict(self.read_spec())

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result_json, result)

    def read_result(self) -> dict[str, Any] | None:
        """result.json, checked field by field; None when the run has not ended.

        Raises
        ------
        InputError
            Unreadable JSON, a status other than done|diverged|failed, or a field of the wrong
            type.
        """
        path = self.result_json
        if not path.exists():
            return None
        result = read_json(path)
        status = result.get("status")
        if status not in ("done", "diverged", "failed"):
            raise InputError(f"{path}: status = {status!r}; accepted: done, diverged, failed")
        for key in _RESULT_NUMBERS:
            value = result.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                raise InputError(f"{path}: {key} = {value!r}; accepted: a number or null")
        for key in _RESULT_STRINGS:
            value = result.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{path}: {key} = {value!r}; accepted: a string")
        return result

    def finished(self) -> dict[str, Any] | None:
        """result.json of a finished run (done or diverged); None for any other, an unreadable
        record included (the run trains again)."""
        try:
            result = self.read_result()
        except InputError:
            return None
        return result if result is not None and result.get("status") in FINISHED else None

    def state(self) -> RunState:
        """done | diverged | failed (result.json says so), started (spec only), pending.

        Raises
        ------
        InputError
            result.json is unreadable.
        """
        result = self.read_result()
        if result is not None:
            return result["status"]  # type: ignore[no-any-return]
        return "started" if self.spec_json.exists() else "pending"

    def record_failure(self, error: str, log: str = "") -> dict[str, Any]:
        """Write a failed run's result.json (one line of error, the log to read); return it."""
        result = {
            "run_id": self.path.name,
            "status": "failed",
            "error": error,
            "log": log or str(self.log),
            "harness_version": __version__,
        }
        self.write_result(result)
        return result

    def set_aside_failure(self) -> None:
        """An earlier attempt's failed result.json, kept as result.failed.json while the run
        trains again (so the run reads as running or interrupted, not failed)."""
        if self.result_json.exists():
            os.replace(self.result_json, self.failed_json)

    # --- the log -----------------------------------------------------------------------------

    def open_log(self) -> logging.Handler:
        """Send this process's log records to train.log until `close_log`."""
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        return handler

    @staticmethod
    def close_log(handler: logging.Handler) -> None:
        logging.getLogger().removeHandler(handler)
        handler.close()
