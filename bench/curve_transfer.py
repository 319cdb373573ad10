"""Measurement: how well a curve law (the annealing law by default; `--law multi_power_curve`)
of one schedule's learning curves predicts the final losses of the other schedule's runs
(issue 33), on the committed results/wsd_cosine (cosine)
and results/wsd (WSD) grids: 4 sizes x 4 budgets each, the same model shapes and data.

For each direction, `harness fit SOURCE --fits anneal_curve --where W --out TMP/fits.json` fits
one law per size on the source runs that W selects, then `harness predict TMP --curve --n N
--d D1,D2,.. --schedule S --warmup-tokens T --json` predicts every run of the target grid under
its own schedule (its warmup given; peak rate, floor and cooldown as the source runs had them,
which both grids share). Printed: each run's predicted and measured final loss (runs.csv), the
mean and max relative error, and, for comparison, the error of taking the source grid's own
loss at the same (N, D) as the prediction (what one would guess without a curve law).

    python bench/curve_transfer.py [--bootstrap 1000] [--law anneal_curve|multi_power_curve]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COSINE, WSD = ROOT / "results" / "wsd_cosine", ROOT / "results" / "wsd"


def _harness(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def _warmup_tokens(results: Path) -> float:
    spec = json.loads(next((results / "runs").glob("*/spec.json")).read_text())
    return float(spec["train"].get("warmup_tokens", 0.0))


def transfer(
    source: Path, target: Path, where: str, schedule: str, bootstrap: int, tmp: Path, law: str
) -> pd.DataFrame:
    """Per target run: measured loss, prediction with its intervals, the source's own loss."""
    out = tmp / f"{source.name}-{abs(hash(where)) % 10**6}"
    out.mkdir()
    _harness("fit", str(source), "--fits", law, "--where", where,
             "--bootstrap", str(bootstrap), "--out", str(out / "fits.json"))  # fmt: skip
    fitted = json.loads((out / "fits.json").read_text())["fits"][law]["sizes"]
    tgt = pd.read_csv(target / "runs.csv")
    src = pd.read_csv(source / "runs.csv").set_index(["n_params", "n_tokens"])["loss"]
    rows = []
    for n, runs in tgt.groupby("n_params"):
        label = f"{n:.0f}"
        if "params" not in fitted.get(label, {}):
            continue
        ds = ",".join(str(int(d)) for d in runs["n_tokens"])
        warm = ["--warmup-tokens", str(_warmup_tokens(target))] if _warmup_tokens(target) else []
        preds = json.loads(_harness("predict", str(out), "--curve", "--law", law, "--n", str(n),
                                    "--d", ds, "--schedule", schedule, *warm,
                                    "--json"))  # fmt: skip
        for (_, run), p in zip(runs.iterrows(), preds, strict=True):
            rows.append(
                {
                    "n_params": int(n),
                    "n_tokens": int(run["n_tokens"]),
                    "measured": float(run["loss"]),
                    "predicted": p["loss"],
                    "ci95": p["loss_ci95"],
                    "inside_pi95": p["loss_pi95"][0] <= run["loss"] <= p["loss_pi95"][1],
                    "undetermined": p["undetermined"],
                    "other_schedule": float(src.get((n, run["n_tokens"]), np.nan)),
                }
            )
    df = pd.DataFrame(rows)
    df["error"] = df["predicted"] / df["measured"] - 1
    df["baseline_error"] = df["other_schedule"] / df["measured"] - 1
    return df


def report(title: str, df: pd.DataFrame) -> None:
    print(f"\n{title}")
    for r in df.itertuples():
        print(f"  N {r.n_params:>7}  D {r.n_tokens:>8}  measured {r.measured:.4f}  predicted "
              f"{r.predicted:.4f} [{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]  error {100 * r.error:+6.2f}%"
              f"  (other schedule's loss {100 * r.baseline_error:+6.2f}%)")  # fmt: skip
    e, b = df["error"].abs(), df["baseline_error"].abs()
    print(f"  {len(df)} runs: mean |error| {100 * e.mean():.2f}%, max {100 * e.max():.2f}%; "
          f"inside the 95% PI: {int(df['inside_pi95'].sum())}/{len(df)}; other schedule's "
          f"loss as the guess: mean {100 * b.mean():.2f}%, max {100 * b.max():.2f}%")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--law", default="anneal_curve", choices=["anneal_curve", "multi_power_curve"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="curve-transfer-") as t:
        tmp = Path(t)
        cases = [
            ("cosine runs of the two smallest budgets -> WSD", COSINE, WSD, "n_tokens <= 150016",
             "wsd"),
            ("cosine runs of all four budgets -> WSD", COSINE, WSD, "n_tokens > 0", "wsd"),
            ("WSD runs of the two largest budgets -> cosine", WSD, COSINE, "n_tokens >= 499968",
             "cosine"),
            ("WSD runs of all four budgets -> cosine", WSD, COSINE, "n_tokens > 0", "cosine"),
        ]  # fmt: skip
        for title, source, target, where, schedule in cases:
            try:
                df = transfer(source, target, where, schedule, args.bootstrap, tmp, args.law)
            except SystemExit as exc:  # the law needs more points than these runs have
                print(f"\n{args.law}: {title}\n  not fitted: {str(exc).splitlines()[-1]}")
                continue
            report(f"{args.law}: {title}", df)


if __name__ == "__main__":
    main()
