"""Kaplan et al. (2020)'s joint law, eq. 1.5: L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D.

Fitted on every run (`fit.fit_kaplan`), with a bootstrap over runs.
"""

from __future__ import annotations

from typing import Any

from harness.analysis import fit as fitmod
from harness.analysis.registry.base import Frame, Law, fitted_range, law_block


def _fit(f: Frame) -> dict[str, Any]:
    r = fitmod.fit_kaplan(f.N, f.D, f.L)
    boots, n_failed = ([], 0)
    if f.n_bootstrap:
        boots, n_failed = fitmod.bootstrap_kaplan(
            f.N, f.D, f.L, r, n_resamples=f.n_bootstrap, rng=f.rng("kaplan")
        )
    return law_block(
        f, "kaplan", r, boots, n_failed, fitted_range(n_params=f.N, n_tokens=f.D, flops=f.C)
    )


LAW = Law("kaplan", _fit)
