"""Grid design from a prior law: isoFLOP sizes centred on the compute-optimal N a law predicts.

An isoFLOP profile locates its minimum only when it brackets it: sizes on both sides of the
compute-optimal N of its budget (Hoffmann et al. 2022, section 3.2). A prior law says where that
N lies before anything trains: by default Hoffmann et al.'s published approach-3 fit, or the
Chinchilla law of an earlier experiment's fits.json (``grid.prior = PATH``), which at a new
scale or on a new corpus is the better guess. `harness plan` notes every budget whose sizes do
not bracket the prior's N_opt, and ``grid.sizes_per_budget`` places each budget's sizes around
it, log-spaced over ``grid.size_span``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from harness.errors import InputError

__all__ = ["HOFFMANN_2022", "Prior", "bracket_notes", "centred_sizes", "load_prior"]

HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. 2022, the approach-3 fit of their eq. 10 (MassiveText, N with embeddings)."""


class Prior:
    """A Chinchilla law that predicts the compute-optimal N of a budget (Hoffmann et al. 2022,
    eq. 4)."""

    def __init__(self, name: str, params: dict[str, float]) -> None:
        from harness.analysis.laws import compute_optimal  # not at import: grid imports this

        self.name = name
        self.params = params
        self._co = compute_optimal(params["A"], params["B"], params["alpha"], params["beta"])

    def n_opt(self, flops: float) -> float:
        """N_opt(C) = G (C / 6)^a."""
        return float(self._co.n_opt(flops))


def load_prior(prior: str) -> Prior | None:
    """The law ``grid.prior`` names: 'hoffmann2022', a fits.json path (its chinchilla law), or
    None for ''.

    Raises
    ------
    InputError
        A path that is not a fits.json with a Chinchilla law that has a compute optimum.
    """
    if not prior:
        return None
    if prior == "hoffmann2022":
        return Prior("Hoffmann et al. 2022", dict(HOFFMANN_2022))
    accepted = "accepted: 'hoffmann2022', a fits.json with a chinchilla law, or ''"
    path = Path(prior)
    if path.is_dir():
        path = path / "fits.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"grid.prior = {prior!r}: {type(exc).__name__}: {exc}; {accepted}"
        ) from None
    fits = doc.get("fits") if isinstance(doc, dict) else None
    block = fits.get("chinchilla") if isinstance(fits, dict) else None
    params = block.get("params") if isinstance(block, dict) else None
    if not isinstance(params, dict):
        raise InputError(f"grid.prior = {prior!r}: no chinchilla law in {path}; {accepted}")
    try:
        return Prior(str(path), {k: float(params[k]) for k in HOFFMANN_2022})
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"grid.prior = {prior!r}: its chinchilla law has no compute optimum ({exc}); {accepted}"
        ) from None


def centred_sizes(n_opt: float, count: int, span: float) -> list[float]:
    """``count`` target sizes log-spaced over a factor ``span``, centred on ``n_opt`` in log."""
    half = math.sqrt(span)
    return [float(v) for v in np.geomspace(n_opt / half, n_opt * half, count)]


def bracket_notes(prior: Prior, sizes_by_budget: dict[float, list[int]]) -> list[str]:
    """A note for each isoFLOP budget whose sizes do not bracket the prior's N_opt."""
    notes = []
    for c, sizes in sorted(sizes_by_budget.items()):
        n_opt = prior.n_opt(c)
        if sizes and min(sizes) < n_opt < max(sizes):
            continue
        where = "below" if sizes and n_opt <= min(sizes) else "above"
        notes.append(
            f"grid.flops = {c:g}: the prior ({prior.name}) puts N_opt at {n_opt:,.0f}, {where} "
            f"every size of this budget (N {min(sizes):,}..{max(sizes):,}): its isoFLOP profile "
            "may not bracket its minimum; grid.sizes_per_budget centres sizes on the prior"
        )
    return notes
