"""Task metrics against scale: accuracy of fine-tuned models from their pretraining loss.

The two-step method of the OLMo model-ladder work (Bhagia et al. 2024, "Establishing Task
Scaling Laws via Compute-Efficient Model Ladders", section 3):

1. L(N, D): an intermediate loss from model size N and data size D. Here L is the
   pretraining validation loss, fitted with `fit.fit_chinchilla` on the pretraining runs
   (L = E + A/N^alpha + B/D^beta). Where the runs cannot support the joint fit (a single D,
   fewer than 5 runs), L(C) = E + A C^-alpha on the fine-tuned models (the paper's FLOPs
   variant, `fit.fit_power_law`).
2. Acc(L) = a / (1 + exp(-k (L - L0))) + b: accuracy from that loss through a sigmoid. We use
   the sign convention of the paper's released code (allenai/OLMo-ladder,
   src/scaling/fitting_functions.py, bounds a in [-1, 0], k >= 0, b in [0, 1]): a <= 0 and
   k >= 0, so that accuracy falls as loss rises, from the ceiling b (low loss) to the floor
   a + b (high loss). The equivalent form with a' = -a > 0, b' = a + b, k' = -k < 0 has b' the
   floor. Bounds here: floor a + b >= chance accuracy, ceiling b <= 1, a <= 0, k >= 0
   (enforced through the box-bounded coordinates floor, s = (ceiling - floor)/(1 - floor),
   k, L0).

Chained, Acc(N, D) = Acc(L(N, D)); from compute, Acc(C) = Acc(L(N_opt(C), D_opt(C))) along the
compute-optimal frontier of the Chinchilla fit (Hoffmann et al. 2022, eq. 4). Bootstrap
intervals resample the pretraining runs (step 1) and the fine-tuning rows (step 2)
independently and pair the resamples.

Labelled-data size: for each pretrained model, accuracy against the number of labelled
examples n; the n needed to reach a target accuracy, interpolated linearly in log n between
the measured sizes that bracket it (None, "not reached", when no size reaches it), and a
saturating power law acc(n) = acc_inf - c n^-gamma per model (the form of learning curves,
Hestness et al. 2017).

Everything here is a pure function of arrays or DataFrames (numpy, scipy, pandas only).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares

from harness.analysis import fit as fitmod
from harness.analysis import identify
from harness.analysis.common import check_n_resamples, ci95, fmt, resample_weights
from harness.analysis.io import (
    done_rows,
    line_list,
    read_results_csv,
    sha256_of,
    value_list,
)
from harness.analysis.laws import chinchilla_loss, compute_optimal, flops, power_law_with_offset
from harness.errors import InputError

__all__ = [
    "DOWNSTREAM_CSV",
    "DOWNSTREAM_REQUIRED",
    "LabelPowerLaw",
    "LabelsNeeded",
    "SigmoidFit",
    "accuracy_from_compute",
    "bootstrap_sigmoid",
    "chained_accuracy",
    "fit_downstream",
    "fit_label_power_law",
    "fit_sigmoid",
    "label_power_law",
    "labels_needed",
    "load_downstream",
    "sigmoid_accuracy",
    "step1_loss",
    "summarize_downstream",
]

FloatArray = NDArray[np.float64]

DOWNSTREAM_CSV = "downstream.csv"
"""File name of the fine-tuning results beside runs.csv."""

DOWNSTREAM_REQUIRED: tuple[str, ...] = (
    "n_params",
    "n_tokens",
    "loss",
    "method",
    "n_labels",
    "accuracy",
)
"""Columns every downstream analysis needs, besides the chance accuracy (see `load_downstream`)."""

CHANCE_COLUMNS: tuple[str, ...] = ("chance_accuracy", "chance", "chance_acc")
"""Accepted names of the chance-accuracy column (else 1 / n_classes from a n_classes column)."""

_SIGMOID_NAMES = ("floor", "s", "k", "L0")  # optimizer coordinates, all box-bounded
# What a coordinate on its bound means, for SigmoidFit.at_bounds.
_AT_LOWER = {
    "floor": "floor=chance",
    "s": "flat (ceiling=floor)",
    "k": "flat (k=0)",
    "L0": "L0 below the losses",
}
_AT_UPPER = {
    "floor": "floor=1",
    "s": "ceiling=1",
    "k": "step (k at its maximum)",
    "L0": "L0 above the losses",
}


# ---------------------------------------------------------------------------------------------
# Step 2: accuracy from loss


def sigmoid_accuracy(loss: ArrayLike, a: float, b: float, k: float, L0: float) -> FloatArray:
    """Acc(L) = a / (1 + exp(-k (L - L0))) + b (Bhagia et al. 2024, step 2).

    With a <= 0 and k >= 0 (the paper's code), accuracy falls from b at low loss to a + b at
    high loss.
    """
    z = -k * (np.asarray(loss, dtype=float) - L0)
    # 1 / (1 + exp(z)) without overflow for large |z|.
    return a * np.exp(-np.logaddexp(0.0, z)) + b


@dataclass(frozen=True, kw_only=True)
class SigmoidFit:
    """Step 2 fitted: Acc(L) = a / (1 + exp(-k (L - L0))) + b."""

    params: dict[str, float]
    """a (<= 0), b (the ceiling, <= 1), k (>= 0), L0 (midpoint loss)."""
    floor: float
    """a + b: accuracy at high loss (>= chance)."""
    ceiling: float
    """b: accuracy at low loss (<= 1)."""
    free: tuple[str, ...]
    """Fitted coordinates: all of floor, s, k, L0, or (k, L0) with floor = chance, ceiling = 1."""
    rmse: float
    """Root mean squared residual of accuracy."""
    n_points: int
    converged: bool
    message: str
    at_bounds: tuple[str, ...]
    """Fitted coordinates on a bound, as what they mean: 'floor=chance' (common and
    harmless), 'ceiling=1', 'step (k at its maximum)' (a step, not a sigmoid, fits the data),
    'flat (...)', 'L0 below/above the losses'."""
    x: tuple[float, ...]
    """Optimizer coordinates (floor, s, k, L0): bootstrap warm start."""


def _sig_pred(x: FloatArray, L: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Accuracy and its Jacobian in (floor, s, k, L0); ceiling = floor + s (1 - floor)."""
    f, s, k, L0 = x
    h = s * (1.0 - f)  # ceiling - floor
    g = np.exp(-np.logaddexp(0.0, -k * (L - L0)))  # sigma(k (L - L0))
    pred = f + h * (1.0 - g)
    dg = g * (1.0 - g)
    J = np.empty((L.size, 4))
    J[:, 0] = 1.0 - s * (1.0 - g)
    J[:, 1] = (1.0 - f) * (1.0 - g)
    J[:, 2] = -h * dg * (L - L0)
    J[:, 3] = h * dg * k
    return pred, J


def _sig_params(x: Sequence[float]) -> dict[str, float]:
    f, s, k, L0 = (float(v) for v in x)
    ceiling = f + s * (1.0 - f)
    return {"a": f - ceiling, "b": ceiling, "k": k, "L0": L0}


def _check_accuracy(
    loss: ArrayLike, accuracy: ArrayLike, chance: float, what: str
) -> tuple[FloatArray, FloatArray]:
    L = np.asarray(loss, dtype=float).ravel()
    y = np.asarray(accuracy, dtype=float).ravel()
    if L.size != y.size:
        raise InputError(
            f"{what}: {L.size} losses but {y.size} accuracies; accepted: equal lengths"
        )
    if not (np.isfinite(chance) and 0.0 < chance < 1.0):
        raise InputError(f"{what}: chance accuracy {chance!r}; accepted: a number in (0, 1)")
    bad = np.flatnonzero(~np.isfinite(L))
    if bad.size:
        raise InputError(f"{what}: non-finite loss at index {int(bad[0])}; accepted: finite")
    bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y > 1))
    if bad.size:
        raise InputError(
            f"{what}: accuracy {float(y[bad[0]])!r} at index {int(bad[0])}; "
            "accepted: numbers in [0, 1]"
        )
    return L, y


def _sigmoid_bounds(L: FloatArray, chance: float) -> tuple[FloatArray, FloatArray]:
    span = max(float(np.ptp(L)), 1e-3)
    # k up to 100 / span: a transition over 1% of the losses seen is a step, not a sigmoid.
    lo = np.array([chance, 0.0, 0.0, float(L.min()) - span])
    hi = np.array([1.0, 1.0, 100.0 / span, float(L.max()) + span])
    return lo, hi


def _run_lsq(
    L: FloatArray,
    y: FloatArray,
    w: FloatArray | None,
    x0: FloatArray,
    free: NDArray[np.bool_],
    lo: FloatArray,
    hi: FloatArray,
    *,
    polish: bool = False,
) -> Any:
    fixed = x0.copy()
    sw = None if w is None else np.sqrt(w)

    def full(z: FloatArray) -> FloatArray:
        x = fixed.copy()
        x[free] = z
        return x

    def res(z: FloatArray) -> FloatArray:
        r = _sig_pred(full(z), L)[0] - y
        return r if sw is None else r * sw

    def jac(z: FloatArray) -> FloatArray:
        J = _sig_pred(full(z), L)[1][:, free]
        return J if sw is None else J * sw[:, None]

    z0 = np.clip(x0[free], lo[free], hi[free])
    r = least_squares(
        res,
        z0,
        jac=jac,
        bounds=(lo[free], hi[free]),
        method="trf",
        x_scale="jac",
        ftol=1e-12,
        xtol=1e-12,
        gtol=1e-12,
        max_nfev=2000,
    )
    if not polish:
        return r, full(r.x)
    # trf creeps towards an active bound (the floor at chance is the common case); dogbox,
    # an active-set method, lands on it: polish from trf's end point.
    p = least_squares(
        res,
        r.x,
        jac=jac,
        bounds=(lo[free], hi[free]),
        method="dogbox",
        ftol=1e-14,
        xtol=1e-14,
        gtol=1e-14,
        max_nfev=200,
    )
    if p.status > 0 and p.cost <= r.cost:
        r = p
    return r, full(r.x)


def fit_sigmoid(
    loss: ArrayLike,
    accuracy: ArrayLike,
    *,
    chance: float,
    margin: float = 0.0,
    fix_asymptotes: bool | None = None,
) -> SigmoidFit:
    """Fit Acc(L) = a / (1 + exp(-k (L - L0))) + b by bounded least squares (step 2).

    Least squares on accuracy, as the paper fits it (scipy curve_fit), from a grid of 18
    starting points (k span in {1, 4, 16}, L0 at 10/50/90% of the loss range, s in
    {0.3, 0.9}); the best is kept. Bounds: floor = a + b in [chance, 1], ceiling b in
    [floor, 1], k in [0, 100 / range of L], L0 within the loss range widened by its width.

    Parameters
    ----------
    loss, accuracy : array_like
        Pretraining loss of each fine-tuned model and its accuracy in [0, 1].
    chance : float
        Accuracy of guessing (lower bound of the floor).
    margin : float
        Accuracies at most chance + margin count as chance (e.g. two binomial standard errors).
    fix_asymptotes : bool, optional
        Fix floor = chance and ceiling = 1 and fit k and L0 only. None: only when there are
        fewer than 4 distinct losses (the 4-parameter sigmoid's minimum).

    Returns
    -------
    SigmoidFit

    Raises
    ------
    InputError
        Bad values; every accuracy at chance (slope and midpoint not identifiable); fewer
        distinct losses than the parameters fitted (4, or 2 with fixed asymptotes, plus one).
    """
    L, y = _check_accuracy(loss, accuracy, chance, "sigmoid fit")
    n_distinct = np.unique(L).size
    if fix_asymptotes is None:
        fix_asymptotes = n_distinct < 4
    n_par = 2 if fix_asymptotes else 4
    if n_distinct < n_par + (1 if fix_asymptotes else 0):
        need = n_par + (1 if fix_asymptotes else 0)
        raise InputError(
            f"sigmoid fit: {n_distinct} distinct pretraining loss value(s) in {L.size} rows, "
            f"fewer than the {need} a {n_par}-parameter sigmoid needs; accepted: fine-tuning "
            f"results of at least {need} pretrained models"
        )
    if float(y.max()) <= chance + margin:
        raise InputError(
            f"sigmoid fit: every accuracy ({L.size} rows, max {float(y.max()):.4g}) is at "
            f"chance ({chance:.4g}{f' + {margin:.3g}' if margin else ''}); the sigmoid's slope "
            "and midpoint are not identifiable: the models are too small or too briefly "
            "trained for this task"
        )
    lo, hi = _sigmoid_bounds(L, chance)
    free = np.array([not fix_asymptotes, not fix_asymptotes, True, True])
    span = max(float(np.ptp(L)), 1e-3)
    best = None
    for s0 in (0.3, 0.9) if not fix_asymptotes else (1.0,):
        for ks in (1.0, 4.0, 16.0):
            for q in (0.1, 0.5, 0.9):
                f0 = chance if fix_asymptotes else chance + 0.01 * (1 - chance)
                x0 = np.array([f0, s0, ks / span, float(L.min()) + q * span])
                r, x = _run_lsq(L, y, None, x0, free, lo, hi)
                if best is None or r.cost < best[0].cost - 1e-15:
                    best = (r, x)
    assert best is not None
    r, x = _run_lsq(L, y, None, best[1], free, lo, hi, polish=True)
    names = [n for n, fr in zip(_SIGMOID_NAMES, free, strict=True) if fr]
    at = []
    for n, v, a, b in zip(_SIGMOID_NAMES, x, lo, hi, strict=True):
        if n not in names:
            continue
        if v <= a + 1e-9 * max(1, abs(a)):
            at.append(_AT_LOWER[n])
        elif v >= b - 1e-9 * max(1, abs(b)):
            at.append(_AT_UPPER[n])
    p = _sig_params(x)
    rmse = float(np.sqrt(np.mean((_sig_pred(x, L)[0] - y) ** 2)))
    return SigmoidFit(
        params=p,
        floor=p["a"] + p["b"],
        ceiling=p["b"],
        free=tuple(names),
        rmse=rmse,
        n_points=int(L.size),
        converged=bool(r.status > 0),
        message=str(r.message),
        at_bounds=tuple(at),
        x=tuple(float(v) for v in x),
    )


def bootstrap_sigmoid(
    loss: ArrayLike,
    accuracy: ArrayLike,
    fit: SigmoidFit,
    *,
    chance: float,
    n_resamples: int = 1000,
    rng: np.random.Generator,
) -> tuple[list[dict[str, float]], int]:
    """Refit the sigmoid on resampled rows (with replacement), warm-started at `fit`.

    Returns
    -------
    list of dict, int
        Parameters a, b, k, L0 per resample, and the number of resamples skipped (fewer
        distinct losses than parameters, or the solver failed); those are left out.

    Raises
    ------
    InputError
        If n_resamples < 1 or the data are bad.
    """
    check_n_resamples(n_resamples)
    L, y = _check_accuracy(loss, accuracy, chance, "sigmoid bootstrap")
    lo, hi = _sigmoid_bounds(L, chance)
    free = np.array([n in fit.free for n in _SIGMOID_NAMES])
    need = int(free.sum()) + (1 if not free[0] else 0)
    x0 = np.asarray(fit.x, dtype=float)
    out: list[dict[str, float]] = []
    failed = 0
    for w in resample_weights(L.size, n_resamples, rng):
        if np.unique(L[w > 0]).size < need:
            failed += 1
            continue
        r, x = _run_lsq(L, y, w, x0, free, lo, hi)
        if r.status <= 0:
            failed += 1
            continue
        out.append(_sig_params(x))
    return out, failed


# ---------------------------------------------------------------------------------------------
# Step 1 and the chain


def step1_loss(
    law: str, params: Mapping[str, float], n_params: ArrayLike, n_tokens: ArrayLike
) -> FloatArray:
    """Step 1: the pretraining loss predicted for (N, D) by the fitted law.

    law "chinchilla": E + A/N^alpha + B/D^beta; "power_law_c": E + A (6 N D)^-alpha.
    """
    if law == "chinchilla":
        return chinchilla_loss(
            n_params, n_tokens, **{k: params[k] for k in ("E", "A", "B", "alpha", "beta")}
        )
    if law == "power_law_c":
        return power_law_with_offset(
            flops(n_params, n_tokens), params["E"], params["A"], params["alpha"]
        )
    raise InputError(f"step 1 law {law!r}; accepted: chinchilla, power_law_c")


def chained_accuracy(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    law: str,
    step1: Mapping[str, float],
    step2: Mapping[str, float],
) -> FloatArray:
    """Acc(N, D) = Acc(L(N, D)): step 1 then step 2 (Bhagia et al. 2024, the chained fit)."""
    L = step1_loss(law, step1, n_params, n_tokens)
    return sigmoid_accuracy(L, step2["a"], step2["b"], step2["k"], step2["L0"])


def accuracy_from_compute(
    C: ArrayLike, law: str, step1: Mapping[str, float], step2: Mapping[str, float]
) -> FloatArray:
    """Acc(C): along the compute-optimal frontier N_opt(C), D_opt(C) of a Chinchilla step 1
    (Hoffmann et al. 2022, eq. 4), or through L(C) directly for a power_law_c step 1."""
    C = np.asarray(C, dtype=float)
    if law == "chinchilla":
        co = compute_optimal(step1["A"], step1["B"], step1["alpha"], step1["beta"])
        return chained_accuracy(co.n_opt(C), co.d_opt(C), law, step1, step2)
    return chained_accuracy(C / 6.0, np.ones_like(C), law, step1, step2)


# ---------------------------------------------------------------------------------------------
# Labelled-data size


@dataclass(frozen=True, kw_only=True)
class LabelsNeeded:
    """Labels needed to reach a target accuracy."""

    n_labels: float | None
    """Interpolated number of labelled examples; None when never reached."""
    status: str
    """'reached', 'reached at the smallest size' (n_labels is an upper bound) or
    'not reached'."""


def labels_needed(n_labels: ArrayLike, accuracy: ArrayLike, target: float) -> LabelsNeeded:
    """The fewest labelled examples that reach `target`, interpolated in log n.

    Accuracies are averaged over rows with the same n (seeds). The first size whose mean
    accuracy reaches the target is found; between it and the size before, accuracy is taken
    as linear in log n: log n* = log n0 + (target - acc0) / (acc1 - acc0) (log n1 - log n0).

    Raises
    ------
    InputError
        Empty input, unequal lengths, or n <= 0.
    """
    n = np.asarray(n_labels, dtype=float).ravel()
    a = np.asarray(accuracy, dtype=float).ravel()
    if n.size == 0 or n.size != a.size:
        raise InputError(
            f"labels_needed: {n.size} sizes and {a.size} accuracies; accepted: "
            "equal, non-zero lengths"
        )
    if np.any(~np.isfinite(n) | (n <= 0)):
        raise InputError("labels_needed: n_labels must be finite numbers > 0")
    sizes = np.unique(n)
    means = np.array([a[n == s].mean() for s in sizes])
    hit = np.flatnonzero(means >= target)
    if hit.size == 0:
        return LabelsNeeded(n_labels=None, status="not reached")
    i = int(hit[0])
    if i == 0:
        return LabelsNeeded(n_labels=float(sizes[0]), status="reached at the smallest size")
    n0, n1, a0, a1 = np.log(sizes[i - 1]), np.log(sizes[i]), means[i - 1], means[i]
    return LabelsNeeded(
        n_labels=float(np.exp(n0 + (target - a0) / (a1 - a0) * (n1 - n0))), status="reached"
    )


def label_power_law(n: ArrayLike, acc_inf: float, c: float, gamma: float) -> FloatArray:
    """acc(n) = acc_inf - c n^-gamma: a saturating learning curve in labelled examples."""
    return acc_inf - c * np.asarray(n, dtype=float) ** (-gamma)


@dataclass(frozen=True, kw_only=True)
class LabelPowerLaw:
    """acc(n) = acc_inf - c n^-gamma fitted to one model's accuracies."""

    acc_inf: float
    c: float
    gamma: float
    rmse: float
    n_points: int
    converged: bool

    def n_for(self, target: float) -> float | None:
        """n with acc(n) = target; None when target >= acc_inf (never reached)."""
        if target >= self.acc_inf or self.c <= 0 or self.gamma <= 0:
            return None
        return float(((self.acc_inf - target) / self.c) ** (-1.0 / self.gamma))


def fit_label_power_law(
    n_labels: ArrayLike, accuracy: ArrayLike, *, chance: float
) -> LabelPowerLaw:
    """Fit acc(n) = acc_inf - c n^-gamma by bounded least squares.

    Fitted as acc_inf - delta (n / n_min)^-gamma (delta: the gap at the smallest size, which
    keeps the problem well scaled) from gamma in {0.1, 0.3, 1}; acc_inf in [chance, 1],
    delta >= 0, gamma in [0, 5].

    Raises
    ------
    InputError
        Fewer than 4 distinct sizes (3 parameters plus one), or bad values.
    """
    n = np.asarray(n_labels, dtype=float).ravel()
    y = np.asarray(accuracy, dtype=float).ravel()
    if n.size != y.size or np.any(~np.isfinite(n) | (n <= 0)) or np.any(~np.isfinite(y)):
        raise InputError(
            "label power law: n_labels and accuracy must be finite, n > 0, of equal length"
        )
    k = np.unique(n).size
    if k < 4:
        raise InputError(
            f"label power law: {k} distinct n_labels, fewer than the 4 a "
            "3-parameter law needs; accepted: at least 4 labelled-set sizes"
        )
    n_min = float(n.min())
    t = n / n_min

    def res(x: FloatArray) -> FloatArray:
        return x[0] - x[1] * t ** (-x[2]) - y

    def jac(x: FloatArray) -> FloatArray:
        tg = t ** (-x[2])
        return np.column_stack([np.ones_like(t), -tg, x[1] * tg * np.log(t)])

    lo, hi = np.array([chance, 0.0, 0.0]), np.array([1.0, 1.0, 5.0])
    best = None
    for g0 in (0.1, 0.3, 1.0):
        x0 = np.clip([float(y.max()), max(float(y.max() - y.min()), 1e-3), g0], lo, hi)
        r = least_squares(
            res,
            x0,
            jac=jac,
            bounds=(lo, hi),
            method="trf",
            ftol=1e-12,
            xtol=1e-12,
            gtol=1e-12,
            max_nfev=2000,
        )
        if best is None or r.cost < best.cost - 1e-15:
            best = r
    assert best is not None
    acc_inf, delta, gamma = (float(v) for v in best.x)
    return LabelPowerLaw(
        acc_inf=acc_inf,
        c=delta * n_min**gamma,
        gamma=gamma,
        rmse=float(np.sqrt(np.mean(best.fun**2))),
        n_points=int(n.size),
        converged=bool(best.status > 0),
    )


# ---------------------------------------------------------------------------------------------
# downstream.csv


def load_downstream(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read downstream.csv: one row per fine-tuning run.

    Needs the columns of DOWNSTREAM_REQUIRED (n_params, n_tokens and loss of the pretrained
    model; method; n_labels; accuracy in [0, 1]) and the chance accuracy as a column named
    chance_accuracy, chance or chance_acc, or n_classes (chance = 1 / n_classes). Rows whose
    ``status`` column (if any) is not "done" are dropped (count in ``attrs["n_excluded"]``).
    A ``line`` column gives each row's line in the file (header = line 1); ``chance`` holds
    the chance accuracy.

    Raises
    ------
    InputError
        Missing file or columns, unparsable CSV, bad values (one line naming file, column,
        values, lines and what is accepted), or no usable row.
    """
    p = Path(path)
    csv = p / DOWNSTREAM_CSV if p.is_dir() else p
    if not csv.is_file():
        raise InputError(
            f"{csv}: no such file; accepted: a downstream.csv written by the fine-tuning stage"
        )
    df = read_results_csv(csv, {"run_id": str, "method": str})
    missing = [c for c in DOWNSTREAM_REQUIRED if c not in df.columns]
    chance_col = next((c for c in CHANCE_COLUMNS if c in df.columns), None)
    if chance_col is None and "n_classes" not in df.columns:
        missing.append("chance_accuracy (or n_classes)")
    if missing:
        raise InputError(
            f"{csv}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(df.columns)}; accepted: "
            f"{', '.join(DOWNSTREAM_REQUIRED)} and chance_accuracy"
        )
    df, n_excluded = done_rows(df)

    def numeric(col: str, ok: Any, accepted: str) -> FloatArray:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        vals = num.to_numpy(dtype=float)
        bad = np.flatnonzero(~(np.isfinite(vals) & ok(vals)))
        if bad.size:
            shown = [raw.iloc[i] if pd.isna(num.iloc[i]) else vals[i] for i in bad]
            raise InputError(
                f"{csv}: column {col!r} has bad value(s) {value_list(shown)} at "
                f"{line_list(df['line'].iloc[bad])}; accepted: {accepted} (mark "
                "failed runs with status other than 'done')"
            )
        return vals

    for col in ("n_params", "n_tokens", "loss", "n_labels"):
        df[col] = numeric(col, lambda v: v > 0, "finite numbers > 0")
    df["accuracy"] = numeric("accuracy", lambda v: (v >= 0) & (v <= 1), "numbers in [0, 1]")
    if chance_col is not None:
        df["chance"] = numeric(chance_col, lambda v: (v > 0) & (v < 1), "numbers in (0, 1)")
    else:
        df["chance"] = 1.0 / numeric("n_classes", lambda v: v >= 2, "integers >= 2")
    df["method"] = df["method"].astype(str).str.strip()
    if len(df) == 0:
        raise InputError(
            f"{csv}: no usable row ({n_excluded} excluded by status); accepted: "
            "at least one fine-tuning run with status 'done'"
        )
    if np.unique(df["chance"]).size > 1:
        vals = sorted(np.unique(df["chance"]))
        raise InputError(
            f"{csv}: column 'chance' has {len(vals)} different values "
            f"{value_list(vals)}; accepted: one task (one chance accuracy) per file"
        )
    df.attrs["n_excluded"] = n_excluded
    df.attrs["path"] = str(csv)
    return df


# ---------------------------------------------------------------------------------------------
# The whole analysis, as the "downstream" object of fits.json


def rng_for(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(("downstream:" + label).encode())])


def _model_key(df: pd.DataFrame) -> list[str]:
    return ["run_id"] if "run_id" in df.columns else ["n_params", "n_tokens"]


def _models(df: pd.DataFrame) -> pd.DataFrame:
    """One row per pretrained model: n_params, n_tokens, loss (and run_id when present)."""
    cols = [c for c in ("run_id", "n_params", "n_tokens", "loss") if c in df.columns]
    m = df[cols].drop_duplicates(subset=_model_key(df))
    return m.sort_values(["n_params", "n_tokens"], kind="stable").reset_index(drop=True)


def _step1_block(
    law: str,
    data: str,
    r: fitmod.FitResult,
    boots: list[dict[str, float]],
    nf: int,
    n_bootstrap: int,
) -> dict[str, Any]:
    """The step-1 object of fits.json for fit `r` of `law` and its bootstrap samples."""
    intervals = {k: ci95([b[k] for b in boots]) for k in r.params} if boots else {}
    return {
        "law": law,
        "data": data,
        "params": dict(r.params),
        "ci95": intervals,
        "converged": r.converged,
        "on_grid_edge": r.on_grid_edge,
        "n_bootstrap": n_bootstrap,
        "n_bootstrap_failed": nf,
        **identify.law_fields(
            r.params, r.precision, r.undetermined, boots, intervals, nf, n_bootstrap
        ),
    }


def _step1(
    ds: pd.DataFrame,
    runs: pd.DataFrame | None,
    seed: int,
    n_bootstrap: int,
    given: fitmod.Bootstrapped | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Step 1 block and its bootstrap samples: Chinchilla on the pretraining runs (``given``,
    when the caller has fitted it), else a power law in C on the fine-tuned models."""
    if given is not None:
        data = f"pretraining runs ({given.n_points}; the fit of fits.chinchilla)"
        block = _step1_block(
            "chinchilla", data, given.fit, given.boots, given.n_failed, n_bootstrap
        )
        return block, given.boots
    errors = []
    if runs is not None:
        N, D, L = (runs[c].to_numpy(dtype=float) for c in ("n_params", "n_tokens", "loss"))
        try:
            r = fitmod.fit_chinchilla(N, D, L, name="downstream step 1 (chinchilla)")
            boots: list[dict[str, float]] = []
            nf = 0
            if n_bootstrap:
                boots, nf = fitmod.bootstrap_chinchilla(
                    N, D, L, r, n_resamples=n_bootstrap, rng=rng_for(seed, "step1")
                )
            block = _step1_block(
                "chinchilla", f"pretraining runs ({N.size})", r, boots, nf, n_bootstrap
            )
            return block, boots
        except InputError as exc:
            errors.append(f"chinchilla: {exc}")
    m = _models(ds)
    C, L = flops(m["n_params"], m["n_tokens"]), m["loss"].to_numpy(dtype=float)
    try:
        r = fitmod.fit_power_law(C, L, name="step 1 L(C)")
    except InputError as exc:
        errors.append(f"power_law_c: {exc}")
        return {"skipped": "; ".join(errors)}, []
    boots, nf = ([], 0)
    if n_bootstrap:
        boots, nf = fitmod.bootstrap_power_law(
            C, L, r, n_resamples=n_bootstrap, rng=rng_for(seed, "step1")
        )
    block = _step1_block("power_law_c", f"fine-tuned models ({C.size})", r, boots, nf, n_bootstrap)
    block["note"] = "; ".join(errors)
    return block, boots


def _sigmoid_block(
    fit: SigmoidFit, boots: list[dict[str, float]], n_boot: int, nf: int, n_labels: float
) -> dict[str, Any]:
    ci: dict[str, list[float]] = {}
    if boots:
        ci = {k: ci95([b[k] for b in boots]) for k in ("a", "b", "k", "L0")}
        ci["floor"] = ci95([b["a"] + b["b"] for b in boots])
    return {
        "n_labels": n_labels,
        "params": dict(fit.params),
        "floor": fit.floor,
        "ceiling": fit.ceiling,
        "free_params": list(fit.free),
        "rmse": fit.rmse,
        "n_points": fit.n_points,
        "converged": fit.converged,
        "at_bounds": list(fit.at_bounds),
        "ci95": ci,
        "n_bootstrap": n_boot if boots or nf else 0,
        "n_bootstrap_failed": nf,
    }


def _margin(rows: pd.DataFrame, chance: float) -> float:
    """Two binomial standard errors of chance accuracy when the test-set size is known."""
    for col in ("n_test", "n_eval", "test_examples"):
        if col in rows.columns:
            n = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)
            n = n[np.isfinite(n) & (n > 0)]
            if n.size:
                return float(2.0 * math.sqrt(chance * (1 - chance) / n.min()))
    return 0.0


def fit_downstream(
    ds: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    target_accuracy: float | None = None,
    step1_fit: fitmod.Bootstrapped | None = None,
) -> dict[str, Any]:
    """The whole downstream analysis of one downstream.csv, as a JSON-ready dict.

    Parameters
    ----------
    ds : pandas.DataFrame
        From `load_downstream`.
    runs : pandas.DataFrame, optional
        The pretraining runs (from `io.load_runs`) for step 1; None to fit step 1 on the
        fine-tuned models alone.
    seed : int
        Bootstrap seed.
    n_bootstrap : int
        Resamples for every interval (0 for none).
    step1_fit : fitmod.Bootstrapped, optional
        Step 1's Chinchilla fit of ``runs``, already made (with the same n_bootstrap); None to
        fit it here.
    target_accuracy : float, optional
        Target of the labels-needed analysis; default halfway from chance to the best
        seed-mean accuracy of any (model, method, n_labels) in the file: one target for all
        methods, so that their label needs compare.

    Returns
    -------
    dict
        "chance", "step1", and per method: "step2" (sigmoid at the largest n_labels, with
        intervals), "step2_by_n_labels", "chained" (observed against chained predictions per
        model) and "labels" (labels needed per model, power law per model). A part the data
        cannot support holds {"skipped": reason}.

    Raises
    ------
    InputError
        n_bootstrap < 0 or a target outside (0, 1].
    """
    if n_bootstrap < 0:
        raise InputError(f"--bootstrap {n_bootstrap}; accepted: an integer >= 0")
    if target_accuracy is not None and not (0 < target_accuracy <= 1):
        raise InputError(f"--target-accuracy {target_accuracy}; accepted: a number in (0, 1]")
    chance = float(ds["chance"].iloc[0])
    step1, step1_boot = _step1(ds, runs, seed, n_bootstrap, step1_fit)
    out: dict[str, Any] = {"chance": chance, "step1": step1, "methods": {}}
    key = _model_key(ds)
    rule = "given"
    if target_accuracy is None:
        best = ds.groupby(key + ["method", "n_labels"], sort=False)["accuracy"].mean().max()
        target_accuracy = 0.5 * (chance + float(best))
        rule = "halfway from chance to the best seed-mean accuracy"
    for method in sorted(ds["method"].unique()):
        rows = ds[ds["method"] == method]
        margin = _margin(rows, chance)
        block: dict[str, Any] = {"n_rows": len(rows)}
        # Step 2 per labelled-set size; the largest size (most labels) is the headline fit.
        by_n: dict[str, Any] = {}
        sizes = sorted(np.unique(rows["n_labels"]))
        for n in sizes:
            sub = rows[rows["n_labels"] == n]
            try:
                f = fit_sigmoid(sub["loss"], sub["accuracy"], chance=chance, margin=margin)
                by_n[f"{n:g}"] = _sigmoid_block(f, [], 0, 0, float(n))
            except InputError as exc:
                by_n[f"{n:g}"] = {"skipped": str(exc)}
        block["step2_by_n_labels"] = by_n
        n_top = float(sizes[-1])
        top = rows[rows["n_labels"] == n_top]
        try:
            fit = fit_sigmoid(top["loss"], top["accuracy"], chance=chance, margin=margin)
            boots, nf = ([], 0)
            if n_bootstrap:
                boots, nf = bootstrap_sigmoid(
                    top["loss"],
                    top["accuracy"],
                    fit,
                    chance=chance,
                    n_resamples=n_bootstrap,
                    rng=rng_for(seed, f"step2|{method}"),
                )
            block["step2"] = _sigmoid_block(fit, boots, n_bootstrap, nf, n_top)
            block["chained"] = _chained(top, key, step1, step1_boot, fit, boots)
        except InputError as exc:
            block["step2"] = {"skipped": str(exc), "n_labels": n_top}
            block["chained"] = {"skipped": "no step 2 fit"}
        block["labels"] = _labels(rows, key, chance, target_accuracy, rule)
        out["methods"][method] = block
    return out


def _chained(
    top: pd.DataFrame,
    key: list[str],
    step1: Mapping[str, Any],
    step1_boot: list[dict[str, float]],
    fit: SigmoidFit,
    boots: list[dict[str, float]],
) -> dict[str, Any]:
    """Observed (seed-mean) accuracy per model against the chained prediction Acc(L(N, D))."""
    if "skipped" in step1:
        return {"skipped": f"no step 1 fit ({step1['skipped']})"}
    law = step1["law"]
    g = (
        top.groupby(key, sort=False)
        .agg(
            n_params=("n_params", "first"),
            n_tokens=("n_tokens", "first"),
            loss=("loss", "first"),
            accuracy=("accuracy", "mean"),
            n_seeds=("accuracy", "size"),
        )
        .reset_index()
    )
    g = g.sort_values(["n_params", "n_tokens"], kind="stable").reset_index(drop=True)
    N, D = g["n_params"].to_numpy(dtype=float), g["n_tokens"].to_numpy(dtype=float)
    pred = chained_accuracy(N, D, law, step1["params"], fit.params)
    via_loss = sigmoid_accuracy(g["loss"], **fit.params)
    k = min(len(step1_boot), len(boots))
    samples = np.array([chained_accuracy(N, D, law, step1_boot[i], boots[i]) for i in range(k)])
    points = []
    for i, r in g.iterrows():
        pt = {
            "n_params": r["n_params"],
            "n_tokens": r["n_tokens"],
            "loss": r["loss"],
            "accuracy": r["accuracy"],
            "n_seeds": int(r["n_seeds"]),
            "predicted_from_loss": float(via_loss[i]),
            "predicted": float(pred[i]),
            "ci95": ci95(samples[:, i]) if k else [],
        }
        if "run_id" in key:
            pt["run_id"] = str(r["run_id"])
        points.append(pt)
    err = pred - g["accuracy"].to_numpy(dtype=float)
    return {
        "law": law,
        "n_labels": float(top["n_labels"].iloc[0]),
        "points": points,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs_error": float(np.abs(err).max()),
        "n_bootstrap": k,
    }


def _labels(
    rows: pd.DataFrame, key: list[str], chance: float, target: float, rule: str
) -> dict[str, Any]:
    models = []
    for _, g in rows.groupby(key, sort=False):
        first = g.iloc[0]
        ln = labels_needed(g["n_labels"], g["accuracy"], target)
        sizes = np.unique(g["n_labels"])
        entry: dict[str, Any] = {
            "n_params": float(first["n_params"]),
            "n_tokens": float(first["n_tokens"]),
            "loss": float(first["loss"]),
            "n_labels_needed": ln.n_labels,
            "status": ln.status,
            "n_labels": [float(s) for s in sizes],
            "accuracy": [float(g.loc[g["n_labels"] == s, "accuracy"].mean()) for s in sizes],
        }
        if "run_id" in key:
            entry["run_id"] = str(first["run_id"])
        try:
            pl = fit_label_power_law(g["n_labels"], g["accuracy"], chance=chance)
            entry["power_law"] = {
                "acc_inf": pl.acc_inf,
                "c": pl.c,
                "gamma": pl.gamma,
                "rmse": pl.rmse,
                "converged": pl.converged,
                "n_labels_needed": pl.n_for(target),
            }
        except InputError as exc:
            entry["power_law"] = {"skipped": str(exc)}
        models.append(entry)
    models.sort(key=lambda e: (e["n_params"], e["n_tokens"]))
    return {"target": target, "target_rule": rule, "models": models}


def downstream_input(csv: Path, ds: pd.DataFrame) -> dict[str, Any]:
    """The "input" record of a downstream block (file name only, so that the bytes of
    fits.json do not depend on where the directory lies)."""
    return {
        "path": csv.name,
        "sha256": sha256_of(csv),
        "n_rows": len(ds),
        "n_excluded": int(ds.attrs.get("n_excluded", 0)),
    }


# ---------------------------------------------------------------------------------------------
# Summary


def _needed(e: Mapping[str, Any]) -> str:
    if e["n_labels_needed"] is None:
        return "not reached"
    bound = "<=" if e["status"] == "reached at the smallest size" else ""
    return bound + f"{e['n_labels_needed']:.4g}"


def summarize_downstream(block: Mapping[str, Any]) -> list[str]:
    """Printable lines for the "downstream" object of fits.json."""
    lines = [
        f"downstream       {block.get('input', {}).get('path', DOWNSTREAM_CSV)}: "
        f"{block.get('input', {}).get('n_rows', '?')} fine-tuning runs, chance accuracy "
        f"{fmt(block.get('chance'))}"
    ]
    s1 = block.get("step1", {})
    if "skipped" in s1:
        lines.append(f"  step 1 skipped: {s1['skipped']}")
    else:
        lines.append(
            f"  step 1 L(N, D) {s1['law']} on {s1['data']}: "
            + "  ".join(f"{k}={fmt(v)}" for k, v in s1["params"].items())
            + ("  ON GRID EDGE (not identified by these runs)" if s1.get("on_grid_edge") else "")
        )
    for method, m in block.get("methods", {}).items():
        s2 = m["step2"]
        if "skipped" in s2:
            lines.append(
                f"  {method:<5} step 2 (n_labels={fmt(s2.get('n_labels'))}) skipped: "
                f"{s2['skipped']}"
            )
        else:
            ci = s2.get("ci95", {})
            parts = []
            for k in ("a", "b", "k", "L0"):
                c = ci.get(k)
                parts.append(
                    f"{k}={fmt(s2['params'][k])}" + (f" [{fmt(c[0])}, {fmt(c[1])}]" if c else "")
                )
            flag = f"  ON BOUNDS: {', '.join(s2['at_bounds'])}" if s2.get("at_bounds") else ""
            if s2.get("free_params") == ["k", "L0"]:
                flag += "  (floor=chance, ceiling=1 fixed: fewer than 4 distinct losses)"
            lines.append(
                f"  {method:<5} step 2 Acc(L) (n_labels={fmt(s2['n_labels'])}, "
                f"{s2['n_points']} runs): " + "  ".join(parts) + f"  rmse={fmt(s2['rmse'])}{flag}"
            )
        ch = m.get("chained", {})
        if "skipped" not in ch:
            lines.append(
                f"  {method:<5} chained Acc(N, D): rmse={fmt(ch['rmse'])} "
                f"max |error|={fmt(ch['max_abs_error'])} over {len(ch['points'])} models"
            )
        lab = m.get("labels", {})
        if lab:
            need = ", ".join(
                f"N={e['n_params']:.3g},D={e['n_tokens']:.3g}: {_needed(e)}" for e in lab["models"]
            )
            lines.append(f"  {method:<5} labels to reach accuracy {fmt(lab['target'])}: {need}")
    return lines
