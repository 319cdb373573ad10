"""Stored files are data from elsewhere (issue 31, items 3-6): a hand-edited fits.json is refused
in one line (exit 2) by predict, reproduce, plot and report before any use; results follow the
user's umask; nothing is written through a symlinked figures folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.fitting import fit_path
from harness.analysis.laws import chinchilla_loss
from harness.atomic import atomic_write_text

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 4)))
    L = chinchilla_loss(N, D, **HOFFMANN) * np.exp(rng.normal(0, 0.01, N.size))
    pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L}).to_csv(d / "runs.csv", index=False)
    fit_path(d, n_bootstrap=50, fits=["chinchilla", "compute_optimal"])
    return d


def _edited(fitted: Path, tmp_path: Path, edit: object) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(fitted, d)
    doc = json.loads((d / "fits.json").read_text())
    if callable(edit):
        edit(doc)
        (d / "fits.json").write_text(json.dumps(doc))
    else:
        (d / "fits.json").write_text(str(edit))
    return d


def _set(path: str, value: object):  # noqa: ANN202 - a small edit closure
    def edit(doc: dict) -> None:
        *keys, last = path.split(".")
        node = doc
        for k in keys:
            node = node[k]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return edit


EDITS = {
    "nan_alpha": (_set("fits.chinchilla.params.alpha", float("nan")), "alpha = nan"),
    "schema_99": (_set("schema", 99), "schema 99; accepted: schema 1"),
    "param_string": (_set("fits.chinchilla.params.beta", "0.3"), "params = "),
    "param_removed": (_set("fits.chinchilla.params.E", KeyError), "E = None"),
    "undetermined_list": (_set("fits.chinchilla.undetermined", [1, 2]), "undetermined = "),
    "bootstrap_huge": (_set("settings.n_bootstrap", 10**12), "n_bootstrap = "),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_hand_edited_fits_json_is_refused_by_predict(
    fitted: Path, tmp_path: Path, name: str
) -> None:
    edit, message = EDITS[name]
    d = _edited(fitted, tmp_path, edit)
    out = harness_cli("predict", str(d), "--n", "1e9", "--d", "2e10")
    if name == "bootstrap_huge":  # a setting only reproduce reads
        out = harness_cli("reproduce", str(d), "--no-replot")
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert message in line and "fits.json" in line, line


@pytest.mark.slow
def test_a_point_outside_its_own_interval_is_flagged(fitted: Path, tmp_path: Path) -> None:
    d = _edited(
        fitted,
        tmp_path,
        lambda doc: doc["fits"]["chinchilla"]["params"].update(alpha=1e308, A=1e308),
    )
    out = harness_cli("predict", str(d), "--n", "1e7", "--d", "1e9", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    lo, hi = row["loss_ci95"]
    assert not lo <= row["loss"] <= hi
    assert row["undetermined"] is True and "outside the interval" in row["undetermined_reason"]


@pytest.mark.slow
def test_deep_nesting_is_refused_everywhere(fitted: Path, tmp_path: Path) -> None:
    d = _edited(fitted, tmp_path, '{"schema": 1, "fits": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for cmd in (
        ["predict", str(d), "--n", "1e9", "--d", "2e10"],
        ["reproduce", str(d), "--no-replot"],
        ["report", str(d)],
        ["plot", str(d)],
    ):
        out = harness_cli(*cmd)
        assert out.returncode == 2, (cmd, out.stderr[-500:])
        (line,) = out.stderr.strip().splitlines()
        assert "nested" in line, line


@pytest.mark.slow
def test_a_list_where_an_object_belongs_is_refused_by_report(fitted: Path, tmp_path: Path) -> None:
    d = _edited(fitted, tmp_path, _set("fits.chinchilla.undetermined", [3]))
    out = harness_cli("report", str(d))
    assert out.returncode == 2 and "undetermined" in out.stderr, out.stderr
    # a list of names (the older data-constrained form) is read as such
    d = _edited(fitted, tmp_path / "b", _set("fits.chinchilla.undetermined", ["E"]))
    out = harness_cli("report", str(d))
    assert out.returncode == 0, out.stderr


def test_result_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        p = atomic_write_text(tmp_path / "b.json", "{}")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.slow
def test_no_figure_is_written_through_a_symlinked_folder(fitted: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(fitted, d, ignore=shutil.ignore_patterns("figures"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (d / "figures").symlink_to(elsewhere)
    out = harness_cli("plot", str(d))
    assert out.returncode == 2 and "a symbolic link" in out.stderr, out.stderr
    assert not any(elsewhere.iterdir())


@pytest.mark.slow
def test_a_fits_json_from_before_the_new_fields_still_reproduces(
    fitted: Path, tmp_path: Path
) -> None:
    def older(doc: dict) -> None:
        del doc["settings"]["n_convention"]
        for block in doc["fits"].values():
            for k in ("residual_sd_log", "dof", "fitted_range", "extrapolation_decades"):
                block.pop(k, None)

    d = _edited(fitted, tmp_path, older)
    out = harness_cli("reproduce", str(d), "--no-replot")
    assert out.returncode == 0, out.stdout[-2000:]
    assert "added since this fits.json was written" in out.stdout
    # but an edited value still fails
    d2 = _edited(fitted, tmp_path / "x", _set("fits.chinchilla.params.beta", 0.5))
    assert harness_cli("reproduce", str(d2), "--no-replot").returncode == 1


@pytest.mark.slow
def test_an_overflowing_run_and_a_missing_path_are_named(tmp_path: Path) -> None:
    d = tmp_path / "big"
    d.mkdir()
    df = pd.DataFrame(
        {"n_params": [1e6, 1e7, 1e308], "n_tokens": [1e8] * 3, "loss": [3.0, 2.8, 2.0]}
    )
    df.to_csv(d / "runs.csv", index=False)
    out = harness_cli("fit", str(d), "--bootstrap", "0")
    assert out.returncode == 2 and "6ND is not a finite number) at line 4" in out.stderr
    out = harness_cli("predict", str(tmp_path / "nope"), "--n", "1e9", "--d", "1e10")
    (line,) = out.stderr.strip().splitlines()
    assert out.returncode == 2 and f"{tmp_path / 'nope'}: no such file or directory" in line


@pytest.mark.slow
def test_the_report_describes_the_runs_fitted_and_an_undetermined_law(tmp_path: Path) -> None:
    # Gadre et al.'s 5-run fit: --where selects 5 of 34 runs; its Chinchilla law is undetermined.
    root = Path(__file__).resolve().parents[2] / "results" / "gadre2024"
    for f in ("runs.csv", "fits.json", "fits.bootstrap.npz"):
        (tmp_path / f).write_bytes((root / f).read_bytes())
    out = tmp_path / "page.html"
    for _ in range(2):  # an existing --out is overwritten, not refused
        run = harness_cli("report", str(tmp_path), "--out", str(out))
        assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "5 runs (5 done)" in text and "paper_fit_set == 1" in text
    assert "not determined by these data</b>: no interval" in text
