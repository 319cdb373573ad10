"""How far a prediction lies beyond the runs a law was fitted on.

A scaling law is a fit; past its data it is a hypothesis. Published ladders extrapolate one
to two and a half decades of compute (Hoffmann et al. 2022: Chinchilla at about 1.5 decades past
the largest isoFLOP budget; Gadre et al. 2024: 300x, 2.5 decades) and report errors of a few
per cent there, and no more is known. So every prediction states its distance beyond the fitted
range in decades, of compute and of N (and of D where the law takes D), and is flagged past
EXTRAPOLATION_DECADES_MAX on any of them. Pure functions; no fit here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EXTRAPOLATION_DECADES_MAX", "decades_beyond", "describe", "extrapolation"]

EXTRAPOLATION_DECADES_MAX = 2.0
"""Past this many decades beyond the fitted range (compute, N or D) a prediction is flagged."""

_LABELS = {"flops": "compute", "n_params": "N", "n_tokens": "D"}


def decades_beyond(value: float, lo: float, hi: float) -> float:
    """log10 of how far ``value`` lies outside [lo, hi]: 0 inside, else decades past the nearer
    end; nan for a value that is not a positive finite number."""
    if not (math.isfinite(value) and value > 0 and lo > 0 and hi > 0):
        return math.nan
    return max(0.0, math.log10(value / hi), math.log10(lo / value))


def extrapolation(fitted: Mapping[str, Sequence[float]], **query: float | None) -> dict[str, Any]:
    """The distance of one query beyond the fitted range, per quantity the range covers.

    Parameters
    ----------
    fitted : mapping
        {column: [min, max]} of the fitted runs (n_params, n_tokens, flops), as stored in a
        law's ``fitted_range``.
    **query : float or None
        The query's n_params, n_tokens and flops (None or absent: not part of it).

    Returns
    -------
    dict
        ``decades`` {column: decades beyond} for the columns both have, and ``flagged``
        (true when any exceeds EXTRAPOLATION_DECADES_MAX; nan counts as beyond).
    """
    out: dict[str, float] = {}
    for k, v in query.items():
        rng = fitted.get(k)
        if v is None or rng is None or len(rng) != 2 or None in rng:
            continue
        out[k] = decades_beyond(float(v), float(rng[0]), float(rng[1]))
    flagged = any(not (d <= EXTRAPOLATION_DECADES_MAX) for d in out.values())
    return {"decades": out, "flagged": flagged}


def describe(ext: Mapping[str, Any]) -> str:
    """'2.4 decades of compute, 1.2 of N beyond the fitted runs' ('' within them)."""
    parts = [
        f"{d:.1f} of {_LABELS.get(k, k)}" for k, d in ext["decades"].items() if not (d <= 0.05)
    ]
    if not parts:
        return ""
    return "decades beyond the fitted runs: " + ", ".join(parts)
