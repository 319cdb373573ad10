"""Figures of repeated-data runs (Muennighoff et al. 2023): effective data against epochs, and
loss against epochs per unique-token budget. Same conventions as `plots` (draw on a given Axes,
return the Figure, deterministic files through `plots.save_figure`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis import dataconstrained as dc
from harness.analysis.plots import colours, figure_of, new_axes, save_figure
from harness.errors import InputError
from harness.units import si

__all__ = ["plot_effective_data", "plot_loss_vs_epochs", "write_data_constrained_figures"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _frame(df: pd.DataFrame, U: np.ndarray) -> pd.DataFrame:
    D = df["n_tokens"].to_numpy(dtype=float)
    UD = np.minimum(U, D)
    return pd.DataFrame(
        {
            "N": df["n_params"].to_numpy(dtype=float),
            "D": D,
            "U": UD,
            "epochs": D / UD,
            "loss": df["loss"].to_numpy(dtype=float),
        }
    )


def _usable(params: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in params.items()}


def _effective_epochs(x: np.ndarray, r: float) -> np.ndarray:
    """D'/U after x = D/U epochs: 1 + R_D* (1 - exp(-(x - 1)/R_D*)) (Muennighoff et al. 2023,
    eq. 5-6, divided by U)."""
    return 1.0 + r * -np.expm1(-(x - 1.0) / r)


def plot_effective_data(
    ax: Axes,
    df: pd.DataFrame,
    U: np.ndarray,
    params: Mapping[str, Any],
    ci: Mapping[str, Any] | None = None,
) -> Figure:
    """Effective data D' / U_D against epochs D / U_D: the fitted curve (with the 95% interval
    of R_D*), the line D' = D (repeated tokens worth as much as new), the published C4 curve,
    and each run's implied D' (the D' at which the fitted law gives its observed loss).

    Parameters
    ----------
    ax : Axes
    df : pandas.DataFrame
        Runs (n_params, n_tokens, loss).
    U : ndarray
        Unique tokens per run (`dataconstrained.unique_tokens_of`).
    params : mapping
        Fitted E, A, B, alpha, beta, R_D_star, R_N_star.
    ci : mapping, optional
        The fit's ci95 (R_D_star drawn as a band).

    Returns
    -------
    Figure
    """
    p = _usable(params)
    f = _frame(df, U)
    rd = p["R_D_star"]
    x = np.geomspace(1.0, max(2.0, f["epochs"].max() * 2.0), 200)
    ax.plot(x, x, "-", color="0.5", lw=1, label="D' = D (repeats worth as much as new)")
    lo_hi = (ci or {}).get("R_D_star")
    if lo_hi and None not in lo_hi:
        lo, hi = (_effective_epochs(x, r) for r in lo_hi)
        ax.fill_between(
            x,
            lo,
            hi,
            color="C0",
            alpha=0.2,
            lw=0,
            label=f"R_D* 95% interval [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]",
        )
    ax.plot(
        x,
        _effective_epochs(x, rd),
        "-",
        color="C0",
        lw=1.5,
        label=f"fitted: R_D* = {rd:.3g}",
    )
    ax.axhline(1.0 + rd, color="C0", ls=":", lw=0.8, label="limit U (1 + R_D*)")
    pub = dc.MUENNIGHOFF_2023["R_D_star"]
    ax.plot(
        x,
        _effective_epochs(x, pub),
        "--",
        color="k",
        lw=0.8,
        label=f"Muennighoff et al. 2023 (C4): R_D* = {pub:.3g}",
    )
    implied = dc.implied_effective_data(f["N"], f["D"], f["U"], f["loss"], p) / f["U"]
    us, ns = np.unique(f["U"]), np.unique(f["N"])
    for u, color in colours(us, "D").items():
        for marker, n in zip(_MARKERS * (ns.size // len(_MARKERS) + 1), ns, strict=False):
            sel = (f["U"] == u) & (f["N"] == n) & np.isfinite(implied)
            if sel.any():
                ax.plot(
                    f["epochs"][sel],
                    implied[sel],
                    marker,
                    color=color,
                    ms=4,
                    ls="none",
                    label=f"runs: U={si(u)}, N={si(n)}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs D / U")
    ax.set_ylabel("effective data D' / U")
    ax.set_title("value of repeated data (points: D' implied by each run's loss)")
    ax.legend(fontsize=6)
    return figure_of(ax)


def plot_loss_vs_epochs(
    ax: Axes, df: pd.DataFrame, U: np.ndarray, params: Mapping[str, Any] | None = None
) -> Figure:
    """Loss against epochs, one colour per unique-token budget U and one marker per N, with the
    fitted data-constrained law along each (U, N).

    Returns
    -------
    Figure
    """
    f = _frame(df, U)
    p = _usable(params) if params else None
    us, ns = np.unique(f["U"]), np.unique(f["N"])
    for u, color in colours(us, "D").items():
        for marker, n in zip(_MARKERS * (ns.size // len(_MARKERS) + 1), ns, strict=False):
            g = f[(f["U"] == u) & (f["N"] == n)].sort_values("epochs")
            if not len(g):
                continue
            ax.plot(
                g["epochs"], g["loss"], marker, color=color, ms=4, label=f"U={si(u)}, N={si(n)}"
            )
            if p is not None:
                e = np.geomspace(max(g["epochs"].min(), 1.0), g["epochs"].max() * 1.3, 80)
                ax.plot(e, dc.data_constrained_loss(n, u * e, u, **p), "-", color=color, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("epochs D / U")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("loss vs epochs" + (" (lines: fitted data-constrained law)" if p else ""))
    if len(ax.get_lines()) <= 24:  # beyond that a legend hides the figure
        ax.legend(fontsize=6)
    return figure_of(ax)


def write_data_constrained_figures(
    df: pd.DataFrame,
    fits: Mapping[str, Any] | None,
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "",
) -> list[Path]:
    """effective_data and loss_vs_epochs (PNG and SVG) for runs that repeat data; none else.

    The fitted law comes from ``fits["data_constrained"]`` (never fitted here: without it
    only the runs are drawn). A bad unique-token column draws nothing (the fit reports it).

    Returns
    -------
    list of pathlib.Path
    """
    try:
        U = dc.unique_tokens_of(df)
        if U is None or not dc.has_repeats(df):
            return []
    except InputError:
        return []
    block = (fits or {}).get("data_constrained")
    params: Mapping[str, Any] | None = None
    ci: Mapping[str, Any] | None = None
    if block is not None and "params" in block:
        params, ci = block["params"], block.get("ci95")
    if params is not None and params.get("R_D_star") is None:
        params = None  # no run repeats data: nothing to draw a curve from
    out_dir = Path(out_dir)
    written = save_figure(
        plot_loss_vs_epochs(new_axes(), df, U, params), out_dir / f"loss_vs_epochs{suffix}"
    )
    if params is not None:
        written += save_figure(
            plot_effective_data(new_axes(), df, U, params, ci), out_dir / f"effective_data{suffix}"
        )
    return written
