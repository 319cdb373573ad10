"""Hyperparameters of each model size by a published rule (`train.size_rule`).

Porian et al. (2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models",
sec. 4) fit the loss-optimal AdamW batch size and learning rate of each model size as power
laws in N; OLMo-core's model ladder uses their fits in this form, at a context of 2048 tokens:

    batch tokens B(N) = 2048 x 160 x (N / 1.08e8)^(2/3)
    peak lr      eta(N) = 0.0047 x (N / 1.08e8)^(-1/3)

N here is the harness's N (non-embedding parameters, `model.count_params`). The batch is
rounded to a power of two sequences of data.seq_len (at least one), so that it splits over
any power of two of devices and micro-batches.
"""

from __future__ import annotations

import math

__all__ = ["SIZE_RULES", "porian2024"]

SIZE_RULES = ("porian2024",)
"""The rules train.size_rule accepts (besides '' for none)."""


def porian2024(n_params: float, seq_len: int) -> tuple[float, int]:
    """(peak learning rate, batch size in sequences) of a model of ``n_params`` (module
    docstring)."""
    scale = n_params / 1.08e8
    sequences = 2048 * 160 * scale ** (2 / 3) / seq_len
    batch = 2 ** max(0, round(math.log2(max(sequences, 1.0))))
    return 0.0047 * scale ** (-1 / 3), batch
