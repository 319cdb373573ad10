"""Chinchilla's approach 1 (Hoffmann et al. 2022, section 3.1) from final losses: at each
isoFLOP budget the lowest-loss size gives N_opt(C), then N_opt = k C^a and D_opt = k' C^b by
least squares in log-log space (`isoflop.fit_approach1`). N_opt lies on the grid's sizes;
Hoffmann et al. read the envelope off every run's training curve instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.analysis import isoflop as iso
from harness.analysis.common import fmt
from harness.analysis.registry.base import Frame, Law, head
from harness.errors import InputError

NO_BUDGETS = (
    "the runs form no compute budgets (no flops_budget column and no 2 budgets with 3 or more "
    "model sizes)"
)


def allocation_summary(name: str, block: Mapping[str, Any]) -> list[str]:
    """N_opt ∝ C^a (with its interval when bootstrapped), D_opt ∝ C^b, over how many budgets."""
    und = block.get("determined") is False
    ci = block.get("ci95", {}) if not und else {}
    a = f"a={fmt(block['a'])}" + (f" [{fmt(ci['a'][0])}, {fmt(ci['a'][1])}]" if "a" in ci else "")
    lines = [
        head(name)
        + f"N_opt ∝ C^a: {a}  D_opt ∝ C^b: b={fmt(block['b'])}  ({len(block['budgets'])} budgets)"
    ]
    if und:
        lines.append(head("") + f"NOT DETERMINED by these data: {block['undetermined_reason']}")
    return lines


def _fit(f: Frame) -> dict[str, Any]:
    if f.budget is None:
        raise InputError(f"approach 1: {NO_BUDGETS}")
    return allocation_block(iso.fit_approach1(f.N, f.D, f.L, f.budget))


def allocation_block(r: iso.IsoflopResult) -> dict[str, Any]:
    """Per budget N_opt, D_opt and the loss there, and the exponents of N_opt and D_opt in C."""
    return {
        "budgets": list(r.budgets),
        "n_opt": list(r.n_opt),
        "d_opt": list(r.d_opt),
        "loss_opt": list(r.loss_opt),
        "a": r.a,
        "b": r.b,
    }


LAW = Law("approach1", _fit, summary=allocation_summary)
