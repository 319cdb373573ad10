"""Corpora, the fixed validation split and the token stream order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.config import DataConfig
from harness.data import (
    SequenceOrder,
    gather_windows,
    prepare_corpus,
    read_corpus_bytes,
    split_train_val,
)
from harness.errors import InputError


def test_bundled_shakespeare_is_the_complete_works() -> None:
    text = read_corpus_bytes("shakespeare")
    # 42 Gutenberg files, 5,057,198 bytes before our normalised separators (counted from the
    # Gutenberg source files).
    assert 5_000_000 < len(text) < 5_100_000
    assert b"To be, or not to be" in text


def test_split_is_disjoint_spread_and_complete() -> None:
    text = bytes(range(256)) * 400  # 102,400 bytes
    cfg = DataConfig(val_fraction=0.1, val_block_bytes=1024)
    train, val = split_train_val(text, cfg)
    assert len(train) + len(val) == len(text)
    assert len(val) == 10 * 1024  # blocks 5, 15, ..., 95 of 100
    text2 = bytes(np.random.default_rng(0).integers(0, 256, 102_400, dtype=np.uint8))
    train2, val2 = split_train_val(text2, cfg)
    assert val2[:1024] == text2[5 * 1024 : 6 * 1024]
    assert val2[-1024:] == text2[95 * 1024 : 96 * 1024]
    assert val2[:64] not in train2


def test_prepare_caches_and_detects_changes(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 3000)
    cfg = DataConfig(corpus=str(corpus), val_block_bytes=1024, eval_tokens=256)
    a = prepare_corpus(cfg, tmp_path / "cache")
    assert a.vocab_size == 256 and a.tokenizer == "byte"
    assert a.n_train_tokens + a.n_val_tokens == len(corpus.read_bytes()) + 1  # + our separator
    assert prepare_corpus(cfg, tmp_path / "cache") == a  # cached
    corpus.write_text("another text entirely, longer than a block\n" * 3000)
    b = prepare_corpus(cfg, tmp_path / "cache")
    assert b.directory != a.directory and b.corpus_sha256 != a.corpus_sha256


def test_bpe_tokenizer(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    rng = np.random.default_rng(0)
    words = ["thee", "thou", "art", "king", "lord", "hath", "doth", "love", "night", "day"]
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(4000)))
    cfg = DataConfig(
        corpus=str(corpus),
        tokenizer="bpe",
        bpe_vocab_size=300,
        val_block_bytes=1024,
        eval_tokens=256,
    )
    c = prepare_corpus(cfg, tmp_path / "cache")
    assert c.vocab_size == 300
    train = c.train_tokens()
    assert train.max() < 300
    # BPE merges: far fewer tokens than bytes, and token byte lengths add up to the bytes.
    n_bytes = c.token_n_bytes()
    raw_train, _ = split_train_val(read_corpus_bytes(str(corpus)), cfg)
    assert c.n_train_tokens < 0.6 * len(raw_train)
    assert int(n_bytes[np.asarray(train)].sum()) == len(raw_train)


def test_bad_corpus(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"data\.corpus = '.*nope': no such file or folder; "
        r"accepted: a path or one of shakespeare",
    ):
        read_corpus_bytes(str(tmp_path / "nope"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(InputError, match=r"bin\.txt is not UTF-8 text"):
        read_corpus_bytes(str(tmp_path / "bin.txt"))
    (tmp_path / "tiny.txt").write_text("hi")
    with pytest.raises(InputError, match=r"too small for a validation split"):
        split_train_val(b"hi", DataConfig(corpus="tiny"))


def test_sequence_order_epochs_and_determinism() -> None:
    order = SequenceOrder(n_train_tokens=10 * 8 + 1, seq_len=8, seed=3)
    assert order.n_windows == 10 and order.n_unique_tokens == 80
    first = order.window_starts(0, 10)
    assert sorted(first.tolist()) == list(range(0, 80, 8))  # one epoch = every window once
    second = order.window_starts(10, 10)
    assert sorted(second.tolist()) == list(range(0, 80, 8))
    assert first.tolist() != second.tolist()  # a new order each epoch
    # Any slice of the stream equals the same positions read in one go (resume needs this).
    whole = order.window_starts(0, 25)
    assert np.array_equal(
        np.concatenate([order.window_starts(0, 7), order.window_starts(7, 18)]), whole
    )
    assert np.array_equal(SequenceOrder(81, 8, 3).window_starts(0, 25), whole)
    assert not np.array_equal(SequenceOrder(81, 8, 4).window_starts(0, 25), whole)


def test_gather_windows_shifts_by_one() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    w = gather_windows(tokens, np.array([0, 16]), 8)
    assert w.shape == (2, 9)
    assert w[1].tolist() == list(range(16, 25))
