"""Fault injection: runs SIGKILLed at random points resume to the uninterrupted result, bit for bit.

Each attempt trains in a forked child (torch is already imported, so an attempt costs
milliseconds, not an interpreter start). Three runs are killed at step boundaries drawn from a
seeded generator: the child SIGKILLs itself before that step's checkpoint is written, so
finished steps are lost and must be recomputed identically. With checkpoints every 3 steps and
kill points 1..5 steps after each restart, an attempt saves at most 3 steps, so these runs take
at least ceil((steps - 4) / 3) kills each: 27 or more in all, whatever the machine's speed. The
first run is killed by the parent on a wall clock, landing anywhere: mid-step, mid-checkpoint-write,
mid-metrics-append.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import load_experiment
from harness.grid import RunSpec, expand
from harness.results import collect
from harness.rundir import RunDir
from harness.train import train

torch.set_num_threads(1)

EXP = """
[data]
corpus = "{corpus}"
seq_len = 32
val_block_bytes = 1024
eval_tokens = 1024
[train]
batch_size = 4
lr = 1e-2
checkpoint_every_steps = 3
checkpoint_keep = 2
evals_per_run = 2
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}, {{n_layer = 2, n_embd = 32}}]
n_tokens = [3072, 4096]
[execution]
threads = 1
progress = false
results_dir = "{results}"
"""


def _child(spec: RunSpec, run_dir: Path, execution: object, kill_at_step: int | None) -> None:
    steps = 0

    def should_stop() -> bool:
        nonlocal steps
        steps += 1
        if kill_at_step is not None and steps >= kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no checkpoint, no flush
        return False

    train(spec, run_dir, execution=execution, should_stop=should_stop)  # type: ignore[arg-type]


@pytest.mark.slow
def test_random_sigkills_never_change_the_result(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    rng_text = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    corpus.write_text("\n".join(" ".join(rng_text.choice(words, 10)) for _ in range(2000)))
    toml = tmp_path / "faults.toml"

    def experiment(results: Path):
        toml.write_text(EXP.format(corpus=corpus, results=results))
        return load_experiment(toml)

    ref_exp = experiment(tmp_path / "ref")
    specs = expand(ref_exp)
    assert len(specs) == 4 and all(24 <= s.n_steps <= 32 for s in specs)
    reference = {}
    for spec in specs:
        r = train(spec, ref_exp.results_path / "runs" / spec.run_id, execution=ref_exp.execution)
        assert r is not None and r.status == "done"
        reference[spec.run_id] = (r.val_loss, r.train_loss)

    exp = experiment(tmp_path / "faulty")
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(20261128)
    step_kills = timed_kills = 0
    for i, spec in enumerate(specs):
        run_dir = exp.results_path / "runs" / spec.run_id
        timed = i == 0  # the 24-step run; the others need 10 + 7 + 10 kills at least
        attempts = 0
        while RunDir(run_dir).state() != "done":
            attempts += 1
            assert attempts < 100, "a run made no progress across 100 attempts"
            kill_at = None if timed else int(rng.integers(1, 6))
            p = ctx.Process(target=_child, args=(spec, run_dir, exp.execution, kill_at))
            p.start()
            if timed:
                p.join(timeout=float(rng.uniform(0.02, 0.3)))
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
                    timed_kills += 1
            p.join()
            if p.exitcode == -signal.SIGKILL and not timed:
                step_kills += 1
            elif p.exitcode not in (0, -signal.SIGKILL):
                raise AssertionError(f"attempt ended with exit code {p.exitcode}")
    assert step_kills >= 27, (step_kills, timed_kills)

    csv_path, counts = collect(exp.results_path)
    assert counts["done"] == 4 and counts["failed"] == 0
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(reference)  # none lost, none twice
    for row in rows:
        val_loss, train_loss = reference[row["run_id"]]
        assert float(row["loss"]) == val_loss  # identical, not close
        assert float(row["train_loss"]) == train_loss
    for spec in specs:  # the metrics log holds each logged step once, in order
        with (exp.results_path / "runs" / spec.run_id / "metrics.csv").open() as f:
            steps = [int(r["step"]) for r in csv.DictReader(f)]
        assert steps == sorted(set(steps)) and steps[-1] == spec.n_steps
