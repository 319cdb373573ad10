"""The training batches and the held-out windows: the corpus cut into each step's sequences
(every rank its contiguous share, in micro-batches), by the run's order over the training
split (`harness.data.training_order`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.data import Corpus, SequenceOrder, gather_windows, training_order
from harness.grid import RunSpec
from harness.objectives import (
    IGNORE_INDEX,
    CausalLM,
    MaskedLM,
    eval_objective,
    training_objective,
)

__all__ = ["Batches", "HeldOut", "load_data"]


@dataclass(frozen=True, eq=False)
class Batches:
    """The training batches: the run's order over the training split, cut into its steps."""

    tokens: np.ndarray
    order: SequenceOrder
    objective: CausalLM | MaskedLM
    seq_len: int
    batch_size: int
    n_seq_total: int
    device: torch.device
    rank: int = 0
    world: int = 1
    micro_batch_size: int = 0

    def at(self, step: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
        """This rank's micro-batches (inputs, targets, scored targets) of the update at
        ``step``, and the update's sequences on all ranks; the last update may be short.

        Each rank reads a contiguous share of the update's sequences (as np.array_split cuts
        them), so k ranks read exactly the windows one process reads, at the same steps. A rank
        whose share is empty (an update of fewer sequences than ranks) still takes part in the
        gradient's all-reduce, with one window that counts for nothing (0 scored targets). Every
        rank runs the same number of micro-batches (FSDP gathers parameters in each one's
        forward and backward, so the ranks' collectives must pair up): a shorter share is
        padded with such windows.
        """
        first_seq = step * self.batch_size
        n_seq = min(self.batch_size, self.n_seq_total - first_seq)
        base, extra = divmod(n_seq, self.world)
        lo = self.rank * base + min(self.rank, extra)
        hi = lo + base + (self.rank < extra)
        empty = hi == lo
        if empty:
            lo, hi = n_seq - 1, n_seq
        # Through the module's gather_windows (tests spy on it), looked up at each call.
        windows = gather_windows(
            self.tokens, self.order.window_starts(first_seq + lo, hi - lo), self.seq_len
        )
        # Causal: next tokens; masked LM: masked inputs, targets only at the chosen positions.
        x, y = self.objective.batch(windows, first_seq + lo, self.device)
        m = self.micro_batch_size or (hi - lo)
        widest = -(-n_seq // self.world)  # the largest share, in sequences
        n_micro = -(-widest // self.micro_batch_size) if self.micro_batch_size else 1
        micro = []
        for i in range(0, hi - lo, m):
            xi, yi = x[i : i + m], y[i : i + m]
            scored = (yi != IGNORE_INDEX).sum() * (not empty)
            micro.append((xi, yi, scored))
        while len(micro) < n_micro:  # padding: a window that counts for nothing
            micro.append((x[:1], y[:1], (y[:1] != IGNORE_INDEX).sum() * 0))
        return micro, n_seq

    def tokens_done(self, step: int) -> int:
        """Tokens trained after ``step`` updates (the metrics' tokens column)."""
        return min(step * self.batch_size, self.n_seq_total) * self.seq_len


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The fixed held-out windows as (inputs, targets), and the bytes of each token id."""

    inputs: torch.Tensor
    targets: torch.Tensor
    token_bytes: torch.Tensor


def load_data(
    spec: RunSpec,
    corpus: Corpus,
    device: torch.device,
    *,
    rank: int = 0,
    world: int = 1,
    micro_batch_size: int = 0,
) -> tuple[Batches, HeldOut]:
    """This rank's training batches and the held-out windows."""
    seq_len = spec.data.seq_len
    # The whole training split, or its first data.unique_tokens tokens (repeated data).
    order = training_order(spec.data, corpus.n_train_tokens, spec.seed)
    if order.n_windows < 1:
        raise RuntimeError(
            f"the training split has {corpus.n_train_tokens} tokens, under one sequence"
        )
    train_tokens = corpus.train_tokens()
    val_tokens = corpus.val_tokens()
    n_eval = spec.data.eval_tokens // seq_len
    if (val_tokens.size - 1) // seq_len < n_eval:
        raise RuntimeError(
            f"data.eval_tokens = {spec.data.eval_tokens} exceeds the {val_tokens.size} "
            "held-out tokens"
        )
    # Held-out windows as (inputs, targets): for a masked LM under one fixed mask, the same for
    # every run and every evaluation (harness.objectives).
    eval_inputs, eval_targets = eval_objective(spec).batch(
        gather_windows(val_tokens, np.arange(n_eval, dtype=np.int64) * seq_len, seq_len),
        0,
        device,
    )
    batches = Batches(
        tokens=train_tokens,
        order=order,
        objective=training_objective(spec),
        seq_len=seq_len,
        batch_size=spec.train.batch_size,
        n_seq_total=spec.n_tokens // seq_len,
        device=device,
        rank=rank,
        world=world,
        micro_batch_size=micro_batch_size,
    )
    token_bytes = torch.from_numpy(corpus.token_n_bytes()).to(device)
    return batches, HeldOut(eval_inputs, eval_targets, token_bytes)
