"""Corpora, tokenization, the fixed validation split and the order runs read tokens in.

A corpus is tokenized once per experiment and cached as two token arrays (train, validation)
that every run memory-maps; no run re-tokenizes. The validation split is a set of byte blocks
spread evenly over the corpus, chosen before tokenization, so no run ever trains on it and all
runs of an experiment score the same held-out tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from harness import sources
from harness import tokenizer as pretrained
from harness.atomic import atomic_write, atomic_write_json
from harness.config import DataConfig
from harness.errors import InputError
from harness.synthetic import (
    SEGMENT_TOKENS,
    Source,
    is_synthetic,
    segment_of,
    source_for,
    spec_for,
    write_reference,
)

__all__ = [
    "Corpus",
    "SequenceOrder",
    "bundled_corpora",
    "gather_windows",
    "prepare_corpus",
    "read_corpus_bytes",
    "split_train_val",
    "training_order",
    "usable_train_tokens",
    "vocab_size_for",
]

BUNDLED = {"shakespeare": "shakespeare.txt.xz"}
_CACHE_VERSION = 1


def vocab_size_for(cfg: DataConfig, arch: str = "llama") -> int:
    """The model's vocabulary: data.vocab_size where set, else 256 byte values, the BPE's
    configured size or the pretrained tokenizer's (with its added tokens); for a masked LM
    (arch 'bert' or 'modernbert') one more, the [MASK] token, whose id is the last
    (`harness.objectives`)."""
    if cfg.vocab_size:
        base = cfg.vocab_size
    elif cfg.tokenizer == "byte":
        base = 256
    elif cfg.tokenizer == "bpe":
        base = cfg.bpe_vocab_size
    else:
        base = pretrained.load(cfg.tokenizer).get_vocab_size(with_added_tokens=True)
    return base + 1 if arch in ("bert", "modernbert") else base


def bundled_corpora() -> list[str]:
    return sorted(BUNDLED)


def check_corpus(corpus: str) -> None:
    """What can be checked of data.corpus without reading it: a bundled name, a synthetic spec
    (`harness.synthetic`), or an existing file or folder.

    Raises
    ------
    InputError
        None of those.
    """
    if is_synthetic(corpus):
        spec_for(corpus)  # parses only; building the source can take a while
    elif corpus not in BUNDLED and not Path(corpus).expanduser().exists():
        raise InputError(
            f"data.corpus = {corpus!r}: no such file or folder; accepted: a path or one of "
            f"{', '.join(bundled_corpora())}, or synthetic:KEY=VALUE,... (harness.synthetic)"
        )


def read_corpus_bytes(corpus: str) -> bytes:
    """The raw UTF-8 bytes of a bundled corpus, a text file, or a folder of text files.

    Raises
    ------
    InputError
        The path does not exist, holds no files, or a file is not UTF-8 text; or a bad
        ``synthetic:...`` spec (`harness.synthetic`).
    """
    if is_synthetic(corpus):
        return source_for(corpus).generate()
    if corpus in BUNDLED:
        ref = resources.files("harness.corpora").joinpath(BUNDLED[corpus])
        return lzma.decompress(ref.read_bytes())
    check_corpus(corpus)
    path = Path(corpus).expanduser()
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"data.corpus = {corpus!r}: the folder holds no files")
    parts = []
    for f in files:
        raw = f.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"data.corpus: {f} is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
        nul = raw.find(b"\0")
        if nul >= 0:  # UTF-8 allows NUL; text does not (token ids, an unnamed binary)
            raise InputError(
                f"data.corpus: {f} holds a NUL byte at byte {nul}, so it is not text; "
                "accepted: UTF-8 text, or data.format naming its format (bin, npy, ...)"
            )
        parts.append(raw.rstrip(b"\n") + b"\n\n")
    data = b"".join(parts)
    if not data.strip():
        raise InputError(f"data.corpus = {corpus!r}: the text is empty")
    return data


def split_train_val(text: bytes, cfg: DataConfig) -> tuple[bytes, bytes]:
    """Split into (train, validation) bytes by whole blocks of ``cfg.val_block_bytes``.

    Every k-th block (k = round(1 / val_fraction)), starting in the middle of the first k, is
    held out, so the validation text samples the whole corpus rather than its last pages.
    """
    k = max(2, round(1 / cfg.val_fraction))
    blk = cfg.val_block_bytes
    n_blocks = math.ceil(len(text) / blk)
    if n_blocks < k:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: {len(text)} bytes is too small for a validation split "
            f"of blocks of {blk} bytes (need at least {k * blk}); lower data.val_block_bytes"
        )
    train, val = [], []
    for i in range(n_blocks):
        (val if i % k == k // 2 else train).append(text[i * blk : (i + 1) * blk])
    return b"".join(train), b"".join(val)


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus in the experiment's cache, ready to memory-map."""

    directory: Path
    tokenizer: str
    vocab_size: int
    n_train_tokens: int
    n_val_tokens: int
    corpus_sha256: str
    token_dtype: str = ""
    """'uint16' or 'uint32' for raw train.bin / val.bin (streamed corpora); '' for .npy."""
    format: str = "text"
    n_documents: int = 0
    """Documents read (structured corpora and token arrays with an end-of-text id); 0 else."""

    @property
    def train_path(self) -> Path:
        return self.directory / ("train.bin" if self.token_dtype else "train.npy")

    @property
    def val_path(self) -> Path:
        return self.directory / ("val.bin" if self.token_dtype else "val.npy")

    def _open(self, path: Path) -> np.ndarray:
        if self.token_dtype:
            return np.memmap(path, dtype=self.token_dtype, mode="r")
        return np.load(path, mmap_mode="r")

    def train_tokens(self) -> np.ndarray:
        return self._open(self.train_path)

    def val_tokens(self) -> np.ndarray:
        return self._open(self.val_path)

    def token_n_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (to turn nats per token into bits per byte)."""
        return np.load(self.directory / "token_n_bytes.npy")


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _train_bpe(train_text: str, vocab_size: int) -> tuple[object, np.ndarray]:
    lines = train_text.splitlines(keepends=True)
    return _train_bpe_from((lines[i : i + 1000] for i in range(0, len(lines), 1000)), vocab_size)


def _train_bpe_from(batches: Iterator[list[str]], vocab_size: int) -> tuple[object, np.ndarray]:
    """Byte-level BPE trained on batches of text, and the bytes each of its tokens stands for."""
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
    vocab = tok.get_vocab()
    n_bytes = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    for token, idx in vocab.items():
        n_bytes[idx] = len(token)
    return tok, n_bytes


def _encode_bpe(tok: object, text: str, dtype: str = "uint16") -> np.ndarray:
    lines = text.splitlines(keepends=True)
    ids: list[int] = []
    for enc in tok.encode_batch(lines, add_special_tokens=False):  # type: ignore[attr-defined]
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=dtype)


def prepare_corpus(cfg: DataConfig, cache_root: Path) -> Corpus:
    """Tokenize ``cfg.corpus`` once into ``cache_root/data-<key>/`` and return it.

    The key hashes the corpus bytes and every setting that changes the tokens, so a changed
    file or setting makes a new cache entry instead of reusing a stale one.
    """
    fmt = sources.detect_format(cfg)
    if fmt != "text":
        return _prepare_streamed(cfg, fmt, Path(cache_root))
    source = source_for(cfg.corpus) if is_synthetic(cfg.corpus) else None
    text = b"" if source else read_corpus_bytes(cfg.corpus)
    # A synthetic corpus is keyed by its spec, so a cached one is found without generating it.
    corpus_id = source.cache_id() if source else hashlib.sha256(text).hexdigest()
    settings = {
        "v": _CACHE_VERSION,
        "corpus_sha256": corpus_id,
        "tokenizer": cfg.tokenizer,
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "val_fraction": cfg.val_fraction,
        "val_block_bytes": cfg.val_block_bytes,
    }
    if pretrained.is_pretrained(cfg.tokenizer):
        settings["tokenizer"] = _tokenizer_key(cfg.tokenizer)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(cache_root) / f"data-{key}"
    info_path = directory / "info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        stored = info.pop("synthetic", None)
        if source is not None and stored and hasattr(source, "remember"):
            source.remember(stored)  # a teacher's H is measured on generation, kept here
        corpus = Corpus(directory=directory, **info)
        check_sizes(cfg, corpus)
        if source:
            _write_synthetic_reference(source, cfg, Path(cache_root), corpus)
        return corpus

    if source:
        text = source.generate()
    corpus_sha = hashlib.sha256(text).hexdigest()
    train_bytes, val_bytes = split_train_val(text, cfg)
    if cfg.tokenizer == "byte":
        vocab_size = 256
        train = np.frombuffer(train_bytes, dtype=np.uint8).astype(np.uint16)
        val = np.frombuffer(val_bytes, dtype=np.uint8).astype(np.uint16)
        n_bytes = np.ones(256, dtype=np.int64)
    elif pretrained.is_pretrained(cfg.tokenizer):
        tok = pretrained.load(cfg.tokenizer)
        n_bytes = pretrained.token_n_bytes(cfg.tokenizer)
        vocab_size = n_bytes.size
        train = _encode_bpe(tok, train_bytes.decode("utf-8"), _id_dtype(vocab_size))
        val = _encode_bpe(tok, val_bytes.decode("utf-8"), _id_dtype(vocab_size))
    else:
        tok, n_bytes = _train_bpe(train_bytes.decode("utf-8", errors="replace"), cfg.bpe_vocab_size)
        vocab_size = cfg.bpe_vocab_size
        # A small corpus may stop the BPE short of its size; the unused ids stand for nothing.
        n_bytes = np.pad(n_bytes, (0, vocab_size - len(n_bytes)), constant_values=1)
        train = _encode_bpe(tok, train_bytes.decode("utf-8", errors="replace"))
        val = _encode_bpe(tok, val_bytes.decode("utf-8", errors="replace"))
        atomic_write_json(directory / "tokenizer.json", json.loads(tok.to_str()))  # type: ignore[attr-defined]
    _save_npy(directory / "train.npy", train)
    _save_npy(directory / "val.npy", val)
    _save_npy(directory / "token_n_bytes.npy", n_bytes)
    info = {
        "tokenizer": cfg.tokenizer,
        "vocab_size": int(vocab_size),
        "n_train_tokens": int(train.size),
        "n_val_tokens": int(val.size),
        "corpus_sha256": corpus_sha,
    }
    synthetic = {"synthetic": source.summary()} if source else {}
    atomic_write_json(info_path, info | synthetic)  # written last: the entry is whole
    corpus = Corpus(directory=directory, **info)
    check_sizes(cfg, corpus)
    if source:
        _write_synthetic_reference(source, cfg, Path(cache_root), corpus)
    return corpus


def check_sizes(cfg: DataConfig, corpus: Corpus) -> None:
    """What every run of the corpus needs: data.unique_tokens within the training split
    (`usable_train_tokens`), one training window, and data.eval_tokens held out.

    Raises
    ------
    InputError
        The first that fails, naming data.corpus and the counts.
    """
    usable_train_tokens(cfg, corpus.n_train_tokens)
    if corpus.n_train_tokens <= cfg.seq_len:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: the training split has {corpus.n_train_tokens} "
            f"tokens, under one sequence of data.seq_len = {cfg.seq_len}; accepted: a larger corpus"
        )
    if (corpus.n_val_tokens - 1) // cfg.seq_len < cfg.eval_tokens // cfg.seq_len:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: {corpus.n_val_tokens} held-out tokens, fewer than "
            f"data.eval_tokens = {cfg.eval_tokens} (+1); accepted: a larger corpus, a larger "
            "data.val_fraction or a smaller data.eval_tokens"
        )


def _id_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def _tokenizer_key(name: str) -> str:
    """A pretrained tokenizer in a cache key: its name and the sha256 of its file."""
    return name + ":" + hashlib.sha256(Path(pretrained.path_of(name)).read_bytes()).hexdigest()


class _TokenWriter:
    """Appends token ids to a raw file of one dtype; constant memory."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.dtype, self.n = dtype, 0
        self._f = path.open("wb")

    def write(self, ids: np.ndarray) -> None:
        a = np.asarray(ids).astype(self.dtype, copy=False)
        self._f.write(a.tobytes())
        self.n += a.size

    def close(self) -> None:
        self._f.close()


def _prepare_streamed(cfg: DataConfig, fmt: str, cache_root: Path) -> Corpus:
    """A structured corpus or token arrays, written into its cache entry a batch at a time.

    The entry is built in a temporary folder beside it and renamed into place whole, so an
    error, or a kill, leaves no half-written entry behind.
    """
    settings = {
        "v": 2,
        "format": fmt,
        "corpus_sha256": sources.digest(cfg),
        "tokenizer": (
            _tokenizer_key(cfg.tokenizer)
            if pretrained.is_pretrained(cfg.tokenizer)
            else cfg.tokenizer
        ),
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "text_field": cfg.text_field if fmt in ("jsonl", "parquet", "datasets") else None,
        "token_dtype": cfg.token_dtype,
        "eos_id": cfg.eos_id,
        "vocab_size": cfg.vocab_size,
        "val_fraction": cfg.val_fraction,
        "val_block_bytes": cfg.val_block_bytes,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    directory = cache_root / f"data-{key}"
    if not (directory / "info.json").exists():
        tmp = cache_root / f".data-{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            write = _write_documents if fmt in ("jsonl", "parquet", "datasets") else _write_arrays
            atomic_write_json(tmp / "info.json", write(cfg, fmt, tmp))
            shutil.rmtree(directory, ignore_errors=True)  # an entry without info.json is no entry
            try:
                os.replace(tmp, directory)
            except OSError:  # another process finished the same entry first
                if not (directory / "info.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    corpus = Corpus(directory=directory, **json.loads((directory / "info.json").read_text()))
    check_sizes(cfg, corpus)
    return corpus


def _batched(items: Iterator[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish(
    cfg: DataConfig,
    fmt: str,
    tmp: Path,
    n_bytes: np.ndarray,
    splits: tuple[_TokenWriter, _TokenWriter],
    n_docs: int,
) -> dict[str, object]:
    """Write the bytes per token beside the token files; the entry's info.json fields."""
    np.save(tmp / "token_n_bytes.npy", n_bytes, allow_pickle=False)
    train, val = splits
    return {
        "tokenizer": cfg.tokenizer,
        "vocab_size": int(n_bytes.size),
        "n_train_tokens": train.n,
        "n_val_tokens": val.n,
        "corpus_sha256": sources.digest(cfg),
        "token_dtype": train.dtype,
        "format": fmt,
        "n_documents": n_docs,
    }


def _write_documents(cfg: DataConfig, fmt: str, tmp: Path) -> dict[str, object]:
    """Tokenize a structured corpus document by document: every k-th document (k = round(1 /
    val_fraction), from the middle of the first k) is held out, so the validation set is made
    of whole documents spread over the corpus. Each document ends with the tokenizer's
    end-of-text token (two newlines for byte and locally trained BPE tokens, which have none)."""
    from tqdm import tqdm

    k = max(2, round(1 / cfg.val_fraction))
    held = k // 2
    docs = functools.partial(sources.iter_documents, cfg, fmt)
    if cfg.tokenizer == "byte":
        vocab_size, n_bytes, sep = 256, np.ones(256, dtype=np.int64), [10, 10]

        def encode(texts: list[str]) -> list[np.ndarray]:
            return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    else:
        if cfg.tokenizer == "bpe":  # trained on the training documents only
            train_docs = (d for i, d in enumerate(docs()) if i % k != held)
            tok, n_bytes = _train_bpe_from(_batched(train_docs, 1000), cfg.bpe_vocab_size)
            vocab_size = cfg.bpe_vocab_size
            n_bytes = np.pad(n_bytes, (0, vocab_size - len(n_bytes)), constant_values=1)
            sep = _encode_bpe(tok, "\n\n").tolist()
            atomic_write_json(tmp / "tokenizer.json", json.loads(tok.to_str()))  # type: ignore[attr-defined]
        else:
            tok = pretrained.load(cfg.tokenizer)
            n_bytes = pretrained.token_n_bytes(cfg.tokenizer)
            vocab_size = n_bytes.size
            eos = pretrained.eos_token_id(cfg.tokenizer)
            sep = [eos] if eos is not None else _encode_bpe(tok, "\n\n").tolist()

        def encode(texts: list[str]) -> list[np.ndarray]:
            return [np.asarray(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]  # type: ignore[attr-defined]

    dtype = _id_dtype(vocab_size)
    train, val = _TokenWriter(tmp / "train.bin", dtype), _TokenWriter(tmp / "val.bin", dtype)
    n_docs = 0
    try:
        bar = tqdm(desc=f"tokenizing {cfg.corpus}", unit=" docs", disable=None, leave=False)
        for batch in _batched(docs(), 1024):
            for ids in encode(batch):
                w = val if n_docs % k == held else train
                w.write(ids)
                w.write(np.asarray(sep))
                n_docs += 1
            bar.update(len(batch))
        bar.close()
    finally:
        train.close()
        val.close()
    if n_docs < k:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: {n_docs} documents, too few for a validation split "
            f"of whole documents (every {k}th, data.val_fraction = {cfg.val_fraction}); "
            f"accepted: at least {k} documents"
        )
    return _finish(cfg, fmt, tmp, n_bytes, (train, val), n_docs)


def _write_arrays(cfg: DataConfig, fmt: str, tmp: Path) -> dict[str, object]:
    """Copy token arrays into the cache a chunk at a time, checking every id against the
    vocabulary. With an end-of-text id (data.eos_id, else the tokenizer's) every k-th document
    is held out; without one, every k-th block of data.val_block_bytes tokens."""
    if cfg.vocab_size:
        vocab_size = cfg.vocab_size
    elif pretrained.is_pretrained(cfg.tokenizer):
        vocab_size = pretrained.load(cfg.tokenizer).get_vocab_size(with_added_tokens=True)
    elif cfg.tokenizer == "byte":
        vocab_size = 256
    else:
        raise InputError(
            f"data.corpus = {cfg.corpus!r} holds token ids, which a locally trained BPE cannot "
            "describe; accepted: data.vocab_size, or data.tokenizer naming their tokenizer"
        )
    eos = cfg.eos_id if cfg.eos_id >= 0 else None
    if eos is None and pretrained.is_pretrained(cfg.tokenizer):
        eos = pretrained.eos_token_id(cfg.tokenizer)
    if pretrained.is_pretrained(cfg.tokenizer):
        n_bytes = pretrained.token_n_bytes(cfg.tokenizer)
        n_bytes = np.pad(n_bytes, (0, max(0, vocab_size - n_bytes.size)))[:vocab_size]
    elif cfg.tokenizer == "byte" and vocab_size == 256:
        n_bytes = np.ones(256, dtype=np.int64)
    else:
        n_bytes = np.zeros(vocab_size, dtype=np.int64)  # bytes unknown: no bits per byte
    k = max(2, round(1 / cfg.val_fraction))
    held, blk = k // 2, cfg.val_block_bytes
    dtype = _id_dtype(vocab_size)
    train, val = _TokenWriter(tmp / "train.bin", dtype), _TokenWriter(tmp / "val.bin", dtype)
    pos = n_docs = 0
    chunk = 1 << 22
    try:
        for f, arr in sources.token_arrays(cfg, fmt):
            for lo in range(0, arr.size, chunk):
                part = np.asarray(arr[lo : lo + chunk])
                bad = np.flatnonzero((part >= vocab_size) | (part < 0))
                if bad.size:
                    i = int(bad[0])
                    raise InputError(
                        f"data.corpus: {f} position {lo + i}: token id {int(part[i])} is not "
                        f"below the vocabulary size {vocab_size}; accepted: ids 0..{vocab_size - 1}"
                    )
                if eos is not None:  # a document ends with (and includes) its eos
                    ends = part == eos
                    doc = n_docs + np.concatenate([[0], np.cumsum(ends[:-1])])
                    n_docs += int(ends.sum())
                    to_val = doc % k == held
                else:
                    to_val = ((pos + np.arange(part.size)) // blk) % k == held
                train.write(part[~to_val])
                val.write(part[to_val])
                pos += part.size
    finally:
        train.close()
        val.close()
    if eos is not None and n_docs < k:
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: {n_docs} documents end with the end-of-text id {eos}, "
            f"too few for a validation split of every {k}th; accepted: at least {k}, or "
            "data.eos_id naming the id that ends them"
        )
    return _finish(cfg, fmt, tmp, n_bytes, (train, val), n_docs)


def _write_synthetic_reference(
    source: Source, cfg: DataConfig, cache_root: Path, corpus: Corpus
) -> None:
    """The source's exact numbers where the analysis finds them: results/NAME/corpus.json,
    with the floor of the very tokens every evaluation scores (byte tokens are the symbols;
    validation blocks that are whole segments keep the segments' independence exact)."""
    floor = None
    # Segment length: SEGMENT_TOKENS (Markov), the teacher's or a fact's (harness.synthetic).
    segment = segment_of(source) or SEGMENT_TOKENS
    if cfg.tokenizer == "byte" and cfg.val_block_bytes % segment == 0:
        val = np.asarray(corpus.val_tokens()).astype(np.uint8).tobytes()
        if (len(val) - 1) // cfg.seq_len >= cfg.eval_tokens // cfg.seq_len:
            floor = source.eval_floor(val, cfg.seq_len, cfg.eval_tokens)
    write_reference(
        cache_root.parent / "corpus.json",
        source,
        cfg.tokenizer,
        cfg.seq_len,
        eval_floor=floor,
        eval_tokens=cfg.eval_tokens if floor is not None else None,
        val_block_bytes=cfg.val_block_bytes,
    )


def usable_train_tokens(cfg: DataConfig, n_train_tokens: int) -> int:
    """How many leading tokens of the training split a run may read.

    All of them when ``cfg.unique_tokens`` is 0. For ``cfg.unique_tokens = U`` (repeated data,
    Muennighoff et al. 2023) the first U + 1: U counts predicted tokens, as D does, and a window
    of seq_len targets reads seq_len + 1 tokens, so U / seq_len windows need U + 1 tokens. A run
    then sees exactly U unique tokens per epoch and D / U epochs (`SequenceOrder`). The
    validation split does not depend on U: every run of an experiment scores the same tokens.

    Raises
    ------
    InputError
        U is not a whole number of sequences, or exceeds the training split.
    """
    u, seq_len = cfg.unique_tokens, cfg.seq_len
    if u == 0:
        return n_train_tokens
    most = (n_train_tokens - 1) // seq_len * seq_len  # whole windows the split holds
    if u % seq_len:
        raise InputError(
            f"data.unique_tokens = {u}: not a whole number of sequences of data.seq_len = "
            f"{seq_len}; accepted: a multiple of {seq_len}, e.g. {max(1, u // seq_len) * seq_len}"
        )
    if u > most:
        raise InputError(
            f"data.unique_tokens = {u} exceeds the training split of data.corpus = "
            f"{cfg.corpus!r} ({n_train_tokens} tokens, {most} in whole sequences of "
            f"{seq_len}); accepted: 0 (the whole split) or a multiple of {seq_len} up to {most}"
        )
    return u + 1


def training_order(cfg: DataConfig, n_train_tokens: int, seed: int) -> SequenceOrder:
    """The order a run reads its training windows in: over the whole training split, or over
    its first ``cfg.unique_tokens`` tokens, epoch after epoch (`usable_train_tokens`).

    Raises
    ------
    InputError
        As `usable_train_tokens`.
    """
    return SequenceOrder(usable_train_tokens(cfg, n_train_tokens), cfg.seq_len, seed)


@dataclass(frozen=True)
class SequenceOrder:
    """Which training window a run reads at each position of its token stream.

    The training tokens are cut into non-overlapping windows of seq_len + 1 tokens (inputs and
    shifted targets) at stride seq_len. Each epoch visits every window once, in an order drawn
    from the run's seed and the epoch number, so the stream is a pure function of (seed,
    position): resuming needs only the position, and D beyond the unique tokens means epochs.
    """

    n_train_tokens: int
    seq_len: int
    seed: int

    @property
    def n_windows(self) -> int:
        return (self.n_train_tokens - 1) // self.seq_len

    @property
    def n_unique_tokens(self) -> int:
        return self.n_windows * self.seq_len

    def window_starts(self, first: int, count: int) -> np.ndarray:
        """Start offsets of the windows at stream positions first .. first + count - 1."""
        w = self.n_windows
        out = np.empty(count, dtype=np.int64)
        pos = first
        while pos < first + count:
            epoch, offset = divmod(pos, w)
            perm = _epoch_permutation(self.seed, epoch, w)
            take = min(w - offset, first + count - pos)
            out[pos - first : pos - first + take] = perm[offset : offset + take]
            pos += take
        return out * self.seq_len


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n_windows: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


def gather_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """(len(starts), seq_len + 1) int64 array of the windows at ``starts``."""
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return np.asarray(tokens[idx], dtype=np.int64)
