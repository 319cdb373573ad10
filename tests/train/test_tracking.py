"""[tracking]: each run's settings and metrics in TensorBoard, MLflow and W&B (offline), read
back with each library's own reader and compared with the run's metrics.csv; resumed runs
continue their tracker run; a failing backend never fails a run; bad settings exit 2."""

from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import harness_cli, tiny_toml

from harness.config import load_experiment
from harness.errors import InputError
from harness.grid import expand
from harness.results import ExperimentLayout
from harness.tracking import STATE_FILE, check_installed, log_fits, prepare, resolve
from harness.train import train

torch.set_num_threads(1)
pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


def _experiment(tmp_path: Path, tracking: str, overrides: list[str] | None = None) -> Any:
    """The tiny 16-step run (a log row at every step, 2 evaluations) with [tracking]."""
    toml = tiny_toml(tmp_path, n_tokens="[4096]", extra=f"[tracking]\n{tracking}")
    return load_experiment(toml, overrides)


def _train(exp: Any, **kwargs: Any) -> tuple[Any, Path, Any]:
    """(spec, run dir, result) of the experiment's one run, trained in this process with the
    settings `harness run` would resolve for its workers."""
    (spec,) = expand(exp)
    prepare(exp)
    run_dir = ExperimentLayout(exp.results_path).run_dir(spec.run_id)
    return spec, run_dir, train(spec, run_dir, execution=exp.execution, **kwargs)


def _csv(run_dir: Path, column: str) -> list[tuple[int, float]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r[column]]


# --- readers: each library's own -------------------------------------------------------------


def _tensorboard(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _mlflow_runs(exp: Any) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{exp.results_path.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(exp.name)
    return client.search_runs([experiment.experiment_id])


def _mlflow_history(exp: Any, mlflow_run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{exp.results_path.resolve() / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(mlflow_run_id, key))


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline run's .wandb file, decoded with wandb's own schema
    (wandb.proto.wandb_internal_pb2.Record). wandb 0.31 ships no Python reader of the file
    (its Go core writes and syncs it), so the container is read here: the LevelDB log format,
    a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each with a 7-byte
    header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, parts, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 0:  # zero padding to the block's end
            pos += left - 7 - n
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def _wandb_history(folders: list[Path], key: str) -> list[tuple[int, float]]:
    rows = []
    for folder in folders:
        for record in _wandb_records(next(folder.glob("*.wandb"))):
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                if key in items:
                    rows.append((record.history.step.num, float(json.loads(items[key]))))
    return sorted(rows)


def _wandb_run_id(folder: Path) -> str:
    records = _wandb_records(next(folder.glob("*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run.run_id


def _wandb_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for record in _wandb_records(next(folder.glob("*.wandb"))):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update
        if kind in ("run", "config"):
            config.update({u.key: json.loads(u.value_json) for u in updates})
    return config


# --- each backend reads back what metrics.csv holds -------------------------------------------


@pytest.mark.slow
def test_tensorboard_scalars_equal_metrics_csv(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, 'backend = "tensorboard"')
    spec, run_dir, result = _train(exp)
    assert result.status == "done"
    folder = exp.results_path.resolve() / "tensorboard" / spec.run_id
    for tag in ("train_loss", "val_loss", "lr", "tokens"):
        logged, expected = _tensorboard(folder, tag), _csv(run_dir, tag)
        assert [s for s, _ in logged] == [s for s, _ in expected]
        # TensorBoard stores float32 scalars.
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert len(_csv(run_dir, "train_loss")) == 16 and len(_csv(run_dir, "val_loss")) == 2
    rates = _tensorboard(folder, "tokens_per_s")
    assert [s for s, _ in rates] == list(range(2, 17)) and all(v > 0 for _, v in rates)
    assert _tensorboard(folder, "final/val_loss") == [(16, pytest.approx(result.val_loss))]


@pytest.mark.slow
def test_task_scores_reach_the_tracker(tmp_path: Path) -> None:
    """[eval]'s metrics.csv columns TASK/METRIC, read back by TensorBoard's own reader."""
    exp = _experiment(tmp_path, 'backend = "tensorboard"\n[eval]\ntasks = ["facts_kv"]\nlimit = 8')
    spec, run_dir, result = _train(exp)
    folder = exp.results_path.resolve() / "tensorboard" / spec.run_id
    for column in ("facts_kv/acc", "facts_kv/bpb"):
        logged, expected = _tensorboard(folder, f"tasks/{column}"), _csv(run_dir, column)
        assert [s for s, _ in logged] == [s for s, _ in expected] == [8, 16]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


@pytest.mark.slow
def test_mlflow_history_equals_metrics_csv_and_params_hold_the_settings(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, 'backend = "mlflow"')
    spec, run_dir, result = _train(exp)
    (run,) = _mlflow_runs(exp)
    assert run.info.run_name == spec.run_id and run.data.tags["harness_run_id"] == spec.run_id
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "lr"):
        assert _mlflow_history(exp, run.info.run_id, key) == _csv(run_dir, key)  # exact
    params = run.data.params
    assert params["run_id"] == spec.run_id and params["seed"] == "0"
    assert params["train.lr"] == "0.01" and params["model.n_layer"] == "1"
    assert params["data.seq_len"] == "32" and params["n_steps"] == "16"
    assert run.data.metrics["final_val_loss"] == result.val_loss
    # The local store keeps its artifacts beside it, not in the working directory.
    assert not (Path.cwd() / "mlruns").exists()


@pytest.mark.slow
def test_wandb_offline_history_equals_metrics_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    exp = _experiment(tmp_path, 'backend = ["wandb"]')
    spec, run_dir, result = _train(exp)
    (folder,) = (exp.results_path / "wandb").glob("offline-run-*")
    assert _wandb_run_id(folder) == spec.run_id
    for key in ("train_loss", "val_loss", "lr"):
        assert _wandb_history([folder], key) == _csv(run_dir, key)  # exact (JSON floats)
    config = _wandb_config(folder)
    assert config["train.lr"] == 0.01 and config["run_id"] == spec.run_id
    assert result.status == "done"


# --- resume: one tracker run, every step once ---------------------------------------------------


@pytest.mark.slow
def test_a_resumed_run_continues_its_tracker_runs(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path,
        'backend = ["tensorboard", "mlflow", "wandb"]',
        ["--train.checkpoint_every_steps=4"],
    )
    (spec,) = expand(exp)
    calls = {"n": 0}

    def crash_at_step_10() -> bool:  # polled once per step: steps 9 and 10 logged, not saved
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("killed")
        return False

    with pytest.raises(RuntimeError, match="killed"):
        _train(exp, should_stop=crash_at_step_10)
    _, run_dir, stopped = _train(exp, stop_after_steps=2)  # resumes at 8, stops at 10
    assert stopped is None
    _, run_dir, result = _train(exp)
    assert result.status == "done"
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert sorted(state.values()) == [16, 16, 16]

    expected = _csv(run_dir, "train_loss")
    assert [s for s, _ in expected] == list(range(1, 17))
    # TensorBoard: one folder for the run_id, an event file per process, each step once.
    tb = exp.results_path.resolve() / "tensorboard"
    assert [p.name for p in tb.iterdir()] == [spec.run_id]
    assert len(list((tb / spec.run_id).glob("events.out.tfevents.*"))) == 3
    logged = _tensorboard(tb / spec.run_id, "train_loss")
    assert [s for s, _ in logged] == list(range(1, 17))
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    # MLflow: one run, its history each step once and equal to metrics.csv.
    (run,) = _mlflow_runs(exp)
    assert run.info.status == "FINISHED"
    assert _mlflow_history(exp, run.info.run_id, "train_loss") == expected
    # W&B: one run id in three offline folders (`wandb sync` joins them), each step once.
    folders = sorted((exp.results_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 3 and {_wandb_run_id(f) for f in folders} == {spec.run_id}
    assert _wandb_history(folders, "train_loss") == expected


@pytest.mark.slow
def test_rows_trained_before_tracking_was_on_are_logged_when_it_opens(tmp_path: Path) -> None:
    # metrics.csv rows a backend has not seen (here: tracking switched on halfway) are
    # logged when it opens, so the tracker's history is the whole of metrics.csv.
    exp = _experiment(tmp_path, "")
    (spec,) = expand(exp)
    run_dir = ExperimentLayout(exp.results_path).run_dir(spec.run_id)
    assert train(spec, run_dir, execution=exp.execution, stop_after_steps=6) is None
    on = _experiment(tmp_path, 'backend = "mlflow"')
    _, run_dir, result = _train(on)
    (run,) = _mlflow_runs(on)
    assert _mlflow_history(on, run.info.run_id, "train_loss") == _csv(run_dir, "train_loss")


# --- failures: warned once, the run unchanged ---------------------------------------------------


def _reference_val_loss(tmp_path: Path) -> float:
    exp = _experiment(tmp_path / "ref", "")
    (spec,) = expand(exp)
    result = train(spec, tmp_path / "ref" / "runs" / spec.run_id, execution=exp.execution)
    return result.val_loss


@pytest.mark.slow
def test_an_unwritable_mlflow_store_warns_once_and_the_run_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ref").mkdir()
    reference = _reference_val_loss(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    exp = _experiment(
        tmp_path, f'backend = "mlflow"\nuri = "sqlite:///{tmp_path / "a_file" / "mlflow.db"}"'
    )
    (spec,) = expand(exp)
    prepare(exp)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        run_dir = ExperimentLayout(exp.results_path).run_dir(spec.run_id)
        result = train(spec, run_dir, execution=exp.execution)
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.tracking"]
    assert len(lines) == 1 and lines[0].startswith("tracking: mlflow failed (")
    assert "\n" not in lines[0]
    assert result.status == "done" and result.val_loss == reference


@pytest.mark.slow
def test_a_backend_that_raises_mid_run_warns_once_and_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.tracking as tracking

    (tmp_path / "ref").mkdir()
    reference = _reference_val_loss(tmp_path)
    calls = {"n": 0}
    original = tracking._TensorBoard.log

    def flaky(self: Any, step: int, metrics: dict[str, float]) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk quota exceeded")
        original(self, step, metrics)

    monkeypatch.setattr(tracking._TensorBoard, "log", flaky)
    exp = _experiment(tmp_path, 'backend = ["tensorboard", "mlflow"]')
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        spec, run_dir, result = _train(exp)
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.tracking"]
    assert lines == [
        "tracking: tensorboard failed (OSError: disk quota exceeded); going on without it"
    ]
    assert calls["n"] == 4  # dropped after its first failure
    assert result.status == "done" and result.val_loss == reference
    folder = exp.results_path.resolve() / "tensorboard" / spec.run_id
    assert [s for s, _ in _tensorboard(folder, "train_loss")] == [1, 2, 3]
    (run,) = _mlflow_runs(exp)  # the other backend logged everything
    assert _mlflow_history(exp, run.info.run_id, "train_loss") == _csv(run_dir, "train_loss")
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert sorted(state.values()) == [3, 16]


# --- settings -----------------------------------------------------------------------------------


def test_tracking_settings_leave_every_run_id_unchanged(tmp_path: Path) -> None:
    plain = _experiment(tmp_path, "")
    tracked = _experiment(
        tmp_path,
        'backend = ["tensorboard", "mlflow", "wandb"]\nproject = "elsewhere"',
    )
    assert tracked.tracking.backend == ("tensorboard", "mlflow", "wandb")
    assert [s.run_id for s in expand(tracked)] == [s.run_id for s in expand(plain)]
    assert [s.to_dict() for s in expand(tracked)] == [s.to_dict() for s in expand(plain)]


@pytest.mark.slow
def test_settings_resolve_to_absolute_defaults_under_the_results_folder(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, 'backend = ["tensorboard", "mlflow", "wandb"]')
    root = exp.results_path.resolve()
    assert resolve(exp) == {
        "experiment": "tiny",
        "project": "tiny",
        "backends": {
            "tensorboard": str(root / "tensorboard"),
            "mlflow": f"sqlite:///{root / 'mlflow.db'}",
            "wandb": str(root),
        },
        "artifacts": str(root / "mlflow-artifacts"),
    }
    one = _experiment(tmp_path, 'backend = "mlflow"\nuri = "http://mlflow:5000"\nproject = "p"')
    assert resolve(one)["backends"] == {"mlflow": "http://mlflow:5000"}
    assert resolve(one)["project"] == "p"
    # Tracking off: the settings file is removed, so no worker logs.
    prepare(exp)
    assert (root / "tracking.json").exists()
    prepare(_experiment(tmp_path, ""))
    assert not (root / "tracking.json").exists()


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        (
            'backend = ["mlflow", "mlflow"]',
            "tracking.backend = ['mlflow', 'mlflow']: each of 'tensorboard', 'mlflow', 'wandb' "
            "at most once",
        ),
        ('backend = ["mlflow", "wandb"]\nuri = "x"', "tracking.uri = 'x': a location for a single"),
        ('backend = "comet"', "tracking.backend[0] = 'comet' is not one of 'tensorboard'"),
        ("colour = 1", "unknown key 'tracking.colour'; valid keys: backend, project, uri"),
    ],
)
def test_bad_tracking_settings_are_refused(tmp_path: Path, tracking: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _experiment(tmp_path, tracking)


@pytest.mark.slow
def test_an_unknown_backend_exits_2_with_one_line(tmp_path: Path) -> None:
    toml = tiny_toml(tmp_path, n_tokens="[4096]", extra='[tracking]\nbackend = "comet"')
    proc = harness_cli("plan", str(toml))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "tracking.backend[0] = 'comet'" in line and "'wandb'" in line


def test_a_backend_not_installed_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    exp = _experiment(tmp_path, 'backend = ["tensorboard", "wandb"]')
    with pytest.raises(InputError, match=r"pip install 'scaling-harness\[wandb\]'"):
        check_installed(exp.tracking)
    toml = tmp_path / "tiny.toml"
    assert main(["run", str(toml)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {toml}: tracking.backend = 'wandb': the wandb package is not")
    assert "scaling-harness[tracking]" in line
    assert not (exp.results_path / "runs").exists()  # nothing trained


# --- the grid's fits ------------------------------------------------------------------------------


@pytest.mark.slow
def test_fits_are_logged_as_one_tracker_run(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, 'backend = ["tensorboard", "mlflow"]')
    settings = prepare(exp)
    fits = {
        "fits": {
            "chinchilla": {
                "params": {"E": 1.5, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28},
                "n_points": 15,
            },
            "isoflop": {"skipped": "no budgets"},
        }
    }
    log_fits(settings, fits)
    tb = exp.results_path.resolve() / "tensorboard" / "tiny-fits"
    assert _tensorboard(tb, "chinchilla/alpha") == [(15, pytest.approx(0.34))]
    (run,) = _mlflow_runs(exp)
    assert run.info.run_name == "tiny-fits"
    assert run.data.metrics == {
        "chinchilla/E": 1.5,
        "chinchilla/A": 400.0,
        "chinchilla/B": 410.0,
        "chinchilla/alpha": 0.34,
        "chinchilla/beta": 0.28,
    }


@pytest.mark.slow
def test_harness_run_tracks_every_run_of_the_grid(tmp_path: Path) -> None:
    # Through the CLI: the settings reach the spawned workers through the results folder.
    toml = tiny_toml(tmp_path, extra='[tracking]\nbackend = ["tensorboard", "mlflow"]')
    proc = harness_cli("run", str(toml), timeout=300)
    assert proc.returncode == 0, proc.stderr
    exp = load_experiment(toml)
    run_ids = sorted(s.run_id for s in expand(exp))
    assert sorted(p.name for p in (exp.results_path / "tensorboard").iterdir()) == run_ids
    runs = _mlflow_runs(exp)
    assert sorted(r.data.tags["harness_run_id"] for r in runs) == run_ids
    for r in runs:
        run_dir = exp.results_path / "runs" / r.data.tags["harness_run_id"]
        assert _mlflow_history(exp, r.info.run_id, "train_loss") == _csv(run_dir, "train_loss")


@pytest.mark.slow
def test_only_rank_0_of_a_two_process_run_logs(tmp_path: Path) -> None:
    import dataclasses

    from harness.execute.ranks import train_on_devices

    exp = _experiment(tmp_path, 'backend = ["tensorboard", "mlflow"]')
    (spec,) = expand(exp)
    prepare(exp)
    run_dir = ExperimentLayout(exp.results_path).run_dir(spec.run_id)
    two = dataclasses.replace(exp.execution, device="cpu", threads=1, devices_per_run=2)
    result = train_on_devices(spec, run_dir, execution=two)
    assert result is not None and result.world_size == 2
    folder = exp.results_path.resolve() / "tensorboard" / spec.run_id
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    (run,) = _mlflow_runs(exp)
    assert _mlflow_history(exp, run.info.run_id, "train_loss") == _csv(run_dir, "train_loss")
    assert [s for s, _ in _tensorboard(folder, "train_loss")] == list(range(1, 17))
