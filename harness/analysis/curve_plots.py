"""Figures of the loss-curve law (`registry.anneal_curve`): each size's measured validation
losses with the fitted law along each run's own schedule and its 95% bootstrap band
(anneal_curves.png), and what the law says of the schedules at the largest size
(anneal_schedules.png: cosine, WSD and constant over its longest run's updates)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.curves import Curve, anneal_loss, areas
from harness.analysis.plots import colours, figure_of, new_axes, save_figure
from harness.units import si

__all__ = ["write_curve_figures"]

_BAND_SAMPLES = 200  # bootstrap samples drawn into a band: enough for its 2.5-97.5% edges


def _fitted(block: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    sizes = (block or {}).get("sizes") or {}
    return {k: b for k, b in sizes.items() if isinstance(b, Mapping) and "params" in b}


def _band(
    samples: Mapping[str, np.ndarray] | None, s1: np.ndarray, s2: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    if not samples or any(k not in samples for k in ("L0", "A", "alpha", "C")):
        return None
    n = min(_BAND_SAMPLES, samples["L0"].size)
    with np.errstate(all="ignore"):  # (samples, updates) at once
        per = anneal_loss(
            s1[None], s2[None], **{k: samples[k][:n, None] for k in ("L0", "A", "alpha", "C")}
        )
    lo, hi = np.nanpercentile(per, [2.5, 97.5], axis=0)
    return lo, hi


def write_curve_figures(
    block: Mapping[str, Any] | None,
    curves: Sequence[Curve],
    samples: Mapping[str, Mapping[str, np.ndarray]],
    out_dir: Path,
    suffix: str = "",
) -> list[Path]:
    """anneal_curves and anneal_schedules (module docstring); nothing without a fitted size.
    ``samples`` are fits.bootstrap.npz's {"anneal_curve/SIZE": {param: array}}."""
    fitted = _fitted(block)
    if not fitted:
        return []
    labels = sorted(fitted, key=float)
    colour = colours([float(k) for k in labels], "N")
    ax = new_axes((6.4, 4.4))
    for label in labels:
        b = fitted[label]
        p, decay = b["params"], float(b["decay"])
        color = colour[float(label)]
        first = True
        for c in (c for c in curves if f"{c.n_params:.0f}" == label):
            s1, s2 = areas(c.lrs, decay)
            # From half the first measurement on: before it the law is unchecked, and its
            # rise towards step 1 would take the whole axis.
            start = max(1, int(c.steps.min()) // 2)
            steps = np.arange(start, c.lrs.size + 1)
            with np.errstate(all="ignore"):
                law = anneal_loss(s1[start:], s2[start:], p["L0"], p["A"], p["alpha"], p["C"])
            band = _band(samples.get(f"anneal_curve/{label}"), s1[start:], s2[start:])
            if band is not None:
                ax.fill_between(steps, band[0], band[1], color=color, alpha=0.12, lw=0)
            ax.plot(steps, law, "-", color=color, lw=1.0,
                    label=f"N={si(float(label))} (λ={decay:g})" if first else None)  # fmt: skip
            ax.plot(c.steps, c.loss, "o", color=color, ms=3)
            first = False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("learning curves and L0 + A S1^-α - C S2 (Tissue et al. 2024)", fontsize=9)
    ax.legend(fontsize=7)
    out = save_figure(figure_of(ax), out_dir / f"anneal_curves{suffix}")
    out += _schedules(fitted[labels[-1]], labels[-1], out_dir, suffix)
    return out


def _schedules(b: Mapping[str, Any], label: str, out_dir: Path, suffix: str) -> list[Path]:
    """The largest size's law under each schedule over its longest run (where the fit recorded
    the runs' schedule settings)."""
    from harness.analysis.curve_predict import schedule_lrs

    settings = {**(b.get("schedule") or {}), "batch_tokens": b.get("batch_tokens") or 0}
    need = ("peak_lr", "min_lr_ratio", "warmup_tokens", "warmup_fraction", "decay_fraction")
    n_steps = int(b.get("max_steps") or 0)
    if any(k not in settings for k in need) or not settings["batch_tokens"] or n_steps < 2:
        return []
    p, decay = b["params"], float(b["decay"])
    ax = new_axes()
    start = max(1, n_steps // 5)  # the schedules differ late: the last 80% of the run
    steps = np.arange(start, n_steps + 1)
    for name, style in (("cosine", "-"), ("wsd", "--"), ("constant", ":")):
        lrs = schedule_lrs(n_steps, name, settings, None)
        s1, s2 = areas(lrs, decay)
        with np.errstate(all="ignore"):
            law = anneal_loss(s1[start:], s2[start:], p["L0"], p["A"], p["alpha"], p["C"])
        final = float(law[-1]) if math.isfinite(float(law[-1])) else math.nan
        ax.plot(steps, law, style, lw=1.2, label=f"{name}: final {final:.4g}")
    ax.set_xlabel("updates")
    ax.set_ylabel("predicted validation loss (nats/token)")
    ax.set_title(f"the annealing law at N={si(float(label))} under three schedules", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(figure_of(ax), out_dir / f"anneal_schedules{suffix}")
