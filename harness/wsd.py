"""Warmup-stable-decay (WSD) runs that share their stable phase (Hagele et al. 2024).

WSD (``train.schedule = "wsd"``) is a linear warmup, a constant peak learning rate, and a
cooldown over the last ``train.decay_fraction`` of the run's own steps
(`harness.schedules.lr_at_step`).
Two WSD runs that differ only in their token budget D (same shape, data, optimisation settings
and seed) compute exactly the same thing up to the step where the shorter one starts its
cooldown:

- the same initial weights (``torch.manual_seed(seed)`` before the model is built);
- the same batches: the stream of training windows (`harness.data.SequenceOrder`) and a masked
  LM's masks (`harness.objectives`) are pure functions of (seed, stream position), and every
  step before a cooldown holds a full batch;
- the same learning rate: a warmup of ``train.warmup_tokens`` (the same number of steps for
  every D; the config refuses WSD without it), then the constant peak.

So the longest run of such a group, the *trunk*, trains the stable phase once. When it has done
``decay_start(branch)`` updates it writes each shorter run's (each *branch*'s) resumable
checkpoint into that run's own directory, and the branch later resumes from it with the ordinary
resume logic and trains only its cooldown (Hagele et al. 2024, sec. 5: "scaling experiments can
be performed with significantly fewer ... FLOPs"). Every branch stays its own run, with its own
run_id, result.json and runs.csv row, equal to what it would be trained alone; its result.json
says which trunk it branched from and how many tokens it trained itself (`trained_tokens`).

This module holds the pure part (no torch): which runs form a group, where each branch starts,
and the order in which a launcher trains them.
"""

from __future__ import annotations

import hashlib
import json

from harness.grid import RunSpec

__all__ = [
    "check_branch",
    "decay_start",
    "inherited_tokens",
    "plan_trunks",
    "trunk_key",
    "wsd_decay_steps",
]


def wsd_decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Steps of a WSD run's cooldown: round(decay_fraction * total_steps), half up, in
    [1, total_steps]."""
    return min(total_steps, max(1, int(decay_fraction * total_steps + 0.5)))


def decay_start(spec: RunSpec) -> int:
    """The number of updates a WSD run does before its cooldown: where a branch leaves its trunk.

    total - round(f * total) never decreases as total grows (f <= 1), so a shorter run's
    cooldown never starts after a longer one's.
    """
    total = spec.n_steps
    return total - wsd_decay_steps(total, spec.train.decay_fraction)


def inherited_tokens(spec: RunSpec) -> int:
    """Training tokens a branch inherits from its trunk (all whole batches)."""
    return decay_start(spec) * spec.batch_tokens


def trunk_key(spec: RunSpec) -> str | None:
    """A key shared by the WSD runs that differ only in D; None for other schedules."""
    if spec.train.schedule != "wsd":
        return None
    identity = {k: v for k, v in spec.identity().items() if k != "n_tokens"}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_branch(trunk: RunSpec, branch: RunSpec) -> None:
    """Raise ValueError unless ``branch`` can start from ``trunk``'s checkpoint.

    Raises
    ------
    ValueError
        Not both WSD, settings other than D differ, or the branch is not shorter.
    """
    key = trunk_key(trunk)
    if key is None or trunk_key(branch) != key:
        raise ValueError(
            f"run {branch.run_id} cannot branch from {trunk.run_id}: both must be WSD runs that "
            "differ only in n_tokens"
        )
    if not branch.n_tokens < trunk.n_tokens:
        raise ValueError(
            f"run {branch.run_id} ({branch.n_tokens} tokens) cannot branch from the no longer "
            f"run {trunk.run_id} ({trunk.n_tokens} tokens)"
        )


def plan_trunks(specs: list[RunSpec]) -> tuple[list[RunSpec], dict[str, list[RunSpec]]]:
    """The order to train ``specs`` in, and the branches each trunk hands checkpoints to.

    Runs of one WSD group (`trunk_key`) come together where the group's first run stood: its
    longest run (the trunk) first, then the shorter ones in their given order. A run whose
    cooldown starts at step 0 gains nothing and is no branch. Other runs keep their place.

    Returns
    -------
    order : list of RunSpec
        The same runs, reordered.
    branches : dict
        trunk run_id -> its branches, for the trunks that have any.
    """
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        key = trunk_key(spec)
        if key is not None:
            groups.setdefault(key, []).append(spec)
    order: list[RunSpec] = []
    branches: dict[str, list[RunSpec]] = {}
    placed: set[str] = set()
    for spec in specs:
        key = trunk_key(spec)
        if key is None:
            order.append(spec)
            continue
        if key in placed:
            continue
        placed.add(key)
        group = groups[key]
        trunk = max(group, key=lambda s: (s.n_steps, s.n_tokens))
        rest = [s for s in group if s is not trunk]
        order += [trunk, *rest]
        served = [s for s in rest if decay_start(s) >= 1]
        if served:
            branches[trunk.run_id] = served
    return order, branches
