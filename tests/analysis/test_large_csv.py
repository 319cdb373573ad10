"""A CSV larger than the fit's row cap (issue 31, item 1): the laws are fitted on a stratified
subsample that the summary, fits.json and the figures state, that recovers the law, and that
reproduce draws again. The speed bound itself (100,000 rows in under a minute) is measured by
bench/bench_fit_rows.py, not timed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.laws import chinchilla_loss
from harness.analysis.subsample import FIT_ROWS_MAX, stratified_subsample

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _runs(n: int, seed: int = 0, sd: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n)).round()
    D = np.exp(rng.uniform(np.log(5e9), np.log(5e11), n)).round()
    L = chinchilla_loss(N, D, **HOFFMANN) * np.exp(rng.normal(0, sd, n))
    return pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L})


def test_the_subsample_spans_compute_and_is_drawn_again_alike() -> None:
    df = _runs(5000)
    C = 6 * df["n_params"] * df["n_tokens"]
    sub, record = stratified_subsample(df, 100, seed=0, label="")
    assert len(sub) == 100 and sub.index.is_unique
    assert record == {"rows": 5000, "fitted": 100, "method": record["method"]}
    c = 6 * sub["n_params"] * sub["n_tokens"]
    # one run per stratum of 50: the smallest C lies in the first stratum, the largest in the last
    assert c.min() <= np.sort(C)[49] and c.max() >= np.sort(C)[-50]
    hist = np.histogram(np.log(c), bins=np.quantile(np.log(C), np.linspace(0, 1, 11)))[0]
    assert hist.tolist() == [10] * 10  # proportional to where the runs lie
    again, _ = stratified_subsample(df, 100, seed=0, label="")
    pd.testing.assert_frame_equal(sub, again)
    other, _ = stratified_subsample(df, 100, seed=0, label="group a")
    assert not other.equals(sub)
    whole, none = stratified_subsample(df.iloc[:100], 100, seed=0)
    assert none == {} and whole is not None and len(whole) == 100


@pytest.mark.slow
def test_a_large_csv_is_fitted_on_a_stated_subsample_that_recovers_the_law(
    tmp_path: Path,
) -> None:
    _runs(3000).to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--max-rows", "300", "--bootstrap", "40")
    assert out.returncode == 0, out.stderr
    assert "3000 runs used" in out.stdout
    assert "SUBSAMPLE: the laws are fitted on 300 of 3000 runs" in out.stdout
    doc = json.loads((tmp_path / "fits.json").read_text())
    assert doc["subsample"]["rows"] == 3000 and doc["subsample"]["fitted"] == 300
    assert doc["settings"]["max_rows"] == 300
    assert doc["fits"]["heldout"]["n_train"] + doc["fits"]["heldout"]["n_test"] == 300
    p = doc["fits"]["chinchilla"]["params"]
    assert abs(p["alpha"] - HOFFMANN["alpha"]) < 0.03
    assert abs(p["beta"] - HOFFMANN["beta"]) < 0.03
    assert abs(p["E"] - HOFFMANN["E"]) < 0.05
    plot = harness_cli("plot", str(tmp_path))
    assert plot.returncode == 0, plot.stderr
    page = harness_cli("report", str(tmp_path))
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "report.html").read_text()
    assert "The laws are fitted on 300 of 3000 runs" in html
    assert "500 of the 3000 runs, evenly spaced" in html  # the grid's table, capped
    rep = harness_cli("reproduce", str(tmp_path), "--no-replot")
    assert rep.returncode == 0, rep.stdout[-2000:]


@pytest.mark.slow
def test_a_ladder_below_the_cap_records_no_subsample(tmp_path: Path) -> None:
    _runs(40).to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0")
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "fits.json").read_text())
    assert "subsample" not in doc and "max_rows" not in doc["settings"]
    assert "SUBSAMPLE" not in out.stdout
    assert FIT_ROWS_MAX >= 100  # a real ladder of a few hundred runs is fitted whole


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_bad_row_cap_is_refused(tmp_path: Path, value: str) -> None:
    _runs(40).to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--max-rows", value, "--bootstrap", "0")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("accepted: an integer >= 1")
    assert not (tmp_path / "fits.json").exists()


@pytest.mark.slow
def test_a_hand_edited_row_cap_is_refused_by_plot_and_reproduce(tmp_path: Path) -> None:
    _runs(40).to_csv(tmp_path / "runs.csv", index=False)
    assert harness_cli("fit", str(tmp_path), "--bootstrap", "0").returncode == 0
    fj = tmp_path / "fits.json"
    doc = json.loads(fj.read_text())
    doc["settings"]["max_rows"] = "many"
    fj.write_text(json.dumps(doc))
    for cmd in ("plot", "reproduce"):
        out = harness_cli(cmd, str(tmp_path))
        assert out.returncode == 2, (cmd, out.stderr)
        assert "settings.max_rows = 'many'; accepted: an integer >= 1" in out.stderr


@pytest.mark.slow
def test_a_hand_edited_subsample_record_is_refused_by_report(tmp_path: Path) -> None:
    _runs(400).to_csv(tmp_path / "runs.csv", index=False)
    fit = harness_cli("fit", str(tmp_path), "--max-rows", "100", "--bootstrap", "0")
    assert fit.returncode == 0, fit.stderr
    fj = tmp_path / "fits.json"
    doc = json.loads(fj.read_text())
    doc["subsample"] = {"rows": 400}
    fj.write_text(json.dumps(doc))
    out = harness_cli("report", str(tmp_path))
    assert out.returncode == 2, out.stderr
    assert "subsample = \"{'rows': 400}\"; accepted: an object of rows and fitted" in out.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_a_fits_json_from_before_the_cap_refits_every_row(tmp_path: Path) -> None:
    # Written before --max-rows existed: 600 rows fitted whole, no max_rows in its settings.
    # reproduce must refit every row (not a subsample of 500) and agree.
    _runs(600).to_csv(tmp_path / "runs.csv", index=False)
    fit = harness_cli("fit", str(tmp_path), "--max-rows", "600", "--bootstrap", "20",
                      "--fits", "chinchilla")  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    fj = tmp_path / "fits.json"
    doc = json.loads(fj.read_text())
    assert "subsample" not in doc and doc["settings"].pop("max_rows") == 600
    fj.write_text(json.dumps(doc))
    rep = harness_cli("reproduce", str(tmp_path), "--no-replot")
    assert rep.returncode == 0, rep.stdout[-2000:]


@pytest.mark.slow
def test_a_bad_row_cap_is_refused_before_a_grouped_fit(tmp_path: Path) -> None:
    df = _runs(40)
    df["corpus"] = ["a", "b"] * 20
    df.to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--group-by", "corpus", "--max-rows", "0")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --max-rows 0; accepted: an integer >= 1"
