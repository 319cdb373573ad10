"""The multi-power law of Luo et al. (2025), L = L0 + A (S1 + S_W)^-alpha - LD(t), fitted to the
learning curves of each model size (`multipower`): one block per size under "sizes", keyed by
N, as `anneal_curve`'s (the two laws fit the same curves; `harness predict --curve --law`
chooses between them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis import multipower as mp
from harness.analysis.registry.anneal_curve import fit_per_size, summary
from harness.analysis.registry.base import Figures, Frame, Law, usable

NAME = mp.NAME


def _fit(f: Frame) -> dict[str, Any]:
    sizes = fit_per_size(
        f,
        NAME,
        mp.fit_multipower,
        mp.bootstrap_multipower,
        lambda fitted: {"fitted_s1": list(fitted.s1_range)},
    )
    return {"form": "L0 + A (S1 + S_W)^-alpha - LD(t) (Luo et al. 2025)", "sizes": sizes}


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    from harness.analysis.curve_plots import write_curve_figures

    return write_curve_figures(
        usable(block), fig.curves, fig.samples, fig.out_dir, fig.suffix, law=NAME
    )


LAW = Law(
    NAME,
    _fit,
    applies=lambda f: bool(f.curves or f.curves_error),
    summary=summary,
    figures=_figures,
)
