"""`harness predict --curve`: a run's final loss under a learning-rate schedule, from the stored
curve law of its model size (`registry.anneal_curve` by default, `registry.multi_power_curve`
with `--law`), with intervals from its bootstrap samples, and the cooldown fraction that
minimises it for a WSD run of that budget.

A budget D becomes D / batch_tokens updates (the tokens per update the size's runs had); the
rate of each update comes from `harness.schedules.lr_at_step` with the size's own peak rate,
floor, warmup and cooldown shape as its runs had them, each of which the caller may replace.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis import multipower as mp
from harness.analysis.common import ci95, fmt, read_fits_json
from harness.analysis.curves import NAME, SCHEDULE_KEYS, anneal_loss, areas, size_label
from harness.analysis.predict import fits_json_of, prediction_interval
from harness.analysis.samples import read_samples, samples_path
from harness.errors import InputError

__all__ = [
    "COOLDOWNS",
    "PARAMS",
    "CurveLaw",
    "curve_table",
    "law_at",
    "load_curve_law",
    "predict_curve",
]

COOLDOWNS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 11))
"""WSD cooldown fractions searched for the lowest predicted final loss: 5% to 50% of the run
(Hagele et al. 2024 find 10-20% matches cosine; longer helps at long budgets)."""

PARAMS: dict[str, tuple[str, ...]] = {NAME: ("L0", "A", "alpha", "C"), mp.NAME: mp.PARAMS}
"""Each curve law's parameters."""

MAX_STEPS = 2_000_000
"""Updates of a queried run at most: its schedule is built an update at a time (and again for
each cooldown searched), so a budget is refused beyond this rather than run without bound."""


def law_at(
    law: str, b: Mapping[str, Any], p: Mapping[str, Any], lrs: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """The curve law ``law`` (its size's block ``b``: the momentum of the annealing law's S2;
    parameters ``p``: floats, or (S, 1) arrays of samples) after each of ``steps`` updates of
    the rates ``lrs``."""
    with np.errstate(all="ignore"):
        if law == mp.NAME:
            return mp.loss_at(p, lrs, steps)
        s1, s2 = areas(lrs, float(b["decay"]))
        return anneal_loss(s1[steps], s2[steps], *(p[k] for k in PARAMS[NAME]))


@dataclass(frozen=True)
class CurveLaw:
    """One size's stored curve law and what a prediction needs from it."""

    law: str
    """The law's block in fits.json: anneal_curve or multi_power_curve."""
    n_params: float
    params: dict[str, float]
    samples: dict[str, np.ndarray]
    decay: float
    """The annealing law's momentum (nan for the multi-power law, which has none)."""
    batch_tokens: int
    schedule: dict[str, Any]
    max_steps: int
    residual_sd_log: float
    dof: int
    undetermined: dict[str, str]
    determined: bool
    """False when the bootstrap failed on more than 10% of its resamples (`identify`)."""
    s1_max: float
    s2_max: float
    """The largest areas the fitted points reached (inf where the block does not say)."""
    undetermined_reason: str


def load_curve_law(path: str | os.PathLike[str], n_params: float, law: str = NAME) -> CurveLaw:
    """The curve law ``law`` of the size ``n_params`` in the fits.json at or beside ``path``.

    Raises
    ------
    InputError
        No fits.json, no such block, a size it was not fitted at, fields missing or of the
        wrong type, or no bootstrap samples.
    """
    if law not in PARAMS:
        raise InputError(f"--law {law!r} with --curve; accepted: {', '.join(PARAMS)}")
    keys = PARAMS[law]
    fj = fits_json_of(path)
    doc = read_fits_json(fj)
    block = (doc.get("fits") or {}).get(law)
    if not isinstance(block, Mapping) or not isinstance(block.get("sizes"), Mapping):
        why = block.get("skipped") if isinstance(block, Mapping) else "not fitted"
        raise InputError(
            f"{fj}: no {law} law ({why}); accepted: a fit of runs whose metrics.csv lie in "
            "runs/ beside the CSV"
        )
    sizes = block["sizes"]
    label = size_label(n_params)
    fitted = [k for k, b in sizes.items() if isinstance(b, Mapping) and "params" in b]
    if label not in fitted:
        raise InputError(
            f"--n {n_params:g}: no {law} law at that size in {fj}; accepted: one of "
            f"{', '.join(fitted)} (a curve law is fitted per size)"
        )
    b = sizes[label]
    params = b.get("params", {})
    ok = all(isinstance(params.get(k), int | float) and math.isfinite(params[k]) for k in keys)
    decay = b.get("decay") if law == NAME else math.nan
    if not ok or (law == NAME and not (isinstance(decay, int | float) and 0 <= decay < 1)):
        need = ", ".join(keys) + (" and a decay in [0, 1)" if law == NAME else "")
        raise InputError(
            f"{fj}: {law}.sizes.{label} has params {params!r}, decay {decay!r}; accepted: "
            f"finite {need}, as `harness fit` writes"
        )
    sp = samples_path(fj)
    if not sp.is_file():
        raise InputError(f"{sp}: no bootstrap samples beside {fj.name}; `harness fit` writes them")
    arrays = read_samples(sp)
    samples = {k: arrays.get(f"{law}/{label}/{k}") for k in keys}
    if any(v is None or not v.size for v in samples.values()):
        raise InputError(
            f"{sp}: no bootstrap samples of {law} at N = {label} (fitted with --bootstrap 0?)"
        )
    return CurveLaw(
        law=law,
        n_params=float(label),
        params={k: float(params[k]) for k in keys},
        samples={k: v for k, v in samples.items() if v is not None},
        decay=float(decay),
        batch_tokens=int(b.get("batch_tokens") or 0),
        schedule=dict(b.get("schedule") or {}),
        max_steps=int(b.get("max_steps") or 0),
        residual_sd_log=float(b.get("residual_sd_log", math.nan) or math.nan),
        dof=int(b.get("dof") or 0),
        undetermined=dict(b.get("undetermined") or {}),
        determined=b.get("determined") is not False,
        s1_max=_top(b.get("fitted_s1")),
        s2_max=_top(b.get("fitted_s2")),
        undetermined_reason=str(b.get("undetermined_reason") or ""),
    )


def _top(span: Any) -> float:
    ok = isinstance(span, list) and len(span) == 2 and all(isinstance(v, int | float) for v in span)
    return float(span[1]) if ok else math.inf


def schedule_lrs(
    n_steps: int, schedule: str, settings: Mapping[str, Any], cooldown: float | None
) -> np.ndarray:
    """The rate of each of ``n_steps`` updates (`harness.schedules.lr_at_step`), the warmup by
    the runs' own rule (`harness.schedules.warmup_for`)."""
    from harness.schedules import lr_at_step, warmup_for

    frac = float(settings["decay_fraction"] if cooldown is None else cooldown)
    warmup = warmup_for(
        n_steps,
        int(settings["batch_tokens"]),
        float(settings["warmup_tokens"]),
        float(settings["warmup_fraction"]),
    )
    return np.array(
        [
            lr_at_step(
                s,
                total_steps=n_steps,
                warmup=warmup,
                peak=float(settings["peak_lr"]),
                min_ratio=float(settings["min_lr_ratio"]),
                schedule=schedule,  # type: ignore[arg-type]
                decay_fraction=frac,
                decay_shape=settings.get("decay_shape", "1-sqrt"),
            )
            for s in range(n_steps)
        ]
    )


def predict_curve(
    law: CurveLaw,
    d: Sequence[float],
    schedule: str,
    *,
    cooldown: float | None = None,
    overrides: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The final loss after D tokens under ``schedule`` for each D, with its 95% confidence
    interval (the bootstrap samples) and prediction interval (plus the runs' scatter about the
    law), how far it extrapolates in updates, and for WSD the best cooldown fraction.

    Raises
    ------
    InputError
        A schedule name or cooldown not accepted, or settings the fit lacks and none given.
    """
    if schedule not in ("cosine", "wsd", "constant"):
        raise InputError(f"--schedule {schedule!r}; accepted: cosine, wsd, constant")
    if cooldown is not None and not 0 < cooldown <= 1:
        raise InputError(f"--cooldown {cooldown}; accepted: a fraction in (0, 1]")
    if cooldown is not None and schedule != "wsd":
        raise InputError(f"--cooldown goes with --schedule wsd, not {schedule}")
    settings = {**law.schedule, **(overrides or {}), "batch_tokens": law.batch_tokens}
    missing = [k for k in SCHEDULE_KEYS if k not in settings]
    if missing or law.batch_tokens <= 0:
        lacking = missing + ([] if law.batch_tokens > 0 else ["batch_tokens"])
        raise InputError(
            f"the {law.law} law at N = {size_label(law.n_params)} records no {', '.join(lacking)} "
            "(its runs did not share one); accepted: give --peak-lr / --min-lr-ratio where they "
            "are the missing ones"
        )
    out = []
    for tokens in d:
        n_steps = max(1, math.ceil(tokens / law.batch_tokens))
        if n_steps > MAX_STEPS:
            raise InputError(
                f"--d {tokens:g}: {n_steps} updates of {law.batch_tokens} tokens; accepted: at "
                f"most {MAX_STEPS} updates ({MAX_STEPS * law.batch_tokens:g} tokens)"
            )
        lrs = schedule_lrs(n_steps, schedule, settings, cooldown)
        end = np.array([n_steps])
        block = {"decay": law.decay}
        point = float(law_at(law.law, block, law.params, lrs, end)[0])
        # every bootstrap sample's law at once
        per = law_at(law.law, block, {k: v[:, None] for k, v in law.samples.items()}, lrs, end)
        per = per[:, 0]
        with np.errstate(all="ignore"):
            pi = prediction_interval(np.log(per)[:, None], law.residual_sd_log, law.dof)[0]
        s1 = float(np.sum(lrs))
        s2 = areas(lrs, law.decay)[1][-1] if law.law == NAME else 0.0
        # As `predict`'s rule: an undetermined law answers nothing; one with undetermined
        # parameters answers within the updates its runs covered, not beyond them.
        beyond = (
            n_steps > law.max_steps or s1 > law.s1_max * (1 + 1e-9) or s2 > law.s2_max * (1 + 1e-9)
        )
        if not law.determined:
            und, why = True, law.undetermined_reason
        elif law.undetermined and beyond:
            why = "; ".join(f"{k} {v}" for k, v in law.undetermined.items())
            und, why = True, f"{why}; and the run reaches beyond the fitted ones' areas S1, S2"
        elif not (math.isfinite(point) and point > 0):
            und, why = True, f"the law gives {point:.4g}: no loss"
        else:
            und, why = False, ""
        row: dict[str, Any] = {
            "n": law.n_params,
            "d": float(tokens),
            "steps": n_steps,
            "schedule": schedule,
            "cooldown": (settings["decay_fraction"] if cooldown is None else cooldown)
            if schedule == "wsd"
            else None,
            "loss": point,
            "loss_ci95": ci95(per),
            "loss_pi95": [float(v) for v in pi],
            "extrapolation_decades": max(0.0, math.log10(n_steps / max(law.max_steps, 1))),
            "undetermined": und,
            "undetermined_reason": why,
        }
        if schedule == "wsd":
            by_cooldown = {
                f: float(
                    law_at(
                        law.law, block, law.params, schedule_lrs(n_steps, "wsd", settings, f), end
                    )[0]
                )  # fmt: skip
                for f in COOLDOWNS
            }
            best = min(by_cooldown, key=by_cooldown.__getitem__)
            row["best_cooldown"] = best
            row["best_cooldown_loss"] = by_cooldown[best]
        out.append(row)
    return out


def curve_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a table, flags below."""
    lines = [
        f"{'N':>10}  {'D':>10}  {'steps':>7}  {'schedule':>8}  {'loss':>8}  {'95% CI':>19}  "
        f"{'95% PI':>19}  best cooldown"
    ]
    for r in rows:
        sched = r["schedule"] + (f" {r['cooldown']:.2f}" if r.get("cooldown") is not None else "")
        best = (
            f"{r['best_cooldown']:.2f} ({fmt(r['best_cooldown_loss'])})" if "best_cooldown" in r
            else "-"
        )  # fmt: skip
        ci = "[" + ", ".join(fmt(v) for v in r["loss_ci95"]) + "]"
        pi = "[" + ", ".join(fmt(v) for v in r["loss_pi95"]) + "]"
        flags = []
        if r["extrapolation_decades"] > 1:
            flags.append(f"EXTRAPOLATED ({r['extrapolation_decades']:.1f} decades of updates)")
        if r["undetermined"]:
            flags.append(f"UNDETERMINED: {r['undetermined_reason']}")
        lines.append(
            f"{fmt(r['n']):>10}  {fmt(r['d']):>10}  {r['steps']:>7}  {sched:>8}  "
            f"{fmt(r['loss']):>8}  {ci:>19}  {pi:>19}  {best}" + ("  " + "; ".join(flags) if flags
                                                                 else "")
        )  # fmt: skip
    return "\n".join(lines)
