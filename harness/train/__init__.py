"""Train one run: ``train(spec, run_dir) -> RunResult``, resuming from its own checkpoint.

The loop is AdamW with linear warmup and a cosine decay that ends exactly at this run's last
step (Hoffmann et al. 2022: a schedule longer than the run overestimates its loss), global
gradient clipping, validation on the experiment's fixed held-out tokens a few times per run and
at the end. A non-finite loss, or a training loss that blows up past
``execution.diverge_factor * max(first-step loss, ln(vocab_size))`` for
``execution.diverge_patience`` log intervals in a row, ends the run as ``diverged`` (with the step
and the reason) rather than raising. A full disk while writing a checkpoint fails the run with a
one-line message and leaves the previous checkpoint as it was.

Everything the run does is a function of its spec and its position, so a checkpoint holds the
model, the optimizer, the step and the RNG states, and resuming continues the same computation.

The parts, each with its own state (read `loop` first):

- `loop`: `train` and the step, top to bottom;
- `run`: the parts set up once per process, and the resume;
- `batches`: the training batches and held-out windows; `evaluation`: the held-out loss;
- `learner`: the model, its optimizer and its parallelism (DDP, FSDP2);
- `state`: where the run stands (`Progress`); `checkpoint`: the files and the state gathered
  from the components; `metrics`: metrics.csv; `divergence`: when a run has diverged;
- `handoff`: WSD trunk sharing; `result`: result.json. The device and precision choice is
  `harness.device`'s, the learning-rate schedule `harness.schedules`'.
"""

from harness.device import resolve_device
from harness.schedules import lr_at_step, peak_lr
from harness.train.checkpoint import (
    DiskFullError,
    load_latest_checkpoint,
    save_checkpoint,
    torch_save_atomic,
)
from harness.train.evaluation import evaluate
from harness.train.loop import train
from harness.train.result import RunResult, git_sha

__all__ = [
    "DiskFullError",
    "RunResult",
    "evaluate",
    "git_sha",
    "load_latest_checkpoint",
    "lr_at_step",
    "peak_lr",
    "resolve_device",
    "save_checkpoint",
    "torch_save_atomic",
    "train",
]
