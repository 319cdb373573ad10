"""`harness reproduce PATH --retrain`: retrain a few stored runs from their spec.json and compare
their final losses with runs.csv.

A refit checks the analysis; this checks the training. Runs are bit-identical only on the same
CPU type with the same torch (kernels differ between instruction sets), so a retrained loss on
another machine is compared within a tolerance set by the seed-to-seed spread of the same runs:
a change of CPU perturbs a run's last bits, which training amplifies as a change of seed does,
but not by more. The spread was measured on the 6 cheapest runs of the wsd_cosine grid (5
training seeds each, results/wsd_cosine/README.md): relative standard deviations of the final loss
0.31% to 3.6%, pooled (root mean square) `SEED_REL_STD` = 2.17%. Two draws of one run then
differ by more than ``MC_SIGMAS sqrt(2) SEED_REL_STD`` = 12.3% of the loss with probability
below 1e-4 under a normal spread: that is `RETRAIN_RTOL`. A change of CPU alone moved the same
runs by 0.00006% to 1.8% (same README), and the 330 committed runs, retrained on 2026-12-03, by
at most 6.0% (lr_sweep; results/NAME/README.md): inside it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from harness.analysis.io import resolve_csv
from harness.config import ExecutionConfig
from harness.errors import InputError
from harness.results import ExperimentLayout

__all__ = ["DEFAULT_RUNS", "RETRAIN_RTOL", "SEED_REL_STD", "pick_runs", "retrain_check"]

DEFAULT_RUNS = 3
"""Runs retrained by default: the cheapest, so that the check takes about a minute on a CPU."""
SEED_REL_STD = 0.0217
"""Pooled seed-to-seed relative standard deviation of the final loss, measured (see above)."""
MC_SIGMAS = 4.0
RETRAIN_RTOL = MC_SIGMAS * math.sqrt(2.0) * SEED_REL_STD
"""Relative tolerance of a retrained final loss against the stored one."""


def pick_runs(df: pd.DataFrame, k: int) -> list[str]:
    """The run_ids of the ``k`` cheapest done runs (by 6ND FLOPs, then run_id)."""
    if "run_id" not in df.columns:
        raise InputError(
            "--retrain: the CSV has no run_id column; accepted: runs.csv of "
            "`harness run` (with the runs' spec.json under runs/)"
        )
    done = df[df.get("status", "done").astype(str) == "done"] if "status" in df else df
    cost = done["n_params"].astype(float) * done["n_tokens"].astype(float)
    order = done.assign(_cost=cost).sort_values(["_cost", "run_id"], kind="stable")
    return [str(r) for r in order["run_id"].head(k)]


def retrain_check(
    path: str | os.PathLike[str],
    *,
    n_runs: int = DEFAULT_RUNS,
    execution: ExecutionConfig | None = None,
) -> tuple[bool, str]:
    """Retrain the ``n_runs`` cheapest runs of PATH in a scratch folder; compare final losses.

    Parameters
    ----------
    path : path-like
        The results directory or its runs.csv; each chosen run's spec.json must lie in
        ``runs/<run_id>/`` beside the CSV.
    n_runs : int
        How many runs (>= 1).
    execution : ExecutionConfig, optional
        Device and threads of the retraining (default: the CPU at one torch thread, as every
        committed grid trains, no progress bar). The thread count changes the order of the
        reductions: at torch's default of one thread per core the retrained losses moved by up
        to 0.011 on the machine that trained the runs, at one thread they were bit-identical.

    Returns
    -------
    (bool, str)
        Whether every retrained loss is within `RETRAIN_RTOL` of the stored one, and a table.

    Raises
    ------
    InputError
        No such runs, a missing or bad spec.json, or a spec.json of another run.
    """
    from harness.train import train  # torch: only here, never in the analysis

    if n_runs < 1:
        raise InputError(f"--runs {n_runs}; accepted: an integer >= 1")
    csv = resolve_csv(path)
    df = pd.read_csv(csv)
    ids = pick_runs(df, n_runs)
    if not ids:
        raise InputError(f"{csv}: no done run to retrain")
    layout = ExperimentLayout(csv.parent)
    specs = []
    for run_id in ids:
        run = layout.run(run_id)
        if not run.spec_json.is_file():
            raise InputError(
                f"{run.spec_json}: missing; accepted: the spec.json "
                "`harness run` writes for each run (committed results keep it)"
            )
        spec = run.spec()
        if spec.run_id != run_id:
            raise InputError(
                f"{run.spec_json}: its settings give run_id "
                f"{spec.run_id}, not {run_id}; accepted: that run's own spec.json"
            )
        specs.append(spec)
    exe = execution or ExecutionConfig(threads=1)
    exe = dataclasses.replace(exe, progress=False)
    stored = df.drop_duplicates("run_id").set_index("run_id")
    lines = [
        f"retrain {len(specs)} of {len(df)} runs of {csv} from their spec.json "
        f"(tolerance {RETRAIN_RTOL:.2%} of the loss: {MC_SIGMAS:g} sqrt(2) x the measured "
        f"seed-to-seed spread {SEED_REL_STD:.2%})",
        f"{'run_id':<14} {'N':>10} {'D':>11} {'stored':>9} {'retrained':>9} {'diff':>9}",
    ]
    ok = True
    with tempfile.TemporaryDirectory(prefix="harness-retrain-") as tmp:
        for spec in specs:
            row = stored.loc[spec.run_id]
            res = train(spec, Path(tmp) / "runs" / spec.run_id, execution=exe)
            if res is None or res.status != "done" or res.val_loss is None:
                ok = False
                lines.append(f"{spec.run_id:<14} retraining ended {getattr(res, 'status', None)}")
                continue
            want = float(row["loss"])
            diff = res.val_loss - want
            good = abs(diff) <= RETRAIN_RTOL * abs(want)
            ok &= good
            n, d = int(row["n_params"]), int(row["n_tokens"])
            lines.append(
                f"{spec.run_id:<14} {n:>10,} {d:>11,} {want:>9.4f} "
                f"{res.val_loss:>9.4f} {diff:>+9.4f}" + ("" if good else "  DIFFERENT")
            )
    return ok, "\n".join(lines)
