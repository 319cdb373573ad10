"""When a run counts as diverged: a non-finite loss, or a training loss that blows up."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DivergenceRule"]


@dataclass(frozen=True)
class DivergenceRule:
    """When a run counts as diverged (execution.diverge_*): a non-finite loss, or a logged
    training loss over ``factor * max(first-step loss, ln(vocab))`` for ``patience`` log
    intervals in a row. ln(vocab) is a uniform guess's loss, so such a model is confidently worse
    than knowing nothing; patience lets one spike that recovers pass. ``factor`` 0 turns the
    blow-up part off; a non-finite loss always ends the run."""

    factor: float
    patience: int
    uniform_loss: float  # ln(vocab_size): the loss of a uniform guess

    @staticmethod
    def non_finite_val(val_loss: float, step: int) -> str:
        return "" if math.isfinite(val_loss) else f"non-finite validation loss at step {step}"

    @staticmethod
    def non_finite_train(mean_loss: float, step: int, n_steps: int) -> str:
        if math.isfinite(mean_loss):
            return ""
        return f"non-finite training loss {mean_loss} in steps {step - n_steps + 1}..{step}"

    def blow_up(
        self, train_loss: float, initial_loss: float | None, over_count: int, step: int
    ) -> tuple[int, str]:
        """(intervals over the threshold in a row, including this one; the reason when that
        reaches ``patience``, else '')."""
        threshold = self.factor * max(initial_loss or 0.0, self.uniform_loss)
        over_count = over_count + 1 if train_loss > threshold else 0
        if over_count < self.patience:
            return over_count, ""
        return over_count, (
            f"training loss blew up: {train_loss:.4g} > {threshold:.4g} "
            f"(diverge_factor {self.factor:g} x max(first-step loss "
            f"{initial_loss:.4g}, ln(vocab) {self.uniform_loss:.4g})) for "
            f"{over_count} log interval(s), at step {step}"
        )
