"""Which isoFLOP profiles bracket their minimum (Hoffmann et al. 2022, section 3.2), and the
sizes that would bracket the others.

A profile whose lowest loss lies at its smallest or largest size says only that the optimum is
beyond it: approach 2 skips such a budget and approach 1 reads a biased N_opt off it. For each
such budget (a profile: 3 or more distinct sizes, each at its lowest loss over seeds) this block
proposes as many sizes, spanning the same factor as the profile, centred in log on the best
guess of its N_opt: the isoFLOP law's N_opt(C) when two or more budgets bracket theirs (never
on the side the profile has ruled out), else beyond the lowest-loss size by half the span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.analysis.common import fmt
from harness.analysis.registry.base import Frame, Law, head
from harness.errors import InputError


def _fit(f: Frame) -> dict[str, Any]:
    if f.budget is None:
        raise InputError("isoFLOP bracketing: the runs form no compute budgets")
    iso = f.blocks.get("isoflop", {})
    law = None
    if "a" in iso and "log_k_n" in iso:  # N_opt = k C^a from the budgets that bracket theirs
        law = (float(iso["a"]), float(iso["log_k_n"]))
    out = []
    n_profiles = 0
    for c in np.unique(f.budget):
        rows = np.flatnonzero(f.budget == c)
        # One point per distinct size, its lowest loss over seeds: repeated seeds of the smallest
        # size must not make its neighbour look like an interior minimum.
        ns = np.unique(f.N[rows])
        if ns.size < 3:  # not a profile (a run tagged with a budget of its own)
            continue
        n_profiles += 1
        losses = np.array([f.L[rows][f.N[rows] == n].min() for n in ns])
        i = int(np.argmin(losses))
        if 0 < i < ns.size - 1:
            continue
        at = "smallest" if i == 0 else "largest"
        span = float(ns[-1] / ns[0])
        step = math.sqrt(span)
        if law is not None:
            centre = math.exp(law[1]) * float(c) ** law[0]
            # The profile has ruled out the other side: never centre there.
            centre = min(centre, float(ns[0])) if at == "smallest" else max(centre, float(ns[-1]))
        else:  # beyond the lowest point, by half the profile's width
            centre = float(ns[i]) / step if at == "smallest" else float(ns[i]) * step
        proposed = np.geomspace(centre / step, centre * step, int(ns.size))
        out.append(
            {
                "budget": float(c),
                "minimum_at": at,
                "n_lowest": float(ns[i]),
                "sizes": [float(v) for v in ns],
                "proposed_n": [float(v) for v in proposed],
                "proposed_from": "isoflop law" if law is not None else "the lowest-loss size",
            }
        )
    return {"n_budgets": n_profiles, "unbracketed": out}


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    bad = block["unbracketed"]
    if not bad:
        return [head(name) + f"all {block['n_budgets']} budgets bracket their minimum"]
    lines = [
        head(name) + f"{len(bad)} of {block['n_budgets']} budgets do not bracket their minimum"
    ]
    for b in bad:
        lines.append(
            head("") + f"C={fmt(b['budget'])}: lowest loss at the {b['minimum_at']} size "
            f"(N={fmt(b['n_lowest'])}); sizes that would bracket it ({b['proposed_from']}): "
            + ", ".join(f"{v:.3g}" for v in b["proposed_n"])
        )
    return lines


# After isoflop (it uses that law's N_opt(C)); made wherever the runs form isoFLOP budgets.
LAW = Law("bracketing", _fit, applies=lambda f: f.budget is not None, summary=_summary)
