"""What a law of the registry is: how it fits, when it applies, its summary and its figures.

Each module of this package defines one law (or a family of them, such as the three one-variable
power laws) as a `Law` and nothing else; `harness.analysis.registry.LAWS` lists them in the order
fits.json's summary prints them. `fit_frame` fits them all in one loop, and the figures are drawn
by one loop over the same list, from the blocks of fits.json alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import ci95, fmt, rng_for

__all__ = [
    "Beside",
    "BesideFigures",
    "Companion",
    "Figures",
    "Frame",
    "Law",
    "fitted_range",
    "head",
    "law_block",
    "param_summary",
    "usable",
]


@dataclass(frozen=True)
class Frame:
    """One set of runs, prepared once for every law of the registry."""

    df: pd.DataFrame
    """The runs the laws see: the best setting per (N, D) when the runs sweep lr or batch."""
    full: pd.DataFrame
    """Every run (the sweeps fit their own profiles)."""
    swept: tuple[str, ...]
    """The hyperparameter columns the runs sweep (`sweeps.swept_columns`)."""
    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    C: np.ndarray
    """C = 6 N D, FLOPs."""
    budget: np.ndarray | None
    """Each run's isoFLOP budget when the runs form isoFLOP profiles (`isoflop.budget_column`)."""
    seed: int
    label: str
    """The group's label, mixed into every law's random stream."""
    n_bootstrap: int
    isoflop_minimum: str
    heldout_quantile: float
    blocks: dict[str, Any] = field(default_factory=dict)
    """The blocks fitted so far, by name (a law may build on an earlier one)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """What a law leaves for later ones and for the caller, beyond its block (the Chinchilla fit
    with its bootstrap samples, as `fit.Bootstrapped`)."""
    curves: tuple[Any, ...] = ()
    """The runs' learning curves (`curves.Curve`) where their metrics.csv lie beside the CSV:
    what the loss-curve laws are fitted to."""
    curves_error: str = ""
    """Why the runs' metrics.csv did not read as curves, or "" (`fitting.fits_dict`)."""

    def rng(self, name: str) -> np.random.Generator:
        """The law's own random stream: adding a law never moves another's numbers."""
        return rng_for(self.seed, self.label + name)


@dataclass(frozen=True)
class Figures:
    """What a law's figures are drawn from: the runs and the blocks of fits.json, never a fit."""

    df: pd.DataFrame
    """The best setting per (N, D), as the laws saw them."""
    full: pd.DataFrame
    swept: tuple[str, ...]
    fits: Mapping[str, Any]
    """The "fits" object of fits.json (of the group, when grouped)."""
    out_dir: Path
    suffix: str
    """Appended to each file stem (per group)."""
    floor: float | None
    """The corpus' true entropy rate (synthetic corpora), dashed on loss figures."""
    samples: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    """The bootstrap's parameter samples {law: {param: array}} of fits.bootstrap.npz (of the
    group, when grouped): the bands around fitted curves. Empty without the file."""
    curves: tuple[Any, ...] = ()
    """The runs' learning curves (`curves.Curve`), for the loss-curve laws' figures."""


def _always(frame: Frame) -> bool:
    return True


def _never(frame: Frame) -> bool:
    return False


def _no_figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    return []


def head(name: str) -> str:
    """The summary's first column: the law's name, padded."""
    return f"{name:<16} "


def param_summary(name: str, block: Mapping[str, Any]) -> list[str]:
    """Parameters with their intervals, flags, and what the data do not determine."""
    # A law the data do not determine has no interval worth printing (built from the few
    # resamples that did not fail, they are far too narrow): its values only, then why.
    ci = block.get("ci95", {}) if block.get("determined") is not False else {}
    parts = []
    for k, v in block["params"].items():
        c = ci.get(k)
        parts.append(f"{k}={fmt(v)}" + (f" [{fmt(c[0])}, {fmt(c[1])}]" if c else ""))
    flag = "" if block.get("converged", True) else "  NOT CONVERGED"
    flag += "  ON GRID EDGE: " + ",".join(block["edge_params"]) if block.get("on_grid_edge") else ""
    lines = [head(name) + "  ".join(parts) + flag]
    if block.get("determined") is False:
        lines.append(
            head("") + f"NOT DETERMINED by these data: {block.get('undetermined_reason', '')}"
        )
    elif block.get("undetermined"):
        lines.append(
            head("")
            + "undetermined: "
            + "; ".join(f"{k} {why}" for k, why in block["undetermined"].items())
        )
    return lines


@dataclass(frozen=True)
class Law:
    """One law of the registry: a block of fits.json."""

    name: str
    fit: Callable[[Frame], dict[str, Any]]
    """The block; InputError when the data cannot support the law."""
    applies: Callable[[Frame], bool] = _always
    """Made by default (no --fits) only where this holds. May raise InputError, which reads
    as a skipped law by default and as bad input when the law is asked for by name."""
    required: Callable[[Frame], bool] = _never
    """A failure is bad input even by default (Chinchilla's law, unless the runs sweep)."""
    summary: Callable[[str, Mapping[str, Any]], list[str]] = param_summary
    """The summary's lines for a block that was not skipped."""
    figures: Callable[[Figures, Mapping[str, Any] | None], list[Path]] = _no_figures
    """The law's figures, from its block (None when fits.json holds none or a skipped one)."""


def usable(block: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The block when it holds a fit, None when absent or skipped."""
    return None if block is None or "skipped" in block else block


def fitted_range(**columns: np.ndarray | None) -> dict[str, list[float]]:
    """{column: [min, max]} of the runs a law was fitted on (n_params, n_tokens, flops): how far
    a prediction extrapolates is measured from it (`predict.extrapolation`)."""
    return {
        k: [float(np.min(v)), float(np.max(v))]
        for k, v in columns.items()
        if v is not None and np.size(v)
    }


def law_block(
    f: Frame,
    name: str,
    res: fitmod.FitResult,
    boots: list[dict[str, float]],
    n_failed: int,
    fitted: Mapping[str, list[float]] | None = None,
) -> dict[str, Any]:
    """A fitted law's block: its parameters, intervals and how far the data determine them.

    ``boots`` holds only the resamples an interval may be built from (`fit.kept_resamples`);
    ``n_failed`` counts the others. Their parameter samples are kept in
    ``f.shared["samples"]`` beside the block, so that fits.bootstrap.npz lets a prediction carry
    an interval without refitting. ``fitted`` is the range of the runs (`fitted_range`); the
    residual scatter (``residual_sd_log``, ``dof``) is what a prediction interval adds.
    """
    if boots:
        f.shared.setdefault("samples", {})[name] = {
            k: np.array([b[k] for b in boots], dtype=float) for k in boots[0]
        }
    n_boot = f.n_bootstrap
    out: dict[str, Any] = {
        "params": dict(res.params),
        "ci95": {k: ci95(b[k] for b in boots) for k in res.params} if boots else {},
        "objective": res.objective,
        "converged": res.converged,
        "message": res.message,
        "n_starts": res.n_starts,
        "n_points": res.n_points,
        "on_grid_edge": res.on_grid_edge,
        "edge_params": list(res.edge_params),
        "n_bootstrap": n_boot,
        "n_bootstrap_failed": n_failed,
        "residual_sd_log": res.residual_sd_log,
        "residual_sd_log_precision": res.residual_sd_log_precision,
        "dof": res.dof,
    }
    if fitted:
        out["fitted_range"] = dict(fitted)
    out.update(
        identify.law_fields(
            res.params, res.precision, res.undetermined, boots, out["ci95"], n_failed, n_boot
        )
    )
    return out


@dataclass(frozen=True)
class Beside:
    """What a companion analysis is fitted from: its table, the runs, and the fits so far."""

    table: pd.DataFrame
    """The companion's table, as its ``load`` read and checked it."""
    path: Path
    """Where the table lies (beside the runs CSV)."""
    runs: pd.DataFrame
    """The runs the laws were fitted on."""
    doc: dict[str, Any]
    """fits.json's object so far: its "input", "settings" and "fits" (or "groups"). A
    companion may record a setting of its own in "settings"."""
    chinchilla: Any
    """The Chinchilla fit of "fits" with its bootstrap samples (`fit.Bootstrapped`), or None
    (grouped fits, or the law skipped)."""
    observed_losses: Callable[[], pd.DataFrame]
    """Every done run of the CSV, N counted as the fit counts it: the losses a task's
    accuracy is paired with."""
    seed: int
    n_bootstrap: int
    target_accuracy: float | None
    samples: dict[str, Any]
    """Receives the companion's bootstrap samples, keyed as fits.bootstrap.npz keys them."""


@dataclass(frozen=True)
class BesideFigures:
    """What a companion's figures are drawn from: its table, the runs, and fits.json."""

    read_table: Callable[[], pd.DataFrame]
    """The companion's table, read (and checked) when a figure needs it."""
    runs: pd.DataFrame
    stored: Mapping[str, Any]
    """The whole fits.json object (None of the companion's when it was made before the table)."""
    samples: Mapping[str, Mapping[str, np.ndarray]]
    observed_losses: Callable[[], pd.DataFrame]
    out_dir: Path


@dataclass(frozen=True)
class Companion:
    """An analysis of another table beside the runs CSV (fine-tunes, task scores), chained on
    the laws of "fits": a sibling object of "fits" in fits.json, with its table's own "input"
    record, since grouped fits have no single "fits" and the table has its own hash."""

    name: str
    """Its object's key in fits.json."""
    file: str
    """The table's file name, beside the runs CSV."""
    load: Callable[[Path, str | None], pd.DataFrame]
    """(path, --where) -> the checked table; InputError on bad input, before any fit."""
    fit: Callable[[Beside], dict[str, Any]]
    """The object, its "input" record included."""
    summary: Callable[[Mapping[str, Any]], list[str]]
    """The summary's lines for the object."""
    figures: Callable[[BesideFigures], list[Path]]
    """Its figures, from fits.json (or fitted without intervals where fits.json has none)."""
