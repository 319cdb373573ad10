"""One run's parts, set up once per process: its data, model, evaluation and rules, and the
checkpoint it resumes from."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

from harness.config import ExecutionConfig
from harness.data import Corpus, prepare_corpus
from harness.device import autocast_dtype, resolve_device
from harness.distributed import World, barrier, world
from harness.grid import RunSpec
from harness.results import ExperimentLayout
from harness.rundir import RunDir
from harness.schedules import eval_steps
from harness.tracking import RunTracker
from harness.train.batches import Batches, load_data
from harness.train.checkpoint import (
    Checkpointing,
    RngState,
    Stateful,
    load_latest_checkpoint,
    restore,
)
from harness.train.divergence import DivergenceRule
from harness.train.evaluation import Evaluation
from harness.train.learner import Learner, build_learner
from harness.train.metrics import METRICS_COLUMNS
from harness.train.state import Progress
from harness.train.task_eval import TaskEvaluation, metric_columns, task_evaluation

__all__ = ["Run", "resume", "set_up"]

log = logging.getLogger("harness.train")


@dataclass(frozen=True, eq=False)
class Run:
    """What one train() call works with: set up once, unchanged by the steps."""

    spec: RunSpec
    dir: RunDir
    device: torch.device
    compute_dtype: torch.dtype | None
    """What the matmuls run at: bf16, or None at fp32 (learner.autocast says how)."""
    learner: Learner
    batches: Batches
    evaluation: Evaluation
    divergence: DivergenceRule
    checkpointing: Checkpointing
    log_every: int
    world: World = World()
    tracker: RunTracker = dataclasses.field(default_factory=RunTracker)  # [tracking], rank 0
    tasks: TaskEvaluation | None = None  # [eval]

    @property
    def metrics_columns(self) -> list[str]:
        """metrics.csv's columns: the fixed ones, then each task's (TASK/METRIC)."""
        return METRICS_COLUMNS + (metric_columns(self.tasks.tasks) if self.tasks else [])

    def components(self, p: Progress) -> tuple[Stateful, ...]:
        """What a checkpoint keeps, in the order it is gathered (`checkpoint.gather`)."""
        return (p, self.learner, RngState(self.device))


def set_up(
    spec: RunSpec, run_dir: RunDir, execution: ExecutionConfig, corpus: Corpus | None
) -> Run:
    """The run directory, the data, the held-out batch, the model and its optimizer."""
    here = world()
    run_dir.path.mkdir(parents=True, exist_ok=True)
    if here.main:
        run_dir.write_spec(spec)
    if execution.threads > 0:
        torch.set_num_threads(execution.threads)
    layout = ExperimentLayout(run_dir.experiment_root)
    if corpus is None:  # rank 0 makes the cache entry (if none), then the others open it
        if here.main:
            corpus = prepare_corpus(spec.data, layout.cache_dir)
        barrier()
        corpus = corpus or prepare_corpus(spec.data, layout.cache_dir, build=False)
    device = resolve_device(execution, here)
    compute_dtype = autocast_dtype(spec, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The data first, then the seeded model: the order of the RNG's uses is the checkpoints'.
    batches, held_out = load_data(
        spec,
        corpus,
        device,
        rank=here.rank,
        world=here.size,
        micro_batch_size=execution.micro_batch_size,
    )
    learner = build_learner(
        spec, execution, device, execution.parallel if here.size > 1 else "none", compute_dtype
    )
    autocast = learner.autocast
    total_steps = spec.n_steps
    tasks = task_evaluation(
        spec,
        corpus,
        learner.model,
        learner.evaluator,
        device,
        autocast,
        # FSDP2's forward gathers the shards: every rank takes part, rank 0 writes.
        scores_here=here.main or learner.parallel == "fsdp",
    )
    return Run(
        spec=spec,
        dir=run_dir,
        device=device,
        compute_dtype=compute_dtype,
        learner=learner,
        batches=batches,
        evaluation=Evaluation(
            at=frozenset(eval_steps(total_steps, spec.train.evals_per_run)),
            forward=learner.evaluator,
            inputs=held_out.inputs,
            targets=held_out.targets,
            token_bytes=held_out.token_bytes,
            batch_size=spec.train.batch_size,
            autocast=autocast,
            device=device,
        ),
        divergence=DivergenceRule(
            factor=execution.diverge_factor,
            patience=execution.diverge_patience,
            uniform_loss=math.log(spec.model.vocab_size),
        ),
        checkpointing=Checkpointing(
            every_steps=spec.train.checkpoint_every_steps,
            every_s=execution.checkpoint_every_s,
            keep=spec.train.checkpoint_keep,
            total_steps=total_steps,
        ),
        log_every=max(1, total_steps // 100),
        world=here,
        tasks=tasks,
    )


def resume(run: Run) -> Progress:
    """The newest readable checkpoint loaded into the run's components, and the progress it
    holds; step 0 without one."""
    if run.world.main:
        run.dir.remove_stale_temp_files()
    barrier()  # no rank reads the checkpoints while rank 0 tidies them
    skipped: list[str] = []
    state = load_latest_checkpoint(run.dir, skipped)
    p = Progress(
        loss_acc=torch.tensor(0.0, dtype=torch.float64, device=run.device),
        run_id=run.spec.run_id,
        carries_loss=run.world.main,
        skipped_checkpoints=tuple(skipped),
    )
    if state is None:
        return p
    restore(run.components(p), state)
    log.info(
        "resuming %s at step %d of %d%s",
        run.spec.run_id,
        p.step,
        run.spec.n_steps,
        f" (branched from {p.branched_from} at step {p.branch_step})" if p.branched_from else "",
    )
    return p
