"""Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").

Repeated tokens are worth less than new ones, and parameters beyond what the unique data can use
are worth less than useful ones. With U_D unique tokens seen, D total tokens, R_D = D / U_D - 1
repetitions (epochs beyond the first), N parameters, U_N = min(N, N_opt(U_D)) (the
compute-optimal size for U_D tokens, Chinchilla's eq. 4 inverted) and R_N = N / U_N - 1 (excess
parameters), the paper's eq. 5-7 replace N and D in L = E + A/N^alpha + B/D^beta by

    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)).

D' = D for a single epoch; as epochs grow, D' -> U_D (1 + R_D*): R_D* is the number of
repetitions after which repeated tokens have lost 1 - 1/e of their value. The published fit on
C4 (the authors' datablations repository, utils/parametric_fit.ipynb): log A =
6.255414, log B = 7.3049974, log E = 0.6254804, alpha = beta = 0.3526596, R_D* = 15.387756,
R_N* = 5.309743.

The fit is the paper's: a Huber loss (delta = 1e-3) summed over the residuals
log L - LSE(a - alpha log N', b - beta log D', e), minimised with L-BFGS from a grid of starts.
The paper fits in two steps: E, A, B, alpha, beta on single-epoch runs (Chinchilla approach 3),
then R_D* and R_N* with those held (``fixed``, as `MUENNIGHOFF_2023` does). By default this
module does the first step the house way (`fit.fit_chinchilla` on the runs that see every token
once) and then fits all seven parameters jointly, started from that fit's distinct optima times a
grid of R_D*, R_N*: with few runs, the repeated runs also inform E, A, B, alpha, beta. R_D* and
R_N* are optimised as logarithms (positive by construction). U_N depends on the fitted A, B,
alpha, beta; N' is continuously differentiable across N = N_opt(U_D) (its derivative in U_N
vanishes there), so L-BFGS needs no special care at the switch.

What data can determine: R_D* only from runs with more than one epoch, R_N* only from runs with
N > N_opt(U_D) under the fitted law. `repeat_counts` says how many runs of each kind the
optimum has; `undetermined` names the parameters no run's prediction depends on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from harness.analysis import fit as fitmod
from harness.analysis import optim
from harness.analysis.common import check_n_resamples
from harness.analysis.fit import CHINCHILLA_START_GRID, FitResult, GridEdgeWarning
from harness.errors import InputError

__all__ = [
    "MUENNIGHOFF_2023",
    "PARAMS",
    "R_START_GRID",
    "bootstrap_data_constrained",
    "data_constrained_loss",
    "effective_data",
    "effective_params",
    "fit_data_constrained",
    "has_repeats",
    "implied_effective_data",
    "n_opt_for_tokens",
    "repeat_counts",
    "unique_tokens_of",
    "undetermined",
]

FloatArray = NDArray[np.float64]

MUENNIGHOFF_2023: Mapping[str, float] = {
    "E": math.exp(0.6254804),
    "A": math.exp(6.255414),
    "B": math.exp(7.3049974),
    "alpha": 0.3526596,
    "beta": 0.3526596,
    "R_D_star": 15.387756,
    "R_N_star": 5.309743,
}
"""The published C4 fit (Muennighoff et al. 2023; datablations utils/parametric_fit.ipynb)."""

PARAMS: tuple[str, ...] = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")
"""Parameter names, as in fits.json."""

R_START_GRID: Mapping[str, tuple[float, ...]] = {
    "R_D_star": (1.0, 4.0, 16.0, 64.0),
    "R_N_star": (1.0, 4.0, 16.0, 64.0),
}
"""Starting values of R_D* and R_N* (the published 15.4 and 5.3 lie inside), crossed with the
distinct optima of the single-epoch Chinchilla fit."""
N_POLISH = 32
"""Distinct best end points of the multi-start stage polished (Chinchilla fits polish 8). The
data-constrained objective has long, nearly flat valleys towards E -> 0, R_D* -> 0 and
R_N* -> inf: a start that ends up best may still be far down its valley when the multi-start
stage stops, and with 8 polished on results/isoflop it was left out on one set of float
kernels (objective 8.60e-4) and kept on another (6.41e-4)."""

# Optimizer coordinates: Chinchilla's (`fit.CHIN_ORDER`) and the logs of R_D*, R_N*.
_ORDER = ("a", "b", "alpha", "beta", "e", "log_R_D_star", "log_R_N_star")
_RAW_OF = {
    "A": "a",
    "B": "b",
    "alpha": "alpha",
    "beta": "beta",
    "E": "e",
    "R_D_star": "log_R_D_star",
    "R_N_star": "log_R_N_star",
}
_LOG_PARAMS = ("E", "A", "B", "R_D_star", "R_N_star")  # optimised as logs
_LOG_R_MAX = 50.0  # R* beyond e^50 is "repeats are as good as new"; keeps exp finite


# ---------------------------------------------------------------------------------------------
# The law


def effective_data(unique_tokens: ArrayLike, n_tokens: ArrayLike, R_D_star: float) -> FloatArray:
    """D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) (Muennighoff et al. 2023, eq. 5-6).

    U_D = min(U, D) is the unique tokens a run sees (a run of D < U tokens sees D of them) and
    R_D = D / U_D - 1 its repetitions beyond the first epoch.

    Parameters
    ----------
    unique_tokens, n_tokens : array_like
        U and D (positive; broadcast together).
    R_D_star : float
        Repetitions at which repeated data has lost 1 - 1/e of its value (> 0).

    Returns
    -------
    ndarray
        Effective data D' (D' = D for one epoch, D' -> U_D (1 + R_D*) as D -> inf).
    """
    D = np.asarray(n_tokens, dtype=float)
    UD = np.minimum(np.asarray(unique_tokens, dtype=float), D)
    RD = D / UD - 1.0
    return UD + UD * R_D_star * -np.expm1(-RD / R_D_star)


def n_opt_for_tokens(
    tokens: ArrayLike, A: float, B: float, alpha: float, beta: float
) -> FloatArray:
    """Compute-optimal N for D tokens: the N with D_opt(6 N D) = D (Hoffmann et al. 2022, eq. 4).

    At the optimum alpha A N^-alpha = beta B D^-beta, so
    N_opt(D) = (alpha A D^beta / (beta B))^(1/alpha), the same as G (G D)^(beta/alpha) with
    G = (alpha A / (beta B))^(1/(alpha+beta)) (Muennighoff et al.'s D_to_N).

    Returns
    -------
    ndarray
    """
    logD = np.log(np.asarray(tokens, dtype=float))
    return np.exp((math.log(alpha * A / (beta * B)) + beta * logD) / alpha)


def effective_params(
    n_params: ArrayLike,
    unique_tokens: ArrayLike,
    n_tokens: ArrayLike,
    A: float,
    B: float,
    alpha: float,
    beta: float,
    R_N_star: float,
) -> FloatArray:
    """N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)) (Muennighoff et al. 2023, eq. 7).

    U_N = min(N, N_opt(U_D)) with U_D = min(U, D), and R_N = N / U_N - 1.

    Returns
    -------
    ndarray
        Effective parameters N' (N' = N for N <= N_opt(U_D)).
    """
    N = np.asarray(n_params, dtype=float)
    UD = np.minimum(np.asarray(unique_tokens, dtype=float), np.asarray(n_tokens, dtype=float))
    UN = np.minimum(N, n_opt_for_tokens(UD, A, B, alpha, beta))
    RN = N / UN - 1.0
    return UN + UN * R_N_star * -np.expm1(-RN / R_N_star)


def data_constrained_loss(
    N: ArrayLike,
    D: ArrayLike,
    U: ArrayLike,
    E: float,
    A: float,
    B: float,
    alpha: float,
    beta: float,
    R_D_star: float,
    R_N_star: float,
) -> FloatArray:
    """L(N, D, U) = E + A / N'^alpha + B / D'^beta (Muennighoff et al. 2023, eq. 5-7).

    Parameters
    ----------
    N, D, U : array_like
        Parameters, training tokens and unique tokens (broadcast together).
    E, A, B, alpha, beta, R_D_star, R_N_star : float
        The law's parameters (`MUENNIGHOFF_2023` for the published ones).

    Returns
    -------
    ndarray
        Predicted loss.
    """
    Np = effective_params(N, U, D, A, B, alpha, beta, R_N_star)
    Dp = effective_data(U, D, R_D_star)
    return E + A * Np ** (-alpha) + B * Dp ** (-beta)


def implied_effective_data(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    unique_tokens: ArrayLike,
    loss: ArrayLike,
    params: Mapping[str, float],
) -> FloatArray:
    """The D' at which the fitted law gives each run's observed loss (NaN where none does).

    Solves B / D'^beta = L - E - A / N'^alpha for D': where a run lies on the fitted curve of
    effective data against epochs (`plots.plot_effective_data`).

    Returns
    -------
    ndarray
    """
    p = params
    Np = effective_params(
        n_params, unique_tokens, n_tokens, p["A"], p["B"], p["alpha"], p["beta"], p["R_N_star"]
    )
    rest = np.asarray(loss, dtype=float) - p["E"] - p["A"] * Np ** (-p["alpha"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (p["B"] / rest) ** (1.0 / p["beta"])
    return np.where(rest > 0, out, np.nan)


# ---------------------------------------------------------------------------------------------
# The objective: summed Huber over log-space residuals, analytic gradient, rows batched


def _objective(
    N: FloatArray,
    D: FloatArray,
    U: FloatArray,
    L: FloatArray,
    weights: FloatArray | None,
    delta: float,
    free: NDArray[np.intp],
    full0: FloatArray,
) -> optim.Objective:
    """``fun(X, rows)`` over the free coordinates of `_ORDER`; the others stay at full0's."""
    logN = np.log(N)[None]
    UD = np.minimum(U, D)
    logUD = np.log(UD)[None]
    RD = (D / UD - 1.0)[None]
    logy = np.log(L)[None]

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        j = X.shape[0]
        full = np.tile(full0, (j, 1))
        full[:, free] = X
        a, b, al, be, e, lrd, lrn = (full[:, i, None] for i in range(7))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            # D' (eq. 6), with R_D* = exp(lrd): s_D = R_D* (1 - exp(-R_D / R_D*)).
            rds = np.exp(np.minimum(lrd, _LOG_R_MAX))
            xd = RD / rds
            emd = np.exp(-xd)
            sd = rds * -np.expm1(-xd)
            logDp = logUD + np.log1p(sd)
            dDp_lrd = np.where(lrd < _LOG_R_MAX, (sd - RD * emd) / (1.0 + sd), 0.0)
            # N' (eq. 7): log N_opt(U_D) = (a - b + log(alpha / beta) + beta log U_D) / alpha.
            logNopt = (a - b + np.log(al / be) + be * logUD) / al
            ex = logN > logNopt  # excess parameters
            logUN = np.where(ex, logNopt, logN)
            RN = np.where(ex, np.expm1(logN - logUN), 0.0)
            rns = np.exp(np.minimum(lrn, _LOG_R_MAX))
            xn = RN / rns
            emn = np.exp(-xn)
            sn = rns * -np.expm1(-xn)
            logNp = logUN + np.log1p(sn)
            # d log N' / d log U_N where U_N = N_opt (zero at the switch: C1 there).
            g = np.where(ex, 1.0 - emn * (RN + 1.0) / (1.0 + sn), 0.0)
            dNp_lrn = np.where(lrn < _LOG_R_MAX, (sn - RN * emn) / (1.0 + sn), 0.0)
            dU_dal = (1.0 - al * logNopt) / al**2  # d log N_opt / d alpha
            dU_dbe = (logUD - 1.0 / be) / al  # d log N_opt / d beta
            # log L = LSE(a - alpha log N', b - beta log D', e), shifted per point.
            zN = a - al * logNp
            zD = b - be * logDp
            m = np.maximum(np.maximum(zN, zD), e)
            pN, pD, pE = np.exp(zN - m), np.exp(zD - m), np.exp(e - m)
            s = pN + pD + pE
            r = logy - (m + np.log(s))
            pN, pD, pE = pN / s, pD / s, pE / s
            psi = np.clip(r, -delta, delta)
            if weights is None:
                f = np.einsum("jn,jn->j", psi, r - 0.5 * psi)
            else:
                w = weights[rows]
                psi = psi * w
                f = np.einsum("jn,jn->j", psi, r - 0.5 * np.clip(r, -delta, delta))
            # dF/dtheta = -sum psi dpred/dtheta.
            G = np.empty((j, 7))
            G[:, 0] = -(psi * pN * (1.0 - g)).sum(axis=1)  # a (also moves N_opt: -alpha g / alpha)
            G[:, 1] = -(psi * (pD + pN * g)).sum(axis=1)  # b
            G[:, 2] = -(psi * pN * (-logNp - al * g * dU_dal)).sum(axis=1)  # alpha
            G[:, 3] = -(psi * (-pD * logDp - pN * al * g * dU_dbe)).sum(axis=1)  # beta
            G[:, 4] = -(psi * pE).sum(axis=1)  # e
            G[:, 5] = -(psi * pD * (-be * dDp_lrd)).sum(axis=1)  # log R_D*
            G[:, 6] = -(psi * pN * (-al * dNp_lrn)).sum(axis=1)  # log R_N*
            bad = ~((al > 0) & (be > 0))[:, 0]
            f[bad] = np.inf
        return f, G[:, free]

    return fun


def _params(full: FloatArray) -> dict[str, float]:
    a, b, al, be, e, lrd, lrn = (float(v) for v in full)
    return {
        "E": fitmod.exp_clipped(e),
        "A": fitmod.exp_clipped(a),
        "B": fitmod.exp_clipped(b),
        "alpha": al,
        "beta": be,
        "R_D_star": fitmod.exp_clipped(lrd),
        "R_N_star": fitmod.exp_clipped(lrn),
    }


# ---------------------------------------------------------------------------------------------
# Inputs


def _check(
    n_params: ArrayLike, n_tokens: ArrayLike, unique_tokens: ArrayLike, loss: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    N = fitmod.as_positive("n_params", n_params)
    D = fitmod.as_positive("n_tokens", n_tokens)
    U = fitmod.as_positive("n_unique_tokens", unique_tokens)
    L = fitmod.as_positive("loss", loss)
    fitmod.check_same_length(n_params=N, n_tokens=D, n_unique_tokens=U, loss=L)
    return N, D, U, L


def _fixed_raw(fixed: Mapping[str, float] | None) -> dict[str, float]:
    raw: dict[str, float] = {}
    for k, v in (fixed or {}).items():
        if k not in PARAMS:
            raise InputError(
                f"data-constrained fit: fixed parameter {k!r}; accepted: {', '.join(PARAMS)}"
            )
        ok = math.isfinite(v) and (v > 0 or k not in _LOG_PARAMS + ("alpha", "beta"))
        if not ok:
            raise InputError(
                f"data-constrained fit: fixed {k} = {v!r}; accepted: a finite number > 0"
            )
        raw[_RAW_OF[k]] = math.log(v) if k in _LOG_PARAMS else float(v)
    return raw


def repeat_counts(
    n_params: ArrayLike, n_tokens: ArrayLike, unique_tokens: ArrayLike, params: Mapping[str, float]
) -> tuple[int, int]:
    """(runs with more than one epoch, runs with N > N_opt(U_D) under `params`): the runs that
    inform R_D* and R_N*."""
    N = np.asarray(n_params, dtype=float)
    D = np.asarray(n_tokens, dtype=float)
    UD = np.minimum(np.asarray(unique_tokens, dtype=float), D)
    n_rep = int(np.sum(D > UD))
    nopt = n_opt_for_tokens(UD, params["A"], params["B"], params["alpha"], params["beta"])
    return n_rep, int(np.sum(N > nopt))


def undetermined(
    n_params: ArrayLike, n_tokens: ArrayLike, unique_tokens: ArrayLike, params: Mapping[str, float]
) -> tuple[str, ...]:
    """Parameters no run informs: halving or doubling one changes no run's predicted loss by a
    relative 1e-9. R_D* without repeated runs, R_N* without runs of N > N_opt(U_D), and any
    parameter of a term the fit drove to zero (alpha so large that A / N'^alpha vanishes: then
    A, alpha and R_N* say nothing; E at zero).

    Returns
    -------
    tuple of str
        Names from `PARAMS`, in that order.
    """
    base = data_constrained_loss(n_params, n_tokens, unique_tokens, **params)
    out = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for k in PARAMS:
            moved = [
                data_constrained_loss(
                    n_params, n_tokens, unique_tokens, **{**params, k: params[k] * f}
                )
                for f in (0.5, 2.0)
            ]
            if all(np.nanmax(np.abs(m / base - 1.0)) < 1e-9 for m in moved):
                out.append(k)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Fit and bootstrap


def _base_starts(N: FloatArray, D: FloatArray, U: FloatArray, L: FloatArray) -> FloatArray:
    """Distinct optima (a, b, alpha, beta, e) of a Chinchilla fit of the single-epoch runs (the
    paper's first step), or of all runs with D taken as new tokens when those are too few.

    A coordinate that fit leaves undetermined (typically e, run off to E -> 0) has arbitrary
    values at its optima: they sit anywhere along a flat direction, and where differs with the
    CPU's float kernels. Starting the joint fit from them made its optimum move between CPUs
    (results/isoflop: A, B, alpha and beta by 19-218%). Such a coordinate starts instead from
    every value of its axis of the Chinchilla start grid."""
    one = D <= U
    use = (
        one
        if (one.sum() >= 5 and np.unique(N[one]).size >= 2 and np.unique(D[one]).size >= 2)
        else np.ones_like(one)
    )
    with warnings.catch_warnings():
        # Edges of this intermediate fit say nothing about the final one (checked below).
        warnings.simplefilter("ignore", GridEdgeWarning)
        base = fitmod.fit_chinchilla(N[use], D[use], L[use])
    cand = np.asarray(base.candidates, dtype=float)
    loose = {_RAW_OF[k] for k in base.undetermined}
    for i, r in enumerate(fitmod.CHIN_ORDER):
        if r in loose:
            grid = np.asarray(CHINCHILLA_START_GRID[r], dtype=float)
            cand = np.repeat(cand, grid.size, axis=0)
            cand[:, i] = np.tile(grid, cand.shape[0] // grid.size)
    return np.unique(cand, axis=0)


def fit_data_constrained(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    unique_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    fixed: Mapping[str, float] | None = None,
    delta: float = 1e-3,
    r_start_grid: Mapping[str, Sequence[float]] = R_START_GRID,
) -> FitResult:
    """Fit L = E + A/N'^alpha + B/D'^beta with R_D*, R_N* (Muennighoff et al. 2023, eq. 5-7).

    Summed Huber loss on log-space residuals, L-BFGS from a grid of starts (module docstring):
    the distinct optima of a Chinchilla fit of the single-epoch runs times `r_start_grid`, all
    seven parameters free unless `fixed` holds some (the paper held E, A, B, alpha, beta from
    its first step). The best end points are polished to double precision (`fit.minimize_from`).

    Parameters
    ----------
    n_params, n_tokens, unique_tokens, loss : array_like
        N, D, unique tokens U and final loss per run (positive, equal lengths). A run with
        D <= U sees D unique tokens once.
    fixed : mapping, optional
        Parameters held at these values (names in `PARAMS`).
    delta : float
        Huber threshold.
    r_start_grid : mapping
        Starting values of R_D_star and R_N_star.

    Returns
    -------
    FitResult
        law 'data_constrained'; params E, A, B, alpha, beta, R_D_star, R_N_star (every one,
        fixed or not); raw in optimizer coordinates (logs of E, A, B, R_D*, R_N*).

    Raises
    ------
    InputError
        Bad values, unequal lengths, no run with more than one epoch, fewer runs than free
        parameters, or a single distinct N or D among them; a bad `fixed`.

    Warns
    -----
    GridEdgeWarning
        When a determined parameter ends on or beyond the edge of its start grid.
    """
    N, D, U, L = _check(n_params, n_tokens, unique_tokens, loss)
    raw_fixed = _fixed_raw(fixed)
    if not np.any(D > U):
        raise InputError(
            "data-constrained fit: no run repeats data (n_tokens <= n_unique_tokens in all "
            f"{N.size} rows); R_D* needs runs of more than one epoch"
        )
    free = np.array([i for i, k in enumerate(_ORDER) if k not in raw_fixed], dtype=np.intp)
    if free.size == 0:
        raise InputError("data-constrained fit: every parameter is fixed; nothing to fit")
    fitmod.check_joint(N, D, int(free.size), "data-constrained")
    # Start grid: base optima x R grid, with the fixed coordinates at their values.
    missing = [k for k in ("R_D_star", "R_N_star") if k not in r_start_grid]
    if missing:
        raise InputError(f"r_start_grid lacks {missing}; accepted keys: R_D_star, R_N_star")
    rgrid = {
        "log_R_D_star": tuple(math.log(v) for v in r_start_grid["R_D_star"]),
        "log_R_N_star": tuple(math.log(v) for v in r_start_grid["R_N_star"]),
    }
    base_fixed = all(k in raw_fixed for k in _ORDER[:5])
    base = np.zeros((1, 5)) if base_fixed else _base_starts(N, D, U, L)
    rs = fitmod.grid_points(rgrid, ("log_R_D_star", "log_R_N_star"))
    full_starts = np.array([np.concatenate([bb, r]) for bb in base for r in rs])
    for k, v in raw_fixed.items():
        full_starts[:, _ORDER.index(k)] = v
    starts = np.unique(full_starts[:, free], axis=0)
    full0 = full_starts[0].copy()
    fun = _objective(N, D, U, L, None, delta, free, full0)
    raw = fitmod.minimize_from(fun, starts, n_polish=N_POLISH)
    full = full0.copy()
    full[free] = raw.x
    params = _params(full)
    skip = {_RAW_OF[k] for k in undetermined(N, D, U, params)}
    spec = {**CHINCHILLA_START_GRID, **rgrid}
    names = [_ORDER[i] for i in free]
    check = [(k, v) for k, v in zip(names, raw.x, strict=True) if k not in skip]
    edge = (
        fitmod.grid_edge(
            np.array([v for _, v in check]), spec, [k for k, _ in check], "data-constrained"
        )
        if check
        else ()
    )
    conv, msg = fitmod.converged_message(raw)

    def to_params(xf: NDArray[np.float64]) -> dict[str, float]:
        y = full0.copy()
        y[free] = xf
        return _params(y)

    def log_residuals(y: FloatArray) -> FloatArray:
        with np.errstate(all="ignore"):
            return np.log(L) - np.log(data_constrained_loss(N, D, U, **to_params(y)))

    prec, sd_prec = fitmod.precision_with_scatter(
        fun, raw.x, raw.f, to_params, log_residuals, int(free.size)
    )
    raw_of = {
        k: tuple(r for r in (_RAW_OF[k], {"A": "alpha", "B": "beta"}.get(k, "")) if r in names)
        for k in PARAMS
        if _RAW_OF[k] in names
    }
    und = fitmod.undetermined_of(
        params,
        prec,
        edge,
        dict(zip(names, map(float, raw.x), strict=True)),
        raw_of,
        located=raw.status != optim.MAX_ITER,
    )
    und.update({k: "no run's prediction depends on it" for k in PARAMS if _RAW_OF[k] in skip})
    sd, dof = fitmod.residual_scale(log_residuals(raw.x), int(free.size))
    return FitResult(
        law="data_constrained",
        params=params,
        objective=raw.f,
        converged=conv,
        message=msg,
        n_starts=int(starts.shape[0]),
        n_points=int(N.size),
        grad_max=raw.grad_max,
        on_grid_edge=bool(edge),
        edge_params=tuple(edge),
        raw=dict(zip(_ORDER, map(float, full), strict=True)),
        candidates=tuple(tuple(map(float, c)) for c in raw.candidates),
        precision=prec,
        undetermined={k: und[k] for k in PARAMS if k in und},
        residual_sd_log=sd,
        residual_sd_log_precision=sd_prec,
        dof=dof,
    )


def bootstrap_data_constrained(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    unique_tokens: ArrayLike,
    loss: ArrayLike,
    fit: FitResult,
    *,
    n_resamples: int = 1000,
    rng: np.random.Generator,
    fixed: Mapping[str, float] | None = None,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over runs, warm-started from the full fit's optima (as `fit.bootstrap_chinchilla`).

    Pass the `fixed` that `fit` was made with: those parameters stay fixed in every resample.

    Returns
    -------
    list of dict, int
        Parameters of each kept resample (`fit.kept_resamples`); the number that failed.

    Raises
    ------
    InputError
        n_resamples < 1 or bad data.
    """
    check_n_resamples(n_resamples)
    N, D, U, L = _check(n_params, n_tokens, unique_tokens, loss)
    raw_fixed = _fixed_raw(fixed)
    full0 = np.array([fit.raw[k] for k in _ORDER])
    free = np.array([i for i, k in enumerate(_ORDER) if k not in raw_fixed], dtype=np.intp)

    def params(x: FloatArray) -> dict[str, float]:
        full = full0.copy()
        full[free] = x
        return _params(full)

    return fitmod.bootstrap_refits(
        lambda W: _objective(N, D, U, L, W, delta, free, full0),
        fit,
        N.size,
        n_resamples,
        rng,
        to_params=params,
        law="data_constrained",
    )


# ---------------------------------------------------------------------------------------------
# runs.csv


def unique_tokens_of(df: pd.DataFrame, source: str = "runs.csv") -> FloatArray | None:
    """Unique tokens per run from a runs.csv frame: ``n_unique_tokens``, else n_tokens / epochs;
    None when the frame has neither column (or only empty ones).

    Raises
    ------
    InputError
        A non-numeric, NaN, infinite or non-positive value (named with its line in the file).
    """
    # A column left empty in every row (a CSV from elsewhere) counts as absent.
    cols = [c for c in ("n_unique_tokens", "epochs") if c in df.columns and df[c].notna().any()]
    if not cols:
        return None
    col = cols[0]
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(vals) | ~(vals > 0))
    if bad.size:
        lines = df["line"].iloc[bad].tolist() if "line" in df.columns else bad.tolist()
        shown = ", ".join(repr(v) for v in raw.iloc[bad].tolist()[:5])
        where = ", ".join(str(int(x)) for x in lines[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise InputError(
            f"{source}: column {col!r} has bad value(s) {shown}{more} at line(s) {where}{more}; "
            "accepted: finite numbers > 0"
        )
    if col == "epochs":
        return df["n_tokens"].to_numpy(dtype=float) / vals
    return vals


def has_repeats(df: pd.DataFrame, source: str = "runs.csv") -> bool:
    """The runs vary the data's repetition: more than one epochs value, or some run with fewer
    unique tokens than training tokens."""
    U = unique_tokens_of(df, source)
    if U is None:
        return False
    D = df["n_tokens"].to_numpy(dtype=float)
    return bool(np.unique(np.round(D / U, 9)).size > 1 or np.any(U < D))
