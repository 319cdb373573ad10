"""The data-constrained law (Muennighoff et al. 2023): values by hand and from the authors' own
README, recovery of the published constants, identifiability, fits.json and figures, bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import dataconstrained as dc
from harness.analysis.drawing import plot_path
from harness.analysis.fit import GridEdgeWarning
from harness.analysis.fitting import fit_path, summarize
from harness.analysis.laws import compute_optimal
from harness.errors import InputError

P = dict(dc.MUENNIGHOFF_2023)
BASE = {k: P[k] for k in ("E", "A", "B", "alpha", "beta")}


def _grid(
    ns: np.ndarray, us: np.ndarray, epochs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, U, E = (a.ravel() for a in np.meshgrid(ns, us, epochs, indexing="ij"))
    return N, U * E, U


def _realistic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The paper's range: 10M..3B parameters, 100M..10B unique tokens, 1..32 epochs.
    return _grid(
        np.geomspace(1e7, 3e9, 6),
        np.geomspace(1e8, 1e10, 3),
        np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
    )


# --- the law ----------------------------------------------------------------------------------


def test_effective_data_by_hand() -> None:
    r = P["R_D_star"]
    u = 1e9
    assert dc.effective_data(u, u, r) == u  # one epoch: every token is new, D' = D
    assert dc.effective_data(u, 0.5 * u, r) == 0.5 * u  # part of an epoch: D' = D too
    # R_D = R_D* repetitions: D' = U (1 + R_D* (1 - 1/e)).
    assert dc.effective_data(u, (1 + r) * u, r) == pytest.approx(
        u * (1 + r * (1 - math.exp(-1))), rel=1e-14
    )
    # Two epochs: R_D = 1, D' = U + U R_D* (1 - exp(-1/R_D*)) = 1.9682... U.
    assert dc.effective_data(u, 2 * u, r) == pytest.approx(
        u * (1 + 15.387756 * (1 - math.exp(-1 / 15.387756))), rel=1e-14
    )
    assert dc.effective_data(u, 2 * u, r) / u == pytest.approx(1.96820, abs=1e-5)
    # Infinitely many epochs: D' -> U (1 + R_D*).
    assert dc.effective_data(u, 1e9 * u, r) == pytest.approx(u * (1 + r), rel=1e-12)
    # R_D* -> infinity: repeated tokens are worth as much as new ones.
    assert dc.effective_data(u, 7 * u, 1e12) == pytest.approx(7 * u, rel=1e-10)


def test_n_opt_and_effective_params_by_hand() -> None:
    A, B, alpha, beta = P["A"], P["B"], P["alpha"], P["beta"]
    co = compute_optimal(A, B, alpha, beta)
    C = 6e20
    # N_opt of D_opt(C) unique tokens is N_opt(C) (Chinchilla eq. 4, inverted).
    assert dc.n_opt_for_tokens(co.d_opt(C), A, B, alpha, beta) == pytest.approx(
        co.n_opt(C), rel=1e-12
    )
    # The authors' own numbers (parametric_fit.ipynb): optimal_N(D_to_C(100e6)) = 5098651.77.
    assert dc.n_opt_for_tokens(100e6, A, B, alpha, beta) == pytest.approx(
        5098651.765365828, rel=1e-9
    )
    u = 100e6
    nopt = float(dc.n_opt_for_tokens(u, A, B, alpha, beta))
    rn = P["R_N_star"]
    args = (A, B, alpha, beta, rn)
    assert dc.effective_params(0.5 * nopt, u, u, *args) == 0.5 * nopt  # no excess: N' = N
    # Twice the useful size: R_N = 1, N' = U_N (1 + R_N* (1 - exp(-1 / R_N*))).
    assert dc.effective_params(2 * nopt, u, u, *args) == pytest.approx(
        nopt * (1 + rn * (1 - math.exp(-1 / rn))), rel=1e-12
    )
    assert dc.effective_params(1e12 * nopt, u, u, *args) == pytest.approx(
        nopt * (1 + rn), rel=1e-10
    )


def test_loss_matches_the_authors_readme() -> None:
    # huggingface/datablations README, "Parametric Fit": the models of figure 1 (right).
    assert dc.data_constrained_loss(6.34e9, 242e9, 25e9, **P) == pytest.approx(
        2.2256440889984477, rel=1e-13
    )
    assert dc.data_constrained_loss(8.67e9, 178e9, 25e9, **P) == pytest.approx(
        2.2269634075087867, rel=1e-13
    )
    # One epoch at N <= N_opt(U): exactly Chinchilla's form.
    n, d = 1e7, 4e9
    chin = P["E"] + P["A"] / n ** P["alpha"] + P["B"] / d ** P["beta"]
    assert dc.data_constrained_loss(n, d, d, **P) == pytest.approx(chin, rel=1e-14)


def test_gradient_matches_finite_differences() -> None:
    N, D, U = _realistic()
    rng = np.random.default_rng(0)
    L = dc.data_constrained_loss(N, D, U, **P) * np.exp(rng.normal(0, 0.003, N.size))
    W = rng.integers(0, 3, size=(2, N.size)).astype(float)
    fun = dc._objective(N, D, U, L, W, 1e-2, np.arange(7), np.zeros(7))
    x = np.array(
        [
            [6.0, 7.0, 0.33, 0.37, 0.6, math.log(10), math.log(3)],
            [6.5, 7.5, 0.4, 0.3, 0.5, 2.0, 2.5],
        ]
    )
    rows = np.arange(2)
    _, g = fun(x, rows)
    h = 1e-6
    for i in range(7):
        xp, xm = x.copy(), x.copy()
        xp[:, i] += h
        xm[:, i] -= h
        fd = (fun(xp, rows)[0] - fun(xm, rows)[0]) / (2 * h)
        assert g[:, i] == pytest.approx(fd, rel=1e-5, abs=1e-9), i


# --- fits -------------------------------------------------------------------------------------


def test_noise_free_recovers_the_published_constants() -> None:
    N, D, U = _realistic()
    L = dc.data_constrained_loss(N, D, U, **P)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridEdgeWarning)  # the optimum lies inside the grid
        r = dc.fit_data_constrained(N, D, U, L)
    assert r.converged, r.message
    assert r.law == "data_constrained" and not r.on_grid_edge
    for k, v in P.items():
        assert r.params[k] == pytest.approx(v, rel=1e-6), k
    assert r.objective < 1e-20
    n_rep, n_exc = dc.repeat_counts(N, D, U, r.params)
    assert (n_rep, n_exc) == (90, 72)  # 5 of 6 epochs repeat; 4 of 6 sizes exceed N_opt(U)


def test_paper_two_step_fit_with_the_base_held() -> None:
    # The paper's second step: E, A, B, alpha, beta fixed, R_D* and R_N* fitted.
    N, D, U = _realistic()
    L = dc.data_constrained_loss(N, D, U, **P)
    r = dc.fit_data_constrained(N, D, U, L, fixed=BASE)
    assert r.params["R_D_star"] == pytest.approx(P["R_D_star"], rel=1e-8)
    assert r.params["R_N_star"] == pytest.approx(P["R_N_star"], rel=1e-8)
    assert r.params["A"] == P["A"] and r.params["alpha"] == P["alpha"]  # held
    assert r.n_starts == 16  # the R grid alone


def test_small_noise_recovers_within_the_bootstrap_interval() -> None:
    N, D, U = _realistic()
    rng = np.random.default_rng(42)
    L = dc.data_constrained_loss(N, D, U, **P) * np.exp(rng.normal(0.0, 0.005, N.size))
    r = dc.fit_data_constrained(N, D, U, L)
    assert r.converged, r.message
    assert r.params["R_D_star"] == pytest.approx(P["R_D_star"], rel=0.25)
    assert r.params["R_N_star"] == pytest.approx(P["R_N_star"], rel=0.25)
    assert r.params["alpha"] == pytest.approx(P["alpha"], abs=0.03)
    assert r.params["beta"] == pytest.approx(P["beta"], abs=0.03)
    boots, n_failed = dc.bootstrap_data_constrained(
        N, D, U, L, r, n_resamples=100, rng=np.random.default_rng(0)
    )
    assert n_failed <= 5
    for k in ("R_D_star", "R_N_star", "alpha", "beta"):
        lo, hi = np.percentile([b[k] for b in boots], [2.5, 97.5])
        assert lo <= P[k] <= hi, (k, lo, hi)


@pytest.mark.slow
def test_r_n_star_is_undetermined_without_excess_parameters() -> None:
    # Every size at or below N_opt(U): no run says anything about R_N*.
    N, D, U = _grid(
        np.geomspace(1e6, 5e6, 3), np.array([1e8, 3e8]), np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    )
    L = dc.data_constrained_loss(N, D, U, **P)
    r = dc.fit_data_constrained(N, D, U, L, fixed=BASE)
    n_rep, n_exc = dc.repeat_counts(N, D, U, r.params)
    assert (n_rep, n_exc) == (24, 0)
    assert dc.undetermined(N, D, U, r.params) == ("R_N_star",)
    # Where the N term vanishes (alpha huge), excess parameters cannot inform R_N* either.
    vanished = {**r.params, "alpha": 150.0, "R_N_star": 1.0}
    assert dc.undetermined(N, D, U, vanished) == ("A", "alpha", "R_N_star")
    assert dc.undetermined(*_realistic(), P) == ()
    assert r.params["R_D_star"] == pytest.approx(P["R_D_star"], rel=1e-8)


def test_bad_input() -> None:
    N, D, U = _realistic()
    L = dc.data_constrained_loss(N, D, U, **P)
    with pytest.raises(InputError, match=r"no run repeats data .* R_D\* needs runs of more than"):
        dc.fit_data_constrained(N, U, U, L)
    bad = U.copy()
    bad[3] = -1.0
    with pytest.raises(InputError, match=r"n_unique_tokens: bad value\(s\) -1.0 \(index 3\)"):
        dc.fit_data_constrained(N, D, bad, L)
    with pytest.raises(InputError, match=r"arrays differ in length"):
        dc.fit_data_constrained(N, D, U[:-1], L)
    with pytest.raises(InputError, match=r"fixed parameter 'R_star'; accepted: E, A, B"):
        dc.fit_data_constrained(N, D, U, L, fixed={"R_star": 1.0})
    with pytest.raises(InputError, match=r"fixed R_D_star = 0.0; accepted: a finite number > 0"):
        dc.fit_data_constrained(N, D, U, L, fixed={"R_D_star": 0.0})


# --- runs.csv, fits.json and figures -----------------------------------------------------------


def _runs_csv(path: Path, noise: float = 0.002, **extra: object) -> Path:
    N, D, U = _grid(
        np.array([5e4, 1e5, 2e5]),
        np.array([16384.0, 65536.0]),
        np.array([1.0, 2.0, 4.0, 8.0, 16.0]),
    )
    # A tiny-model law: the published exponents and R*s, with A and B that put N_opt(U) among
    # the sizes (N_opt = 3.2 U), so that both R_D* and R_N* are determined.
    q = {**P, "E": 1.2, "A": 45.0, "B": 30.0}
    L = dc.data_constrained_loss(N, D, U, **q)
    L = L * np.exp(np.random.default_rng(1).normal(0.0, noise, L.size))
    df = pd.DataFrame(
        {
            "n_params": N.astype(int),
            "n_tokens": D.astype(int),
            "loss": L,
            "status": "done",
            "n_unique_tokens": U.astype(int),
            "epochs": D / U,
        }
    )
    for k, v in extra.items():
        df[k] = v
    df.to_csv(path / "runs.csv", index=False)
    return path / "runs.csv"


@pytest.mark.slow
def test_fits_json_holds_the_fit_deterministically_and_figures(tmp_path: Path) -> None:
    csv = _runs_csv(tmp_path)
    fits = ["chinchilla", "data_constrained"]
    out = fit_path(csv, n_bootstrap=50, fits=fits)
    first = out.read_bytes()
    doc = json.loads(first)
    block = doc["fits"]["data_constrained"]
    assert set(block["params"]) == set(dc.PARAMS)
    assert block["n_points"] == 30 and block["n_repeated"] == 24 and block["n_bootstrap"] == 50
    assert block["n_excess_params"] > 0 and block["undetermined"] == {}
    for k in ("R_D_star", "R_N_star"):  # 0.2% noise on 30 runs: the truth inside the interval
        lo, hi = block["ci95"][k]
        assert lo <= P[k] <= hi, (k, lo, hi)
    lo, hi = block["ci95"]["R_D_star"]
    assert lo <= block["params"]["R_D_star"] <= hi
    assert block["source"].startswith("Muennighoff et al. 2023")
    assert "data_constrained" in summarize(doc)
    assert fit_path(csv, n_bootstrap=50, fits=fits).read_bytes() == first  # byte-identical
    figs = {p.name for p in plot_path(csv)}
    assert {"effective_data.png", "effective_data.svg", "loss_vs_epochs.png"} <= figs


@pytest.mark.slow
def test_no_fit_without_repeats_and_epochs_only_csv(tmp_path: Path) -> None:
    csv = _runs_csv(tmp_path)
    df = pd.read_csv(csv)
    one = df[df["epochs"] == 1.0].copy()
    one.to_csv(csv, index=False)  # every run sees its tokens once: Chinchilla's setting
    doc = json.loads(fit_path(csv, n_bootstrap=0).read_text())
    assert "data_constrained" not in doc["fits"]  # fits.json as before for such runs
    assert "loss_vs_epochs.png" not in {p.name for p in plot_path(csv)}
    # A CSV with an epochs column but no n_unique_tokens: U = D / epochs.
    df.drop(columns=["n_unique_tokens"]).to_csv(csv, index=False)
    doc = json.loads(
        fit_path(csv, n_bootstrap=0, fits=["chinchilla", "data_constrained"]).read_text()
    )
    assert doc["fits"]["data_constrained"]["n_repeated"] == 24


def test_bad_unique_token_column(tmp_path: Path) -> None:
    csv = _runs_csv(tmp_path)
    df = pd.read_csv(csv).astype({"n_unique_tokens": object})
    df.loc[2, "n_unique_tokens"] = "lots"
    df.to_csv(csv, index=False)
    # Refused when the CSV is read, whichever fits are asked for (io.SETTING_COLUMNS).
    for fits in (["chinchilla", "data_constrained"], None):
        with pytest.raises(
            InputError,
            match=r"runs\.csv: column 'n_unique_tokens' has bad value\(s\) "
            r"'lots' at line 4; accepted: blank or a finite number > 0",
        ):
            fit_path(csv, n_bootstrap=0, fits=fits)
    # Asked for by name on a CSV that has no unique-token column at all.
    pd.read_csv(csv).drop(columns=["n_unique_tokens", "epochs"]).to_csv(csv, index=False)
    with pytest.raises(
        InputError,
        match=r"data-constrained fit: no n_unique_tokens or epochs "
        r"column",
    ):
        fit_path(csv, n_bootstrap=0, fits=["chinchilla", "data_constrained"])
