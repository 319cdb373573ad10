"""metrics.csv: a row per log interval (the training loss's mean over it), with the held-out
loss where the interval ends in an evaluation, and with [eval]'s task scores (columns
TASK/METRIC after the fixed ones) where it ends in a task evaluation. Appended as the run
trains; cut back to the checkpoint's step when a run resumes, so that no row is written
twice."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write

__all__ = ["METRICS_COLUMNS", "append_metrics", "truncate_metrics"]

METRICS_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "wall_s"]


def truncate_metrics(path: Path, last_step: int, dest: Path | None = None) -> None:
    """Keep the rows up to ``last_step`` (a resumed run rewrites what came after its checkpoint);
    written to ``dest`` instead where given (a WSD branch inherits its trunk's rows)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        # A process killed mid-append leaves a torn last line: keep only whole rows.
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or METRICS_COLUMNS)
        rows = [
            r
            for r in reader
            if None not in r.values() and r["step"].isdigit() and int(r["step"]) <= last_step
        ]
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    atomic_write(dest or path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def append_metrics(
    path: Path, row: dict[str, Any], columns: Sequence[str] = METRICS_COLUMNS
) -> None:
    """One row, floats exactly (repr round-trips), None as an empty cell."""
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(",".join(columns) + "\n")
        f.write(
            ",".join(
                ""
                if row.get(c) is None
                else repr(row[c])
                if isinstance(row[c], float)
                else str(row[c])
                for c in columns
            )
            + "\n"
        )
