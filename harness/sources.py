"""Corpus formats: which one data.corpus is, its documents one at a time, and its token arrays.

Formats (data.format, or detected from the path):

- 'text': UTF-8 files, read by `harness.data` as bytes (split into blocks, as before).
- 'jsonl': JSON Lines, optionally .gz or .zst compressed, one document per line in the field
  data.text_field.
- 'parquet': a Parquet file or a folder of shards, one document per row of that column.
- 'datasets': a Hugging Face dataset saved with ``save_to_disk`` (a DatasetDict's 'train').
- 'npy', 'bin': token ids, a .npy array or raw .bin of data.token_dtype; a file or a folder of
  shards in name order.

Documents are read lazily, a batch at a time, so no corpus is held in memory whole. Every bad
record ends in one InputError naming the file and its line or row. A structured file is never
read as raw bytes: detection goes by suffix, and a file the suffixes do not name is text only if
it is UTF-8 without NUL bytes (`harness.data` checks).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import DataConfig
from harness.errors import InputError

__all__ = ["FORMATS", "KINDS", "CorpusFiles", "detect_format", "files", "open_corpus"]

FORMATS = ("text", "jsonl", "parquet", "datasets", "npy", "bin")
_SUFFIX = {".jsonl": "jsonl", ".parquet": "parquet", ".npy": "npy", ".bin": "bin"}
# What each format yields: text as bytes, documents one string each, or token arrays.
KINDS = {
    "text": "text",
    "jsonl": "documents",
    "parquet": "documents",
    "datasets": "documents",
    "npy": "tokens",
    "bin": "tokens",
}
_BATCH = 1024  # documents per batch (Parquet record batches, tokenizer calls)
_CHUNK_BYTES = 1 << 20  # text read a MiB at a time


def files(path: Path) -> list[Path]:
    """A file, or the files of a folder (recursively, in name order; hidden ones left out)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _kind(p: Path) -> str | None:
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes[-1:] in ([".gz"], [".zst"]) and suffixes[-2:-1] == [".jsonl"]:
        return "jsonl"
    if suffixes[-1:] == [".json"]:
        return "json"  # a JSON document (a tokenizer.json, a config) is no corpus
    return _SUFFIX.get(suffixes[-1]) if suffixes else None


def detect_format(cfg: DataConfig) -> str:
    """data.format, or the format its path shows: 'datasets' for a save_to_disk folder, else
    the one kind of file it is or holds; 'text' for a bundled or synthetic corpus.

    Raises
    ------
    InputError
        A .json file, or a folder mixing formats.
    """
    path = Path(cfg.corpus).expanduser()
    if not path.exists():
        return "text"  # a bundled name or a synthetic spec; harness.data checks the rest
    if cfg.format != "auto":
        return cfg.format
    if path.is_dir() and any((path / m).is_file() for m in ("dataset_dict.json", "state.json")):
        return "datasets"
    kinds = {_kind(f) for f in files(path)}
    if "json" in kinds:
        bad = next(f for f in files(path) if _kind(f) == "json")
        raise InputError(
            f"data.corpus: {bad} is a JSON document, not a corpus; accepted: text, .jsonl "
            "(.gz, .zst), .parquet, .npy, .bin, a save_to_disk folder (or set data.format)"
        )
    structured = kinds - {None}
    if len(structured) > 1 or (structured and None in kinds):
        mixed = ", ".join(sorted(k or "text" for k in kinds))
        raise InputError(
            f"data.corpus = {cfg.corpus!r}: the folder mixes formats ({mixed}); "
            "accepted: files of one format"
        )
    return structured.pop() if structured else "text"


def _open_text(f: Path) -> io.TextIOBase:
    if f.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(f, "rb"), encoding="utf-8")
    if f.suffix.lower() == ".zst":
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f.open("rb")), "utf-8")
    return f.open(encoding="utf-8")


def _jsonl(f: Path, field: str) -> Iterator[str]:
    with _open_text(f) as fh:
        n = 0
        try:
            for n, line in enumerate(fh, 1):  # noqa: B007 (n names the line in errors)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"data.corpus: {f} line {n}: not JSON ({e.msg})") from None
                if not isinstance(rec, dict) or field not in rec:
                    have = ", ".join(list(rec)[:8]) if isinstance(rec, dict) else type(rec).__name__
                    raise InputError(
                        f"data.corpus: {f} line {n}: no field {field!r} (has: {have}); "
                        "accepted: an object with data.text_field"
                    )
                if not isinstance(rec[field], str):
                    raise InputError(
                        f"data.corpus: {f} line {n}: field {field!r} is "
                        f"{type(rec[field]).__name__}, not a string"
                    )
                yield rec[field]
        except (UnicodeDecodeError, OSError, EOFError) as e:
            raise InputError(f"data.corpus: {f} line {n + 1}: unreadable ({e})") from None


def _column_batches(rows: Iterator[list[object]], where: str, field: str) -> Iterator[str]:
    row = 0
    for batch in rows:
        for v in batch:
            if not isinstance(v, str):
                raise InputError(
                    f"data.corpus: {where} row {row}: column {field!r} is "
                    f"{type(v).__name__}, not a string"
                )
            row += 1
            yield v


def _parquet(f: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:  # pyarrow's ArrowInvalid and friends
        raise InputError(f"data.corpus: {f} is not a Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise InputError(
            f"data.corpus: {f} has no column {field!r} (has: {', '.join(names[:8])}); "
            "accepted: a column named by data.text_field"
        )
    batches = (b.column(0).to_pylist() for b in pf.iter_batches(_BATCH, columns=[field]))
    yield from _column_batches(batches, str(f), field)


def _datasets(path: Path, field: str) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # FileNotFoundError, or a folder of another datasets version
        raise InputError(f"data.corpus: {path} does not load with load_from_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise InputError(
                f"data.corpus: {path} is a DatasetDict without 'train' (has: {', '.join(ds)})"
            )
        ds = ds["train"]
    if field not in ds.column_names:
        raise InputError(
            f"data.corpus: {path} has no column {field!r} (has: {', '.join(ds.column_names[:8])}); "
            "accepted: a column named by data.text_field"
        )
    batches = (b[field] for b in ds.select_columns([field]).iter(batch_size=_BATCH))
    yield from _column_batches(batches, str(path), field)


@dataclass(frozen=True)
class CorpusFiles:
    """One corpus of files, its format found once (`open_corpus`): what the tokenizer reads.

    Text is read a MiB at a time, documents a batch at a time and token arrays memory-mapped,
    so no corpus is held in memory whole.
    """

    name: str
    """As the settings give it (data.corpus or data.val_corpus): what errors name."""
    path: Path
    format: str
    """One of FORMATS."""
    text_field: str = "text"
    token_dtype: str = ""

    @property
    def kind(self) -> str:
        """'text', 'documents' or 'tokens' (`KINDS`)."""
        return KINDS[self.format]

    def files(self) -> list[Path]:
        return files(self.path)

    def total_bytes(self) -> int | None:
        """The files' size, for a progress bar; None for a corpus that is no files."""
        return sum(f.stat().st_size for f in self.files()) if self.path.exists() else None

    def digest(self) -> str:
        """sha256 over the files' relative names and bytes, read in chunks."""
        h = hashlib.sha256()
        for f in self.files():
            h.update(self._name(f).encode() + b"\0")
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        return h.hexdigest()

    def fingerprint(self) -> str:
        """sha256 over the files' relative names, sizes and modification times: what keys the
        cache entry without reading the files (a file written since gets a new entry). The
        content's own sha256 (`digest`) is taken once, as the entry is made."""
        h = hashlib.sha256()
        for f in self.files():
            st = f.stat()
            h.update(f"{self._name(f)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()

    def _name(self, f: Path) -> str:
        return str(f.relative_to(self.path) if self.path.is_dir() else f.name)

    def text_chunks(self) -> Iterator[bytes]:
        """The UTF-8 text of the file or folder of files, a MiB at a time: each file without
        its trailing newlines and then two, so files are paragraphs apart.

        Raises
        ------
        InputError
            The folder holds no files, a file is not UTF-8, holds a NUL byte (token ids or
            another binary), or the text is empty.
        """
        import codecs

        corpus = self.name
        paths = self.files()
        if not paths:
            raise InputError(f"data.corpus = {corpus!r}: the folder holds no files")
        seen_text = False
        for f in paths:
            check = codecs.getincrementaldecoder("utf-8")()
            held, offset = b"", 0  # trailing newlines kept back until more text follows
            with f.open("rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    pending = len(check.getstate()[0])
                    try:
                        check.decode(chunk)
                    except UnicodeDecodeError as e:
                        raise InputError(
                            f"data.corpus: {f} is not UTF-8 text ({e.reason} at byte "
                            f"{offset - pending + e.start})"
                        ) from None
                    nul = chunk.find(b"\0")
                    if nul >= 0:  # UTF-8 allows NUL; text does not (token ids, a binary)
                        raise InputError(
                            f"data.corpus: {f} holds a NUL byte at byte {offset + nul}, so it is "
                            "not text; accepted: UTF-8 text, or data.format naming its format "
                            "(bin, npy, ...)"
                        )
                    offset += len(chunk)
                    data = held + chunk
                    body = data.rstrip(b"\n")
                    held = data[len(body) :]
                    seen_text = seen_text or bool(body.strip())
                    if body:
                        yield body
            try:
                check.decode(b"", final=True)
            except UnicodeDecodeError as e:
                raise InputError(
                    f"data.corpus: {f} is not UTF-8 text ({e.reason} at its end)"
                ) from None
            yield b"\n\n"
        if not seen_text:
            raise InputError(f"data.corpus = {corpus!r}: the text is empty")

    def count_documents(self) -> int | None:
        """How many documents `documents` will yield, for a progress bar's ETA: Parquet and
        datasets from their metadata, JSON Lines by counting lines (a pass far faster than
        tokenizing them). None where it cannot tell; `documents` then names the problem."""
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())
            if self.format == "datasets":
                import datasets

                ds = datasets.load_from_disk(str(self.path))
                return len(ds["train"] if isinstance(ds, datasets.DatasetDict) else ds)
            n = 0
            for f in self.files():
                with _open_text(f) as fh:
                    n += sum(1 for line in fh if line.strip())
            return n
        except Exception:  # noqa: BLE001 (only the bar's total; the read itself reports errors)
            return None

    def documents(self) -> Iterator[str]:
        """The documents of a 'jsonl', 'parquet' or 'datasets' corpus, one string each, in
        file and record order."""
        if self.format == "datasets":
            yield from _datasets(self.path, self.text_field)
            return
        read = {"jsonl": _jsonl, "parquet": _parquet}[self.format]
        for f in self.files():
            yield from read(f, self.text_field)

    def token_arrays(self) -> list[tuple[Path, np.ndarray]]:
        """The token shards of an 'npy' or 'bin' corpus, each memory-mapped, never read whole.

        Raises
        ------
        InputError
            A .bin without data.token_dtype or whose size is no multiple of it, a .npy that is
            not a 1-d integer array.
        """
        out = []
        for f in self.files():
            if f.stat().st_size == 0:
                raise InputError(
                    f"data.corpus: {f} is empty (0 bytes); accepted: a file of token ids"
                )
            if self.format == "bin":
                if not self.token_dtype:
                    raise InputError(
                        f"data.corpus: {f} is a raw .bin; accepted: with data.token_dtype = "
                        "'uint16' or 'uint32'"
                    )
                size = np.dtype(self.token_dtype).itemsize
                if f.stat().st_size % size:
                    raise InputError(
                        f"data.corpus: {f} holds {f.stat().st_size} bytes, not a whole number "
                        f"of {self.token_dtype} ids ({size} bytes each); accepted: a file of "
                        "data.token_dtype ids"
                    )
                arr = np.memmap(f, dtype=self.token_dtype, mode="r")
            else:
                try:
                    arr = np.load(f, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise InputError(f"data.corpus: {f} is not a .npy array ({e})") from None
                if arr.ndim != 1 or arr.dtype.kind not in "iu":
                    raise InputError(
                        f"data.corpus: {f} holds a {arr.ndim}-d {arr.dtype} array; accepted: a "
                        "1-d array of integer token ids"
                    )
            out.append((f, arr))
        return out


def open_corpus(cfg: DataConfig) -> tuple[CorpusFiles, CorpusFiles | None]:
    """data.corpus and data.val_corpus (None without one) as files of one detected format
    each. A bundled or synthetic corpus reads as 'text' of a path that is no file
    (`harness.data` reads it).

    Raises
    ------
    InputError
        data.val_corpus missing, or of another kind than data.corpus; a format not detected.
    """
    train = _files_of(cfg, cfg.corpus)
    if not cfg.val_corpus:
        return train, None
    if not Path(cfg.val_corpus).expanduser().exists():
        raise InputError(f"data.val_corpus = {cfg.val_corpus!r}: no such file or folder")
    val = _files_of(cfg, cfg.val_corpus)
    if train.kind != val.kind:
        raise InputError(
            f"data.val_corpus = {cfg.val_corpus!r} is {val.format} ({val.kind}) but "
            f"data.corpus is {train.format} ({train.kind}); accepted: a validation set of the "
            "same kind"
        )
    return train, val


def _files_of(cfg: DataConfig, corpus: str) -> CorpusFiles:
    return CorpusFiles(
        name=corpus,
        path=Path(corpus).expanduser(),
        format=detect_format(dataclasses.replace(cfg, corpus=corpus)),
        text_field=cfg.text_field,
        token_dtype=cfg.token_dtype,
    )
