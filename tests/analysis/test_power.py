"""The Monte Carlo power check of a grid design (harness.analysis.power): the profile fit at a
fixed E recovers a known law, a wide grid with little noise determines every parameter, the
same grid under the noise of a real tiny grid does not determine E, and bad input is one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.laws import chinchilla_loss
from harness.analysis.power import chinchilla_power, main, profile_fit
from harness.errors import InputError

# Hoffmann et al. 2022, the approach-3 fit of their eq. 10.
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _grid(n_lo: float, n_hi: float, d_lo: float, d_hi: float) -> tuple[np.ndarray, np.ndarray]:
    N, D = np.meshgrid(np.geomspace(n_lo, n_hi, 5), np.geomspace(d_lo, d_hi, 4))
    return N.ravel(), D.ravel()


def _loss(N: np.ndarray, D: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return chinchilla_loss(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"])


def test_profile_fit_recovers_the_law_at_its_own_floor() -> None:
    N, D = _grid(1e7, 1e10, 1e9, 1e12)
    law, sigma = profile_fit(N, D, _loss(N, D, HOFFMANN), HOFFMANN["E"])
    for k in ("A", "B", "alpha", "beta"):
        assert law[k] == pytest.approx(HOFFMANN[k], rel=1e-4), k
    assert sigma < 1e-6
    # A wrong floor explains the same losses worse.
    assert profile_fit(N, D, _loss(N, D, HOFFMANN), 0.5)[1] > 1e-3


def test_a_wide_grid_with_little_noise_determines_every_parameter() -> None:
    # 3 decades in N and D, 0.1% noise: Hoffmann et al.'s law is well inside what it resolves.
    N, D = _grid(1e7, 1e10, 1e9, 1e12)
    p = chinchilla_power(
        N,
        D,
        HOFFMANN,
        sigma_log=1e-3,
        n_datasets=3,
        n_resamples=100,
        rng=np.random.default_rng(0),
    )
    assert p.determined_share == dict.fromkeys(("E", "A", "B", "alpha", "beta"), 1.0)
    assert p.median_estimate["E"] == pytest.approx(HOFFMANN["E"], rel=0.02)


@pytest.mark.slow
def test_the_noise_of_a_tiny_grid_leaves_e_undetermined() -> None:
    # The quickstart's 15 points (results/quickstart) and its law refitted at E = 1, with its
    # residual spread of 3.7%: results/quickstart/README.md measured E determined in none of
    # 20 simulated grids.
    N = np.repeat([6736.0, 16816.0, 53536.0, 138768.0, 301888.0], 3)
    D = np.tile([150016.0, 499968.0, 1500032.0], 5)
    law = {"E": 1.0, "A": 5.7, "B": 768.0, "alpha": 0.234, "beta": 0.525}
    p = chinchilla_power(
        N, D, law, sigma_log=0.037, n_datasets=8, n_resamples=100, rng=np.random.default_rng(1)
    )
    assert p.determined_share["E"] <= 0.25
    # The same points with 30x less noise do determine it.
    p = chinchilla_power(
        N, D, law, sigma_log=1e-4, n_datasets=2, n_resamples=100, rng=np.random.default_rng(1)
    )
    assert p.determined_share["E"] == 1.0


def test_bad_input_is_one_line() -> None:
    N, D = _grid(1e7, 1e10, 1e9, 1e12)
    with pytest.raises(InputError, match="accepted: 0 <= E < the lowest loss"):
        profile_fit(N, D, _loss(N, D, HOFFMANN), 5.0)
    with pytest.raises(InputError, match="sigma_log = -1"):
        chinchilla_power(
            N, D, HOFFMANN, sigma_log=-1, n_datasets=1, n_resamples=1, rng=np.random.default_rng()
        )


def test_the_command_prints_a_table_and_refuses_a_bad_csv(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    N, D = _grid(1e7, 1e10, 1e9, 1e12)
    L = _loss(N, D, HOFFMANN) * np.exp(np.random.default_rng(2).normal(0, 0.01, N.size))
    pd.DataFrame({"n_params": N, "n_tokens": D, "loss": L}).to_csv(tmp_path / "runs.csv")
    assert main([str(tmp_path), "--floors", "1.69", "--factors", "1", "--datasets", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 1.69 |" in out and "E determined" in out
    (tmp_path / "bad.csv").write_text("n_params,n_tokens\n1,2\n")
    assert main([str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0]
