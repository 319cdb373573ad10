"""The multi-power law of a learning curve (Luo et al. 2025, "A Multi-Power Law for Loss Curve
Prediction Across Learning Rate Schedules", arXiv:2503.12811, eq. 4):

    L(t) = L0 + A (S1(t) + S_W)^-alpha - LD(t)
    LD(t) = B sum_{k<=t} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t)),  G(x) = 1 - (C x + 1)^-beta

after t updates, where S1(t) + S_W is the area under the schedule so far (warmup included) and
S_k(t) = sum_{k<=tau<=t} eta_tau the area since update k. Each drop of the rate lowers the loss
by up to B times the drop, saturating as a power of the area trained since (where Tissue et
al.'s `curves` law has one linear annealing term, this one has a power per drop: it follows
the loss through long cooldowns and WSD's sharp fall). Rises of the rate (the warmup) add no
drop, as in `curves`.

Exact sums over every earlier update cost updates x evaluations per point; the drops are
summed instead in bins of S_k(t) that grow by `BIN_RATIO` (the rate and the area of each bin
are its drops' weighted geometric means), so that a point costs ~log(T) / log(BIN_RATIO) terms:
a bin holds one update wherever S_k(t) moves by more than 20% an update, which is where G
moves fastest (checked against the exact sum in tests/analysis/test_multipower.py).

Fitted as `curves` fits its law: the summed Huber loss (delta = 1e-3) of log residuals with
the batched L-BFGS, in two stages: the law with G = 1 (no saturation: L0 + A S1^-alpha - B
times the rate's total drop, Tissue et al.'s form at momentum 0) from `curves`' data-scaled
grid, then the whole law from that fit's optima crossed with a grid of C, beta and gamma.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from harness.analysis import curves as cv
from harness.analysis import fit as ft
from harness.analysis import optim
from harness.errors import InputError

__all__ = [
    "NAME",
    "MultiPowerFit",
    "bootstrap_multipower",
    "fit_multipower",
    "multipower_loss",
]

FloatArray = NDArray[np.float64]

NAME = "multi_power_curve"
"""The law's block in fits.json (`registry.multi_power_curve`)."""
PARAMS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")
MP_ORDER = ("l0", "a", "alpha", "b", "c", "beta", "gamma")
POINTS_PER_PARAM = 4
"""Evaluations a size needs for each of the law's 7 parameters. With 8 to 16 (the committed WSD
and cosine grids) its optimum lay on ridges and moved with numpy's SIMD kernels on and off
(objective 3.6e-4 against 2.9e-4 at one size of results/wsd_cosine); Luo et al. fit thousands."""
BIN_RATIO = 1.2
"""Drops are summed in bins of the area since them, S_k(t), each 20% wider than the last."""
_MP_RAW_OF = {
    "L0": ("l0",),
    "A": ("a", "alpha"),
    "alpha": ("alpha",),
    "B": ("b",),
    "C": ("c", "gamma"),
    "beta": ("beta",),
    "gamma": ("gamma",),
}
_BETAS = (0.2, 0.6, 1.8)
_GAMMAS = (-0.5, 0.5, 1.5)


@dataclass(frozen=True)
class Terms:
    """What the law needs at each point: the area so far, and its binned drops.

    Pairs (a bin of drops before a point) are grouped by point, in order; every point has at
    least one pair (a zero drop where no rate fell before it), so that sums over a point's
    pairs are `np.add.reduceat` over ``first``."""

    s1: FloatArray
    """(n,) S1(t) + S_W: the area under the schedule up to each point."""
    first: NDArray[np.intp]
    """(n,) each point's first pair."""
    drop: FloatArray
    """(P,) the summed rate drops eta_{k-1} - eta_k of each bin."""
    log_eta: FloatArray
    """(P,) log of the bin's rate eta_k (drop-weighted geometric mean)."""
    log_area: FloatArray
    """(P,) log of the bin's area S_k(t) since its drops (drop-weighted geometric mean)."""

    def per_point(self, values: FloatArray) -> FloatArray:
        """(..., P) pair values -> (..., n) their drop-weighted sums per point."""
        return np.add.reduceat(values * self.drop, self.first, axis=-1)


def terms(lrs: ArrayLike, steps: ArrayLike) -> Terms:
    """The law's terms after each of ``steps`` (1..T) updates with the rates ``lrs`` of T."""
    eta = np.asarray(lrs, dtype=float)
    at = np.asarray(steps, dtype=np.int64)
    area = np.concatenate([[0.0], np.cumsum(eta)])  # area[t]: after t updates
    drops = np.concatenate([[0.0], np.maximum(0.0, eta[:-1] - eta[1:])])  # update k = index + 1
    where = np.flatnonzero(drops > 0)
    log_ratio = math.log(BIN_RATIO)
    first, drop, log_eta, log_area = [], [], [], []
    n_pairs = 0
    for t in at:
        ks = where[where < t]  # updates k <= t (index k - 1) whose rate fell
        first.append(n_pairs)
        if ks.size == 0:
            drop.append(np.zeros(1))
            log_eta.append(np.zeros(1))
            log_area.append(np.zeros(1))
            n_pairs += 1
            continue
        since = area[t] - area[ks]  # S_k(t) = sum of eta_k .. eta_t
        la = np.log(since)
        _, b = np.unique(np.floor(la / log_ratio), return_inverse=True)
        w = drops[ks]
        wsum = np.bincount(b, weights=w)
        drop.append(wsum)
        log_eta.append(np.bincount(b, weights=w * np.log(eta[ks])) / wsum)
        log_area.append(np.bincount(b, weights=w * la) / wsum)
        n_pairs += wsum.size
    return Terms(
        s1=area[at],
        first=np.asarray(first, dtype=np.intp),
        drop=np.concatenate(drop),
        log_eta=np.concatenate(log_eta),
        log_area=np.concatenate(log_area),
    )


def join(parts: Sequence[Terms]) -> Terms:
    """The points of several curves as one."""
    offsets = np.cumsum([0] + [p.drop.size for p in parts[:-1]])
    return Terms(
        s1=np.concatenate([p.s1 for p in parts]),
        first=np.concatenate([p.first + o for p, o in zip(parts, offsets, strict=True)]),
        drop=np.concatenate([p.drop for p in parts]),
        log_eta=np.concatenate([p.log_eta for p in parts]),
        log_area=np.concatenate([p.log_area for p in parts]),
    )


def multipower_loss(
    t: Terms, L0: ArrayLike, A: ArrayLike, alpha: ArrayLike, B: ArrayLike, C: ArrayLike,
    beta: ArrayLike, gamma: ArrayLike,
) -> FloatArray:  # fmt: skip
    """The law at the points of ``t``; parameters broadcast against the points (give them
    shape (S, 1) for S parameter samples at once)."""
    p = [np.asarray(v, dtype=float) for v in (L0, A, alpha, B, C, beta, gamma)]
    L0_, A_, alpha_, B_, C_, beta_, gamma_ = p
    with np.errstate(all="ignore"):
        u = C_ * np.exp(t.log_area - gamma_ * t.log_eta)
        G = 1.0 - np.exp(-beta_ * np.log1p(u))
        return L0_ + A_ * t.s1**-alpha_ - B_ * t.per_point(G)


def loss_at(params: Mapping[str, ArrayLike], lrs: ArrayLike, steps: ArrayLike) -> FloatArray:
    """The law's loss after each of ``steps`` updates of the schedule ``lrs``."""
    return multipower_loss(terms(lrs, steps), **{k: params[k] for k in PARAMS})


def _objective(
    t: Terms, logy: FloatArray, weights: FloatArray | None, delta: float
) -> optim.Objective:
    """Summed Huber of log L - log L_fit over the points; rows of X are `MP_ORDER`
    (L0 = exp(l0), A = exp(a), B = exp(b), C = exp(c)). A prediction at or below zero is an
    infinite objective, which the line search steps back from."""
    log_s1 = np.log(t.s1)

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        l0, a, alpha, b, c, beta, gamma = (X[:, i, None] for i in range(7))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            L0, B = np.exp(l0), np.exp(b)
            term = np.exp(a - alpha * log_s1[None])  # A S1^-alpha, (j, n)
            u = np.exp(c + t.log_area[None] - gamma * t.log_eta[None])  # (j, P)
            log1pu = np.log1p(u)
            pw = np.exp(-beta * log1pu)  # (1 + u)^-beta
            dlogu = beta * u * pw / (1.0 + u)  # dG / dlog u
            ld = B * t.per_point(1.0 - pw)
            pred = L0 + term - ld
            r = logy[None] - np.log(pred)
            f, psi = optim.huber_sum(r, delta, None if weights is None else weights[rows])
            g = -psi / pred  # d f / d pred
            G = np.empty((X.shape[0], 7))
            G[:, 0] = (g * L0).sum(axis=1)
            G[:, 1] = (g * term).sum(axis=1)
            G[:, 2] = (g * term * -log_s1[None]).sum(axis=1)
            G[:, 3] = (g * -ld).sum(axis=1)
            G[:, 4] = (g * -B * t.per_point(dlogu)).sum(axis=1)
            G[:, 5] = (g * -B * t.per_point(pw * log1pu)).sum(axis=1)
            G[:, 6] = (g * B * t.per_point(dlogu * t.log_eta[None])).sum(axis=1)
            bad = ~np.all(pred > 0, axis=1) | ~np.all(np.isfinite(G), axis=1)
        f = np.where(bad, np.inf, f)
        G[bad] = 0.0
        return f, G

    return fun


def _params(x: FloatArray) -> dict[str, float]:
    l0, a, alpha, b, c, beta, gamma = (float(v) for v in x)
    return {
        "L0": ft.exp_clipped(l0),
        "A": ft.exp_clipped(a),
        "alpha": alpha,
        "B": ft.exp_clipped(b),
        "C": ft.exp_clipped(c),
        "beta": beta,
        "gamma": gamma,
    }


@dataclass(frozen=True)
class MultiPowerFit:
    """A fitted multi-power law and the area its points span."""

    fit: ft.FitResult
    s1_range: tuple[float, float]
    """The area S1 + S_W the fitted points span: a prediction beyond it extrapolates."""


def _points(curves: Sequence[cv.Curve]) -> tuple[Terms, FloatArray]:
    """Every measurement after the first update, of every curve."""
    parts, losses = [], []
    for c in curves:
        keep = c.steps >= 1
        parts.append(terms(c.lrs, c.steps[keep]))
        losses.append(c.loss[keep])
    return join(parts), np.concatenate(losses)


def fit_multipower(curves: Sequence[cv.Curve], *, delta: float = 1e-3) -> MultiPowerFit:
    """The multi-power law fitted to the curves of one model size (module docstring).

    Raises
    ------
    InputError
        No curves, fewer points than parameters + 1, or bad rates, steps or losses.
    """
    cv.check_curves(curves, NAME)
    # Luo et al. fit the law to curves of several schedules (constant and cosine); one curve
    # leaves its 7 parameters on ridges (B against beta, C against gamma) where the optimum
    # moved with numpy's SIMD kernels on and off (results/curves_long: one run a size).
    shapes = {c.lrs.tobytes() for c in curves}
    if len(shapes) < 2:
        raise InputError(
            f"{NAME} fit: the curves of {len(curves)} run(s) with {len(shapes)} schedule; "
            "accepted: runs of 2 or more schedules (or lengths) at a size"
        )
    t, loss = _points(curves)
    if loss.size < POINTS_PER_PARAM * len(MP_ORDER):
        raise InputError(
            f"{NAME} fit: {loss.size} measured points after the first update, fewer than "
            f"{POINTS_PER_PARAM} for each of its {len(MP_ORDER)} parameters; accepted: more "
            "evaluations (train.evals_per_run) or more runs"
        )
    logy = np.log(loss)
    # Stage 1: G = 1, so that LD(t) = B times the rate's total drop so far (`curves`' law).
    total_drop = t.per_point(np.ones_like(t.drop))
    grid1 = cv.start_grid(t.s1, total_drop, loss)
    stage1 = ft.minimize_from(
        cv.anneal_objective(t.s1, total_drop, logy, None, delta),
        ft.grid_points(grid1, cv.ANNEAL_ORDER),
    )
    # Stage 2: each optimum of stage 1 with C x + 1 ~ 1 .. 100 over the pairs' typical area,
    # B raised by the share of the drop that G < 1 leaves (2x), at each beta and gamma.
    mid = float(np.median(t.log_area[t.drop > 0] - 0.5 * t.log_eta[t.drop > 0])) if np.any(
        t.drop > 0) else 0.0  # fmt: skip
    c_axis = tuple(-mid + k for k in (-6.0, -3.0, 0.0, 3.0, 6.0))
    # Every distinct optimum of stage 1 (up to 8): the whole law's landscape has ridges (B
    # against beta, C against gamma), and fewer starts found other optima with numpy's SIMD
    # kernels on and off (curves_long: objective 1.48e-5 against 2.33e-5 at one size).
    starts = np.array(
        [
            [l0, a, alpha, c1 + math.log(2.0), c, beta, gamma]
            for l0, a, alpha, c1 in np.asarray(stage1.candidates)
            for c in c_axis
            for beta in _BETAS
            for gamma in _GAMMAS
        ]
    )
    fun = _objective(t, logy, None, delta)
    raw = ft.minimize_from(fun, starts)
    # The edge check's region: L0 may lie above the final losses (LD is subtracted from it),
    # not above the highest.
    grid = {
        "l0": (*grid1["l0"], math.log(float(loss.max()))),
        "a": grid1["a"],
        "alpha": grid1["alpha"],
        "b": tuple(v + math.log(2.0) for v in grid1["c"]),
        "c": c_axis,
        "beta": _BETAS,
        "gamma": _GAMMAS,
    }

    def log_residuals(x: FloatArray) -> FloatArray:
        return logy - np.log(multipower_loss(t, **_params(x)))

    result = ft.fit_result(
        NAME,
        NAME,
        raw,
        MP_ORDER,
        grid,
        _params,
        int(grid_size(grid1) + starts.shape[0]),
        int(loss.size),
        fun,
        _MP_RAW_OF,
        log_residuals,
    )
    if not np.any(t.drop > 0):
        und = {k: cv.NO_ANNEALING for k in ("B", "C", "beta", "gamma")}
        result = dataclasses.replace(result, undetermined={**result.undetermined, **und})
    return MultiPowerFit(fit=result, s1_range=(float(t.s1.min()), float(t.s1.max())))


def grid_size(grid: Mapping[str, Sequence[float]]) -> int:
    return int(np.prod([len(v) for v in grid.values()]))


def bootstrap_multipower(
    curves: Sequence[cv.Curve],
    fitted: MultiPowerFit,
    *,
    n_resamples: int,
    rng: np.random.Generator,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """Bootstrap over evaluation points, each resample started from the best fit alone (a sum
    over every point's drops makes each refit cost ~50 of the annealing law's): the kept
    parameter samples and how many resamples failed (`fit.kept_resamples`)."""
    t, loss = _points(curves)
    warm = dataclasses.replace(fitted.fit, candidates=fitted.fit.candidates[:1])
    return ft.bootstrap_refits(
        lambda W: _objective(t, np.log(loss), W, delta),
        warm,
        loss.size,
        n_resamples,
        rng,
        to_params=_params,
        law=NAME,
    )
