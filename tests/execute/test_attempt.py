"""One attempt at a run and its retries (harness.execute.attempt), with a stand-in trainer: the
lifecycle every scheduler shares, checked without training a model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from _tiny import tiny_toml

from harness.config import ExecutionConfig, load_experiment
from harness.execute.attempt import Outcome, attempt, attempts
from harness.execute.locks import RunLock
from harness.grid import RunSpec, expand
from harness.results import ExperimentLayout
from harness.rundir import RunDir


@dataclasses.dataclass(frozen=True)
class _Result:
    status: str
    val_loss: float | None
    wall_s: float = 1.5
    skipped_checkpoints: tuple[str, ...] = ()


def _setup(tmp_path: Path, retries: int = 2) -> tuple[RunSpec, ExperimentLayout, ExecutionConfig]:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[1024]"))
    (spec,) = expand(exp)
    exe = dataclasses.replace(exp.execution, diverge_retries=retries, diverge_lr_factor=0.5)
    return spec, ExperimentLayout(tmp_path / "results" / "tiny"), exe


def _trainer(
    statuses: dict[float, str], calls: list[str]
) -> Callable[[RunSpec, Path, ExecutionConfig, Sequence[RunSpec], Callable[[], bool]], Any]:
    """Ends each run as ``statuses[its lr]`` says, writing result.json as train() does."""

    def train(
        spec: RunSpec,
        run_dir: Path,
        exe: ExecutionConfig,
        branches: Sequence[RunSpec],
        should_stop: Callable[[], bool],
    ) -> _Result:
        calls.append(spec.run_id)
        status = statuses[spec.train.lr]
        loss = 3.0 if status == "done" else None
        RunDir(run_dir).write_result({"run_id": spec.run_id, "status": status, "val_loss": loss})
        return _Result(status, loss)

    return train


def test_a_diverging_run_is_retried_at_lower_lr_until_it_trains(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path)
    lr = spec.train.lr
    calls: list[str] = []
    told: list[tuple[str, str]] = []
    train = _trainer({lr: "diverged", lr / 2: "diverged", lr / 4: "done"}, calls)
    outcomes = list(
        attempts(spec, layout, exe, train=train, on_retry=lambda r, of: told.append((r.run_id, of)))
    )
    assert [o.status for o in outcomes] == ["diverged", "diverged", "done"]
    assert outcomes[-1].val_loss == 3.0 and outcomes[-1].wall_s == 1.5
    assert len(set(calls)) == 3 and calls[0] == spec.run_id
    first, second = calls[1], calls[2]
    assert told == [(first, spec.run_id), (second, first)]
    assert layout.run(spec.run_id).read_result()["retried_as"] == first
    assert layout.run(first).spec().train.lr == pytest.approx(lr / 2)
    retry = json.loads(layout.run(second).retry_json.read_text())
    assert retry == {"retry_of": first, "retry": 2, "lr": pytest.approx(lr / 4)}


def test_retries_stop_at_diverge_retries(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path, retries=1)
    calls: list[str] = []
    statuses = dict.fromkeys([spec.train.lr, spec.train.lr / 2], "diverged")
    outcomes = list(attempts(spec, layout, exe, train=_trainer(statuses, calls)))
    assert [o.status for o in outcomes] == ["diverged", "diverged"] and len(calls) == 2


def test_a_finished_run_is_not_trained_again_but_its_unfinished_retry_is(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path)
    lr = spec.train.lr
    run = layout.run(spec.run_id)
    run.path.mkdir(parents=True)
    # Killed between the divergence and the retry's set-up: the retry is set up now.
    run.write_result({"run_id": spec.run_id, "status": "diverged", "val_loss": None})
    calls: list[str] = []
    outcomes = list(attempts(spec, layout, exe, train=_trainer({lr / 2: "done"}, calls)))
    assert [o.status for o in outcomes] == ["diverged", "done"]
    assert calls == [run.read_result()["retried_as"]]
    # Run again: nothing trains.
    assert [o.status for o in attempts(spec, layout, exe, train=_trainer({}, calls))] == [
        "diverged"
    ]
    assert len(calls) == 1


def test_a_held_run_is_left_to_its_holder_and_not_recorded(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path)
    calls: list[str] = []
    with RunLock(layout.run_dir(spec.run_id)):
        outcome = attempt(spec, layout, exe, train=_trainer({}, calls))
    assert outcome.status == "held" and "pid" in outcome.error and calls == []
    assert layout.run(spec.run_id).read_result() is None


def test_a_failure_is_recorded_in_one_line_and_set_aside_at_the_next_attempt(
    tmp_path: Path,
) -> None:
    spec, layout, exe = _setup(tmp_path)

    def broken(*args: Any) -> None:
        raise RuntimeError("boom\nsecond line")

    outcome = attempt(spec, layout, exe, train=broken)
    assert outcome == Outcome(spec.run_id, "failed", error="RuntimeError: boom")
    run = layout.run(spec.run_id)
    assert run.read_result()["error"] == "RuntimeError: boom"
    assert run.read_result()["log"] == str(run.log) and "boom" in run.log.read_text()
    with pytest.raises(RuntimeError, match="boom"):
        attempt(spec, layout, exe, train=broken, reraise=True, log_path="job.err")
    assert run.read_result()["log"] == "job.err"

    seen: list[str | None] = []

    def stopped(spec: RunSpec, run_dir: Path, *args: Any) -> None:
        seen.append(RunDir(run_dir).state())  # the failure is not the state while it trains
        return None

    assert attempt(spec, layout, exe, train=stopped).status == "interrupted"
    assert seen == ["started"] and json.loads(run.failed_json.read_text())["status"] == "failed"


def test_a_stopped_run_is_interrupted_unless_the_scheduler_trains_on(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path)
    calls: list[int] = []

    def stops_once(spec: RunSpec, run_dir: Path, *args: Any) -> _Result | None:
        calls.append(1)
        if len(calls) == 1:
            return None  # stopped at a step boundary with a checkpoint
        RunDir(run_dir).write_result({"run_id": spec.run_id, "status": "done", "val_loss": 2.0})
        return _Result("done", 2.0)

    assert attempt(spec, layout, exe, train=stops_once).status == "interrupted"
    calls.clear()
    outcome = attempt(spec, layout, exe, train=stops_once, after_stop=lambda s: True)
    assert outcome.status == "done" and len(calls) == 2
    # Told to stop before it starts: nothing trains.
    other = dataclasses.replace(spec, seed=spec.seed + 1)
    assert attempt(other, layout, exe, train=stops_once, should_stop=lambda: True).status == (
        "interrupted"
    )
    assert len(calls) == 2


def test_a_dead_worker_fails_the_retry_it_was_training_not_one_another_process_holds(
    tmp_path: Path,
) -> None:
    from harness.execute.local import Unit, _died
    from harness.execute.retry import retry_chain, start_retry

    spec, layout, exe = _setup(tmp_path)
    run = layout.run(spec.run_id)
    run.path.mkdir(parents=True)
    run.write_spec(spec)
    run.write_result({"run_id": spec.run_id, "status": "diverged", "val_loss": None})
    retry = start_retry(spec, layout, exe)
    assert retry is not None and retry_chain(spec.run_id, layout) == [retry.run_id]
    unit = Unit((spec,), {}, 0.0)
    with RunLock(layout.run_dir(retry.run_id)):  # another process trains the retry
        assert [o.status for o in _died(unit, layout)] == ["diverged"]
    assert layout.run(retry.run_id).read_result() is None
    # Held by none: the worker died on it.
    outcomes = _died(unit, layout)
    assert [(o.run_id, o.status) for o in outcomes] == [
        (spec.run_id, "diverged"),
        (retry.run_id, "failed"),
    ]
    assert "worker process died" in layout.run(retry.run_id).read_result()["error"]


def test_no_retry_is_set_up_once_told_to_stop(tmp_path: Path) -> None:
    spec, layout, exe = _setup(tmp_path)
    calls: list[str] = []
    stop = {"now": False}

    def diverges_then_stop(*args: Any) -> _Result:
        result = _trainer({spec.train.lr: "diverged"}, calls)(*args)
        stop["now"] = True  # the signal comes while it diverges
        return result

    outcomes = list(
        attempts(spec, layout, exe, train=diverges_then_stop, should_stop=lambda: stop["now"])
    )
    assert [o.status for o in outcomes] == ["diverged"] and calls == [spec.run_id]
    assert "retried_as" not in layout.run(spec.run_id).read_result()
