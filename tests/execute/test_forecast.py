"""`harness status` forecasts a running run's final loss (issue 33) from the annealing law of
its evaluations so far and of the finished runs of its size: on the committed cosine grid
(results/wsd_cosine), its largest run stopped after 2 of its 4 evaluations."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from _tiny import harness_cli

from harness.execute.locks import RunLock
from harness.rundir import RunDir

COSINE = Path(__file__).resolve().parents[2] / "results" / "wsd_cosine"
N = 443232


@pytest.mark.slow
def test_status_forecasts_the_final_loss_of_a_running_run(tmp_path: Path) -> None:
    root = tmp_path / "wsd_cosine"
    shutil.copytree(COSINE, root)
    runs = pd.read_csv(root / "runs.csv")
    size = runs[runs["n_params"] == N].sort_values("n_tokens")
    *done, longest = size.itertuples()
    for r in done:  # finished runs, as `harness run` leaves them
        RunDir(root / "runs" / r.run_id).write_result({"run_id": r.run_id, "status": "done",
                                                "val_loss": r.loss})  # fmt: skip
    metrics = root / "runs" / longest.run_id / "metrics.csv"
    m = pd.read_csv(metrics)
    second = m.index[m["val_loss"].notna()][1]
    m.iloc[: second + 1].to_csv(metrics, index=False)  # half-way: 2 of its 4 evaluations
    with RunLock(root / "runs" / longest.run_id):  # a `harness run` trains it now
        out = harness_cli("status", str(root))
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith(f"  {longest.run_id}: ")]
    got = re.match(r"  \w+: ([\d.]+) \[([\d.]+), ([\d.]+)\] \(fitted on 4 runs, 14 evaluations\)",
                   line)  # fmt: skip
    assert got, line
    loss, lo, hi = (float(g) for g in got.groups())
    assert lo <= loss <= hi
    # its final loss once trained (runs.csv): forecast from half its curve within 5%
    assert loss == pytest.approx(longest.loss, rel=0.05)


@pytest.mark.slow
def test_no_forecast_without_a_running_run(tmp_path: Path) -> None:
    root = tmp_path / "wsd_cosine"
    shutil.copytree(COSINE, root)
    out = harness_cli("status", str(root))
    assert "forecast final loss" not in out.stdout
