"""What a fit determines: the numerical precision of an optimum, the parameters the data leave
undetermined, and the Monte Carlo error of bootstrap interval ends.

These are the quantities `harness reproduce` compares by (see `harness.analysis.reproduce`):
a value is compared within the precision the fit itself has, and a parameter the data do not
determine is compared as undetermined, not by value. Pure functions of arrays; no fit here.

Numerical precision (`precision`). Near an optimum x* the objective is f(x* + d) ~ f* +
d^T H d / 2 (H its Hessian). Moves that raise f by less than eps = 1e-9 f* are below what the
optimizer resolves (scipy L-BFGS-B's default stopping rule is a relative reduction of f of
2.2e-9), so two machines whose last bits differ may stop anywhere in that region. A derived
quantity q(x) with gradient J is then known to +- sqrt(2 eps J H^-1 J^T) (the extent of the
region along J). A flat or negative direction of H that q depends on makes it infinite: the
data fix only a combination of parameters there (a ridge), and q is undetermined.

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
_FLAT = 1e-12  # Hessian eigenvalues below this times the largest count as flat


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


def precision(
    fun: Objective,
    x: Sequence[float],
    f: float,
    quantities: Callable[[FloatArray], Mapping[str, float]],
) -> dict[str, float]:
    """The numerical precision of each quantity at an optimum (module docstring).

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
        flat or negative direction of the objective, or where the Hessian is not finite.
    """
    x = np.asarray(x, dtype=float)
    base = dict(quantities(x))
    with np.errstate(all="ignore"):
        H = _hessian(fun, x)
        if not np.all(np.isfinite(H)):
            return {k: math.inf for k in base}
        w, V = np.linalg.eigh(H)
        flat = w <= _FLAT * max(float(np.max(np.abs(w))), 1e-300)
        eps = PRECISION_RTOL_F * max(abs(float(f)), 1e-300)
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
            c = V.T @ j  # components of the gradient along H's eigenvectors
            scale = float(np.max(np.abs(c))) if c.size else 0.0
            if np.any(flat & (np.abs(c) > 1e-6 * max(scale, 1e-300))) and scale > 0:
                out[k] = math.inf
            else:
                good = ~flat
                out[k] = float(np.sqrt(2.0 * eps * np.sum(c[good] ** 2 / w[good])))
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
    lo_v = v[int(np.clip(math.floor(n * q - half), 0, n - 1))]
    hi_v = v[int(np.clip(math.ceil(n * q + half), 0, n - 1))]
    # Resamples of few runs repeat: values come in ties, and a percentile on a tie moves to the
    # next distinct value when one resample changes. So the band reaches the neighbouring
    # distinct values on both sides.
    below, above = v[v < lo_v], v[v > hi_v]
    lo_v = below[-1] if below.size else lo_v
    hi_v = above[0] if above.size else hi_v
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
            out[k] = (f"95% interval [{lo:.3g}, {hi:.3g}] spans {math.log10(hi / lo):.1f} "
                      f"decades (> {MAX_DECADES:g})")
    return out


def interval_se(values: Sequence[float]) -> list[float]:
    """[se of the 2.5% end, se of the 97.5% end] of a percentile 95% interval (`percentile_se`)."""
    return [percentile_se(values, 0.025), percentile_se(values, 0.975)]


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
    if n_bootstrap and n_failed > FAILED_SHARE_MAX * n_bootstrap:
        out["determined"] = False
        out["undetermined_reason"] = (
            f"the bootstrap's fit did not converge on {n_failed} of {n_bootstrap} resamples "
            f"(> {FAILED_SHARE_MAX:.0%}): the data do not determine this law")
    return out
