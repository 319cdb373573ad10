"""The `harness` command end to end: a real 2-point grid on the bundled corpus, and bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main

GRID = """
description = "two-point end-to-end test"
[data]
seq_len = 32
eval_tokens = 2048
[train]
batch_size = 8
lr = 1e-2
evals_per_run = 2
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}]
n_tokens = [4096, 16384]
[execution]
threads = 1
progress = false
results_dir = "{results}"
"""


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_two_point_grid_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "e2e.toml"
    exp.write_text(GRID.format(results=tmp_path / "results"))
    assert main(["run", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "0 already done, 2 to train" in out
    root = tmp_path / "results" / "e2e"
    with (root / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert [int(r["n_tokens"]) for r in rows] == [4096, 16384]
    losses = [float(r["loss"]) for r in rows]
    assert all(0 < loss < 5.55 for loss in losses)  # below the uniform byte loss ln(256)
    assert losses[1] < losses[0]  # 4x the data, lower held-out loss
    assert rows[0]["val_bpb"] and abs(float(rows[0]["val_bpb"]) - losses[0] / 0.693147) < 1e-3
    for r in rows:
        run_dir = root / "runs" / r["run_id"]
        assert {"spec.json", "result.json", "metrics.csv", "train.log"} <= {
            p.name for p in run_dir.iterdir()
        }

    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/result.json")}
    assert main(["run", str(exp)]) == 0  # again: nothing trains
    assert "2 already done, 0 to train" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in root.glob("runs/*/result.json")}

    assert main(["collect", str(root)]) == 0
    assert main(["status", str(root)]) == 0
    assert "2 done" in capsys.readouterr().out


# Bad input `harness run` refuses before anything trains, and `harness plan` alike.
BAD_INPUT = [
    ("[grid\n", [], "invalid TOML"),
    (
        "[grid]\nn_params = [1000]\nn_tokens = [1e5]\nfoo = 1\n",
        [],
        "unknown key 'grid.foo'; valid keys: n_params, shapes, n_tokens, flops",
    ),
    ("[grid]\nn_params = [-1000]\nn_tokens = [1e5]\n", [], "grid.n_params = -1000"),
    (
        "[grid]\nn_params = [1000]\nn_tokens = [1e5]\n",
        ["--train.lr=abc"],
        "train.lr = 'abc' is not a number",
    ),
    # Refused before anything trains (the stage and the corpus come after pretraining).
    (
        "[grid]\nn_params = [10000]\nn_tokens = [1e5]\n",
        ["--downstream.task=nope.csv"],
        "bad.toml: downstream.task = 'nope.csv': no such task or file",
    ),
    (
        "[grid]\nn_params = [10000]\nn_tokens = [1e5]\n",
        ["--downstream.task=shakespeare-plays", "--downstream.n_labels=[3]"],
        "bad.toml: downstream.n_labels = 3: task 'shakespeare-plays' has 640",
    ),
    (
        "[grid]\nn_params = [10000]\nn_tokens = [1e5]\n",
        ["--data.corpus=synthetic:order=99"],
        # Refused when the experiment loads, so the overrides are named as for any field.
        "bad.toml (with overrides --data.corpus=synthetic:order=99): data.corpus: "
        "synthetic order = 99; accepted: an integer 1..6",
    ),
    (
        "[grid]\nn_params = [10000]\nn_tokens = [1e5]\n",
        ["--data.corpus=shakespear"],
        "bad.toml: data.corpus = 'shakespear': no such file or folder",
    ),
    (
        "[grid]\nn_params = [1]\nn_tokens = [1e5]\n",
        [],
        "bad.toml: grid.n_params = 1: target_n_params=1 is below the smallest llama model",
    ),
    (
        'name = ".."\n[grid]\nn_params = [10000]\nn_tokens = [1e5]\n',
        [],
        "name = '..': letters, digits, '-', '_' and '.' only, not starting with '.'",
    ),
    (
        "[grid]\nn_params = [1000]\nn_tokens = [1e5]\n",
        ["extra"],
        "unrecognised argument 'extra'",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("toml", "args", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, toml: str, args: list[str], message: str
) -> None:
    exp = tmp_path / "bad.toml"
    exp.write_text(toml)
    proc = harness("run", str(exp), *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()  # nothing written


@pytest.mark.parametrize(("toml", "args", "message"), BAD_INPUT)
def test_plan_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, args: list[str], message: str
) -> None:
    exp = tmp_path / "bad.toml"
    exp.write_text(toml)
    assert main(["plan", "--no-timing", str(exp), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: cuda is accepted")
def test_run_refuses_cuda_without_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "e.toml"
    exp.write_text(GRID.format(results=tmp_path / "results"))
    assert main(["run", str(exp), "--execution.device=cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {exp}: execution.device = 'cuda' but no CUDA device is available; "
        "accepted: auto or cpu on this machine, cuda where a GPU is visible"
    ]
    assert not (tmp_path / "results").exists()


def test_run_refuses_an_unwritable_results_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    exp = tmp_path / "e.toml"
    exp.write_text(GRID.format(results=tmp_path / "afile" / "results"))
    assert main(["run", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'afile'} is a file; accepted: a folder" in err[0], err


@pytest.mark.slow
def test_unknown_command_and_missing_dir(tmp_path: Path) -> None:
    proc = harness("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = harness("collect", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2 and "no runs/ folder here" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_help_page_prints(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse %-formats help strings when it prints them: a bare "95%" once made
    # `harness --help` a traceback.
    from harness.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse has no API)
    for argv in [["--help"], *([name, "--help"] for name in commands)]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0, argv
        assert "usage: harness" in capsys.readouterr().out, argv
