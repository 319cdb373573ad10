"""fit_path / plot_path / reproduce_path and the CLI subcommands, on generated CSVs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import analysis_cli

from harness.analysis.drawing import plot_path
from harness.analysis.fitting import fit_path, summarize
from harness.analysis.io import load_learning_curves
from harness.analysis.laws import chinchilla_loss
from harness.analysis.plots import new_axes, plot_learning_curves, si_ticks
from harness.analysis.reproduce import reproduce_path
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
    pd.DataFrame(
        {
            "run_id": [f"r{i:02d}" for i in range(N.size)],
            "n_params": N,
            "n_tokens": D,
            "loss": L,
            "status": status,
        }
    ).to_csv(dirpath / "runs.csv", index=False)
    return dirpath


def _metrics(run_dir: Path, n_tokens: float, final: float, *, every: int = 4) -> pd.DataFrame:
    """A metrics.csv as train() writes it: val_loss only at every `every`-th step."""
    steps = np.arange(1, 13)
    tokens = n_tokens * steps / steps[-1]
    train = final * (1 + 2.0 / steps)
    val = np.where(steps % every == 0, final * (1 + 1.5 / steps), np.nan)
    m = pd.DataFrame(
        {
            "step": steps,
            "tokens": tokens,
            "train_loss": train,
            "val_loss": val,
            "lr": 1e-3,
            "wall_s": 0.1 * steps,
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    m.to_csv(run_dir / "metrics.csv", index=False, na_rep="")
    return m


@pytest.fixture(scope="module")
def cli_fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`harness fit` once on generated runs with a runs/ tree: (directory, fit's stdout).

    Shared by the tests below, which never change it (they copy it to change it).
    """
    d = _runs(tmp_path_factory.mktemp("cli") / "exp")
    df = pd.read_csv(d / "runs.csv")
    for _, row in df.iterrows():
        if row["n_tokens"] == df["n_tokens"].max():  # one run per model size has curves
            _metrics(d / "runs" / row["run_id"], row["n_tokens"], 3.0 + 1e6 / row["n_params"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert analysis_cli()("fit", str(d), "--bootstrap", "20", "--fits", ",".join(FAST)) == 0
    return d, out.getvalue()


@pytest.mark.slow
def test_fit_path_is_byte_identical_and_relocatable(
    tmp_path: Path, cli_fitted: tuple[Path, str]
) -> None:
    # The same CSV and settings as `harness fit` in cli_fitted give the same bytes from the
    # API, in place (a second run) and from another directory (by its CSV path); another seed
    # gives other bytes.
    d, _ = cli_fitted
    first = (d / "fits.json").read_bytes()
    assert fit_path(d, n_bootstrap=20, fits=FAST, seed=0).read_bytes() == first
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(d, b)
    (b / "fits.json").unlink()
    assert fit_path(b / "runs.csv", n_bootstrap=20, fits=FAST, seed=0).read_bytes() == first
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
    assert fit_path(b, n_bootstrap=20, fits=FAST, seed=4).read_bytes() != first
    text = summarize(doc)
    assert "19 runs used, 1 excluded" in text and "chinchilla" in text


def test_cli_fit_prints_summary(cli_fitted: tuple[Path, str]) -> None:
    d, out = cli_fitted
    assert "19 runs used, 1 excluded" in out and "chinchilla" in out
    assert f"wrote {d / 'fits.json'}" in out


@pytest.mark.slow
def test_cli_plot_and_reproduce(
    cli_fitted: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d, _ = cli_fitted
    run = analysis_cli()
    stored = (d / "fits.json").read_bytes()
    assert run("plot", str(d)) == 0
    figs = sorted(p.name for p in (d / "figures").iterdir())
    assert {
        "loss_vs_n.png",
        "loss_vs_n.svg",
        "loss_vs_d.svg",
        "residuals.png",
        "learning_curves.png",
        "learning_curves.svg",
    } <= set(figs)
    svg = (d / "figures" / "loss_vs_n.svg").read_bytes()
    assert b"<dc:date>" not in svg
    assert capsys.readouterr().out.count("wrote ") == len(figs)

    # reproduce refits and replots from the CSV alone, in a temporary directory: every figure
    # drawn again (all but the learning curves, which need runs/) has the stored bytes, so
    # plotting is deterministic, PNG and SVG.
    assert run("reproduce", str(d)) == 0
    out = capsys.readouterr().out
    n = len(figs) - 2
    assert "reproduce: OK" in out and "0 differ" in out
    assert f"figures: {n} redrawn; {n} stored, {n} of them byte-identical" in out
    assert (d / "fits.json").read_bytes() == stored  # never overwritten


def test_cli_reproduce_detects_a_change(
    tmp_path: Path, cli_fitted: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "exp"
    shutil.copytree(cli_fitted[0], d)
    doc = json.loads((d / "fits.json").read_text())
    doc["fits"]["chinchilla"]["params"]["alpha"] *= 1.01
    (d / "fits.json").write_text(json.dumps(doc))
    assert analysis_cli()("reproduce", str(d), "--no-replot") == 1
    out = capsys.readouterr().out
    assert "fits.chinchilla.params.alpha" in out and "DIFFERENT" in out

    (d / "runs.csv").write_text("n_params,n_tokens\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        analysis_cli()("fit", str(d))


def test_cli_prints_warnings_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # L(N) at one D with E = 33 (e = 3.5), beyond the power law's start grid (e in -1..3): a
    # GridEdgeWarning from the power_law_n fit.
    N = np.geomspace(1e7, 1e9, 6)
    pd.DataFrame({"n_params": N, "n_tokens": 1e9, "loss": 33.0 + 406.4 * N**-0.34}).to_csv(
        tmp_path / "runs.csv", index=False
    )
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the handler would raise here
        fit = analysis_cli()
        assert fit("fit", str(tmp_path), "--bootstrap", "0", "--fits", "power_law_n") == 0
    assert warnings.filters == filters  # the handler changed no filter for good
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "warning: power_law_n fit: best fit on the edge of the start grid: e=3.49"
    )
    assert "runs over a wider range of N and D would" in lines[0]  # what the user can do
    assert "GridEdgeWarning" not in err and "warnings.warn" not in err


def test_plot_learning_curves(tmp_path: Path) -> None:
    sizes = {"small": 1e6, "big": 4e6, "big2": 4e6}
    metrics = {r: _metrics(tmp_path / r, 1e8 * (i + 1), 3.0 - 0.2 * i) for i, r in enumerate(sizes)}
    (tmp_path / "not_in_csv").mkdir()
    curves = load_learning_curves(tmp_path, {**sizes, "no_metrics": 2e6})
    assert sorted(set(curves["run_id"])) == ["big", "big2", "small"]
    ax = new_axes()
    plot_learning_curves(ax, curves)
    val = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    train = [ln for ln in ax.get_lines() if ln.get_marker() != "o"]
    assert len(val) == len(train) == 3
    by_run = {}
    for ln in val:
        x = np.asarray(ln.get_xdata())
        run = next(
            r for r, m in metrics.items() if np.array_equal(x, m["tokens"][m["val_loss"].notna()])
        )
        m = metrics[run]
        np.testing.assert_array_equal(ln.get_ydata(), m["val_loss"].dropna())
        by_run[run] = ln.get_color()
    # One colour per model size: the two runs of N = 4e6 share one, N = 1e6 has another.
    assert by_run["big"] == by_run["big2"] != by_run["small"]
    assert all(ln.get_alpha() is not None and ln.get_alpha() < 1 for ln in train)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["N=1M", "N=4M"]
    assert ax.get_xscale() == "log"


def test_learning_curves_of_many_sizes_get_a_colour_bar(tmp_path: Path) -> None:
    # 16 sizes (the isoflop grid has more): a legend would cover the curves, so a bar shows them.
    sizes = {f"r{i}": 1e4 * 2**i for i in range(16)}
    for i, r in enumerate(sizes):
        _metrics(tmp_path / r, 1e8, 3.0 - 0.05 * i)
    ax = new_axes()
    fig = plot_learning_curves(ax, load_learning_curves(tmp_path, sizes))
    assert ax.get_legend() is None
    (bar,) = [a for a in fig.axes if a is not ax]
    assert bar.get_ylabel() == "N (parameters)"
    # Every second size labelled, in order, in SI units: 10k, 40k, ..., 164M.
    assert [t.get_text() for t in bar.get_yticklabels()] == [
        "10k",
        "40k",
        "160k",
        "640k",
        "2.56M",
        "10.2M",
        "41M",
        "164M",
    ]


def test_learning_curves_bad_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "metrics.csv").write_text("step,tokens,train_loss\n1,10,3.0\n")
    with pytest.raises(InputError, match=r"r1/metrics.csv: missing column\(s\) val_loss"):
        load_learning_curves(tmp_path, {"r1": 1e6})


def test_single_d_is_bad_input_for_the_joint_fit(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "n_params": [1e6, 2e6, 4e6, 8e6, 1.6e7],
            "n_tokens": [1e9] * 5,
            "loss": [4.0, 3.8, 3.6, 3.5, 3.4],
        }
    ).to_csv(tmp_path / "runs.csv", index=False)
    with pytest.raises(InputError, match="a single n_tokens value"):
        fit_path(tmp_path, n_bootstrap=0)
    # Without the joint fit, the one-variable law in N works on the same file.
    out = fit_path(tmp_path, n_bootstrap=0, fits=["power_law_n"])
    assert json.loads(out.read_text())["fits"]["power_law_n"]["data"] == "n_tokens=1e+09"


@pytest.mark.slow
def test_group_by_and_isoflop(tmp_path: Path) -> None:
    rows = []
    for cfg, (E, a_true) in {"x": (1.8, 0.34), "y": (2.0, 0.30)}.items():
        for C in (1e17, 1e18, 1e19):
            for N in np.geomspace(1e6, 1e9, 9):
                D = C / (6 * N)
                rows.append(
                    {
                        "cfg": cfg,
                        "flops_budget": C,
                        "n_params": N,
                        "n_tokens": D,
                        "loss": float(chinchilla_loss(N, D, E, 406.4, 410.7, a_true, 0.28)),
                    }
                )
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    out = fit_path(tmp_path, n_bootstrap=20, group_by=["cfg"], fits=["isoflop", "approach1"])
    doc = json.loads(out.read_text())
    assert [g["key"] for g in doc["groups"]] == [{"cfg": "x"}, {"cfg": "y"}]
    for g, (alpha, beta) in zip(doc["groups"], [(0.34, 0.28), (0.30, 0.28)], strict=True):
        # Noise-free Chinchilla data: the isoFLOP minima follow N_opt ∝ C^(beta/(alpha+beta))
        # (Hoffmann et al. 2022 eq. 4); a parabola in log N is close, not exact.
        assert g["fits"]["isoflop"]["a"] == pytest.approx(beta / (alpha + beta), abs=0.02)
    files = plot_path(tmp_path)
    assert {"isoflop_x.svg", "optimal_y.png"} <= {f.name for f in files}
    assert not any("learning_curves" in f.name for f in files)  # no runs/ here: none drawn
    ok, table = reproduce_path(tmp_path, replot=False)
    assert ok, table


@pytest.mark.slow
def test_fit_where_selects_rows_and_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --where fits only the selected runs (4 sizes x 3 budgets, one of them failed): the same
    # fit as on a CSV holding just those rows,
    # recorded in fits.json so that reproduce refits the same rows (0 differ).
    d = _runs(tmp_path / "exp")
    run = analysis_cli()
    assert (
        run(
            "fit",
            str(d),
            "--bootstrap",
            "20",
            "--fits",
            "chinchilla",
            "--where",
            "n_params >= 3e6 and n_tokens < 5e9",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "11 runs used, 1 excluded (status not 'done'), 8 not selected by --where" in out
    doc = json.loads((d / "fits.json").read_text())
    assert doc["settings"]["where"] == "n_params >= 3e6 and n_tokens < 5e9"
    assert doc["input"] == {**doc["input"], "n_points": 11, "n_not_selected": 8}
    sub = tmp_path / "sub"
    sub.mkdir()
    df = pd.read_csv(d / "runs.csv")
    df[(df.n_params >= 3e6) & (df.n_tokens < 5e9)].to_csv(sub / "runs.csv", index=False)
    alone = json.loads(fit_path(sub, n_bootstrap=20, fits=["chinchilla"]).read_text())
    assert doc["fits"]["chinchilla"] == alone["fits"]["chinchilla"]
    assert run("reproduce", str(d), "--no-replot") == 0
    assert "0 differ" in capsys.readouterr().out
    # Without --where, fits.json has no such keys (files written before it are unchanged).
    plain = json.loads(fit_path(sub, n_bootstrap=0, fits=["chinchilla"]).read_text())
    assert "where" not in plain["settings"] and "n_not_selected" not in plain["input"]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("n_tokens <", "--where 'n_tokens <': "),
        ("n_tokens > 1e99", "selects none of 19 runs"),
        ("n_tokens * 2", "binop 'n_tokens * 2' is not allowed"),
        ("width > 3", "'width' is not a column"),
        ("n_tokens", "a value alone is not a true/false condition"),
        ("n_tokens == n_tokens + 1", "binop 'n_tokens + 1' is not allowed"),
        ("n_params == 1e6", "fewer than its 5 parameters; accepted: at least 5 runs (the 4 runs"),
    ],
)
def test_fit_where_bad_expression_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, message: str
) -> None:
    from harness.cli import main

    d = _runs(tmp_path / "exp")
    assert main(["fit", str(d), "--where", where]) == 2
    err = capsys.readouterr().err
    assert f"--where {where!r}" in err and message in err and err.count("\n") == 1
    assert not (d / "fits.json").exists()


@pytest.mark.parametrize(
    ("n_tokens", "labels"),
    [
        # Budgets 200k..1.6M (one power of ten in view): SI minor labels at 2 and 5 x 10^k
        # only, not matplotlib's 2, 3, 4, 6 x 10^k, which collide.
        ([2e5, 4e5, 8e5, 1.6e6], ["200k", "500k"]),
        ([5e4, 1.5e5, 5e5, 1.5e6], []),  # wider: the decades alone
    ],
)
def test_loss_vs_d_minor_tick_labels(n_tokens: list[float], labels: list[str]) -> None:
    from harness.analysis.plots import plot_loss_vs_d

    df = pd.DataFrame({"n_params": 1e5, "n_tokens": n_tokens, "loss": [3.0, 2.8, 2.7, 2.6]})
    fig = plot_loss_vs_d(new_axes(), df)
    si_ticks(fig)  # as save_figure does
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [
        t.get_text()
        for t in ax.xaxis.get_minorticklabels()
        if t.get_text() and lo <= t.get_position()[0] <= hi
    ]
    assert shown == labels
    majors = [
        t.get_text() for t in ax.xaxis.get_majorticklabels() if lo <= t.get_position()[0] <= hi
    ]
    assert majors == (["1M"] if labels else ["100k", "1M"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", "x", "settings.seed = 'x'; accepted: an integer >= 0"),
        ("n_bootstrap", -5, "settings.n_bootstrap = -5; accepted: an integer from 0 to 100000"),
        ("isoflop_minimum", "spline", "settings.isoflop_minimum = 'spline'; accepted: 'parabola'"),
        ("fits", ["nope"], "settings.fits = ['nope']; accepted: null or a list of names from"),
    ],
)
def test_reproduce_names_a_bad_stored_setting(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    # A fits.json edited by hand: the error names the file and the setting, not a flag the user
    # never typed, and is one line (was a ValueError traceback for the seed).
    d = _runs(tmp_path / "exp")
    fit_path(d, n_bootstrap=0, fits=["chinchilla"])
    doc = json.loads((d / "fits.json").read_text())
    doc["settings"][key] = value
    (d / "fits.json").write_text(json.dumps(doc))
    with pytest.raises(InputError) as info:
        reproduce_path(d, replot=False)
    assert message in str(info.value) and str(d / "fits.json") in str(info.value)


def test_fit_flags_refuse_a_negative_seed_and_a_bad_rtol(tmp_path: Path) -> None:
    d = _runs(tmp_path / "exp")
    run = analysis_cli()
    with pytest.raises(SystemExit) as info:
        run("fit", str(d), "--seed", "-1")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        run("reproduce", str(d), "--rtol", "nan")
    assert info.value.code == 2
    assert not (d / "fits.json").exists()


def test_group_by_a_column_with_blanks_is_one_line(tmp_path: Path) -> None:
    d = _runs(tmp_path / "exp")
    df = pd.read_csv(d / "runs.csv")
    df["cfg"] = ["x"] * 5 + [None] + ["y"] * (len(df) - 6)
    df.to_csv(d / "runs.csv", index=False)
    with pytest.raises(
        InputError,
        match=r"--group-by column 'cfg' is blank at line 7; "
        r"accepted: a value in every row",
    ):
        fit_path(d, n_bootstrap=0, group_by=["cfg"])
    assert not (d / "fits.json").exists()


def test_plot_leaves_the_figures_folder_as_it_was_on_bad_input(tmp_path: Path) -> None:
    # The runs' figures draw first; a bad downstream.csv is found after them. Nothing of this
    # attempt may land in figures/, and no staging folder may stay behind.
    d = _runs(tmp_path / "exp")
    figures = d / "figures"
    figures.mkdir()
    (figures / "old.png").write_bytes(b"old")
    (d / "downstream.csv").write_text("run_id,method,n_labels,seed,accuracy\nr00,lora,0,0,1.5\n")
    with pytest.raises(InputError, match="downstream.csv"):
        plot_path(d)
    assert [p.name for p in figures.iterdir()] == ["old.png"]
    assert sorted(p.name for p in d.iterdir()) == ["downstream.csv", "figures", "runs.csv"]


def test_fit_out_must_be_a_writable_file_path(tmp_path: Path) -> None:
    d = _runs(tmp_path / "exp")
    run = analysis_cli()
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match=r"--out = .*: is a folder; accepted: a file path"):
        run("fit", str(d), "--bootstrap", "0", "--out", str(tmp_path))
    with pytest.raises(InputError, match=r"afile is a file; accepted: a file path in a folder"):
        run("fit", str(d), "--bootstrap", "0", "--out", str(tmp_path / "afile" / "f.json"))
    with pytest.raises(InputError, match=r"--out-dir = .*afile: is a file; accepted: a folder"):
        run("plot", str(d), "--out-dir", str(tmp_path / "afile"))
    assert not (d / "fits.json").exists() and not (d / "figures").exists()
