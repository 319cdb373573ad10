"""Porian et al. (2024): re-derive the published N_opt ∝ C^a exponents from the shipped CSV.

The published values are written here as literals (the paper's table), not read
from results/porian2024/published.json, so that a changed file cannot make this test agree.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.isoflop import fit_isoflop

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "results" / "porian2024" / "porian2024_isoflop_points.csv"

# (dataset, hparams, warmup, decay, param_count, loss_split) -> published a (arXiv:2406.19146)
PUBLISHED = {
    ("rw", "base", "long", "kaplan", "kaplan", "train"): 0.834,
    ("rw", "base", "long", "kaplan", "standard", "val"): 0.701,
    ("rw", "base", "short", "kaplan", "standard", "val"): 0.604,
    ("rw", "base", "short", "chinchilla", "standard", "val"): 0.571,
    ("rw", "tuned", "short", "const", "standard", "val"): 0.497,
    ("owt2", "base", "long", "kaplan", "kaplan", "train"): 0.870,
    ("owt2", "base", "long", "kaplan", "standard", "val"): 0.700,
    ("owt2", "base", "short", "kaplan", "standard", "val"): 0.602,
    ("owt2", "base", "short", "chinchilla", "standard", "val"): 0.569,
    ("owt2", "tuned", "short", "const", "standard", "val"): 0.518,
}


@pytest.mark.parametrize(("config", "published"), list(PUBLISHED.items()))
def test_exponents_within_0005(config: tuple[str, ...], published: float) -> None:
    df = pd.read_csv(CSV)
    keys = ["dataset", "hparams", "warmup", "decay", "param_count", "loss_split"]
    rows = df[(df[keys] == pd.Series(config, index=keys)).all(axis=1)]
    assert len(rows) >= 30
    # The authors' own minimum finder (Akima interpolation of log loss per budget), then a
    # log-log line. 0.005: the published values have 3 decimals, and the authors' extra step
    # (each minimum replaced by a median over noise-perturbed profiles) is left out. Interpolating
    # loss instead of log loss, or skipping budgets whose lowest measured point is at an end,
    # misses by up to 0.018.
    result = fit_isoflop(rows["N_params"], rows["loss"], rows["flops_budget"], minimum="akima")
    assert abs(result.a - published) <= 0.005, (config, result.a, published)
    assert abs(result.a + result.b - 1) < 1e-9  # D_opt = C / 6 N_opt
