"""Benchmark: where a grid's wall time goes besides training (issue 6, item 5).

Runs ``harness run EXPERIMENT [overrides]`` as a user would, in a subprocess, with its results in
a temp directory, and splits the command's wall time with the timestamps every result.json
records (harness.train.RunResult: started_unix, setup_s, wall_s, finish_s):

- start-up: from the command's start to the first run's first training step (Python and torch
  imports, config, tokenizing the corpus once, spawning the worker, importing the model code,
  the first run's own set-up);
- per run: set-up in the worker (open the tokenized corpus, build the model, load a checkpoint),
  the gap between one run's result.json and the next run's start (the launcher's bookkeeping),
  and finish (the CPU peak measurement, once per worker, and saving model.pt);
- training: the runs' own wall_s (their step loops, and the held-out evaluations, eval_s);
- the tail: collecting runs.csv, the fits and the figures.

It also checks that the corpus was tokenized once, before the first run (the cache's files are
not rewritten by later runs). Default: the 8 shortest runs of the 4 x 4 cosine grid
(experiments/wsd_cosine.toml, the quickstart until 2026-12-02, which the recorded numbers
are of: its 4 sizes at its two smallest budgets), where overhead weighs most.

    OMP_NUM_THREADS=1 python bench/bench_overhead.py                          # ~2-3 min
    OMP_NUM_THREADS=1 python bench/bench_overhead.py experiments/quickstart.toml --full
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK_OVERRIDES = ["--grid.n_tokens=[5e4, 1.5e5]"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", nargs="?", default="experiments/wsd_cosine.toml")
    p.add_argument("--full", action="store_true", help="the experiment's whole grid")
    args, overrides = p.parse_known_args()
    overrides = overrides if (overrides or args.full) else QUICK_OVERRIDES

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "harness.cli", "run", args.experiment, *overrides,
            f"--execution.results_dir={tmp}", "--execution.progress=false",
        ]  # fmt: skip
        print(f"load {os.getloadavg()[0]:.2f}; {' '.join(cmd[2:])}", flush=True)
        t_start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        t_end = time.time()
        if proc.returncode != 0:
            sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        (root,) = [d for d in Path(tmp).iterdir() if (d / "runs").is_dir()]
        results = sorted(
            (json.loads(f.read_text()) for f in (root / "runs").glob("*/result.json")),
            key=lambda r: r["started_unix"],
        )
        cache_mtime = max(f.stat().st_mtime for f in (root / "cache").rglob("*") if f.is_file())

    total = t_end - t_start
    train = sum(r["wall_s"] for r in results)
    first_step = results[0]["started_unix"] + results[0]["setup_s"] - t_start
    ends = [r["started_unix"] + r["setup_s"] + r["wall_s"] + r["finish_s"] for r in results]
    gaps = [nxt["started_unix"] - end for end, nxt in zip(ends[:-1], results[1:], strict=True)]
    setups = [r["setup_s"] for r in results[1:]]  # the first run's is in the start-up
    finishes = [r["finish_s"] for r in results]
    between = [g + s + f for g, s, f in zip(gaps, setups, finishes[:-1], strict=True)]
    tail = t_end - (ends[-1] - finishes[-1])  # the last run's finish, then collect, fit, plot
    walls = [r["wall_s"] for r in results]

    print(
        f"{len(results)} runs, command wall {total:.1f} s, training (sum of wall_s) {train:.1f} s"
    )
    print(f"start-up to the first step:       {first_step:6.1f} s")
    if not between:
        sys.exit("one run: nothing between runs to measure; give a grid of two or more")
    print(
        f"between runs (finish+gap+set-up):  mean {sum(between) / len(between):.2f} s, "
        f"max {max(between):.2f} s  (set-up {sum(setups) / len(setups):.2f}, gap "
        f"{sum(gaps) / len(gaps):.3f}, finish mean {sum(finishes) / len(finishes):.2f} s)"
    )
    print(f"after the last step (finish, collect, fits, figures): {tail:.1f} s")
    print(f"run wall_s: shortest {min(walls):.1f} s, mean {train / len(walls):.1f} s")
    evals = sum(r["eval_s"] for r in results)
    print(f"held-out evaluations within the runs' wall_s: {evals:.1f} s ({evals / train:.0%})")
    print("ratios:")
    print(f"  start-up / training              {first_step / train:.3f}")
    print(f"  between-run overhead / training  {sum(between) / train:.3f}")
    print(f"  between-run overhead / shortest run  {max(between) / min(walls):.3f}")
    print(f"  training / command wall          {train / total:.3f}")
    once = cache_mtime < results[0]["started_unix"]
    print(f"corpus tokenized once, before the first run: {'yes' if once else 'NO'}")


if __name__ == "__main__":
    main()
