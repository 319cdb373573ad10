"""Benchmark: the wsd_cosine grid with WSD schedules and shared trunks vs the cosine grid.

Hagele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations") train a scaling grid with warmup-stable-decay schedules: the runs of one size share
one stable phase and only their cooldowns are trained apart. This compares such a grid
(experiments/wsd.toml, `harness run` with execution.share_wsd_trunks) with the same grid
trained with independent cosine runs (the committed results/wsd_cosine/runs.csv; it is not
retrained):

- FLOPs spent: sum of 6 N x (tokens each run trained itself) (`trained_flops`) against the
  cosine grid's sum of 6 N D (every cosine run trains its whole D);
- wall time: the sums of the runs' own training wall_s (the runs.csv column), and the whole
  `harness run` with --run; with the throughput of the longest run of each size in both grids,
  since the two grids may have trained under different machine load;
- Chinchilla approach 3 (harness.analysis.fit.fit_chinchilla) fitted on each grid: the
  parameters side by side, their differences, a = beta / (alpha + beta), and each point's loss
  in both grids.

    OMP_NUM_THREADS=1 harness run experiments/wsd.toml   # ~8 min on one thread
    python bench/bench_wsd.py                            # reads results/wsd, results/wsd_cosine
    python bench/bench_wsd.py --run                      # trains experiments/wsd.toml first
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.cli import warnings_as_lines
from harness.analysis.fit import fit_chinchilla
from harness.analysis.io import load_runs

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["n_params", "n_tokens"]


def spent_flops(df: pd.DataFrame) -> float:
    """FLOPs the runs trained themselves; a CSV without trained_flops trained every D whole."""
    if "trained_flops" in df and df["trained_flops"].notna().all():
        return float(df["trained_flops"].sum())
    return float(df["flops"].sum())


def fit(df: pd.DataFrame) -> dict[str, float]:
    with warnings_as_lines():  # a fit on the start grid's edge says so in one line
        r = fit_chinchilla(df["n_params"], df["n_tokens"], df["loss"])
    p = dict(r.params)
    p["a"] = p["beta"] / (p["alpha"] + p["beta"])  # N_opt ~ C^a (Hoffmann et al. 2022)
    p["objective"] = r.objective
    return p


def stored_ci95(results: str) -> dict[str, list[float]]:
    """The bootstrap 95% intervals of the approach-3 fit in RESULTS/fits.json (`harness fit`)."""
    path = Path(results) / "fits.json"
    if not path.exists():
        return {}
    ci = json.loads(path.read_text()).get("fits", {}).get("chinchilla", {}).get("ci95") or {}
    return {k: v for k, v in ci.items() if isinstance(v, list) and len(v) == 2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wsd", default=str(ROOT / "results" / "wsd"), help="WSD results directory")
    ap.add_argument(
        "--cosine", default=str(ROOT / "results" / "wsd_cosine"), help="cosine results directory"
    )
    ap.add_argument("--run", action="store_true", help="run experiments/wsd.toml first, timed")
    args = ap.parse_args(argv)

    if args.run:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", str(ROOT / "experiments" / "wsd.toml")],
            check=True,
            cwd=ROOT,
        )
        print(f"harness run experiments/wsd.toml: {time.perf_counter() - t0:.1f} s end to end\n")

    cos = load_runs(args.cosine, min_points=5)
    wsd = load_runs(args.wsd, min_points=5)
    both = cos.merge(wsd, on=KEYS, suffixes=("_cos", "_wsd"))
    if len(both) != len(cos) or len(both) != len(wsd):
        print(
            f"the grids differ: {len(cos)} cosine points, {len(wsd)} WSD points, "
            f"{len(both)} in common",
            file=sys.stderr,
        )
        return 1

    print(f"{len(both)} grid points: N {sorted(set(both.n_params.astype(int)))}")
    print(f"  D {sorted(set(both.n_tokens.astype(int)))}\n")

    f_cos, f_named, f_wsd = spent_flops(cos), float(wsd["flops"].sum()), spent_flops(wsd)
    print("FLOPs (6 N x tokens trained)")
    print(f"  cosine, independent runs : {f_cos:.4g}")
    print(f"  WSD, 6 N D of its runs   : {f_named:.4g}")
    print(f"  WSD, spent (shared trunk): {f_wsd:.4g}  = {f_wsd / f_cos:.3f} of the cosine grid's")
    print(f"  saved                    : {1 - f_wsd / f_cos:.1%}\n")

    w_cos, w_wsd = float(cos["wall_s"].sum()), float(wsd["wall_s"].sum())
    print("Wall time (sum of the runs' own training wall_s, evaluations included)")
    print(f"  cosine: {w_cos:.1f} s   WSD: {w_wsd:.1f} s   ratio {w_wsd / w_cos:.3f}")
    longest = both[both.n_tokens == both.n_tokens.max()]
    speed = longest["tokens_per_s_wsd"] / longest["tokens_per_s_cos"]
    print(
        "  throughput of the longest run of each size, WSD / cosine (the same model and D; "
        "machine load): " + ", ".join(f"{s:.2f}" for s in speed)
    )
    print(f"  wall ratio at the cosine grid's throughput: {w_wsd / w_cos * np.mean(speed):.3f}\n")

    p_cos, p_wsd = fit(cos), fit(wsd)
    print("Chinchilla approach 3 (fit_chinchilla), L = E + A/N^alpha + B/D^beta")
    ci_cos, ci_wsd = stored_ci95(args.cosine), stored_ci95(args.wsd)

    def ci(c: dict[str, list[float]], k: str) -> str:
        return f"[{c[k][0]:.3g}, {c[k][1]:.3g}]" if k in c else ""

    print(
        f"  {'':9s} {'cosine':>11s} {'WSD':>11s} {'WSD-cos':>10s} {'rel':>7s}"
        f"  {'cosine 95% CI':>20s} {'WSD 95% CI':>20s}  (CI: bootstrap in fits.json)"
    )
    for k in ["E", "A", "B", "alpha", "beta", "a", "objective"]:
        c, w = p_cos[k], p_wsd[k]
        print(
            f"  {k:9s} {c:11.4g} {w:11.4g} {w - c:10.3g} {(w - c) / abs(c):7.0%}"
            f"  {ci(ci_cos, k):>20s} {ci(ci_wsd, k):>20s}"
        )
    print()

    print("Final validation loss per point (nats/token)")
    print(f"  {'N':>7s} {'D':>9s} {'cosine':>8s} {'WSD':>8s} {'WSD-cos':>8s} {'branched':>8s}")
    diffs = both["loss_wsd"] - both["loss_cos"]
    for (_, r), d in zip(both.iterrows(), diffs, strict=True):
        branched = "branch" if isinstance(r.get("branched_from"), str) else "trunk"
        print(
            f"  {int(r.n_params):7d} {int(r.n_tokens):9d} {r.loss_cos:8.4f} {r.loss_wsd:8.4f} "
            f"{d:+8.4f} {branched:>8s}"
        )
    print(
        f"  mean {diffs.mean():+.4f}, mean |diff| {diffs.abs().mean():.4f}, "
        f"max |diff| {diffs.abs().max():.4f}; WSD lower at {(diffs < 0).sum()} of {len(diffs)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
