"""A synthetic corpus of memorised facts with Zipf frequencies: loss falls to H as a power law.

On the Markov tables of `harness.synthetic.markov` and the teacher of
`harness.synthetic.teacher`, the excess loss over the entropy rate H fell only slowly with
model size (it halved over 60x in N), and approach 3 traded E against a shallow size exponent.
This source follows the quantization model of neural scaling (Michaud et al. 2023): the text
is a stream of independent *facts*, each a ``key`` of random symbols naming an entity followed
by that entity's ``value`` (fixed random symbols) and a separator symbol. Entity e
(e = 1..entities, by rank) occurs with the Zipf probability p_e ∝ e^-zipf. A model that has
stored entity e's value predicts it at no loss; one that has not pays about
``value * ln(vocab)`` nats for it. Stored facts are limited by parameters (a value is
``value * log2(vocab)`` bits) and by data (rare entities are seen rarely), and with Zipf
frequencies the mass of the facts not stored, hence the excess loss, falls as a power law in
both: sum_{e > n} p_e ~ n^-(zipf - 1).

The entropy rate is exact. Keys, values and separators are deterministic given the entity,
and entities are independent, so per symbol

    H = H(entity) / (key + value + 1),    H(entity) = -sum_e p_e ln p_e

all of it in the key symbols: key symbol j has the conditional entropy
H(c_j | c_1..c_{j-1}) of the entity law marginalised to key prefixes (these sum to
H(entity)); value symbols and separators have entropy 0. Each entity's key is a distinct code
of ``key`` symbols (a seeded random permutation of the vocab^key codes, so rank and code are
unrelated), and its value ``value`` seeded uniform symbols.

Alignment with the harness (`harness.data`), as for the teacher's segments: one fact is
``fact_len = key + value + 1`` symbols; when it divides ``val_block_bytes``, both splits are
whole facts, and when it also divides seq_len every window starts on a fact start, so each
target's position in its fact is known and its fact's earlier symbols lie in the window. The
Bayes-optimal prediction is then the true law, and the lowest achievable loss on the
evaluation tokens (`FactsSource.eval_floor`) is the mean of -ln p(symbol | its fact's prefix)
over them; otherwise no eval floor is recorded.

Symbols are printable ASCII bytes (`harness.synthetic.base.ALPHABET`): the first ``vocab``
for keys and values, the next one as the separator; one symbol is one token under the byte
tokenizer.

Spec syntax (``data.corpus``): ``synthetic:source=facts,KEY=VALUE,...`` with keys vocab
(2..94), key (1..8 symbols, vocab^key at most 2^24), value (1..60 symbols), entities
(2..vocab^key, at most 2^20), zipf (exponent, 0..4), seed, tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.synthetic.base import (
    ALPHABET,
    canonical_spec,
    entropy,
    require,
    spec_syntax,
    to_bytes,
    to_symbols,
)

__all__ = ["FACTS_SYNTAX", "FactsSource", "FactsSpec"]

GENERATOR_VERSION = 1
"""Bumped whenever the same spec would give different bytes (it is part of the cache key)."""
_MAX_ENTITIES = 1 << 20
_MAX_CODES = 1 << 24  # vocab^key key codes are permuted in memory (128 MiB of int64)


@dataclass(frozen=True, kw_only=True)
class FactsSpec:
    """Settings of the facts source (see the module docstring)."""

    vocab: int = 16
    """Symbols keys and values are written in (the separator is one more symbol)."""
    key: int = 3
    """Symbols per key."""
    value: int = 4
    """Symbols per value."""
    entities: int = 4096
    """Number of distinct facts (at most vocab^key)."""
    zipf: float = 1.5
    """Exponent s of the entity frequencies p_e ∝ e^-s."""
    seed: int = 0
    """Seed of the keys, values and of the sample."""
    tokens: int = 2_000_000
    """Length of the text in symbols (= bytes = byte tokens)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "zipf", float(self.zipf))
        codes = self.vocab**self.key if 1 <= self.key <= 8 else 0
        checks = (
            ("vocab", 2 <= self.vocab <= len(ALPHABET) - 1, f"an integer 2..{len(ALPHABET) - 1}"),
            ("key", 1 <= self.key <= 8, "an integer 1..8"),
            ("key", codes <= _MAX_CODES, f"at most vocab^key = {_MAX_CODES} codes"),
            ("value", 1 <= self.value <= 60, "an integer 1..60"),
            (
                "entities",
                2 <= self.entities <= min(codes, _MAX_ENTITIES),
                f"an integer 2..vocab^key = {codes}, at most {_MAX_ENTITIES}",
            ),
            ("zipf", 0.0 <= self.zipf <= 4.0, "a number 0..4"),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("tokens", self.tokens >= 1000, "an integer >= 1000"),
        )
        require(self, checks, FACTS_SYNTAX, what="facts ")

    @property
    def segment(self) -> int:
        """Symbols per fact (key, value, separator): the unit windows must start on."""
        return self.key + self.value + 1

    def canonical(self) -> str:
        """The spec with every key, in a fixed order: equal sources give equal strings."""
        return canonical_spec(self, "facts")


FACTS_SYNTAX = spec_syntax(
    FactsSpec,
    "facts",
    "synthetic:source=facts,vocab=16,key=3,value=4,entities=4096,zipf=1.5,tokens=2e6",
)


class FactsSource:
    """The facts of a `FactsSpec`: keys, values, sampler, exact entropies and floors.

    Implements `harness.synthetic.base.Source`, the interface `harness.data` uses:
    `generate`, `cache_id`, `summary`, `entropy_rate`, `eval_floor`.
    """

    def __init__(self, spec: FactsSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])  # stream 0: the table; stream 1: the sample
        v, k, n = spec.vocab, spec.key, spec.entities
        self._place = v ** np.arange(k - 1, -1, -1)  # a key's symbols -> its code
        self._code = rng.permutation(v**k)[:n]  # entity rank -> key code
        # (entities, key) symbols, most significant first; (entities, value) symbols.
        self.keys = ((self._code[:, None] // self._place) % v).astype(np.uint8)
        self.values = rng.integers(0, v, size=(n, spec.value)).astype(np.uint8)
        p = np.arange(1, n + 1, dtype=np.float64) ** -spec.zipf
        self.p = p / p.sum()
        self._text: bytes | None = None

    # --- exact numbers ----------------------------------------------------------------------

    def entity_entropy(self) -> float:
        """H(entity) = -sum_e p_e ln p_e, nats per fact."""
        return float(entropy(self.p))

    def entropy_rate(self) -> float:
        """H, nats per symbol: H(entity) spread over the fact's key + value + 1 symbols."""
        return self.entity_entropy() / self.spec.segment

    def _key_log_probs(self) -> np.ndarray:
        """ln p(c_j | c_1..c_{j-1}) of every entity's key symbol j: (entities, key)."""
        v, k = self.spec.vocab, self.spec.key
        out = np.empty((self.spec.entities, k))
        prefix = np.zeros(self.spec.entities, dtype=np.int64)  # code of c_1..c_{j-1}
        for j in range(k):
            longer = prefix * v + self.keys[:, j]
            # Mass of each prefix: the entities' probabilities summed by prefix code.
            _, inv_short = np.unique(prefix, return_inverse=True)
            _, inv_long = np.unique(longer, return_inverse=True)
            mass_short = np.bincount(inv_short, weights=self.p)[inv_short]
            mass_long = np.bincount(inv_long, weights=self.p)[inv_long]
            out[:, j] = np.log(mass_long) - np.log(mass_short)
            prefix = longer
        return out

    def conditional_entropies(self) -> list[float]:
        """Entropy of each position of a fact, nats: key symbols H(c_j | c_1..c_{j-1}), then 0
        for the value symbols and the separator. They sum to H(entity)."""
        key = -(self.p[:, None] * self._key_log_probs()).sum(axis=0)
        return [float(x) for x in key] + [0.0] * (self.spec.value + 1)

    def symbol_log_loss(self, symbols: np.ndarray) -> np.ndarray:
        """-ln p_true of each symbol of whole facts (symbols.size a multiple of fact_len)."""
        facts = symbols.reshape(-1, self.spec.segment).astype(np.int64)
        v, k = self.spec.vocab, self.spec.key
        if np.any(facts[:, :k] >= v):
            raise ValueError("text holds a key that names no entity")
        rank_of_code = np.full(v**k, -1, dtype=np.int64)
        rank_of_code[self._code] = np.arange(self.spec.entities)
        rank = rank_of_code[facts[:, :k] @ self._place]
        if np.any(rank < 0):
            raise ValueError("text holds a key that names no entity")
        loss = np.zeros(facts.shape)
        loss[:, :k] = -self._key_log_probs()[rank]
        wrong = np.any(facts[:, k:-1] != self.values[rank], axis=1) | (facts[:, -1] != v)
        loss[wrong, k:] = np.inf  # impossible under the source (never in its own text)
        return loss.ravel()

    # --- the corpus -------------------------------------------------------------------------

    def generate(self) -> bytes:
        """The text: spec.tokens symbols as ASCII bytes (kept for the process's lifetime)."""
        if self._text is None:
            spec = self.spec
            n_facts = -(-spec.tokens // spec.segment)
            rng = np.random.default_rng([spec.seed, 1])
            rank = rng.choice(spec.entities, size=n_facts, p=self.p)
            sep = np.full((n_facts, 1), spec.vocab, dtype=np.uint8)
            facts = np.concatenate([self.keys[rank], self.values[rank], sep], axis=1)
            self._text = to_bytes(facts.ravel()[: spec.tokens])
        return self._text

    def eval_floor(self, val_text: bytes, seq_len: int, eval_tokens: int) -> float | None:
        """The true law's mean loss on exactly the tokens the harness's evaluation scores.

        `harness.train` scores the first eval_tokens // seq_len windows of seq_len + 1 tokens
        of the validation text, starting at multiples of seq_len: targets at positions
        1..n_windows * seq_len. ``val_text`` must start on a fact (validation blocks of a
        multiple of fact_len bytes do). None unless fact_len divides seq_len (only then does
        every window start on a fact start: module docstring), and None where the scored
        targets reach into a fact the text cuts short (``tokens`` not a multiple of fact_len).
        """
        s = self.spec.segment
        if seq_len % s:
            return None
        sym = to_symbols(val_text, self.spec.vocab + 1)
        n_windows = eval_tokens // seq_len
        last = n_windows * seq_len  # the last scored position
        if n_windows < 1 or last + 1 > sym.size:
            raise ValueError(f"{eval_tokens} eval tokens need more than {sym.size} symbols")
        whole = (last // s + 1) * s  # the facts the scored targets lie in
        if whole > sym.size:  # the text's cut last fact reached the validation split
            return None
        return float(self.symbol_log_loss(sym[:whole])[1 : last + 1].mean())

    def cache_id(self) -> str:
        """Stands in for the corpus hash in cache keys: the spec and the generator version."""
        return f"{self.spec.canonical()};generator={GENERATOR_VERSION}"

    def summary(self, seq_len: int | None = None) -> dict[str, Any]:
        """The exact numbers, for the corpus cache and results/NAME/corpus.json."""
        h = self.entropy_rate()
        bits = self.spec.value * math.log2(self.spec.vocab)
        out: dict[str, Any] = {
            "spec": self.spec.canonical(),
            "generator_version": GENERATOR_VERSION,
            "segment_tokens": self.spec.segment,
            "alphabet": ALPHABET[: self.spec.vocab + 1].decode("ascii"),
            "entropy_rate_nats_per_token": h,
            "entropy_rate_bits_per_byte": h / math.log(2),
            "entity_entropy_nats": self.entity_entropy(),
            "conditional_entropies_nats": self.conditional_entropies(),
            "value_bits_per_fact": bits,
            "table_bits": bits * self.spec.entities,
            "source": "exact: H = H(entity) / (key + value + 1), H(entity) of the Zipf law",
        }
        if seq_len is not None:
            out["seq_len"] = seq_len
        return out
