"""Learning-rate schedules: the rate of every update of a run, from its settings alone.

Torch-free, so that the analysis can rebuild a run's schedule from its spec.json (the loss-curve
laws of `harness.analysis.curves` are functions of it) on a machine without torch.
"""

from __future__ import annotations

import math
from typing import Literal

from harness.grid import RunSpec
from harness.wsd import wsd_decay_steps

__all__ = [
    "eval_steps",
    "lr_at_step",
    "peak_lr",
    "spec_lr_at_step",
    "spec_lrs",
    "task_eval_steps",
    "warmup_for",
    "warmup_steps",
]


def peak_lr(spec: RunSpec) -> float:
    """Width-dependent peak learning rate: lr * (lr_ref_width / n_embd) ** lr_width_exponent."""
    t = spec.train
    return t.lr * (t.lr_ref_width / spec.model.n_embd) ** t.lr_width_exponent


def warmup_steps(spec: RunSpec) -> int:
    """Warmup updates: ceil(train.warmup_tokens / batch tokens), the same for every D (what lets
    WSD runs of one size share their stable phase); with warmup_tokens = 0, warmup_fraction of
    the run's own steps. At least one."""
    t = spec.train
    return warmup_for(spec.n_steps, spec.batch_tokens, t.warmup_tokens, t.warmup_fraction)


def warmup_for(
    n_steps: int, batch_tokens: int, warmup_tokens: float, warmup_fraction: float
) -> int:
    """`warmup_steps` of a run of ``n_steps`` updates of ``batch_tokens`` tokens."""
    if warmup_tokens > 0:
        return max(1, math.ceil(warmup_tokens / batch_tokens))
    return max(1, math.ceil(warmup_fraction * n_steps))


def lr_at_step(
    step: int,
    *,
    total_steps: int,
    warmup: int,
    peak: float,
    min_ratio: float,
    schedule: Literal["cosine", "wsd", "constant"] = "cosine",
    decay_fraction: float = 0.2,
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt",
) -> float:
    """Learning rate for the update at ``step`` (0-based) of a run of ``total_steps`` updates.

    Every schedule starts with a linear warmup, peak * (step + 1) / warmup.

    - 'cosine': after the warmup a half cosine from ``peak`` down to ``peak * min_ratio``,
      reached exactly at the last step, ``total_steps - 1`` (Hoffmann et al. 2022).
    - 'constant': ``peak`` after the warmup.
    - 'wsd' (warmup-stable-decay; Hagele et al. 2024, sec. 3, eq. for the (1-sqrt) cooldown):
      ``peak`` until the last k = round(decay_fraction * total_steps) updates, which cool down
      with progress p = (step - (total_steps - k) + 1) / k in (0, 1] to
      peak * (min_ratio + (1 - min_ratio) * (1 - p)) ('linear') or
      peak * (min_ratio + (1 - min_ratio) * (1 - sqrt(p))) ('1-sqrt'), so the last update uses
      exactly peak * min_ratio (as the cosine does; the paper's code counts p from 0 and stops
      one step short of its floor). A run so short that its warmup reaches into its cooldown
      takes the lower of the two factors at each step.
    """
    if schedule == "cosine":
        if step < warmup:
            return peak * (step + 1) / warmup
        decay_steps = total_steps - 1 - warmup
        progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup) / decay_steps)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    ramp = min(1.0, (step + 1) / warmup)
    if schedule == "constant":
        return peak * ramp
    k = wsd_decay_steps(total_steps, decay_fraction)
    if step < total_steps - k:  # the stable phase
        return peak * ramp
    progress = min(1.0, (step - (total_steps - k) + 1) / k)
    shape = progress if decay_shape == "linear" else math.sqrt(progress)
    return peak * min(ramp, min_ratio + (1 - min_ratio) * (1 - shape))


def spec_lr_at_step(spec: RunSpec, step: int) -> float:
    """`lr_at_step` with the run's own settings."""
    t = spec.train
    return lr_at_step(
        step,
        total_steps=spec.n_steps,
        warmup=warmup_steps(spec),
        peak=peak_lr(spec),
        min_ratio=t.min_lr_ratio,
        schedule=t.schedule,
        decay_fraction=t.decay_fraction,
        decay_shape=t.decay_shape,
    )


def spec_lrs(spec: RunSpec) -> list[float]:
    """The learning rate of each of the run's ``n_steps`` updates, in order."""
    return [spec_lr_at_step(spec, i) for i in range(spec.n_steps)]


def eval_steps(total_steps: int, n_evals: int) -> set[int]:
    """Steps (1-based count of updates done) after which to evaluate; always the last."""
    return {max(1, round(total_steps * k / n_evals)) for k in range(1, n_evals + 1)}


def task_eval_steps(spec: RunSpec) -> frozenset[int]:
    """Steps after which [eval]'s tasks are scored: every held-out evaluation's, or the last
    one (eval.when = 'end'); none without tasks."""
    if not spec.eval.tasks:
        return frozenset()
    if spec.eval.when == "end":
        return frozenset({spec.n_steps})
    return frozenset(eval_steps(spec.n_steps, spec.train.evals_per_run))
