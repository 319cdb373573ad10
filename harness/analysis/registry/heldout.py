"""A held-out check of the Chinchilla law (Choshen et al. 2024): fit it on the runs at or below
a compute quantile, predict the rest, and report the absolute relative error |L_pred - L| / L.

With a bootstrap, each held-out prediction carries the 95% interval of the law refitted on
resamples of the fitting runs: the extrapolation figure draws it, and a held-out loss outside
it is a law that does not extrapolate.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import ci95, fmt
from harness.analysis.laws import chinchilla_loss
from harness.analysis.registry.base import Figures, Frame, Law, head, usable
from harness.errors import InputError


def _fit(f: Frame) -> dict[str, Any]:
    N, D, L, C = f.N, f.D, f.L, f.C
    thr = float(np.quantile(C, f.heldout_quantile))
    tr, te = C <= thr, C > thr
    if te.sum() < 1:
        raise InputError("held-out check: no run above the compute threshold")
    r = fitmod.fit_chinchilla(
        N[tr], D[tr], L[tr], name=f"heldout (chinchilla on the {int(tr.sum())} cheapest runs)"
    )
    p = r.params
    pred = chinchilla_loss(N[te], D[te], p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    are = np.abs(pred - L[te]) / L[te]
    intervals: list[list[float | None]] = [[None, None]] * int(te.sum())
    errors: list[list[float | None]] = [[None, None]] * int(te.sum())
    n_failed = 0
    if f.n_bootstrap:
        boots, n_failed = fitmod.bootstrap_chinchilla(
            N[tr], D[tr], L[tr], r, n_resamples=f.n_bootstrap, rng=f.rng("heldout")
        )
        if boots:
            preds = np.array(
                [
                    chinchilla_loss(N[te], D[te], b["E"], b["A"], b["B"], b["alpha"], b["beta"])
                    for b in boots
                ]
            )
            intervals = [ci95(col) for col in preds.T]
            errors = [identify.interval_se(col) for col in preds.T]
    points = [
        {"n_params": float(n), "n_tokens": float(d), "flops": float(c), "loss": float(y),
         "predicted": float(yp)}
        for n, d, c, y, yp in zip(N[te], D[te], C[te], L[te], pred, strict=True)
    ]  # fmt: skip
    verdict = identify.law_fields(p, r.precision, r.undetermined, [], {}, n_failed, f.n_bootstrap)
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
        "points": points,
        # points[i]'s predicted loss: its 95% interval and that interval's Monte Carlo error
        # (how reproduce compares a refit's), as "predicted_i".
        "ci95": {f"predicted_{i}": ci for i, ci in enumerate(intervals)},
        "ci95_mc_se": {f"predicted_{i}": se for i, se in enumerate(errors)},
        "n_bootstrap": f.n_bootstrap,
        "n_bootstrap_failed": n_failed,
        "determined": verdict["determined"],
        **{k: verdict[k] for k in ("undetermined_reason",) if k in verdict},
    }


def _summary(name: str, block: Mapping[str, Any]) -> list[str]:
    return [
        head(name) + f"ARE mean={fmt(block['are_mean'])} max={fmt(block['are_max'])} "
        f"({block['n_train']} train, {block['n_test']} test)"
    ]


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    """The extrapolation figure: the fitting runs, the held-out ones, the predictions."""
    from harness.analysis import plots

    block = usable(block)
    if block is None:
        return []
    return plots.save_figure(
        plots.plot_extrapolation(plots.new_axes(), fig.df, block),
        fig.out_dir / f"extrapolation{fig.suffix}",
    )


LAW = Law("heldout", _fit, summary=_summary, figures=_figures)
