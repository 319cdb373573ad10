"""Experiment settings: TOML loading, overrides, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import ExperimentConfig, load_experiment, parse_overrides, to_dict
from harness.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[grid]
n_params = [10_000, 30_000]
n_tokens = [1e5, 3e5]
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_quickstart_loads_and_name_defaults_to_stem() -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.toml")
    assert exp.name == "quickstart"
    # The design rules results/quickstart/README.md gives: 5 sizes over 30x or more and 3 budgets
    # over 10x (more runs than the Chinchilla law's 5 parameters), every model 2+ layers (1-layer
    # models lie off the trend), every run 100+ optimizer steps (at 49 all sizes sat at the
    # byte-unigram loss).
    from harness.grid import expand

    runs = expand(exp)
    assert len({r.model for r in runs}) == 5 and len({r.n_tokens for r in runs}) == 3
    assert max(exp.grid.n_params) / min(exp.grid.n_params) >= 30
    assert max(exp.grid.n_tokens) / min(exp.grid.n_tokens) >= 10
    assert min(r.model.n_layer for r in runs) >= 2
    assert min(r.n_steps for r in runs) >= 100


def test_defaults_and_float_tokens_become_ints(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, MINIMAL))
    assert exp.grid.n_tokens == (100_000, 300_000)
    assert all(isinstance(d, int) for d in exp.grid.n_tokens)
    assert exp.grid.seeds == (0,)
    assert exp.model.arch == "llama"
    assert exp.data.corpus == "shakespeare"


def test_overrides_take_precedence(tmp_path: Path) -> None:
    exp = load_experiment(
        write(tmp_path, MINIMAL),
        [
            "--train.lr=1e-2",
            "--grid.seeds=[1,2]",
            "--data.corpus=my text.txt",
            "--name=other",
            "--model.arch=gpt2",
            "--execution.progress=false",
        ],
    )
    assert exp.train.lr == 0.01
    assert exp.grid.seeds == (1, 2)
    assert exp.data.corpus == "my text.txt"
    assert exp.name == "other"
    assert exp.model.arch == "gpt2"
    assert exp.execution.progress is False


def test_parse_overrides_nested() -> None:
    assert parse_overrides(["--a.b.c=3", "--a.d='x'"]) == {"a": {"b": {"c": 3}, "d": "x"}}


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ("[grid\nn_params = [1]", [], r"exp\.toml: invalid TOML"),
        (
            MINIMAL + "\n[train]\nlr_rate = 0.1\n",
            [],
            r"exp\.toml: unknown key 'train\.lr_rate'; valid keys: batch_size, lr, ",
        ),
        ("bogus = 1\n" + MINIMAL, [], r"unknown key 'bogus'; valid keys: name, description, model"),
        (MINIMAL + "\n[train]\nlr = 'fast'\n", [], r"train\.lr = 'fast' is not a number"),
        (
            MINIMAL + "\n[train]\nbatch_size = 2.5\n",
            [],
            r"train\.batch_size = 2\.5 is not an integer",
        ),
        (
            MINIMAL + "\n[model]\narch = 'rnn'\n",
            [],
            r"model\.arch = 'rnn' is not one of 'llama', 'gpt2'",
        ),
        (
            "[grid]\nn_params = [-5]\nn_tokens = [1e5]\n",
            [],
            r"grid\.n_params = -5: every target parameter count must be > 0",
        ),
        (
            "[grid]\nn_params = [1000]\nn_tokens = [0]\n",
            [],
            r"grid\.n_tokens = 0: every token budget must be > 0",
        ),
        ("[grid]\nn_tokens = [1e5]\n", [], r"give at least one model size"),
        (
            MINIMAL,
            ["--train.lr=-1"],
            r"\(with overrides --train\.lr=-1\): train\.lr = -1\.0: must be > 0",
        ),
        (MINIMAL, ["--train.nope=1"], r"unknown key 'train\.nope'"),
        (MINIMAL, ["train.lr=1"], r"expected --section\.field=value"),
        (MINIMAL, ["--train.lr=nan"], r"train\.lr = nan is not a number"),
        (MINIMAL + "\n[data]\nseq_len = true\n", [], r"data\.seq_len = True is not an integer"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, text: str, overrides: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_experiment(write(tmp_path, text), overrides)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.toml: no such experiment file"):
        load_experiment(tmp_path / "nope.toml")


def test_settings_are_frozen_and_round_trip(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        exp.train.lr = 1.0  # type: ignore[misc]
    d = to_dict(exp)
    assert d["grid"]["n_tokens"] == [100_000, 300_000]
    from harness.config import build_section

    assert build_section(ExperimentConfig, d, "", "x") == exp
