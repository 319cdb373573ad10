"""The training loop: learning-rate schedule, exact resume, divergence."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import tiny_toml

from harness.config import load_experiment
from harness.grid import expand
from harness.schedules import lr_at_step, peak_lr
from harness.train import train

torch.set_num_threads(1)


def test_lr_table_by_hand() -> None:
    # total 10 steps, warmup 2, peak 1.0, floor 0.1; decay over steps 2..9 (7 intervals).
    lrs = [lr_at_step(s, total_steps=10, warmup=2, peak=1.0, min_ratio=0.1) for s in range(10)]
    expected = [
        0.5,  # (0+1)/2
        1.0,  # (1+1)/2
        1.0,  # cos(0)
        0.1 + 0.45 * (1 + 0.9009688679),  # cos(pi/7)
        0.1 + 0.45 * (1 + 0.6234898019),  # cos(2pi/7)
        0.1 + 0.45 * (1 + 0.2225209340),  # cos(3pi/7)
        0.1 + 0.45 * (1 - 0.2225209340),
        0.1 + 0.45 * (1 - 0.6234898019),
        0.1 + 0.45 * (1 - 0.9009688679),
        0.1,  # ends exactly at the floor on the run's own last step
    ]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_schedule_follows_the_runs_own_length() -> None:
    # A shorter run is not a prefix of a longer one: it reaches its floor at its own end.
    short = lr_at_step(49, total_steps=50, warmup=5, peak=1.0, min_ratio=0.0)
    long_same_step = lr_at_step(49, total_steps=100, warmup=5, peak=1.0, min_ratio=0.0)
    assert short == 0.0 and long_same_step == pytest.approx(0.5 * (1 + math.cos(math.pi * 44 / 94)))


def _experiment(tmp_path: Path, extra: str = "", overrides: list[str] | None = None):
    return load_experiment(tiny_toml(tmp_path, n_tokens="[4096]", extra=extra), overrides)


def test_peak_lr_scales_with_width(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path, overrides=["--train.lr_width_exponent=1.0", "--train.lr_ref_width=64"]
    )
    (spec,) = expand(exp)
    assert spec.model.n_embd == 32
    assert peak_lr(spec) == pytest.approx(1e-2 * 64 / 32)


@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    (spec,) = expand(exp)
    assert spec.n_steps == 16
    ref = train(spec, tmp_path / "a" / "runs" / spec.run_id, execution=exp.execution)
    assert ref is not None and ref.status == "done" and ref.steps == 16

    run_dir = tmp_path / "b" / "runs" / spec.run_id
    for _ in range(3):  # stopped three times, like three preemptions
        assert train(spec, run_dir, execution=exp.execution, stop_after_steps=5) is None
    assert (run_dir / "ckpt").is_dir()
    # What a SIGKILL can leave behind: a torn metrics row and an unrenamed checkpoint temp file.
    with (run_dir / "metrics.csv").open("a") as f:
        f.write("16,512,2.")
    (run_dir / "ckpt" / ".step_000000016.pt.x1.tmp").write_bytes(b"partial")
    resumed = train(spec, run_dir, execution=exp.execution)
    assert resumed is not None
    assert resumed.val_loss == ref.val_loss  # bit for bit on CPU
    assert resumed.train_loss == ref.train_loss
    assert not list((run_dir / "ckpt").iterdir())  # cleaned up once done
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # no step recorded twice


def _stopped_twice(tmp_path: Path) -> tuple[Any, Any, Any, Path]:
    """(experiment, spec, uninterrupted result, run dir with two checkpoints of a run stopped
    twice after 4 steps)."""
    exp = _experiment(tmp_path)
    (spec,) = expand(exp)
    ref = train(spec, tmp_path / "a" / "runs" / spec.run_id, execution=exp.execution)
    run_dir = tmp_path / "b" / "runs" / spec.run_id
    train(spec, run_dir, execution=exp.execution, stop_after_steps=4)
    train(spec, run_dir, execution=exp.execution, stop_after_steps=4)
    return exp, spec, ref, run_dir


@pytest.mark.slow
def test_corrupt_checkpoint_is_skipped(tmp_path: Path) -> None:
    exp, spec, ref, run_dir = _stopped_twice(tmp_path)
    newest = sorted((run_dir / "ckpt").iterdir())[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # torn write
    resumed = train(spec, run_dir, execution=exp.execution)
    assert resumed is not None and ref is not None and resumed.val_loss == ref.val_loss


class _Hostile:
    """Pickles as a call of os.system: what a tampered checkpoint would run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_hostile_checkpoint_is_refused_not_run(tmp_path: Path) -> None:
    # A checkpoint on a shared file system replaced by one whose unpickling runs a command:
    # weights_only loading refuses it (skipped as unreadable), and the run resumes from the
    # older good checkpoint, bit for bit.
    exp, spec, ref, run_dir = _stopped_twice(tmp_path)
    newest = sorted((run_dir / "ckpt").iterdir())[-1]
    marker = tmp_path / "PWNED"
    good = torch.load(newest, weights_only=True)
    torch.save({**good, "extra": _Hostile(marker)}, newest)
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(newest.read_bytes())  # the run removes its checkpoints once done
    resumed = train(spec, run_dir, execution=exp.execution)
    assert not marker.exists()  # the payload never ran
    assert resumed is not None and ref is not None and resumed.val_loss == ref.val_loss
    # named where the user sees it, not only in train.log (issue 31)
    (skipped,) = resumed.skipped_checkpoints
    assert skipped.startswith(f"{newest.name}: ") and "weights_only" in skipped.lower()
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["skipped_checkpoints"] == [skipped]
    # ... while the same file runs its payload when loaded unrestricted (the test can fail)
    assert torch.load(hostile, weights_only=False)["extra"] == 0  # os.system's exit status
    assert marker.exists()


def test_divergence_is_a_status_not_a_crash(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path,
        overrides=["--train.lr=1e12", "--train.grad_clip=0.0", "--train.warmup_fraction=0.0"],
    )
    (spec,) = expand(exp)
    result = train(spec, tmp_path / "r" / "runs" / spec.run_id, execution=exp.execution)
    assert result is not None and result.status == "diverged"
    assert "non-finite" in result.reason
    # No NaN in result.json (not valid JSON): the last finite logged mean, or none.
    assert result.train_loss is None or math.isfinite(result.train_loss)
    stored = json.loads((tmp_path / "r" / "runs" / spec.run_id / "result.json").read_text())
    assert stored["status"] == "diverged" and stored["val_loss"] is None


@pytest.mark.slow
def test_checkpoint_cadence_by_wall_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.train.loop as train_mod

    saved: list[int] = []
    real_save = train_mod.save_checkpoint

    def recording_save(run_dir: Path, state: dict, keep: int) -> Path:
        saved.append(state["step"])
        return real_save(run_dir, state, keep)

    monkeypatch.setattr(train_mod, "save_checkpoint", recording_save)
    base = _experiment(tmp_path)
    (spec,) = expand(base)
    for every_s, expected in [(0.0, []), (1e9, []), (1e-9, list(range(1, 16)))]:
        exp = _experiment(tmp_path, overrides=[f"--execution.checkpoint_every_s={every_s}"])
        (same,) = expand(exp)
        assert same.run_id == spec.run_id  # cadence is not part of the run's identity
        saved.clear()
        run_dir = tmp_path / f"r{every_s}" / "runs" / spec.run_id
        result = train(spec, run_dir, execution=exp.execution)
        assert result is not None and result.status == "done"
        assert saved == expected, every_s

    # With a clock that advances 1 s per reading (a step reads it 3 times: the batch's data time
    # and the cadence check), checkpoints come at least 10 s apart, not per step.
    clock = iter(range(10**6))
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: float(next(clock)))
    exp = _experiment(tmp_path, overrides=["--execution.checkpoint_every_s=10"])
    saved.clear()
    train(spec, tmp_path / "clock" / "runs" / spec.run_id, execution=exp.execution)
    assert 2 <= len(saved) < 15 and saved == sorted(set(saved))


@pytest.mark.slow
def test_loss_blow_up_is_diverged_with_step_and_reason(tmp_path: Path) -> None:
    # A large but finite lr: the loss climbs far above ln(256) = 5.55 without becoming NaN.
    exp = _experiment(tmp_path, overrides=["--train.lr=10.0", "--train.warmup_fraction=0.0"])
    (spec,) = expand(exp)
    run_dir = tmp_path / "r" / "runs" / spec.run_id
    result = train(spec, run_dir, execution=exp.execution)
    assert result is not None and result.status == "diverged"
    assert "training loss blew up" in result.reason and f"at step {result.steps}" in result.reason
    assert 2 <= result.steps < spec.n_steps  # stopped early, after `diverge_patience` intervals
    assert "ln(vocab) 5.545" in result.reason
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["status"] == "diverged" and stored["reason"] == result.reason

    # The rule off: the same run trains to the end (a finite, bad loss).
    off = _experiment(
        tmp_path,
        overrides=[
            "--train.lr=10.0",
            "--train.warmup_fraction=0.0",
            "--execution.diverge_factor=0",
        ],
    )
    result = train(spec, tmp_path / "off" / "runs" / spec.run_id, execution=off.execution)
    assert result is not None and result.steps == spec.n_steps


@pytest.mark.slow
def test_healthy_run_is_not_flagged(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path, overrides=["--execution.diverge_patience=1", "--execution.diverge_factor=1.1"]
    )
    (spec,) = expand(exp)
    result = train(spec, tmp_path / "r" / "runs" / spec.run_id, execution=exp.execution)
    assert result is not None and result.status == "done" and result.reason == ""


@pytest.mark.slow
def test_logged_loss_is_the_exact_mean_of_the_step_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop sums the step losses on the device and reads them back only at log rows; the
    # logged mean must be the very number a per-step float sum gives.
    import harness.train.loop as train_mod

    step_losses: list[float] = []
    real_ce = train_mod.F.cross_entropy

    def recording_ce(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss = real_ce(*args, **kwargs)
        if torch.is_grad_enabled():  # training steps, not evaluations
            step_losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", recording_ce)
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[76800]"))  # 300 steps: 3 per log row
    (spec,) = expand(exp)
    t0 = time.time()
    result = train(spec, tmp_path / "r" / "runs" / spec.run_id, execution=exp.execution)
    assert result is not None and result.steps == 300 and len(step_losses) == 300
    rows = (tmp_path / "r" / "runs" / spec.run_id / "metrics.csv").read_text().splitlines()[1:]
    logged = {int(r.split(",")[0]): float(r.split(",")[2]) for r in rows}
    assert sorted(logged)[:3] == [3, 6, 9]
    previous = 0
    for step, value in sorted(logged.items()):
        window = step_losses[previous:step]
        assert value == sum(window) / len(window)
        previous = step
    # Where the run's wall time went (bench/bench_overhead.py reads these).
    stored = json.loads((tmp_path / "r" / "runs" / spec.run_id / "result.json").read_text())
    assert t0 - 1e-3 <= stored["started_unix"] <= t0 + 5  # stored to the microsecond
    assert stored["setup_s"] > 0 and stored["finish_s"] >= 0
    # Throughput is the step loop's: evaluations are timed apart and left out of it.
    assert 0 < stored["eval_s"] < stored["wall_s"]
    loop_s = stored["wall_s"] - stored["eval_s"]
    assert stored["tokens_per_s"] == pytest.approx(stored["trained_tokens"] / loop_s, rel=1e-3)
    end = stored["started_unix"] + stored["setup_s"] + stored["wall_s"] + stored["finish_s"]
    assert end <= time.time() + 4e-3  # four terms stored to the millisecond


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_logits_are_freed_before_the_backward_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    # The backward pass needs only the log-softmax autograd keeps; logits held through it
    # would add B x T x V values to every step's peak memory, which harness.memory does not
    # count. When each backward pass starts, no reference to them may be left.
    import weakref

    import harness.train.loop as train_mod
    import harness.train.run as run_mod

    logits: list[weakref.ref] = []
    alive: list[bool] = []
    real_build, real_ce = run_mod.build_learner, train_mod.F.cross_entropy

    def build_watched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        learner = real_build(*args, **kwargs)
        head = learner.model.get_output_embeddings()
        head.register_forward_hook(lambda _m, _i, out: logits.append(weakref.ref(out)))
        return learner

    def watching_ce(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss = real_ce(*args, **kwargs)
        if torch.is_grad_enabled():  # training steps, not evaluations
            newest = logits[-1]
            loss.register_hook(lambda g: alive.append(newest() is not None) or g)
        return loss

    monkeypatch.setattr(run_mod, "build_learner", build_watched)
    monkeypatch.setattr(train_mod.F, "cross_entropy", watching_ce)
    exp = load_experiment(tiny_toml(tmp_path), [f"--train.precision={precision}"])
    spec = expand(exp)[0]
    train(spec, tmp_path / "r" / "runs" / spec.run_id, execution=exp.execution)
    assert len(alive) == spec.n_steps and not any(alive)
