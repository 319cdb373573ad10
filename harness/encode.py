"""Tokenizing a corpus into its cache entry, a batch at a time, in constant memory.

`harness.data.prepare_corpus` decides where the entry goes and what keys it; this module fills
the entry's scratch folder with what every run then memory-maps:

- text and documents: ``train.bin`` and ``val.bin`` (raw token ids) and ``token_n_bytes.npy``
  (UTF-8 bytes each id stands for, for bits per byte);
- token arrays: only ``spans.npz``, the (shard, start, stop) ranges of each split, read where
  the shards lie (`harness.tokens.TokenSpans`), never copied.

The validation split is whole blocks of data.val_block_bytes (text), every k-th document
(documents, token arrays with an end-of-text id) or every k-th block of tokens, with k =
round(1 / data.val_fraction) counted from the middle of the first k, so it samples the whole
corpus. With data.val_corpus the corpus is all training and the validation set is all of that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import tokenizer as pretrained
from harness.atomic import atomic_write_json
from harness.config import DataConfig
from harness.errors import InputError
from harness.sources import CorpusFiles

__all__ = ["id_dtype", "train_bpe", "write_arrays", "write_documents", "write_text"]

# Text goes to the tokenizer about 4 MiB of whole lines at a time; a pretrained tokenizer gets
# them as pieces of whole lines of about 4 K characters, 1,000 per encode_batch call: on 2
# cores 3.7 MB/s against 2.0 for single lines and 3.4 for 16 K pieces (Shakespeare, 2026-12-02).
_BUFFER_BYTES = 1 << 22
_PIECE_CHARS = 1 << 12
_CHUNK_IDS = 1 << 22  # token ids checked per read of a shard


def id_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def train_bpe(batches: Iterable[list[str]], vocab_size: int) -> tuple[object, np.ndarray]:
    """Byte-level BPE trained on batches of text, and the bytes each of its ids stands for
    (padded to ``vocab_size``: a small corpus may stop the BPE short, and its unused ids stand
    for nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(batches, trainer)
    # Byte-level BPE spells every byte as one printable character, so a token's length in
    # characters is the number of bytes it stands for.
    n_bytes = np.ones(vocab_size, dtype=np.int64)
    for token, idx in tok.get_vocab().items():
        n_bytes[idx] = len(token)
    return tok, n_bytes


class _TokenWriter:
    """Appends token ids to a raw file of one dtype."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.dtype, self.n = dtype, 0
        self._f = path.open("wb")

    def write(self, ids: np.ndarray) -> None:
        a = np.asarray(ids).astype(self.dtype, copy=False)
        self._f.write(a.tobytes())
        self.n += a.size

    def close(self) -> None:
        self._f.close()


@dataclass(frozen=True)
class _Encoder:
    """A tokenizer as the writers use it: texts to id arrays, and what its ids stand for."""

    encode: Callable[[list[str]], list[np.ndarray]]
    n_bytes: np.ndarray
    separator: np.ndarray
    """Ids that end each document: the end-of-text token, or two newlines where none."""

    @property
    def vocab_size(self) -> int:
        return int(self.n_bytes.size)


def _encoder(
    cfg: DataConfig, tmp: Path, train_texts: Callable[[], Iterator[list[str]]]
) -> _Encoder:
    """data.tokenizer, ready to encode: bytes, a BPE trained on ``train_texts()`` (saved as the
    entry's tokenizer.json), or a pretrained tokenizer."""
    if cfg.tokenizer == "byte":
        return _Encoder(
            encode=lambda texts: [np.frombuffer(t.encode("utf-8"), np.uint8) for t in texts],
            n_bytes=np.ones(256, dtype=np.int64),
            separator=np.array([10, 10]),
        )
    if cfg.tokenizer == "bpe":
        tok, n_bytes = train_bpe(train_texts(), cfg.bpe_vocab_size)
        atomic_write_json(tmp / "tokenizer.json", json.loads(tok.to_str()))  # type: ignore[attr-defined]
        eos = None
    else:
        tok = pretrained.load(cfg.tokenizer)
        n_bytes = pretrained.token_n_bytes(cfg.tokenizer)
        eos = pretrained.eos_token_id(cfg.tokenizer)

    def encode(texts: list[str]) -> list[np.ndarray]:
        encs = tok.encode_batch(texts, add_special_tokens=False)  # type: ignore[attr-defined]
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    # Without an end-of-text token: two newlines, encoded as two lines (as text is encoded).
    sep = np.array([eos]) if eos is not None else np.concatenate(encode(["\n", "\n"]))
    return _Encoder(encode=encode, n_bytes=n_bytes, separator=sep)


def _info(
    cfg: DataConfig, fmt: str, n_bytes: np.ndarray, counts: tuple[int, int], extra: dict
) -> dict[str, object]:
    return {
        "tokenizer": cfg.tokenizer,
        "vocab_size": int(n_bytes.size),
        "n_train_tokens": int(counts[0]),
        "n_val_tokens": int(counts[1]),
        "format": fmt,
    } | extra


def _too_few(cfg: DataConfig, what: str, n: int, k: int, need: str) -> InputError:
    return InputError(
        f"data.corpus = {cfg.corpus!r}: {n} {what}, too few for a validation split of every "
        f"{k}th (data.val_fraction = {cfg.val_fraction}); accepted: {need}, or data.val_corpus"
    )


# --- text ------------------------------------------------------------------------------------


def _blocks(chunks: Iterator[bytes], cfg: DataConfig) -> Iterator[tuple[bool, bytes]]:
    """(held out?, bytes) pieces of the text: every k-th block of data.val_block_bytes, from the
    middle of the first k, is held out (the same split as `harness.data.split_train_val`)."""
    k, blk = max(2, round(1 / cfg.val_fraction)), cfg.val_block_bytes
    pos = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = blk - pos % blk
            yield (pos // blk) % k == k // 2, bytes(view[:take])
            pos += min(take, len(view))
            view = view[take:]
    if -(-pos // blk) < k:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: {pos} bytes is too small for a validation split "
            f"of blocks of {blk} bytes (need at least {k * blk}); lower data.val_block_bytes, "
            "or give data.val_corpus"
        )


class _Lines:
    """Joins the pieces of one split into about _BUFFER_BYTES of whole lines at a time, so a
    line is tokenized whole even where a held-out block cut it (as the joined split would be)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, piece: bytes) -> bytes | None:
        self._parts.append(piece)
        self._size += len(piece)
        if self._size < _BUFFER_BYTES:
            return None
        data = b"".join(self._parts)
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # a line over the buffer's size: cut it at a character's first byte
            cut = len(data) - 4  # a UTF-8 character has at most 4 bytes
            while cut > 1 and data[cut] & 0xC0 == 0x80:
                cut -= 1
        self._parts, self._size = [data[cut:]], len(data) - cut
        return data[:cut]

    def close(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        return data


def _lines_of(data: bytes) -> list[str]:
    # errors="replace": where a block boundary cut a character, its bytes become U+FFFD.
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)


def _pieces_of(data: bytes) -> list[str]:
    """Whole lines joined into pieces of about _PIECE_CHARS: what a pretrained tokenizer
    encodes. Whitespace that runs across a line break is pre-tokenized as in the whole text,
    and a piece costs the encoder less than its lines one by one."""
    out, cur, size = [], [], 0
    for line in _lines_of(data):
        cur.append(line)
        size += len(line)
        if size >= _PIECE_CHARS:
            out.append("".join(cur))
            cur, size = [], 0
    if cur:
        out.append("".join(cur))
    return out


def write_text(
    cfg: DataConfig,
    tmp: Path,
    chunks: Callable[[], Iterator[bytes]],
    val_chunks: Callable[[], Iterator[bytes]] | None = None,
    total_bytes: int | None = None,
) -> dict[str, object]:
    """Tokenize text into train.bin and val.bin: held-out blocks of ``chunks()``, or all of
    ``val_chunks()``. Byte tokens are the bytes; a locally trained BPE (trained on the
    training lines first) encodes line by line, a pretrained tokenizer pieces of whole lines."""
    from tqdm import tqdm

    sha, val_sha = hashlib.sha256(), hashlib.sha256()

    def routed(hashing: bool) -> Iterator[tuple[bool, bytes]]:
        def hashed(it: Iterator[bytes], h: Any) -> Iterator[bytes]:
            for c in it:
                if hashing:
                    h.update(c)
                yield c

        if val_chunks is None:
            yield from _blocks(hashed(chunks(), sha), cfg)
            return
        for c in hashed(chunks(), sha):
            yield False, c
        for c in hashed(val_chunks(), val_sha):
            yield True, c

    def train_lines() -> Iterator[list[str]]:
        lines = _Lines()
        for held, piece in routed(False):
            if not held and (data := lines.feed(piece)) is not None:
                yield _lines_of(data)
        yield _lines_of(lines.close())

    enc = _encoder(cfg, tmp, train_lines)
    dtype = id_dtype(enc.vocab_size)
    writers = (_TokenWriter(tmp / "train.bin", dtype), _TokenWriter(tmp / "val.bin", dtype))

    def emit(split: int, data: bytes) -> None:
        if cfg.tokenizer == "byte":
            writers[split].write(np.frombuffer(data, dtype=np.uint8))
        elif data:
            # A locally trained BPE encodes line by line (as it always has: the committed
            # results' tokens); a pretrained tokenizer pieces of many lines.
            texts = _lines_of(data) if cfg.tokenizer == "bpe" else _pieces_of(data)
            for ids in enc.encode(texts):
                writers[split].write(ids)

    bar = tqdm(total=total_bytes, desc=f"tokenizing {cfg.corpus}", unit="B", unit_scale=True,
               disable=None, leave=False)  # fmt: skip
    try:
        lines = (_Lines(), _Lines())
        for held, piece in routed(True):
            data = piece if cfg.tokenizer == "byte" else lines[held].feed(piece)
            if data is not None:
                emit(int(held), data)
            bar.update(len(piece))
        for split in (0, 1):
            emit(split, lines[split].close())
    finally:
        bar.close()
        for w in writers:
            w.close()
    np.save(tmp / "token_n_bytes.npy", enc.n_bytes, allow_pickle=False)
    extra = {"corpus_sha256": sha.hexdigest(), "token_dtype": dtype}
    if val_chunks is not None:
        extra["val_corpus_sha256"] = val_sha.hexdigest()
    return _info(cfg, "text", enc.n_bytes, (writers[0].n, writers[1].n), extra)


# --- documents -------------------------------------------------------------------------------


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def write_documents(
    cfg: DataConfig, corpus: CorpusFiles, val: CorpusFiles | None, tmp: Path
) -> dict[str, object]:
    """Tokenize a structured corpus document by document into train.bin and val.bin: every
    k-th document held out, or all of ``val`` (data.val_corpus). Each document ends with the
    tokenizer's end-of-text token (two newlines for byte and locally trained BPE tokens, which
    have none)."""
    from tqdm import tqdm

    k = max(2, round(1 / cfg.val_fraction))

    def routed() -> Iterator[tuple[bool, str]]:
        if val is None:
            for i, doc in enumerate(corpus.documents()):
                yield i % k == k // 2, doc
            return
        for doc in corpus.documents():
            yield False, doc
        for doc in val.documents():
            yield True, doc

    def train_texts() -> Iterator[list[str]]:
        return _batched((d for held, d in routed() if not held), 1000)

    enc = _encoder(cfg, tmp, train_texts)
    dtype = id_dtype(enc.vocab_size)
    writers = (_TokenWriter(tmp / "train.bin", dtype), _TokenWriter(tmp / "val.bin", dtype))
    counts = [c.count_documents() for c in (corpus, val) if c is not None]
    total = None if None in counts else sum(c for c in counts if c is not None)
    bar = tqdm(total=total, desc=f"tokenizing {cfg.corpus}", unit=" docs", disable=None,
               leave=False)  # fmt: skip
    n_docs = 0
    pending: list[tuple[bool, str]] = []

    def flush() -> None:
        for (held, _), ids in zip(pending, enc.encode([d for _, d in pending]), strict=True):
            writers[held].write(ids)
            writers[held].write(enc.separator)
        bar.update(len(pending))
        pending.clear()

    try:
        for item in routed():
            pending.append(item)
            n_docs += 1
            if len(pending) == 1024:
                flush()
        flush()
    finally:
        bar.close()
        for w in writers:
            w.close()
    if val is None and n_docs < k:
        raise _too_few(cfg, "documents", n_docs, k, f"at least {k} documents")
    np.save(tmp / "token_n_bytes.npy", enc.n_bytes, allow_pickle=False)
    extra = {"corpus_sha256": corpus.digest(), "token_dtype": dtype, "n_documents": n_docs}
    if val is not None:
        extra["val_corpus_sha256"] = val.digest()
    return _info(cfg, corpus.format, enc.n_bytes, (writers[0].n, writers[1].n), extra)


# --- token arrays ----------------------------------------------------------------------------


def _array_vocab(cfg: DataConfig) -> tuple[int, np.ndarray, int | None]:
    """(vocabulary size, bytes per id, end-of-text id or None) of a token-array corpus."""
    named = pretrained.is_pretrained(cfg.tokenizer)
    if cfg.vocab_size:
        vocab_size = cfg.vocab_size
    elif named:
        vocab_size = pretrained.load(cfg.tokenizer).get_vocab_size(with_added_tokens=True)
    elif cfg.tokenizer == "byte":
        vocab_size = 256
    else:
        raise InputError(
            f"data.corpus = {cfg.corpus!r} holds token ids, which a locally trained BPE cannot "
            "describe; accepted: data.vocab_size, or data.tokenizer naming their tokenizer"
        )
    eos = cfg.eos_id if cfg.eos_id >= 0 else None
    if eos is None and named:
        eos = pretrained.eos_token_id(cfg.tokenizer)
    if named:
        n_bytes = pretrained.token_n_bytes(cfg.tokenizer)
        n_bytes = np.pad(n_bytes, (0, max(0, vocab_size - n_bytes.size)))[:vocab_size]
    elif cfg.tokenizer == "byte" and vocab_size == 256:
        n_bytes = np.ones(256, dtype=np.int64)
    else:
        n_bytes = np.zeros(vocab_size, dtype=np.int64)  # bytes unknown: no bits per byte
    return vocab_size, n_bytes, eos


class _Spans:
    """Ranges (shard, start, stop) of one split, merged where they touch."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.n = 0

    def add(self, shard: int, starts: np.ndarray, stops: np.ndarray) -> None:
        if not starts.size:
            return
        rows = np.stack([np.full(starts.size, shard), starts, stops], axis=1)
        if self.rows and self.rows[-1][-1, 0] == shard and self.rows[-1][-1, 2] == starts[0]:
            self.rows[-1][-1, 2] = rows[0, 2]  # continues the last span
            rows = rows[1:]
        if rows.size:
            self.rows.append(rows)
        self.n += int((stops - starts).sum())

    def array(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 3), dtype=np.int64)


def write_arrays(
    cfg: DataConfig, corpus: CorpusFiles, val: CorpusFiles | None, tmp: Path
) -> dict[str, object]:
    """Index token arrays where they lie: check every id against the vocabulary and record the
    ranges of each split in spans.npz. With an end-of-text id (data.eos_id, else the
    tokenizer's) every k-th document is held out; without one, every k-th block of
    data.val_block_bytes tokens; with data.val_corpus, all of it."""
    from tqdm import tqdm

    vocab_size, n_bytes, eos = _array_vocab(cfg)
    k, blk = max(2, round(1 / cfg.val_fraction)), cfg.val_block_bytes
    shards = [(f, a, False, corpus.format) for f, a in corpus.token_arrays()]
    if val is not None:
        shards += [(f, a, True, val.format) for f, a in val.token_arrays()]
    splits = (_Spans(), _Spans())
    pos = n_docs = 0
    bar = tqdm(total=sum(a.size for _, a, _, _ in shards), desc=f"indexing {cfg.corpus}",
               unit="tok", unit_scale=True, disable=None, leave=False)  # fmt: skip
    try:
        for s, (f, arr, is_val, _) in enumerate(shards):
            for lo in range(0, arr.size, _CHUNK_IDS):
                part = np.asarray(arr[lo : lo + _CHUNK_IDS])
                bad = np.flatnonzero((part >= vocab_size) | (part < 0))
                if bad.size:
                    i = int(bad[0])
                    why = (
                        "is negative"
                        if part[i] < 0
                        else f"is not below the vocabulary size {vocab_size}"
                    )
                    raise InputError(
                        f"data.corpus: {f} position {lo + i}: token id {int(part[i])} {why}; "
                        f"accepted: ids 0..{vocab_size - 1}"
                    )
                if val is not None:
                    to_val = np.full(part.size, is_val)
                elif eos is not None:  # a document ends with (and includes) its eos
                    ends = part == eos
                    doc = n_docs + np.concatenate([[0], np.cumsum(ends[:-1])])
                    n_docs += int(ends.sum())
                    to_val = doc % k == k // 2
                else:
                    to_val = ((pos + np.arange(part.size)) // blk) % k == k // 2
                # Runs of one split become spans: cut where the split changes.
                cuts = np.flatnonzero(np.diff(to_val)) + 1
                starts = np.concatenate([[0], cuts])
                stops = np.concatenate([cuts, [part.size]])
                held = to_val[starts]
                for split in (0, 1):
                    pick = held == bool(split)
                    splits[split].add(s, lo + starts[pick], lo + stops[pick])
                pos += part.size
                bar.update(part.size)
    finally:
        bar.close()
    if val is None and eos is not None and n_docs < k:
        raise _too_few(
            cfg, f"documents ending with the end-of-text id {eos}", n_docs, k,
            f"at least {k}, or data.eos_id naming the id that ends them",
        )  # fmt: skip
    np.savez(tmp / "spans.npz", train=splits[0].array(), val=splits[1].array())
    np.save(tmp / "token_n_bytes.npy", n_bytes, allow_pickle=False)
    extra = {
        "corpus_sha256": corpus.digest(),
        "n_documents": n_docs,
        # Each shard where it lies, with its raw dtype ('' for a .npy, which carries its own).
        "shards": [
            [str(f.resolve()), cfg.token_dtype if kind == "bin" else ""] for f, _, _, kind in shards
        ],  # fmt: skip
    }
    if val is not None:
        extra["val_corpus_sha256"] = val.digest()
    return _info(cfg, corpus.format, n_bytes, (splits[0].n, splits[1].n), extra)
