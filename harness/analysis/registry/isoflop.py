"""Chinchilla's approach 2, isoFLOP profiles (Hoffmann et al. 2022, section 3.2): at each budget,
the minimum of loss over log N (a parabola through the points around the lowest loss, or an
Akima interpolant of log loss as Porian et al. 2024 do; `isoflop.fit_isoflop`) gives N_opt(C)
and D_opt(C) = C / (6 N_opt); then N_opt = k C^a and D_opt = k' C^b, with a bootstrap over runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis import identify
from harness.analysis import isoflop as iso
from harness.analysis.common import ci95
from harness.analysis.identify import failure_verdict
from harness.analysis.registry.approach1 import NO_BUDGETS, allocation_block, allocation_summary
from harness.analysis.registry.base import Figures, Frame, Law, usable
from harness.errors import InputError


def _fit(f: Frame) -> dict[str, Any]:
    if f.budget is None:
        raise InputError(f"isoFLOP (approach 2): {NO_BUDGETS}")
    r = iso.fit_isoflop(f.N, f.L, f.budget, minimum=f.isoflop_minimum)  # type: ignore[arg-type]
    block: dict[str, Any] = {
        **allocation_block(r),
        "log_k_n": r.log_k_n,
        "log_k_d": r.log_k_d,
        "skipped_budgets": list(r.skipped),
        "minimum": r.minimum,
        "ci95": {},
        "n_bootstrap": f.n_bootstrap,
        "n_bootstrap_failed": 0,
    }
    if f.n_bootstrap:
        a, b, n_failed = iso.bootstrap_isoflop(
            f.N, f.L, r, n_resamples=f.n_bootstrap, rng=f.rng("isoflop")
        )
        block["ci95"] = {"a": ci95(a), "b": ci95(b)}
        block["ci95_mc_se"] = {"a": identify.interval_se(a), "b": identify.interval_se(b)}
        block["n_bootstrap_failed"] = n_failed
        block.update(failure_verdict(n_failed, f.n_bootstrap, "resamples left fewer than 2 "
                                     "budgets with a minimum"))  # fmt: skip
    return block


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    """The isoFLOP profiles (with each budget's fitted minimum) and the optima against C."""
    from harness.analysis import plots

    budget = iso.budget_column(fig.df)
    if budget is None:
        return []
    block = usable(block)
    out = plots.save_figure(
        plots.plot_isoflop(plots.new_axes(), fig.df, budget, block),
        fig.out_dir / f"isoflop{fig.suffix}",
    )
    if block is not None:
        out += plots.save_figure(
            plots.plot_optimal(plots.new_axes(), block), fig.out_dir / f"optimal{fig.suffix}"
        )
    return out


LAW = Law("isoflop", _fit, summary=allocation_summary, figures=_figures)
