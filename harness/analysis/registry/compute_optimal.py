"""The compute-optimal allocation implied by approach 3 (Hoffmann et al. 2022, eq. 4).

N_opt(C) = G (C/6)^a and D_opt(C) = (C/6)^b / G with a = beta / (alpha + beta), b = 1 - a, at
decade budgets, with bootstrap intervals from the Chinchilla fit's resamples and the fit's
numerical precision propagated to every quantity.

It is only as good as the fit: a quantity is undetermined where a parameter it needs is, the
whole block where the Chinchilla law is (its bootstrap mostly failed) or where its fit ran a
parameter off to infinity; and each budget states how many decades of compute it lies beyond
the runs (`extrapolation`), flagged past the stated limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import ci95, fmt
from harness.analysis.extrapolation import EXTRAPOLATION_DECADES_MAX, decades_beyond
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


_QUANTITIES = ("a", "b", "G", "n_opt", "d_opt", "tokens_per_param")


def _undetermined_block(reason: str, chin_block: Mapping[str, Any]) -> dict[str, Any]:
    """Every quantity undetermined, with no value: what a fit that ran off gives."""
    keys = [f"{c:.0e}" for c in COMPUTE_BUDGETS]
    per_budget = dict.fromkeys(keys)
    return {
        "a": None,
        "b": None,
        "G": None,
        "n_opt": dict(per_budget),
        "d_opt": dict(per_budget),
        "tokens_per_param": dict(per_budget),
        "ci95": {},
        "undetermined": dict.fromkeys(_QUANTITIES, reason),
        "determined": False,
        "undetermined_reason": reason,
        "source": "chinchilla approach 3, Hoffmann et al. 2022 eq. 4",
    }


def _fit(f: Frame) -> dict[str, Any]:
    if "chinchilla" not in f.shared:
        raise InputError("--fits compute_optimal needs chinchilla too")
    step1 = f.shared["chinchilla"]
    chin = step1.fit
    chin_block = f.blocks["chinchilla"]
    chin_und = chin_block["undetermined"]
    bad = {k: v for k, v in chin.params.items() if k != "E" and not (np.isfinite(v) and v > 0)}
    if bad:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
        if any(k in chin_und for k in bad) or chin_block.get("determined") is False:
            # A parameter that ran off (A = inf on one CPU, 1e188 on another) is undetermined,
            # and so is all that is built on it: the same verdict on every CPU.
            block = _undetermined_block(f"chinchilla {shown}, undetermined by the data", chin_block)
        else:
            # A determined fit with loss rising in N or D (alpha or beta <= 0) has no optimum.
            return {"skipped": f"chinchilla fit has no compute optimum ({shown})"}
    else:
        block = compute_optimal_block(chin, step1.boots, chin_und)
        if chin_block.get("determined") is False:
            why = f"chinchilla: {chin_block.get('undetermined_reason', 'not determined')}"
            block["undetermined"] = dict.fromkeys(_QUANTITIES, why)
            block["determined"] = False
            block["undetermined_reason"] = why
    # The law's verdict rides along: reproduce decides a flip of `determined` within Monte
    # Carlo error of the failure threshold from these counts, as for the law itself.
    block["n_bootstrap"] = chin_block.get("n_bootstrap", 0)
    block["n_bootstrap_failed"] = chin_block.get("n_bootstrap_failed", 0)
    lo, hi = chin_block.get("fitted_range", {}).get("flops", [float(f.C.min()), float(f.C.max())])
    block["extrapolation_decades"] = {
        f"{c:.0e}": decades_beyond(c, lo, hi) for c in COMPUTE_BUDGETS
    }
    return block


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    tpp = block["tokens_per_param"]
    ext = block.get("extrapolation_decades", {})
    und = block.get("undetermined", {})
    if block.get("determined") is False or "tokens_per_param" in und:
        why = block.get("undetermined_reason") or und.get("tokens_per_param", "")
        return [head(name) + f"NOT DETERMINED by these data ({why}); no allocation is given"]

    def cell(k: str, v: Any) -> str:
        d = ext.get(k)
        far = d is not None and d > EXTRAPOLATION_DECADES_MAX
        return f"{k}: {fmt(v)}" + (f" (EXTRAPOLATED {d:.1f} decades)" if far else "")

    return [
        head(name)
        + f"a={fmt(block['a'])} b={fmt(block['b'])}  tokens/param: "
        + ", ".join(cell(k, v) for k, v in tpp.items())
    ]


LAW = Law("compute_optimal", _fit, applies=lambda f: "chinchilla" in f.shared, summary=_summary)
