"""What the benchmark scripts share (run as scripts: bench/ is on sys.path)."""

from __future__ import annotations

import csv
from pathlib import Path


def steady_rate(run_dir: Path, skip_steps: int) -> float:
    """Training tokens/s of a finished run, from its metrics.csv: between the first row at or
    after ``skip_steps`` (warm-up, compilation) and the row before the last (the last row's
    wall_s includes the final evaluation)."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    first = next(r for r in rows if int(r["step"]) >= skip_steps)
    last = rows[-2]
    tokens = int(last["tokens"]) - int(first["tokens"])
    return tokens / (float(last["wall_s"]) - float(first["wall_s"]))
