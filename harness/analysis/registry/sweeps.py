"""Learning-rate and batch-size sweeps: per grid point the optimal value (a parabola in log h
around the lowest loss), then h_opt = c N^p and c' C^q as DeepSeek-AI (2024, section 3.1) fit
them (`sweeps.sweep_block`). Made by default only for runs that sweep the hyperparameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.analysis import sweeps
from harness.analysis.registry.base import Figures, Frame, Law, head, usable


def _law(name: str, column: str, stem: str) -> Law:
    def fit(f: Frame) -> dict[str, Any]:
        return sweeps.sweep_block(
            f.full,
            column,  # type: ignore[arg-type]
            n_bootstrap=f.n_bootstrap,
            rng=f.rng(name),
        )

    def summary(name: str, block: Mapping[str, Any]) -> list[str]:
        return [head(name) + sweeps.summary_line(dict(block))]

    def figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
        from harness.analysis import plots

        block = usable(block)
        if column not in fig.swept or block is None:
            return []
        out = plots.save_figure(
            plots.plot_sweep(plots.new_axes(), block), fig.out_dir / f"{stem}_sweep{fig.suffix}"
        )
        out += plots.save_figure(
            plots.plot_sweep_optima(plots.new_axes(), block),
            fig.out_dir / f"{stem}_opt{fig.suffix}",
        )
        return out

    return Law(name, fit, applies=lambda f: column in f.swept, summary=summary, figures=figures)


LR = _law("lr_sweep", "lr", "lr")
BATCH = _law("batch_sweep", "batch_tokens", "batch")
