"""`harness validate EXP.toml`: check a fitted law by training what it predicts.

A scaling law is fitted to decide something; the check of the decision is to train the model
it calls compute-optimal at a budget beyond the grid, and compare the loss with the prediction
and its interval (Marin's scaling ladder runs this check). The budget is ``factor`` times the
grid's largest run (6 N D); N_opt comes from the fitted Chinchilla law (Hoffmann et al. 2022,
eq. 4, `analysis.predict`); the shape is the model rule's nearest to N_opt, and D = C / (6 N)
for its exact N, so the loss is predicted again at the (N, D) actually trained. Every other
setting is the experiment's. The run trains under ``RESULTS/NAME/validation/`` (not in the
grid's runs.csv) and the outcome is stored in ``RESULTS/NAME/validation.json``, which
`harness reproduce` checks against the stored fit (`analysis.reproduce.check_validation`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness import __version__
from harness.analysis.common import inside
from harness.analysis.io import load_runs
from harness.analysis.predict import load_law, predict, predict_optimal
from harness.atomic import atomic_write_json
from harness.config import ExperimentConfig
from harness.errors import InputError
from harness.flops import tokens_for_flops, training_flops
from harness.grid import RunSpec, resolve_n_tokens, shape_for_target
from harness.model import count_params

__all__ = ["VALIDATION_JSON", "validation_record", "validation_spec", "write_validation"]

VALIDATION_JSON = "validation.json"


def validation_spec(exp: ExperimentConfig, factor: float) -> tuple[RunSpec, dict[str, Any]]:
    """The run that checks the experiment's fitted law at ``factor`` x its largest budget, and
    the prediction for it.

    Raises
    ------
    InputError
        No fitted grid (runs.csv, fits.json with its samples), or a factor <= 1.
    """
    if not (math.isfinite(factor) and factor > 1):
        raise InputError(f"--factor {factor}; accepted: a number > 1 (a budget beyond the grid)")
    root = exp.results_path
    csv = root / "runs.csv"
    if not csv.is_file():
        raise InputError(f"{csv}: no runs.csv; train and fit the grid first (`harness run`)")
    done = load_runs(csv)  # its done runs, checked as `harness fit` checks them
    if done.empty:
        raise InputError(f"{csv}: no done run to take the grid's largest budget from")
    grid_max = float(training_flops(done["n_params"].astype(float), done["n_tokens"]).max())
    budget = factor * grid_max
    law = load_law(root, "chinchilla")
    (optimum,) = predict_optimal(law, [budget])
    shape = shape_for_target(exp, max(1, round(optimum["n_opt"])), "--factor")
    n = count_params(shape).non_embedding
    d = resolve_n_tokens(tokens_for_flops(budget, n), exp.data.seq_len)
    parametrization = exp.model.parametrization_settings()
    parametrization.check_shape(shape, f"the validation model {shape.n_layer} x {shape.n_embd}")
    spec = RunSpec(
        experiment=exp.name,
        model=shape,
        data=exp.data,
        train=exp.train,
        n_tokens=d,
        seed=exp.grid.seeds[0],
        flops_budget=budget,
        parametrization=parametrization,
        eval=exp.eval,
    )
    (at_trained,) = predict(law, [n], [d])
    prediction = {
        "law": "chinchilla",
        "factor": factor,
        "grid_max_flops": grid_max,
        "budget_flops": budget,
        "n_opt": optimum["n_opt"],
        "n_opt_ci95": optimum["n_opt_ci95"],
        "d_opt": optimum["d_opt"],
        "d_opt_ci95": optimum["d_opt_ci95"],
        "run_id": spec.run_id,
        "n_params": n,
        "n_tokens": d,
        "shape": f"{shape.n_layer}x{shape.n_embd}",
        "predicted_loss": at_trained["loss"],
        "predicted_loss_ci95": at_trained["loss_ci95"],
        "undetermined": law.undetermined,
    }
    return spec, prediction


def validation_record(prediction: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """validation.json's content: the prediction, the measured loss, whether the interval held,
    and the relative error of the point prediction."""
    measured = result.get("val_loss")
    return {
        "schema": 1,
        **prediction,
        "status": result.get("status"),
        "measured_loss": measured,
        "within_interval": inside(measured, prediction["predicted_loss_ci95"]),
        "relative_error": None
        if measured is None
        else (measured - prediction["predicted_loss"]) / prediction["predicted_loss"],
        "harness_version": __version__,
    }


def write_validation(root: Path, record: dict[str, Any]) -> Path:
    """Write `validation_record` atomically as RESULTS/NAME/validation.json."""
    return atomic_write_json(root / VALIDATION_JSON, record)
