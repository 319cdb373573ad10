"""How far a run, and a grid, has come: read from each run's metrics.csv, for `harness run`'s
bars and `harness status`.

A run's rows (`harness.train`, one per log interval) hold ``step``, ``tokens``, ``train_loss``,
``val_loss`` (on evaluation rows only) and ``wall_s``, the run's training wall time so far
(carried over a resume, so a restart's gap is not in it). A run's ETA is its remaining steps
times its recent seconds per step (`RECENT_INTERVALS` log intervals; their wall_s includes the
evaluations in them, which the rest of the run has too). Only the run directory is read, so a
run training in a SLURM job on a shared file system reads the same as one training here.

Nothing here imports torch: `harness status` stays quick on a login node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from harness.rundir import RunDir
from harness.units import fmt_duration, fmt_si_unit

__all__ = [
    "RECENT_INTERVALS",
    "RunProgress",
    "eta_s",
    "grid_eta_s",
    "grid_line",
    "read_progress",
    "run_line",
]

RECENT_INTERVALS = 5
"""Log intervals (metrics.csv rows) the recent seconds per step are measured over."""


@dataclass(frozen=True)
class RunProgress:
    """A run's newest metrics.csv row, and its recent pace."""

    step: int
    tokens: int
    train_loss: float | None
    val_loss: float | None
    """The newest evaluation's loss (None before the first, or not in the rows read)."""
    wall_s: float
    s_per_step: float | None
    """Seconds per step over the last `RECENT_INTERVALS` intervals (None: too few rows)."""
    mtime: float
    """When metrics.csv was last written (unix time)."""


def _float(x: str) -> float | None:
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_progress(run_dir: Path, *, tail_bytes: int | None = None) -> RunProgress | None:
    """The progress metrics.csv records in ``run_dir``, or None without a whole row.

    ``tail_bytes`` reads only the file's end (a bar refreshed every second; the newest
    validation loss may then be older than the rows read and shows as None). A torn last line
    (a process killed mid-append) is skipped.
    """
    path = RunDir(Path(run_dir)).metrics_csv
    try:
        with path.open("rb") as f:
            header = f.readline().decode(errors="replace").strip().split(",")
            size = os.fstat(f.fileno()).st_size
            if tail_bytes is not None and size - f.tell() > tail_bytes:
                f.seek(size - tail_bytes)
                f.readline()  # a partial line
            text = f.read().decode(errors="replace")
            mtime = os.fstat(f.fileno()).st_mtime
    except OSError:
        return None
    cols = {c: i for i, c in enumerate(header)}
    if not {"step", "tokens", "train_loss", "wall_s"} <= cols.keys():
        return None
    rows: list[list[str]] = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if len(fields) == len(header) and fields[cols["step"]].isdigit():
            rows.append(fields)
    if not rows:
        return None
    steps = [int(r[cols["step"]]) for r in rows]
    walls = [_float(r[cols["wall_s"]]) for r in rows]
    last = rows[-1]
    # Pace over the last intervals: (wall_s now - wall_s K rows back) / (steps between).
    s_per_step = None
    k = min(RECENT_INTERVALS, len(rows) - 1)
    w1, w0 = walls[-1], walls[-1 - k] if k else None
    if k and w1 is not None and w0 is not None and steps[-1] > steps[-1 - k]:
        s_per_step = (w1 - w0) / (steps[-1] - steps[-1 - k])
    val_loss = None
    if "val_loss" in cols:
        val_loss = next(
            (v for r in reversed(rows) if (v := _float(r[cols["val_loss"]] or "x")) is not None),
            None,
        )
    return RunProgress(
        step=steps[-1],
        tokens=int(_float(last[cols["tokens"]]) or 0),
        train_loss=_float(last[cols["train_loss"]]),
        val_loss=val_loss,
        wall_s=w1 or 0.0,
        s_per_step=s_per_step,
        mtime=mtime,
    )


def eta_s(step: int, n_steps: int, s_per_step: float | None) -> float | None:
    """Seconds left: the remaining steps at ``s_per_step`` (None when the pace is unknown)."""
    if s_per_step is None or s_per_step < 0:
        return None
    return max(0, n_steps - step) * s_per_step


def grid_eta_s(
    done_flops: float, done_at_start: float, total_flops: float, elapsed_s: float
) -> float | None:
    """Seconds left for a grid at the FLOPs rate of this invocation.

    The rate counts only what trained since the start (``done_flops - done_at_start``):
    runs found done, and the steps resumed runs had behind them, took no time here. FLOPs,
    not runs, measure the work, because a grid's runs differ in size by orders of magnitude
    (the largest run of a ladder costs more than all the others); runs per second would make
    the ETA wrong by that factor. None before anything trained.
    """
    trained = done_flops - done_at_start
    if trained <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, total_flops - done_flops) * elapsed_s / trained


def grid_line(
    runs_done: int,
    runs_total: int,
    flops_done: float,
    flops_total: float,
    eta: float | None,
    *,
    failed: int = 0,
) -> str:
    """'3/12 runs, 1.20 PFLOP/3.40 PFLOP, ETA 5m10s' (the grid's bar and status's footer)."""
    fails = f" ({failed} failed)" if failed else ""
    return (
        f"{runs_done}/{runs_total} runs{fails}, "
        f"{fmt_si_unit(flops_done, 'FLOP')}/{fmt_si_unit(flops_total, 'FLOP')}, "
        f"ETA {fmt_duration(eta)}"
    )


def run_line(run_id: str, progress: RunProgress | None, n_steps: int) -> str:
    """'run 5aed7c994460 step 620/1024, loss 2.431, ETA 5s' (a worker's line)."""
    if progress is None:
        return f"run {run_id} step 0/{n_steps}, starting"
    loss = "" if progress.train_loss is None else f", loss {progress.train_loss:.4g}"
    eta = fmt_duration(eta_s(progress.step, n_steps, progress.s_per_step))
    return f"run {run_id} step {progress.step}/{n_steps}{loss}, ETA {eta}"
