"""The one-variable laws L(x) = E + A x^-alpha in N, D and C (Kaplan et al. 2020, eq. 1.1-1.3,
with an offset E for the irreducible loss).

L(N) is fitted on the runs at the D with the most sizes (ties: the largest), L(D) at the N with
the most budgets; with fewer than 4 values there, on the frontier (the lowest loss at each
value). L(C) on the lowest loss per isoFLOP budget, or else on the compute envelope: the runs
better than every cheaper run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import fit as fitmod
from harness.analysis.registry.base import Frame, Law, fitted_range, law_block


def one_variable_slice(df: pd.DataFrame, fixed: str, var: str) -> tuple[pd.DataFrame, str]:
    """Rows for a one-variable law in `var`: at the `fixed` value with the most distinct `var`
    values (ties: the largest), else the frontier (lowest loss at each `var` value)."""
    best = None
    for v, g in df.groupby(fixed):
        k = g[var].nunique()
        if k >= 4 and (best is None or (k, v) >= (best[0], best[1])):
            best = (k, v, g)
    if best is not None:
        return best[2], f"{fixed}={best[1]:.6g}"
    front = df.loc[df.groupby(var)["loss"].idxmin()]
    return front, "frontier: lowest loss at each " + var


def compute_envelope(C: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Indices of the compute envelope: runs with lower loss than every cheaper run."""
    order = np.argsort(C, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if L[i] < best:
            keep.append(i)
            best = L[i]
    return np.array(keep, dtype=int)


def _power_law(f: Frame, name: str, x: np.ndarray, y: np.ndarray, data: str) -> dict[str, Any]:
    r = fitmod.fit_power_law(x, y, name=name)
    boots, n_failed = ([], 0)
    if f.n_bootstrap:
        boots, n_failed = fitmod.bootstrap_power_law(
            x, y, r, n_resamples=f.n_bootstrap, rng=f.rng(name)
        )
    column = {"power_law_n": "n_params", "power_law_d": "n_tokens", "power_law_c": "flops"}[name]
    block = law_block(f, name, r, boots, n_failed, fitted_range(**{column: x}))
    block["data"] = data
    return block


def _fit_n(f: Frame) -> dict[str, Any]:
    sub, data = one_variable_slice(f.df, "n_tokens", "n_params")
    return _power_law(f, "power_law_n", sub["n_params"].to_numpy(), sub["loss"].to_numpy(), data)


def _fit_d(f: Frame) -> dict[str, Any]:
    sub, data = one_variable_slice(f.df, "n_params", "n_tokens")
    return _power_law(f, "power_law_d", sub["n_tokens"].to_numpy(), sub["loss"].to_numpy(), data)


def _fit_c(f: Frame) -> dict[str, Any]:
    if f.budget is not None:
        b, L = f.budget, f.L
        idx = np.array([np.flatnonzero(b == c)[np.argmin(L[b == c])] for c in np.unique(b)])
        x, data = b[idx], "lowest loss per compute budget"
    else:
        idx = compute_envelope(f.C, f.L)
        x, data = f.C[idx], "compute envelope (runs better than every cheaper run)"
    return _power_law(f, "power_law_c", x, f.L[idx], data)


LAW_N = Law("power_law_n", _fit_n)
LAW_D = Law("power_law_d", _fit_d)
LAW_C = Law("power_law_c", _fit_c)
