"""Scaling-law analysis: runs.csv -> fits.json and figures (numpy/scipy/pandas/matplotlib only).

Modules: `io` (load_runs), `laws` (formulas), `optim` (batched L-BFGS), `fit` (Chinchilla,
Kaplan, power laws, bootstraps), `registry` (every law and companion of fits.json), `isoflop`
(approaches 1 and 2), `plots`; the steps: `fitting` (`harness fit`: fit_path, summarize),
`drawing` (`harness plot`: plot_path), `report` (`harness report`: the HTML page), `reproduce`
(`harness reproduce`), `predict`; `cli` (subcommands).
"""

from harness.analysis.drawing import plot_path
from harness.analysis.fit import (
    FitResult,
    GridEdgeWarning,
    bootstrap_chinchilla,
    fit_chinchilla,
    fit_kaplan,
    fit_power_law,
)
from harness.analysis.fitting import fit_path, summarize
from harness.analysis.io import load_runs
from harness.analysis.laws import (
    chinchilla_loss,
    compute_optimal,
    kaplan_loss,
    power_law_with_offset,
    tokens_per_param,
)
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
