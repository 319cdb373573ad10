"""Figures of a loss-curve law (`registry.anneal_curve`, `registry.multi_power_curve`): each
size's measured validation losses with the fitted law along each run's own schedule and its 95%
bootstrap band (anneal_curves.png, multi_power_curves.png), and what the law says of the
schedules at the largest size (anneal_schedules.png, multi_power_schedules.png: cosine, WSD
and constant over its longest run's updates)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis import multipower as mp
from harness.analysis.curve_predict import PARAMS, law_at, schedule_lrs
from harness.analysis.curves import NAME, Curve
from harness.analysis.plots import colours, figure_of, new_axes, save_figure
from harness.units import si

__all__ = ["write_curve_figures"]

_BAND_SAMPLES = 200  # bootstrap samples drawn into a band: enough for its 2.5-97.5% edges


def _fitted(block: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    sizes = (block or {}).get("sizes") or {}
    return {k: b for k, b in sizes.items() if isinstance(b, Mapping) and "params" in b}


_FILE = {NAME: "anneal", mp.NAME: "multi_power"}
_TITLE = {
    NAME: "L0 + A S1^-α - C S2 (Tissue et al. 2024)",
    mp.NAME: "L0 + A (S1 + S_W)^-α - LD(t) (Luo et al. 2025)",
}


def _band(
    law: str,
    b: Mapping[str, Any],
    samples: Mapping[str, np.ndarray] | None,
    lrs: np.ndarray,
    steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    if not samples or any(k not in samples for k in PARAMS[law]):
        return None
    n = min(_BAND_SAMPLES, samples["L0"].size)
    per = law_at(law, b, {k: samples[k][:n, None] for k in PARAMS[law]}, lrs, steps)
    lo, hi = np.nanpercentile(per, [2.5, 97.5], axis=0)
    return lo, hi


def _drawn(first: int, last: int) -> np.ndarray:
    """The updates a curve is drawn at: all of them, or 400 log-spaced (the multi-power law
    costs a sum over earlier drops at each)."""
    return np.unique(np.geomspace(first, last, min(400, last - first + 1)).astype(np.int64))


def write_curve_figures(
    block: Mapping[str, Any] | None,
    curves: Sequence[Curve],
    samples: Mapping[str, Mapping[str, np.ndarray]],
    out_dir: Path,
    suffix: str = "",
    law: str = NAME,
) -> list[Path]:
    """LAW_curves and LAW_schedules (module docstring); nothing without a fitted size.
    ``samples`` are fits.bootstrap.npz's {"LAW/SIZE": {param: array}}."""
    fitted = _fitted(block)
    if not fitted:
        return []
    labels = sorted(fitted, key=float)
    colour = colours([float(k) for k in labels], "N")
    ax = new_axes((6.4, 4.4))
    for label in labels:
        b = fitted[label]
        color = colour[float(label)]
        first = True
        for c in (c for c in curves if f"{c.n_params:.0f}" == label):
            # From half the first measurement on: before it the law is unchecked, and its
            # rise towards step 1 would take the whole axis.
            steps = _drawn(max(1, int(c.steps.min()) // 2), c.lrs.size)
            curve = law_at(law, b, b["params"], c.lrs, steps)
            # A law its data do not determine is drawn dashed, without a band (as the loss
            # figures draw an undetermined Chinchilla law).
            und = b.get("determined") is False
            band = None if und else _band(law, b, samples.get(f"{law}/{label}"), c.lrs, steps)
            if band is not None:
                ax.fill_between(steps, band[0], band[1], color=color, alpha=0.12, lw=0)
            name = f"N={si(float(label))}" + (f" (λ={b['decay']:g})" if "decay" in b else "")
            name += " (not determined)" if und else ""
            ax.plot(steps, curve, "--" if und else "-", color=color, lw=1.0,
                    label=name if first else None)  # fmt: skip
            ax.plot(c.steps, c.loss, "o", color=color, ms=3)
            first = False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"learning curves and {_TITLE[law]}", fontsize=9)
    ax.legend(fontsize=7)
    out = save_figure(figure_of(ax), out_dir / f"{_FILE[law]}_curves{suffix}")
    out += _schedules(law, fitted[labels[-1]], labels[-1], out_dir, suffix)
    return out


def _schedules(
    law: str, b: Mapping[str, Any], label: str, out_dir: Path, suffix: str
) -> list[Path]:
    """The largest size's law under each schedule over its longest run (where the fit recorded
    the runs' schedule settings)."""
    settings = {**(b.get("schedule") or {}), "batch_tokens": b.get("batch_tokens") or 0}
    need = ("peak_lr", "min_lr_ratio", "warmup_tokens", "warmup_fraction", "decay_fraction")
    n_steps = int(b.get("max_steps") or 0)
    if any(k not in settings for k in need) or not settings["batch_tokens"] or n_steps < 2:
        return []
    ax = new_axes()
    # The schedules differ late: the last 80% of the run.
    steps = np.unique(np.linspace(max(1, n_steps // 5), n_steps, 400).astype(np.int64))
    for name, style in (("cosine", "-"), ("wsd", "--"), ("constant", ":")):
        lrs = schedule_lrs(n_steps, name, settings, None)
        curve = law_at(law, b, b["params"], lrs, steps)
        final = float(curve[-1]) if math.isfinite(float(curve[-1])) else math.nan
        ax.plot(steps, curve, style, lw=1.2, label=f"{name}: final {final:.4g}")
    ax.set_xlabel("updates")
    ax.set_ylabel("predicted validation loss (nats/token)")
    what = "annealing" if law == NAME else "multi-power"
    ax.set_title(f"the {what} law at N={si(float(label))} under three schedules", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(figure_of(ax), out_dir / f"{_FILE[law]}_schedules{suffix}")
