"""Training objectives: the causal next-token loss and BERT's masked-token loss.

Both turn the training windows of `harness.data.SequenceOrder` (seq_len + 1 tokens each) into
model inputs and targets; the loss is then the same cross-entropy for both, over the targets
that are not `IGNORE_INDEX`:

- causal (llama, gpt2): inputs are the first seq_len tokens, targets the next token at each
  position; every position scores.
- masked (bert, modernbert; Devlin et al. 2019, sec. 3.1 and appendix A.1): inputs are the
  same first seq_len tokens. In each window round(mask_fraction * seq_len) positions (at least
  one) are chosen for prediction, as BERT's own create_pretraining_data does; of those, 80% are
  replaced by the [MASK] token, 10% by a token drawn uniformly from the real vocabulary, and 10%
  are left as they are. Only the chosen positions score, against the original token.

The masked LM reads the same windows, in the same order, as a causal run of the same seed, so
D (input tokens) means the same for both. Its mask is a pure function of (seed, stream
position), like the data order: a window at stream position p is masked with a generator
seeded by (tag, seed, p), so a resumed run masks exactly as an uninterrupted one, and a second
epoch masks each window afresh (RoBERTa's dynamic masking, Liu et al. 2019). transformers'
`DataCollatorForLanguageModeling` draws from torch's global generator and needs a transformers
tokenizer, so it can give neither; hence this small numpy version.

Evaluation scores the experiment's fixed held-out windows under one fixed mask (seed-free:
the same for every run and every evaluation), so masked losses compare across the grid.
Bits per byte of a masked LM count only the bytes of the scored (chosen) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - torch stays a lazy import (results.py uses this module)
    import torch

    from harness.grid import RunSpec

__all__ = [
    "IGNORE_INDEX",
    "CausalLM",
    "MaskedLM",
    "ObjectiveName",
    "eval_objective",
    "n_predictions",
    "objective_name",
    "training_objective",
]

ObjectiveName = Literal["causal", "mlm"]

IGNORE_INDEX = -100
"""Target of a position that does not score: `torch.nn.functional.cross_entropy`'s default
ignore_index, so the causal and the masked loss are one call."""

# BERT's 80/10/10 rule for the chosen positions (Devlin et al. 2019, sec. 3.1).
MASK_TOKEN_SHARE = 0.8
RANDOM_TOKEN_SHARE = 0.1

# Generator keys: (tag, seed, stream position). Distinct tags keep the training masks, the
# evaluation mask and the data order (SequenceOrder seeds with [seed, epoch]) independent.
_TRAIN_TAG = 0x6D6C6D  # "mlm"
_EVAL_TAG = 0x6576616C  # "eval"


def objective_name(arch: str) -> ObjectiveName:
    """'mlm' for the encoders (bert, modernbert); 'causal' for the decoders."""
    return "mlm" if arch in ("bert", "modernbert") else "causal"


def n_predictions(seq_len: int, mask_fraction: float) -> int:
    """Positions chosen per window: round(mask_fraction * seq_len), at least 1, half up."""
    return max(1, min(seq_len, int(mask_fraction * seq_len + 0.5)))


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array as a tensor on ``device``. To a GPU through pinned (page-locked) host memory,
    so the copy is a DMA queued on the stream and the host goes on to queue the step's kernels
    (torch's caching host allocator reuses the pinned buffers from step to step)."""
    import torch

    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass(frozen=True)
class CausalLM:
    """Next-token prediction: inputs w[:, :-1], targets w[:, 1:]."""

    def batch(
        self, windows: np.ndarray, first: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (count, seq_len), of the windows at stream positions
        first .. first + count - 1 (the positions do not matter here)."""
        b = to_device(windows, device)
        return b[:, :-1], b[:, 1:]


@dataclass(frozen=True)
class MaskedLM:
    """BERT's masked-token objective over windows of seq_len + 1 tokens (the last is unused).

    Attributes
    ----------
    vocab_size : int
        The model's vocabulary, [MASK] included: [MASK] is vocab_size - 1, and random
        replacements are drawn from the real tokens 0 .. vocab_size - 2.
    mask_fraction : float
        Share of positions chosen for prediction (TrainConfig.mask_fraction).
    seed : int
        The run's seed (training) or 0 (the fixed evaluation mask).
    tag : int
        Separates the training masks from the evaluation mask.
    """

    vocab_size: int
    mask_fraction: float
    seed: int
    tag: int = _TRAIN_TAG

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    def mask(self, tokens: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Mask the (count, seq_len) `tokens` of the windows at stream positions first ...

        Returns
        -------
        inputs : (count, seq_len) int64, with the chosen positions replaced by the 80/10/10 rule
        targets : (count, seq_len) int64, the original token at chosen positions, else
            IGNORE_INDEX
        """
        count, seq_len = tokens.shape
        k = n_predictions(seq_len, self.mask_fraction)
        inputs = np.array(tokens, dtype=np.int64)
        targets = np.full((count, seq_len), IGNORE_INDEX, dtype=np.int64)
        rows = np.arange(count)[:, None]
        # One small generator per window (about 20 us): what makes the mask a function of the
        # window's stream position alone, whatever the batch size or the resume point.
        chosen = np.empty((count, k), dtype=np.int64)
        u = np.empty((count, k))
        random_ids = np.empty((count, k), dtype=np.int64)
        for i in range(count):
            rng = np.random.default_rng([self.tag, self.seed, first + i])
            chosen[i] = rng.choice(seq_len, size=k, replace=False)
            u[i] = rng.random(k)
            random_ids[i] = rng.integers(0, self.mask_id, size=k)
        targets[rows, chosen] = inputs[rows, chosen]
        to_mask = u < MASK_TOKEN_SHARE
        to_random = (u >= MASK_TOKEN_SHARE) & (u < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
        inputs[rows.repeat(k, 1)[to_mask], chosen[to_mask]] = self.mask_id
        inputs[rows.repeat(k, 1)[to_random], chosen[to_random]] = random_ids[to_random]
        return inputs, targets

    def batch(
        self, windows: np.ndarray, first: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (count, seq_len), of the (count, seq_len + 1) `windows` at
        stream positions first .. first + count - 1."""
        inputs, targets = self.mask(windows[:, :-1], first)
        return to_device(inputs, device), to_device(targets, device)


def training_objective(spec: RunSpec) -> CausalLM | MaskedLM:
    """The run's objective; a masked LM masks with the run's own seed."""
    if objective_name(spec.model.arch) == "causal":
        return CausalLM()
    return MaskedLM(
        vocab_size=spec.model.vocab_size, mask_fraction=spec.train.mask_fraction, seed=spec.seed
    )


def eval_objective(spec: RunSpec) -> CausalLM | MaskedLM:
    """The objective the held-out windows are scored with: for a masked LM one fixed mask
    (seed 0, its own tag), the same for every run and every evaluation of an experiment."""
    if objective_name(spec.model.arch) == "causal":
        return CausalLM()
    return MaskedLM(
        vocab_size=spec.model.vocab_size,
        mask_fraction=spec.train.mask_fraction,
        seed=0,
        tag=_EVAL_TAG,
    )
