"""Scaling-law analysis: runs.csv -> fits.json and figures (numpy/scipy/pandas/matplotlib only).

Modules: `io` (load_runs), `laws` (formulas), `optim` (batched L-BFGS), `fit` (Chinchilla,
Kaplan, power laws, bootstraps), `isoflop` (approaches 1 and 2), `plots`, `report` (fit_path,
plot_path, reproduce_path, summarize), `cli` (subcommands).
"""

from harness.analysis.fit import (
    FitResult,
    GridEdgeWarning,
    bootstrap_chinchilla,
    fit_chinchilla,
    fit_kaplan,
    fit_power_law,
)
from harness.analysis.io import load_runs
from harness.analysis.laws import (
    chinchilla_loss,
    compute_optimal,
    kaplan_loss,
    power_law_with_offset,
    tokens_per_param,
)
from harness.analysis.report import fit_path, plot_path, summarize
from harness.analysis.reproduce import reproduce_path

__all__ = [
    "FitResult",
    "GridEdgeWarning",
    "bootstrap_chinchilla",
    "chinchilla_loss",
    "compute_optimal",
    "fit_chinchilla",
    "fit_kaplan",
    "fit_path",
    "fit_power_law",
    "kaplan_loss",
    "load_runs",
    "plot_path",
    "power_law_with_offset",
    "reproduce_path",
    "summarize",
    "tokens_per_param",
]
