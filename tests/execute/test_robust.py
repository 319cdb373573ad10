"""Never lose a run: divergence retries, a full disk, out of memory, concurrent collectors and
run directories that belong to another run.

Grids here go through the real `harness run`, with the launcher's worker forked instead of
spawned (monkeypatched), so a test pays no interpreter start and can inject faults into the
worker.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _tiny import word_corpus

import harness.execute.local as local
import harness.train.learner as train_mod
from harness.cli import main
from harness.config import load_experiment
from harness.errors import InputError
from harness.grid import expand
from harness.results import RUNS_CSV_COLUMNS, collect
from harness.rundir import RunDir
from harness.train import DiskFullError, save_checkpoint, train

torch.set_num_threads(1)

EXP = """
[data]
corpus = "{corpus}"
seq_len = 32
val_block_bytes = 1024
eval_tokens = 1024
[train]
batch_size = 8
lr = {lr}
warmup_fraction = 0.0
checkpoint_every_steps = 4
evals_per_run = 2
[grid]
shapes = {shapes}
n_tokens = [4096]
[execution]
threads = 1
progress = false
results_dir = "{results}"
{execution}
"""


def _toml(
    tmp_path: Path,
    *,
    lr: float = 1e-2,
    shapes: str = "[{n_layer = 1, n_embd = 32}]",
    execution: str = "",
) -> Path:
    corpus = word_corpus(tmp_path)
    path = tmp_path / "robust.toml"
    path.write_text(
        EXP.format(
            corpus=corpus, lr=lr, shapes=shapes, results=tmp_path / "results", execution=execution
        )
    )
    return path


@pytest.fixture
def forked_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's worker process forked from this one (inherits monkeypatches, no import)."""
    from harness.model import ModelShape

    # Import transformers' model code here once, so each forked worker has it already.
    train_mod.build_model(
        ModelShape(
            arch="llama",
            n_layer=1,
            n_embd=16,
            n_head=1,
            vocab_size=256,
            seq_len=8,
            ffn_dim=32,
            tie_embeddings=True,
        )
    )
    real = multiprocessing.get_context
    monkeypatch.setattr(local.multiprocessing, "get_context", lambda method=None: real("fork"))


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "runs.csv").open() as f:
        return list(csv.DictReader(f))


# --- divergence retries -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("forked_worker")
def test_diverged_run_is_retried_at_a_lower_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(tmp_path, lr=10.0, execution="diverge_retries = 2\ndiverge_lr_factor = 0.001")
    assert main(["run", str(toml)]) == 0  # a divergence retried to completion is not a failure
    root = tmp_path / "results" / "robust"
    rows = {r["run_id"]: r for r in _rows(root)}
    assert sorted(r["status"] for r in rows.values()) == ["diverged", "done"]  # both kept
    (orig,) = expand(load_experiment(toml))
    first = json.loads((root / "runs" / orig.run_id / "result.json").read_text())
    assert first["status"] == "diverged" and "blew up" in first["reason"]
    retry_id = first["retried_as"]
    assert rows[retry_id]["status"] == "done" and rows[orig.run_id]["status"] == "diverged"
    assert float(rows[retry_id]["lr"]) == pytest.approx(10.0 * 0.001)
    retry = json.loads((root / "runs" / retry_id / "retry.json").read_text())
    assert retry == {"retry_of": orig.run_id, "retry": 1, "lr": pytest.approx(0.01)}

    # An interrupted retry (no result.json yet) is finished by the next `harness run`.
    (root / "runs" / retry_id / "result.json").unlink()
    capsys.readouterr()
    assert main(["run", str(toml)]) == 0
    assert "1 already done, 1 to train" in capsys.readouterr().out
    assert {r["run_id"]: r["status"] for r in _rows(root)} == {
        orig.run_id: "diverged",
        retry_id: "done",
    }


@pytest.mark.usefixtures("forked_worker")
def test_retries_stop_at_diverge_retries(tmp_path: Path) -> None:
    toml = _toml(tmp_path, lr=100.0, execution="diverge_retries = 1\ndiverge_lr_factor = 0.5")
    assert main(["run", str(toml)]) == 0  # diverged is a result, not a failure
    rows = _rows(tmp_path / "results" / "robust")
    assert [r["status"] for r in rows] == ["diverged", "diverged"]  # the run and one retry
    assert sorted(float(r["lr"]) for r in rows) == [50.0, 100.0]


@pytest.mark.slow
def test_submit_retries_a_diverged_run_in_its_job_and_picks_up_an_unfinished_retry(
    tmp_path: Path,
) -> None:
    from harness.execute.slurm import submit
    from harness.execute.status import read_jobs, run_statuses
    from harness.results import ExperimentLayout

    toml = _toml(tmp_path, lr=10.0, execution="diverge_retries = 2\ndiverge_lr_factor = 0.001")
    exp = load_experiment(toml)
    (orig,) = expand(exp)
    submitted, _ = submit(exp, cluster="debug")  # the debug executor runs the job right here
    assert [s.run_id for s in submitted] == [orig.run_id]
    layout = ExperimentLayout(exp.results_path.resolve())
    first = json.loads((layout.run_dir(orig.run_id) / "result.json").read_text())
    retry_id = first["retried_as"]
    states = {st.run_id: st for st in run_statuses(layout)}
    assert {r: st.state for r, st in states.items()} == {orig.run_id: "diverged", retry_id: "done"}
    # the retry trained in the job of the run it retries, at the shared policy's lr
    jobs = read_jobs(layout)["runs"]
    assert jobs[retry_id][-1]["job_id"] == jobs[orig.run_id][-1]["job_id"]
    assert jobs[retry_id][-1]["retry_of"] == orig.run_id
    assert json.loads((layout.run_dir(retry_id) / "retry.json").read_text())["lr"] == pytest.approx(
        10.0 * 0.001
    )
    assert submit(exp, cluster="debug")[0] == []  # nothing left

    # A job that died during the retry: the next submit sends the retry alone, not the grid run.
    (layout.run_dir(retry_id) / "result.json").unlink()
    assert run_statuses(layout)[-1].state in ("failed", "interrupted")
    submitted, _ = submit(exp, cluster="debug")
    assert [s.run_id for s in submitted] == [retry_id]
    assert {st.run_id: st.state for st in run_statuses(layout)} == {
        orig.run_id: "diverged",
        retry_id: "done",
    }
    assert main(["collect", str(layout.root)]) == 0
    assert sorted(r["status"] for r in _rows(layout.root)) == ["diverged", "done"]


def test_a_job_sets_up_the_retry_a_killed_job_never_did(tmp_path: Path) -> None:
    from dataclasses import asdict

    from harness.execute.job import TrainJob
    from harness.results import ExperimentLayout

    toml = _toml(tmp_path, lr=10.0, execution="diverge_retries = 1\ndiverge_lr_factor = 0.001")
    exp = load_experiment(toml)
    (spec,) = expand(exp)
    layout = ExperimentLayout(exp.results_path.resolve())
    # The run diverged, and its job died before it set up the retry: no retried_as.
    assert train(spec, layout.run_dir(spec.run_id), execution=exp.execution).status == "diverged"
    assert "retried_as" not in json.loads((layout.run_dir(spec.run_id) / "result.json").read_text())
    out = TrainJob()([[spec.to_dict()]], str(layout.root), asdict(exp.execution))
    assert [o["status"] for o in out] == ["diverged", "done"]
    first = json.loads((layout.run_dir(spec.run_id) / "result.json").read_text())
    assert first["retried_as"] == out[1]["run_id"]
    # requeued once more: nothing left to train
    again = TrainJob()([[spec.to_dict()]], str(layout.root), asdict(exp.execution))
    assert [o["status"] for o in again] == ["diverged"]


# --- full disk and out of memory ----------------------------------------------------------------


def test_full_disk_during_checkpoint_fails_the_run_and_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = load_experiment(_toml(tmp_path))
    (spec,) = expand(exp)
    assert spec.n_steps == 16
    ref = train(spec, tmp_path / "ref" / "runs" / spec.run_id, execution=exp.execution)
    assert ref is not None

    real_save, calls = torch.save, []

    def full_disk_on_second_save(obj: object, f: object, *a: object, **k: object) -> None:
        calls.append(1)
        if len(calls) == 2:  # the checkpoint at step 8; the one at step 4 is written
            f.write(b"half a checkpoint")  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *a, **k)

    run_dir = tmp_path / "runs" / spec.run_id
    monkeypatch.setattr(torch, "save", full_disk_on_second_save)
    with pytest.raises(
        DiskFullError,
        match="no space left on device while writing checkpoint "
        r".*step_000000008\.pt",
    ):
        train(spec, run_dir, execution=exp.execution)
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["step_000000004.pt"]

    # Through the launcher's worker body: the run fails with that one line, nothing raises.
    calls.clear()
    import shutil

    shutil.rmtree(run_dir)
    (out,) = local._run_unit(
        [(spec.to_dict(), [])], str(tmp_path), {"threads": 1, "progress": False}
    )
    assert out.status == "failed"
    assert "no space left on device while writing checkpoint" in out.error
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["status"] == "failed" and "no space left" in stored["error"]
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["step_000000004.pt"]

    monkeypatch.setattr(torch, "save", real_save)  # space is freed
    resumed = train(spec, run_dir, execution=exp.execution)
    assert resumed is not None and resumed.status == "done"
    assert resumed.val_loss == ref.val_loss and resumed.train_loss == ref.train_loss


def test_torch_saves_swallowed_disk_error_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save catches the OSError a file's write() raises and fails later with
    "[enforce fail at inline_container.cc] unexpected pos" (as on a real full tmpfs, below);
    the checkpoint's error names the full disk all the same."""
    real_fdopen = os.fdopen

    class FullAfter(io.RawIOBase):
        def __init__(self, f: io.BufferedWriter, room: int) -> None:
            self.f, self.room = f, room

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            n = memoryview(data).nbytes  # type: ignore[arg-type]
            if n > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= n
            return self.f.write(data)  # type: ignore[arg-type]

        def fileno(self) -> int:
            return self.f.fileno()

        def flush(self) -> None:
            if not self.f.closed:
                self.f.flush()

        def close(self) -> None:
            super().close()
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullAfter(real_fdopen(fd, mode), 200))
    state = {"step": 4, "w": torch.zeros(1000)}
    with pytest.raises(DiskFullError, match=r"no space left on device while writing checkpoint"):
        save_checkpoint(RunDir(tmp_path), state, keep=2)
    assert list((tmp_path / "ckpt").iterdir()) == []  # no temp file left behind


def _toml_on(tmp_path: Path, disk: Path) -> Path:
    """The robust experiment with its results on ``disk``."""
    toml = _toml(tmp_path)
    toml.write_text(toml.read_text().replace(str(tmp_path / "results"), str(disk / "res")))
    return toml


def _harness_run(toml: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(toml)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_a_full_device_fails_the_run_with_one_line(
    tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    """A real 500 KB tmpfs: the token cache (~280 KB) fits, the first checkpoint (~270 KB) does
    not. The run fails naming the checkpoint; no temp file is left; with room it trains."""
    disk = small_disk("500k")
    toml = _toml_on(tmp_path, disk)
    out = _harness_run(toml)
    assert out.returncode == 1, out.stderr  # a run failed
    assert "Traceback" not in out.stderr + out.stdout
    (result,) = (disk / "res").glob("robust/runs/*/result.json")
    stored = json.loads(result.read_text())
    assert stored["status"] == "failed"
    assert "no space left on device while writing checkpoint" in stored["error"]
    assert "step_000000004.pt" in stored["error"]
    assert not [p for p in (disk / "res").rglob("*.tmp*")]
    # space freed (the same tmpfs, grown): the failed run trains again, to the end
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    again = _harness_run(toml)
    assert again.returncode == 0, again.stderr
    assert json.loads(result.read_text())["status"] == "done"


@pytest.mark.slow
def test_a_full_device_while_tokenizing_ends_in_one_line(
    tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    disk = small_disk("64k")  # the corpus' tokens take ~280 KB
    out = _harness_run(_toml_on(tmp_path, disk))
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: no space left on device writing the token cache ")
    assert str(disk / "res" / "robust" / "cache" / "data-") in line
    assert not list((disk / "res" / "robust" / "cache").iterdir())  # no half-built entry


@pytest.mark.slow
@pytest.mark.usefixtures("forked_worker")
def test_a_skipped_unreadable_checkpoint_is_reported_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(tmp_path)
    (spec,) = expand(load_experiment(toml))
    ckpt = tmp_path / "results" / "robust" / "runs" / spec.run_id / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "step_000000004.pt").write_bytes(b"not a checkpoint")
    assert main(["run", str(toml)]) == 0
    out = capsys.readouterr().out
    assert (
        f"warning: run {spec.run_id}: skipped unreadable checkpoint(s), never loaded: "
        "step_000000004.pt: " in out
    ), out
    result = json.loads((ckpt.parent / "result.json").read_text())
    assert result["status"] == "done" and result["skipped_checkpoints"][0].startswith(
        "step_000000004.pt: "
    )


@pytest.mark.slow
@pytest.mark.usefixtures("forked_worker")
def test_out_of_memory_fails_only_that_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_build = train_mod.build_model

    def build(shape, parametrization=None):  # type: ignore[no-untyped-def]
        if shape.n_embd == 48:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        if shape.n_embd == 64:
            raise MemoryError("host out of memory")
        return real_build(shape, parametrization)

    monkeypatch.setattr(train_mod, "build_model", build)
    toml = _toml(
        tmp_path,
        shapes="[{n_layer = 1, n_embd = 32}, {n_layer = 1, n_embd = 48}, "
        "{n_layer = 1, n_embd = 64}]",
    )
    assert main(["run", str(toml)]) == 1  # a run failed
    out = capsys.readouterr().out
    assert "OutOfMemoryError: CUDA out of memory" in out
    assert "MemoryError: host out of memory" in out
    rows = _rows(tmp_path / "results" / "robust")
    assert sorted((int(r["n_embd"]), r["status"]) for r in rows) == [
        (32, "done"),
        (48, "failed"),
        (64, "failed"),
    ]
    assert float(next(r for r in rows if r["status"] == "done")["loss"]) < 5.0


# --- run directories and runs.csv ---------------------------------------------------------------


def test_run_dir_holding_another_spec_is_never_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _toml(tmp_path, shapes="[{n_layer = 1, n_embd = 32}, {n_layer = 1, n_embd = 48}]")
    specs = expand(load_experiment(toml))
    root = tmp_path / "results" / "robust"
    run_dir = root / "runs" / specs[1].run_id
    run_dir.mkdir(parents=True)
    other = specs[1].to_dict()
    other["seed"] = 7  # e.g. a directory copied from elsewhere, or a hand-edited spec.json
    (run_dir / "spec.json").write_text(json.dumps(other))
    before = (run_dir / "spec.json").read_bytes()
    assert main(["run", str(toml)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "differ from run" in err[0]
    assert "(in seed)" in err[0] and "move the directory away" in err[0]
    assert (run_dir / "spec.json").read_bytes() == before
    assert not list(root.glob("runs/*/result.json"))  # refused before anything trained
    assert not (root / "runs" / specs[0].run_id).exists()


def _fake_runs(tmp_path: Path, n: int) -> Path:
    exp = load_experiment(
        _toml(
            tmp_path,
            shapes="["
            + ", ".join(f"{{n_layer = {1 + i % 3}, n_embd = {32 + 16 * i}}}" for i in range(n))
            + "]",
        )
    )
    root = exp.results_path
    for i, spec in enumerate(expand(exp)):
        run_dir = root / "runs" / spec.run_id
        run_dir.mkdir(parents=True)
        RunDir(run_dir).write_spec(spec)
        RunDir(run_dir).write_result(
            {
                "run_id": spec.run_id,
                "status": "done",
                "val_loss": 3.0 - 0.1 * i,
                "val_bpb": 4.0,
                "train_loss": 3.1,
                "peak_lr": 0.01,
                "wall_s": 1.0,
                "n_unique_tokens": 4096,
                "epochs": 1.0,
                "tokens_per_s": 10.0,
                "device": "cpu",
            },
        )
    return root


def _collect_many(root: Path, n: int) -> None:
    for _ in range(n):
        collect(root)


@pytest.mark.slow
def test_concurrent_collectors_never_tear_runs_csv(tmp_path: Path) -> None:
    root = _fake_runs(tmp_path, 6)
    collect(root)
    expected = (root / "runs.csv").read_bytes()
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_collect_many, args=(root, 150)) for _ in range(2)]
    for p in writers:
        p.start()
    reads = 0
    while any(p.is_alive() for p in writers) or reads < 50:
        data = (root / "runs.csv").read_bytes()  # a whole file every time: old or new
        assert data == expected
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert len(rows) == 6 and list(rows[0]) == RUNS_CSV_COLUMNS
        reads += 1
    for p in writers:
        p.join()
        assert p.exitcode == 0
    assert reads >= 50
    assert not list(root.glob(".runs.csv.*"))  # no temp files left behind


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("spec.json", {"n_tokens": "many"}, "spec.json: n_tokens = 'many' is not an integer"),
        ("spec.json", {"model": "llama"}, "spec.json: model = 'llama' is not an object"),
        ("spec.json", {"model": {"arch": "llama"}}, "spec.json: model = {'arch': 'llama'}"),
        ("spec.json", {"train": {"lr": "x"}}, "spec.json: train.lr = 'x' is not a number"),
        ("result.json", {"status": "exploded"}, "status = 'exploded'; accepted: done, diverged"),
        ("result.json", {"val_loss": "low"}, "result.json: val_loss = 'low'; accepted: a number"),
    ],
)
def test_corrupt_run_record_is_one_clear_line(
    tmp_path: Path, name: str, edit: dict, message: str
) -> None:
    root = _fake_runs(tmp_path, 2)
    run_dir = sorted((root / "runs").iterdir())[0]
    data = json.loads((run_dir / name).read_text())
    data.update(edit)
    (run_dir / name).write_text(json.dumps(data))
    with pytest.raises(InputError, match="^" + re.escape(str(run_dir / name))) as e:
        collect(root)
    assert message in str(e.value) and "\n" not in str(e.value)
