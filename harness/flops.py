"""Training compute C = 6 N D: the one home of the formula.

N is the non-embedding parameter count and D the training tokens; 6 = 2 FLOPs per parameter
per token forward and 4 backward (Kaplan et al. 2020, sec. 2.1 and table 1; Hoffmann et al.
2022, sec. 3). Every count of a run's compute goes through here: the grid's isoFLOP budgets,
the plan, the executor's longest-first order, runs.csv and the analysis. Plain arithmetic (no
numpy, no torch): integers stay exact, floats and arrays broadcast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLOPS_PER_PARAM_TOKEN", "step_work", "training_flops", "tokens_for_flops"]

FLOPS_PER_PARAM_TOKEN = 6


def training_flops(n_params: Any, n_tokens: Any) -> Any:
    """C = 6 N D. Integers give the exact integer; pass floats for arrays of large counts
    (6 N D overflows int64 past 9.2e18)."""
    return FLOPS_PER_PARAM_TOKEN * n_params * n_tokens


def tokens_for_flops(flops: Any, n_params: Any) -> Any:
    """D = C / (6 N): the tokens a budget of ``flops`` gives a model of ``n_params``."""
    return flops / (FLOPS_PER_PARAM_TOKEN * n_params)


def step_work(activation_checkpointing: bool) -> float:
    """A training step's compute per token relative to one forward and one backward pass:
    activation checkpointing makes the forward pass (2 of the 6) again, 8/6 = 4/3."""
    return 4.0 / 3.0 if activation_checkpointing else 1.0
