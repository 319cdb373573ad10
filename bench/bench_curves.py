"""Benchmark: the annealing law (`harness/analysis/curves.py`) fitted to 50 runs of 200
evaluations each, with a 1000-resample bootstrap (issue 33). Goal: under 30 s on 2 cores.

The curves are drawn from the law itself (L0 1.8, A 0.6, alpha 0.5, C 0.4, lambda 0.99) with 0.3%
noise, under cosine, WSD and constant schedules of 1000 to 10,000 updates. Prints the time of
the fit (the momentum profile over 5 values), of the bootstrap, their sum against the goal, and
the recovered parameters.

    OMP_NUM_THREADS=1 python bench/bench_curves.py [--runs 50] [--evals 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness.analysis import curves as cv
from harness.schedules import lr_at_step

GOAL_S = 30.0
TRUE = {"L0": 1.8, "A": 0.6, "alpha": 0.5, "C": 0.4}


def make(n_runs: int, n_evals: int, seed: int = 0) -> list[cv.Curve]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_runs):
        n_steps = int(rng.integers(1000, 10_001))
        schedule = ("cosine", "wsd", "constant")[i % 3]
        lrs = np.array([
            lr_at_step(s, total_steps=n_steps, warmup=50, peak=3e-3, min_ratio=0.1,
                       schedule=schedule)  # type: ignore[arg-type]
            for s in range(n_steps)
        ])  # fmt: skip
        s1, s2 = cv.areas(lrs, 0.99)
        steps = np.unique(np.linspace(60, n_steps, n_evals).astype(np.int64))
        loss = cv.anneal_loss(s1[steps], s2[steps], **TRUE) * np.exp(
            rng.normal(0, 0.003, steps.size)
        )
        out.append(cv.Curve(f"run{i}", 1e8, lrs, steps, loss))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--evals", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    curves = make(args.runs, args.evals)
    n = sum(c.loss.size for c in curves)
    t0 = time.perf_counter()
    fitted = cv.fit_anneal(curves)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept, failed = cv.bootstrap_anneal(
        curves, fitted, n_resamples=args.bootstrap, rng=np.random.default_rng(1)
    )
    t_boot = time.perf_counter() - t0
    total = t_fit + t_boot
    print(f"{args.runs} runs, {n} evaluation points")
    print(f"fit (5 momenta profiled): {t_fit:.1f} s; bootstrap ({args.bootstrap}): {t_boot:.1f} s "
          f"({failed} failed); total {total:.1f} s")  # fmt: skip
    print("params", {k: round(v, 4) for k, v in fitted.fit.params.items()},
          f"lambda {fitted.decay}")  # fmt: skip
    print(f"goal (< {GOAL_S:.0f} s): {'met' if total < GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
