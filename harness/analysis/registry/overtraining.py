"""Over-training (Gadre et al. 2024, "Language models scale reliably with over-training and on
downstream tasks", eq. 4): L(C, M) = E + (a M^eta + b M^-eta) C^-eta, with M = D / N the tokens
per parameter and C = 6 N D.

Chinchilla's form with one exponent for N and D (`laws.overtraining_loss`): at a fixed M the
reducible loss is a power law in C of slope eta whatever M is, so a ladder at M = 20 and a few
small runs far past it predict a large model trained far past Chinchilla-optimal. Fitted on
every run (`fit.fit_overtraining`), with a bootstrap over runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.analysis import fit as fitmod
from harness.analysis.common import fmt
from harness.analysis.laws import overtraining_optimal_tokens_per_param
from harness.analysis.registry.base import Frame, Law, fitted_range, head, law_block, param_summary


def _fit(f: Frame) -> dict[str, Any]:
    r = fitmod.fit_overtraining(f.N, f.D, f.L)
    boots, n_failed = ([], 0)
    if f.n_bootstrap:
        boots, n_failed = fitmod.bootstrap_overtraining(
            f.N, f.D, f.L, r, n_resamples=f.n_bootstrap, rng=f.rng("overtraining")
        )
    return law_block(
        f, "overtraining", r, boots, n_failed, fitted_range(n_params=f.N, n_tokens=f.D, flops=f.C)
    )


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    lines = param_summary(name, block)
    p = block["params"]
    if block.get("determined") is not False and not block.get("undetermined"):
        try:
            m = overtraining_optimal_tokens_per_param(p["a"], p["b"], p["eta"])
        except (TypeError, ZeroDivisionError, OverflowError):
            m = math.nan
        lines.append(head("") + f"loss-optimal tokens per parameter at any C: {fmt(m)}")
    return lines


LAW = Law("overtraining", _fit, summary=_summary)
