"""CSVs from elsewhere (issue 30, item 5): small groups skipped by name, --where before the
value checks, rows of different sources at one (N, D) refused, the N convention recorded, and
warnings that name their fit and say what to do. Through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.laws import chinchilla_loss

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _grid(seed: int = 0, **extra: object) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4)))
    L = chinchilla_loss(N, D, **HOFFMANN) * np.exp(rng.normal(0, 0.005, N.size))
    return pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L, **extra})


@pytest.mark.slow
def test_a_group_too_small_is_skipped_by_name(tmp_path: Path) -> None:
    big = _grid(corpus="c4")
    small = _grid(1, corpus="rpj").iloc[:3]
    pd.concat([big, small]).to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--group-by", "corpus", "--bootstrap", "20")
    assert out.returncode == 0, out.stderr
    assert "group {'corpus': 'rpj'} skipped: chinchilla fit: 3 points" in out.stderr
    doc = json.loads((tmp_path / "fits.json").read_text())
    by = {g["key"]["corpus"]: g for g in doc["groups"]}
    assert "skipped" in by["rpj"] and by["rpj"]["fits"] == {}
    assert "chinchilla" in by["c4"]["fits"]
    assert "  skipped: chinchilla fit: 3 points" in out.stdout
    bad = harness_cli("predict", str(tmp_path), "--group", "rpj", "--n", "1e9", "--d", "1e10")
    assert bad.returncode == 2 and "no chinchilla law" in bad.stderr
    ok = harness_cli("predict", str(tmp_path), "--group", "c4", "--n", "1e9", "--d", "1e10")
    assert ok.returncode == 0, ok.stderr
    # and a grouped fit of them reproduces
    rep = harness_cli("reproduce", str(tmp_path), "--no-replot")
    assert rep.returncode == 0, rep.stdout[-2000:]


@pytest.mark.slow
def test_where_selects_rows_before_their_values_are_checked(tmp_path: Path) -> None:
    df = _grid()
    df["n_tokens"] = df["n_tokens"].astype(object)
    df.loc[3, "n_tokens"] = ""  # a foreign CSV's incomplete row
    df.to_csv(tmp_path / "runs.csv", index=False)
    refused = harness_cli("fit", str(tmp_path), "--bootstrap", "0")
    assert refused.returncode == 2 and "column 'n_tokens' has NaN/inf" in refused.stderr
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0", "--where", "n_tokens > 0")
    assert out.returncode == 0, out.stderr
    assert "15 runs used" in out.stdout and "1 not selected" in out.stdout
    plot = harness_cli("plot", str(tmp_path))  # the stored --where selects the plot's rows too
    assert plot.returncode == 0, plot.stderr


@pytest.mark.slow
def test_rows_of_different_sources_at_one_point_are_refused(tmp_path: Path) -> None:
    a, b = _grid(0, corpus="c4"), _grid(1, corpus="rw")
    pd.concat([a, b]).to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "differ in column 'corpus' ('c4', 'rw'" in line and "--group-by corpus" in line
    assert (
        harness_cli("fit", str(tmp_path), "--bootstrap", "0", "--group-by", "corpus").returncode
        == 0
    )
    # repeats that differ only in a seed (a number) are repeats
    pd.concat([_grid(0, run_seed=0), _grid(1, run_seed=1)]).to_csv(
        tmp_path / "runs.csv", index=False
    )
    assert harness_cli("fit", str(tmp_path), "--bootstrap", "0").returncode == 0


@pytest.mark.slow
def test_the_n_convention_is_a_stated_setting(tmp_path: Path) -> None:
    df = _grid()
    df["n_params_total"] = df["n_params"] + 5e7  # embeddings of a 50k vocabulary, width 1k
    df.to_csv(tmp_path / "runs.csv", index=False)
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0", "--n-convention", "total")
    assert out.returncode == 0, out.stderr
    assert "N counts all parameters" in out.stdout
    doc = json.loads((tmp_path / "fits.json").read_text())
    assert doc["settings"]["n_convention"] == "total"
    lo, hi = doc["fits"]["chinchilla"]["fitted_range"]["n_params"]
    assert lo == df["n_params_total"].min() and hi == df["n_params_total"].max()
    assert harness_cli("reproduce", str(tmp_path), "--no-replot").returncode == 0
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0")
    assert "N counts non-embedding parameters" in out.stdout
    doc = json.loads((tmp_path / "fits.json").read_text())
    assert doc["fits"]["chinchilla"]["fitted_range"]["n_params"][0] == df["n_params"].min()


@pytest.mark.slow
def test_warnings_name_their_sub_fit_and_what_to_do(tmp_path: Path) -> None:
    # The quickstart's runs: E runs off the start grid in the law and in the held-out sub-fit.
    runs = Path(__file__).resolve().parents[2] / "results" / "quickstart" / "runs.csv"
    (tmp_path / "runs.csv").write_bytes(runs.read_bytes())
    out = harness_cli("fit", str(tmp_path), "--bootstrap", "0", "--fits", "chinchilla,heldout")
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stderr.splitlines() if "heldout" in x]
    assert lines and lines[0].startswith(
        "warning: heldout (chinchilla on the 11 cheapest runs) fit: best fit on the edge"
    )
    assert all("widen start_grid" not in x for x in out.stderr.splitlines())
    assert "runs over a wider range of N and D would" in lines[0]
