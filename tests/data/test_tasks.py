"""Downstream tasks: the bundled 'shakespeare-plays' task, CSV tasks and labelled subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.config import DataConfig
from harness.data import read_corpus_bytes, split_train_val
from harness.errors import InputError
from harness.tasks import (
    N_PLAYS,
    csv_task,
    held_out_ranges,
    load_task,
    shakespeare_plays,
    subsample,
)


@pytest.fixture(scope="module")
def plays():
    return shakespeare_plays(DataConfig())


def test_held_out_ranges_are_exactly_the_validation_split():
    data = DataConfig(val_block_bytes=1000, val_fraction=0.1)
    text = bytes(range(256)) * 97  # 24,832 bytes, not a whole number of blocks
    _, val = split_train_val(text, data)
    ranges = held_out_ranges(len(text), data)
    assert ranges == [(5000, 6000), (15000, 16000)]
    assert b"".join(text[a:b] for a, b in ranges) == val


def test_shakespeare_plays_labels_sizes_and_balance(plays):
    # Defaults: 8 plays hold a whole 16 KiB held-out block each: 128 passages of 128 bytes,
    # 16 chunks of 8 per play -> 4 test, 2 validation (round(0.15 * 16) = 2), 10 train chunks.
    assert plays.n_classes == N_PLAYS == 8
    assert plays.classes == (
        "antony_and_cleopatra",
        "hamlet",
        "henry_iv_part_2",
        "henry_vi_part_1",
        "julius_caesar",
        "loves_labours_lost",
        "merchant_of_venice",
        "much_ado_about_nothing",
    )
    assert (len(plays.train), len(plays.val), len(plays.test)) == (640, 128, 256)
    for split, per_class in ((plays.train, 80), (plays.val, 16), (plays.test, 32)):
        assert np.bincount(split.labels).tolist() == [per_class] * 8
        assert {len(t) for t in split.texts} == {128}
    assert plays.chance_accuracy == 1 / 8


def test_no_passage_comes_from_the_pretraining_training_split(plays):
    data = DataConfig()
    text = read_corpus_bytes("shakespeare")
    train_bytes, _ = split_train_val(text, data)
    ranges = held_out_ranges(len(text), data)
    for split in (plays.train, plays.val, plays.test):
        for passage, offset in zip(split.texts, split.offsets, strict=True):
            assert text[offset : offset + len(passage)] == passage
            assert any(a <= offset and offset + len(passage) <= b for a, b in ranges)
    # The test passages are not even repeated elsewhere in the training text (8 ms each).
    assert not any(passage in train_bytes for passage in plays.test.texts)


def test_passage_labels_are_the_play_holding_the_offset(plays):
    import json
    from importlib import resources

    index = json.loads(
        resources.files("harness.corpora").joinpath("shakespeare.index.json").read_text()
    )
    spans = {
        w["title"]: (w["byte_offset"], w["byte_offset"] + w["n_bytes"]) for w in index["works"]
    }
    for split in (plays.train, plays.val, plays.test):
        for label, offset in zip(split.labels, split.offsets, strict=True):
            a, b = spans[plays.classes[label]]
            assert a <= offset and offset + 128 <= b


def test_split_is_deterministic_disjoint_and_chunked(plays):
    again = shakespeare_plays(DataConfig())
    assert again.fingerprint == plays.fingerprint
    for s in ("train", "val", "test"):
        assert getattr(again, s).offsets.tolist() == getattr(plays, s).offsets.tolist()
    offsets = [set(s.offsets.tolist()) for s in (plays.train, plays.val, plays.test)]
    assert not (offsets[0] & offsets[1] or offsets[0] & offsets[2] or offsets[1] & offsets[2])
    # Whole chunks of 8 consecutive passages (1,024 bytes) sit in one split.
    test_starts = sorted(plays.test.offsets.tolist())
    runs = [test_starts[i : i + 8] for i in range(0, len(test_starts), 8)]
    assert all(r == list(range(r[0], r[0] + 8 * 128, 128)) for r in runs)


def test_other_seq_len_gives_other_passages():
    t = shakespeare_plays(DataConfig(seq_len=64))
    assert {len(x) for x in t.train.texts} == {64}
    assert t.n_classes == 8 and np.bincount(t.test.labels).min() == np.bincount(t.test.labels).max()


def test_too_little_held_out_text_is_refused():
    with pytest.raises(InputError, match=r"downstream.task = 'shakespeare-plays'.*at least 20"):
        shakespeare_plays(DataConfig(seq_len=1024))


@pytest.mark.parametrize(
    ("n", "per_class"),
    [(8, [1] * 8), (32, [4] * 8), (35, None), (128, [16] * 8), (512, [64] * 8)],
)
def test_subsample_is_balanced_and_exact(plays, n, per_class):
    idx = subsample(plays.train.labels, n, seed=3)
    assert len(idx) == len(set(idx.tolist())) == n
    counts = np.bincount(plays.train.labels[idx], minlength=8)
    if per_class is None:  # 35 = 8 * 4 + 3: three classes get one more
        assert sorted(counts.tolist()) == [4] * 5 + [5] * 3
    else:
        assert counts.tolist() == per_class


def test_subsample_is_seeded_and_nested(plays):
    labels = plays.train.labels
    a = subsample(labels, 32, seed=0)
    assert subsample(labels, 32, seed=0).tolist() == a.tolist()
    assert subsample(labels, 32, seed=1).tolist() != a.tolist()
    small, big = set(a.tolist()), set(subsample(labels, 128, seed=0).tolist())
    assert small <= big <= set(subsample(labels, 512, seed=0).tolist())
    assert subsample(labels, 0, seed=0).tolist() == list(range(640))


def test_subsample_fills_from_other_classes_when_one_runs_short():
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10)
    idx = subsample(labels, 12, seed=0)
    assert np.bincount(labels[idx]).tolist() == [2, 5, 5]
    with pytest.raises(InputError, match=r"downstream.n_labels = 2: fewer than the 3 classes"):
        subsample(labels, 2, seed=0)


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_task_reads_splits_and_ignores_other_columns(tmp_path):
    rows = ["id,text,label"] + [f'{i},"words, {i}",{"ab"[i % 2]}' for i in range(20)]
    task = csv_task(_write(tmp_path, "\n".join(rows) + "\n"))
    assert task.classes == ("a", "b")
    # 10 rows per label: test round(2.5) = 2, validation round(1.5) = 2, train 6.
    assert (len(task.train), len(task.val), len(task.test)) == (12, 4, 4)
    assert b"words, 0" in task.train.texts + task.val.texts + task.test.texts
    assert task.fingerprint == csv_task(tmp_path / "t.csv").fingerprint


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", r"t.csv: the file is empty; accepted: a header row text,label"),
        ("text,lable\nx,a\n", r"t.csv: line 1: header \['text', 'lable'\] has no column 'label'"),
        ("text,label\nx,a\ny\n", r"t.csv: line 3: 1 fields \['y'\]; accepted: 2 fields"),
        ("text,label\nx,a\n ,b\n", r"t.csv: line 3, column text: empty value ' '; accepted: a non"),
        ("text,label\nx,\n", r"t.csv: line 2, column label: empty value ''; accepted"),
        (
            "text,label\nx,a\ny,a\nz,a\n",
            r"column label has 1 distinct value\(s\) \['a'\]; accepted: at least 2",
        ),
        (
            "text,label\nx,a\ny,a\nz,a\nu,b\nv,b\n",
            r"t.csv: column label: 'b' has 2 row\(s\); accepted: at least 3 rows per label",
        ),
        ('text,label\n"unclosed,a\n', r"t.csv: line \d+: (malformed CSV|1 fields)"),
    ],
)
def test_csv_task_bad_input_is_one_line(tmp_path, content, pattern):
    with pytest.raises(InputError, match=pattern) as e:
        csv_task(_write(tmp_path, content))
    assert "\n" not in str(e.value)


def test_csv_not_utf8_names_line_and_byte(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(InputError, match=r"t.csv: line 3: byte 0xe9 is not UTF-8"):
        csv_task(p)


def test_load_task_unknown_name(tmp_path):
    with pytest.raises(
        InputError, match=r"downstream.task = 'plays': no such task or file; accepted: one of"
    ):
        load_task("plays", DataConfig())
    good = _write(tmp_path, "text,label\n" + "".join(f"x{i},{i % 2}\n" for i in range(6)))
    assert load_task(str(good), DataConfig()).classes == ("0", "1")
