"""The seed-to-seed spread of final losses that `harness reproduce --retrain` rests on.

Not a speed benchmark: it retrains the K cheapest runs of the quickstart with training seeds
0..S-1 (in a scratch folder) and prints, per run, the mean, standard deviation and relative
standard deviation of the final validation loss, the pooled (root mean square) relative spread
that `harness.retrain.SEED_REL_STD` records, and how far seed 0 retrained here lies from the
committed runs.csv (a change of CPU or library alone).

    OMP_NUM_THREADS=1 python bench/seed_spread.py [--runs 6] [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path

import pandas as pd
import torch

from harness.config import load_experiment
from harness.grid import expand
from harness.retrain import pick_runs
from harness.train import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    exp = load_experiment(ROOT / "experiments" / "wsd_cosine.toml")
    stored = pd.read_csv(ROOT / "results" / "wsd_cosine" / "runs.csv")
    by_id = {s.run_id: s for s in expand(exp)}
    exe = dataclasses.replace(exp.execution, progress=False, threads=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-spread-") as tmp:
        for run_id in pick_runs(stored, args.runs):
            for seed in range(args.seeds):
                spec = dataclasses.replace(by_id[run_id], seed=seed)
                res = train(spec, Path(tmp) / str(seed) / spec.run_id, execution=exe)
                rows.append({"run_id": run_id, "seed": seed, "loss": res.val_loss})
    df = pd.DataFrame(rows).merge(
        stored[["run_id", "n_params", "n_tokens", "loss"]].rename(columns={"loss": "stored"}),
        on="run_id",
    )
    g = df.groupby(["run_id", "n_params", "n_tokens"], sort=False)
    table = pd.DataFrame({"mean": g["loss"].mean(), "std": g["loss"].std(ddof=1)})
    table["rel_std"] = table["std"] / table["mean"]
    seed0 = df[df.seed == 0].set_index("run_id")
    table["seed0_vs_stored"] = [
        (seed0.loc[r, "loss"] - seed0.loc[r, "stored"]) / seed0.loc[r, "stored"]
        for r, _, _ in table.index
    ]
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    pooled = math.sqrt(float((table["rel_std"] ** 2).mean()))
    print(f"pooled relative spread (root mean square): {pooled:.4%}")


if __name__ == "__main__":
    main()
