"""What every synthetic source shares: the `Source` protocol, the symbols, the spec helpers.

Each source module (`harness.synthetic.markov`, `harness.synthetic.teacher`,
`harness.synthetic.facts`) imports from here only, and this module imports no source, so the
sources form no import cycle; the registry that parses a ``synthetic:...`` string and picks a
source is the package itself (`harness.synthetic`).

Symbols are printable ASCII bytes (`ALPHABET`): symbol i is written as byte ``ALPHABET[i]``
(`to_bytes`, `to_symbols`), so with the byte tokenizer one symbol is one token.

Spec strings are ``synthetic:[source=KIND,]KEY=VALUE,...``: `spec_items` splits one,
`build_spec` turns its items into a source's spec dataclass, `require` checks the fields'
ranges, `spec_syntax` writes the "Accepted: ..." sentence every bad-spec error ends with and
`canonical_spec` the one string (cache key, corpus.json "spec") of each source.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from harness.atomic import atomic_write_text
from harness.errors import InputError

__all__ = [
    "ALPHABET",
    "PREFIX",
    "Source",
    "SourceSpec",
    "build_spec",
    "canonical_spec",
    "entropy",
    "is_synthetic",
    "require",
    "segment_of",
    "spec_items",
    "spec_syntax",
    "to_bytes",
    "to_symbols",
    "write_reference",
]

PREFIX = "synthetic:"
ALPHABET = (
    string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation + " "
).encode("ascii")
"""The printable ASCII bytes symbols 0..94 are written as (95 in all)."""


@runtime_checkable
class SourceSpec(Protocol):
    """A source's settings: a frozen dataclass built from a spec string (`build_spec`)."""

    @property
    def tokens(self) -> int:
        """Length of the text in symbols (= bytes = byte tokens)."""
        ...

    def canonical(self) -> str:
        """The spec with every key, in a fixed order: equal sources give equal strings."""
        ...


@runtime_checkable
class Source(Protocol):
    """A synthetic source, as `harness.data` and `write_reference` use it.

    `harness.synthetic.markov.MarkovSource`, `harness.synthetic.teacher.TeacherSource` and
    `harness.synthetic.facts.FactsSource` implement it. A source whose windows must start on
    a unit (a teacher's segment, a fact) has a ``segment`` field on its spec (`segment_of`).
    A source may also have ``remember(summary)``: `harness.data` calls it with the cached
    `summary` so that a cached corpus need not be regenerated (the teacher measures H while
    it generates).
    """

    @property
    def spec(self) -> SourceSpec:
        """The settings the source was built from."""
        ...

    def generate(self) -> bytes:
        """The text: ``spec.tokens`` symbols as ASCII bytes; the same spec, the same bytes."""
        ...

    def entropy_rate(self) -> float:
        """H, nats per symbol: the lowest mean loss any model can reach."""
        ...

    def eval_floor(self, val_text: bytes, seq_len: int, eval_tokens: int) -> float | None:
        """The best window-limited predictor's mean loss on exactly the tokens the harness's
        evaluation scores (the first eval_tokens // seq_len windows of ``val_text``), or None
        where the source's units do not start every window."""
        ...

    def cache_id(self) -> str:
        """Stands in for the corpus hash in cache keys: the spec and the generator version."""
        ...

    def summary(self, seq_len: int | None = None) -> dict[str, Any]:
        """The numbers for the corpus cache and results/NAME/corpus.json: at least "spec",
        "generator_version", "segment_tokens", "alphabet", "entropy_rate_nats_per_token",
        "entropy_rate_bits_per_byte" and "source" (how H was found), and "seq_len" when
        given."""
        ...


# --- symbols ----------------------------------------------------------------------------------

_TO_BYTE = np.frombuffer(ALPHABET, dtype=np.uint8)


def to_bytes(symbols: np.ndarray) -> bytes:
    """Symbols 0..94 as their ASCII bytes."""
    return _TO_BYTE[symbols].tobytes()


def to_symbols(text: bytes, vocab: int) -> np.ndarray:
    """ASCII bytes as symbols 0..vocab-1 (uint8); a ValueError for a byte outside them."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[_TO_BYTE[:vocab]] = np.arange(vocab, dtype=np.uint8)
    sym = lut[np.frombuffer(text, dtype=np.uint8)]
    if np.any(sym == 255):
        raise ValueError("text holds bytes outside the source's alphabet")
    return sym


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, -p * np.log(p), 0.0)
    return t.sum(axis=axis)


# --- spec strings -----------------------------------------------------------------------------

T = TypeVar("T")


def is_synthetic(corpus: str) -> bool:
    """Whether a data.corpus value names the synthetic source."""
    return corpus.startswith(PREFIX) or corpus == PREFIX[:-1]


def canonical_spec(spec: Any, source: str = "") -> str:
    """``synthetic:[source=SOURCE,]KEY=VALUE,...`` with every field of the spec dataclass in
    order: the one string (cache key, corpus.json "spec") of each source."""
    head = f"{PREFIX}source={source}," if source else PREFIX
    return head + ",".join(f"{f.name}={getattr(spec, f.name)!r}" for f in fields(spec))


def spec_syntax(cls: type, source: str, example: str) -> str:
    """The "Accepted: ..." sentence every bad-spec error of a source ends with: its keys with
    their defaults, and ``example``."""
    head = f"{PREFIX}source={source}," if source else PREFIX
    keys = ", ".join(f"{f.name} (default {f.default!r})" for f in fields(cls))
    return f"Accepted: {head!r} then comma-separated KEY=VALUE with keys {keys}, e.g. {example!r}"


def _number(key: str, text: str, integer: bool, syntax: str, what: str = "") -> int | float:
    """A spec value as a finite number (an integer where ``integer``); else an InputError
    naming the key and listing ``syntax``."""
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or (integer and x != int(x)):
        kind = "an integer" if integer else "a number"
        raise InputError(f"data.corpus: synthetic {what}{key} = {text!r} is not {kind}. {syntax}")
    return int(x) if integer else x


def require(
    spec: Any, checks: Sequence[tuple[str, bool, str]], syntax: str, what: str = ""
) -> None:
    """Raise an InputError for the first (field, ok, accepted) of ``checks`` that is not ok,
    naming the field, its value and what is accepted, and listing ``syntax``."""
    for name, ok, accepted in checks:
        if not ok:
            raise InputError(
                f"data.corpus: synthetic {what}{name} = {getattr(spec, name)!r}; "
                f"accepted: {accepted}. {syntax}"
            )


def spec_items(corpus: str) -> list[tuple[str, str, str, bool]]:
    """A spec's comma-separated items as (item, key, value, has '='), spaces stripped."""
    body = corpus[len(PREFIX) :] if corpus.startswith(PREFIX) else ""
    out = []
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, eq, val = (part.strip() for part in item.partition("="))
        out.append((item, key, val, bool(eq)))
    return out


def build_spec(cls: type[T], corpus: str, syntax: str, what: str = "") -> T:
    """The ``cls`` spec (`harness.synthetic.markov.MarkovSpec`,
    `harness.synthetic.teacher.TeacherSpec`, `harness.synthetic.facts.FactsSpec`) of a corpus
    string's KEY=VALUE items, the ``source`` item left out; an InputError names a bad item, an
    unknown or repeated key, or a value that is not a number, and lists ``syntax``."""
    kinds = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for item, key, val, eq in spec_items(corpus):
        if eq and key == "source":
            continue
        if not eq or key not in kinds:
            unknown = f": unknown key {key!r}" if eq else ""
            raise InputError(f"data.corpus = {corpus!r}: bad item {item!r}{unknown}. {syntax}")
        if key in values:
            raise InputError(f"data.corpus = {corpus!r}: {key} given twice. {syntax}")
        values[key] = _number(key, val, kinds[key] in ("int", int), syntax, what)
    return cls(**values)


# --- corpus.json ------------------------------------------------------------------------------


def segment_of(source: Source) -> int | None:
    """The unit every window must start on for a source's H to be reachable: a teacher's
    segment or a fact (`harness.synthetic.teacher`, `harness.synthetic.facts`); None for a
    Markov chain, whose windows may start anywhere."""
    return getattr(source.spec, "segment", None)


def write_reference(
    path: str | os.PathLike[str],
    source: Source,
    tokenizer: str,
    seq_len: int,
    *,
    eval_floor: float | None = None,
    eval_tokens: int | None = None,
    val_block_bytes: int | None = None,
) -> Path:
    """Write the source's exact numbers to ``path`` (results/NAME/corpus.json) atomically.

    ``loss_floor_nats_per_token`` is the entropy rate where a token is one symbol (the byte
    tokenizer), and None otherwise (a BPE token spans several symbols; compare bits per byte),
    or where a teacher's segments or facts do not start every window (``seq_len`` or
    ``val_block_bytes`` not a multiple of the segment).
    ``eval_floor`` (`Source.eval_floor` on the run's own evaluation tokens), when given,
    is recorded with ``eval_tokens``. The file is rewritten only when its content would change.
    """
    path = Path(path)
    # A teacher's segments (a fact, harness.synthetic.facts) must start every window for H to
    # be reachable.
    segment = segment_of(source)
    aligned = segment is None or (
        seq_len % segment == 0 and (val_block_bytes or segment) % segment == 0
    )
    reachable = tokenizer == "byte" and aligned
    doc = source.summary(seq_len) | {
        "tokenizer": tokenizer,
        "loss_floor_nats_per_token": source.entropy_rate() if reachable else None,
    }
    if eval_floor is not None:
        doc |= {"eval_floor_nats_per_token": eval_floor, "eval_tokens": eval_tokens}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    return atomic_write_text(path, text)
