"""Learning-rate and batch-size sweeps: optima per size and their power laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import sweeps
from harness.analysis.drawing import plot_path
from harness.analysis.fitting import fit_frame, fit_path
from harness.errors import InputError

SIZES = (1e4, 3e4, 1e5, 3e5, 1e6)
LR_C, LR_P = 0.5, -0.3  # the law the data are made from: lr_opt = 0.5 N^-0.3


def lr_opt(n: float) -> float:
    return LR_C * n**LR_P


def sweep_frame(
    *, noise: float = 0.0, quartic: float = 0.0, seed: int = 0, factors=(0.25, 0.5, 1, 2, 4)
) -> pd.DataFrame:
    """Runs at D = 20 N, 5 learning rates around lr_opt(N), each lr a fixed factor off.

    loss = L(N) + 0.08 x^2 + quartic x^4 + noise, x = ln(lr / lr_opt): a parabola in ln lr
    with its vertex at lr_opt exactly when quartic = noise = 0.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        base = 2.0 + 30.0 * n**-0.3
        for f in factors:
            lr = lr_opt(n) * f
            x = np.log(f)
            loss = base + 0.08 * x * x + quartic * x**4 + noise * rng.standard_normal()
            rows.append(
                {
                    "n_params": n,
                    "n_tokens": 20 * n,
                    "loss": loss,
                    "lr": lr,
                    "batch_tokens": 1024,
                    "status": "done",
                }
            )
    return pd.DataFrame(rows)


def test_parabola_vertex_is_exact_for_parabolic_data() -> None:
    h = np.array([1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])
    x0 = np.log(5e-3)
    loss = 3.0 + 0.1 * (np.log(h) - x0) ** 2
    opt, lopt, (c0, c1, c2), win, inside, note = sweeps.sweep_optimum(h, loss, half_window=2)
    assert opt == pytest.approx(5e-3, rel=1e-10)
    assert lopt == pytest.approx(3.0, abs=1e-12)
    assert c2 == pytest.approx(0.1, rel=1e-9)
    assert inside and note == "" and win == (0, 1, 2, 3, 4)


def test_window_and_edges() -> None:
    h = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    x0 = np.log(3.0)
    loss = 1.0 + (np.log(h) - x0) ** 2
    # Lowest loss at h = 4 (index 2): the window is indices 1..3 by default (half_window 1),
    # 0..4 with half_window 2.
    assert sweeps.sweep_optimum(h, loss)[3] == (1, 2, 3)
    assert sweeps.sweep_optimum(h, loss, half_window=2)[3] == (0, 1, 2, 3, 4)
    # Optimum beyond the largest value: the vertex is an extrapolation, reported as outside.
    loss = 1.0 + (np.log(h) - np.log(200.0)) ** 2
    opt, _, _, win, inside, note = sweeps.sweep_optimum(h, loss, half_window=1)
    assert opt == pytest.approx(200.0, rel=1e-9) and not inside
    assert win == (4, 5, 6) and "largest" in note
    # Fewer than 3 values: no optimum.
    opt, *_, note = sweeps.sweep_optimum([1.0, 2.0], [1.0, 0.5])
    assert np.isnan(opt) and "3" in note
    with pytest.raises(InputError, match="repeated"):
        sweeps.sweep_optimum([1.0, 1.0, 2.0], [1.0, 0.5, 0.7])


def test_recovers_known_lr_exponent_noise_free() -> None:
    res = sweeps.fit_sweep(sweep_frame(), "lr")
    assert [o.inside for o in res.optima] == [True] * 5
    for o in res.optima:
        assert o.opt == pytest.approx(lr_opt(o.n_params), rel=1e-9)
    assert res.vs_n is not None and res.vs_c is not None
    assert res.vs_n.exponent == pytest.approx(LR_P, abs=1e-9)
    assert res.vs_n.coef == pytest.approx(LR_C, rel=1e-8)
    # D = 20 N, so C = 6 N D = 120 N^2 and lr_opt = 0.5 (C / 120)^(-0.3 / 2).
    assert res.vs_c.exponent == pytest.approx(LR_P / 2, abs=1e-9)
    assert res.vs_c.coef == pytest.approx(LR_C * 120**0.15, rel=1e-8)


def test_recovers_exponent_from_noisy_non_parabolic_data() -> None:
    df = sweep_frame(noise=0.003, quartic=0.01, seed=1)
    block = sweeps.sweep_block(df, "lr", n_bootstrap=400, rng=np.random.default_rng(0))
    p = block["vs_n"]["exponent"]
    assert p == pytest.approx(LR_P, abs=0.03)
    lo, hi = block["vs_n"]["ci95"]["exponent"]
    assert lo < LR_P < hi and hi - lo < 0.2
    assert block["n_inside"] == 5
    # Five-point windows: the values inside each window are resampled as well.
    wide = sweeps.sweep_block(
        df, "lr", n_bootstrap=400, rng=np.random.default_rng(0), half_window=2
    )
    assert wide["vs_n"]["exponent"] == pytest.approx(LR_P, abs=0.03)
    lo, hi = wide["vs_n"]["ci95"]["exponent"]
    assert lo < LR_P < hi and hi - lo < 0.3


def test_optimum_outside_the_sweep_is_left_out_of_the_law() -> None:
    df = sweep_frame()
    # The largest model only swept above its optimum: lowest loss at its smallest lr.
    big = df["n_params"] == 1e6
    df.loc[big, "lr"] = df.loc[big, "lr"] * 8.0
    x = np.log(df.loc[big, "lr"] / lr_opt(1e6))
    df.loc[big, "loss"] = 2.0 + 30.0 * 1e6**-0.3 + 0.08 * x * x
    res = sweeps.fit_sweep(df, "lr")
    assert [o.inside for o in res.optima] == [True, True, True, True, False]
    assert res.vs_n is not None and res.vs_n.n_points == 4
    assert res.vs_n.exponent == pytest.approx(LR_P, abs=1e-9)


def test_batch_sweep_profiles_out_the_learning_rate() -> None:
    # B_opt = 2e2 C^0.33 (tokens); at each batch size two learning rates, one 0.05 worse.
    rows = []
    for n in SIZES:
        c = 6 * n * 20 * n
        b_opt = 2e2 * c**0.33
        for f in (0.25, 0.5, 1, 2, 4):
            for lr, penalty in ((1e-3, 0.05), (2e-3, 0.0)):
                x = np.log(f)
                rows.append(
                    {
                        "n_params": n,
                        "n_tokens": 20 * n,
                        "lr": lr,
                        "batch_tokens": b_opt * f,
                        "loss": 2 + 0.05 * x * x + penalty,
                    }
                )
    df = pd.DataFrame(rows)
    assert sweeps.swept_columns(df) == ["lr", "batch_tokens"]
    res = sweeps.fit_sweep(df, "batch_tokens")
    assert res.vs_c is not None and res.vs_c.exponent == pytest.approx(0.33, abs=1e-9)
    best = sweeps.best_per_point(df)
    assert len(best) == 5 and set(best["lr"]) == {2e-3}
    assert np.allclose(best["batch_tokens"] / (2e2 * (120 * best["n_params"] ** 2) ** 0.33), 1)


def test_no_sweep_leaves_the_runs_alone() -> None:
    df = pd.read_csv(Path(__file__).parents[2] / "results" / "quickstart" / "runs.csv")
    assert sweeps.swept_columns(df) == []
    assert sweeps.best_per_point(df) is df
    with pytest.raises(InputError, match="at least 3"):
        sweeps.fit_sweep(df, "lr")


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    csv = tmp_path / "runs.csv"
    df.to_csv(csv, index=False)
    return csv


def test_fits_json_and_figures(tmp_path: Path) -> None:
    csv = _write(tmp_path, sweep_frame(noise=0.002, seed=2))
    out = fit_path(csv, n_bootstrap=200, fits=["lr_sweep"])
    first = out.read_bytes()
    assert fit_path(csv, n_bootstrap=200, fits=["lr_sweep"]).read_bytes() == first
    fits = json.loads(first)["fits"]
    assert fits["lr_sweep"]["vs_n"]["exponent"] == pytest.approx(LR_P, abs=0.03)
    assert list(fits) == ["lr_sweep"]
    names = {p.name for p in plot_path(csv)}
    assert {"lr_sweep.png", "lr_opt.svg", "loss_vs_n.png"} <= names


def test_default_fits_see_the_best_lr_per_point() -> None:
    fits = fit_frame(sweep_frame(), n_bootstrap=0, fits=["chinchilla", "power_law_n"])
    # Five (N, D) points at their best lr, not the 25 runs.
    assert fits["chinchilla"]["n_points"] == 5
    assert "lr_sweep" not in fits  # not asked for by name
    assert "batch_sweep" not in fit_frame(sweep_frame(), n_bootstrap=0, fits=None)


def test_sweep_too_small_for_chinchilla_is_not_an_error() -> None:
    df = sweep_frame()
    df = df[df["n_params"] <= 1e5].reset_index(drop=True)  # 3 points after the best lr
    fits = fit_frame(df, n_bootstrap=0)
    assert "skipped" in fits["chinchilla"]
    assert fits["lr_sweep"]["vs_n"]["exponent"] == pytest.approx(LR_P, abs=1e-9)
    with pytest.raises(InputError, match="chinchilla"):
        fit_frame(df, n_bootstrap=0, fits=["chinchilla", "lr_sweep"])


def test_sweep_figure_labels_batch_sizes_in_whole_tokens() -> None:
    from harness.analysis.plots import new_axes, plot_sweep

    block = {
        "hparam": "batch_tokens",
        "points": [
            {
                "n_params": 1e4,
                "n_tokens": 2e5,
                "values": [512.0, 1024.0, 2048.0],
                "losses": [2.6, 2.5, 2.7],
                "opt": 1000.0,
                "loss_opt": 2.5,
                "parabola": [None, None, None],
                "window": [],
                "inside": True,
            }
        ],
    }
    ax = new_axes()
    plot_sweep(ax, block)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1024", "2048"]
    ax = new_axes()
    lr_points = [{**block["points"][0], "values": [1.5e-3, 3e-3, 1.25e-2]}]
    plot_sweep(ax, {**block, "hparam": "lr", "points": lr_points})
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0015", "0.003", "0.0125"]
