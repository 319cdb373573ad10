"""Synthetic corpora whose entropy rate is known: ground truth for the irreducible loss.

A corpus is named by a spec string (``data.corpus``): ``synthetic:[source=KIND,]KEY=VALUE,...``
with KIND one of

- ``markov`` (the default), an order-k Markov chain of exact entropy rate
  (`harness.synthetic.markov`);
- ``teacher``, text sampled from a fixed random transformer (`harness.synthetic.teacher`);
- ``facts``, a stream of memorised key/value facts of exact entropy rate
  (`harness.synthetic.facts`).

A key left out takes its default; a bad item, key or value is one `InputError` line that lists
the source's accepted keys with their defaults. This module is the registry: it parses a spec
string (`spec_for`, cheap) and builds its source (`source_for`, cached per process). Every
source implements the `Source` protocol of `harness.synthetic.base`, where the shared helpers
(the symbol alphabet, the spec-string parsing, corpus.json) live; each source module imports
from `harness.synthetic.base` only, so the modules form no import cycle. None of them imports
torch at import time (the teacher imports it when it is built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import InputError
from harness.synthetic.base import (
    ALPHABET,
    PREFIX,
    Source,
    SourceSpec,
    build_spec,
    canonical_spec,
    is_synthetic,
    segment_of,
    spec_items,
    spec_syntax,
    write_reference,
)
from harness.synthetic.facts import FACTS_SYNTAX, FactsSource, FactsSpec
from harness.synthetic.markov import SEGMENT_TOKENS, SYNTAX, MarkovSource, MarkovSpec
from harness.synthetic.teacher import TEACHER_SYNTAX, TeacherSource, TeacherSpec

__all__ = [
    "ALPHABET",
    "PREFIX",
    "SEGMENT_TOKENS",
    "FactsSource",
    "FactsSpec",
    "MarkovSource",
    "MarkovSpec",
    "Source",
    "SourceSpec",
    "TeacherSource",
    "TeacherSpec",
    "canonical_spec",
    "is_synthetic",
    "parse_spec",
    "segment_of",
    "source_for",
    "source_kind",
    "spec_for",
    "spec_syntax",
    "write_reference",
]


@dataclass(frozen=True)
class _Kind:
    """One entry of the registry: a source's spec class, how its errors read, its builder."""

    spec: type
    syntax: str
    """The "Accepted: ..." sentence its bad-spec errors end with."""
    what: str
    """Names the source in a bad value's error: "data.corpus: synthetic {what}KEY = ..."."""
    build: Any
    """spec -> source."""


KINDS: dict[str, _Kind] = {
    "markov": _Kind(MarkovSpec, SYNTAX, "", MarkovSource.from_spec),
    "teacher": _Kind(TeacherSpec, TEACHER_SYNTAX, "teacher ", TeacherSource),
    "facts": _Kind(FactsSpec, FACTS_SYNTAX, "facts ", FactsSource),
}
"""The sources by their ``source=`` name; the first is the default."""


def source_kind(corpus: str) -> str:
    """The source a spec names: "markov" (no ``source`` key, or source=markov), "teacher"
    (`harness.synthetic.teacher`) or "facts" (`harness.synthetic.facts`)."""
    kinds = [val for _, key, val, eq in spec_items(corpus) if key == "source" and eq]
    if not kinds:
        return "markov"
    if len(kinds) == 1 and kinds[0] in KINDS:
        return kinds[0]
    raise InputError(
        f"data.corpus = {corpus!r}: source = {','.join(kinds)!r}; accepted: markov (the "
        "default), teacher or facts, given once"
    )


def parse_spec(corpus: str) -> MarkovSpec:
    """The `MarkovSpec` of a ``synthetic:...`` corpus string.

    Raises
    ------
    InputError
        Not a Markov synthetic spec, an unknown key, a repeated key, or a value out of range;
        the message lists the accepted syntax.
    """
    if not is_synthetic(corpus) or source_kind(corpus) != "markov":
        raise InputError(f"data.corpus = {corpus!r} is not a Markov synthetic spec. {SYNTAX}")
    return build_spec(MarkovSpec, corpus, SYNTAX)


def spec_for(corpus: str) -> SourceSpec:
    """The spec of a ``synthetic:...`` corpus string, its source not built (cheap: what
    config validation and `harness plan` use): a `MarkovSpec`, a `TeacherSpec` for
    ``source=teacher`` or a `FactsSpec` for ``source=facts``.

    Raises
    ------
    InputError
        A bad spec (see `harness.synthetic.base.build_spec`, `source_kind`).
    """
    kind = source_kind(corpus) if is_synthetic(corpus) else "markov"
    if kind == "markov":
        return parse_spec(corpus)
    entry = KINDS[kind]
    spec: SourceSpec = build_spec(entry.spec, corpus, entry.syntax, what=entry.what)
    return spec


_SOURCES: dict[Any, Source] = {}


def source_for(corpus: str) -> Any:
    """The (cached) source of a ``synthetic:...`` corpus string (`spec_for`): a
    `MarkovSource`, a `TeacherSource` or a `FactsSource`, each a `Source`.

    Raises
    ------
    InputError
        A bad spec (see `harness.synthetic.base.build_spec`, `source_kind`).
    """
    spec = spec_for(corpus)
    if spec not in _SOURCES:
        entry = next(k for k in KINDS.values() if isinstance(spec, k.spec))
        _SOURCES[spec] = entry.build(spec)
    return _SOURCES[spec]
