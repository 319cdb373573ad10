"""harness validate: the run that checks a fitted law beyond its grid, the validation.json it
writes, and reproduce's check of it (training itself is harness run's, tested elsewhere)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.fitting import fit_path
from harness.analysis.laws import compute_optimal
from harness.analysis.reproduce import reproduce_path
from harness.config import load_experiment
from harness.errors import InputError
from harness.model import count_params
from harness.validate import validation_record, validation_spec, write_validation

LAW = {"E": 1.0, "A": 100.0, "B": 493.0, "alpha": 0.3, "beta": 0.3}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment whose results directory holds runs from a known law, fitted."""
    d = tmp_path_factory.mktemp("validate")
    root = d / "results" / "g"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e3, 1e4, 5), np.geomspace(1e4, 1e5, 4)))
    L = (LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]) * np.exp(
        rng.normal(0, 0.005, N.size)
    )
    pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L, "status": "done"}).to_csv(
        root / "runs.csv", index=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_path(root, n_bootstrap=100, fits=["chinchilla", "compute_optimal"])
    toml = d / "g.toml"
    toml.write_text(
        "[model]\nhead_dim = 8\n[data]\nseq_len = 32\n[grid]\nn_params = [1000]\n"
        f'n_tokens = [10000]\n[execution]\nresults_dir = "{d / "results"}"\n'
    )
    return toml


def test_the_validation_run_is_the_predicted_optimum_beyond_the_grid(grid: Path) -> None:
    exp = load_experiment(grid)
    spec, pred = validation_spec(exp, 3.0)
    assert pred["grid_max_flops"] == pytest.approx(6 * 1e4 * 1e5)
    assert pred["budget_flops"] == pytest.approx(3 * 6e9)
    fitted = json.loads((exp.results_path / "fits.json").read_text())["fits"]["chinchilla"]
    p = fitted["params"]
    co = compute_optimal(p["A"], p["B"], p["alpha"], p["beta"])
    assert pred["n_opt"] == pytest.approx(float(co.n_opt(1.8e10)), rel=1e-6)
    # the model rule's shape nearest N_opt, trained on D = C / 6N of its exact N
    n = count_params(spec.model).non_embedding
    assert pred["n_params"] == n and abs(spec.n_tokens - 1.8e10 / (6 * n)) <= 32
    lo, hi = pred["predicted_loss_ci95"]
    assert lo < pred["predicted_loss"] < hi
    assert spec.flops_budget == pred["budget_flops"] and spec.train == exp.train


@pytest.mark.slow
def test_validation_json_and_reproduce_check_it(grid: Path, tmp_path: Path) -> None:
    exp = load_experiment(grid)
    _, pred = validation_spec(exp, 3.0)
    root = exp.results_path
    inside = (pred["predicted_loss_ci95"][0] + pred["predicted_loss"]) / 2
    record = validation_record(pred, {"status": "done", "val_loss": inside})
    doc = json.loads(write_validation(root, record).read_text())
    assert doc["within_interval"] is True and doc["measured_loss"] == inside
    ok, report = reproduce_path(root, replot=False)
    assert ok and "prediction recomputed, the same" in report
    doc["predicted_loss"] *= 1.01  # edited: the stored fit no longer gives it
    (root / "validation.json").write_text(json.dumps(doc))
    ok, report = reproduce_path(root, replot=False)
    assert not ok and "validation.json predicted_loss" in report
    (root / "validation.json").unlink()


@pytest.mark.slow
def test_bad_factor_and_no_fit_are_one_line(grid: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--factor 1.0; accepted: a number > 1"):
        validation_spec(load_experiment(grid), 1.0)
    toml = tmp_path / "none.toml"
    toml.write_text(grid.read_text().replace(str(grid.parent / "results"), str(tmp_path)))
    proc = harness_cli("validate", str(toml))
    assert proc.returncode == 2 and "no runs.csv" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
