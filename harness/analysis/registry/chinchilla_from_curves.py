"""Chinchilla's L(N, D) fitted to the final losses each size's annealing law implies
(`curve_sizes`): approach 3 from one long run per size (issue 33). Made by default wherever
`anneal_curve` fitted two or more sizes whose runs recorded their schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.analysis import fit as fitmod
from harness.analysis.curve_sizes import (
    BUDGETS_PER_SIZE,
    bootstrap_implied,
    implied_points,
    sizes_with_samples,
    usable_sizes,
)
from harness.analysis.curves import NAME as CURVES
from harness.analysis.registry.base import Frame, Law, fitted_range, head, law_block, param_summary
from harness.analysis.registry.base import usable as usable_block
from harness.errors import InputError

NAME = "chinchilla_from_curves"


def _sizes(f: Frame) -> dict[str, Mapping[str, Any]]:
    block = usable_block(f.blocks.get(CURVES))
    return usable_sizes(block.get("sizes", {})) if block else {}


def _fit(f: Frame) -> dict[str, Any]:
    sizes = _sizes(f)
    if len(sizes) < 2:
        raise InputError(
            f"{NAME}: {len(sizes)} size(s) with a curve law and their runs' schedule; accepted: "
            "2 or more (anneal_curve fitted on harness runs of two or more sizes)"
        )
    N, D, L = implied_points(sizes)
    r = fitmod.fit_chinchilla(N, D, L, name=NAME)
    boots: list[dict[str, float]] = []
    n_failed = 0
    if f.n_bootstrap:
        s_sizes, samples = sizes_with_samples(sizes, f.shared, CURVES)
        if len(s_sizes) == len(sizes):
            boots, n_failed = bootstrap_implied(sizes, samples, r, f.n_bootstrap)
    out = law_block(f, NAME, r, boots, n_failed, fitted_range(n_params=N, n_tokens=D))
    out["implied_from"] = {
        "sizes": sorted(sizes, key=float),
        "budgets_per_size": BUDGETS_PER_SIZE,
        "schedule": "cosine",
    }
    return out


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    src = block.get("implied_from", {})
    return [
        *param_summary(name, block),
        head("") + f"from the curve laws of {len(src.get('sizes', []))} sizes, "
        f"{src.get('budgets_per_size')} implied {src.get('schedule')} budgets each",
    ]


LAW = Law(NAME, _fit, applies=lambda f: bool(_sizes(f)), summary=_summary)
