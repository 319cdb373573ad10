"""Fits: recovery of known parameters, bootstrap coverage, the published compute-optimal formula."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from harness.analysis import optim
from harness.analysis.fit import (
    GridEdgeWarning,
    bootstrap_chinchilla,
    fit_chinchilla,
    fit_kaplan,
    fit_power_law,
)
from harness.analysis.laws import (
    chinchilla_loss,
    compute_optimal,
    kaplan_loss,
    power_law_with_offset,
    tokens_per_param,
)
from harness.errors import InputError

# Hoffmann et al. 2022, the approach-3 fit of their eq. 10.
CHIN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _grid(ns: np.ndarray, ds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    N, D = np.meshgrid(ns, ds)
    return N.ravel(), D.ravel()


def test_chinchilla_noise_free_recovers_published_parameters() -> None:
    N, D = _grid(np.geomspace(7e7, 1.6e10, 6), np.geomspace(5e9, 5e11, 6))
    L = chinchilla_loss(N, D, **CHIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridEdgeWarning)  # the optimum lies inside the grid
        r = fit_chinchilla(N, D, L)
    assert r.converged, r.message
    assert r.n_starts == 4500
    assert not r.on_grid_edge
    for k, v in CHIN.items():
        assert r.params[k] == pytest.approx(v, rel=1e-6), k
    assert r.objective < 1e-20


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    logx = np.log(np.column_stack([rng.uniform(1e6, 1e9, 30), rng.uniform(1e8, 1e11, 30)]))
    logy = np.log(rng.uniform(2.0, 4.0, 30))
    W = rng.integers(0, 3, size=(2, 30)).astype(float)
    fun = optim.lse_huber_objective(logx, logy, W, 1e-3)
    x = np.array([[6.0, 7.0, 0.3, 0.35, 0.5], [2.0, 9.0, 0.1, 0.5, 1.2]])
    rows = np.arange(2)
    _, g = fun(x, rows)
    h = 1e-6
    for i in range(5):
        e = np.zeros(5)
        e[i] = h
        num = (fun(x + e, rows)[0] - fun(x - e, rows)[0]) / (2 * h)
        np.testing.assert_allclose(g[:, i], num, rtol=1e-5, atol=1e-9)


def test_batched_lbfgs_matches_scipy_on_a_subset_of_starts() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    N, D = _grid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5))
    L = chinchilla_loss(N, D, **CHIN) * np.exp(rng.normal(0, 0.02, N.size))
    fun = optim.lse_huber_objective(np.column_stack([np.log(N), np.log(D)]), np.log(L), None, 1e-3)
    starts = np.array(
        [[5.0, 5.0, 0.5, 0.5, 0.5], [10.0, 5.0, 0.5, 0.5, 0.0], [5.0, 10.0, 0.5, 1.0, 0.5]]
    )
    res = optim.batched_lbfgs(fun, starts, gtol=1e-10, ftol=0.0)
    for j, x0 in enumerate(starts):
        sp = minimize(
            lambda p: fun(p[None], np.array([0]))[0][0],
            x0,
            method="L-BFGS-B",
            jac=lambda p: fun(p[None], np.array([0]))[1][0],
            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000},
        )
        assert res.f[j] <= sp.fun * (1 + 1e-6) + 1e-12


@pytest.mark.slow
def test_chinchilla_noisy_bootstrap_covers_truth() -> None:
    # Coverage over 10 independent noise draws (1% multiplicative noise on a 6 x 6 grid): a 95%
    # interval should hold the true value in about 9.5 of 10; each parameter must in at least 8
    # (a calibrated interval fails that with probability 0.012, an interval with 70% coverage
    # passes it with probability 0.38). Seeded: the counts are the same on every run.
    N, D = _grid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 3e11, 6))
    covered = dict.fromkeys(CHIN, 0)
    for seed in range(10):
        L = chinchilla_loss(N, D, **CHIN) * np.exp(
            np.random.default_rng(seed).normal(0, 0.01, N.size)
        )
        r = fit_chinchilla(N, D, L)
        assert r.converged
        boots, n_failed = bootstrap_chinchilla(
            N, D, L, r, n_resamples=300, rng=np.random.default_rng([seed, 1])
        )
        assert n_failed == 0
        for k in CHIN:
            lo, hi = np.percentile([b[k] for b in boots], [2.5, 97.5])
            covered[k] += int(lo <= CHIN[k] <= hi)
            assert hi - lo > 0  # the resamples moved away from the warm start
    assert all(n >= 8 for n in covered.values()), covered


def test_bootstrap_is_seeded() -> None:
    N, D = _grid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4))
    L = chinchilla_loss(N, D, **CHIN) * np.exp(np.random.default_rng(2).normal(0, 0.01, N.size))
    r = fit_chinchilla(N, D, L)
    a = bootstrap_chinchilla(N, D, L, r, n_resamples=20, rng=np.random.default_rng(7))
    b = bootstrap_chinchilla(N, D, L, r, n_resamples=20, rng=np.random.default_rng(7))
    assert a == b


def test_kaplan_noise_free_recovery() -> None:
    N, D = _grid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5))
    true = {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}
    r = fit_kaplan(N, D, kaplan_loss(N, D, **true))
    assert r.converged
    for k, v in true.items():
        assert r.params[k] == pytest.approx(v, rel=1e-5), k


def test_power_law_noise_free_recovery() -> None:
    x = np.geomspace(1e6, 1e10, 8)
    r = fit_power_law(x, power_law_with_offset(x, 2.5, 300.0, 0.3))
    assert r.params == pytest.approx({"E": 2.5, "A": 300.0, "alpha": 0.3}, rel=1e-6)


def test_grid_edge_warning() -> None:
    # E = exp(3.5) lies beyond the Chinchilla grid's e in -1..1.
    N, D = _grid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4))
    L = chinchilla_loss(N, D, 33.0, 406.4, 410.7, 0.34, 0.28)
    with pytest.warns(GridEdgeWarning, match="e=3.49"):
        r = fit_chinchilla(N, D, L)
    assert r.on_grid_edge and r.edge_params == ("e",)


def test_compute_optimal_hand_computed() -> None:
    # Hoffmann et al. 2022 eq. 4 with the published fit: a = 0.28 / 0.62, b = 0.34 / 0.62,
    # G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62) = (138.176 / 114.996) ** 1.6129
    #   = exp(0.183630 / 0.62) = exp(0.296178) = 1.34471.
    co = compute_optimal(406.4, 410.7, 0.34, 0.28)
    assert co.a == pytest.approx(0.4516129032258065, rel=1e-12)
    assert co.b == pytest.approx(0.5483870967741935, rel=1e-12)
    assert co.G == pytest.approx(1.34471, rel=1e-5)
    C = 5.76e23  # Chinchilla's budget
    assert float(co.n_opt(C) * co.d_opt(C)) == pytest.approx(C / 6, rel=1e-12)
    assert float(tokens_per_param(406.4, 410.7, 0.34, 0.28, C)) == pytest.approx(
        float(co.d_opt(C) / co.n_opt(C)), rel=1e-12
    )
    # Besiroglu et al. 2024's refit: a = beta / (alpha + beta) = 0.513.
    assert compute_optimal(482.0, 2085.4, 0.3478, 0.3658).a == pytest.approx(0.513, abs=5e-4)


@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e26])
def test_compute_optimal_minimises_the_loss_at_fixed_compute(C: float) -> None:
    # Independently of eq. 4: minimise L(N, C / 6N) over log N numerically.
    from scipy.optimize import minimize_scalar

    def loss_at(log_n: float) -> float:
        n = np.exp(log_n)
        return float(chinchilla_loss(n, C / (6 * n), **CHIN))

    best = minimize_scalar(
        loss_at, bounds=(0.0, np.log(C)), method="bounded", options={"xatol": 1e-10}
    )
    co = compute_optimal(CHIN["A"], CHIN["B"], CHIN["alpha"], CHIN["beta"])
    assert float(co.n_opt(C)) == pytest.approx(np.exp(best.x), rel=1e-6)


def test_approach1_recovers_the_compute_optimal_exponent_within_the_size_grid() -> None:
    # Approach 1 from final losses takes, per budget, the size with the lowest loss, so N_opt lies
    # on the grid of sizes: on a loss convex in log N (Chinchilla's law along an isoFLOP line) it
    # is a neighbour of the true minimum, at most one grid step h away in log N. A least-squares
    # line through points each off by at most h has its slope off by at most
    # h sum|x - mean x| / sum (x - mean x)^2, x = log C.
    from harness.analysis.isoflop import fit_approach1

    h = np.log(2) / 8
    sizes = np.exp(np.arange(np.log(1e6), np.log(1e11), h))
    budgets = np.geomspace(1e18, 1e22, 5)
    C = np.repeat(budgets, sizes.size)
    N = np.tile(sizes, budgets.size)
    D = C / (6 * N)
    r = fit_approach1(N, D, chinchilla_loss(N, D, **CHIN), C)
    co = compute_optimal(CHIN["A"], CHIN["B"], CHIN["alpha"], CHIN["beta"])
    assert np.all(np.abs(np.log(np.asarray(r.n_opt) / co.n_opt(budgets))) <= h + 1e-12)
    x = np.log(budgets) - np.log(budgets).mean()
    bound = h * np.abs(x).sum() / (x**2).sum()
    assert bound < 0.03  # the check below has teeth
    assert abs(r.a - co.a) <= bound, (r.a, co.a, bound)
    assert abs(r.b - co.b) <= bound, (r.b, co.b, bound)


def test_fit_rejects_bad_input() -> None:
    N = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7])
    with pytest.raises(InputError, match="a single n_tokens value"):
        fit_chinchilla(N, np.full(6, 1e9), np.full(6, 3.0))
    with pytest.raises(InputError, match="fewer than its 5 parameters"):
        fit_chinchilla(N[:4], np.array([1e9, 2e9, 1e9, 2e9]), np.full(4, 3.0))
    with pytest.raises(InputError, match=r"loss: bad value\(s\) -1.0 \(index 2\)"):
        fit_chinchilla(N, np.geomspace(1e9, 1e10, 6), [3.0, 3.0, -1.0, 3.0, 3.0, 3.0])


def test_early_dropping_keeps_the_best_and_drops_only_far_above_it() -> None:
    # Two basins in x0: minima near x0 = -1.04 (f ~ -0.31, the best) and x0 = +0.96
    # (f ~ +0.29), a slowly converging valley in x1 (scale 1e-3) for every start.
    def fun(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, x1 = X[:, 0], X[:, 1]
        f = (x0**2 - 1) ** 2 + 0.3 * x0 + 1e-3 * (x1 - 2.0) ** 2 + 1.0
        g = np.column_stack([4 * x0 * (x0**2 - 1) + 0.3, 2e-3 * (x1 - 2.0)])
        return f, g

    starts = np.column_stack([np.linspace(-2, 2, 41), np.linspace(-50, 50, 41)])
    full = optim.batched_lbfgs(fun, starts, gtol=1e-9, ftol=0.0)
    drop = optim.batched_lbfgs(
        fun, starts, gtol=1e-9, ftol=0.0, drop_after=3, drop_every=2, drop_factor=1.2
    )
    dropped = drop.status == optim.DROPPED
    assert dropped.any() and not dropped.all()
    assert drop.f.min() == pytest.approx(full.f.min(), rel=1e-12)
    assert np.all(drop.f[dropped] > 1.2 * full.f.min())  # dropped rows were far above the best
    assert np.all(drop.n_iter[dropped] >= 3)  # every start ran drop_after iterations first
    assert drop.n_iter.sum() < full.n_iter.sum()
    assert not drop.converged[dropped].any()
    assert optim.MESSAGES[optim.DROPPED].startswith("stopped early")
