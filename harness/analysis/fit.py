"""Fits of scaling laws: pure functions from arrays to a frozen `FitResult`.

Chinchilla approach 3 is fitted exactly as the Epoch AI replication fits it (Besiroglu et al.
2024, "Chinchilla Scaling: A replication attempt", following Hoffmann et al. 2022, appendix
D.2): the Huber loss (delta = 1e-3) *summed* over the residuals
log L_i - LSE(a - alpha log N_i, b - beta log D_i, e), minimised with L-BFGS from every point of
the grid alpha, beta in {0, 0.5, .., 2}, e in {-1, -0.5, .., 1}, a, b in {0, 5, .., 25}
(4500 starts), best kept; E = exp(e), A = exp(a), B = exp(b). All starts run at once in
`optim.batched_lbfgs` with analytic gradients, stopping as scipy's L-BFGS-B does by default
(except that starts whose objective stays far above the best are dropped after a few
iterations, see `minimize_from`); then the best distinct end points are polished with tight
tolerances so that the reported optimum is precise to double precision, not only to scipy's
default tolerance.

The one-variable laws L(x) = E + A x^-alpha and Kaplan et al. (2020)'s L(N, D) use the same
log-space Huber objective and the same batched optimizer from their own start grids.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from harness.analysis import identify, optim
from harness.analysis.common import check_n_resamples, resample_weights
from harness.errors import InputError

__all__ = [
    "CHINCHILLA_START_GRID",
    "EXPONENTS",
    "Bootstrapped",
    "KAPLAN_START_GRID",
    "POWER_LAW_START_GRID",
    "FitResult",
    "GridEdgeWarning",
    "bootstrap_chinchilla",
    "bootstrap_kaplan",
    "bootstrap_overtraining",
    "bootstrap_power_law",
    "chinchilla_params",
    "fit_chinchilla",
    "fit_kaplan",
    "fit_overtraining",
    "fit_power_law",
    "kept_resamples",
    "residual_scale",
]

FloatArray = NDArray[np.float64]

# The grid of initialisations of Hoffmann et al. 2022 (appendix D.2), which Besiroglu et al. 2024
# (Epoch AI) keep: 5 * 5 * 5 * 6 * 6 = 4500 starts.
CHINCHILLA_START_GRID: Mapping[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
# The same axes for one term, e widened to -1..3 (E up to 20 nats: small models' losses lie
# far above Chinchilla's E = 1.69): 5 * 9 * 6 = 270 starts.
POWER_LAW_START_GRID: Mapping[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
# Kaplan et al. 2020 in log space: log N_c, log D_c, u = alpha_N / alpha_D, alpha_D; published
# values (log 8.8e13 = 32.1, log 5.4e13 = 31.6, u = 0.8, alpha_D = 0.095) lie inside.
KAPLAN_START_GRID: Mapping[str, tuple[float, ...]] = {
    "log_N_c": (10.0, 20.0, 30.0, 40.0),
    "log_D_c": (10.0, 20.0, 30.0, 40.0),
    "u": (0.5, 1.0, 2.0),
    "alpha_D": (0.05, 0.1, 0.3, 0.6),
}

# Tight tolerances of the polishing run (the batched stage uses scipy L-BFGS-B's defaults).
_POLISH_GTOL = 1e-11
_POLISH_MAX_ITER = 5000
_N_POLISH = 8  # distinct best end points polished
_N_WARM = 4  # distinct optima used as warm starts of each bootstrap resample
_BOOT_GTOL = 1e-7  # bootstrap rule: max |g| <= 1e-7 or an absolute decrease of f <= 1e-13
_BOOT_FTOL = 1e-13
_BOOT_MAX_ITER = 500
_DROP_AFTER = 10  # early dropping of starts in the multi-start stage (see minimize_from)
_DROP_EVERY = 5
_DROP_FACTOR = 10.0


EXPONENTS: Mapping[str, tuple[str, ...]] = {
    "chinchilla": ("alpha", "beta"),
    "power_law": ("alpha",),
    "kaplan": ("alpha_N", "alpha_D"),
    "overtraining": ("eta",),
    "data_constrained": ("alpha", "beta"),
    "anneal_curve": ("alpha",),
    "multi_power_curve": ("alpha", "beta"),
}
"""Each law's exponents: a resample whose fit puts one at or below zero (loss that does not
fall with scale) is degenerate, and no interval is built from it."""


class GridEdgeWarning(UserWarning):
    """The best fit lies on the edge of (or outside) the grid of starting points.

    Besiroglu et al. 2024 check for this: an optimum at the edge suggests the grid does not
    cover the region where the optimum lies, and a wider grid may find a better one.
    """


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """One fitted law."""

    law: str
    """'chinchilla', 'power_law' or 'kaplan'."""
    params: dict[str, float]
    """Fitted parameters by name (E, A, B, alpha, beta; E, A, alpha; N_c, D_c, alpha_N, alpha_D)."""
    objective: float
    """Final value of the summed Huber objective."""
    converged: bool
    """The polished optimum met the stopping rule (max |gradient| <= 1e-5, as L-BFGS-B)."""
    message: str
    """The optimizer's stopping reason for the reported optimum."""
    n_starts: int
    """Number of starting points."""
    n_points: int
    """Number of data points."""
    grad_max: float
    """max |gradient| of the objective at the optimum."""
    on_grid_edge: bool
    """True when a fitted raw parameter is not strictly inside the range of the start grid."""
    edge_params: tuple[str, ...] = ()
    """The raw parameters on or beyond the edge of the grid."""
    raw: dict[str, float] = field(default_factory=dict)
    """Parameters in the optimizer's coordinates (a = log A, e = log E, ...)."""
    candidates: tuple[tuple[float, ...], ...] = ()
    """Distinct local optima found (optimizer coordinates, best first): bootstrap warm starts."""
    precision: dict[str, float] = field(default_factory=dict)
    """+- numerical precision of each parameter at the optimum (`identify.precision`); inf where
    it lies along a flat direction of the objective."""
    undetermined: dict[str, str] = field(default_factory=dict)
    """Parameters the data do not determine, with the reason: on the start grid's edge, or
    along a flat direction of the objective (precision worse than 1% of the value)."""
    residual_sd_log: float = math.nan
    """The scatter of the runs about the law: sqrt(sum r^2 / dof) of the log residuals
    r = log L - log L_fit (`residual_scale`); nan without degrees of freedom left."""
    residual_sd_log_precision: float = math.inf
    """+- numerical precision of that scatter (`identify.precision`): the Huber objective
    does not fix the sum of squares, so an optimum that may stop anywhere along a ridge leaves
    the scatter known only to this (results/repeat's power_law_d: 0.067 against 0.071)."""
    dof: int = 0
    """Degrees of freedom of that scatter: points minus fitted parameters."""


@dataclass(frozen=True)
class Bootstrapped:
    """A law fitted once, with the parameters of its usable bootstrap resamples: what a later
    step that needs the same law on the same runs reuses instead of fitting it again (the
    downstream chain's step 1 reuses fits.json's Chinchilla fit)."""

    fit: FitResult
    boots: list[dict[str, float]]
    n_failed: int
    n_points: int


def residual_scale(log_residuals: ArrayLike, n_free: int) -> tuple[float, int]:
    """(sd, dof) of log residuals: sd = sqrt(sum r^2 / (n - n_free)), nan when n <= n_free.

    The scatter a new run shows about the law beyond the law's own uncertainty (seed noise,
    the parts of the loss the law leaves out): what a prediction interval adds to the
    confidence interval of the law (`predict`).
    """
    r = np.asarray(log_residuals, dtype=float)
    dof = int(r.size - n_free)
    if dof <= 0 or not np.all(np.isfinite(r)):
        return math.nan, max(dof, 0)
    return float(np.sqrt(np.sum(r**2) / dof)), dof


def exp_clipped(v: float) -> float:
    """exp(v) as a float: inf, honestly and without a RuntimeWarning, beyond the float range
    (v > 709.78, a fitted log-scale parameter that ran away); nan stays nan."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def as_positive(name: str, v: ArrayLike) -> FloatArray:
    arr = np.asarray(v, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        shown = ", ".join(f"{float(arr[i])!r} (index {i})" for i in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise InputError(f"{name}: bad value(s) {shown}{more}; accepted: finite numbers > 0")
    return arr


def check_same_length(**arrays: FloatArray) -> int:
    lengths = {k: v.size for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"arrays differ in length: {lengths}; accepted: equal lengths")
    return next(iter(lengths.values()))


def grid_points(spec: Mapping[str, Sequence[float]], order: Sequence[str]) -> FloatArray:
    missing = [k for k in order if k not in spec]
    if missing:
        raise InputError(f"start_grid lacks {missing}; accepted keys: {list(order)}")
    axes = [np.asarray(spec[k], dtype=float) for k in order]
    for k, ax in zip(order, axes, strict=True):
        if ax.size == 0 or not np.all(np.isfinite(ax)):
            raise InputError(f"start_grid[{k!r}] = {list(ax)}; accepted: finite numbers")
    return np.array(list(itertools.product(*axes)), dtype=float)


def _distinct(x: FloatArray, f: FloatArray, limit: int) -> FloatArray:
    """Up to `limit` rows of x with the lowest f, no two within 1e-6 of each other."""
    kept: list[FloatArray] = []
    for i in np.argsort(f, kind="stable"):
        if not np.isfinite(f[i]):
            break
        if all(np.max(np.abs(x[i] - y)) > 1e-6 * max(1.0, np.max(np.abs(y))) for y in kept):
            kept.append(x[i])
            if len(kept) == limit:
                break
    return np.array(kept) if kept else x[:1]


@dataclass(frozen=True)
class RawFit:
    x: FloatArray
    f: float
    status: int
    grad_max: float
    candidates: FloatArray


def minimize_from(fun: optim.Objective, starts: FloatArray, n_polish: int = _N_POLISH) -> RawFit:
    """Batched L-BFGS from all starts, then polish the best `n_polish` distinct end points."""
    # Early dropping: every start begins and takes _DROP_AFTER iterations; from then on, every
    # _DROP_EVERY iterations, a start whose objective is above _DROP_FACTOR times the best of
    # all starts so far stops (status DROPPED). On Chinchilla-like data most of the iterations
    # of a 4500-start fit go to starts that converge slowly onto optima several times worse
    # than the best; the starts that reach the best optimum are many, and the polish below
    # takes the best distinct end points to double precision. Checked in bench/bench_fit.py:
    # the best objective stays <= that of the plain scipy loop over the same starts.
    res = optim.batched_lbfgs(
        fun, starts, drop_after=_DROP_AFTER, drop_every=_DROP_EVERY, drop_factor=_DROP_FACTOR
    )
    cand = _distinct(res.x, res.f, n_polish)
    pol = optim.batched_lbfgs(fun, cand, gtol=_POLISH_GTOL, ftol=0.0, max_iter=_POLISH_MAX_ITER)
    i = int(np.argmin(np.where(np.isfinite(pol.f), pol.f, np.inf)))
    # The warm starts of the bootstrap are the polished optima only. An unpolished end point
    # is where a start happened to stop on a slope, and which of those rank among the best
    # is decided by last bits; as a warm start it drew resamples to other optima on each CPU
    # (results/wsd_cosine's overtraining: a's upper end 17.3 on AVX2, 12.1 on AVX-512).
    cands = _distinct(pol.x, pol.f, _N_POLISH)
    return RawFit(
        x=pol.x[i],
        f=float(pol.f[i]),
        status=int(pol.status[i]),
        grad_max=float(pol.grad_max[i]),
        candidates=cands,
    )


def converged_message(raw: RawFit) -> tuple[bool, str]:
    # The polishing run stops at the precision limit (a line search without decrease) long
    # after it meets L-BFGS-B's default rule; that rule (max |g| <= 1e-5) decides convergence.
    ok = raw.status in (optim.CONV_GRAD, optim.CONV_F) or raw.grad_max <= 1e-5
    msg = optim.MESSAGES[raw.status]
    if raw.status == optim.LS_FAIL and ok:
        msg = f"converged: max |gradient| = {raw.grad_max:.2e} <= 1e-5 (then precision limit)"
    return bool(ok), msg


def grid_edge(
    raw_x: FloatArray, spec: Mapping[str, Sequence[float]], order: Sequence[str], law: str
) -> tuple[str, ...]:
    edge = []
    for k, v in zip(order, raw_x, strict=True):
        lo, hi = float(min(spec[k])), float(max(spec[k]))
        if not (lo < v < hi):
            edge.append(k)
    if edge:
        desc = ", ".join(
            f"{k}={v:.4g} (grid {min(spec[k]):g}..{max(spec[k]):g})"
            for k, v in zip(order, raw_x, strict=True)
            if k in edge
        )
        warnings.warn(
            f"{law} fit: best fit on the edge of the start grid: {desc}; these data do not pin "
            "it down (reported as undetermined): runs over a wider range of N and D would",
            GridEdgeWarning,
            stacklevel=3,
        )
    return tuple(edge)


# ---------------------------------------------------------------------------------------------
# Chinchilla approach 3


CHIN_ORDER = ("a", "b", "alpha", "beta", "e")  # optimizer layout, see optim.lse_huber_objective
# A coefficient is undetermined with its exponent: as alpha runs off the grid (to 0 or to
# large values), A / N^alpha turns into a constant or vanishes, and A trades off against E.
_CHIN_RAW_OF = {
    "E": ("e",),
    "A": ("a", "alpha"),
    "B": ("b", "beta"),
    "alpha": ("alpha",),
    "beta": ("beta",),
}


def undetermined_of(
    params: Mapping[str, float],
    prec: Mapping[str, float],
    edge: Sequence[str],
    raw_x: Mapping[str, float],
    raw_of: Mapping[str, Sequence[str]],
    located: bool = True,
) -> dict[str, str]:
    """{parameter: reason} for the parameters a fit leaves undetermined.

    ``located`` False (the polish ran out of iterations, creeping along a ridge, before it
    reached the precision limit) leaves every parameter undetermined: the point is not the
    optimum, and another CPU stops elsewhere on the ridge.

    On the start grid's edge (Besiroglu et al. 2024's check: the optimum ran off the region the
    grid covers, often towards a limit such as E -> 0), or known only to worse than
    `identify.RELATIVE_PRECISION_MAX` of its value at the optimum (a flat direction, a ridge).
    ``raw_of`` maps each parameter to the optimizer coordinates it is computed from.
    """
    out: dict[str, str] = {}
    for name, raws in raw_of.items():
        if not located:
            out[name] = "the polish stopped at its iteration limit (a ridge; optimum not located)"
            continue
        hit = [r for r in raws if r in edge]
        if hit:
            out[name] = (
                "on the start grid's edge (" + ", ".join(f"{r} = {raw_x[r]:.4g}" for r in hit) + ")"
            )
            continue
        v, u = params.get(name, math.nan), prec.get(name, math.inf)
        if not (u <= identify.RELATIVE_PRECISION_MAX * abs(v)):
            out[name] = (
                "along a flat direction of the objective"
                if not math.isfinite(u)
                else f"known only to +-{u:.3g} at the optimum"
            )
    return out


def fit_result(
    law: str,
    name: str,
    raw: RawFit,
    order: Sequence[str],
    start_grid: Mapping[str, Sequence[float]],
    to_params: Callable[[FloatArray], dict[str, float]],
    n_starts: int,
    n_points: int,
    fun: optim.Objective,
    raw_of: Mapping[str, Sequence[str]],
    log_residuals: Callable[[FloatArray], FloatArray],
) -> FitResult:
    """The FitResult of a multi-start minimisation: convergence, grid-edge check, precision and
    undetermined parameters, raw optimum, scatter of the residuals (``log_residuals`` maps
    optimizer coordinates to log L - log L_fit of every point)."""
    sd, dof = residual_scale(log_residuals(raw.x), len(order))
    conv, msg = converged_message(raw)
    edge = grid_edge(raw.x, start_grid, order, name)
    params = to_params(raw.x)
    prec, sd_prec = precision_with_scatter(fun, raw.x, raw.f, to_params, log_residuals, len(order))
    raw_x = dict(zip(order, map(float, raw.x), strict=True))
    return FitResult(
        law=law,
        params=params,
        objective=raw.f,
        converged=conv,
        message=msg,
        n_starts=n_starts,
        n_points=n_points,
        grad_max=raw.grad_max,
        on_grid_edge=bool(edge),
        edge_params=edge,
        raw=raw_x,
        candidates=tuple(tuple(map(float, c)) for c in raw.candidates),
        precision=prec,
        undetermined=undetermined_of(
            params, prec, edge, raw_x, raw_of, located=raw.status != optim.MAX_ITER
        ),
        residual_sd_log=sd,
        residual_sd_log_precision=sd_prec,
        dof=dof,
    )


def precision_with_scatter(
    fun: optim.Objective,
    x: FloatArray,
    f: float,
    to_params: Callable[[FloatArray], dict[str, float]],
    log_residuals: Callable[[FloatArray], FloatArray],
    n_free: int,
) -> tuple[dict[str, float], float]:
    """`identify.precision` of the parameters and of the residual scatter, in one Hessian."""
    key = "\0residual_sd_log"  # no parameter's name

    def quantities(y: FloatArray) -> dict[str, float]:
        return {**to_params(y), key: residual_scale(log_residuals(y), n_free)[0]}

    prec = identify.precision(fun, x, f, quantities)
    return {k: v for k, v in prec.items() if k != key}, prec[key]


def lse_log_residuals(x: FloatArray, logx: FloatArray, logy: FloatArray) -> FloatArray:
    """log L - LSE(a_k - alpha_k log x_k, e) at raw optimum x (layout of
    `optim.lse_huber_objective`: [a_1..a_K, alpha_1..alpha_K, e])."""
    K = logx.shape[1]
    terms = [x[k] - x[K + k] * logx[:, k] for k in range(K)] + [np.full(logy.size, x[2 * K])]
    with np.errstate(over="ignore", invalid="ignore"):
        return logy - np.logaddexp.reduce(np.vstack(terms), axis=0)


def chinchilla_params(x: FloatArray) -> dict[str, float]:
    a, b, alpha, beta, e = (float(v) for v in x)
    return {
        "E": exp_clipped(e),
        "A": exp_clipped(a),
        "B": exp_clipped(b),
        "alpha": alpha,
        "beta": beta,
    }


def check_joint(N: FloatArray, D: FloatArray, n_par: int, law: str) -> None:
    if N.size < n_par:
        raise InputError(
            f"{law} fit: {N.size} points, fewer than its {n_par} parameters; "
            f"accepted: at least {n_par} runs"
        )
    for name, v in (("n_params", N), ("n_tokens", D)):
        if np.unique(v).size < 2:
            raise InputError(
                f"{law} fit: a single {name} value {v[0]:.6g} in all {v.size} rows; a joint "
                f"L(N, D) fit needs at least 2 distinct values of n_params and of n_tokens"
            )


def fit_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    start_grid: Mapping[str, Sequence[float]] = CHINCHILLA_START_GRID,
    name: str = "chinchilla",
) -> FitResult:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3).

    The method of Besiroglu et al. 2024: summed Huber loss on log-space residuals of the
    log-sum-exp form, L-BFGS from every start of the grid, best kept (module docstring).

    Parameters
    ----------
    n_params, n_tokens, loss : array_like
        N, D and final loss per run (positive, finite, equal lengths).
    delta : float
        Huber threshold.
    start_grid : mapping
        Axes of the start grid, keys a, b, alpha, beta, e (product taken).
    name : str
        The fit's name in messages (a sub-fit says which, e.g. the held-out check's).

    Returns
    -------
    FitResult
        params E, A, B, alpha, beta.

    Raises
    ------
    InputError
        Non-positive or non-finite values, unequal lengths, fewer than 5 points, or a single
        distinct N or D.

    Warns
    -----
    GridEdgeWarning
        When the best fit lies on the edge of the start grid.
    """
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    check_same_length(n_params=N, n_tokens=D, loss=L)
    check_joint(N, D, 5, name)
    starts = grid_points(start_grid, CHIN_ORDER)
    logx = np.column_stack([np.log(N), np.log(D)])
    fun = optim.lse_huber_objective(logx, np.log(L), None, delta)
    raw = minimize_from(fun, starts)
    return fit_result(
        "chinchilla",
        name,
        raw,
        CHIN_ORDER,
        start_grid,
        chinchilla_params,
        starts.shape[0],
        N.size,
        fun,
        _CHIN_RAW_OF,
        lambda x: lse_log_residuals(x, logx, np.log(L)),
    )


def bootstrap_refits(
    make_fun: Callable[[FloatArray | None], optim.Objective],
    fit: FitResult,
    n: int,
    n_resamples: int,
    rng: np.random.Generator,
    groups: ArrayLike | None = None,
    *,
    to_params: Callable[[FloatArray], dict[str, float]],
    law: str,
) -> tuple[list[dict[str, float]], int]:
    """Refit on resampled runs: the kept resamples' parameters and how many failed
    (`kept_resamples`). ``groups`` resamples whole groups of points
    (`common.resample_weights`); ``to_params`` maps optimizer coordinates to the law's
    parameters."""
    # Warm starts instead of the full grid (cost: a few starts per resample, not 4500): each
    # resample starts from the full-data optimum and the other distinct local optima the full
    # grid found. A resample is the same data with other weights, so its optimum lies near one
    # of these; this is what keeps a 1000-resample bootstrap to about the cost of one full fit.
    # An optimum past the float range (A = exp(5769) on a ridge that runs to infinity) is no
    # law that can be stated or evaluated: it is no warm start either. (A degenerate one,
    # an exponent <= 0, stays: resamples started there fail, and should.)
    cands = [c for c in fit.candidates if _finite(to_params(np.asarray(c, dtype=float)))]
    starts = np.asarray((cands or list(fit.candidates))[:_N_WARM], dtype=float)
    ns = starts.shape[0]
    W = resample_weights(n, n_resamples, rng, groups)
    Wr = np.repeat(W, ns, axis=0)  # row r uses resample r // ns
    x0 = np.tile(starts, (n_resamples, 1))
    # A much smaller ftol than scipy's default: started at (or near) an optimum, the first
    # steps reduce f by little, and scipy's rule would stop every resample at its warm start.
    res = optim.batched_lbfgs(
        make_fun(Wr), x0, gtol=_BOOT_GTOL, ftol=_BOOT_FTOL, max_iter=_BOOT_MAX_ITER
    )
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(n_resamples, ns)
    ok = (res.converged | (res.grad_max <= 1e-5)).reshape(n_resamples, ns)
    finite = np.array([_finite(to_params(x)) for x in res.x]).reshape(n_resamples, ns)
    # Starts that end within the optimizer's resolution of the best (a relative 1e-9) are
    # ties: which of them is lowest is decided by last bits that differ between CPUs. Among
    # ties, a start that met the stopping rule with finite parameters is taken, then one that
    # met the rule, so that whether a resample "failed" does not hinge on those bits (on one
    # isoFLOP grid: 0 against 102 failed of 1000). On a ridge that runs to infinity the tied
    # ends are one law at different points of the ridge, some of them past the float range
    # (results/repeat: A = 1e188 or A = exp(5769) = inf, chosen by last bits: 9 against 329
    # failed of 1000 between an AVX2 and an AVX-512 CPU). A tie between a positive and a
    # negative exponent is no such case (two laws fit alike): the lower end decides.
    fbest = f.min(axis=1, keepdims=True)
    tie = f <= fbest + identify.PRECISION_RTOL_F * np.abs(fbest)
    best = np.argmin(f, axis=1)
    for choice in (tie & ok, tie & ok & finite):
        some = np.any(choice, axis=1)
        best[some] = np.argmin(np.where(choice, f, np.inf), axis=1)[some]
    rows = np.arange(n_resamples) * ns + best
    # A resample that draws fewer distinct runs than the law has parameters has a continuum
    # of exact fits: whether the optimizer reports convergence there is decided by last bits
    # (measured: 0 against 102 of 1000 on one isoFLOP grid). It counts as failed, always.
    # (Distinct points; with groups, a drawn group brings all its points.)
    few = np.count_nonzero(W > 0, axis=1) < starts.shape[1]
    conv = ok.ravel()[rows] & ~few
    return kept_resamples(res.x[rows], conv, to_params, law)


def kept_resamples(
    xs: FloatArray,
    conv: NDArray[np.bool_],
    to_params: Callable[[FloatArray], dict[str, float]],
    law: str,
) -> tuple[list[dict[str, float]], int]:
    """The resamples an interval may be built from, and how many failed.

    One rule for every law: a resample counts only when its fit converged (and it drew at least
    as many distinct runs as the law has parameters, `bootstrap_refits`) and its parameters are
    not degenerate: all finite, every exponent (`EXPONENTS`) above zero. A failed resample is
    not a draw from the estimator's distribution but a point where the optimizer stopped; kept,
    it would put intervals on parameters the data never gave (Gadre et al.'s ladder: 963 of
    1000 resamples failed, and their exponents ran down to -0.026).
    """
    kept: list[dict[str, float]] = []
    for x, ok in zip(xs, conv, strict=True):
        p = to_params(x)
        if ok and _usable(p, law):
            kept.append(p)
    return kept, len(xs) - len(kept)


def _finite(p: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in p.values())


def _usable(p: Mapping[str, float], law: str) -> bool:
    """Parameters a law can be evaluated with: all finite, every exponent above zero."""
    return _finite(p) and all(p[k] > 0 for k in EXPONENTS[law])


def bootstrap_chinchilla(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    fit: FitResult,
    *,
    n_resamples: int = 1000,
    rng: np.random.Generator,
    delta: float = 1e-3,
    groups: ArrayLike | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over runs of a Chinchilla fit, warm-started from the full fit's optima.

    Parameters
    ----------
    n_params, n_tokens, loss : array_like
        The data `fit` was fitted on.
    fit : FitResult
        Result of `fit_chinchilla` on that data.
    n_resamples : int
        Number of resamples (with replacement, over runs).
    rng : numpy.random.Generator
        Source of the resampling.
    delta : float
        Huber threshold.
    groups : array_like, optional
        One label per point: whole groups are resampled (the checkpoints of one run).

    Returns
    -------
    list of dict, int
        Parameters of each kept resample (`kept_resamples`: converged, not degenerate); the
        number of resamples that failed (left out).

    Raises
    ------
    InputError
        If n_resamples < 1 or the data are bad (as `fit_chinchilla`).
    """
    check_n_resamples(n_resamples)
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    logx = np.column_stack([np.log(N), np.log(D)])
    return bootstrap_refits(
        lambda W: optim.lse_huber_objective(logx, np.log(L), W, delta),
        fit,
        N.size,
        n_resamples,
        rng,
        groups,
        to_params=chinchilla_params,
        law="chinchilla",
    )


# ---------------------------------------------------------------------------------------------
# One-variable power law with offset


_PL_ORDER = ("a", "alpha", "e")
_PL_RAW_OF = {"E": ("e",), "A": ("a", "alpha"), "alpha": ("alpha",)}


def _pl_params(x: FloatArray) -> dict[str, float]:
    a, alpha, e = (float(v) for v in x)
    return {"E": exp_clipped(e), "A": exp_clipped(a), "alpha": alpha}


def fit_power_law(
    x: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    start_grid: Mapping[str, Sequence[float]] = POWER_LAW_START_GRID,
    name: str = "power_law",
) -> FitResult:
    """Fit L(x) = E + A x^-alpha in log space (the one-term form of Hoffmann et al. 2022, eq. 2).

    Parameters
    ----------
    x, loss : array_like
        Regressor (N, D or C) and loss, positive and finite.
    delta : float
        Huber threshold.
    start_grid : mapping
        Axes a, alpha, e of the start grid.
    name : str
        Name used in messages.

    Returns
    -------
    FitResult
        params E, A, alpha.

    Raises
    ------
    InputError
        Bad values, fewer than 3 points or fewer than 3 distinct x.

    Warns
    -----
    GridEdgeWarning
        When the best fit lies on the edge of the start grid.
    """
    X = as_positive(f"{name}: x", x)
    L = as_positive(f"{name}: loss", loss)
    check_same_length(x=X, loss=L)
    if np.unique(X).size < 3:
        raise InputError(
            f"{name} fit: {np.unique(X).size} distinct x values, fewer than its 3 parameters; "
            "accepted: at least 3 distinct values"
        )
    starts = grid_points(start_grid, _PL_ORDER)
    fun = optim.lse_huber_objective(np.log(X)[:, None], np.log(L), None, delta)
    raw = minimize_from(fun, starts)
    return fit_result(
        "power_law",
        name,
        raw,
        _PL_ORDER,
        start_grid,
        _pl_params,
        starts.shape[0],
        X.size,
        fun,
        _PL_RAW_OF,
        lambda x: lse_log_residuals(x, np.log(X)[:, None], np.log(L)),
    )


def bootstrap_power_law(
    x: ArrayLike,
    loss: ArrayLike,
    fit: FitResult,
    *,
    n_resamples: int = 1000,
    rng: np.random.Generator,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over points of a power-law fit (warm starts as `bootstrap_chinchilla`).

    Raises
    ------
    InputError
        If n_resamples < 1 or the data are bad.
    """
    check_n_resamples(n_resamples)
    X = as_positive("x", x)
    L = as_positive("loss", loss)
    return bootstrap_refits(
        lambda W: optim.lse_huber_objective(np.log(X)[:, None], np.log(L), W, delta),
        fit,
        X.size,
        n_resamples,
        rng,
        to_params=_pl_params,
        law="power_law",
    )


# ---------------------------------------------------------------------------------------------
# Kaplan et al. 2020, L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D


_KAP_ORDER = ("log_N_c", "log_D_c", "u", "alpha_D")
_KAP_RAW_OF = {
    "N_c": ("log_N_c", "u"),
    "D_c": ("log_D_c", "alpha_D"),
    "alpha_N": ("u", "alpha_D"),
    "alpha_D": ("alpha_D",),
}


def _kaplan_objective(
    logN: FloatArray,
    logD: FloatArray,
    logy: FloatArray,
    weights: FloatArray | None,
    delta: float,
) -> optim.Objective:
    """Summed Huber on log L - alpha_D LSE(u (log N_c - log N), log D_c - log D), u = a_N/a_D.

    Kaplan et al. 2020, eq. 1.5 in log space; rows are [log N_c, log D_c, u, alpha_D].
    """

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        lnc, ldc, u, ad = (X[:, i, None] for i in range(4))
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            dn = lnc - logN[None]  # (j, n)
            z1 = u * dn
            z2 = ldc - logD[None]
            mx = np.maximum(z1, z2)
            e1 = np.exp(np.maximum(z1 - mx, -160.0))
            e2 = np.exp(np.maximum(z2 - mx, -160.0))
            s = e1 + e2
            lse = mx + np.log(s)
            r = logy[None] - ad * lse
            f, psi = optim.huber_sum(r, delta, None if weights is None else weights[rows])
            p1 = e1 / s
            p2 = e2 / s
            G = np.empty((X.shape[0], 4))
            G[:, 0] = -(psi * ad * p1 * u).sum(axis=1)  # dpred/dlog N_c = alpha_D p1 u
            G[:, 1] = -(psi * ad * p2).sum(axis=1)  # dpred/dlog D_c = alpha_D p2
            G[:, 2] = -(psi * ad * p1 * dn).sum(axis=1)  # dpred/du = alpha_D p1 (log N_c - log N)
            G[:, 3] = -(psi * lse).sum(axis=1)  # dpred/dalpha_D = LSE
        return f, G

    return fun


def _kap_params(x: FloatArray) -> dict[str, float]:
    lnc, ldc, u, ad = (float(v) for v in x)
    return {"N_c": exp_clipped(lnc), "D_c": exp_clipped(ldc), "alpha_N": u * ad, "alpha_D": ad}


def fit_kaplan(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    start_grid: Mapping[str, Sequence[float]] = KAPLAN_START_GRID,
) -> FitResult:
    """Fit Kaplan et al. 2020's L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (eq. 1.5).

    Summed Huber loss on log-space residuals (as for approach 3), L-BFGS from every start of
    `start_grid` (log N_c, log D_c, u = alpha_N/alpha_D, alpha_D), best kept.

    Parameters
    ----------
    n_params, n_tokens, loss : array_like
        N, D and loss per run.
    delta : float
        Huber threshold.
    start_grid : mapping
        Axes log_N_c, log_D_c, u, alpha_D.

    Returns
    -------
    FitResult
        params N_c, D_c, alpha_N, alpha_D.

    Raises
    ------
    InputError
        Bad values, fewer than 4 points, or a single distinct N or D.

    Warns
    -----
    GridEdgeWarning
        When the best fit lies on the edge of the start grid.
    """
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    check_same_length(n_params=N, n_tokens=D, loss=L)
    check_joint(N, D, 4, "kaplan")
    starts = grid_points(start_grid, _KAP_ORDER)
    fun = _kaplan_objective(np.log(N), np.log(D), np.log(L), None, delta)
    raw = minimize_from(fun, starts)

    def log_residuals(x: FloatArray) -> FloatArray:
        lnc, ldc, u, ad = x
        with np.errstate(over="ignore", invalid="ignore"):
            return np.log(L) - ad * np.logaddexp(u * (lnc - np.log(N)), ldc - np.log(D))

    return fit_result(
        "kaplan",
        "kaplan",
        raw,
        _KAP_ORDER,
        start_grid,
        _kap_params,
        starts.shape[0],
        N.size,
        fun,
        _KAP_RAW_OF,
        log_residuals,
    )


def bootstrap_kaplan(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    fit: FitResult,
    *,
    n_resamples: int = 1000,
    rng: np.random.Generator,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over runs of a Kaplan fit (warm starts as `bootstrap_chinchilla`).

    Raises
    ------
    InputError
        If n_resamples < 1 or the data are bad.
    """
    check_n_resamples(n_resamples)
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    return bootstrap_refits(
        lambda W: _kaplan_objective(np.log(N), np.log(D), np.log(L), W, delta),
        fit,
        N.size,
        n_resamples,
        rng,
        to_params=_kap_params,
        law="kaplan",
    )


# ---------------------------------------------------------------------------------------------
# Over-training, Gadre et al. 2024: L(C, M) = E + (a M^eta + b M^-eta) C^-eta


# Fitted in (N, D) as Chinchilla's form with one exponent gamma for both terms (their eq. 4 is
# that form with gamma = 2 eta, `laws.overtraining_loss`), so the objective is approach 3's
# with alpha = beta tied: the same log-space Huber loss, the same start grid less one axis
# (6 * 6 * 5 * 5 = 900 starts). Gadre et al. fit with scipy's curve_fit from a small grid of
# starts; the Huber objective of Besiroglu et al. is kept here so that every law of the
# registry is fitted alike.
_OT_ORDER = ("a", "b", "gamma", "e")
OVERTRAINING_START_GRID: Mapping[str, tuple[float, ...]] = {
    "a": CHINCHILLA_START_GRID["a"],
    "b": CHINCHILLA_START_GRID["b"],
    "gamma": CHINCHILLA_START_GRID["alpha"],
    "e": CHINCHILLA_START_GRID["e"],
}
_OT_RAW_OF = {"E": ("e",), "a": ("a", "gamma"), "b": ("b", "gamma"), "eta": ("gamma",)}


def _tied_objective(fun5: optim.Objective) -> optim.Objective:
    """Chinchilla's objective of (a, b, alpha, beta, e) as one of (a, b, gamma, e) with
    alpha = beta = gamma; the gradient in gamma is the sum of those in alpha and beta."""

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        f, G = fun5(np.column_stack([X[:, 0], X[:, 1], X[:, 2], X[:, 2], X[:, 3]]), rows)
        return f, np.column_stack([G[:, 0], G[:, 1], G[:, 2] + G[:, 3], G[:, 4]])

    return fun


def _ot_params(x: FloatArray) -> dict[str, float]:
    a, b, gamma, e = (float(v) for v in x)
    eta = gamma / 2.0
    # A N^-gamma with N = (C / (6 M))^(1/2) is A 6^eta M^eta C^-eta: a = A 6^eta (b alike).
    return {
        "E": exp_clipped(e),
        "a": exp_clipped(a + eta * math.log(6.0)),
        "b": exp_clipped(b + eta * math.log(6.0)),
        "eta": eta,
    }


def fit_overtraining(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    delta: float = 1e-3,
    start_grid: Mapping[str, Sequence[float]] = OVERTRAINING_START_GRID,
) -> FitResult:
    """Fit Gadre et al. 2024's L(C, M) = E + (a M^eta + b M^-eta) C^-eta (their eq. 4).

    M = D / N and C = 6 N D. Fitted in (N, D) as approach 3 with alpha = beta (see above).

    Parameters
    ----------
    n_params, n_tokens, loss : array_like
        N, D and final loss per run.
    delta : float
        Huber threshold.
    start_grid : mapping
        Axes a, b, gamma (= 2 eta), e.

    Returns
    -------
    FitResult
        params E, a, b, eta.

    Raises
    ------
    InputError
        Bad values, fewer than 4 points, or a single distinct N or D.
    """
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    check_same_length(n_params=N, n_tokens=D, loss=L)
    check_joint(N, D, 4, "overtraining")
    starts = grid_points(start_grid, _OT_ORDER)
    logx = np.column_stack([np.log(N), np.log(D)])
    fun = _tied_objective(optim.lse_huber_objective(logx, np.log(L), None, delta))
    raw = minimize_from(fun, starts)
    return fit_result(
        "overtraining",
        "overtraining",
        raw,
        _OT_ORDER,
        start_grid,
        _ot_params,
        starts.shape[0],
        N.size,
        fun,
        _OT_RAW_OF,
        lambda x: lse_log_residuals(x[[0, 1, 2, 2, 3]], logx, np.log(L)),
    )


def bootstrap_overtraining(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    loss: ArrayLike,
    fit: FitResult,
    *,
    n_resamples: int = 1000,
    rng: np.random.Generator,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over runs of an over-training fit (warm starts as `bootstrap_chinchilla`).

    Raises
    ------
    InputError
        If n_resamples < 1 or the data are bad.
    """
    check_n_resamples(n_resamples)
    N = as_positive("n_params", n_params)
    D = as_positive("n_tokens", n_tokens)
    L = as_positive("loss", loss)
    logx = np.column_stack([np.log(N), np.log(D)])
    return bootstrap_refits(
        lambda W: _tied_objective(optim.lse_huber_objective(logx, np.log(L), W, delta)),
        fit,
        N.size,
        n_resamples,
        rng,
        to_params=_ot_params,
        law="overtraining",
    )
