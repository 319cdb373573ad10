"""Data-constrained scaling (Muennighoff et al. 2023, eq. 5-7): repeated tokens and parameters
beyond what the unique data can use are worth less; the law replaces N and D in approach 3 by
their effective values N' and D', with the half-lives R_N* and R_D* (`dataconstrained`).

Made by default only for runs that repeat data; R_N* or R_D* is undetermined (and has no
interval) when no run's prediction depends on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis import dataconstrained as dc
from harness.analysis.registry.base import (
    Figures,
    Frame,
    Law,
    fitted_range,
    head,
    law_block,
    param_summary,
)
from harness.errors import InputError


def _source(f: Frame) -> str:
    return str(f.df.attrs.get("path", "runs.csv"))


def _applies(f: Frame) -> bool:
    return dc.has_repeats(f.df, _source(f))


def _fit(f: Frame) -> dict[str, Any]:
    src = _source(f)
    U = dc.unique_tokens_of(f.df, src)
    if U is None:
        raise InputError(
            f"{src}: data-constrained fit: no n_unique_tokens or epochs column; "
            "accepted: runs.csv of `harness run`, or a CSV with one of them"
        )
    N, D, L = f.N, f.D, f.L
    r = dc.fit_data_constrained(N, D, U, L)
    boots, n_failed = ([], 0)
    if f.n_bootstrap:
        boots, n_failed = dc.bootstrap_data_constrained(
            N, D, U, L, r, n_resamples=f.n_bootstrap, rng=f.rng("data_constrained")
        )
    block = law_block(
        f,
        "data_constrained",
        r,
        boots,
        n_failed,
        fitted_range(n_params=f.N, n_tokens=f.D, flops=f.C),
    )
    n_rep, n_exc = dc.repeat_counts(N, D, U, r.params)
    block.update(n_repeated=n_rep, n_excess_params=n_exc, source="Muennighoff et al. 2023, eq. 5-7")
    for k in dc.undetermined(N, D, U, r.params):
        # No run's prediction depends on it: its value is wherever the optimizer left it
        # (kept, the law's predictions use it), and it has no interval.
        block["ci95"][k] = [float("nan"), float("nan")]
    return block


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    # The undetermined half-lives are named in the line of counts, not as a separate line.
    lines = param_summary(name, {**block, "undetermined": {}})
    und = ", ".join(block["undetermined"]) or "none"
    lines.append(
        head("") + f"{block['n_repeated']} runs repeat data, {block['n_excess_params']} have "
        f"N > N_opt(U); undetermined: {und}"
    )
    return lines


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    from harness.analysis import dataconstrained_plots

    return dataconstrained_plots.write_data_constrained_figures(
        fig.df, fig.fits, fig.out_dir, suffix=fig.suffix
    )


LAW = Law("data_constrained", _fit, applies=_applies, summary=_summary, figures=_figures)
