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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

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
    """The model's vocabulary: 256 byte values, or the BPE's configured size; for a masked LM
    (arch 'bert' or 'modernbert') one more, the [MASK] token, whose id is the last
    (`harness.objectives`)."""
    base = 256 if cfg.tokenizer == "byte" else cfg.bpe_vocab_size
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

    @property
    def train_path(self) -> Path:
        return self.directory / "train.npy"

    @property
    def val_path(self) -> Path:
        return self.directory / "val.npy"

    def train_tokens(self) -> np.ndarray:
        return np.load(self.train_path, mmap_mode="r")

    def val_tokens(self) -> np.ndarray:
        return np.load(self.val_path, mmap_mode="r")

    def token_n_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (to turn nats per token into bits per byte)."""
        return np.load(self.directory / "token_n_bytes.npy")


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _train_bpe(train_text: str, vocab_size: int) -> tuple[object, np.ndarray]:
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
    lines = train_text.splitlines(keepends=True)
    tok.train_from_iterator((lines[i : i + 1000] for i in range(0, len(lines), 1000)), trainer)
    # Byte-level BPE spells every byte as one printable character, so a token's length in
    # characters is the number of bytes it stands for.
    vocab = tok.get_vocab()
    n_bytes = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    for token, idx in vocab.items():
        n_bytes[idx] = len(token)
    return tok, n_bytes


def _encode_bpe(tok: object, text: str) -> np.ndarray:
    lines = text.splitlines(keepends=True)
    ids: list[int] = []
    for enc in tok.encode_batch(lines):  # type: ignore[attr-defined]
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.uint16)


def prepare_corpus(cfg: DataConfig, cache_root: Path) -> Corpus:
    """Tokenize ``cfg.corpus`` once into ``cache_root/data-<key>/`` and return it.

    The key hashes the corpus bytes and every setting that changes the tokens, so a changed
    file or setting makes a new cache entry instead of reusing a stale one.
    """
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
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(cache_root) / f"data-{key}"
    info_path = directory / "info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        stored = info.pop("synthetic", None)
        if source is not None and stored and hasattr(source, "remember"):
            source.remember(stored)  # a teacher's H is measured on generation, kept here
        corpus = Corpus(directory=directory, **info)
        usable_train_tokens(cfg, corpus.n_train_tokens)  # data.unique_tokens fits the split
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
    usable_train_tokens(cfg, corpus.n_train_tokens)  # data.unique_tokens fits the split
    if source:
        _write_synthetic_reference(source, cfg, Path(cache_root), corpus)
    return corpus


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
