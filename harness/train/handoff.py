"""WSD trunk sharing (`harness.wsd`): a trunk run hands each shorter branch its checkpoint at
the step where the branch's cooldown begins, with its metrics.csv so far; training the branch
afterwards resumes from there and does only its cooldown."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from harness.grid import RunSpec
from harness.rundir import RunDir
from harness.train.checkpoint import save_checkpoint
from harness.train.metrics import truncate_metrics
from harness.train.task_eval import truncate_task_rows
from harness.wsd import check_branch, decay_start

__all__ = ["hand_off", "pending_handoffs"]

log = logging.getLogger("harness.train")


def pending_handoffs(
    trunk: RunSpec, run: RunDir, branches: Sequence[RunSpec], step: int
) -> dict[int, list[RunSpec]]:
    """Branches still to be handed a checkpoint, by the trunk step at which they leave it.

    Left out: a branch whose decay starts at or before ``step`` (this trunk handed it off before
    the checkpoint it resumed from, or the branch is too short to share anything), and one that
    is finished or has a checkpoint at least that far (a hand-off of an earlier attempt, or a
    run of its own that got there); those train on from what they have.
    """
    out: dict[int, list[RunSpec]] = {}
    for branch in branches:
        check_branch(trunk, branch)
        at = decay_start(branch)
        if at <= step:
            continue
        branch_dir = run.sibling(branch.run_id)
        newest = branch_dir.newest_checkpoint_step()
        # An unreadable record counts as unfinished: the branch trains again anyway.
        if branch_dir.finished() is not None or (newest is not None and newest >= at):
            continue
        out.setdefault(at, []).append(branch)
    return out


def hand_off(branch: RunSpec, branch_dir: RunDir, state: dict[str, Any], trunk: RunDir) -> None:
    """Write ``branch``'s resumable checkpoint from its trunk's ``state``, its metrics.csv and
    its tasks.csv: the trunk's rows so far, which are this run's too (the same weights at every
    step)."""
    metrics = trunk.metrics_csv
    branch_dir.path.mkdir(parents=True, exist_ok=True)
    branch_dir.write_spec(branch)
    branch_dir.remove_stale_temp_files()
    if metrics.exists():
        truncate_metrics(metrics, state["step"], dest=branch_dir.metrics_csv)
    else:  # the trunk logged nothing yet: nothing of an earlier attempt of the branch stays
        branch_dir.metrics_csv.unlink(missing_ok=True)
    truncate_task_rows(trunk.tasks_csv, state["step"], dest=branch_dir.tasks_csv)
    inherited = {
        "run_id": branch.run_id,
        "wall_s": 0.0,
        "eval_s": 0.0,
        "tasks_s": 0.0,
        "data_s": 0.0,
        "inherited_wall_s": state["inherited_wall_s"] + state["wall_s"],
        "branched_from": state["run_id"],
        "branch_step": state["step"],
    }
    save_checkpoint(branch_dir, {**state, **inherited}, branch.train.checkpoint_keep)
    log.info("handed %s its checkpoint at step %d", branch.run_id, state["step"])
