"""runs.csv schema v1, collect, and the run-directory records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.atomic import atomic_write_json
from harness.config import DataConfig, TrainConfig
from harness.errors import InputError
from harness.grid import RunSpec
from harness.model import ModelShape
from harness.results import RUNS_CSV_COLUMNS, collect
from harness.rundir import RunDir

DESIGN_COLUMNS = (
    "n_params n_tokens loss run_id experiment status arch n_layer n_embd n_head n_params_total "
    "n_unique_tokens epochs flops flops_total val_bpb train_loss tokenizer vocab_size seq_len "
    "batch_tokens lr schedule seed wall_s tokens_per_s device harness_version git_sha "
    "peak_flops mfu mfu_total flops_budget objective branched_from trained_tokens trained_flops "
    "task_accuracy_full task_accuracy_lora world_size parallel parametrization base_width "
    "base_depth input_multiplier output_multiplier"
).split()


def _spec(n_tokens: int = 4096, seed: int = 0) -> RunSpec:
    shape = ModelShape(
        arch="llama", n_layer=2, n_embd=32, n_head=2, vocab_size=256, seq_len=32, ffn_dim=96
    )
    return RunSpec(
        experiment="t",
        model=shape,
        data=DataConfig(seq_len=32),
        train=TrainConfig(),
        n_tokens=n_tokens,
        seed=seed,
    )


def test_schema_v1_columns() -> None:
    assert RUNS_CSV_COLUMNS == DESIGN_COLUMNS


def test_collect_rows_and_states(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done, failed, unfinished = _spec(4096), _spec(8192), _spec(4096, seed=1)
    for spec in (done, failed, unfinished):
        RunDir(runs / spec.run_id).write_spec(spec)
    atomic_write_json(
        runs / done.run_id / "result.json",
        {
            "status": "done",
            "val_loss": 2.5,
            "val_bpb": 3.6,
            "train_loss": 2.4,
            "peak_lr": 3e-3,
            "n_unique_tokens": 4096,
            "epochs": 1.0,
            "wall_s": 1.5,
            "tokens_per_s": 2730.7,
            "device": "cpu",
            "harness_version": "0.1.0",
            "git_sha": "abc",
            "peak_flops": 1e11,
        },
    )
    atomic_write_json(runs / failed.run_id / "result.json", {"status": "failed", "error": "boom"})
    assert RunDir(runs / done.run_id).state() == "done"
    assert RunDir(runs / failed.run_id).state() == "failed"
    assert RunDir(runs / unfinished.run_id).state() == "started"
    assert RunDir(runs / "nothing").state() == "pending"

    path, counts = collect(tmp_path)
    assert counts == {"done": 1, "diverged": 0, "failed": 1, "unfinished": 1}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == DESIGN_COLUMNS
    assert [r["status"] for r in rows] == ["done", "failed"]  # sorted by N, then D
    row = rows[0]
    # Hand count for L2 d32 ffn96 llama: per layer 4*32*32 + 3*32*96 + 2*32 = 13,376;
    # plus 32 for the final norm.
    assert int(row["n_params"]) == 2 * 13_376 + 32
    assert int(row["n_params_total"]) == 2 * 13_376 + 32 + 256 * 32
    assert int(row["flops"]) == 6 * 26_784 * 4096
    assert float(row["loss"]) == 2.5 and row["batch_tokens"] == str(32 * 32)
    assert rows[1]["loss"] == ""  # failed runs stay as rows, without a loss
    # MFU: 6 N = 6 * 26,784 = 160,704 FLOPs per token, at 2,730.7 tokens/s against 1e11 FLOP/s.
    assert float(row["peak_flops"]) == 1e11
    assert float(row["mfu"]) == pytest.approx(160_704 * 2730.7 / 1e11, rel=1e-12)
    assert float(row["mfu"]) == pytest.approx(0.004388344128, rel=1e-12)
    # flops_per_token total (Chinchilla app. F), d32 f96 V256 n_ctx 32 h2 L2: embeddings
    # 2*256*32 = 16,384; per layer attention 6*32^2 + 2*32*32 + 3*2*32 + 2*32*32 + 2*32^2 =
    # 12,480 and SwiGLU 3*2*32*96 = 18,432; logits 16,384; forward 16,384 + 2*30,912 + 16,384
    # = 94,592; training 3x = 283,776.
    assert float(row["mfu_total"]) == pytest.approx(283_776 * 2730.7 / 1e11, rel=1e-12)
    assert float(row["mfu_total"]) == pytest.approx(0.007749071232, rel=1e-12)
    # A result.json without a peak (a failed run, or one written before these columns).
    assert rows[1]["peak_flops"] == rows[1]["mfu"] == rows[1]["mfu_total"] == ""


def test_spec_mismatch_is_refused(tmp_path: Path) -> None:
    a = _spec()
    RunDir(tmp_path / "x").write_spec(a)
    RunDir(tmp_path / "x").write_spec(a)  # same settings: fine
    with pytest.raises(InputError, match=r"spec\.json: holds settings that differ"):
        RunDir(tmp_path / "x").write_spec(_spec(n_tokens=8192))


def test_collect_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no runs/ folder here"):
        collect(tmp_path)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    RunDir(tmp_path / "runs" / "r1").write_spec(_spec())
    (tmp_path / "runs" / "r1" / "result.json").write_text("{not json")
    with pytest.raises(InputError, match=r"r1/result\.json: unreadable JSON"):
        collect(tmp_path)
    (tmp_path / "runs" / "r1" / "result.json").write_text('{"status": "done"}')
    (tmp_path / "runs" / "r1" / "spec.json").unlink()
    with pytest.raises(InputError, match=r"r1: result\.json without spec\.json"):
        collect(tmp_path)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"all_labels": True, "method": "lora"}, "KeyError: 'accuracy'"),
        ({"all_labels": True, "method": "lora", "accuracy": "abc"}, "ValueError"),
    ],
)
def test_collect_names_a_mangled_fine_tune_record(tmp_path: Path, record: dict, field: str) -> None:
    spec = _spec()
    run_dir = tmp_path / "runs" / spec.run_id
    RunDir(run_dir).write_spec(spec)
    atomic_write_json(run_dir / "result.json", {"status": "done", "val_loss": 2.5})
    atomic_write_json(run_dir / "downstream" / "lora_s0.json", record)
    with pytest.raises(InputError, match=f"{spec.run_id}: a record lacks or mangles a field") as e:
        collect(tmp_path)
    assert field in str(e.value)
    assert not (tmp_path / "runs.csv").exists()


def test_atomic_json_is_deterministic(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, 2]})
    atomic_write_json(tmp_path / "b.json", {"a": [1.5, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1.5, 2], "b": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
