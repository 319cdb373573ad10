"""The annealing law of Tissue et al. (2024), L = L0 + A S1^-alpha - C S2, fitted to the learning
curves of each model size (`curves`): one block per size under "sizes", keyed by N.

Made by default wherever the runs' metrics.csv lie beside the CSV (a harness results folder).
A size with fewer evaluation points than the law's parameters + 1 is skipped by name, and so
is a size whose runs sweep the peak learning rate (the law's loss falls with the rate's area,
so it cannot follow a sweep past its optimum). Each
size's block also records the momentum lambda of S2 the profile chose, the runs it was fitted
on, their tokens per update and schedule settings (what `harness predict --curve` needs to
turn a budget and a schedule into the rates of every update).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.analysis import curves as cv
from harness.analysis.common import fmt
from harness.analysis.registry.base import (
    Figures,
    Frame,
    Law,
    head,
    law_block,
    param_summary,
    usable,
)
from harness.errors import InputError

NAME, size_label = cv.NAME, cv.size_label


def curves_or_refuse(f: Frame, name: str) -> None:
    """Refuse a frame whose curves did not read, or that has none."""
    if f.curves_error:
        raise InputError(f.curves_error)
    if not f.curves:
        raise InputError(
            f"{name}: no learning curves (runs/RUN_ID/metrics.csv beside the CSV, with "
            "step, lr and val_loss); accepted: a harness results folder"
        )


def fit_per_size(
    f: Frame,
    name: str,
    fit: Callable[[list[cv.Curve]], Any],
    bootstrap: Callable[..., tuple[list[dict[str, float]], int]],
    extras: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """{label: block} of a curve law fitted to each model size's curves: ``fit(curves)`` (its
    InputError skips the size by name; its ``.fit`` the FitResult), ``bootstrap(curves,
    fitted, n_resamples=, rng=)``, ``extras(fitted)`` the law's own fields; each block also
    with what a prediction needs of the runs: their ids, updates, tokens per update and the
    schedule settings they share."""
    curves_or_refuse(f, name)
    sizes: dict[str, Any] = {}
    for n in sorted({c.n_params for c in f.curves}):
        label = size_label(n)
        of_size = [c for c in f.curves if c.n_params == n]
        peaks = sorted({float(f"{c.lrs.max():.6g}") for c in of_size})
        if len(peaks) > 1:
            # Both laws' loss falls with the area under the rate (S1), so they cannot describe
            # a sweep past its optimum: a learning-rate sweep is no set of one size's schedules.
            sizes[label] = {
                "skipped": f"{name}: N={label}: its runs sweep the peak learning rate "
                f"({len(peaks)} values, {peaks[0]:.3g} to {peaks[-1]:.3g}); accepted: the "
                "curves of one peak rate per size (`harness fit --where` selects them)"
            }
            continue
        try:
            fitted = fit(of_size)
        except InputError as exc:
            sizes[label] = {"skipped": str(exc)}
            continue
        boots, n_failed = [], 0
        if f.n_bootstrap:
            boots, n_failed = bootstrap(
                of_size, fitted, n_resamples=f.n_bootstrap, rng=f.rng(f"{name}/{label}")
            )
        block = law_block(f, f"{name}/{label}", fitted.fit, boots, n_failed)
        block.update(extras(fitted))
        block["runs"] = sorted(c.run_id for c in of_size)
        block["max_steps"] = max(int(c.lrs.size) for c in of_size)
        block["min_steps"] = min(int(c.steps.min()) for c in of_size)
        tokens = {c.batch_tokens for c in of_size if c.batch_tokens}
        if len(tokens) == 1:
            block["batch_tokens"] = tokens.pop()
        schedules = [dict(c.schedule) for c in of_size if c.schedule]
        if schedules:
            # Settings every run of the size shares (the peak rate is a size's own, by width);
            # the schedule's name is each run's own, and a prediction names its own.
            common = {
                k: schedules[0][k]
                for k in cv.SCHEDULE_KEYS
                if all(s.get(k) == schedules[0][k] for s in schedules)
            }
            block["schedule"] = common
        sizes[label] = block
    if all("skipped" in b for b in sizes.values()):
        first = next(iter(sizes.values()))["skipped"]
        raise InputError(f"{name}: no size has enough evaluations ({first})")
    return sizes


def _fit(f: Frame) -> dict[str, Any]:
    def extras(fitted: cv.AnnealFit) -> dict[str, Any]:
        return {
            "decay": fitted.decay,
            "fitted_s1": list(fitted.s1_range),
            "fitted_s2": list(fitted.s2_range),
            "objective_by_decay": {str(k): v for k, v in fitted.objectives.items()},
        }

    sizes = fit_per_size(f, NAME, cv.fit_anneal, cv.bootstrap_anneal, extras)
    return {"form": "L0 + A S1^-alpha - C S2 (Tissue et al. 2024)", "sizes": sizes}


def summary(name: str, block: Mapping[str, Any]) -> list[str]:
    """The form, then each size's parameters (and momentum, where the law has one)."""
    lines = [head(name) + block.get("form", "")]
    sizes = block.get("sizes", {})
    for label in sorted(sizes, key=lambda k: float(k) if k.replace(".", "", 1).isdigit() else 0):
        b = sizes[label]
        if "skipped" in b:
            lines.append(head("") + f"N={label}: skipped: {b['skipped']}")
            continue
        sub = param_summary(f"  N={label}", b)
        if "decay" in b:
            sub[0] += f"  lambda={fmt(b.get('decay'))}"
        sub[0] += f" ({len(b.get('runs', []))} runs, {b.get('n_points')} points)"
        lines += sub
    return lines


def _figures(fig: Figures, block: Mapping[str, Any] | None) -> list[Path]:
    from harness.analysis.curve_plots import write_curve_figures

    return write_curve_figures(usable(block), fig.curves, fig.samples, fig.out_dir, fig.suffix)


LAW = Law(
    NAME,
    _fit,
    applies=lambda f: bool(f.curves or f.curves_error),
    summary=summary,
    figures=_figures,
)
