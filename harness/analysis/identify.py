"""What a fit determines: the numerical precision of an optimum, the parameters the data leave
undetermined, and the Monte Carlo error of bootstrap interval ends.

These are the quantities `harness reproduce` compares by (see `harness.analysis.reproduce`):
a value is compared within the precision the fit itself has, and a parameter the data do not
determine is compared as undetermined, not by value. Pure functions of arrays; no fit here.

Numerical precision (`precision`). Moves of the parameters that raise the objective by less
than eps = 1e-9 f* are below what the optimizer resolves (scipy L-BFGS-B's default stopping
rule is a relative reduction of f of 2.2e-9), so two machines whose last bits differ may stop
anywhere in that region. Its extent is measured along the eigenvectors of the Hessian (for a
quadratic f* + d^T H d / 2 it is sqrt(2 eps / lambda) along each), and a quantity q(x) is known
to the extent of the region along q's gradient. A direction along which f never rises (a
ridge: the data fix only a combination of parameters) makes q undetermined.

Monte Carlo error of a percentile (`percentile_se`). The q-th sample percentile of n bootstrap
values has a rank that is Binomial(n, q) about its true position (David & Nagaraja, "Order
Statistics", 2003, sec. 7.1): its standard error is half the distance between the order
statistics at ranks nq -+ sqrt(n q (1 - q)). This needs no assumption on the distribution's
shape, which for a scale parameter is often far from normal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FAILED_SHARE_MAX",
    "MAX_DECADES",
    "PRECISION_RTOL_F",
    "RELATIVE_PRECISION_MAX",
    "percentile_se",
    "precision",
    "undetermined_by_interval",
]

FloatArray = NDArray[np.float64]
Objective = Callable[[FloatArray, NDArray[np.intp]], tuple[FloatArray, FloatArray]]

PRECISION_RTOL_F = 1e-9
"""Objective changes below this relative size are below the optimizer's resolution."""
RELATIVE_PRECISION_MAX = 1e-2
"""A parameter known only to worse than 1% of its value by the optimum is undetermined."""
MAX_DECADES = 2.0
"""A positive parameter whose 95% interval spans more decades than this is undetermined."""
FAILED_SHARE_MAX = 0.1
"""A law whose bootstrap fails on more than this share of resamples is undetermined."""


def _hessian(fun: Objective, x: FloatArray) -> FloatArray:
    """Symmetrised central differences of the analytic gradient, (p, p)."""
    p = x.size
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    X = np.repeat(x[None], 2 * p, axis=0)
    X[np.arange(p) * 2, np.arange(p)] += h
    X[np.arange(p) * 2 + 1, np.arange(p)] -= h
    _, G = fun(X, np.zeros(2 * p, dtype=np.intp))
    H = (G[0::2] - G[1::2]) / (2.0 * h[:, None])
    return (H + H.T) / 2.0


def _extent(fun: Objective, x: FloatArray, f: float, V: FloatArray, eps: float) -> FloatArray:
    """Along each column of V, the largest step (either sign) before f exceeds f + eps; inf
    where it never does within _T_MAX (a flat direction). Steps on a geometric grid of ratio
    _T_RATIO, refined once by the same grid between the last step inside and the first out."""
    p = x.size
    scale = max(1.0, float(np.max(np.abs(x))))
    ts = scale * np.geomspace(1e-13, _T_MAX, 100)
    out = np.empty(p)
    dirs = np.concatenate([V.T, -V.T])  # (2p, p)
    X = x[None, None, :] + ts[None, :, None] * dirs[:, None, :]  # (2p, T, p)
    fx, _ = fun(X.reshape(-1, p), np.zeros(X.shape[0] * X.shape[1], dtype=np.intp))
    above = ~(fx.reshape(2 * p, ts.size) <= f + eps)  # nan counts as above
    reach = np.full(2 * p, math.inf)
    lo, hi = np.zeros(2 * p), np.zeros(2 * p)
    for k in range(2 * p):
        hit = np.flatnonzero(above[k])
        if hit.size:
            lo[k], hi[k] = (ts[hit[0] - 1] if hit[0] > 0 else 0.0), ts[hit[0]]
            reach[k] = lo[k]
    # Refine each bracket [last step inside, first outside] on 64 evenly spaced steps (1.5%).
    fin = np.flatnonzero(np.isfinite(reach))
    if fin.size:
        u = np.linspace(0.0, 1.0, 65)[1:]
        T = lo[fin, None] + u[None, :] * (hi - lo)[fin, None]  # (m, 64)
        X = x[None, None, :] + T[:, :, None] * dirs[fin][:, None, :]
        fx, _ = fun(X.reshape(-1, p), np.zeros(X.shape[0] * X.shape[1], dtype=np.intp))
        inside = fx.reshape(fin.size, u.size) <= f + eps
        for m, k in enumerate(fin):
            out_at = np.flatnonzero(~inside[m])
            first_out = out_at[0] if out_at.size else u.size - 1
            reach[k] = T[m, first_out - 1] if first_out > 0 else lo[k]
    for k in range(p):
        out[k] = max(reach[k], reach[k + p])
    return out


_T_MAX = 1e3  # steps beyond 1e3 x max(1, |x|) without a rise of eps: a flat direction


def precision(
    fun: Objective,
    x: Sequence[float],
    f: float,
    quantities: Callable[[FloatArray], Mapping[str, float]],
) -> dict[str, float]:
    """The numerical precision of each quantity at an optimum (module docstring).

    The region where f stays within eps = 1e-9 f of the optimum is measured, not assumed
    quadratic: along each eigenvector of the (finite-difference) Hessian the largest step
    that keeps f within eps is found by evaluating f, so a Huber objective whose optimum sits
    where residuals cross the threshold (f rising linearly) and a ridge (f never rising) are
    both measured as they are. A quantity with gradient J then has precision
    sqrt(sum_k (J . v_k)^2 t_k^2) over the semi-axes t_k along the eigenvectors v_k.

    Parameters
    ----------
    fun : callable
        The objective, ``fun(X, rows) -> (f, G)`` (`optim.Objective`).
    x : sequence of float
        The optimum in the optimizer's coordinates.
    f : float
        The objective there.
    quantities : callable
        Optimizer coordinates -> {name: value} (the law's parameters, or values derived from
        them).

    Returns
    -------
    dict
        {name: +- precision in the quantity's own units}; inf where the quantity depends on a
        flat direction of the objective, or where the Hessian is not finite.
    """
    x = np.asarray(x, dtype=float)
    base = dict(quantities(x))
    with np.errstate(all="ignore"):
        H = _hessian(fun, x)
        if not np.all(np.isfinite(H)):
            return {k: math.inf for k in base}
        _, V = np.linalg.eigh(H)
        eps = PRECISION_RTOL_F * max(abs(float(f)), 1e-300)
        t = _extent(fun, x, float(f), V, eps)
        # Jacobian of the quantities by forward differences, (names, p).
        names = list(base)
        J = np.zeros((len(names), x.size))
        for i in range(x.size):
            step = 1e-7 * max(1.0, abs(float(x[i])))
            y = x.copy()
            y[i] += step
            moved = quantities(y)
            J[:, i] = [(moved[k] - base[k]) / step for k in names]
        out = {}
        for k, j in zip(names, J, strict=True):
            if not np.all(np.isfinite(j)):
                out[k] = math.inf
                continue
            c = V.T @ j  # components of the gradient along the eigenvectors
            scale = float(np.max(np.abs(c))) if c.size else 0.0
            if scale > 0 and np.any(~np.isfinite(t) & (np.abs(c) > 1e-6 * scale)):
                out[k] = math.inf
            else:
                fin = np.isfinite(t)
                out[k] = float(np.sqrt(np.sum((c[fin] * t[fin]) ** 2)))
    return out


def percentile_se(values: Iterable[float], q: float) -> float:
    """Monte Carlo standard error of the q-th percentile (0 < q < 1) of bootstrap values, by
    order statistics (module docstring); non-finite values left out; nan with fewer than 2."""
    v = np.sort(np.asarray(list(values), dtype=float))
    v = v[np.isfinite(v)]
    n = v.size
    if n < 2:
        return math.nan
    half = math.sqrt(n * q * (1.0 - q))
    k = n * q
    lo_v = v[int(np.clip(math.floor(k - half), 0, n - 1))]
    hi_v = v[int(np.clip(math.ceil(k + half), 0, n - 1))]
    if lo_v == hi_v:
        # Resamples of few runs repeat: the band lies inside a tie. The percentile leaves the
        # tie only if its rank moves past the tie's end, so the band reaches the neighbouring
        # distinct value on a side whose tie boundary lies within 2 rank errors.
        first = int(np.searchsorted(v, lo_v, side="left"))
        last = int(np.searchsorted(v, lo_v, side="right"))  # ranks [first, last) tie
        if k - first <= 2 * half and first > 0:
            lo_v = v[first - 1]
        if last - k <= 2 * half and last < n:
            hi_v = v[last]
    return float((hi_v - lo_v) / 2.0)


def undetermined_by_interval(ci95: Mapping[str, Sequence[float]]) -> dict[str, str]:
    """Parameters whose 95% interval is positive and spans more than MAX_DECADES decades, or
    has no finite end: {name: reason}."""
    out = {}
    for k, ci in ci95.items():
        if not isinstance(ci, (list, tuple)) or len(ci) != 2:
            continue
        lo, hi = ci
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            out[k] = "no finite bootstrap interval"
        elif lo > 0 and math.log10(hi / lo) > MAX_DECADES:
            out[k] = (
                f"95% interval [{lo:.3g}, {hi:.3g}] spans {math.log10(hi / lo):.1f} "
                f"decades (> {MAX_DECADES:g})"
            )
    return out


def interval_se(values: Sequence[float]) -> list[float]:
    """[se of the 2.5% end, se of the 97.5% end] of a percentile 95% interval (`percentile_se`)."""
    return [percentile_se(values, 0.025), percentile_se(values, 0.975)]


def failure_verdict(n_failed: int, n_bootstrap: int, how: str) -> dict[str, object]:
    """``determined`` (and why not): the one rule of every bootstrap, that a law whose
    resamples fail more often than FAILED_SHARE_MAX is not determined by its data."""
    if n_bootstrap and n_failed > FAILED_SHARE_MAX * n_bootstrap:
        return {
            "determined": False,
            "undetermined_reason": (
                f"the bootstrap's fit failed on {n_failed} of {n_bootstrap} resamples (> "
                f"{FAILED_SHARE_MAX:.0%}; {how}): the data do not determine this law"
            ),
        }
    return {"determined": True}


def law_fields(
    params: Mapping[str, float],
    precision_of: Mapping[str, float],
    undetermined: Mapping[str, str],
    boots: Sequence[Mapping[str, float]],
    ci95: Mapping[str, Sequence[float]],
    n_failed: int,
    n_bootstrap: int,
) -> dict[str, object]:
    """The fields of a law's block in fits.json that say what the fit determines.

    ``precision`` (+- per parameter at the optimum), ``ci95_mc_se`` (Monte Carlo standard error
    of each interval end), ``undetermined`` ({parameter: reason}: the fit's own, plus intervals
    over decades), ``determined`` (False when the bootstrap failed on more than
    FAILED_SHARE_MAX of its resamples: then the data do not determine the law, and
    ``undetermined_reason`` says so with the counts).
    """
    und = dict(undetermined)
    for k, why in undetermined_by_interval(ci95).items():
        und.setdefault(k, why)
    out: dict[str, object] = {
        "precision": {k: precision_of.get(k, math.inf) for k in params},
        "ci95_mc_se": {k: interval_se([b[k] for b in boots]) for k in params} if boots else {},
        "undetermined": {k: und[k] for k in params if k in und},
        "determined": True,
    }
    out.update(
        failure_verdict(
            n_failed,
            n_bootstrap,
            "no convergence, fewer distinct runs than parameters, or a degenerate law",
        )
    )
    return out
