"""The held-out evaluation: the loss (nats per scored token) and bits per byte on the
experiment's fixed held-out windows, after a few steps of each run and after its last."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.objectives import IGNORE_INDEX

__all__ = ["Evaluation", "evaluate"]


# inference_mode, not no_grad: it also skips the version counters and view tracking that only
# autograd needs, which made the CPU evaluation 1.2x faster at the shapes of the 4 x 4 cosine
# grid (the same sums, bit for bit). Nothing it creates outlives the call (the model's tensors
# are not its own).
@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    token_bytes: torch.Tensor,
    batch_size: int,
    autocast: torch.dtype | None,
) -> tuple[float, float]:
    """Mean validation loss (nats per scored token) and bits per byte over the fixed held-out
    windows, as (inputs, targets) of `harness.objectives.eval_objective`. Targets equal to
    IGNORE_INDEX (a masked LM's unchosen positions) score nothing, and their bytes do not count."""
    model.eval()
    device = inputs.device
    # Summed on the device and read back once (no host sync per batch); float64 gives the same
    # number as summing the batches' float32 sums as Python floats.
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.int64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, inputs.shape[0], batch_size):
        x, y = inputs[i : i + batch_size], targets[i : i + batch_size]
        with torch.autocast(
            device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            logits = model(input_ids=x).logits
        nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        total_nats += nats
        scored = y != IGNORE_INDEX  # cross_entropy's default ignore_index skips the rest
        total_tokens += scored.sum()
        # Not token_bytes[y[scored]]: a boolean index sizes its output on the host (a sync).
        total_bytes += (token_bytes[y.clamp_min(0)] * scored).sum()
    model.train()
    nats_sum, n_tokens, n_bytes = float(total_nats), int(total_tokens), int(total_bytes)
    # A corpus of token ids without a tokenizer knows no bytes: no bits per byte (nan).
    bpb = nats_sum / (math.log(2) * n_bytes) if n_bytes else math.nan
    return nats_sum / n_tokens, bpb


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The held-out evaluation: the fixed windows, and the steps after which it runs."""

    at: frozenset[int]
    forward: Callable[..., Any]
    inputs: torch.Tensor
    targets: torch.Tensor
    token_bytes: torch.Tensor
    batch_size: int
    autocast: torch.dtype | None
    device: torch.device

    def run(self) -> tuple[float, float, float]:
        """(val_loss, val_bpb, seconds it took)."""
        if self.device.type == "cuda":  # the queued training steps are not the evaluation's
            torch.cuda.synchronize(self.device)
        t_eval = time.perf_counter()
        val_loss, val_bpb = evaluate(
            self.forward,
            self.inputs,
            self.targets,
            self.token_bytes,
            self.batch_size,
            self.autocast,
        )
        return val_loss, val_bpb, time.perf_counter() - t_eval
