"""Repeated data, the data side: data.unique_tokens = U trains on the first U training tokens only,
for D / U epochs, scored on the unchanged validation split (Muennighoff et al. 2023)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import tiny_toml

import harness.train.batches as train_mod
from harness.cli import main
from harness.config import DataConfig, load_experiment
from harness.data import (
    SequenceOrder,
    prepare_corpus,
    training_order,
    usable_train_tokens,
)
from harness.errors import InputError
from harness.grid import RunSpec
from harness.results import collect
from harness.train import train

torch.set_num_threads(1)


def test_order_reads_exactly_the_first_u_tokens() -> None:
    cfg = DataConfig(seq_len=8, unique_tokens=40)
    assert usable_train_tokens(cfg, 1000) == 41  # 5 windows of 8 targets need 41 tokens
    order = training_order(cfg, 1000, seed=0)
    assert order.n_windows == 5 and order.n_unique_tokens == 40
    starts = order.window_starts(0, 5 * 7)  # 7 epochs
    # Every epoch visits each of the 5 windows once; no window reads past token 40.
    for e in range(7):
        assert sorted(starts[5 * e : 5 * e + 5].tolist()) == [0, 8, 16, 24, 32]
    assert int(starts.max()) + 8 == 40  # the last window's last target is token 40
    # U = 0: the whole split, as before (the same stream as a plain SequenceOrder).
    whole = training_order(DataConfig(seq_len=8), 1000, seed=0)
    assert np.array_equal(
        whole.window_starts(0, 50), SequenceOrder(1000, 8, 0).window_starts(0, 50)
    )


def test_u_that_is_not_whole_sequences_or_exceeds_the_split() -> None:
    with pytest.raises(ValueError, match=r"unique_tokens = 100: must be 0 .* multiple of seq_len"):
        DataConfig(seq_len=8, unique_tokens=100)
    with pytest.raises(
        InputError,
        match=r"data\.unique_tokens = 1000 exceeds the training split of data\.corpus = "
        r"'shakespeare' \(801 tokens, 800 in whole sequences of 8\); accepted: 0 \(the whole "
        r"split\) or a multiple of 8 up to 800",
    ):
        usable_train_tokens(DataConfig(seq_len=8, unique_tokens=1000), 801)
    assert usable_train_tokens(DataConfig(seq_len=8, unique_tokens=800), 801) == 801  # all of it
    # A spec built around the config check still cannot train on a partial sequence.
    cfg = DataConfig(seq_len=8)
    object.__setattr__(cfg, "unique_tokens", 12)
    with pytest.raises(InputError, match=r"data\.unique_tokens = 12: not a whole number"):
        usable_train_tokens(cfg, 801)


def test_validation_split_does_not_depend_on_u(tmp_path: Path) -> None:
    exp = load_experiment(tiny_toml(tmp_path))
    a = prepare_corpus(exp.data, tmp_path / "cache")
    b = prepare_corpus(dataclasses.replace(exp.data, unique_tokens=256), tmp_path / "cache")
    assert a == b  # one cache entry: the same training and validation tokens for every U


def test_u_larger_than_the_split_is_bad_input_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tiny_toml(tmp_path)
    assert main(["run", str(toml), "--data.unique_tokens=3200000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "data.unique_tokens = 3200000 exceeds the training split" in err[0]
    assert not (tmp_path / "results" / "tiny" / "runs").exists()  # nothing trained


def test_a_repeated_run_trains_on_u_and_records_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[1024]"))
    seq_len = exp.data.seq_len  # 32
    u = 8 * seq_len  # 256 unique tokens, 8 windows
    read: list[tuple[int, np.ndarray]] = []
    real_gather = train_mod.gather_windows

    def spy(tokens: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
        read.append((tokens.size, starts.copy()))
        return real_gather(tokens, starts, n)

    monkeypatch.setattr(train_mod, "gather_windows", spy)
    from harness.grid import expand

    (base,) = expand(exp)
    spec = RunSpec(
        experiment=exp.name,
        model=base.model,
        data=dataclasses.replace(exp.data, unique_tokens=u),
        train=exp.train,
        n_tokens=4 * u,  # 4 epochs
        seed=0,
    )
    root = tmp_path / "results" / exp.name
    result = train(spec, root / "runs" / spec.run_id, execution=exp.execution)
    assert result is not None and result.status == "done"
    assert result.n_unique_tokens == u and result.epochs == 4.0
    corpus = prepare_corpus(spec.data, root / "cache")
    starts = np.concatenate([st for size, st in read if size == corpus.n_train_tokens])
    assert starts.size == 32  # D / seq_len training windows
    assert sorted(set(starts.tolist())) == list(range(0, u, seq_len))  # only the first U tokens
    assert np.bincount(starts // seq_len).tolist() == [4] * 8  # each window once per epoch

    # A failed U-limited run's row still says what it was to see.
    failed = dataclasses.replace(spec, n_tokens=2 * u + seq_len * 8)
    fdir = root / "runs" / failed.run_id
    fdir.mkdir(parents=True)
    (fdir / "spec.json").write_text(json.dumps(failed.to_dict()))
    (fdir / "result.json").write_text(json.dumps({"run_id": failed.run_id, "status": "failed"}))
    csv_path, counts = collect(root)
    assert counts["done"] == 1 and counts["failed"] == 1
    rows = {r["run_id"]: r for r in csv.DictReader(csv_path.open())}
    done = rows[spec.run_id]
    assert (int(done["n_tokens"]), int(done["n_unique_tokens"]), float(done["epochs"])) == (
        1024,
        256,
        4.0,
    )
    bad = rows[failed.run_id]
    assert (int(bad["n_tokens"]), int(bad["n_unique_tokens"]), float(bad["epochs"])) == (
        768,
        256,
        3.0,
    )
