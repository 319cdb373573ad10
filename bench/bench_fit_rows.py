"""Benchmark: `harness fit` of a 100,000-row CSV with the default bootstrap (issue 31).

Goal: under 60 s of wall time and under 2 GB of peak memory on a 2-core machine. The laws are
fitted on a stratified subsample of FIT_ROWS_MAX runs (`harness.analysis.subsample`), so the
time should be that of a CSV of FIT_ROWS_MAX rows plus reading the rest: the script fits both,
one after the other in this run, and prints the ratio.

    OMP_NUM_THREADS=1 python bench/bench_fit_rows.py [--rows 100000]

Each fit is a `harness fit` subprocess on a CSV drawn from Hoffmann et al.'s law with 2% noise
(N from 7e7 to 1.6e10, D from 5e9 to 5e11, log-uniform); its peak RSS is read from
resource.getrusage(RUSAGE_CHILDREN) after it ends (a high-water mark: the 100,000-row fit runs
second, so its figure is the larger of the two).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.laws import chinchilla_loss
from harness.analysis.subsample import FIT_ROWS_MAX

GOAL_S = 60.0
GOAL_GB = 2.0


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), rows)).round()
    D = np.exp(rng.uniform(np.log(5e9), np.log(5e11), rows)).round()
    L = chinchilla_loss(N, D, 1.69, 406.4, 410.7, 0.34, 0.28) * np.exp(rng.normal(0, 0.02, rows))
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L}).to_csv(path / "runs.csv", index=False)


def fit(folder: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in GB so far among children, and the summary's subsample line."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fit", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"harness fit {folder} failed:\n{out.stderr[-2000:]}")
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KB on Linux
    line = next((x for x in out.stdout.splitlines() if x.startswith("SUBSAMPLE")), "(all rows)")
    return wall, rss_gb, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fit-rows-") as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        write_csv(small, FIT_ROWS_MAX)
        write_csv(large, args.rows)
        t_small, rss_small, _ = fit(small)
        t_large, rss_large, line = fit(large)
    print(f"{FIT_ROWS_MAX:>7} rows: {t_small:6.1f} s  peak RSS <= {rss_small:.2f} GB")
    print(f"{args.rows:>7} rows: {t_large:6.1f} s  peak RSS <= {rss_large:.2f} GB")
    print(f"  {line}")
    print(f"ratio {args.rows} rows / {FIT_ROWS_MAX} rows: {t_large / t_small:.2f}")
    ok = t_large < GOAL_S and rss_large < GOAL_GB
    print(f"goal (< {GOAL_S:.0f} s, < {GOAL_GB:.0f} GB): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
