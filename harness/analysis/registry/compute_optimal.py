"""The compute-optimal allocation implied by approach 3 (Hoffmann et al. 2022, eq. 4).

N_opt(C) = G (C/6)^a and D_opt(C) = (C/6)^b / G with a = beta / (alpha + beta), b = 1 - a, at
decade budgets, with bootstrap intervals from the Chinchilla fit's resamples and the fit's
numerical precision propagated to every quantity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import ci95, fmt
from harness.analysis.laws import compute_optimal
from harness.analysis.registry.base import Frame, Law, head
from harness.errors import InputError

COMPUTE_BUDGETS: tuple[float, ...] = (1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24)
"""Budgets (FLOPs) at which compute_optimal reports N_opt, D_opt and tokens per parameter."""


def _leafwise(f: Any, *trees: Any) -> Any:
    """f applied leaf by leaf to nested dicts of one shape (or to plain values)."""
    if isinstance(trees[0], Mapping):
        return {k: _leafwise(f, *(t[k] for t in trees)) for k in trees[0]}
    return f(*trees)


def compute_optimal_block(
    chin: fitmod.FitResult,
    boots: Sequence[Mapping[str, float]],
    chin_undetermined: Mapping[str, str],
) -> dict[str, Any]:
    """N_opt, D_opt and tokens per parameter at COMPUTE_BUDGETS from a Chinchilla fit, with
    bootstrap intervals, their Monte Carlo errors, and the numerical precision propagated from
    the fit's (a quantity is undetermined when a parameter it depends on is)."""
    keys = [f"{c:.0e}" for c in COMPUTE_BUDGETS]
    budgets = list(zip(keys, COMPUTE_BUDGETS, strict=True))

    def values(p: Mapping[str, float]) -> dict[str, Any]:
        co = compute_optimal(p["A"], p["B"], p["alpha"], p["beta"])
        return {
            "a": co.a,
            "b": co.b,
            "G": co.G,
            "n_opt": {k: float(co.n_opt(c)) for k, c in budgets},
            "d_opt": {k: float(co.d_opt(c)) for k, c in budgets},
            "tokens_per_param": {k: float(co.tokens_per_param(c)) for k, c in budgets},
        }

    block = values(chin.params)
    cos = [
        values(b) for b in boots if all(np.isfinite(v) and v > 0 for k, v in b.items() if k != "E")
    ]
    ci: dict[str, Any] = {}
    se: dict[str, Any] = {}
    if cos:
        for k in ("a", "b"):
            ci[k] = ci95(c[k] for c in cos)
            se[k] = identify.interval_se([c[k] for c in cos])
        ci["tokens_per_param"] = {b: ci95(c["tokens_per_param"][b] for c in cos) for b in keys}
        se["tokens_per_param"] = {
            b: identify.interval_se([c["tokens_per_param"][b] for c in cos]) for b in keys
        }
    # a = beta/(alpha+beta) and b need only the exponents; the rest all four parameters.
    deps = {k: ("alpha", "beta") if k in ("a", "b") else ("A", "B", "alpha", "beta") for k in block}
    # First-order propagation of each parameter's precision (independent worst cases added in
    # quadrature); a quantity depending on a parameter of infinite precision gets it too.
    moved = {
        p: values({**chin.params, p: chin.params[p] + chin.precision[p]})
        for p in ("A", "B", "alpha", "beta")
        if math.isfinite(chin.precision.get(p, math.inf))
    }
    prec: dict[str, Any] = {}
    for k, value in block.items():
        if any(p not in moved for p in deps[k]):
            prec[k] = _leafwise(lambda v: math.inf, value)
            continue
        sq = _leafwise(lambda v: 0.0, value)
        for p in deps[k]:
            sq = _leafwise(lambda s_, m, v: s_ + (m - v) ** 2, sq, moved[p][k], value)
        prec[k] = _leafwise(math.sqrt, sq)
    undetermined = {}
    for k in block:
        why = [f"chinchilla {p}: {chin_undetermined[p]}" for p in deps[k] if p in chin_undetermined]
        if why:
            undetermined[k] = "; ".join(why)
    return {
        **block,
        "ci95": ci,
        "ci95_mc_se": se,
        "precision": prec,
        "undetermined": undetermined,
        "source": "chinchilla approach 3, Hoffmann et al. 2022 eq. 4",
    }


def _fit(f: Frame) -> dict[str, Any]:
    if "chinchilla" not in f.shared:
        raise InputError("--fits compute_optimal needs chinchilla too")
    step1 = f.shared["chinchilla"]
    chin = step1.fit
    if not all(np.isfinite(v) and v > 0 for k, v in chin.params.items() if k != "E"):
        # A fit with loss rising in N or D (alpha or beta <= 0) has no compute optimum.
        bad = ", ".join(f"{k}={v:.4g}" for k, v in chin.params.items() if k != "E")
        return {"skipped": f"chinchilla fit has no compute optimum ({bad})"}
    return compute_optimal_block(chin, step1.boots, f.blocks["chinchilla"]["undetermined"])


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    tpp = block["tokens_per_param"]
    return [
        head(name)
        + f"a={fmt(block['a'])} b={fmt(block['b'])}  tokens/param: "
        + ", ".join(f"{k}: {fmt(v)}" for k, v in tpp.items())
    ]


LAW = Law("compute_optimal", _fit, applies=lambda f: "chinchilla" in f.shared, summary=_summary)
