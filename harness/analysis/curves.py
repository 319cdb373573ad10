"""Loss-curve laws: a run's loss as a function of its learning-rate schedule.

Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing", arXiv:2408.11029, eq. 1):

    L(s) = L0 + A S1(s)^-alpha - C S2(s)

after s updates, where S1(s) = sum_{i<=s} eta_i is the forward area (the sum of the learning
rates so far) and S2(s) = sum_{i<=s} m_i the annealing area, with momentum:
m_i = lambda m_{i-1} + (eta_{i-1} - eta_i) (their eq. 4). A drop of the rate adds to S2 over
the following ~1/(1 - lambda) updates, which is how the loss keeps falling for a while after a
cooldown begins. Rises of the rate (the warmup) are left out of S2, as the paper leaves the
warmup out. One fitted law per model size predicts the loss of any schedule at that size: the
final loss of a cosine run from WSD runs and the reverse, or of a budget not trained.

The fit is approach 3's (`fit`): the summed Huber loss (delta = 1e-3) of log-space residuals
log L - log L_fit, minimised with the batched L-BFGS from a grid of starts (L0 = exp(l0),
A = exp(a), C = exp(c)), best kept and polished; lambda is profiled over `DECAYS` (the fit
with the lowest objective is kept). The bootstrap resamples evaluation points, with the one
failure rule of every law (`fit.kept_resamples`). The curves are evaluation points (step,
validation loss) with the learning rate of every update, which a harness run's spec.json gives
exactly (`harness.schedules`) and a foreign CSV's logged rates approximate (`lrs_from_rows`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.signal import lfilter

from harness.analysis import fit as ft
from harness.analysis import optim
from harness.errors import InputError
from harness.rundir import RunDir

__all__ = [
    "DECAYS",
    "Curve",
    "anneal_loss",
    "areas",
    "bootstrap_anneal",
    "fit_anneal",
    "forecast_final",
    "lrs_from_rows",
    "predict_final",
    "run_curves",
    "load_curves",
    "curves_from_csv",
]

FloatArray = NDArray[np.float64]

DECAYS: tuple[float, ...] = (0.9, 0.95, 0.99, 0.995, 0.999)
"""The momentum lambda of S2, profiled: the paper's 0.999 suits runs of ~10^4 updates or more
(an annealing effect that builds over ~1000 updates); shorter runs need a shorter memory."""

NAME = "anneal_curve"
"""The law's block in fits.json (`registry.anneal_curve`)."""


def size_label(n_params: float) -> str:
    """A size's key in the block's "sizes" (and in fits.bootstrap.npz): N as a plain integer."""
    return f"{n_params:.0f}"


ANNEAL_ORDER = ("l0", "a", "alpha", "c")
NO_ANNEALING = (
    "no update of these runs lowered the learning rate, so the annealing term is not identified "
    "(C held at ~0): runs with a decaying schedule would"
)
PROFILE_POINTS = 400
"""Points the multi-start stage of each momentum runs on (`fit_anneal`)."""
BOOT_ONE_START_POINTS = 1000
"""Above this many points, each bootstrap resample starts from the best fit alone, not from
the 4 best distinct optima: a resample of so many points lies close to the full fit, and the
refits are what the time goes on (bench/bench_curves.py)."""
_ANNEAL_RAW_OF = {"L0": ("l0",), "A": ("a", "alpha"), "alpha": ("alpha",), "C": ("c",)}


@dataclass(frozen=True)
class Curve:
    """One run's learning curve: its schedule and the losses measured along it."""

    run_id: str
    n_params: float
    lrs: FloatArray
    """The learning rate of each update, in order (length: the run's updates)."""
    steps: NDArray[np.int64]
    """Updates done at each measurement (1 .. len(lrs))."""
    loss: FloatArray
    """The loss measured there (validation loss, nats per token)."""
    batch_tokens: int = 0
    """Tokens per update (0 where unknown): turns a budget D into updates for a prediction."""
    schedule: Mapping[str, Any] | None = None
    """The run's schedule settings (`SCHEDULE_KEYS`) where its spec.json gives them."""


SCHEDULE_KEYS = (
    "peak_lr",
    "min_lr_ratio",
    "warmup_tokens",
    "warmup_fraction",
    "decay_fraction",
    "decay_shape",
)


def run_curves(runs_dir: Path, df: pd.DataFrame) -> list[Curve]:
    """The curve of every done run of ``df`` (a run_id column) that has a metrics.csv under
    ``runs_dir``: its validation losses, and the rate of every update from its spec.json
    (`harness.schedules`, exact), else from the metrics' own lr column (`lrs_from_rows`).

    Raises
    ------
    InputError
        A metrics.csv without a step, lr or val_loss column, or that does not read.
    """
    if "run_id" not in df.columns or not runs_dir.is_dir():
        return []
    done = df if "status" not in df.columns else df[df["status"].astype(str) == "done"]
    out = []
    for run_id, n in zip(done["run_id"].astype(str), done["n_params"], strict=True):
        run = RunDir(runs_dir / run_id)
        path = run.metrics_csv
        if not path.is_file():
            continue
        try:
            m = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # created, not yet written: no curve yet
            continue
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: does not read as CSV ({exc})") from None
        missing = [c for c in ("step", "lr", "val_loss") if c not in m.columns]
        if missing:
            raise InputError(
                f"{path}: no {', '.join(missing)} column; accepted: a metrics.csv with step, lr "
                "and val_loss (the learning rate is what a loss-curve law is a function of)"
            )
        rows = m[m["val_loss"].notna()]
        steps = pd.to_numeric(rows["step"], errors="coerce").to_numpy()
        loss = pd.to_numeric(rows["val_loss"], errors="coerce").to_numpy(dtype=float)
        if rows.empty or not np.all(np.isfinite(steps)):
            continue
        batch_tokens, schedule, lrs = 0, None, None
        if run.spec_json.is_file():
            from harness.schedules import peak_lr, spec_lrs

            spec = run.spec()
            lrs = np.array(spec_lrs(spec))
            batch_tokens = spec.batch_tokens
            schedule = {
                "schedule": spec.train.schedule,
                "peak_lr": peak_lr(spec),
                "min_lr_ratio": spec.train.min_lr_ratio,
                "warmup_tokens": spec.train.warmup_tokens,
                "warmup_fraction": spec.train.warmup_fraction,
                "decay_fraction": spec.train.decay_fraction,
                "decay_shape": spec.train.decay_shape,
            }
        if lrs is None:
            lr_steps = pd.to_numeric(m["step"], errors="coerce").to_numpy(dtype=float)
            lr = pd.to_numeric(m["lr"], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(lr_steps) & np.isfinite(lr)
            if not ok.any():
                raise InputError(
                    f"{path}: no row with a number in both step and lr; accepted: the learning "
                    "rate of the logged steps"
                )
            lrs = lrs_from_rows(lr_steps[ok], lr[ok], int(np.nanmax(steps)))
        out.append(
            Curve(
                run_id=run_id,
                n_params=float(n),
                lrs=lrs,
                steps=steps.astype(np.int64),
                loss=loss,
                batch_tokens=batch_tokens,
                schedule=schedule,
            )
        )
    return out


CURVES_CSV = "curves.csv"
"""Learning curves from elsewhere, beside the runs CSV: one row per logged step of a run."""


def load_curves(folder: Path, df: pd.DataFrame) -> list[Curve]:
    """The curves of the runs of ``df``: from ``folder``/curves.csv where there is one
    (`curves_from_csv`), else from each run's metrics.csv in ``folder``/runs (`run_curves`)."""
    if (folder / CURVES_CSV).is_file():
        return curves_from_csv(folder / CURVES_CSV, df)
    return run_curves(folder / "runs", df)


def curves_from_csv(path: Path, df: pd.DataFrame) -> list[Curve]:
    """Learning curves from a long CSV (another codebase's, a published ladder's): columns
    run_id, step (updates done) or tokens (then the runs CSV's batch_tokens gives the updates),
    lr (the learning rate there) and val_loss (blank on rows that log only the rate). Each
    run's N comes from the runs CSV by run_id; its rate between logged steps is linear
    (`lrs_from_rows`).

    Raises
    ------
    InputError
        A column missing, a run not in the runs CSV, or a step, rate or loss out of range.
    """
    try:
        m = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: does not read as CSV ({exc})") from None
    accepted = "run_id, step (or tokens), lr and val_loss"
    missing = [c for c in ("run_id", "lr", "val_loss") if c not in m.columns]
    if "step" not in m.columns and "tokens" not in m.columns:
        missing.append("step (or tokens)")
    if missing:
        raise InputError(
            f"{path}: no {', '.join(missing)} column; accepted: {accepted} (the learning rate "
            "is what a loss-curve law is a function of)"
        )
    if "run_id" not in df.columns:
        raise InputError(f"{path}: the runs CSV has no run_id column to join its curves on")
    runs = df.assign(run_id=df["run_id"].astype(str)).drop_duplicates("run_id").set_index("run_id")
    m = m.assign(run_id=m["run_id"].astype(str))
    unknown = sorted(set(m["run_id"]) - set(runs.index))
    if unknown:
        raise InputError(
            f"{path}: run_id {unknown[0]!r} is not in the runs CSV ({len(unknown)} such); "
            "accepted: the run_id of a run there"
        )
    out = []
    for run_id, rows in m.groupby("run_id", sort=True):
        run = runs.loc[run_id]
        batch = float(run["batch_tokens"]) if "batch_tokens" in runs.columns else math.nan
        if "step" in rows.columns:
            steps = pd.to_numeric(rows["step"], errors="coerce").to_numpy(dtype=float)
            what = "step"
        elif math.isfinite(batch) and batch > 0:
            tokens = pd.to_numeric(rows["tokens"], errors="coerce").to_numpy(dtype=float)
            steps = np.round(tokens / batch)
            what = "tokens"
        else:
            raise InputError(
                f"{path}: run {run_id}: tokens but no batch_tokens in the runs CSV to turn them "
                "into updates; accepted: a step column, or batch_tokens per run"
            )
        lr = pd.to_numeric(rows["lr"], errors="coerce").to_numpy(dtype=float)
        loss = pd.to_numeric(rows["val_loss"], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(steps)) or np.any(steps < 0):
            raise InputError(f"{path}: run {run_id}: a {what} that is not a number >= 0")
        has_lr = np.isfinite(lr)
        if not has_lr.any() or np.any(lr[has_lr] < 0):
            raise InputError(
                f"{path}: run {run_id}: no learning rate >= 0 in the lr column; accepted: the "
                "rate at the logged steps"
            )
        evals = np.isfinite(loss)
        if np.any(loss[evals] <= 0):
            raise InputError(f"{path}: run {run_id}: a val_loss <= 0")
        if not evals.any():
            continue
        n_steps = int(steps.max())
        out.append(
            Curve(
                run_id=str(run_id),
                n_params=float(run["n_params"]),
                lrs=lrs_from_rows(steps[has_lr], lr[has_lr], n_steps),
                steps=steps[evals].astype(np.int64),
                loss=loss[evals],
                batch_tokens=int(batch) if math.isfinite(batch) and batch > 0 else 0,
            )
        )
    return out


def areas(lrs: ArrayLike, decay: float) -> tuple[FloatArray, FloatArray]:
    """(S1, S2) after 0, 1, ..., T updates (arrays of T + 1) for the rates ``lrs`` of T updates:
    S1 the forward area, S2 the annealing area with momentum ``decay`` (module docstring)."""
    eta = np.asarray(lrs, dtype=float)
    s1 = np.concatenate([[0.0], np.cumsum(eta)])
    drops = np.concatenate([[0.0], np.maximum(0.0, eta[:-1] - eta[1:])])  # eta_{i-1} - eta_i
    m = lfilter([1.0], [1.0, -decay], drops)  # m_i = decay m_{i-1} + drop_i, as a filter
    s2 = np.concatenate([[0.0], np.cumsum(m)])
    return s1, s2


def anneal_loss(
    s1: ArrayLike, s2: ArrayLike, L0: float, A: float, alpha: float, C: float
) -> FloatArray:
    """Tissue et al.'s L = L0 + A S1^-alpha - C S2."""
    s1, s2 = np.asarray(s1, dtype=float), np.asarray(s2, dtype=float)
    return L0 + A * s1**-alpha - C * s2


def lrs_from_rows(steps: ArrayLike, lr: ArrayLike, n_steps: int) -> FloatArray:
    """The rate of every update 1..n_steps from rates logged at some of them: linear between
    logged steps, the first and last logged rate held beyond them. An approximation for a CSV
    that logs the rate every k updates (a harness run's spec.json gives it exactly)."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(lr, dtype=float)
    order = np.argsort(s)
    return np.interp(np.arange(1, n_steps + 1, dtype=float), s[order], v[order])


def _points(curves: Sequence[Curve], decay: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(S1, S2, loss) at every measurement of every curve."""
    s1s, s2s, ls = [], [], []
    for c in curves:
        s1, s2 = areas(c.lrs, decay)
        s1s.append(s1[c.steps])
        s2s.append(s2[c.steps])
        ls.append(c.loss)
    return np.concatenate(s1s), np.concatenate(s2s), np.concatenate(ls)


def anneal_objective(
    s1: FloatArray, s2: FloatArray, logy: FloatArray, weights: FloatArray | None, delta: float
) -> optim.Objective:
    """Summed Huber of log L - log(exp(l0) + exp(a) S1^-alpha - exp(c) S2) over the points;
    rows of X are [l0, a, alpha, c]. A prediction at or below zero is an infinite objective,
    which the line search steps back from."""
    log_s1 = np.log(s1)

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        l0, a, alpha, c = (X[:, i, None] for i in range(4))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            L0 = np.exp(l0)
            term = np.exp(a - alpha * log_s1[None])  # A S1^-alpha, (j, n)
            ann = np.exp(c) * s2[None]  # C S2
            pred = L0 + term - ann
            lp = np.log(pred)
            r = logy[None] - lp
            f, psi = optim.huber_sum(r, delta, None if weights is None else weights[rows])
            g = -psi / pred  # d f / d pred
            G = np.empty((X.shape[0], 4))
            G[:, 0] = (g * L0).sum(axis=1)
            G[:, 1] = (g * term).sum(axis=1)
            G[:, 2] = (g * term * -log_s1[None]).sum(axis=1)
            G[:, 3] = (g * -ann).sum(axis=1)
            bad = ~np.all(pred > 0, axis=1)
        f = np.where(bad, np.inf, f)
        G[bad] = 0.0
        return f, G

    return fun


def start_grid(s1: FloatArray, s2: FloatArray, loss: FloatArray) -> dict[str, tuple[float, ...]]:
    """Starts from the data's own scales: L0 below the lowest loss; A S1^-alpha about the
    spread of the losses at the middle of S1; C S2 from 0.1% to the whole spread at the
    largest S2. (Learning rates are ~1e-3 to 1, so no fixed grid fits every schedule.)"""
    spread = float(loss.max() - loss.min()) + 1e-3
    mid = float(np.log(np.median(s1)))
    alphas = (0.05, 0.3, 0.7, 1.4)
    a_lo = math.log(spread) + min(alphas) * mid - 2.0
    a_hi = math.log(spread) + max(alphas) * mid + 2.0
    if not s2.max() > 0:  # no rate ever fell: C S2 is 0 whatever C is; C starts (and stays) ~0
        c_axis: tuple[float, ...] = (math.log(1e-12 * spread),)
    else:
        c_hi = math.log(spread / float(s2.max())) + 1.0
        c_axis = tuple(c_hi - k for k in (7.0, 3.5, 1.0))
    return {
        "l0": tuple(math.log(float(loss.min()) * f) for f in (0.25, 0.6, 0.9, 1.2)),
        "a": tuple(np.linspace(a_lo, a_hi, 5).tolist()),
        "alpha": alphas,
        "c": c_axis,
    }


def _params(x: FloatArray) -> dict[str, float]:
    l0, a, alpha, c = (float(v) for v in x)
    return {
        "L0": ft.exp_clipped(l0),
        "A": ft.exp_clipped(a),
        "alpha": alpha,
        "C": ft.exp_clipped(c),
    }


def check_curves(curves: Sequence[Curve], law: str = NAME) -> None:
    """Refuse curves a law cannot be fitted to, naming the run."""
    if not curves:
        raise InputError(f"{law} fit: no curves; accepted: one or more runs' metrics")
    for c in curves:
        if c.lrs.size == 0 or not np.all(np.isfinite(c.lrs)) or np.any(c.lrs < 0):
            raise InputError(
                f"{law} fit: run {c.run_id}: learning rates missing, negative or not "
                "finite; accepted: a rate >= 0 for every update"
            )
        if c.steps.size and (c.steps.min() < 1 or c.steps.max() > c.lrs.size):
            raise InputError(
                f"{law} fit: run {c.run_id}: a step outside 1..{c.lrs.size} (its updates)"
            )
        if not np.all(np.isfinite(c.loss)) or np.any(c.loss <= 0):
            raise InputError(f"{law} fit: run {c.run_id}: a loss not finite and > 0")


@dataclass(frozen=True)
class AnnealFit:
    """A fitted annealing law and the momentum it was fitted with."""

    fit: ft.FitResult
    decay: float
    objectives: dict[float, float]
    """The best objective at each momentum of the profile (`DECAYS`)."""
    s1_range: tuple[float, float] = (math.nan, math.nan)
    s2_range: tuple[float, float] = (math.nan, math.nan)
    """The areas the fitted points span: a prediction beyond them extrapolates the law."""


def fit_anneal(
    curves: Sequence[Curve], *, decays: Sequence[float] = DECAYS, delta: float = 1e-3
) -> AnnealFit:
    """Tissue et al.'s law fitted to the curves of one model size (module docstring).

    Raises
    ------
    InputError
        No curves, fewer points than parameters + 1, or bad rates, steps or losses.
    """
    check_curves(curves)
    tried: dict[float, tuple[ft.RawFit, dict[str, tuple[float, ...]], int]] = {}
    for decay in decays:
        s1, s2, loss = _kept_points(curves, decay)
        _enough(loss.size)
        grid = start_grid(s1, s2, loss)
        starts = ft.grid_points(grid, ANNEAL_ORDER)
        # The many starts run on at most PROFILE_POINTS evenly spaced points (a curve's
        # neighbouring evaluations say nearly the same thing); the distinct optima they find
        # are then refined on every point.
        k = min(loss.size, PROFILE_POINTS)
        sub = np.unique(np.linspace(0, loss.size - 1, k).astype(int))
        thin = anneal_objective(s1[sub], s2[sub], np.log(loss[sub]), None, delta)
        rough = ft.minimize_from(thin, starts)
        fun = anneal_objective(s1, s2, np.log(loss), None, delta)
        raw = rough if sub.size == loss.size else ft.minimize_from(fun, rough.candidates)
        tried[decay] = (raw, grid, starts.shape[0])
    objectives = {d: t[0].f for d, t in tried.items()}
    decay = min(tried, key=lambda d: (objectives[d], d))
    raw, grid, n_starts = tried[decay]
    # The checks (grid edge, precision) of the chosen momentum's fit only: the other momenta
    # of the profile are not the answer, and their warnings would only mislead.
    s1, s2, loss = _kept_points(curves, decay)
    fun = anneal_objective(s1, s2, np.log(loss), None, delta)

    def log_residuals(x: FloatArray) -> FloatArray:
        l0, a, alpha, c = x
        with np.errstate(all="ignore"):
            pred = anneal_loss(s1, s2, np.exp(l0), np.exp(a), alpha, np.exp(c))
            return np.log(loss) - np.log(pred)

    result = ft.fit_result(
        "anneal_curve",
        "anneal_curve",
        raw,
        ANNEAL_ORDER,
        grid,
        _params,
        n_starts,
        int(loss.size),
        fun,
        _ANNEAL_RAW_OF,
        log_residuals,
    )
    if not s2.max() > 0:
        und = {**result.undetermined, "C": NO_ANNEALING}
        result = dataclasses.replace(result, undetermined=und)
    return AnnealFit(
        fit=result,
        decay=decay,
        objectives=objectives,
        s1_range=(float(s1.min()), float(s1.max())),
        s2_range=(float(s2.min()), float(s2.max())),
    )


def _enough(n: int) -> None:
    """The points a fit has (after `_kept_points`) against its parameters."""
    if n < len(ANNEAL_ORDER) + 1:
        raise InputError(
            f"anneal_curve fit: {n} measured points after the first update, fewer than its "
            f"{len(ANNEAL_ORDER)} parameters + 1; accepted: more evaluations "
            "(train.evals_per_run) or more runs"
        )


def _kept_points(
    curves: Sequence[Curve], decay: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_points` where S1 > 0 (a measurement before the first update has no forward area)."""
    s1, s2, loss = _points(curves, decay)
    keep = s1 > 0
    return s1[keep], s2[keep], loss[keep]


def bootstrap_anneal(
    curves: Sequence[Curve],
    fitted: AnnealFit,
    *,
    n_resamples: int,
    rng: np.random.Generator,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over evaluation points at the fitted momentum (warm starts, as every law's):
    the kept parameter samples and how many resamples failed (`fit.kept_resamples`)."""
    s1, s2, loss = _kept_points(curves, fitted.decay)
    warm = fitted.fit
    if loss.size > BOOT_ONE_START_POINTS:
        warm = dataclasses.replace(warm, candidates=warm.candidates[:1])
    return ft.bootstrap_refits(
        lambda W: anneal_objective(s1, s2, np.log(loss), W, delta),
        warm,
        loss.size,
        n_resamples,
        rng,
        to_params=_params,
        law="anneal_curve",
    )


def predict_final(params: Mapping[str, float], decay: float, lrs: ArrayLike) -> float:
    """The law's loss after every update of the schedule ``lrs``."""
    s1, s2 = areas(lrs, decay)
    return float(anneal_loss(s1[-1], s2[-1], params["L0"], params["A"], params["alpha"],
                             params["C"]))  # fmt: skip


FORECAST_BOOTSTRAP = 200
"""Resamples behind a running run's forecast interval (`forecast_final`): `harness status` is
a command one waits for."""


@dataclass(frozen=True)
class Forecast:
    """A running run's final loss as its size's annealing law predicts it."""

    loss: float
    ci95: tuple[float, float]
    n_runs: int
    n_points: int


def forecast_final(run: Curve, others: Sequence[Curve], seed: int = 0) -> Forecast:
    """The final loss of ``run`` (its whole schedule in ``lrs``, its evaluations so far) from the
    law fitted to its evaluations and those of ``others`` (finished runs of its size), with a
    95% interval from `FORECAST_BOOTSTRAP` resamples.

    Raises
    ------
    InputError
        Too few evaluations yet (`fit_anneal`).
    """
    curves = [run, *others]
    fitted = fit_anneal(curves)
    kept, _ = bootstrap_anneal(
        curves, fitted, n_resamples=FORECAST_BOOTSTRAP, rng=np.random.default_rng(seed)
    )
    point = predict_final(fitted.fit.params, fitted.decay, run.lrs)
    s1, s2 = areas(run.lrs, fitted.decay)
    beyond = s1[-1] > fitted.s1_range[1] * (1 + 1e-9) or s2[-1] > fitted.s2_range[1] * (1 + 1e-9)
    if fitted.fit.undetermined and beyond:
        why = "; ".join(f"{k} {v}" for k, v in fitted.fit.undetermined.items())
        raise InputError(f"the law of its evaluations so far does not reach its end: {why}")
    if not (math.isfinite(point) and point > 0):
        raise InputError(f"the law of its evaluations so far gives {point:.4g} at its end")
    finals = [predict_final(p, fitted.decay, run.lrs) for p in kept]
    lo, hi = np.percentile(finals, [2.5, 97.5]) if finals else (math.nan, math.nan)
    return Forecast(point, (float(lo), float(hi)), len(curves), sum(c.loss.size for c in curves))
