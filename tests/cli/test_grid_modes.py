"""Grid modes: isoFLOP budgets, tokens-per-parameter ladders, explicit points, repeated data,
learning-rate and batch-size sweeps; order, duplicates, run ids and the isoFLOP budget tag."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.atomic import atomic_write_json
from harness.config import load_experiment
from harness.errors import InputError
from harness.grid import expand, expand_grid, spec_from_dict
from harness.model import count_params
from harness.results import collect
from harness.rundir import RunDir

ROOT = Path(__file__).parents[2]

# Two llama shapes whose N is counted by hand (head_dim 16, SwiGLU width ceil(d / 6) * 16):
# 1x32: 4*32^2 + 3*32*96 + 2*32 + 32 = 13,408;  1x64: 4*64^2 + 3*64*176 + 2*64 + 64 = 50,368.
HEAD = """
[data]
seq_len = 32
[train]
batch_size = 16
lr = 3e-3
[grid]
shapes = [{n_layer = 1, n_embd = 32}, {n_layer = 1, n_embd = 64}]
"""
N_SMALL, N_LARGE = 13_408, 50_368


def load(tmp_path: Path, grid: str, head: str = HEAD, overrides: list[str] | None = None):
    path = tmp_path / "g.toml"
    path.write_text(head + grid)
    return load_experiment(path, overrides)


def n_of(spec) -> int:
    return count_params(spec.model).non_embedding


def test_shapes_count_as_by_hand(tmp_path: Path) -> None:
    specs = expand(load(tmp_path, "n_tokens = [3200]"))
    assert [n_of(s) for s in specs] == [N_SMALL, N_LARGE]


def test_isoflop_d_is_c_over_6n_in_whole_sequences(tmp_path: Path) -> None:
    grid = expand_grid(load(tmp_path, "flops = [1e8, 1e10]"))
    got = [(n_of(s), s.n_tokens, s.flops_budget) for s in grid.specs]
    # D = C / (6 N), rounded half up to whole sequences of 32 tokens:
    # 1e8 / 80,448 = 1,243.04 = 38.84 seq -> 39 * 32 = 1,248
    # 1e10 / 80,448 = 124,303.9 = 3,884.497 seq -> 3,884 * 32 = 124,288
    # 1e10 / 302,208 = 33,089.8 = 1,034.06 seq -> 1,034 * 32 = 33,088
    # 1e8 / 302,208 = 330.9 = 10.34 seq -> 320 tokens < one batch of 16 * 32 = 512: dropped
    assert got == [
        (N_SMALL, 1_248, 1e8),
        (N_SMALL, 124_288, 1e10),
        (N_LARGE, 33_088, 1e10),
    ]
    (d,) = grid.dropped
    assert (d.n_params, d.n_tokens, d.batch_tokens, d.mode, d.value) == (
        N_LARGE,
        320,
        512,
        "flops",
        1e8,
    )
    assert "below one batch" in d.reason
    # C = 6 N D holds to the rounding of D (half a sequence).
    for s in grid.specs:
        assert abs(6 * n_of(s) * s.n_tokens - s.flops_budget) <= 6 * n_of(s) * 16


def test_isoflop_every_point_dropped_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"grid\.flops: every point is dropped") as e:
        expand(load(tmp_path, "flops = [1e6]"))
    assert "\n" not in str(e.value)


def test_tokens_per_param_ladder(tmp_path: Path) -> None:
    specs = expand(load(tmp_path, "tokens_per_param = [20, 2.5]"))
    # D = k N: 2.5 * 13,408 = 33,520 = 1,047.5 seq -> 1,048 * 32 = 33,536 (half up);
    # 20 * 13,408 = 268,160 (8,380 seq); 2.5 * 50,368 = 125,920; 20 * 50,368 = 1,007,360.
    assert [(n_of(s), s.n_tokens) for s in specs] == [
        (N_SMALL, 33_536),
        (N_SMALL, 268_160),
        (N_LARGE, 125_920),
        (N_LARGE, 1_007_360),
    ]
    assert all(s.flops_budget is None for s in specs)


def test_points_alone_and_with_a_mode(tmp_path: Path) -> None:
    head = HEAD.replace("shapes = [{n_layer = 1, n_embd = 32}, {n_layer = 1, n_embd = 64}]", "")
    alone = expand(
        load(
            tmp_path,
            """points = [
        {n_layer = 1, n_embd = 64, n_tokens = 1e5},
        {n_params = 13000, n_tokens = 3e3},
    ]""",
            head=head,
        )
    )
    # Sorted by size: 13,000 targets the 1x32 shape (N = 13,408). 3e3 = 93.75 seq -> 3,008.
    assert [(n_of(s), s.n_tokens) for s in alone] == [(N_SMALL, 3_008), (N_LARGE, 100_000)]
    # Beside isoFLOP budgets: a point equal to a budget's run is kept once, with its budget tag.
    both = expand(
        load(
            tmp_path,
            """flops = [1e10]
points = [{n_layer = 1, n_embd = 64, n_tokens = 33088}, {n_layer = 1, n_embd = 64, n_tokens = 5e4}]
""",
        )
    )
    assert [(n_of(s), s.n_tokens, s.flops_budget) for s in both] == [
        (N_SMALL, 124_288, 1e10),
        (N_LARGE, 33_088, 1e10),
        (N_LARGE, 50_016, None),  # 5e4 = 1,562.5 seq -> 1,563 (half up),
    ]


def test_repeated_data(tmp_path: Path) -> None:
    specs = expand(load(tmp_path, "unique_tokens = [4096, 8192]\nepochs = [1, 4]"))
    got = [(n_of(s), s.n_tokens, s.data.unique_tokens) for s in specs]
    # D = U x epochs; order: size, then D, then U.
    assert got[:4] == [
        (N_SMALL, 4_096, 4_096),
        (N_SMALL, 8_192, 8_192),
        (N_SMALL, 16_384, 4_096),
        (N_SMALL, 32_768, 8_192),
    ]
    assert len(specs) == 8
    assert len({s.run_id for s in specs}) == 8  # U is part of the identity


def test_repeated_data_bad_u_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"grid\.unique_tokens = 10: unique_tokens = 10"):
        expand(load(tmp_path, "unique_tokens = [10]\nepochs = [2]"))


def test_lr_and_batch_sweeps_order_and_settings(tmp_path: Path) -> None:
    specs = expand(
        load(
            tmp_path,
            """n_tokens = [3200]
lrs = [1e-3, 4e-3]
batch_sizes = [8, 16]
seeds = [0, 1]
""",
        )
    )
    assert len(specs) == 2 * 2 * 2 * 2
    first = [(n_of(s), s.train.lr, s.train.batch_size, s.seed) for s in specs[:8]]
    assert first == [
        (N_SMALL, 1e-3, 8, 0), (N_SMALL, 1e-3, 8, 1), (N_SMALL, 1e-3, 16, 0),
        (N_SMALL, 1e-3, 16, 1), (N_SMALL, 4e-3, 8, 0), (N_SMALL, 4e-3, 8, 1),
        (N_SMALL, 4e-3, 16, 0), (N_SMALL, 4e-3, 16, 1),
    ]  # fmt: skip
    # Everything else of train is the experiment's.
    assert {dataclasses.replace(s.train, lr=3e-3, batch_size=16) for s in specs} == {
        specs[0].train.__class__(batch_size=16, lr=3e-3)
    }


def test_sweep_of_the_base_value_keeps_run_ids(tmp_path: Path) -> None:
    plain = [s.run_id for s in expand(load(tmp_path, "n_tokens = [3200, 6400]"))]
    swept = [s.run_id for s in expand(load(tmp_path, "n_tokens = [3200, 6400]\nlrs = [3e-3]"))]
    assert swept == plain
    dup = expand(load(tmp_path, "n_tokens = [3200, 3200.0]\nlrs = [1e-3, 1e-3]\nseeds = [0, 0]"))
    assert len(dup) == 2  # one per size


def test_isoflop_budget_across_a_batch_sweep(tmp_path: Path) -> None:
    # The drop rule uses each run's own batch: 320 tokens of the 1x64 model at C = 1e8 is one
    # batch of 8 x 32 = 256 or more, but less than 16 x 32 = 512.
    grid = expand_grid(load(tmp_path, "flops = [1e8]\nbatch_sizes = [8, 16]"))
    assert [(n_of(s), s.train.batch_size) for s in grid.specs] == [
        (N_SMALL, 8), (N_SMALL, 16), (N_LARGE, 8),
    ]  # fmt: skip
    assert [(d.n_params, d.batch_tokens) for d in grid.dropped] == [(N_LARGE, 512)]


def test_modes_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="use one of n_tokens, flops"):
        load(tmp_path, "n_tokens = [3200]\nflops = [1e9]")


def test_plain_grid_run_ids_unchanged() -> None:
    """The quickstart's stored run ids (and order) are exactly what expand gives today."""
    exp = load_experiment(ROOT / "experiments" / "quickstart.toml")
    stored = pd.read_csv(ROOT / "results" / "quickstart" / "runs.csv", dtype={"run_id": str})
    assert [s.run_id for s in expand(exp)] == list(stored["run_id"])
    assert all(s.flops_budget is None for s in expand(exp))


def test_budget_tag_is_not_identity_and_reaches_runs_csv(tmp_path: Path) -> None:
    spec = expand(load(tmp_path, "flops = [1e10]"))[0]
    untagged = dataclasses.replace(spec, flops_budget=None)
    assert spec.run_id == untagged.run_id
    assert spec.to_dict()["flops_budget"] == 1e10 and "flops_budget" not in untagged.to_dict()
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec_from_dict(untagged.to_dict()).flops_budget is None  # an old spec.json
    # A run directory written before the tag existed is the same run.
    run_dir = tmp_path / "res" / "runs" / spec.run_id
    RunDir(run_dir).write_spec(untagged)
    assert RunDir(run_dir).check_spec(spec)
    run_dir = tmp_path / "res" / "runs" / spec.run_id
    (run_dir / "spec.json").unlink()
    RunDir(run_dir).write_spec(spec)
    atomic_write_json(run_dir / "result.json", {"status": "done", "val_loss": 2.5})
    path, counts = collect(tmp_path / "res")
    (row,) = list(csv.DictReader(path.open()))
    assert counts["done"] == 1 and float(row["flops_budget"]) == 1e10
    assert "flops_budget" in row
    with pytest.raises(InputError, match="flops_budget"):
        spec_from_dict({**spec.to_dict(), "flops_budget": "big"})


def test_isoflop_grid_to_fit(tmp_path: Path) -> None:
    """An isoFLOP grid's runs.csv groups by the budget column and gives approach 2's exponent.

    Losses follow Chinchilla's fit (Hoffmann et al. 2022: E 1.69, A 406.4, B 410.7, alpha 0.34,
    beta 0.28), whose compute-optimal N grows as C^(beta / (alpha + beta)) = C^0.4516.
    """
    from harness.analysis.fitting import fit_frame
    from harness.analysis.io import load_runs

    head = "[data]\nseq_len = 128\n[train]\nbatch_size = 8\n"
    sizes = ", ".join(f"{n:.0f}" for n in 10 ** np.linspace(5, 7, 9))
    specs = expand(
        load(tmp_path, f"[grid]\nn_params = [{sizes}]\nflops = [1e13, 1e14, 1e15]", head=head)
    )
    assert len(specs) == 27
    root = tmp_path / "iso"
    for s in specs:
        n, d = n_of(s), s.n_tokens
        loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
        RunDir(root / "runs" / s.run_id).write_spec(s)
        atomic_write_json(
            root / "runs" / s.run_id / "result.json", {"status": "done", "val_loss": loss}
        )
    path, _ = collect(root)
    fits = fit_frame(load_runs(path), fits=["isoflop"], n_bootstrap=0)
    assert fits["isoflop"]["budgets"] == [1e13, 1e14, 1e15]  # the tags, not rounded 6ND
    assert fits["isoflop"]["a"] == pytest.approx(0.28 / 0.62, abs=0.02)
