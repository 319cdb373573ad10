"""Corpora, the fixed validation split, and the order runs read tokens in.

A corpus is tokenized once per experiment into a cache entry (`harness.encode`) that every
run memory-maps; no run re-tokenizes. The validation split is chosen before tokenization (whole
blocks of text, or whole documents, spread evenly over the corpus; or data.val_corpus), so no
run ever trains on it and all runs of an experiment score the same held-out tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from harness import encode, sources
from harness import tokenizer as pretrained
from harness.atomic import atomic_write_json
from harness.config import DataConfig
from harness.errors import InputError, no_space
from harness.synthetic import (
    SEGMENT_TOKENS,
    Source,
    is_synthetic,
    segment_of,
    source_for,
    spec_for,
    write_reference,
)
from harness.tokens import TokenSpans

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
    return b"".join(sources.CorpusFiles(corpus, Path(corpus).expanduser(), "text").text_chunks())


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
    """'uint16' or 'uint32' for raw train.bin / val.bin; '' for .npy (entries made before
    2026-12) or for token arrays read in place (``shards``)."""
    format: str = "text"
    n_documents: int = 0
    """Documents read (structured corpora and token arrays with an end-of-text id); 0 else."""
    shards: tuple[tuple[str, str], ...] = ()
    """Token arrays read where they lie: (path, raw dtype or '' for .npy) of each shard, whose
    ranges of each split are in spans.npz (`harness.tokens`)."""
    val_corpus_sha256: str = ""
    """sha256 of data.val_corpus, where the validation set is one of its own."""

    def _open(self, split: str) -> np.ndarray | TokenSpans:
        if self.shards:
            arrays = [
                np.memmap(p, dtype=dt, mode="r") if dt else np.load(p, mmap_mode="r")
                for p, dt in self.shards
            ]
            return TokenSpans(arrays, np.load(self.directory / "spans.npz")[split])
        if self.token_dtype:
            return np.memmap(self.directory / f"{split}.bin", dtype=self.token_dtype, mode="r")
        return np.load(self.directory / f"{split}.npy", mmap_mode="r")

    def train_tokens(self) -> np.ndarray | TokenSpans:
        return self._open("train")

    def val_tokens(self) -> np.ndarray | TokenSpans:
        return self._open("val")

    def token_n_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (to turn nats per token into bits per byte)."""
        return np.load(self.directory / "token_n_bytes.npy")


def _load(directory: Path) -> Corpus:
    info = json.loads((directory / "info.json").read_text())
    info.pop("synthetic", None)
    shards = tuple((str(p), str(dt)) for p, dt in info.pop("shards", ()))
    return Corpus(directory=directory, shards=shards, **info)


def _corpus_id(files: sources.CorpusFiles, source: Source | None) -> str:
    """What keys a corpus without reading it: a synthetic spec, the bundled file's sha256, or
    the files' names, sizes and times (`harness.sources.CorpusFiles.fingerprint`)."""
    if source is not None:
        return source.cache_id()
    if files.name in BUNDLED:
        ref = resources.files("harness.corpora").joinpath(BUNDLED[files.name])
        return hashlib.sha256(ref.read_bytes()).hexdigest()
    return files.fingerprint()


def _text_chunks(
    files: sources.CorpusFiles, source: Source | None
) -> Callable[[], Iterator[bytes]]:
    """Text to read a chunk at a time, as often as called: files stream from disk; a bundled
    or synthetic corpus (small, generated or decompressed once) is held in memory."""
    if source is None and files.name not in BUNDLED:
        return files.text_chunks
    text = read_corpus_bytes(files.name)  # the bundled one, or generated (harness.synthetic)
    return lambda: iter([text[i : i + (1 << 20)] for i in range(0, len(text), 1 << 20)])


def prepare_corpus(cfg: DataConfig, cache_root: Path, *, build: bool = True) -> Corpus:
    """Tokenize ``cfg.corpus`` once into ``cache_root/data-<key>/`` and return it.

    The key hashes what identifies the corpus (`_corpus_id`) and every setting that changes
    the tokens, so a changed file or setting makes a new entry instead of reusing a stale one.
    The entry is built in a scratch folder beside it, a batch at a time (`harness.encode`), and
    renamed into place whole: an error, or a kill, leaves no half-written entry behind.
    ``build=False`` only opens an existing entry and writes nothing (the ranks of a run other
    than 0, once rank 0 has prepared it).
    """
    cache_root = Path(cache_root)
    check_corpus(cfg.corpus)
    files, val_files = sources.open_corpus(cfg)  # the source: its format found once
    source = source_for(cfg.corpus) if is_synthetic(cfg.corpus) else None
    kind = files.kind
    settings = {
        "v": 3,
        "format": files.format,
        "corpus": _corpus_id(files, source),
        "val_format": val_files.format if val_files else "",
        "val_corpus": val_files.fingerprint() if val_files else None,
        "tokenizer": (
            _tokenizer_key(cfg.tokenizer)
            if pretrained.is_pretrained(cfg.tokenizer)
            else cfg.tokenizer
        ),
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "text_field": cfg.text_field if kind == "documents" else None,
        "token_dtype": cfg.token_dtype if kind == "tokens" else None,
        "eos_id": cfg.eos_id if kind == "tokens" else None,
        # Token arrays are read where they lie: a moved corpus is another entry.
        "where": str(Path(cfg.corpus).expanduser().resolve()) if kind == "tokens" else None,
        "val_where": (
            str(Path(cfg.val_corpus).expanduser().resolve())
            if kind == "tokens" and cfg.val_corpus
            else None
        ),
        "vocab_size": cfg.vocab_size,
        "val_fraction": None if cfg.val_corpus else cfg.val_fraction,
        "val_block_bytes": None if cfg.val_corpus or kind == "documents" else cfg.val_block_bytes,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    directory = cache_root / f"data-{key}"
    info_path = directory / "info.json"
    if not info_path.exists():
        if not build:
            raise RuntimeError(f"no cache entry {directory} for data.corpus = {cfg.corpus!r}")
        _build(directory, lambda tmp: _write(cfg, files, val_files, source, tmp))
    elif source is not None and hasattr(source, "remember"):
        stored = json.loads(info_path.read_text()).get("synthetic")
        if stored:
            source.remember(stored)  # a teacher's H is measured on generation, kept here
    corpus = _load(directory)
    check_sizes(cfg, corpus)
    if source and build:
        _write_synthetic_reference(source, cfg, cache_root, corpus)
    return corpus


def _write(
    cfg: DataConfig,
    files: sources.CorpusFiles,
    val_files: sources.CorpusFiles | None,
    source: Source | None,
    tmp: Path,
) -> dict[str, object]:
    """The entry's files in ``tmp``, tokenized from the source (`harness.encode`); its
    info.json fields."""
    if files.kind == "documents":
        return encode.write_documents(cfg, files, val_files, tmp)
    if files.kind == "tokens":
        return encode.write_arrays(cfg, files, val_files, tmp)
    chunks = _text_chunks(files, source)
    val_chunks = _text_chunks(val_files, None) if val_files else None
    info = encode.write_text(cfg, tmp, chunks, val_chunks, files.total_bytes())
    return info | ({"synthetic": source.summary()} if source else {})


def _build(directory: Path, write: Callable[[Path], dict[str, object]]) -> None:
    """Make the cache entry ``directory`` with ``write(scratch)``, renamed into place whole."""
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            atomic_write_json(tmp / "info.json", write(tmp))  # written last: the entry is whole
        except OSError as e:
            if no_space(e):  # named by the entry, not by whichever shard's close() failed
                raise OSError(e.errno, e.strerror, f"the token cache {directory}") from None
            raise
        if not (directory / "info.json").exists():  # a half-written entry is no entry
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.replace(tmp, directory)
        except OSError:  # another process finished the same entry first
            if not (directory / "info.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        where, larger = (
            (f"data.val_corpus = {cfg.val_corpus!r}", "a larger data.val_corpus")
            if cfg.val_corpus
            else (f"data.corpus = {cfg.corpus!r}", "a larger corpus, a larger data.val_fraction")
        )
        raise InputError(
            f"{where}: {corpus.n_val_tokens} held-out tokens, fewer than data.eval_tokens = "
            f"{cfg.eval_tokens} (+1); accepted: {larger} or a smaller data.eval_tokens"
        )


def _tokenizer_key(name: str) -> str:
    """data.tokenizer in a cache key: 'byte', 'bpe', or a pretrained one's name and the sha256
    of its file."""
    if not pretrained.is_pretrained(name):
        return name
    return name + ":" + hashlib.sha256(Path(pretrained.path_of(name)).read_bytes()).hexdigest()


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
