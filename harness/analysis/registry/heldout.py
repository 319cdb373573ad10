"""A held-out check of the Chinchilla law (Choshen et al. 2024): fit it on the runs at or below
a compute quantile, predict the rest, and report the absolute relative error |L_pred - L| / L.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.analysis import fit as fitmod
from harness.analysis.common import fmt
from harness.analysis.laws import chinchilla_loss
from harness.analysis.registry.base import Frame, Law, head
from harness.errors import InputError


def _fit(f: Frame) -> dict[str, Any]:
    N, D, L, C = f.N, f.D, f.L, f.C
    thr = float(np.quantile(C, f.heldout_quantile))
    tr, te = C <= thr, C > thr
    if te.sum() < 1:
        raise InputError("held-out check: no run above the compute threshold")
    r = fitmod.fit_chinchilla(N[tr], D[tr], L[tr])
    p = r.params
    pred = chinchilla_loss(N[te], D[te], p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    are = np.abs(pred - L[te]) / L[te]
    return {
        "law": "chinchilla",
        "flops_threshold": thr,
        "quantile": f.heldout_quantile,
        "n_train": int(tr.sum()),
        "n_test": int(te.sum()),
        "are_mean": float(are.mean()),
        "are_max": float(are.max()),
        "are_median": float(np.median(are)),
        "params": dict(p),
        "precision": dict(r.precision),
        "undetermined": dict(r.undetermined),
    }


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    return [
        head(name) + f"ARE mean={fmt(block['are_mean'])} max={fmt(block['are_max'])} "
        f"({block['n_train']} train, {block['n_test']} test)"
    ]


LAW = Law("heldout", _fit, summary=_summary)
