"""Benchmark: the quickstart on one worker against all the machine's workers (issue 16, item 6).

Runs ``harness run EXPERIMENT --execution.workers=1 --execution.threads=1`` and then the same with
``--execution.workers=auto`` (one worker per core at one thread each), as a user would, each in
a subprocess with its results in a temp directory, one after the other in this one process.
Prints both wall times, their ratio, and whether every run's final loss is the same bit for
bit (it must be: a run's numbers do not depend on which worker trains it). The goal on a
2-core machine is a ratio of at most 0.55.

    OMP_NUM_THREADS=1 python bench/bench_executor.py                       # ~10 min on 2 cores
    OMP_NUM_THREADS=1 python bench/bench_executor.py --quick               # 8 shortest runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _run(experiment: str, results: Path, workers: str, extra: list[str]) -> tuple[float, Path]:
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        experiment,
        f"--execution.results_dir={results}",
        f"--execution.workers={workers}",
        "--execution.threads=1",
        "--execution.progress=false",
        *extra,
    ]
    t0 = time.perf_counter()
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    (csv,) = results.glob("*/runs.csv")
    return wall, csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", nargs="?", default="experiments/quickstart.toml")
    p.add_argument("--quick", action="store_true", help="the 8 runs of the two smallest budgets")
    args = p.parse_args()
    extra = ["--grid.n_tokens=[5e4, 1.5e5]"] if args.quick else []
    print(f"usable cores: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        serial, a = _run(args.experiment, Path(tmp) / "serial", "1", extra)
        print(f"workers=1:    {serial:7.1f} s")
        parallel, b = _run(args.experiment, Path(tmp) / "parallel", "auto", extra)
        print(f"workers=auto: {parallel:7.1f} s")
        x = pd.read_csv(a).set_index("run_id")["loss"].sort_index()
        y = pd.read_csv(b).set_index("run_id")["loss"].sort_index()
    same = x.index.equals(y.index) and bool((x.values == y.values).all())
    print(f"wall-time ratio parallel/serial: {parallel / serial:.3f} (goal <= 0.55 on 2 cores)")
    print(f"{len(x)} final losses bit-identical: {same}")


if __name__ == "__main__":
    main()
