"""Chinchilla approaches 1 and 2 (Hoffmann et al. 2022, sections 3.1 and 3.2).

Approach 1: at each compute budget the lowest-loss run gives N_opt(C). Approach 2 (isoFLOP
profiles): at each budget, a parabola in log N through the points around the lowest loss; its
vertex gives N_opt(C) and D_opt(C) = C / (6 N_opt). Both then fit N_opt = k C^a and
D_opt = k' C^b by least squares in log-log space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import Akima1DInterpolator

from harness.analysis.common import check_n_resamples, resample_weights
from harness.analysis.laws import flops
from harness.errors import InputError
from harness.flops import tokens_for_flops

__all__ = [
    "IsoflopResult",
    "bootstrap_isoflop",
    "budget_column",
    "budgets_of",
    "fit_approach1",
    "fit_isoflop",
    "loglog_slope",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class IsoflopResult:
    """Per-budget optima and the power laws through them."""

    budgets: tuple[float, ...]
    """Budgets C (FLOPs) that gave an optimum, ascending."""
    n_opt: tuple[float, ...]
    d_opt: tuple[float, ...]
    loss_opt: tuple[float, ...]
    a: float
    """Exponent of N_opt ∝ C^a."""
    b: float
    """Exponent of D_opt ∝ C^b."""
    log_k_n: float
    """Intercept: log N_opt = log_k_n + a log C."""
    log_k_d: float
    skipped: tuple[float, ...] = ()
    """Budgets without an interior minimum (or too few points)."""
    parabolas: tuple[tuple[float, float, float], ...] = ()
    """Approach 2: (c0, c1, c2) of loss = c0 + c1 x + c2 x^2, x = log N, per budget."""
    windows: tuple[tuple[int, ...], ...] = ()
    """Approach 2: indices (into the input arrays) of the points each minimum used."""
    minimum: str = "parabola"
    """Minimum finder: 'parabola' (Hoffmann et al. 2022) or 'akima' (Porian et al. 2024)."""


def loglog_slope(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Least-squares line log y = k + s log x; returns (s, k).

    Raises
    ------
    InputError
        With fewer than 2 distinct x.
    """
    lx = np.log(np.asarray(x, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    if np.unique(lx).size < 2:
        raise InputError("power law through optima: fewer than 2 budgets; accepted: at least 2")
    s, k = np.polyfit(lx, ly, 1)
    return float(s), float(k)


def budgets_of(flops: ArrayLike, budget: ArrayLike | None = None) -> FloatArray:
    """The budget of each run: the given budget column, else C = 6ND rounded to 3 digits."""
    if budget is not None:
        return np.asarray(budget, dtype=float)
    c = np.asarray(flops, dtype=float)
    return np.array([float(f"{v:.3g}") for v in c])


def _groups(budget: FloatArray) -> list[tuple[float, NDArray[np.intp]]]:
    return [(float(c), np.flatnonzero(budget == c)) for c in np.unique(budget)]


def fit_approach1(
    n_params: ArrayLike, n_tokens: ArrayLike, loss: ArrayLike, budget: ArrayLike
) -> IsoflopResult:
    """Approach 1 from final losses: per budget, the run with the lowest loss.

    Parameters
    ----------
    n_params, n_tokens, loss, budget : array_like
        Per run; runs with equal budget form one FLOP level.

    Returns
    -------
    IsoflopResult

    Raises
    ------
    InputError
        With fewer than 2 budgets.
    """
    N, D, L, C = (np.asarray(v, dtype=float) for v in (n_params, n_tokens, loss, budget))
    cs, no, do, lo = [], [], [], []
    for c, idx in _groups(C):
        i = idx[np.argmin(L[idx])]
        cs.append(c), no.append(N[i]), do.append(D[i]), lo.append(L[i])
    if len(cs) < 2:
        raise InputError(f"approach 1: {len(cs)} compute budget(s); accepted: at least 2")
    a, kn = loglog_slope(cs, no)
    b, kd = loglog_slope(cs, do)
    return IsoflopResult(
        budgets=tuple(cs),
        n_opt=tuple(no),
        d_opt=tuple(do),
        loss_opt=tuple(lo),
        a=a,
        b=b,
        log_k_n=kn,
        log_k_d=kd,
    )


def _parabola(x: FloatArray, y: FloatArray, w: FloatArray | None = None) -> FloatArray:
    """Weighted least-squares (c0, c1, c2) of y = c0 + c1 x + c2 x^2."""
    V = np.vander(x, 3, increasing=True)
    if w is not None:
        sw = np.sqrt(w)
        V, y = V * sw[:, None], y * sw
    c, *_ = np.linalg.lstsq(V, y, rcond=None)
    return c


def _akima_min(x: FloatArray, y: FloatArray) -> tuple[float, float] | None:
    """(log N, loss) at the minimum of a profile, found the way Porian et al. 2024's code finds
    it (formll/resolving-scaling-law-discrepancies, analysis.py, `interpolation`): the lowest
    loss per distinct N, an Akima interpolant of log loss over log N, evaluated on (k - 1) x 25
    points spaced evenly in log N across the k sizes. None when that grid's minimum is at either
    end (no interior minimum) or fewer than 3 distinct N remain. ``x`` is log N."""
    ux, inv = np.unique(x, return_inverse=True)
    if ux.size < 3:
        return None
    uy = np.full(ux.size, np.inf)
    np.minimum.at(uy, inv, y)
    xs = np.linspace(ux[0], ux[-1], (ux.size - 1) * 25)
    ys = Akima1DInterpolator(ux, np.log(uy))(xs)
    j = int(np.argmin(ys))
    if j == 0 or j == xs.size - 1:
        return None
    return float(xs[j]), float(np.exp(ys[j]))


def fit_isoflop(
    n_params: ArrayLike,
    loss: ArrayLike,
    budget: ArrayLike,
    *,
    half_window: int = 2,
    minimum: Literal["parabola", "akima"] = "parabola",
) -> IsoflopResult:
    """Approach 2: a parabola in log N per budget, through the points around the minimum.

    Hoffmann et al. 2022 (section 3.2) fit a parabola to each isoFLOP profile; here it goes
    through the lowest-loss point and up to `half_window` points on each side (a profile far
    from its minimum is not parabolic in log N). A budget whose lowest loss is at its smallest
    or largest N has no interior minimum and is skipped, as is a parabola opening downwards.
    D_opt = C / (6 N_opt). With ``minimum="akima"`` the minimum of each profile is instead that
    of an Akima interpolant of log loss in log N over the whole profile (`_akima_min`): the
    minimum finder of Porian et al. 2024 (their repository
    formll/resolving-scaling-law-discrepancies), for re-deriving their exponents; a budget is
    skipped only when the interpolant's minimum is at an end of the profile. Their code then
    replaces each minimum by the median over 1000 noise-perturbed copies of the profile (an
    unseeded loss-dependent noise model) and drops a budget where fewer than half of the copies
    have an interior minimum; that step is left out, so the minima here are the deterministic
    ones ("basic" fits on the unperturbed profiles).

    Parameters
    ----------
    n_params, loss, budget : array_like
        Per run.
    half_window : int
        Points on each side of the minimum used by the parabola.
    minimum : {"parabola", "akima"}
        Minimum finder per budget.

    Returns
    -------
    IsoflopResult

    Raises
    ------
    InputError
        If fewer than 2 budgets give a minimum.
    """
    N, L, C = (np.asarray(v, dtype=float) for v in (n_params, loss, budget))
    cs, no, do, lo, skipped, pars, wins = [], [], [], [], [], [], []
    for c, idx in _groups(C):
        idx = idx[np.argsort(N[idx], kind="stable")]
        i = int(np.argmin(L[idx]))
        # The parabola needs the lowest point inside the profile; Akima's own rule (an interior
        # minimum of the interpolant) is applied in _akima_min, as the authors apply it.
        if minimum != "akima" and (i == 0 or i == idx.size - 1 or idx.size < 3):
            skipped.append(c)
            continue
        if minimum == "akima":
            found = _akima_min(np.log(N[idx]), L[idx])
            if found is None:
                skipped.append(c)
                continue
            xo, lmin = found
            win, c0, c1, c2 = idx, float("nan"), float("nan"), float("nan")
        else:
            win = idx[max(0, i - half_window) : i + half_window + 1]
            c0, c1, c2 = _parabola(np.log(N[win]), L[win])
            if not c2 > 0:
                skipped.append(c)
                continue
            xo = -c1 / (2 * c2)
            lmin = float(c0 + c1 * xo + c2 * xo * xo)
        n_opt = float(np.exp(xo))
        cs.append(c), no.append(n_opt), do.append(tokens_for_flops(c, n_opt))
        lo.append(lmin), pars.append((c0, c1, c2))
        wins.append(tuple(int(v) for v in win))
    if len(cs) < 2:
        raise InputError(
            f"isoFLOP (approach 2): {len(cs)} budget(s) with an interior minimum "
            f"({len(skipped)} without); accepted: at least 2"
        )
    a, kn = loglog_slope(cs, no)
    b, kd = loglog_slope(cs, do)
    return IsoflopResult(
        budgets=tuple(cs),
        n_opt=tuple(no),
        d_opt=tuple(do),
        loss_opt=tuple(lo),
        a=a,
        b=b,
        log_k_n=kn,
        log_k_d=kd,
        skipped=tuple(skipped),
        parabolas=tuple(tuple(map(float, p)) for p in pars),
        windows=tuple(wins),
        minimum=minimum,
    )


def bootstrap_isoflop(
    n_params: ArrayLike,
    loss: ArrayLike,
    res: IsoflopResult,
    *,
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, int]:
    """Bootstrap of approach 2: resample the points of each budget's window, refit the minimum.

    The window of each budget stays the one chosen on the full data (the whole profile for
    Akima); points inside it are resampled with replacement (stratified by budget). A budget
    without a minimum in a resample drops out of that resample's line. Returns (a, b) per
    usable resample and the number of unusable resamples (fewer than 2 budgets left).

    Raises
    ------
    InputError
        If n_resamples < 1.
    """
    check_n_resamples(n_resamples)
    N = np.asarray(n_params, dtype=float)
    L = np.asarray(loss, dtype=float)
    lc = np.log(np.asarray(res.budgets))
    logn = np.empty((n_resamples, len(res.budgets)))
    for j, win in enumerate(res.windows):
        w_idx = np.asarray(win)
        if res.minimum == "akima":
            x, y = np.log(N[w_idx]), L[w_idx]
            for r in range(n_resamples):
                pick = rng.integers(0, w_idx.size, size=w_idx.size)
                found = _akima_min(x[pick], y[pick])
                logn[r, j] = np.nan if found is None else found[0]
            continue
        x, y = np.log(N[w_idx]), L[w_idx]
        counts = resample_weights(w_idx.size, n_resamples, rng)
        # Weighted normal equations for all resamples at once: (n_resamples, 3, 3).
        V = np.vander(x, 3, increasing=True)  # (m, 3)
        M = np.einsum("rm,mi,mj->rij", counts, V, V)
        v = np.einsum("rm,mi,m->ri", counts, V, y)
        det = np.linalg.det(M)
        ok = np.abs(det) > 1e-12 * np.max(np.abs(M), axis=(1, 2)) ** 3
        coef = np.full((n_resamples, 3), np.nan)
        coef[ok] = np.linalg.solve(M[ok], v[ok][..., None])[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            xo = np.where(coef[:, 2] > 0, -coef[:, 1] / (2 * coef[:, 2]), np.nan)
        logn[:, j] = xo
    # A budget whose resample has no interior minimum drops out of that resample's line; a
    # resample with fewer than 2 budgets left is unusable.
    fin = np.isfinite(logn)
    good = fin.sum(axis=1) >= 2
    wt = fin[good].astype(float)
    ln = np.where(fin[good], logn[good], 0.0)
    cnt = wt.sum(axis=1, keepdims=True)
    mc = (wt * lc).sum(axis=1, keepdims=True) / cnt
    mn = ln.sum(axis=1, keepdims=True) / cnt
    dc = (lc - mc) * wt
    a = (dc * (ln - mn)).sum(axis=1) / (dc * (lc - mc)).sum(axis=1)
    # log D_opt = log C - log 6 - log N_opt, so b = 1 - a exactly.
    return a, 1.0 - a, int(np.sum(~good))


def budget_column(df: pd.DataFrame) -> np.ndarray | None:
    """The per-run compute budget if the runs form isoFLOP profiles, else None.

    Taken from a ``flops_budget`` column, else C = 6ND rounded to 3 significant digits when at
    least 2 budgets hold runs of 3 or more distinct N.
    """
    if "flops_budget" in df.columns:
        b = pd.to_numeric(df["flops_budget"], errors="coerce").to_numpy(dtype=float)
        if np.all(np.isfinite(b) & (b > 0)):
            return b
    b = budgets_of(flops(df["n_params"], df["n_tokens"]))
    n_prof = sum(np.unique(df["n_params"].to_numpy()[b == c]).size >= 3 for c in np.unique(b))
    return b if n_prof >= 2 else None
