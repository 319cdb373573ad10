"""Would a grid determine the Chinchilla law? A Monte Carlo check of a design's power.

A grid's final losses carry noise (seed to seed, and the law's own misfit). Whether a fit of
L = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2) determines a parameter depends
on that noise as much as on the grid. This module simulates the answer instead of guessing it:
it draws the grid's losses from an assumed law with multiplicative log-normal noise of a given
size, fits and bootstraps each simulated grid exactly as `harness fit` does, and counts how
often the harness's own rules (`identify`: not on the start grid's edge, not along a flat
direction, a 95% interval within `identify.MAX_DECADES` decades, a bootstrap that fails on at
most `identify.FAILED_SHARE_MAX` of its resamples) call each parameter determined.

Run on a results directory (``python -m harness.analysis.power results/quickstart``), it asks
of the grid as run: had the irreducible loss been E (each of ``--floors``), would this grid have
shown it? The assumed law is the grid's own data refitted with E held there (a point of E's
profile; its residual spread says how well that floor explains the runs), the noise is that
spread and fractions of it (``--factors``; averaging k seeds per point divides seed noise by
sqrt(k)), and the design is the grid's own (N, D) points. Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from harness.analysis.common import ci95
from harness.analysis.fit import GridEdgeWarning, bootstrap_chinchilla, fit_chinchilla
from harness.analysis.identify import FAILED_SHARE_MAX, undetermined_by_interval
from harness.analysis.laws import chinchilla_loss
from harness.errors import InputError

__all__ = ["Power", "chinchilla_power", "profile_fit"]

PARAMS = ("E", "A", "B", "alpha", "beta")
N_RESAMPLES = 200
"""Bootstrap resamples per simulated grid (harness fit uses 1000; 200 resolve a share)."""


@dataclass(frozen=True)
class Power:
    """How often simulated grids determine each parameter of the law."""

    sigma_log: float
    """Standard deviation of the noise on log(loss)."""
    n_datasets: int
    determined_share: dict[str, float]
    """Parameter -> share of simulated grids whose fit determines it."""
    median_estimate: dict[str, float]
    """Parameter -> median of the simulated grids' point estimates."""


def chinchilla_power(
    n_params: ArrayLike,
    n_tokens: ArrayLike,
    truth: Mapping[str, float],
    *,
    sigma_log: float,
    n_datasets: int,
    n_resamples: int,
    rng: np.random.Generator,
) -> Power:
    """Simulate `n_datasets` grids at the design's (N, D) points from the law `truth` (E, A, B,
    alpha, beta) times exp(normal(0, sigma_log)), fit and bootstrap each (`n_resamples`), and
    return the share of grids whose fit determines each parameter (module docstring)."""
    N, D = np.asarray(n_params, dtype=float), np.asarray(n_tokens, dtype=float)
    if N.shape != D.shape or N.ndim != 1:
        raise InputError("chinchilla_power: n_params and n_tokens must be 1-d and of one length")
    if not sigma_log >= 0 or n_datasets < 1 or n_resamples < 1:
        raise InputError(
            f"chinchilla_power: sigma_log = {sigma_log}, n_datasets = {n_datasets}, "
            f"n_resamples = {n_resamples}; accepted: sigma_log >= 0 and counts >= 1"
        )
    t = {k: float(truth[k]) for k in PARAMS}
    mean = chinchilla_loss(N, D, t["E"], t["A"], t["B"], t["alpha"], t["beta"])
    hits = dict.fromkeys(PARAMS, 0)
    estimates: dict[str, list[float]] = {k: [] for k in PARAMS}
    for _ in range(n_datasets):
        L = mean * np.exp(rng.normal(0.0, sigma_log, N.size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GridEdgeWarning)  # counted below, not printed
            fit = fit_chinchilla(N, D, L)
        boots, failed = bootstrap_chinchilla(N, D, L, fit, n_resamples=n_resamples, rng=rng)
        bad = dict(fit.undetermined)
        bad.update(undetermined_by_interval({k: ci95(b[k] for b in boots) for k in PARAMS}))
        law_fails = failed > FAILED_SHARE_MAX * n_resamples
        for k in PARAMS:
            estimates[k].append(fit.params[k])
            hits[k] += int(not law_fails and k not in bad)
    return Power(
        sigma_log=float(sigma_log),
        n_datasets=n_datasets,
        determined_share={k: hits[k] / n_datasets for k in PARAMS},
        median_estimate={k: float(np.median(v)) for k, v in estimates.items()},
    )


def profile_fit(
    n_params: ArrayLike, n_tokens: ArrayLike, loss: ArrayLike, E: float
) -> tuple[dict[str, float], float]:
    """The Chinchilla law with E held at a given floor and A, B, alpha, beta fitted by least
    squares on log(loss) (a point of E's profile), and the residual spread of log(loss) about
    it with 4 parameters taken off: how well a law with that floor explains the grid."""
    N, D, L = (np.asarray(a, dtype=float) for a in (n_params, n_tokens, loss))
    if not 0 <= E < float(np.min(L)):
        raise InputError(
            f"profile_fit: E = {E}; accepted: 0 <= E < the lowest loss {np.min(L):.4g}"
        )

    def resid(x: np.ndarray) -> np.ndarray:
        a, b, alpha, beta = x
        return np.log(E + np.exp(a) * N**-alpha + np.exp(b) * D**-beta) - np.log(L)

    best = None
    for alpha0 in (0.1, 0.3, 0.6):
        for beta0 in (0.1, 0.3, 0.6):
            x0 = [
                np.log(np.median(L)) + alpha0 * np.log(np.median(N)),
                np.log(np.median(L)) + beta0 * np.log(np.median(D)),
                alpha0,
                beta0,
            ]
            r = least_squares(resid, x0, bounds=([-50, -50, 0, 0], [50, 50, 3, 3]))
            if best is None or r.cost < best.cost:
                best = r
    a, b, alpha, beta = best.x
    sigma = float(np.sqrt(2 * best.cost / max(N.size - 4, 1)))
    return {
        "E": float(E),
        "A": float(np.exp(a)),
        "B": float(np.exp(b)),
        "alpha": float(alpha),
        "beta": float(beta),
    }, sigma


def _table(
    runs_path: str, floors: Sequence[float], factors: Sequence[float], n_datasets: int, seed: int
) -> str:
    from harness.analysis.io import load_runs

    df = load_runs(runs_path)
    N, D, L = (df[c].to_numpy(float) for c in ("n_params", "n_tokens", "loss"))
    rng = np.random.default_rng(seed)
    lines = [
        f"{runs_path}: {N.size} runs; {n_datasets} simulated grids per row, "
        f"{N_RESAMPLES} bootstrap resamples each",
        "",
        "| assumed E | law at that E: A, B, alpha, beta | its residual spread sigma | noise "
        "| seeds per point for that noise | "
        + " | ".join(f"{k} determined" for k in PARAMS)
        + " |",
        "|---" * (5 + len(PARAMS)) + "|",
    ]
    for E in floors:
        truth, sigma = profile_fit(N, D, L, E)
        law = ", ".join(f"{truth[k]:.3g}" for k in ("A", "B", "alpha", "beta"))
        for f in factors:
            p = chinchilla_power(
                N,
                D,
                truth,
                sigma_log=sigma * f,
                n_datasets=n_datasets,
                n_resamples=N_RESAMPLES,
                rng=rng,
            )
            shares = " | ".join(f"{p.determined_share[k]:.2f}" for k in PARAMS)
            lines.append(
                f"| {E:g} | {law} | {sigma:.4f} | {f:g} sigma | {1 / f**2:.0f} | {shares} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.analysis.power",
        description="share of simulated grids whose Chinchilla fit determines each parameter",
    )
    ap.add_argument("path", help="results directory or runs.csv")
    ap.add_argument(
        "--floors", default="0.5,1.0", help="irreducible losses E to assume, comma-separated"
    )
    ap.add_argument(
        "--factors", default="1,0.25", help="noise as multiples of the law's residual spread"
    )
    ap.add_argument("--datasets", type=int, default=20, help="simulated grids per row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        floors = [float(x) for x in args.floors.split(",")]
        factors = [float(x) for x in args.factors.split(",")]
        print(_table(args.path, floors, factors, args.datasets, args.seed))
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
