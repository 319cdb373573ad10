"""Where a run stands: the step, the loss being averaged, the divergence rule's counters and
the time spent, kept by a checkpoint (the loop's component of it) so that a resumed run
continues the same computation and its records add up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from harness.distributed import sum_across

__all__ = ["Progress"]


@dataclass
class Progress:
    """The loop's state. `state_dict` and `load_state_dict` list what a checkpoint keeps; the
    rest is this process's own."""

    # The training loss is summed on the device and read back only at log rows, evaluations
    # and checkpoints: a read each step would make the host wait for the device every step (on
    # a GPU, the next step's kernels could not be queued while this one runs). float64 makes
    # the sum the same number a Python float sum of the per-step losses gives.
    loss_acc: torch.Tensor
    run_id: str = ""
    step: int = 0
    wall_before: float = 0.0  # wall_s, eval_s and data_s of the earlier processes of this run
    eval_before: float = 0.0
    tasks_before: float = 0.0
    data_before: float = 0.0
    # A WSD branch's start (harness.wsd): its trunk's wall time so far (the metrics' wall_s
    # column goes on from it; result.json's wall_s is the run's own) and the trunk's run_id.
    inherited_wall: float = 0.0
    branched_from: str | None = None
    branch_step: int = 0
    # The divergence rule's and the logged average's state, so a resume changes nothing.
    initial_loss: float | None = None
    loss_count: int = 0
    over_count: int = 0
    # This process's own.
    carries_loss: bool = True  # rank 0 carries the logged interval's loss across a resume
    t_loop: float = 0.0  # perf_counter when this process's first step began
    t_last_ckpt: float = 0.0
    eval_s: float = 0.0  # this process's evaluations (held-out loss and tasks)
    tasks_s: float = 0.0  # this process's task evaluations ([eval]), part of eval_s
    data_s: float = 0.0  # this process's batch making
    steps_this_process: int = 0
    val_loss: float | None = None
    val_bpb: float | None = None
    train_loss: float | None = None  # the last finite logged mean
    status: Literal["done", "diverged"] = "done"
    reason: str = ""
    skipped_checkpoints: tuple[str, ...] = ()  # unreadable ones passed over at resume

    def wall_s(self) -> float:
        """The run's training wall time so far, over all its processes."""
        return self.wall_before + time.perf_counter() - self.t_loop

    def state_dict(self) -> dict[str, Any]:
        # First: on a GPU this waits for the queued steps. Summed over ranks (a copy: the
        # running sum stays each rank's own until its log row).
        loss_sum = float(sum_across(self.loss_acc.clone()))
        return {
            "step": self.step,
            "wall_s": self.wall_s(),
            "eval_s": self.eval_before + self.eval_s,
            "tasks_s": self.tasks_before + self.tasks_s,
            "data_s": self.data_before + self.data_s,
            "run_id": self.run_id,
            "initial_loss": self.initial_loss,
            "loss_sum": loss_sum,
            "loss_count": self.loss_count,
            "over_count": self.over_count,
            "inherited_wall_s": self.inherited_wall,
            "branched_from": self.branched_from,
            "branch_step": self.branch_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The defaults: checkpoints written before the field existed.
        # The logged interval's loss so far, summed over ranks: rank 0 carries it on.
        loss_sum = float(state.get("loss_sum", 0.0)) if self.carries_loss else 0.0
        self.loss_acc = torch.tensor(loss_sum, dtype=torch.float64, device=self.loss_acc.device)
        self.step = int(state["step"])
        self.wall_before = float(state["wall_s"])
        self.eval_before = float(state.get("eval_s", 0.0))
        self.tasks_before = float(state.get("tasks_s", 0.0))
        self.data_before = float(state.get("data_s", 0.0))
        self.inherited_wall = float(state.get("inherited_wall_s", 0.0))
        self.branched_from = state.get("branched_from")
        self.branch_step = int(state.get("branch_step", 0))
        self.initial_loss = state.get("initial_loss")
        self.loss_count = int(state.get("loss_count", 0))
        self.over_count = int(state.get("over_count", 0))
