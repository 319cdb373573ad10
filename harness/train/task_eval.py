"""[eval]'s tasks scored during training (`harness.evals`): at each held-out evaluation (or
after the last step), on the model as it is at that step, and written to the run's tasks.csv
(a row per task and metric) and to its metrics.csv row.

The run's tasks.csv is appended as the run trains and cut back to the checkpoint's step when
the run resumes, as metrics.csv is: a resumed run's rows equal an uninterrupted run's (the
same weights at every step, the same examples and few-shot draw). In a distributed run rank 0
scores alone (its replica under DDP); under FSDP2 the forward passes gather every rank's shard,
so every rank computes the same scores in step and rank 0 alone writes them.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write
from harness.config import EvalConfig
from harness.data import Corpus
from harness.evals.scoring import InMemoryLM, TaskScore, column, score
from harness.evals.tasks import LoadedTask, load
from harness.grid import RunSpec
from harness.schedules import task_eval_steps
from harness.tokenizer import eos_token_id, is_pretrained, text_encoder

__all__ = [
    "TASK_ROW_COLUMNS",
    "TaskEvaluation",
    "TaskScore",
    "append_task_rows",
    "metric_columns",
    "task_evaluation",
    "truncate_task_rows",
]

TASK_ROW_COLUMNS = ["step", "tokens", "task", "metric", "value", "chance", "n_examples"]
"""A run's tasks.csv."""


def metric_columns(tasks: tuple[LoadedTask, ...]) -> list[str]:
    """The metrics.csv columns of the tasks: TASK/METRIC each."""
    return [column(t.name, m) for t in tasks for m in t.metrics]


@dataclass(frozen=True, eq=False)
class TaskEvaluation:
    """The tasks, the model interface scoring them, and the steps after which they run."""

    at: frozenset[int]
    tasks: tuple[LoadedTask, ...]
    lm: InMemoryLM
    cfg: EvalConfig
    scores_here: bool
    """Whether this process scores (rank 0; every rank under FSDP2)."""
    model: torch.nn.Module

    def run(self) -> tuple[list[TaskScore], float]:
        """(the scores, seconds it took); no scores on a rank that does not score."""
        if not self.scores_here:
            return [], 0.0
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)
        t0 = time.perf_counter()
        self.model.eval()
        try:
            scores = score(self.lm, self.tasks, self.cfg)
        finally:
            self.model.train()
        return scores, time.perf_counter() - t0


def _encoder(spec: RunSpec, corpus: Corpus) -> tuple[Callable[[str], list[int]], int]:
    """(text -> token ids, the id lm-eval puts before an empty context) of the run's tokenizer:
    its end-of-text token, else a newline's first token (what ends each line)."""
    name = spec.data.tokenizer
    bpe = corpus.directory / "tokenizer.json" if name == "bpe" else None
    encode = text_encoder(name, bpe)
    eot = eos_token_id(name) if is_pretrained(name) else None
    return encode, eot if eot is not None else encode("\n")[0]


def task_evaluation(
    spec: RunSpec,
    corpus: Corpus,
    model: torch.nn.Module,
    forward: Any,
    device: torch.device,
    autocast: torch.dtype | None,
    scores_here: bool,
) -> TaskEvaluation | None:
    """The run's task evaluation, or None without [eval] tasks."""
    cfg = spec.eval
    if not cfg.tasks:
        return None
    tasks = tuple(load(cfg)) if scores_here else ()
    encode, eot = _encoder(spec, corpus)
    lm = InMemoryLM(
        forward, encode, eot, spec.data.seq_len, device, cfg.batch_size, autocast=autocast
    )
    return TaskEvaluation(task_eval_steps(spec), tasks, lm, cfg, scores_here, model)


def append_task_rows(path: Path, step: int, tokens: int, scores: list[TaskScore]) -> None:
    """One evaluation's rows, floats exactly (repr round-trips)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(TASK_ROW_COLUMNS)
        for s in scores:
            chance = "" if s.chance is None else repr(s.chance)
            w.writerow([step, tokens, s.task, s.metric, repr(s.value), chance, s.n_examples])


def truncate_task_rows(path: Path, last_step: int, dest: Path | None = None) -> None:
    """Keep the rows up to ``last_step`` (written to ``dest`` where given: a WSD branch's)."""
    if not path.exists():
        if dest is not None:
            dest.unlink(missing_ok=True)
        return
    with path.open(newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if None not in r.values() and r["step"].isdigit() and int(r["step"]) <= last_step
        ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TASK_ROW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # as append_task_rows wrote them: the same bytes
    atomic_write(dest or path, lambda f: f.write(buf.getvalue().encode()))
