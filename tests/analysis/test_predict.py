"""harness predict and the stored bootstrap samples (harness.analysis.predict, .samples):
intervals that cover the truth at about their nominal rate on data from a known law, the
compute-optimal allocation of Hoffmann et al.'s published fit, and bad input in one line."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis import fit as fitmod
from harness.analysis.fitting import fit_path
from harness.analysis.laws import chinchilla_loss, compute_optimal
from harness.analysis.predict import FittedLaw, load_law, parse_values, predict, predict_optimal
from harness.analysis.reproduce import check_samples, reproduce_path
from harness.analysis.samples import read_samples, samples_path, write_samples
from harness.errors import InputError

# Hoffmann et al. 2022, the approach-3 fit of their eq. 10.
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _runs(d: Path, seed: int = 0, sigma: float = 0.01) -> Path:
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 4)))
    L = chinchilla_loss(N, D, **HOFFMANN) * np.exp(rng.normal(0, sigma, N.size))
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"run_id": [f"r{i:02d}" for i in range(N.size)], "n_params": N, "n_tokens": D, "loss": L}
    ).to_csv(d / "runs.csv", index=False)
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = _runs(tmp_path_factory.mktemp("exp"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_path(d, n_bootstrap=200, fits=["chinchilla", "compute_optimal", "power_law_d"])
    return d


# --- the stored samples ----------------------------------------------------------------------


def test_samples_file_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    arrays = {"chinchilla/E": np.array([1.0, 2.5, math.nan]), "kaplan/N_c": np.arange(3.0)}
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    write_samples(a, arrays)
    write_samples(b, dict(reversed(list(arrays.items()))))
    assert a.read_bytes() == b.read_bytes()  # no clock, no key order in the bytes
    back = read_samples(a)
    assert set(back) == set(arrays)
    np.testing.assert_array_equal(back["chinchilla/E"], arrays["chinchilla/E"])
    assert samples_path(tmp_path / "fits.json").name == "fits.bootstrap.npz"
    assert samples_path(tmp_path / "other.json").name == "other.bootstrap.npz"


def test_fit_writes_the_samples_its_intervals_come_from(fitted: Path) -> None:
    doc = json.loads((fitted / "fits.json").read_text())
    arrays = read_samples(fitted / "fits.bootstrap.npz")
    assert sorted(arrays) == sorted(
        [f"chinchilla/{p}" for p in HOFFMANN] + [f"power_law_d/{p}" for p in ("E", "A", "alpha")]
    )
    # Only the resamples whose fit converged to a non-degenerate law are kept: as many as
    # n_bootstrap less the failed count, every parameter finite and every exponent positive.
    for law, block in doc["fits"].items():
        if law not in ("chinchilla", "power_law_d"):
            continue
        kept = 200 - block["n_bootstrap_failed"]
        assert 0 < kept <= 200
        assert all(arrays[f"{law}/{p}"].size == kept for p in block["params"])
        assert all(np.all(np.isfinite(arrays[f"{law}/{p}"])) for p in block["params"])
    assert np.all(arrays["chinchilla/alpha"] > 0) and np.all(arrays["chinchilla/beta"] > 0)
    assert check_samples(fitted / "fits.json", doc) == ([], "")
    lo, hi = np.percentile(arrays["chinchilla/alpha"], [2.5, 97.5])
    assert doc["fits"]["chinchilla"]["ci95"]["alpha"] == [
        pytest.approx(lo, rel=1e-9),
        pytest.approx(hi, rel=1e-9),
    ]


@pytest.mark.slow
def test_reproduce_fails_on_tampered_samples_and_notes_missing_ones(
    fitted: Path, tmp_path: Path
) -> None:
    d = tmp_path / "copy"
    d.mkdir()
    for f in ("runs.csv", "fits.json", "fits.bootstrap.npz"):
        (d / f).write_bytes((fitted / f).read_bytes())
    ok, _ = reproduce_path(d, replot=False)
    assert ok
    arrays = read_samples(d / "fits.bootstrap.npz")
    arrays["chinchilla/beta"] = np.sort(arrays["chinchilla/beta"])[::-1] * 1.5
    write_samples(d / "fits.bootstrap.npz", arrays)
    ok, report = reproduce_path(d, replot=False)
    assert not ok and "chinchilla/beta: interval" in report
    (d / "fits.bootstrap.npz").unlink()
    ok, report = reproduce_path(d, replot=False)
    assert ok and "no fits.bootstrap.npz beside fits.json" in report


# --- predictions ------------------------------------------------------------------------------


def test_a_prediction_is_the_law_at_its_point_estimate(fitted: Path) -> None:
    law = load_law(fitted, "chinchilla")
    (row,) = predict(law, [3e7], [2e9])
    p = law.params
    assert row["loss"] == pytest.approx(
        float(chinchilla_loss(3e7, 2e9, p["E"], p["A"], p["B"], p["alpha"], p["beta"])), rel=1e-12
    )
    assert row["flops"] == pytest.approx(6 * 3e7 * 2e9)
    lo, hi = row["loss_ci95"]
    assert lo < row["loss"] < hi
    # a grid: every combination of the values given
    assert [(r["n"], r["d"]) for r in predict(law, [1e7, 1e8], [1e9, 1e10])] == [
        (1e7, 1e9),
        (1e7, 1e10),
        (1e8, 1e9),
        (1e8, 1e10),
    ]


@pytest.mark.slow
def test_intervals_cover_the_truth_at_about_their_nominal_rate() -> None:
    # 20 data sets of 25 runs from Hoffmann et al.'s law with 2% multiplicative noise, 200
    # resamples each, 4 predictions inside the grid: 80 intervals. Measured with 100 data sets
    # (400 intervals): coverage 0.975. Percentile intervals from 25 points run a little wide.
    Ns, Ds = np.geomspace(1e7, 1e9, 5), np.geomspace(2e8, 2e10, 5)
    N, D = (a.ravel() for a in np.meshgrid(Ns, Ds))
    hits, widths = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(20):
            rng = np.random.default_rng(100 + k)
            L = chinchilla_loss(N, D, **HOFFMANN) * np.exp(rng.normal(0, 0.02, N.size))
            r = fitmod.fit_chinchilla(N, D, L)
            boots, _ = fitmod.bootstrap_chinchilla(
                N, D, L, r, n_resamples=200, rng=np.random.default_rng(k)
            )
            samples = {p: np.array([b[p] for b in boots]) for p in r.params}
            law = FittedLaw("chinchilla", dict(r.params), samples, "", "memory")
            for row in predict(law, [3e7, 3e8], [6e8, 6e9]):
                truth = float(chinchilla_loss(row["n"], row["d"], **HOFFMANN))
                lo, hi = row["loss_ci95"]
                hits.append(lo <= truth <= hi)
                widths.append((hi - lo) / truth)
    coverage = float(np.mean(hits))
    assert 0.85 <= coverage <= 1.0, coverage
    # and they say something: an interval as wide as the prior range would cover too
    assert float(np.median(widths)) < 0.05


def test_compute_optimal_allocation_of_the_published_fit(tmp_path: Path) -> None:
    # Hoffmann et al.'s table 2 gives a = 0.46, b = 0.54 for approach 3: a = beta / (alpha +
    # beta) = 0.28 / 0.62 = 0.4516, and tokens per parameter grow as C^(b - a) = C^0.0968.
    samples = {p: np.full(3, v) for p, v in HOFFMANN.items()}
    law = FittedLaw("chinchilla", dict(HOFFMANN), samples, "", "published")
    small, big = predict_optimal(law, [1e18, 1e24])
    assert math.log10(big["n_opt"] / small["n_opt"]) / 6 == pytest.approx(0.28 / 0.62, rel=1e-9)
    assert round(math.log10(big["n_opt"] / small["n_opt"]) / 6, 2) == 0.45
    ratio = big["tokens_per_param"] / small["tokens_per_param"]
    assert math.log10(ratio) / 6 == pytest.approx((0.34 - 0.28) / 0.62, rel=1e-9)
    co = compute_optimal(HOFFMANN["A"], HOFFMANN["B"], HOFFMANN["alpha"], HOFFMANN["beta"])
    assert big["n_opt"] == pytest.approx(float(co.n_opt(1e24)), rel=1e-12)
    assert big["n_opt"] * big["d_opt"] * 6 == pytest.approx(1e24, rel=1e-9)
    # identical samples: a zero-width interval at the point
    assert big["n_opt_ci95"] == [pytest.approx(big["n_opt"])] * 2


def test_parse_values_lists_and_log_ranges() -> None:
    assert parse_values("1e9,2e9", "--n") == [1e9, 2e9]
    assert parse_values("1e8:1e10:3", "--n") == pytest.approx([1e8, 1e9, 1e10])
    for bad in ("", "1e9,x", "0", "-1", "1e8:1e10:1", "1e8:1e10", "inf"):
        with pytest.raises(InputError, match="accepted for --n"):
            parse_values(bad, "--n")


@pytest.mark.slow
def test_predict_cli_json_and_table(fitted: Path) -> None:
    proc = harness_cli("predict", str(fitted), "--flops", "1e19,1e21", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["flops"] for r in rows] == [1e19, 1e21]
    for r in rows:
        assert {"n", "d", "flops", "loss", "loss_ci95", "n_opt", "n_opt_ci95", "d_opt"} <= set(r)
        assert (
            r["tokens_per_param_ci95"][0] <= r["tokens_per_param"] <= r["tokens_per_param_ci95"][1]
        )
    proc = harness_cli("predict", str(fitted), "--n", "1e9", "--d", "2e10")
    assert proc.returncode == 0, proc.stderr
    assert "chinchilla from" in proc.stdout and "1e+09" in proc.stdout
    proc = harness_cli("predict", str(fitted), "--law", "power_law_d", "--d", "1e11", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["d"] == 1e11


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "1e9"], "give --d"),
        (["--n", "abc", "--d", "1e9"], "--n 'abc'; accepted"),
        (["--law", "nope", "--n", "1e9", "--d", "1e9"], "--law 'nope'; accepted: chinchilla"),
        (["--law", "kaplan", "--n", "1e9", "--d", "1e9"], "no kaplan law (not fitted)"),
        (["--flops", "1e20", "--n", "1e9"], "leave out --n and --d"),
        ([], "give --n and --d, or --flops"),
    ],
)
def test_predict_bad_input_is_one_line_exit_2(fitted: Path, args: list[str], message: str) -> None:
    proc = harness_cli("predict", str(fitted), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_predict_without_samples_says_how_to_get_them(fitted: Path, tmp_path: Path) -> None:
    (tmp_path / "fits.json").write_bytes((fitted / "fits.json").read_bytes())
    proc = harness_cli("predict", str(tmp_path), "--n", "1e9", "--d", "1e9")
    assert proc.returncode == 2 and "no bootstrap samples beside fits.json" in proc.stderr
