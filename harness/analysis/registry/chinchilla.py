"""Chinchilla's approach 3: L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

Fitted as the Epoch AI replication fits it (`fit.fit_chinchilla`: Huber loss on log residuals,
L-BFGS from the 4500 starts of Hoffmann et al.'s grid), with a bootstrap over runs. The law
every other part builds on: the compute-optimal allocation, the downstream stage's step 1, and
the lines of the loss figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis import fit as fitmod
from harness.analysis.registry.base import Figures, Frame, Law, fitted_range, law_block, usable


def _fit(f: Frame) -> dict[str, Any]:
    chin = fitmod.fit_chinchilla(f.N, f.D, f.L)
    boots: list[dict[str, float]] = []
    n_failed = 0
    if f.n_bootstrap:
        boots, n_failed = fitmod.bootstrap_chinchilla(
            f.N, f.D, f.L, chin, n_resamples=f.n_bootstrap, rng=f.rng("chinchilla")
        )
    f.shared["chinchilla"] = fitmod.Bootstrapped(chin, boots, n_failed, len(f.N))
    return law_block(
        f, "chinchilla", chin, boots, n_failed, fitted_range(n_params=f.N, n_tokens=f.D, flops=f.C)
    )


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    """Loss against N and against D (with the law's lines and bootstrap bands when fitted), the
    loss over an N x D grid, and, fitted, the residuals and the contour plot of L(N, D)."""
    from harness.analysis import plots

    block = usable(block)
    params = dict(block["params"]) if block and block.get("params") else None
    samples = fig.samples.get("chinchilla")
    und = bool(block and block.get("determined") is False)
    out = plots.save_figure(
        plots.plot_loss_vs_n(plots.new_axes(), fig.df, params, fig.floor, samples, und),
        fig.out_dir / f"loss_vs_n{fig.suffix}",
    )
    out += plots.save_figure(
        plots.plot_loss_vs_d(plots.new_axes(), fig.df, params, fig.floor, samples, und),
        fig.out_dir / f"loss_vs_d{fig.suffix}",
    )
    if plots.is_full_grid(fig.df):  # an isoFLOP grid fills one diagonal: no heat map
        out += plots.save_figure(
            plots.plot_loss_heatmap(plots.new_axes(), fig.df),
            fig.out_dir / f"loss_grid{fig.suffix}",
        )
    if params is not None:
        out += plots.save_figure(
            plots.plot_residuals(plots.new_axes(), fig.df, params),
            fig.out_dir / f"residuals{fig.suffix}",
        )
        out += plots.save_figure(
            plots.plot_contour(plots.new_axes((6.4, 4.8)), fig.df, params),
            fig.out_dir / f"contour{fig.suffix}",
        )
    return out


# Required by default: a CSV that cannot support the joint fit is bad input, unless the runs
# sweep lr or batch size at too few (N, D) points, where the sweeps are what is fitted.
# Required unless the runs sweep lr or batch (the sweeps are the point) or carry learning curves
# (one long run per size: the curve laws stand in for a grid of final losses).
LAW = Law("chinchilla", _fit, required=lambda f: not f.swept and not f.curves, figures=_figures)
