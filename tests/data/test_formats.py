"""Bring your own data: every corpus format and a real pretrained tokenizer (issue 18).

Each test writes real files with the library that owns the format (json/gzip/zstandard,
pyarrow, datasets, numpy), prepares the corpus as `harness run` does, and checks the tokens
read back: the documents, whole, with the GPT-NeoX tokenizer's end-of-text id between them, every
k-th one held out, and the bytes per token that make bits per byte exact. Bad input is one line
naming the file and its line or row, exit 2 already at `harness plan`, and leaves no entry in the
cache."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from _tiny import harness_cli

from harness.config import DataConfig
from harness.data import (
    gather_windows,
    prepare_corpus,
    read_corpus_bytes,
    split_train_val,
    vocab_size_for,
)
from harness.errors import InputError
from harness.tokenizer import eos_token_id, load, token_n_bytes
from harness.tokens import TokenSpans

NEOX = "gpt-neox-20b"
K = 4  # val_fraction 0.25: every 4th document, from the 3rd (index 2), is held out


@pytest.fixture(scope="module")
def docs() -> list[str]:
    """40 documents of Shakespeare, 2-4 KB each (whole lines)."""
    text = read_corpus_bytes("shakespeare")[:120_000].decode()
    lines = text.splitlines(keepends=True)
    out, cur = [], ""
    for line in lines:
        cur += line
        if len(cur) > 2000 + 50 * len(out):
            out.append(cur)
            cur = ""
    return out[:40]


def _cfg(corpus: Path, **kw: object) -> DataConfig:
    base = {"corpus": str(corpus), "tokenizer": NEOX, "val_fraction": 0.25, "seq_len": 32}
    return DataConfig(**(base | {"eval_tokens": 256} | kw))  # type: ignore[arg-type]


def _expected(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    tok, eos = load(NEOX), eos_token_id(NEOX)
    parts: dict[bool, list[int]] = {True: [], False: []}
    for i, d in enumerate(docs):
        parts[i % K == K // 2] += tok.encode(d, add_special_tokens=False).ids + [eos]
    return np.array(parts[False]), np.array(parts[True])


def _write_jsonl(path: Path, docs: list[str]) -> Path:
    lines = "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs))
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(lines.encode()))
    elif path.suffix == ".zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    else:
        path.write_text(lines)
    return path


def test_the_pretrained_tokenizer_counts_bytes_exactly(docs: list[str]) -> None:
    tok, n_bytes = load(NEOX), token_n_bytes(NEOX)
    assert n_bytes.size == 50277 == vocab_size_for(DataConfig(tokenizer=NEOX))
    assert eos_token_id(NEOX) == 0 and n_bytes[0] == 0  # <|endoftext|> stands for no text
    text = "".join(docs) + " naïve café — ünïcödé 日本語"
    assert n_bytes[tok.encode(text).ids].sum() == len(text.encode())


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst"])
def test_json_lines_become_whole_documents(tmp_path: Path, docs: list[str], name: str) -> None:
    corpus = prepare_corpus(_cfg(_write_jsonl(tmp_path / name, docs)), tmp_path / "cache")
    train, val = _expected(docs)
    assert corpus.format == "jsonl" and corpus.n_documents == len(docs)
    assert np.array_equal(corpus.train_tokens(), train)
    assert np.array_equal(corpus.val_tokens(), val)
    assert corpus.train_tokens().dtype == np.uint16  # memory-mapped, 50277 ids fit
    # The JSON syntax never reaches the tokens.
    assert '{"' not in load(NEOX).decode(corpus.train_tokens()[:200].tolist())


def test_parquet_shards_and_a_saved_dataset(tmp_path: Path, docs: list[str]) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    train, val = _expected(docs)
    shards = tmp_path / "shards"
    shards.mkdir()
    for j in range(2):  # two shards, read in name order
        part = docs[j * 20 : (j + 1) * 20]
        pq.write_table(
            pa.table({"body": part, "n": list(range(len(part)))}), shards / f"{j}.parquet"
        )
    corpus = prepare_corpus(_cfg(shards, text_field="body"), tmp_path / "cache")
    assert corpus.format == "parquet"
    assert np.array_equal(corpus.train_tokens(), train)
    assert np.array_equal(corpus.val_tokens(), val)

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs})}).save_to_disk(saved)
    corpus = prepare_corpus(_cfg(saved), tmp_path / "cache")
    assert corpus.format == "datasets"
    assert np.array_equal(corpus.val_tokens(), val)


def test_token_arrays_npy_and_bin(tmp_path: Path, docs: list[str]) -> None:
    train, val = _expected(docs)
    stream = []  # the documents in order, each ended by <|endoftext|> (id 0)
    for d in docs:
        stream += load(NEOX).encode(d, add_special_tokens=False).ids + [0]
    ids = np.array(stream)
    np.save(tmp_path / "ids.npy", ids.astype(np.uint32))
    corpus = prepare_corpus(_cfg(tmp_path / "ids.npy"), tmp_path / "cache")
    assert corpus.n_documents == len(docs)
    assert np.array_equal(corpus.train_tokens(), train)
    assert np.array_equal(corpus.val_tokens(), val)
    assert corpus.token_n_bytes()[corpus.val_tokens()].sum() == sum(
        len(d.encode()) for i, d in enumerate(docs) if i % K == K // 2
    )
    shards = tmp_path / "bin"
    shards.mkdir()
    ids.astype(np.uint16)[: ids.size // 2].tofile(shards / "a.bin")
    ids.astype(np.uint16)[ids.size // 2 :].tofile(shards / "b.bin")
    corpus = prepare_corpus(_cfg(shards, token_dtype="uint16"), tmp_path / "cache")
    assert np.array_equal(corpus.val_tokens(), val)
    # Without a tokenizer: the vocabulary from data.vocab_size, blocks instead of documents,
    # and no bytes per token.
    cfg = _cfg(shards, token_dtype="uint16", tokenizer="byte", vocab_size=50277)
    corpus = prepare_corpus(cfg, tmp_path / "cache")
    assert corpus.n_train_tokens + corpus.n_val_tokens == ids.size
    assert corpus.token_n_bytes().sum() == 0


def _grid_toml(path: Path, corpus: Path, results: Path, data: dict[str, object]) -> Path:
    """An experiment of two runs (one shape, two token budgets) on `corpus`."""
    settings = {"tokenizer": NEOX} | data
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path.write_text(f"""
[data]
corpus = "{corpus}"
{extra}val_fraction = 0.25
seq_len = 32
eval_tokens = 256
[train]
batch_size = 4
evals_per_run = 1
[grid]
shapes = [{{n_layer = 1, n_embd = 16}}]
n_tokens = [512, 1024]
[execution]
threads = 1
progress = false
results_dir = "{results}"
""")
    return path


@pytest.mark.slow
def test_a_grid_trains_on_every_format_and_tokenizer(tmp_path: Path, docs: list[str]) -> None:
    """`harness run` on the same 40 documents as JSON Lines, Parquet shards, a saved dataset,
    .npy and .bin token arrays, with the tokenizer given by name, as a tokenizer.json, as a
    folder saved by transformers, or by data.vocab_size alone, and as plain text. The documents'
    tokens are the same, so the structured formats and the token arrays with the tokenizer train
    the same models to the same losses, bit for bit."""
    import datasets
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import PreTrainedTokenizerFast

    from harness.tokenizer import path_of

    neox_json = str(path_of(NEOX))
    saved_tok = tmp_path / "neox-saved"
    PreTrainedTokenizerFast(tokenizer_file=neox_json).save_pretrained(saved_tok)
    shards = tmp_path / "parquet"
    shards.mkdir()
    for j in range(2):
        pq.write_table(pa.table({"text": docs[j * 20 : (j + 1) * 20]}), shards / f"{j}.parquet")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(saved)
    ids = _neox_stream(docs)
    np.save(tmp_path / "ids.npy", ids.astype(np.uint32))
    ids.astype(np.uint16).tofile(tmp_path / "ids.bin")
    (tmp_path / "plain.txt").write_text("".join(docs))

    cases = {  # experiment name: corpus, data settings
        "jsonl": (_write_jsonl(tmp_path / "docs.jsonl.gz", docs), {}),
        "parquet": (shards, {"tokenizer": neox_json}),
        "datasets": (saved, {"tokenizer": str(saved_tok)}),
        "npy": (tmp_path / "ids.npy", {}),
        "bin": (tmp_path / "ids.bin", {"token_dtype": "uint16"}),
        "bin_vocab": (
            tmp_path / "ids.bin",
            {"token_dtype": "uint16", "tokenizer": "byte", "vocab_size": 50277},
        ),
        "text": (tmp_path / "plain.txt", {}),
    }
    runs = {}
    for name, (corpus, data) in cases.items():
        results = tmp_path / "results"
        toml = _grid_toml(tmp_path / f"{name}.toml", corpus, results, data)
        out = harness_cli("run", str(toml), timeout=300)
        assert out.returncode == 0, name + out.stdout[-2000:] + out.stderr[-2000:]
        runs[name] = pd.read_csv(results / name / "runs.csv").sort_values("n_tokens")
        assert len(runs[name]) == 2 and (runs[name]["vocab_size"] == 50277).all(), name

    ref = runs["jsonl"]
    for name in ("parquet", "datasets", "npy", "bin"):
        assert runs[name]["loss"].tolist() == ref["loss"].tolist(), name  # validation loss
        assert runs[name]["train_loss"].tolist() == ref["train_loss"].tolist(), name
    # Bits per byte from the tokens' bytes: loss (nats per token) / ln 2 / bytes per token.
    for name in ("jsonl", "parquet", "datasets", "npy", "bin", "text"):
        bpb, loss = runs[name]["val_bpb"], runs[name]["loss"]
        assert (bpb.map(math.isfinite) & (bpb > 0) & (bpb < loss / math.log(2))).all(), name
    assert runs["npy"]["val_bpb"].tolist() == ref["val_bpb"].tolist()
    # Without a tokenizer there are no bytes per token, and no end-of-text id to find documents
    # by; like plain text, the split holds out blocks: other tokens, another loss.
    assert runs["bin_vocab"]["val_bpb"].isna().all()
    assert (runs["text"]["tokenizer"] == NEOX).all()
    for name in ("bin_vocab", "text"):
        assert runs[name]["loss"].map(math.isfinite).all(), name
        assert runs[name]["loss"].tolist() != ref["loss"].tolist(), name


def _plan_fails(tmp_path: Path, corpus: Path, *lines: str) -> str:
    toml = tmp_path / "bad.toml"
    toml.write_text(
        f'[data]\ncorpus = "{corpus}"\nval_fraction = 0.25\nseq_len = 32\neval_tokens = 256\n'
        + "\n".join(lines)
        + f"\n[grid]\nshapes = [{{n_layer = 1, n_embd = 16}}]\nn_tokens = [1024]\n"
        f'[execution]\nresults_dir = "{tmp_path / "results"}"\n'
    )
    out = harness_cli("plan", str(toml), "--no-timing")
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1 and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "results").exists()  # the plan writes nothing
    # `harness run` prepares the same corpus into the experiment's cache: refused the same
    # way, with nothing half-written there (no temporary folder, no entry without info.json;
    # a corpus too small for eval_tokens is tokenized whole before it is measured).
    from harness.config import load_experiment

    cache = tmp_path / "cache"
    with pytest.raises(InputError):
        prepare_corpus(load_experiment(toml).data, cache)
    left = list(cache.iterdir()) if cache.exists() else []
    assert all((p / "info.json").is_file() and ".tmp" not in p.name for p in left), left
    return err[0]


@pytest.mark.slow
def test_bad_corpora_are_refused_at_plan(tmp_path: Path, docs: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    f = tmp_path / "broken.jsonl"
    f.write_text(good + '{"text": "unterminated\n')
    assert f"{f} line {len(docs) + 1}: not JSON" in _plan_fails(
        tmp_path, f, f'tokenizer = "{NEOX}"'
    )
    f = tmp_path / "nofield.jsonl"
    f.write_text(good + '{"body": "x"}\n')
    msg = _plan_fails(tmp_path, f, f'tokenizer = "{NEOX}"')
    assert f"{f} line {len(docs) + 1}: no field 'text' (has: body)" in msg
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": docs}), f)
    assert f"{f} has no column 'text' (has: body)" in _plan_fails(tmp_path, f)
    f = tmp_path / "ids.npy"
    np.save(f, np.array([5, 7, 300, 2], dtype=np.uint16))
    assert f"{f} position 2: token id 300 is not below the vocabulary size 256" in _plan_fails(
        tmp_path, f
    )
    f = tmp_path / "odd.bin"
    f.write_bytes(b"\x01\x00\x02")
    assert "3 bytes, not a whole number of uint16 ids" in _plan_fails(
        tmp_path, f, 'token_dtype = "uint16"', "vocab_size = 256"
    )
    assert "a raw .bin; accepted: with data.token_dtype" in _plan_fails(tmp_path, f)
    f = tmp_path / "neg.npy"
    np.save(f, np.array([5, -3, 7], dtype=np.int32))
    assert f"{f} position 1: token id -3 is negative" in _plan_fails(tmp_path, f)
    for empty in ("empty.npy", "empty.bin"):  # issue 31: an EOFError traceback before
        f = tmp_path / empty
        f.write_bytes(b"")
        assert "is empty (0 bytes)" in _plan_fails(tmp_path, f, 'token_dtype = "uint16"')
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"not": "a tokenizer"}')
    assert "does not load as a tokenizer" in _plan_fails(
        tmp_path, tmp_path / "nofield.jsonl", f'tokenizer = "{tok}"'
    )
    # A tokenizer.json given as the corpus (issue 18's report) is no corpus.
    assert "is a JSON document, not a corpus" in _plan_fails(tmp_path, tok)
    f = tmp_path / "tiny.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:3]))
    assert "3 documents, too few for a validation split" in _plan_fails(tmp_path, f)
    f = tmp_path / "short.jsonl"
    f.write_text("".join(json.dumps({"text": d[:10]}) + "\n" for d in docs))
    assert "held-out tokens, fewer than data.eval_tokens = 256" in _plan_fails(tmp_path, f)
    f = tmp_path / "ids.txt"
    f.write_bytes(np.arange(100, dtype=np.uint16).tobytes())
    assert "holds a NUL byte" in _plan_fails(tmp_path, f)


def test_data_settings_are_checked_on_load() -> None:
    with pytest.raises(ValueError, match="format = 'csv': one of auto, text, jsonl"):
        DataConfig(format="csv")
    with pytest.raises(ValueError, match="token_dtype = 'int8'"):
        DataConfig(token_dtype="int8")
    with pytest.raises(InputError, match="does not exist"):
        load("/nonexistent/tokenizer.json")


def test_token_spans_read_like_the_concatenated_array() -> None:
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 1000, n).astype(dt) for n, dt in ((500, "u2"), (300, "u4"))]
    spans = np.array([[0, 10, 200], [1, 0, 150], [0, 250, 251], [1, 290, 300], [0, 400, 500]])
    whole = np.concatenate([shards[f][a:b] for f, a, b in spans])
    view = TokenSpans(shards, spans)
    assert len(view) == view.size == whole.size == 190 + 150 + 1 + 10 + 100
    assert np.array_equal(view, whole) and np.array_equal(view[5:300:7], whole[5:300:7])
    assert view[-1] == whole[-1]
    starts = rng.integers(0, whole.size - 33, 64)  # windows across span and shard boundaries
    assert np.array_equal(gather_windows(view, starts, 32), gather_windows(whole, starts, 32))
    with pytest.raises(IndexError):
        view[np.array([451])]


def _neox_stream(docs: list[str]) -> np.ndarray:
    """The documents in order, each ended by <|endoftext|> (id 0)."""
    tok = load(NEOX)
    return np.array([i for d in docs for i in tok.encode(d, add_special_tokens=False).ids + [0]])


def test_token_arrays_are_read_where_they_lie(tmp_path: Path, docs: list[str]) -> None:
    train, val = _expected(docs)
    ids = _neox_stream(docs)
    shards = tmp_path / "npy"
    shards.mkdir()
    cuts = [0, 1000, 5001, 9000, ids.size]  # documents cut across shards
    for j in range(4):
        np.save(shards / f"{j:02d}.npy", ids[cuts[j] : cuts[j + 1]].astype(np.int32))
    corpus = prepare_corpus(_cfg(shards), tmp_path / "cache")
    assert isinstance(corpus.train_tokens(), TokenSpans)
    assert np.array_equal(corpus.train_tokens(), train)
    assert np.array_equal(corpus.val_tokens(), val)
    # The entry holds the spans and the bytes per token, no copy of the tokens.
    held = {p.name: p.stat().st_size for p in corpus.directory.iterdir()}
    assert set(held) == {"info.json", "spans.npz", "token_n_bytes.npy"}, held
    assert held["spans.npz"] < 2000  # a few spans of 3 int64 each, against 40 KB of tokens
    assert [Path(p).name for p, _ in corpus.shards] == ["00.npy", "01.npy", "02.npy", "03.npy"]
    # A run's batches read the same windows as from the copied split.
    starts = np.arange(0, train.size - 33, 97)
    assert np.array_equal(
        gather_windows(corpus.train_tokens(), starts, 32), gather_windows(train, starts, 32)
    )
    # Moved, the shards are another entry, read where they now lie.
    shards.rename(tmp_path / "moved")
    moved = prepare_corpus(_cfg(tmp_path / "moved"), tmp_path / "cache")
    assert moved.directory != corpus.directory and np.array_equal(moved.train_tokens(), train)


@pytest.mark.slow
def test_a_validation_corpus_of_its_own(tmp_path: Path, docs: list[str]) -> None:
    tok = load(NEOX)

    def ids(part: list[str]) -> np.ndarray:
        return np.array(
            [i for d in part for i in tok.encode(d, add_special_tokens=False).ids + [0]]
        )

    main, held = docs[:30], docs[30:]
    cfg = _cfg(_write_jsonl(tmp_path / "main.jsonl", main))
    pq_val = tmp_path / "val.parquet"  # documents of another format: the same kind
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": held}), pq_val)
    corpus = prepare_corpus(dataclasses.replace(cfg, val_corpus=str(pq_val)), tmp_path / "c")
    assert np.array_equal(corpus.train_tokens(), ids(main))  # all of it trains
    assert np.array_equal(corpus.val_tokens(), ids(held))
    assert corpus.val_corpus_sha256 and corpus.n_documents == len(docs)

    np.save(tmp_path / "main.npy", ids(main).astype(np.uint16))
    np.save(tmp_path / "val.npy", ids(held).astype(np.uint16))
    cfg = _cfg(tmp_path / "main.npy", val_corpus=str(tmp_path / "val.npy"))
    corpus = prepare_corpus(cfg, tmp_path / "c")
    assert np.array_equal(corpus.train_tokens(), ids(main))
    assert np.array_equal(corpus.val_tokens(), ids(held))

    (tmp_path / "main.txt").write_text("".join(main))
    (tmp_path / "val.txt").write_text("".join(held))
    cfg = _cfg(tmp_path / "main.txt", tokenizer="byte", val_corpus=str(tmp_path / "val.txt"))
    corpus = prepare_corpus(cfg, tmp_path / "c")
    assert np.asarray(corpus.train_tokens()).astype(np.uint8).tobytes() == read_corpus_bytes(
        str(tmp_path / "main.txt")
    )
    assert corpus.n_val_tokens == len("".join(held).rstrip("\n").encode()) + 2

    # Of another kind, missing, or too small: refused at plan, naming data.val_corpus.
    msg = _plan_fails(tmp_path, tmp_path / "main.txt", f'val_corpus = "{tmp_path / "val.npy"}"')
    assert "data.val_corpus" in msg and "is npy (tokens) but data.corpus is text" in msg
    msg = _plan_fails(tmp_path, tmp_path / "main.txt", f'val_corpus = "{tmp_path / "nope"}"')
    assert "data.val_corpus" in msg and "no such file" in msg
    (tmp_path / "small.txt").write_text("too small\n")
    msg = _plan_fails(tmp_path, tmp_path / "main.txt", f'val_corpus = "{tmp_path / "small.txt"}"')
    assert f"data.val_corpus = '{tmp_path / 'small.txt'}': 11 held-out tokens" in msg


def test_text_streams_a_chunk_at_a_time_as_if_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.encode
    import harness.sources

    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "a.txt").write_text("héllo wörld ☃\r\nline two\n\n\n" * 400)
    (folder / "b.txt").write_text("日本語のテキスト\n" * 300 + "語x" * 1500 + "\n\n")  # a long line
    cfg = DataConfig(corpus=str(folder), val_block_bytes=1024, eval_tokens=256, seq_len=32)
    whole = read_corpus_bytes(str(folder))
    train_bytes, val_bytes = split_train_val(whole, cfg)
    # Small reads and buffers, so chunks, blocks and characters are cut everywhere.
    monkeypatch.setattr(harness.sources, "_CHUNK_BYTES", 777)
    monkeypatch.setattr(harness.encode, "_BUFFER_BYTES", 2000)
    byte = prepare_corpus(cfg, tmp_path / "c")
    assert np.asarray(byte.train_tokens()).astype(np.uint8).tobytes() == train_bytes
    assert np.asarray(byte.val_tokens()).astype(np.uint8).tobytes() == val_bytes
    assert byte.corpus_sha256 == hashlib.sha256(whole).hexdigest()

    neox = prepare_corpus(dataclasses.replace(cfg, tokenizer=NEOX), tmp_path / "c")
    # Each split's text, whole: where a held-out block cut a character its bytes read as U+FFFD,
    # but the 6000-byte line is cut at a character's first byte (no U+FFFD there).
    for tokens, text in ((neox.train_tokens(), train_bytes), (neox.val_tokens(), val_bytes)):
        got = load(NEOX).decode(np.asarray(tokens).tolist())
        assert got == text.decode("utf-8", errors="replace")
    assert "語x" * 100 in load(NEOX).decode(np.asarray(neox.train_tokens()).tolist())
