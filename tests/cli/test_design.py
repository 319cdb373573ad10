"""Grid design from a prior law (harness.design): isoFLOP sizes centred on the N_opt a law
predicts, `harness plan`'s note for a budget that cannot bracket it, and the fit's
bracketing block with the sizes it proposes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.fitting import fit_frame
from harness.config import load_experiment
from harness.design import HOFFMANN_2022, load_prior
from harness.errors import InputError
from harness.grid import expand_grid
from harness.model import count_params

HEAD = """
[model]
aspect_ratio = 16.0
head_dim = 8
[data]
seq_len = 32
[train]
batch_size = 4
"""


def load(tmp_path: Path, grid: str, overrides: list[str] | None = None):
    path = tmp_path / "g.toml"
    path.write_text(HEAD + grid)
    return load_experiment(path, overrides)


def test_hoffmann_prior_n_opt_by_hand() -> None:
    # Hoffmann et al. 2022, eq. 4: N_opt = G (C/6)^a, G = (alpha A / (beta B))^(1/(alpha+beta)).
    p = HOFFMANN_2022
    G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    prior = load_prior("hoffmann2022")
    assert prior is not None
    for c in (1e18, 5.76e23):
        assert prior.n_opt(c) == pytest.approx(G * (c / 6) ** (0.28 / 0.62), rel=1e-12)
    assert p["alpha"] == 0.34 and load_prior("") is None


def test_centred_sizes_bracket_the_prior_in_every_budget(tmp_path: Path) -> None:
    exp = load(tmp_path, "[grid]\nflops = [1e12, 1e13]\nsizes_per_budget = 5\nsize_span = 16\n")
    grid = expand_grid(exp)
    prior = load_prior("hoffmann2022")
    assert prior is not None
    for c in (1e12, 1e13):
        ns = sorted(count_params(s.model).non_embedding for s in grid.specs if s.flops_budget == c)
        assert len(ns) >= 3
        assert ns[0] < prior.n_opt(c) < ns[-1]
        # centred in log: the geometric middle of the ends within the shape rule's rounding
        assert math.log(math.sqrt(ns[0] * ns[-1]) / prior.n_opt(c)) == pytest.approx(0, abs=0.7)
        for s in grid.specs:  # D = C / 6N for each size of the budget
            if s.flops_budget == c:
                n = count_params(s.model).non_embedding
                assert abs(s.n_tokens - c / (6 * n)) <= 32
    assert not [n for n in grid.notes if "may not bracket" in n]


def test_plan_notes_a_budget_whose_sizes_miss_the_prior(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        "[grid]\nshapes = [{n_layer = 1, n_embd = 16}, {n_layer = 2, n_embd = "
        "32}]\nflops = [1e10, 1e13]\n",
    )
    notes = [n for n in expand_grid(exp).notes if "may not bracket" in n]
    prior = load_prior("hoffmann2022")
    assert prior is not None and prior.n_opt(1e13) > 30_000  # above both sizes
    assert len(notes) == 1 and "grid.flops = 1e+13" in notes[0] and "above every size" in notes[0]
    assert not [
        n
        for n in expand_grid(
            load(
                tmp_path,
                "[grid]\nshapes = [{n_layer = 1, n_embd = 16}]\nflops = [1e13]\nprior = ''\n",
            )
        ).notes
        if "bracket" in n
    ]


@pytest.mark.slow
def test_a_fits_json_prior_and_bad_ones(tmp_path: Path) -> None:
    fits = tmp_path / "fits.json"
    fits.write_text(
        json.dumps(
            {
                "fits": {
                    "chinchilla": {
                        "params": {"E": 1.0, "A": 100.0, "B": 1000.0, "alpha": 0.3, "beta": 0.3}
                    }
                }
            }
        )
    )
    prior = load_prior(str(tmp_path))  # a directory holding fits.json
    assert prior is not None and prior.n_opt(6e12) == pytest.approx(
        (0.3 * 100 / (0.3 * 1000)) ** (1 / 0.6) * 1e12**0.5
    )
    (tmp_path / "bad.json").write_text(json.dumps({"fits": {"chinchilla": {"skipped": "x"}}}))
    for bad, why in ((tmp_path / "bad.json", "no chinchilla law"), (tmp_path / "nope", "Error")):
        with pytest.raises(InputError, match=f"grid.prior.*{why}"):
            load_prior(str(bad))
    toml = tmp_path / "g.toml"
    toml.write_text(
        HEAD + f"[grid]\nflops = [1e12]\nsizes_per_budget = 5\nprior = '{tmp_path}/bad.json'\n"
    )
    proc = harness_cli("plan", str(toml))
    assert proc.returncode == 2 and "grid.prior" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            "sizes_per_budget = 5\nn_tokens = [1000]\nshapes = [{n_layer = 1, n_embd = 8}]",
            "needs grid.flops",
        ),
        ("sizes_per_budget = 2\nflops = [1e12]", "at least 3"),
        ("sizes_per_budget = 5\nflops = [1e12]\nprior = ''", "needs grid.prior"),
        ("sizes_per_budget = 5\nflops = [1e12]\nsize_span = 1", "must be > 1"),
    ],
)
def test_bad_design_settings(tmp_path: Path, grid: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load(tmp_path, "[grid]\n" + grid + "\n")


def _profiles(n_opt_of) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    rows = []
    for c in (1e15, 1e16, 1e17):
        for n in np.geomspace(1e5, 1e7, 5):
            x = math.log(n / n_opt_of(c))
            rows.append(
                {"n_params": n, "n_tokens": c / (6 * n), "loss": 2 + 0.1 * x * x, "flops_budget": c}
            )
    return pd.DataFrame(rows).assign(line=range(2, 2 + len(rows)))


def test_the_fit_names_a_budget_that_does_not_bracket_and_proposes_sizes() -> None:
    # Two budgets with their minimum inside (N_opt 1e6 and 2e6) and one whose N_opt, 4e7 on the
    # same law N_opt = k C^0.301, lies above every size: its lowest loss is at the largest.
    k = 1e6 / 1e15**0.30103
    df = _profiles(lambda c: k * c**0.30103 if c < 1e17 else 4e7)
    block = fit_frame(df, n_bootstrap=0, fits=["isoflop", "bracketing"])["bracketing"]
    (bad,) = block["unbracketed"]
    assert bad["budget"] == 1e17 and bad["minimum_at"] == "largest" and bad["n_lowest"] == 1e7
    proposed = bad["proposed_n"]
    # The isoflop law of the two bracketing budgets puts N_opt at 4e6, below the profile's
    # lowest point (1e7, its largest size): the proposal centres on 1e7 instead, which the
    # true N_opt (4e7) then lies inside.
    assert bad["proposed_from"] == "isoflop law"
    assert proposed[0] < 4e7 < proposed[-1] and len(proposed) == 5
    assert proposed[-1] / proposed[0] == pytest.approx(100)
    assert math.sqrt(proposed[0] * proposed[-1]) == pytest.approx(1e7)
    all_good = fit_frame(
        _profiles(lambda c: k * c**0.30103), n_bootstrap=0, fits=["isoflop", "bracketing"]
    )["bracketing"]
    assert all_good == {"n_budgets": 3, "unbracketed": []}


def test_bracketing_counts_distinct_sizes_not_seeds() -> None:
    # Loss rising in N at both budgets, two seeds per size: the lowest loss is at the smallest
    # size whichever seed row comes first.
    rows = [
        {
            "n_params": n,
            "n_tokens": c / (6 * n),
            "loss": 2 + 0.1 * math.log(n) - 0.01 * s,
            "flops_budget": c,
            "seed": s,
        }
        for c in (1e15, 1e16)
        for n in (1e5, 3e5, 1e6)
        for s in (0, 1)
    ]
    df = pd.DataFrame(rows).assign(line=range(2, 2 + len(rows)))
    block = fit_frame(df, n_bootstrap=0, fits=["bracketing"])["bracketing"]
    assert [b["minimum_at"] for b in block["unbracketed"]] == ["smallest", "smallest"]
    # a run tagged with a budget of its own is not a profile
    stray = pd.concat([df, df.iloc[:1].assign(flops_budget=1e14, line=99)])
    assert fit_frame(stray, n_bootstrap=0, fits=["bracketing"])["bracketing"]["n_budgets"] == 2
