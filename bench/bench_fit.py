"""Benchmark: batched approach-3 fit vs a plain scipy loop over the same 4500 starts.

The reference is the Epoch AI replication's procedure written plainly (Besiroglu et al. 2024):
for each start, scipy.optimize.minimize(method="L-BFGS-B") on the summed Huber loss of
log L - logsumexp(a - alpha log N, b - beta log D, e) (scipy.special.logsumexp and
scipy.special.huber), numerical gradients. Both run in this process, on the same ~250 points.

    OMP_NUM_THREADS=1 python bench/bench_fit.py                 # the full loop: minutes
    OMP_NUM_THREADS=1 python bench/bench_fit.py --scipy-every 10  # every 10th start, extrapolated

Prints times (CPU seconds of this process), the speed ratio, both best objectives with the
best-fit check (the batched best must be <= the scipy loop's best + 1e-12 relative), and a
1000-resample bootstrap's time. The batched fit runs --repeats times (default 3) and its median
time is used: one run takes ~1-2 s, short enough for a burst of load on a shared machine to
move it, while the scipy loop runs for minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from harness.analysis.fit import (
    _CHIN_ORDER,
    CHINCHILLA_START_GRID,
    _grid,
    bootstrap_chinchilla,
    fit_chinchilla,
)
from harness.analysis.laws import chinchilla_loss


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n))
    D = np.exp(rng.uniform(np.log(5e9), np.log(5e11), n))
    L = chinchilla_loss(N, D, 1.69, 406.4, 410.7, 0.34, 0.28) * np.exp(rng.normal(0, 0.02, n))
    return N, D, L


def scipy_loop(
    N: np.ndarray, D: np.ndarray, L: np.ndarray, starts: np.ndarray, delta: float = 1e-3
) -> tuple[float, np.ndarray]:
    logN, logD, logL = np.log(N), np.log(D), np.log(L)

    def objective(p: np.ndarray) -> float:
        a, b, alpha, beta, e = p
        pred = logsumexp([a - alpha * logN, b - beta * logD, np.full_like(logN, e)], axis=0)
        return float(np.sum(huber(delta, logL - pred)))

    best_f, best_x = np.inf, starts[0]
    for x0 in starts:
        r = minimize(objective, x0, method="L-BFGS-B")
        if r.fun < best_f:
            best_f, best_x = float(r.fun), r.x
    return best_f, best_x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--scipy-every",
        type=int,
        default=1,
        help="run the scipy loop on every k-th start and extrapolate (default 1: all)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="batched fit runs (median time)")
    args = ap.parse_args()
    N, D, L = data(args.points, args.seed)
    starts = _grid(CHINCHILLA_START_GRID, _CHIN_ORDER)

    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.process_time()
        fit = fit_chinchilla(N, D, L)
        times.append(time.process_time() - t0)
    t_batched = float(np.median(times))
    print(
        f"batched: {t_batched:.2f} s CPU (median of {', '.join(f'{t:.2f}' for t in times)}) "
        f"for {starts.shape[0]} starts on {args.points} points; objective "
        f"{fit.objective:.10g}; converged {fit.converged}; {fit.params}"
    )

    sub = starts[:: args.scipy_every]
    t0 = time.process_time()
    f_sp, x_sp = scipy_loop(N, D, L, sub)
    t_sp = time.process_time() - t0
    t_full = t_sp * starts.shape[0] / sub.shape[0]
    tag = "" if args.scipy_every == 1 else f" (ran {sub.shape[0]} starts, extrapolated)"
    print(f"scipy loop: {t_full:.1f} s CPU{tag}; best objective {f_sp:.10g}")
    print(f"speed ratio scipy / batched: {t_full / t_batched:.0f}x")
    print(f"objective batched - scipy: {fit.objective - f_sp:+.3e} (negative: batched is lower)")
    ok = fit.objective <= f_sp * (1 + 1e-12)
    print(f"best-fit check (batched <= scipy best + 1e-12 relative): {'OK' if ok else 'FAILED'}")

    if args.bootstrap:
        t0 = time.process_time()
        boots, n_failed = bootstrap_chinchilla(
            N, D, L, fit, n_resamples=args.bootstrap, rng=np.random.default_rng(0)
        )
        t_b = time.process_time() - t0
        lo, hi = np.percentile([b["alpha"] for b in boots], [2.5, 97.5])
        print(
            f"bootstrap: {args.bootstrap} resamples in {t_b:.2f} s CPU ({n_failed} not "
            f"converged); alpha 95% [{lo:.4f}, {hi:.4f}]"
        )


if __name__ == "__main__":
    main()
