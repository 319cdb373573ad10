"""Porian et al. (2024): re-derive the published N_opt ∝ C^a exponents from the shipped CSV.

The published values are written here as literals (the paper's table, RefinedWeb), not read
from results/porian2024/published.json, so that a changed file cannot make this test agree.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.isoflop import fit_isoflop

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "results" / "porian2024" / "porian2024_isoflop_points.csv"

# (hparams, warmup, decay, param_count, loss_split) -> published a, RefinedWeb (arXiv:2406.19146)
PUBLISHED = {
    ("base", "long", "kaplan", "kaplan", "train"): 0.834,
    ("base", "long", "kaplan", "standard", "val"): 0.701,
    ("base", "short", "kaplan", "standard", "val"): 0.604,
    ("base", "short", "chinchilla", "standard", "val"): 0.571,
    ("tuned", "short", "const", "standard", "val"): 0.497,
}


@pytest.mark.parametrize(("config", "published"), list(PUBLISHED.items()))
def test_rw_exponents_within_003(config: tuple[str, ...], published: float) -> None:
    df = pd.read_csv(CSV)
    keys = ["hparams", "warmup", "decay", "param_count", "loss_split"]
    rows = df[(df["dataset"] == "rw") & (df[keys] == pd.Series(config, index=keys)).all(axis=1)]
    assert len(rows) >= 30
    # The authors' own minimum finder (Akima interpolation per budget), then a log-log line.
    result = fit_isoflop(rows["N_params"], rows["loss"], rows["flops_budget"], minimum="akima")
    assert abs(result.a - published) <= 0.03, (config, result.a, published)
    assert abs(result.a + result.b - 1) < 1e-9  # D_opt = C / 6 N_opt
