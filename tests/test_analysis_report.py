"""fit_path / plot_path / reproduce_path and the CLI subcommands, on generated CSVs."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.cli import register
from harness.analysis.laws import chinchilla_loss
from harness.analysis.report import fit_path, plot_path, reproduce_path, summarize
from harness.errors import InputError

FAST = ["chinchilla", "compute_optimal", "power_law_n"]


def _runs(dirpath: Path, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 4)))
    L = chinchilla_loss(N, D, 1.69, 406.4, 410.7, 0.34, 0.28) * np.exp(rng.normal(0, 0.01, N.size))
    status = ["done"] * N.size
    status[2] = "failed"
    L[2] = np.nan
    dirpath.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L, "status": status}).to_csv(
        dirpath / "runs.csv", index=False)
    return dirpath


def test_fit_path_is_byte_identical_and_relocatable(tmp_path: Path) -> None:
    a = _runs(tmp_path / "a")
    out_a = fit_path(a, n_bootstrap=30, fits=FAST, seed=3)
    first = out_a.read_bytes()
    assert fit_path(a, n_bootstrap=30, fits=FAST, seed=3).read_bytes() == first
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    (b / "fits.json").unlink()
    assert fit_path(b / "runs.csv", n_bootstrap=30, fits=FAST, seed=3).read_bytes() == first
    doc = json.loads(first)
    assert doc["schema"] == 1
    assert doc["input"]["path"] == "runs.csv"
    assert doc["input"]["n_points"] == 19 and doc["input"]["n_excluded"] == 1
    ch = doc["fits"]["chinchilla"]
    assert ch["n_starts"] == 4500 and ch["converged"] is True
    assert set(ch["ci95"]) == {"E", "A", "B", "alpha", "beta"}
    for k, (lo, hi) in ch["ci95"].items():
        assert lo <= hi, k
    co = doc["fits"]["compute_optimal"]
    p = ch["params"]
    assert co["a"] == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]), rel=1e-9)
    assert "power_law_n" in doc["fits"] and "kaplan" not in doc["fits"]
    assert fit_path(a, n_bootstrap=30, fits=FAST, seed=4).read_bytes() != first
    text = summarize(doc)
    assert "19 runs used, 1 excluded" in text and "chinchilla" in text


def test_cli_fit_plot_reproduce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _runs(tmp_path / "exp")
    parser = argparse.ArgumentParser(prog="harness")
    register(parser.add_subparsers(required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    assert run("fit", str(d), "--bootstrap", "20", "--fits", ",".join(FAST)) == 0
    assert "wrote" in capsys.readouterr().out
    assert run("plot", str(d)) == 0
    figs = sorted(p.name for p in (d / "figures").iterdir())
    assert {"loss_vs_n.png", "loss_vs_n.svg", "loss_vs_d.svg", "residuals.png"} <= set(figs)
    svg = (d / "figures" / "loss_vs_n.svg").read_bytes()
    png = (d / "figures" / "loss_vs_n.png").read_bytes()
    assert run("plot", str(d)) == 0
    assert (d / "figures" / "loss_vs_n.svg").read_bytes() == svg
    assert (d / "figures" / "loss_vs_n.png").read_bytes() == png
    assert b"<dc:date>" not in svg

    stored = (d / "fits.json").read_bytes()
    assert run("reproduce", str(d)) == 0
    out = capsys.readouterr().out
    assert "reproduce: OK" in out and "0 differ" in out and "byte-identical" in out
    assert (d / "fits.json").read_bytes() == stored  # never overwritten

    doc = json.loads(stored)
    doc["fits"]["chinchilla"]["params"]["alpha"] *= 1.01
    (d / "fits.json").write_text(json.dumps(doc))
    assert run("reproduce", str(d), "--no-replot") == 1
    out = capsys.readouterr().out
    assert "fits.chinchilla.params.alpha" in out and "DIFFERENT" in out

    (d / "runs.csv").write_text("n_params,n_tokens\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        run("fit", str(d))


def test_single_d_is_bad_input_for_the_joint_fit(tmp_path: Path) -> None:
    pd.DataFrame({"n_params": [1e6, 2e6, 4e6, 8e6, 1.6e7], "n_tokens": [1e9] * 5,
                  "loss": [4.0, 3.8, 3.6, 3.5, 3.4]}).to_csv(tmp_path / "runs.csv", index=False)
    with pytest.raises(InputError, match="a single n_tokens value"):
        fit_path(tmp_path, n_bootstrap=0)
    # Without the joint fit, the one-variable law in N works on the same file.
    out = fit_path(tmp_path, n_bootstrap=0, fits=["power_law_n"])
    assert json.loads(out.read_text())["fits"]["power_law_n"]["data"] == "n_tokens=1e+09"


def test_group_by_and_isoflop(tmp_path: Path) -> None:
    rows = []
    for cfg, (E, a_true) in {"x": (1.8, 0.34), "y": (2.0, 0.30)}.items():
        for C in (1e17, 1e18, 1e19):
            for N in np.geomspace(1e6, 1e9, 9):
                D = C / (6 * N)
                rows.append({"cfg": cfg, "flops_budget": C, "n_params": N, "n_tokens": D,
                             "loss": float(chinchilla_loss(N, D, E, 406.4, 410.7, a_true, 0.28))})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    out = fit_path(tmp_path, n_bootstrap=20, group_by=["cfg"],
                   fits=["isoflop", "approach1"])
    doc = json.loads(out.read_text())
    assert [g["key"] for g in doc["groups"]] == [{"cfg": "x"}, {"cfg": "y"}]
    for g, (alpha, beta) in zip(doc["groups"], [(0.34, 0.28), (0.30, 0.28)]):
        # Noise-free Chinchilla data: the isoFLOP minima follow N_opt ∝ C^(beta/(alpha+beta))
        # (Hoffmann et al. 2022 eq. 4); a parabola in log N is close, not exact.
        assert g["fits"]["isoflop"]["a"] == pytest.approx(beta / (alpha + beta), abs=0.02)
    files = plot_path(tmp_path)
    assert {"isoflop_x.svg", "optimal_y.png"} <= {f.name for f in files}
    ok, table = reproduce_path(tmp_path, replot=False)
    assert ok, table
