"""Benchmark: what in-loop task evaluation ([eval], harness.evals) costs against training.

Runs ``harness run experiments/quickstart_tasks.toml`` as a user would, in a subprocess, one run
at a time (execution.workers = 1, one thread), with its results in a temp directory: the
quickstart grid with the bundled shakespeare_cloze task, 500 examples, at each of the 4
held-out evaluations of every run. Every result.json records tasks_s (the seconds its task
evaluations took) beside wall_s (the run's whole step loop, evaluations included), so each
ratio below is between two measurements of one run. Also printed: `harness plan`'s estimate
of the task time, for the same runs.

Goal (issue 35): task evaluation under 10% of a run's wall time at these settings.

    OMP_NUM_THREADS=1 python bench/bench_evals.py           # the 15 runs, ~5 min on one core
    OMP_NUM_THREADS=1 python bench/bench_evals.py --quick   # the 5 sizes at D = 5e5, ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXPERIMENT = "experiments/quickstart_tasks.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the 5 sizes at D = 5e5 only")
    args = p.parse_args()
    overrides = ["--grid.n_tokens=[5e5]"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "harness.cli", "run", EXPERIMENT, *overrides,
            f"--execution.results_dir={tmp}", "--execution.progress=false",
            "--execution.workers=1", "--execution.threads=1",
        ]  # fmt: skip
        print(f"load {os.getloadavg()[0]:.2f}; {' '.join(cmd[2:])}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        (root,) = [d for d in Path(tmp).iterdir() if (d / "runs").is_dir()]
        runs = []
        for f in (root / "runs").glob("*/result.json"):
            spec = json.loads((f.parent / "spec.json").read_text())
            runs.append((spec, json.loads(f.read_text())))
    runs.sort(
        key=lambda sr: (sr[0]["model"]["n_embd"], sr[0]["model"]["n_layer"], sr[0]["n_tokens"])
    )
    print(f"{'shape':>8} {'D':>10} {'wall_s':>8} {'tasks_s':>8} {'share':>7}")
    for spec, r in runs:
        m = spec["model"]
        share = r["tasks_s"] / r["wall_s"]
        print(
            f"{m['n_layer']}x{m['n_embd']:<5} {spec['n_tokens']:>10,} {r['wall_s']:8.1f} "
            f"{r['tasks_s']:8.1f} {share:7.1%}"
        )
    wall = sum(r["wall_s"] for _, r in runs)
    tasks = sum(r["tasks_s"] for _, r in runs)
    shares = sorted(r["tasks_s"] / r["wall_s"] for _, r in runs)
    print(
        f"{len(runs)} runs: task evaluation {tasks:.1f} s of {wall:.1f} s of training wall time "
        f"({tasks / wall:.1%}); per run {shares[0]:.1%} to {shares[-1]:.1%}, median "
        f"{shares[len(shares) // 2]:.1%} (goal: under 10%)"
    )


if __name__ == "__main__":
    main()
