"""[eval]'s tasks scored during training (harness.train.task_eval): rows at each evaluation,
unchanged training, exact resume, one scorer in a distributed run, and collect's tasks.csv."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from _tiny import tiny_toml

from harness.config import load_experiment
from harness.grid import expand
from harness.results import TASKS_CSV_COLUMNS, collect
from harness.train import train

EVAL = '[eval]\ntasks = ["facts_kv"]\nlimit = 16'


def _spec(tmp_path: Path, extra: str = EVAL, n_tokens: str = "[4096]"):  # noqa: ANN202
    exp = load_experiment(tiny_toml(tmp_path, n_tokens=n_tokens, extra=extra))
    (spec,) = expand(exp)
    return exp, spec


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_task_rows_at_each_evaluation_and_training_unchanged(tmp_path: Path) -> None:
    exp, spec = _spec(tmp_path)
    run_dir = tmp_path / "a" / "runs" / spec.run_id
    result = train(spec, run_dir, execution=exp.execution)
    assert result is not None and result.tasks_s > 0 and result.eval_s > result.tasks_s
    with (run_dir / "tasks.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [8, 16] == sorted(int(m["step"]) for m in _metrics(run_dir) if m["val_loss"])
    assert {(r["metric"], r["n_examples"], r["chance"]) for r in rows} == {
        ("acc", "16", "0.25"),
        ("bpb", "16", ""),
    }
    # metrics.csv carries the same numbers on the evaluation rows, empty elsewhere.
    by_step = {int(m["step"]): m for m in _metrics(run_dir)}
    for r in rows:
        assert by_step[int(r["step"])][f"facts_kv/{r['metric']}"] == r["value"]
    assert all(m["facts_kv/acc"] == "" for s, m in by_step.items() if s not in steps)

    # The same run without [eval] (another run_id): every training number bit for bit equal.
    (tmp_path / "plain").mkdir()
    exp0, plain = _spec(tmp_path / "plain", extra="")
    assert plain.run_id != spec.run_id
    base = train(plain, tmp_path / "b" / "runs" / plain.run_id, execution=exp0.execution)
    assert base is not None and (base.val_loss, base.train_loss) == (
        result.val_loss,
        result.train_loss,
    )
    cols = ["step", "train_loss", "val_loss", "lr"]
    assert [[m[c] for c in cols] for m in _metrics(tmp_path / "b" / "runs" / plain.run_id)] == [
        [m[c] for c in cols] for m in _metrics(run_dir)
    ]


@pytest.mark.slow
def test_a_resumed_runs_task_scores_equal_an_uninterrupted_runs(tmp_path: Path) -> None:
    exp, spec = _spec(tmp_path)
    ref_dir = tmp_path / "a" / "runs" / spec.run_id
    assert train(spec, ref_dir, execution=exp.execution) is not None
    run_dir = tmp_path / "b" / "runs" / spec.run_id
    for _ in range(3):  # stopped three times, once just after a task evaluation
        assert train(spec, run_dir, execution=exp.execution, stop_after_steps=5) is None
    with (run_dir / "tasks.csv").open("a") as f:  # what a SIGKILL mid-append leaves
        f.write("16,4096,facts_kv,ac")
    assert train(spec, run_dir, execution=exp.execution) is not None
    assert (run_dir / "tasks.csv").read_bytes() == (ref_dir / "tasks.csv").read_bytes()
    task_cols = ["step", "facts_kv/acc", "facts_kv/bpb"]
    assert [[m[c] for c in task_cols] for m in _metrics(run_dir)] == [
        [m[c] for c in task_cols] for m in _metrics(ref_dir)
    ]


@pytest.mark.slow
def test_collect_writes_the_experiments_tasks_csv(tmp_path: Path) -> None:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[2048, 4096]", extra=EVAL))
    last = {}
    for spec in expand(exp):
        train(spec, exp.results_path / "runs" / spec.run_id, execution=exp.execution)
        last[spec.run_id] = spec.n_steps
    collect(exp.results_path)
    with (exp.results_path / "tasks.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == TASKS_CSV_COLUMNS
    assert len(rows) == 2 * 2 * 2  # 2 runs x 2 evaluations x (acc, bpb)
    for r in rows:
        assert r["final"] == str(int(int(r["step"]) == last[r["run_id"]]))
        assert int(r["n_tokens"]) == int(r["step"]) * 8 * 32  # tokens trained at that step
    from harness.analysis.taskscale import load_tasks

    assert len(load_tasks(exp.results_path / "tasks.csv")) == len(rows)


_COUNTING_UTILS = """
import os


def process_results(doc, results):
    # Appends a line per scored example: which process scored it.
    with open(os.path.join(os.path.dirname(__file__), "calls.txt"), "a") as f:
        f.write(f"{os.getpid()} {os.environ.get('RANK', '-')}\\n")
    lls = [r[0] for r in results]
    return {"acc": float(lls.index(max(lls)) == doc["label"])}
"""


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_distributed_run_scores_once(tmp_path: Path, parallel: str) -> None:
    """Two processes: under DDP rank 0 alone scores (lm-eval's own per-example hook counts the
    calls and names the process); under FSDP2 both ranks run the forward passes (they gather
    the shards) in step; either way tasks.csv is written once per evaluation."""
    from harness.execute.ranks import train_on_devices

    task_dir = tmp_path / "task"
    task_dir.mkdir()
    rows = [
        {"context": w, "endings": ["be", "or", "is"], "label": i % 3}
        for i, w in enumerate(["to", "not", "that", "the", "tis", "whether"])
    ]
    (task_dir / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (task_dir / "utils.py").write_text(_COUNTING_UTILS)
    (task_dir / "words.yaml").write_text(
        "task: words\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: words.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: context\n"
        "doc_to_choice: endings\ndoc_to_target: label\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    exp, spec = _spec(tmp_path, extra=f'[eval]\ntasks = ["{task_dir / "words.yaml"}"]')
    execution = dataclasses.replace(
        exp.execution, device="cpu", devices_per_run=2, parallel=parallel
    )
    run_dir = tmp_path / "runs" / spec.run_id
    result = train_on_devices(spec, run_dir, execution)
    assert result is not None and result.world_size == 2
    calls = (task_dir / "calls.txt").read_text().split("\n")[:-1]
    scorers = {"ddp": {"0"}, "fsdp": {"0", "1"}}[parallel]
    assert {c.split()[1] for c in calls} == scorers
    for rank in scorers:  # two evaluations, each example once by each scoring rank
        assert sum(c.split()[1] == rank for c in calls) == 2 * len(rows)
    with (run_dir / "tasks.csv").open(newline="") as f:
        written = list(csv.DictReader(f))
    assert [(r["step"], r["metric"]) for r in written] == [
        ("8", "acc"),
        ("8", "bpb"),
        ("16", "acc"),
        ("16", "bpb"),
    ]
