"""Predictions from a stored fit: the loss at new (N, D), and the compute-optimal model for a
budget, each with a 95% interval from the stored bootstrap (`harness predict`).

The point estimate comes from the law's fitted parameters (fits.json); the interval is the
2.5 and 97.5 percentiles of the same quantity computed from every kept bootstrap sample of the
parameters (fits.bootstrap.npz holds only converged, non-degenerate resamples:
`fit.kept_resamples`), so no refit is needed. For a budget C, N_opt and D_opt follow Hoffmann
et al. (2022), eq. 4, from approach 3, and the loss is that of the compute-optimal model; each
bootstrap sample contributes its own optimum.

Two intervals, as labs ask for them. ``loss_ci95``, the confidence interval of the law: where
the law's curve lies. ``loss_pi95``, the prediction interval: where one new run's loss lies,
the law's uncertainty plus the scatter of runs about it (their log residuals' sd, fits.json's
``residual_sd_log``): the 2.5 and 97.5 percentiles of the mixture over bootstrap samples s of
log L_s + sd t, t Student's with the residuals' degrees of freedom (`prediction_interval`).

Every answer says whether it can be trusted: ``undetermined`` is true where the law is not
determined by its data (its bootstrap mostly failed), or where a parameter is undetermined and
the query lies beyond the fitted runs; ``extrapolation`` gives the decades beyond them
(`extrapolation`), ``flagged`` past the stated limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import gammaln, ndtr, ndtri, stdtr, stdtrit

from harness.analysis import taskscale as ts
from harness.analysis.common import ci95, fmt, read_fits_json
from harness.analysis.extrapolation import EXTRAPOLATION_DECADES_MAX, describe, extrapolation
from harness.analysis.laws import (
    chinchilla_loss,
    compute_optimal,
    flops,
    kaplan_loss,
    overtraining_loss,
    power_law_with_offset,
)
from harness.analysis.samples import read_samples, samples_path
from harness.errors import InputError

__all__ = [
    "LAWS",
    "MAX_QUERIES",
    "FittedLaw",
    "load_law",
    "load_task",
    "predict_task",
    "parse_values",
    "predict",
    "predict_optimal",
]

MAX_QUERIES = 10_000
"""The most (N, D, C) combinations one prediction answers: each costs one value per bootstrap
sample, so memory grows with their product; more is refused."""

LAWS: dict[str, tuple[str, ...]] = {
    "chinchilla": ("n", "d"),
    "kaplan": ("n", "d"),
    "overtraining": ("n", "d"),
    "power_law_n": ("n",),
    "power_law_d": ("d",),
    "power_law_c": ("flops",),
}
"""The laws a prediction can come from, and the quantities each takes."""


@dataclass(frozen=True)
class FittedLaw:
    """One law of a fits.json: its point estimate, bootstrap samples and verdict."""

    name: str
    params: dict[str, float]
    samples: dict[str, np.ndarray]
    """param -> one value per bootstrap resample."""
    undetermined: str
    """Why the data do not determine the law (or which parameters they leave open); ''."""
    source: str
    determined: bool = True
    """False when the law's bootstrap failed on more than the stated share of resamples."""
    fitted_range: Mapping[str, Sequence[float]] | None = None
    """{n_params, n_tokens, flops: [min, max]} of the fitted runs; None for older fits."""
    residual_sd_log: float = math.nan
    """The runs' scatter about the law (sd of log residuals); nan: no prediction interval."""
    dof: int = 0
    """That scatter's degrees of freedom (Student's t in the prediction interval; 0: normal)."""
    n_failed: int = 0
    """Resamples whose fit failed (left out of the samples)."""


def _loss(name: str, p: Mapping[str, Any], n: Any, d: Any, c: Any) -> Any:
    if name == "chinchilla":
        return chinchilla_loss(n, d, p["E"], p["A"], p["B"], p["alpha"], p["beta"])
    if name == "kaplan":
        return kaplan_loss(n, d, p["N_c"], p["D_c"], p["alpha_N"], p["alpha_D"])
    if name == "overtraining":
        return overtraining_loss(c, np.asarray(d) / np.asarray(n), p["E"], p["a"], p["b"], p["eta"])
    x = {"power_law_n": n, "power_law_d": d, "power_law_c": c}[name]
    return power_law_with_offset(x, p["E"], p["A"], p["alpha"])


def parse_values(text: str, what: str) -> list[float]:
    """'1e9,2e9' (a list) or '1e8:1e10:5' (5 values spaced evenly in log between the ends).

    Raises
    ------
    InputError
        Not numbers > 0, or a range that is not start:stop:count with count >= 2.
    """
    accepted = f"accepted for {what}: numbers > 0 as a list (1e9,2e9) or a log range (1e8:1e10:5)"
    try:
        if ":" in text:
            lo, hi, count = text.split(":")
            k = int(count)
            if k < 2:
                raise ValueError
            if k > MAX_QUERIES:
                raise InputError(
                    f"{what} {text!r}: {k} values; accepted: at most {MAX_QUERIES} per prediction"
                )
            values = list(np.geomspace(float(lo), float(hi), k))
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r}; {accepted}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{what} {text!r}; {accepted}")
    return [float(v) for v in values]


def load_law(path: str | os.PathLike[str], name: str, group: str | None = None) -> FittedLaw:
    """The law ``name`` of the fits.json at or beside ``path``, with its bootstrap samples.

    Raises
    ------
    InputError
        No fits.json or samples, a law it does not hold (or skipped), a grouped fit without
        ``group``, or a fit without bootstrap.
    """
    if name not in LAWS:
        raise InputError(f"--law {name!r}; accepted: {', '.join(LAWS)}")
    fj = fits_json_of(path)
    doc = read_fits_json(fj)
    try:
        return _law_of(doc, fj, name, group)
    except (AttributeError, KeyError, TypeError) as exc:  # a fits.json laid out otherwise
        raise InputError(
            f"{fj}: not laid out as `harness fit` writes it ({type(exc).__name__}: {exc})"
        ) from None


def _law_of(doc: Any, fj: Path, name: str, group: str | None) -> FittedLaw:
    prefix = ""
    if "groups" in doc:
        by = doc.get("settings", {}).get("group_by") or []
        labels = {"|".join(str(g["key"].get(c)) for c in by): g["fits"] for g in doc["groups"]}
        if group not in labels:
            shown = ", ".join(list(labels)[:6])
            raise InputError(f"{fj}: grouped by {by}; --group {group!r}; accepted: one of {shown}")
        fits, prefix = labels[group], f"{group}/"
    else:
        if group is not None:
            raise InputError(f"{fj}: --group {group!r}, but the fit is not grouped")
        fits = doc.get("fits", {})
    block = fits.get(name)
    if not isinstance(block, Mapping) or "params" not in block:
        why = block.get("skipped") if isinstance(block, Mapping) else "not fitted"
        raise InputError(f"{fj}: no {name} law ({why}); accepted: {_available(fits)}")
    need = _PARAMS[name]
    bad = {k: block["params"].get(k) for k in need if not _finite(block["params"].get(k))}
    if bad:
        shown = ", ".join(f"{k} = {v!r}" for k, v in bad.items())
        raise InputError(
            f"{fj}: {prefix}{name}.params has {shown}; accepted: finite numbers for "
            f"{', '.join(need)} (a fit that ran off has no prediction)"
        )
    sp = samples_path(fj)
    if not sp.is_file():
        raise InputError(
            f"{sp}: no bootstrap samples beside {fj.name}; `harness fit {fj.parent}` writes them"
        )
    arrays = read_samples(sp)
    samples = {
        k: arrays[f"{prefix}{name}/{k}"] for k in block["params"] if f"{prefix}{name}/{k}" in arrays
    }
    if len(samples) != len(block["params"]) or not all(v.size for v in samples.values()):
        raise InputError(
            f"{sp}: no bootstrap samples of {name} (fitted with --bootstrap 0?); "
            f"`harness fit {fj.parent}` with a bootstrap writes them"
        )
    undetermined = ""
    if block.get("determined") is False:
        undetermined = str(block.get("undetermined_reason", "not determined"))
    elif block.get("undetermined"):
        undetermined = "; ".join(f"{k} {v}" for k, v in block["undetermined"].items())
    sd = block.get("residual_sd_log")
    return FittedLaw(
        name,
        dict(block["params"]),
        samples,
        undetermined,
        str(fj),
        determined=block.get("determined") is not False,
        fitted_range=block.get("fitted_range"),
        residual_sd_log=float(sd) if isinstance(sd, (int, float)) else math.nan,
        dof=int(block["dof"]) if _finite(block.get("dof")) and block["dof"] >= 0 else 0,
        n_failed=int(block.get("n_bootstrap_failed") or 0),
    )


def fits_json_of(path: str | os.PathLike[str]) -> Path:
    """The fits.json at or beside ``path`` (a directory, its CSV, or the file itself).

    Raises
    ------
    InputError
        There is none.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory; accepted: a results directory, its CSV "
                         "or its fits.json")  # fmt: skip
    fj = p / "fits.json" if p.is_dir() else p if p.suffix == ".json" else p.parent / "fits.json"
    if not fj.is_file():
        raise InputError(f"{fj}: no fits.json; run `harness fit {p}` first")
    return fj


def load_task(path: str | os.PathLike[str], task: str) -> tuple[ts.TaskFit, Mapping[str, Any]]:
    """Task ``task`` of the fits.json at or beside ``path`` (its "tasks" object), with its
    paired bootstrap samples: (TaskFit, the task's block).

    Raises
    ------
    InputError
        No fits.json, no tasks object (no tasks.csv was fitted), an unknown or skipped task,
        or samples missing.
    """
    fj = fits_json_of(path)
    doc = read_fits_json(fj)
    tasks = doc.get("tasks", {}).get("tasks") if isinstance(doc.get("tasks"), Mapping) else None
    if not isinstance(tasks, Mapping):
        raise InputError(
            f"{fj}: no task laws; accepted: a fit of a directory with {ts.TASKS_CSV} beside "
            "its runs.csv (`harness fit`)"
        )
    block = tasks.get(task)
    if not isinstance(block, Mapping) or "step2" not in block:
        why = f" ({block['skipped']})" if isinstance(block, Mapping) else ""
        have = ", ".join(k for k, b in tasks.items() if isinstance(b, Mapping) and "step2" in b)
        raise InputError(f"{fj}: --task {task!r}{why}; accepted: {have or 'none fitted'}")
    arrays = read_samples(samples_path(fj)) if samples_path(fj).is_file() else {}
    try:
        s2 = block["step2"]
        if str(block["step1"]["source"]).startswith("bpb"):
            step1 = dict(block["step1"]["params"])
            prefix1 = f"tasks/{task}/step1/"
        else:
            step1 = dict(doc["fits"]["chinchilla"]["params"])
            prefix1 = "chinchilla/"
        step2 = dict(s2["params"])
        if s2["form"] not in ts.FORMS or not all(map(_finite, [*step1.values(), *step2.values()])):
            raise TypeError("a step's form or parameters")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{fj}: task {task!r} not laid out as `harness fit` writes it ({exc!r})"
        ) from None

    def rows(prefix: str, names: Sequence[str]) -> list[dict[str, float]]:
        cols = [arrays.get(prefix + k) for k in names]
        if any(c is None for c in cols):
            return []
        return [dict(zip(names, map(float, v), strict=True)) for v in zip(*cols, strict=True)]

    tf = ts.TaskFit(
        task=task,
        metric=str(block.get("metric", "acc")),
        chance=float(block["chance"]) if _finite(block.get("chance")) else math.nan,
        step1_source="bpb" if prefix1.startswith("tasks/") else "val_loss",
        step1=step1,
        step1_samples=rows(prefix1, list(step1)),
        form=str(s2["form"]),
        step2=step2,
        step2_samples=rows(f"tasks/{task}/step2/", list(step2)),
    )
    if not tf.step1_samples or not tf.step2_samples:
        raise InputError(
            f"{samples_path(fj)}: no bootstrap samples of task {task!r} (fitted with "
            f"--bootstrap 0?); `harness fit {fj.parent}` with a bootstrap writes them"
        )
    # The range step 1 was fitted on: the task's own bpb rows, or runs.csv's Chinchilla fit.
    if tf.step1_source == "bpb":
        fitted = block["step1"].get("fitted_range")
    else:
        fitted = (doc.get("fits") or {}).get("chinchilla", {}).get("fitted_range")
    return tf, {**block, "fitted_range": fitted}


def predict_task(
    tf: ts.TaskFit, block: Mapping[str, Any], n: Sequence[float], d: Sequence[float]
) -> list[dict[str, Any]]:
    """Accuracy on a task at every (n, d), chained through steps 1 and 2, with its 95%
    interval over the paired samples; undetermined where either step is, and the decades
    beyond the fitted runs (`extrapolation`)."""
    _check_size(list(n), list(d))
    N, D = (a.ravel() for a in np.meshgrid(np.asarray(n), np.asarray(d), indexing="ij"))
    point, per = ts.chain(tf, N, D)
    steps = (block.get("step1", {}), block.get("step2", {}))
    why = "; ".join(
        f"{name}: {s.get('undetermined_reason', 'not determined')}"
        for name, s in zip(("step 1", "step 2"), steps, strict=True)
        if s.get("determined") is False
    )
    lo_x = (block.get("step2", {}).get("loss_range") or [math.nan])[0]
    x_t = chinchilla_loss(N, D, **tf.step1)
    C = flops(N, D)
    out = []
    for i in range(N.size):
        ext = extrapolation(
            block.get("fitted_range") or {},
            n_params=float(N[i]),
            n_tokens=float(D[i]),
            flops=float(C[i]),
        )
        # The chain's other extrapolation: to a loss below any step 2 was fitted on, where the
        # accuracy curve is the form's assumption, not the data's.
        below = _finite(lo_x) and float(x_t[i]) < lo_x
        ext["step2_loss"] = float(x_t[i])
        ext["step2_loss_below_fitted"] = bool(below)
        out.append(
            {
                "task": tf.task,
                "metric": tf.metric,
                "n": float(N[i]),
                "d": float(D[i]),
                "flops": float(C[i]),
                "tokens_per_param": float(D[i] / N[i]),
                "accuracy": float(point[i]),
                "accuracy_ci95": ci95(per[:, i]),
                "undetermined": bool(why),
                "undetermined_reason": why,
                "extrapolation": ext,
                "step2_form": tf.form,
            }
        )
    return out


def task_table(rows: list[dict[str, Any]]) -> str:
    """The text table of `harness predict --task`."""
    lines = [
        f"{'task':<16}  {'N':>10}  {'D':>10}  {'D/N':>8}  accuracy [95% CI of the chain]",
    ]
    for r in rows:
        ci = r["accuracy_ci95"]
        lines.append(
            f"{r['task']:<16}  {fmt(r['n']):>10}  {fmt(r['d']):>10}  "
            f"{fmt(r['tokens_per_param']):>8}  {fmt(r['accuracy'])} [{fmt(ci[0])}, "
            f"{fmt(ci[1])}] ({r['metric']}, {r['step2_form']})  {_flags(r)}".rstrip()
        )
    return "\n".join(lines)


def _flags(r: Mapping[str, Any]) -> str:
    """What a printed answer says of itself: undetermined, extrapolated past the limit, a task's
    loss below step 2's data, and its decades beyond the fitted runs."""
    ext = r["extrapolation"]
    out = ["UNDETERMINED"] if r["undetermined"] else []
    if ext["flagged"]:
        out.append(f"EXTRAPOLATED (> {EXTRAPOLATION_DECADES_MAX:g} decades)")
    if ext.get("step2_loss_below_fitted"):
        out.append(f"LOSS {fmt(ext['step2_loss'])} BELOW STEP 2'S DATA")
    far = describe(ext)
    return "  ".join(out + ([far] if far else []))


_PARAMS: dict[str, tuple[str, ...]] = {
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "kaplan": ("N_c", "D_c", "alpha_N", "alpha_D"),
    "overtraining": ("E", "a", "b", "eta"),
    "power_law_n": ("E", "A", "alpha"),
    "power_law_d": ("E", "A", "alpha"),
    "power_law_c": ("E", "A", "alpha"),
}
"""The parameters each law's prediction needs."""


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _available(fits: Mapping[str, Any]) -> str:
    have = [k for k in LAWS if isinstance(fits.get(k), Mapping) and "params" in fits[k]]
    return ", ".join(have) or "none (the data support none of these laws)"


def _each_sample(law: FittedLaw) -> list[dict[str, float]]:
    keys = list(law.samples)
    return [dict(zip(keys, row, strict=True)) for row in zip(*law.samples.values(), strict=True)]


_PI_CHUNK = 256
"""Queries solved at once by `prediction_interval`: its memory is a few (samples x chunk)
arrays (1000 x 256 floats, 2 MB each) however many queries a range gives."""


def prediction_interval(log_samples: np.ndarray, sd: float, dof: int = 0) -> np.ndarray:
    """(P, 2) 2.5 and 97.5 percentiles of the mixture over samples s of log L_s + sd t, as
    losses; nan where sd is not finite or no sample is (module docstring).

    t is Student's t with ``dof`` degrees of freedom (the residuals' own), which carries the
    uncertainty of sd estimated from few runs (at 1 dof the 97.5% point is 12.7, not 1.96);
    ``dof`` 0 takes the normal (sd known). ``log_samples`` is (S, P): the log loss of each of S
    bootstrap samples at P queries; non-finite samples are left out per query, as `ci95` does.
    Queries are solved `_PI_CHUNK` at a time.
    """
    S, P = log_samples.shape
    out = np.full((P, 2), np.nan)
    if not (math.isfinite(sd) and sd > 0) or S == 0:
        return out
    for start in range(0, P, _PI_CHUNK):
        part = log_samples[:, start : start + _PI_CHUNK]
        fin = np.isfinite(part)
        ok = fin.any(axis=0)
        if ok.any():
            out[start : start + part.shape[1]][ok] = _mixture_percentiles(
                part[:, ok], fin[:, ok], sd, dof
            )
    return out


def _mixture_percentiles(x: np.ndarray, fin: np.ndarray, sd: float, dof: int) -> np.ndarray:
    """(P, 2) exp of the 2.5 and 97.5 percentiles y of F(y) = mean over finite s of
    T((y - x_s) / sd), T the t (or normal) CDF, for each column of x (S, P).

    F is a mixture of one shape shifted by each x_s, so its q-percentile lies between the
    smallest and the largest of the components' own, min x + t_q sd and max x + t_q sd: a
    bracket as narrow as the samples' spread. Newton's steps (F' is the mixture's density) solve
    it in a few evaluations; a step that leaves the bracket, which every evaluation narrows, is
    replaced by bisection, so the iteration cannot diverge.
    """
    w = fin.astype(float)
    n = w.sum(axis=0)
    x0 = np.where(fin, x, 0.0)
    if dof > 0:
        log_c = gammaln((dof + 1) / 2) - gammaln(dof / 2) - 0.5 * math.log(dof * math.pi)

        def cdf(z: np.ndarray) -> np.ndarray:
            return stdtr(dof, z)

        def pdf(z: np.ndarray) -> np.ndarray:
            return np.exp(log_c - (dof + 1) / 2 * np.log1p(z * z / dof))

        quantile = stdtrit
    else:

        def cdf(z: np.ndarray) -> np.ndarray:
            return ndtr(z)

        def pdf(z: np.ndarray) -> np.ndarray:
            return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

        quantile = lambda _dof, q: ndtri(q)  # noqa: E731 - the normal's, beside stdtrit
    out = np.empty((x.shape[1], 2))
    for j, q in enumerate((0.025, 0.975)):
        tq = float(quantile(dof, q)) * sd
        lo = np.nanmin(np.where(fin, x, np.nan), axis=0) + tq
        hi = np.nanmax(np.where(fin, x, np.nan), axis=0) + tq
        y = (lo + hi) / 2.0
        todo = np.arange(y.size)  # the columns not yet solved: only they are evaluated
        for _ in range(200):
            if todo.size == 0:
                break
            z = (y[None, todo] - x0[:, todo]) / sd
            wt, nt = w[:, todo], n[todo]
            F = (cdf(z) * wt).sum(axis=0) / nt - q
            dF = (pdf(z) * wt).sum(axis=0) / nt / sd
            yt = y[todo]
            lo[todo] = np.where(F < 0, yt, lo[todo])
            hi[todo] = np.where(F < 0, hi[todo], yt)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                step = yt - F / dF
            inside = (step > lo[todo]) & (step < hi[todo])
            nxt = np.where(inside, step, (lo[todo] + hi[todo]) / 2.0)
            # 1e-12 of y: F is a sum of S terms, good to ~1e-13, so no finer step is real.
            tol = 1e-12 * np.maximum(1.0, np.abs(yt))
            solved = (np.abs(nxt - yt) <= tol) | (hi[todo] - lo[todo] <= tol)
            y[todo] = nxt
            todo = todo[~solved]
        out[:, j] = np.exp(y)
    return out


def _verdict(law: FittedLaw, ext: Mapping[str, Any]) -> tuple[bool, str]:
    """(undetermined, why) of one prediction (module docstring)."""
    if not law.determined:
        return True, law.undetermined
    beyond = any(not (d <= 1e-9) for d in ext["decades"].values())
    if law.undetermined and beyond:
        return True, f"{law.undetermined}; and the query lies beyond the fitted runs"
    return False, ""


_OUTSIDE = (
    "the point lies outside the interval of its own bootstrap samples: the stored fit and its "
    "samples disagree (a fit on the start grid's edge, or an edited fits.json)"
)


def _check_size(*lists: Sequence[float]) -> None:
    k = math.prod(max(len(v), 1) for v in lists)
    if k > MAX_QUERIES:
        raise InputError(
            f"predict: {k} combinations of the values given; accepted: at most {MAX_QUERIES}"
        )


def predict(
    law: FittedLaw,
    n: Sequence[float] = (),
    d: Sequence[float] = (),
    c: Sequence[float] = (),
    tokens_per_param: Sequence[float] = (),
) -> list[dict[str, Any]]:
    """The loss at every combination of the quantities the law takes (`LAWS`), with its 95%
    confidence and prediction intervals over the bootstrap samples. One dict per query: law, n,
    d, flops, tokens_per_param, loss, loss_ci95, loss_pi95, undetermined (and why),
    extrapolation. ``tokens_per_param`` M gives D = M N in place of ``d``."""
    need = LAWS[law.name]
    if tokens_per_param and d:
        raise InputError("give --d or --tokens-per-param, not both")
    if tokens_per_param and not ("n" in need and "d" in need):
        raise InputError(f"--tokens-per-param needs a law of N and D, not --law {law.name}")
    given = {"n": list(n), "d": list(d) or list(tokens_per_param), "flops": list(c)}
    for q in need:
        if not given[q]:
            raise InputError(f"--law {law.name} predicts from {' and '.join(need)}: give --{q}")
    extra = [q for q in given if given[q] and q not in need]
    if extra:
        raise InputError(f"--law {law.name} takes {' and '.join(need)}, not --{extra[0]}")
    _check_size(given["n"], given["d"], given["flops"])
    ns = np.array(given["n"] or [math.nan])
    ds = np.array(given["d"] or [math.nan])
    cs = np.array(given["flops"] or [math.nan])
    N, D, C = (a.ravel() for a in np.meshgrid(ns, ds, cs, indexing="ij"))
    if tokens_per_param:
        D = D * N
    if "flops" not in need:
        C = flops(N, D)
    with np.errstate(all="ignore"):
        point = np.asarray(_loss(law.name, law.params, N, D, C), dtype=float)
    if not np.all(np.isfinite(point)):
        i = int(np.flatnonzero(~np.isfinite(point))[0])
        raise InputError(
            f"{law.source}: {law.name} gives no finite loss at N = {N[i]:.4g}, D = {D[i]:.4g} "
            f"(its parameters {law.params}); accepted: a fit whose law is finite there"
        )
    with np.errstate(all="ignore"):
        per_sample = np.array(
            [_loss(law.name, s, N, D, C) for s in _each_sample(law)], dtype=float
        ).reshape(-1, N.size)
        pi = prediction_interval(np.log(per_sample), law.residual_sd_log, law.dof)
    rng = law.fitted_range or {}
    out = []
    for i in range(N.size):
        q = {
            "n_params": None if "n" not in need else float(N[i]),
            "n_tokens": None if "d" not in need else float(D[i]),
            "flops": None if math.isnan(C[i]) else float(C[i]),
        }
        ext = extrapolation(rng, **q)
        und, why = _verdict(law, ext)
        ci = ci95(per_sample[:, i])
        if not und and not (ci[0] <= point[i] <= ci[1]):
            und, why = True, _OUTSIDE
        row = {
            "law": law.name,
            "n": None if math.isnan(N[i]) else float(N[i]),
            "d": None if math.isnan(D[i]) else float(D[i]),
            "flops": None if math.isnan(C[i]) else float(C[i]),
            "tokens_per_param": (
                None if math.isnan(N[i]) or math.isnan(D[i]) else float(D[i] / N[i])
            ),
            "loss": float(point[i]),
            "loss_ci95": ci,
            "loss_pi95": [float(v) for v in pi[i]],
            "undetermined": und,
            "undetermined_reason": why,
            "extrapolation": ext,
        }
        out.append(row)
    return out


def predict_optimal(law: FittedLaw, c: Sequence[float]) -> list[dict[str, Any]]:
    """The compute-optimal model for each budget C (FLOPs) from approach 3 (Hoffmann et al.
    2022, eq. 4): n_opt, d_opt, tokens_per_param and the loss there, each with its 95%
    interval over the bootstrap samples (each sample at its own optimum)."""
    if law.name != "chinchilla":
        raise InputError(
            f"--flops with --law {law.name}: the compute-optimal model needs chinchilla"
        )
    C = np.asarray(c, dtype=float)

    def optimum(p: Mapping[str, float]) -> np.ndarray | None:
        try:
            co = compute_optimal(p["A"], p["B"], p["alpha"], p["beta"])
        except ValueError:  # a sample with a non-positive exponent has no optimum
            return None
        n_opt, d_opt = co.n_opt(C), co.d_opt(C)
        loss = chinchilla_loss(n_opt, d_opt, p["E"], p["A"], p["B"], p["alpha"], p["beta"])
        return np.array([n_opt, d_opt, d_opt / n_opt, loss])

    _check_size(list(C))
    point = optimum(law.params)
    if point is None:
        raise InputError(f"{law.source}: the chinchilla fit has no compute optimum ({law.params})")
    samples = [o for o in map(optimum, _each_sample(law)) if o is not None]
    stack = np.array(samples) if samples else np.full((1, 4, C.size), math.nan)
    with np.errstate(all="ignore"):
        pi = prediction_interval(np.log(stack[:, 3, :]), law.residual_sd_log, law.dof)
    rng = law.fitted_range or {}
    out = []
    for i in range(C.size):
        ext = extrapolation(
            rng, n_params=float(point[0, i]), n_tokens=float(point[1, i]), flops=float(C[i])
        )
        und, why = _verdict(law, ext)
        row: dict[str, Any] = {
            "law": law.name,
            "n": float(point[0, i]),
            "d": float(point[1, i]),
            "flops": float(C[i]),
            "loss": float(point[3, i]),
            "loss_ci95": ci95(stack[:, 3, i]),
            "loss_pi95": [float(v) for v in pi[i]],
            "undetermined": und,
            "undetermined_reason": why,
            "extrapolation": ext,
        }
        for j, key in enumerate(("n_opt", "d_opt", "tokens_per_param")):
            row[key] = float(point[j, i])
            row[f"{key}_ci95"] = ci95(stack[:, j, i])
        out.append(row)
    return out


def table(law: FittedLaw, rows: list[dict[str, Any]]) -> str:
    """The text table `harness predict` prints: each answer with its confidence interval (CI,
    the law's) and prediction interval (PI, a new run's), and a flag when it is undetermined or
    extrapolated past the stated limit."""
    n_samples = len(next(iter(law.samples.values())))
    sd = law.residual_sd_log
    lines = [
        f"{law.name} from {law.source}: 95% CI of the law from {n_samples} kept bootstrap "
        f"samples ({law.n_failed} failed resamples left out); 95% PI adds the runs' scatter "
        + (f"(sd {sd:.3g} in log loss)" if math.isfinite(sd) else "(none: no residual dof)")
    ]
    if law.undetermined:
        lines.append(f"note: the data leave this law undetermined in part ({law.undetermined})")

    def iv(x: float, ci: list[float]) -> str:
        return f"{fmt(x)} [{fmt(ci[0])}, {fmt(ci[1])}]"

    if rows and "n_opt" in rows[0]:
        lines.append(
            f"{'C (FLOPs)':>10}  {'N_opt':>26}  {'D_opt':>26}  {'D/N':>22}  "
            f"{'loss (CI)':>26}  {'PI':>18}"
        )
        for r in rows:
            lines.append(
                f"{fmt(r['flops']):>10}  {iv(r['n_opt'], r['n_opt_ci95']):>26}  "
                f"{iv(r['d_opt'], r['d_opt_ci95']):>26}  "
                f"{iv(r['tokens_per_param'], r['tokens_per_param_ci95']):>22}  "
                f"{iv(r['loss'], r['loss_ci95']):>26}  "
                f"[{fmt(r['loss_pi95'][0])}, {fmt(r['loss_pi95'][1])}]  {_flags(r)}".rstrip()
            )
        return "\n".join(lines)
    lines.append(f"{'N':>10}  {'D':>10}  {'D/N':>8}  {'C=6ND':>10}  {'loss (CI)':>26}  {'PI':>18}")
    for r in rows:
        lines.append(
            f"{fmt(r['n']):>10}  {fmt(r['d']):>10}  {fmt(r['tokens_per_param']):>8}  "
            f"{fmt(r['flops']):>10}  {iv(r['loss'], r['loss_ci95']):>26}  "
            f"[{fmt(r['loss_pi95'][0])}, {fmt(r['loss_pi95'][1])}]  {_flags(r)}".rstrip()
        )
    return "\n".join(lines)
