"""Task accuracy against scale: the two-step prediction of downstream accuracy from a ladder.

Labs ask a ladder for the accuracy of the model they are about to train, not only its loss.
Two published methods chain a loss law and a map from loss to accuracy:

1. Step 1, a loss from N and D: L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022,
   eq. 2, fitted as approach 3, `fit.fit_chinchilla`). The loss is the task's own loss (bits
   per byte of the correct answer, metric ``bpb``, as Bhagia et al. 2024 fit it) where
   tasks.csv holds it, else the validation loss of runs.csv (as Gadre et al. 2024 do), whose
   Chinchilla fit is then step 1.
2. Step 2, accuracy from that loss, in one of two forms:

   - ``sigmoid``: Acc(x) = a / (1 + exp(-k (x - x0))) + b (Bhagia et al. 2024, "Establishing
     Task Scaling Laws via Compute-Efficient Model Ladders", eq. 2), fitted with their ideal
     point (x = 0, Acc = 1) added, so that the ceiling is anchored where the loss vanishes
     rather than left to the ladder's small models; a <= 0 and k >= 0 (accuracy falls as the
     loss rises, from b to a + b);
   - ``exponential``: Err(x) = eps - k exp(-gamma x), Acc = 1 - Err (Gadre et al. 2024,
     "Language models scale reliably with over-training and on downstream tasks", eq. 5).

   Per task the form is chosen by a stated criterion: each is fitted on the rows of every
   model but the largest (largest N) and predicts the rows of the largest; the lower mean
   absolute error wins (ties: the sigmoid). That is the question a ladder answers, asked of
   the rungs it has.

Chained: Acc(N, D) = Acc(L(N, D)). Intervals come from paired bootstrap samples: step 1's kept
resamples (over its runs) and step 2's kept resamples (over its rows) are paired in order, and
each pair gives one accuracy; the samples are stored in fits.bootstrap.npz under
``tasks/TASK/step1/PARAM`` and ``tasks/TASK/step2/PARAM`` so that `harness predict --task`
needs no refit. A resample is kept only when its fit converged to finite parameters
(`fit.kept_resamples`' rule, applied to step 2 here).

Input, tasks.csv beside runs.csv (from any source): one row per (model or checkpoint, task,
metric): run_id (optional), n_params, n_tokens (at that checkpoint), task, metric (``acc``,
``acc_norm`` or ``bpb``), value, chance (the chance accuracy; blank for bpb rows).
Intermediate checkpoints are rows of their own, with their n_tokens. Where tasks.csv has a
``final`` column (the in-loop evaluation's, `harness.results`: 1 on a run's last step), step 1
is fitted on the final rows only and step 2 on every row: a checkpoint in the middle of a
decaying schedule is not a run trained to that D (Hoffmann et al. 2022), while the map from a
task's loss to its accuracy holds at any checkpoint (Bhagia et al. 2024 fit step 2 on
intermediate checkpoints too). Pure functions of arrays and DataFrames (numpy, scipy, pandas
only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.optimize import least_squares

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import ci95, fmt, resample_weights, rng_for
from harness.analysis.io import done_rows, line_list, read_results_csv, sha256_of, value_list
from harness.analysis.laws import chinchilla_loss
from harness.analysis.where import select_rows, where_columns
from harness.errors import InputError
from harness.flops import training_flops

__all__ = [
    "FORMS",
    "TASKS_CSV",
    "TASK_COLUMNS",
    "TaskFit",
    "chain",
    "final_rows",
    "fit_step2",
    "fit_tasks",
    "heldout_task",
    "load_tasks",
    "step2_accuracy",
    "step2_rows",
    "summarize_tasks",
]

FloatArray = NDArray[np.float64]

TASKS_CSV = "tasks.csv"
"""The task table beside runs.csv."""
TASK_COLUMNS: tuple[str, ...] = ("n_params", "n_tokens", "task", "metric", "value", "chance")
"""Required columns of tasks.csv (run_id optional)."""
ACC_METRICS = ("acc", "acc_norm")
METRICS = (*ACC_METRICS, "bpb")
FORMS: tuple[str, ...] = ("sigmoid", "exponential")
"""Step-2 forms: Bhagia et al. 2024's sigmoid and Gadre et al. 2024's exponential."""
IDEAL_POINT = (0.0, 1.0)
"""(loss, accuracy) added to the sigmoid's fit: at zero loss every answer is right."""
MIN_MODELS = 3
"""Distinct model sizes a task needs: two to fit step 2 on and the largest to choose by."""
HELDOUT_QUANTILE = 0.75
"""The held-out check fits the runs at or below this quantile of final compute, as the laws'
held-out check does (`harness.analysis.registry.heldout`, fitting's default)."""

_PARAMS = {"sigmoid": ("a", "b", "k", "x0"), "exponential": ("eps", "k", "gamma")}
_BOUNDS = {
    "sigmoid": ([-2.0, -1.0, 0.0, -50.0], [0.0, 2.0, 1e3, 50.0]),
    "exponential": ([-1.0, 0.0, 0.0], [2.0, 1e9, 50.0]),
}


def step2_accuracy(form: str, x: Any, p: Mapping[str, float]) -> Any:
    """Accuracy at loss x by step-2 form ``form`` (module docstring)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        if form == "sigmoid":
            return p["a"] / (1.0 + np.exp(-p["k"] * (x - p["x0"]))) + p["b"]
        return 1.0 - (p["eps"] - p["k"] * np.exp(-p["gamma"] * x))


def _starts(form: str, x: FloatArray, y: FloatArray, chance: float) -> list[list[float]]:
    """A small grid of starting points from the data's own scale."""
    qs = np.quantile(x, [0.25, 0.5, 0.75])
    if form == "sigmoid":
        floor = chance if math.isfinite(chance) else float(y.min())
        return [
            [floor - b, b, k, float(x0)] for b in (0.9, 1.0) for k in (1.0, 3.0, 10.0) for x0 in qs
        ]
    out = []
    for gamma in (0.5, 1.0, 2.0, 4.0):
        for eps in (1.0 - (chance if math.isfinite(chance) else 0.0), float(1.0 - y.min())):
            # k so that the curve meets the best point: eps - k exp(-gamma x_min) = 1 - y_max
            k = max((eps - (1.0 - float(y.max()))) * math.exp(gamma * float(x.min())), 1e-6)
            out.append([eps, min(k, 1e9), gamma])
    return out


def _residual(form: str) -> Callable[[FloatArray, FloatArray, FloatArray], FloatArray]:
    names = _PARAMS[form]

    def res(theta: FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
        return np.asarray(step2_accuracy(form, x, dict(zip(names, theta, strict=True)))) - y

    return res


def _fitted_points(form: str, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The points a form is fitted to: the sigmoid's with Bhagia et al.'s ideal point added."""
    if form != "sigmoid":
        return x, y
    return np.concatenate([[IDEAL_POINT[0]], x]), np.concatenate([[IDEAL_POINT[1]], y])


def _lsq(
    form: str, x: FloatArray, y: FloatArray, starts: Sequence[Sequence[float]], tol: float = 1e-12
) -> tuple[dict[str, float], bool]:
    """Best least-squares fit of ``form`` from ``starts``; (params, converged). The tolerances
    are tight by default: the optimum, not where a loose rule stops, is what another CPU must
    find again (`reproduce`); the bootstrap's refits use scipy's defaults."""
    lo, hi = _BOUNDS[form]
    res = _residual(form)
    x, y = _fitted_points(form, x, y)
    best, best_cost, ok = None, math.inf, False
    for s in starts:
        s0 = np.clip(np.asarray(s, dtype=float), lo, hi)
        try:
            r = least_squares(
                res, s0, bounds=(lo, hi), args=(x, y), x_scale="jac", ftol=tol, xtol=tol, gtol=tol
            )
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and r.cost < best_cost:
            best, best_cost, ok = r.x, float(r.cost), bool(r.success)
    if best is None:
        return {k: math.nan for k in _PARAMS[form]}, False
    return dict(zip(_PARAMS[form], map(float, best), strict=True)), ok


def fit_step2(
    form: str, x: Any, acc: Any, chance: float = math.nan
) -> tuple[dict[str, float], bool]:
    """Fit step 2 of ``form`` to losses ``x`` and accuracies ``acc``; (params, converged).

    Raises
    ------
    InputError
        An unknown form, or fewer points than the form has parameters.
    """
    if form not in FORMS:
        raise InputError(f"step 2 form {form!r}; accepted: {', '.join(FORMS)}")
    X, Y = np.asarray(x, dtype=float), np.asarray(acc, dtype=float)
    if X.size < len(_PARAMS[form]):
        raise InputError(
            f"step 2 ({form}): {X.size} points, fewer than its {len(_PARAMS[form])} parameters"
        )
    return _lsq(form, X, Y, _starts(form, X, Y, chance))


# ---------------------------------------------------------------------------------------------
# tasks.csv


def load_tasks(path: str | os.PathLike[str], where: str | None = None) -> pd.DataFrame:
    """Read tasks.csv (module docstring) and check every value.

    ``where`` (the fit's --where) selects rows first when tasks.csv has every column it names
    (``attrs["where_applied"]`` says whether it did): a task table from elsewhere need not
    carry runs.csv's bookkeeping columns. A line column gives each row's line in the file.

    Raises
    ------
    InputError
        Missing file or columns; a metric, value or chance out of range (one line naming the
        file, column, values and lines); a (run, checkpoint, task, metric) given twice.
    """
    csv = Path(path)
    df = read_results_csv(csv, {"run_id": str, "task": str, "metric": str})
    missing = [c for c in TASK_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{csv}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}; "
            f"accepted: {', '.join(TASK_COLUMNS)} (and run_id)"
        )
    df, _ = done_rows(df)
    applied = bool(where) and where_columns(where, f"{csv}: --where") <= set(df.columns)
    if applied:
        df = select_rows(df, where, csv)
    df["task"] = df["task"].astype(str).str.strip()
    df["metric"] = df["metric"].astype(str).str.strip()
    bad = ~df["metric"].isin(METRICS)
    if bad.any():
        raise InputError(
            f"{csv}: column 'metric' has value(s) {value_list(list(df.loc[bad, 'metric']))} at "
            f"{line_list(df.loc[bad, 'line'])}; accepted: {', '.join(METRICS)}"
        )
    is_acc = df["metric"].isin(ACC_METRICS).to_numpy()

    def numeric(col: str, rows: NDArray[np.bool_], ok: Any, accepted: str) -> None:
        raw = df[col]
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(rows & ~(np.isfinite(vals) & ok(vals)))
        if bad.size:
            raise InputError(
                f"{csv}: column {col!r} has bad value(s) {value_list(list(raw.iloc[bad]))} at "
                f"{line_list(df['line'].iloc[bad])}; accepted: {accepted}"
            )
        df[col] = vals

    every = np.ones(len(df), dtype=bool)
    numeric("n_params", every, lambda v: v > 0, "finite numbers > 0")
    numeric("n_tokens", every, lambda v: v > 0, "finite numbers > 0")
    raw_value = df["value"]
    vals = pd.to_numeric(raw_value, errors="coerce").to_numpy(dtype=float)
    ok_acc = np.isfinite(vals) & (vals >= 0) & (vals <= 1)
    ok_bpb = np.isfinite(vals) & (vals > 0)
    bad = np.flatnonzero(np.where(is_acc, ~ok_acc, ~ok_bpb))
    if bad.size:
        raise InputError(
            f"{csv}: column 'value' has bad value(s) {value_list(list(raw_value.iloc[bad]))} at "
            f"{line_list(df['line'].iloc[bad])}; accepted: an accuracy in [0, 1] (metric acc, "
            "acc_norm) or bits per byte > 0 (metric bpb)"
        )
    df["value"] = vals
    chance = pd.to_numeric(df["chance"], errors="coerce").to_numpy(dtype=float)
    given = df["chance"].notna().to_numpy()
    bad = np.flatnonzero(given & ~(np.isfinite(chance) & (chance >= 0) & (chance < 1)))
    if bad.size:
        raise InputError(
            f"{csv}: column 'chance' has bad value(s) {value_list(list(df['chance'].iloc[bad]))} "
            f"at {line_list(df['line'].iloc[bad])}; accepted: the chance accuracy in [0, 1), "
            "or blank where unknown (an average over tasks) and on bpb rows"
        )
    df["chance"] = chance
    for task, g in df[is_acc].groupby("task"):
        if g["chance"].nunique(dropna=False) > 1:
            raise InputError(
                f"{csv}: task {task!r} has chance {value_list(sorted(np.unique(g['chance'])))} "
                f"at {line_list(g['line'])}; accepted: one chance accuracy per task"
            )
    key = [c for c in ("run_id",) if c in df.columns and df[c].notna().all()]
    key += ["n_params", "n_tokens", "task", "metric"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise InputError(
            f"{csv}: {', '.join(key)} repeat at {line_list(df.loc[dup, 'line'])}; accepted: "
            "one row per model or checkpoint, task and metric"
        )
    if df.empty:
        raise InputError(f"{csv}: no usable row; accepted: at least one task row")
    df.attrs["path"] = str(csv)
    df.attrs["where_applied"] = applied
    return df


# ---------------------------------------------------------------------------------------------
# One task: step 1, step 2, the chain


@dataclass(frozen=True)
class TaskFit:
    """One task's chain: step-1 and step-2 parameters and their paired kept samples."""

    task: str
    metric: str
    chance: float
    step1_source: str
    """'bpb' (the task's own loss, fitted here) or 'val_loss' (runs.csv's Chinchilla fit)."""
    step1: dict[str, float]
    step1_samples: list[dict[str, float]]
    form: str
    step2: dict[str, float]
    step2_samples: list[dict[str, float]]


def chain(t: TaskFit, n: Any, d: Any) -> tuple[FloatArray, FloatArray]:
    """(point accuracy, (pairs, points) sample accuracies) at (n, d): step 2 of step 1, each
    step-1 sample paired with the step-2 sample of the same index."""
    n, d = np.atleast_1d(np.asarray(n, dtype=float)), np.atleast_1d(np.asarray(d, dtype=float))
    # Accuracies are clipped to [0, 1]: the exponential form runs past 1 at losses below its
    # data (Err = eps - k exp(-gamma x) < 0), which no model can reach.
    point = np.clip(step2_accuracy(t.form, chinchilla_loss(n, d, **t.step1), t.step2), 0.0, 1.0)
    k = min(len(t.step1_samples), len(t.step2_samples))
    samples = np.array(
        [
            step2_accuracy(t.form, chinchilla_loss(n, d, **s1), s2)
            for s1, s2 in zip(t.step1_samples[:k], t.step2_samples[:k], strict=True)
        ]
    ).reshape(k, n.size)
    return np.asarray(point, dtype=float), np.clip(samples, 0.0, 1.0)


def _largest_out_error(
    form: str, N: FloatArray, x: FloatArray, y: FloatArray, chance: float
) -> float:
    """The selection criterion: mean |error| on the largest model's rows, fitted on the rest."""
    top = N == N.max()
    try:
        p, ok = fit_step2(form, x[~top], y[~top], chance)
    except InputError:
        return math.inf
    if not ok or not all(math.isfinite(v) for v in p.values()):
        return math.inf
    return float(np.mean(np.abs(step2_accuracy(form, x[top], p) - y[top])))


def _at_bound(form: str, p: Mapping[str, float]) -> list[str]:
    """The parameters within a millionth (relative, at least 1e-6) of a bound of the solver's
    box: there the least-squares solver stops and reports success, but the data did not choose
    the value."""
    lo, hi = _BOUNDS[form]
    return [
        k
        for k, a, b in zip(_PARAMS[form], lo, hi, strict=True)
        if p[k] <= a + 1e-6 * max(1.0, abs(a)) or p[k] >= b - 1e-6 * max(1.0, abs(b))
    ]


def _bootstrap_step2(
    form: str,
    x: FloatArray,
    y: FloatArray,
    runs: NDArray[Any],
    full: Mapping[str, float],
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[list[dict[str, float]], int]:
    """Resample whole runs of the step-2 rows (a cluster bootstrap: a run's checkpoints are not
    independent) and refit from the full fit. Kept: converged, finite, off the solver's bounds,
    and with at least as many distinct rows as parameters."""
    W = resample_weights(x.size, n_resamples, rng, runs)
    kept: list[dict[str, float]] = []
    n_par = len(_PARAMS[form])
    warm = [[full[k] for k in _PARAMS[form]]]
    for w in W:
        idx = np.repeat(np.arange(x.size), w.astype(int))
        if np.unique(idx).size < n_par:
            continue
        p, ok = _lsq(form, x[idx], y[idx], warm, tol=1e-8)
        if ok and all(math.isfinite(v) for v in p.values()) and not _at_bound(form, p):
            kept.append(p)
    return kept, n_resamples - len(kept)


def _step2_precision(
    form: str, x: FloatArray, y: FloatArray, p: Mapping[str, float]
) -> dict[str, float]:
    """+- numerical precision of each step-2 parameter (`identify.precision`: how far it can
    move while the sum of squares stays within a relative 1e-9), so that `reproduce` compares
    them within what the optimum itself fixes."""
    names = _PARAMS[form]
    res = _residual(form)
    x, y = _fitted_points(form, x, y)

    def f_of(theta: FloatArray) -> float:
        r = res(theta, x, y)
        return float(0.5 * np.dot(r, r))

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        f = np.array([f_of(t) for t in X])
        G = np.empty_like(X)
        for j, t in enumerate(X):
            for i in range(t.size):
                h = 1e-6 * max(1.0, abs(t[i]))
                up, dn = t.copy(), t.copy()
                up[i] += h
                dn[i] -= h
                G[j, i] = (f_of(up) - f_of(dn)) / (2 * h)
        return f, G

    theta = np.array([p[k] for k in names])
    with np.errstate(all="ignore"):
        return identify.precision(
            fun, theta, f_of(theta), lambda t: dict(zip(names, map(float, t), strict=True))
        )


def _param_block(
    params: Mapping[str, float], boots: Sequence[Mapping[str, float]], n_failed: int, n_boot: int
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "params": dict(params),
        "ci95": {k: ci95(b[k] for b in boots) for k in params} if boots else {},
        "ci95_mc_se": (
            {k: identify.interval_se([b[k] for b in boots]) for k in params} if boots else {}
        ),
        "n_bootstrap": n_boot,
        "n_bootstrap_failed": n_failed,
        **identify.failure_verdict(
            n_failed, n_boot, "no convergence, too few runs, or a fit on the solver's bounds"
        ),
    }
    return block


def _run_key(df: pd.DataFrame) -> pd.Series:
    """Which run each row belongs to: run_id where every row has one, else the row itself."""
    if "run_id" in df.columns and df["run_id"].notna().all():
        return df["run_id"].astype(str)
    return pd.Series([f"row{i}" for i in range(len(df))], index=df.index)


def step2_rows(
    rows: pd.DataFrame, runs: pd.DataFrame, source: str
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[Any]]:
    """(N, x, accuracy, run) of the rows step 2 is fitted on: each accuracy row with its loss,
    and the run it belongs to (the bootstrap resamples whole runs).

    The loss is the task's bpb at the same checkpoint, or the validation loss of runs.csv: of
    the same run (run_id and n_tokens) where both files name runs, else the lowest loss at the
    same (N, D), as the laws see repeats and sweeps (`sweeps.best_per_point`)."""
    acc = rows[rows["metric"].isin(ACC_METRICS)].copy()
    acc["_run"] = _run_key(acc)
    if source == "bpb":
        bpb = rows[rows["metric"] == "bpb"]
        on = ["n_params", "n_tokens"] + (["run_id"] if "run_id" in rows.columns else [])
        on = [c for c in on if acc[c].notna().all() and bpb[c].notna().all()]
        m = acc.merge(bpb[[*on, "value"]], on=on, suffixes=("", "_x"))
    else:
        by_run = (
            "run_id" in acc.columns
            and "run_id" in runs.columns
            and acc["run_id"].notna().all()
            and runs["run_id"].notna().all()
        )
        on = ["run_id", "n_params", "n_tokens"] if by_run else ["n_params", "n_tokens"]
        losses = runs.groupby(on, as_index=False)["loss"].min()
        m = acc.merge(losses.rename(columns={"loss": "value_x"}), on=on)
    return (
        m["n_params"].to_numpy(float),
        m["value_x"].to_numpy(float),
        m["value"].to_numpy(float),
        m["_run"].to_numpy(),
    )


def fit_task(
    task: str,
    rows: pd.DataFrame,
    runs: pd.DataFrame,
    val_step1: fitmod.FitResult | None,
    val_boots: Sequence[Mapping[str, float]],
    *,
    seed: int,
    n_bootstrap: int,
    val_block: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], TaskFit]:
    """One task's block of fits.json and its TaskFit (module docstring).

    Raises
    ------
    InputError
        Too few rows or sizes for the chain, naming the task and what it lacks.
    """
    acc_rows = rows[rows["metric"].isin(ACC_METRICS)]
    if acc_rows.empty:
        raise InputError(f"task {task!r}: no acc or acc_norm rows; accepted: accuracy rows")
    metric = str(acc_rows["metric"].iloc[0])
    if acc_rows["metric"].nunique() > 1:
        raise InputError(
            f"task {task!r}: both acc and acc_norm rows; accepted: one accuracy metric per task"
        )
    chance = float(acc_rows["chance"].iloc[0])
    source = "bpb" if (rows["metric"] == "bpb").any() else "val_loss"
    if source == "bpb":
        b = rows[rows["metric"] == "bpb"]
        if "final" in b.columns:  # in-loop rows: step 1 on each run's last checkpoint only
            b = b[pd.to_numeric(b["final"], errors="coerce") == 1]
        N1, D1, L1 = (b[c].to_numpy(float) for c in ("n_params", "n_tokens", "value"))
        r1 = fitmod.fit_chinchilla(N1, D1, L1, name=f"task {task} step 1 (bpb)")
        boots1, nf1 = (
            fitmod.bootstrap_chinchilla(
                N1,
                D1,
                L1,
                r1,
                n_resamples=n_bootstrap,
                rng=rng_for(seed, "tasks:" + task + "/step1"),
                groups=_run_key(b).to_numpy(),
            )
            if n_bootstrap
            else ([], 0)
        )
        step1_block = {
            "source": "bpb: the task's own loss, L(N, D) fitted on its bpb rows",
            "n_points": int(N1.size),
            "fitted_range": {
                "n_params": [float(N1.min()), float(N1.max())],
                "n_tokens": [float(D1.min()), float(D1.max())],
                "flops": [
                    float(training_flops(N1, D1).min()),
                    float(training_flops(N1, D1).max()),
                ],
            },
            **_param_block(r1.params, boots1, nf1, n_bootstrap),
            "precision": dict(r1.precision),
            "undetermined": dict(r1.undetermined),
        }
        step1, boots1_list = dict(r1.params), list(boots1)
    else:
        if val_step1 is None:
            raise InputError(
                f"task {task!r}: no bpb rows and no Chinchilla fit of runs.csv to chain from; "
                "accepted: bpb rows, or runs.csv rows that support approach 3"
            )
        step1_block = {"source": "val_loss: the Chinchilla fit of runs.csv (fits.chinchilla)"}
        # That law's verdict is this step's: a chain is no better determined than its links.
        for k in ("determined", "undetermined_reason"):
            if val_block is not None and k in val_block:
                step1_block[k] = val_block[k]
        step1, boots1_list = dict(val_step1.params), list(val_boots)
    N, x, y, run_of = step2_rows(rows, runs, source)
    if np.unique(N).size < MIN_MODELS:
        raise InputError(
            f"task {task!r}: {np.unique(N).size} model size(s) with both an accuracy and a "
            f"{'bpb' if source == 'bpb' else 'validation loss (runs.csv at the same N, D)'}; "
            f"accepted: at least {MIN_MODELS}"
        )
    criterion = {f: _largest_out_error(f, N, x, y, chance) for f in FORMS}
    form = min(FORMS, key=lambda f: (criterion[f], FORMS.index(f)))
    p2, ok2 = fit_step2(form, x, y, chance)
    if not ok2 or not all(math.isfinite(v) for v in p2.values()):
        raise InputError(f"task {task!r}: the {form} step 2 did not converge on its rows")
    boots2, nf2 = (
        _bootstrap_step2(
            form, x, y, run_of, p2, n_bootstrap, rng_for(seed, "tasks:" + task + "/step2")
        )
        if n_bootstrap
        else ([], 0)
    )
    bound = _at_bound(form, p2)
    tf = TaskFit(task, metric, chance, source, step1, boots1_list, form, p2, boots2)
    block = {
        "metric": metric,
        "chance": chance if math.isfinite(chance) else None,
        "step1": step1_block,
        "step2": {
            "form": form,
            "source": {
                "sigmoid": "Bhagia et al. 2024, eq. 2, with the ideal point (0, 1)",
                "exponential": "Gadre et al. 2024, eq. 5",
            }[form],
            "n_points": int(x.size),
            "loss_range": [float(x.min()), float(x.max())],
            "criterion": {
                "rule": "mean |error| on the largest model's rows, fitted on the others"
                + (
                    ""
                    if any(map(math.isfinite, criterion.values()))
                    else "; neither form could be scored, the sigmoid taken"
                ),  # fmt: skip
                **{f: (v if math.isfinite(v) else None) for f, v in criterion.items()},
            },
            **_param_block(p2, boots2, nf2, n_bootstrap),
            "precision": _step2_precision(form, x, y, p2),
            "undetermined": dict.fromkeys(bound, "on the solver's bound: not chosen by the data"),
        },
    }
    if bound:
        block["step2"]["determined"] = False
        block["step2"]["undetermined_reason"] = (
            f"{', '.join(bound)} on the solver's bound: the data do not determine step 2"
        )
    return block, tf


def fit_tasks(
    tasks: pd.DataFrame,
    runs: pd.DataFrame,
    val_step1: fitmod.FitResult | None,
    val_boots: Sequence[Mapping[str, float]],
    *,
    seed: int,
    n_bootstrap: int,
    target: tuple[float, float],
    val_block: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, FloatArray]]:
    """Every task of tasks.csv: (the "tasks" object of fits.json, its bootstrap samples by
    npz key). A task the data cannot support is kept as {"skipped": why}. Each task's block
    holds its prediction at ``target`` (N, D): the largest run of the ladder."""
    out: dict[str, Any] = {}
    samples: dict[str, FloatArray] = {}
    n_t, d_t = target
    for task in sorted(tasks["task"].unique()):
        rows = tasks[tasks["task"] == task]
        try:
            block, tf = fit_task(
                task,
                rows,
                runs,
                val_step1,
                val_boots,
                seed=seed,
                n_bootstrap=n_bootstrap,
                val_block=val_block,
            )
        except InputError as exc:
            out[task] = {"skipped": str(exc)}
            continue
        block["prediction"] = _prediction(tf, block, n_t, d_t)
        try:
            block["heldout"] = heldout_task(task, rows, runs, seed=seed, n_bootstrap=n_bootstrap)
        except InputError as exc:
            block["heldout"] = {"skipped": str(exc)}
        out[task] = block
        if tf.step1_source == "bpb" and tf.step1_samples:
            for k in tf.step1:
                samples[f"tasks/{task}/step1/{k}"] = np.array([s[k] for s in tf.step1_samples])
        if tf.step2_samples:
            for k in tf.step2:
                samples[f"tasks/{task}/step2/{k}"] = np.array([s[k] for s in tf.step2_samples])
    return out, samples


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Each run's last checkpoint: the ``final`` rows where tasks.csv marks them, else each
    run's rows of its largest n_tokens (a row without run_id is a run of its own)."""
    if "final" in rows.columns:
        return rows[pd.to_numeric(rows["final"], errors="coerce") == 1]
    key = _run_key(rows)
    return rows[rows["n_tokens"] == rows.groupby(key)["n_tokens"].transform("max")]


def heldout_task(
    task: str,
    rows: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    seed: int,
    n_bootstrap: int,
    quantile: float = HELDOUT_QUANTILE,
) -> dict[str, Any]:
    """The held-out check of one task's chain: fitted on the rows (every checkpoint) of the
    runs whose final compute 6 N D is at or below the ``quantile`` of the runs', it predicts
    each other run's final accuracy with its 95% interval. The question a ladder is built for:
    do the small runs tell the large runs' accuracy?

    Raises
    ------
    InputError
        No bpb rows (the check refits step 1 on the cheaper runs' own losses), no run above the
        threshold, or a chain the cheaper runs cannot support.
    """
    if not (rows["metric"] == "bpb").any():
        raise InputError(f"task {task!r}: the held-out check refits step 1 and needs bpb rows")
    named = "run_id" in rows.columns and rows["run_id"].notna().all()
    if not named:
        # Without run_id a checkpoint cannot be told from a run: each (N, D) is a model, and
        # only the final rows (where marked) are used, so no larger run's checkpoint is fitted.
        rows = final_rows(rows)
        rows = rows.assign(
            run_id=[
                f"N={n:g}|D={d:g}" for n, d in zip(rows["n_params"], rows["n_tokens"], strict=True)
            ]
        )
    final = final_rows(rows)
    key = _run_key(rows)
    per_run = final.assign(_run=_run_key(final)).drop_duplicates("_run")
    C = training_flops(per_run["n_params"].to_numpy(float), per_run["n_tokens"].to_numpy(float))
    thr = float(np.quantile(C, quantile))
    test_runs = set(per_run["_run"][C > thr])
    if not test_runs:
        raise InputError(f"task {task!r}: no run above the held-out compute threshold")
    fitted = rows[~key.isin(test_runs)]
    block, tf = fit_task(task, fitted, runs, None, [], seed=seed, n_bootstrap=n_bootstrap)
    acc = final[final["metric"] == tf.metric]
    acc = acc[_run_key(acc).isin(test_runs)].sort_values(["n_params", "n_tokens"], kind="stable")
    if acc.empty:
        raise InputError(f"task {task!r}: no {tf.metric} row of a run above the threshold")
    out = []
    for _, r in acc.iterrows():
        entry = _prediction(tf, block, float(r["n_params"]), float(r["n_tokens"]))
        entry["observed"] = observed = float(r["value"])
        entry["params"]["abs_error"] = abs(entry["params"]["accuracy"] - observed)
        entry["precision"]["abs_error"] = entry["precision"]["accuracy"]
        if named:
            entry["run_id"] = str(r["run_id"])
        out.append(entry)
    return {
        "rule": f"fitted on the runs with 6ND <= the {quantile:g} quantile ({thr:.4g} FLOPs), "
        "every checkpoint; the others' final accuracy predicted",
        "n_fitted_runs": int(len(per_run) - len(test_runs)),
        "form": tf.form,
        "runs": out,
    }


def _prediction(tf: TaskFit, block: Mapping[str, Any], n: float, d: float) -> dict[str, Any]:
    """The chained accuracy at (n, d) with its interval, keyed as a law's block is, so that
    reproduce compares it as one: the value within the precision step 2 carries to it, the
    interval ends within their Monte Carlo error, and all of it as undetermined when a step
    is."""
    point, per = chain(tf, n, d)
    steps = (block["step1"], block["step2"])
    return {
        "n_params": n,
        "n_tokens": d,
        "params": {"accuracy": float(point[0])},
        "precision": {"accuracy": _accuracy_precision(tf, n, d, block["step2"])},
        "ci95": {"accuracy": ci95(per[:, 0])} if per.size else {},
        "ci95_mc_se": {"accuracy": identify.interval_se(list(per[:, 0]))} if per.size else {},
        "determined": all(st.get("determined", True) is not False for st in steps),
    }


def _accuracy_precision(tf: TaskFit, n: float, d: float, step2: Mapping[str, Any]) -> float:
    """The accuracy's numerical precision at (n, d), carried from step 2's parameters' (first
    order, worst cases in quadrature)."""
    x = float(chinchilla_loss(n, d, **tf.step1))
    base = float(step2_accuracy(tf.form, x, tf.step2))
    sq = 0.0
    for k, v in tf.step2.items():
        u = float(step2.get("precision", {}).get(k, math.inf))
        if not math.isfinite(u):
            return math.inf
        moved = float(step2_accuracy(tf.form, x, {**tf.step2, k: v + u}))
        sq += (moved - base) ** 2
    return math.sqrt(sq)


def tasks_input(csv: Path, df: pd.DataFrame) -> dict[str, Any]:
    """The "input" record of the tasks object: which file, its bytes' hash, how many rows."""
    return {
        "path": csv.name,
        "sha256": sha256_of(csv),
        "n_rows": int(len(df)),
        "where_applied": bool(df.attrs.get("where_applied", False)),
    }


def summarize_tasks(block: Mapping[str, Any]) -> list[str]:
    """The summary's lines for the "tasks" object."""
    lines = []
    for task, b in block.get("tasks", {}).items():
        if "skipped" in b:
            lines.append(f"task {task:<20} skipped: {b['skipped']}")
            continue
        s2, pr = b["step2"], b["prediction"]
        ci = pr.get("ci95", {}).get("accuracy", [None, None])
        und = pr.get("determined") is False
        params = "  ".join(f"{k}={fmt(v)}" for k, v in s2["params"].items())
        lines.append(
            f"task {task:<20} {b['metric']} from {b['step1']['source'].split(':')[0]} via "
            f"{s2['form']} ({params}); at N={fmt(pr['n_params'])}, D={fmt(pr['n_tokens'])}: "
            f"{fmt(pr['params']['accuracy'])}"
            + (" NOT DETERMINED" if und else f" [{fmt(ci[0])}, {fmt(ci[1])}]")
        )
        lines += _heldout_lines(task, b.get("heldout", {}))
    return lines


def _heldout_lines(task: str, h: Mapping[str, Any]) -> list[str]:
    """The summary's lines of one task's held-out check."""
    if not h:
        return []
    if "skipped" in h:
        return [f"task {task:<20} held-out check skipped: {h['skipped']}"]
    lines = [f"task {task:<20} held-out: {h['rule']} ({h['n_fitted_runs']} runs, {h['form']})"]
    for r in h["runs"]:
        lo, hi = r.get("ci95", {}).get("accuracy", [None, None])
        inside = lo is not None and lo <= r["observed"] <= hi
        lines.append(
            f"  N={fmt(r['n_params'])}, D={fmt(r['n_tokens'])}: predicted "
            f"{fmt(r['params']['accuracy'])} [{fmt(lo)}, {fmt(hi)}], observed "
            f"{fmt(r['observed'])}, |error| {fmt(r['params']['abs_error'])}"
            + (" (inside)" if inside else " (outside)")
        )
    return lines
