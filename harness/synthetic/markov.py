"""The Markov source (``source=markov``, the default): a corpus of exactly known entropy rate.

Ground truth for the irreducible loss. The source is a stationary order-k Markov chain over
``vocab`` printable ASCII symbols (one symbol is one byte, so with the byte tokenizer one
symbol is one token and a run's loss in nats per token compares directly with the entropy
rate). Each context c_1..c_k (c_k the most recent symbol) ranks the symbols by a score built
from every order, like the interpolated n-gram models (Jelinek and Mercer 1980) but on ranks:

    score(x | c) = sum_{j=0..k} decay^(k - j) eps_j(x | c_{k-j+1}..c_k),   eps_j ~ N(0, 1)

drawn once per context of j symbols, and gives the symbol of rank r (0 = highest score) the
Zipf probability p(r) ∝ (r + 1)^-zipf. So every next-symbol law is an exact Zipf law over its
own permutation, and symbol and context frequencies are skewed (Zipf-like) too. The orders
share the ranking, so a model gains something at every order: the unigram and bigram parts
(v and v^2 numbers) come cheap, the order-k part (v^(k+1) numbers, most of them for rare
contexts) needs capacity and data. Loss therefore falls with N and with D and stays above
the entropy rate

    H = sum_ctx pi(ctx) H(P(. | ctx))     (Cover and Thomas 2006, theorem 4.2.4)

with pi the stationary distribution of the chain on contexts (the last k symbols). Every
P(x | ctx) > 0, so from any context every context is reached in exactly k steps: the chain is
irreducible and aperiodic (ergodic) and pi is unique; it is found by power iteration to
machine precision and its residual is recorded. (Every context's law is the same Zipf law up to
a permutation, so here H also equals the Shannon entropy of that Zipf law: the tests check that
the general formula, through pi, gives exactly that.)

The text is a concatenation of independent segments of ``SEGMENT_TOKENS`` symbols, each a
stationary sample (its first k symbols drawn from pi), generated in lockstep with numpy (a few
million symbols in about a second). The segment length equals the default validation block
(16384 bytes), so segment junctions fall on the block boundaries the train/validation split
cuts anyway. The same spec gives the same bytes.

Spec syntax (``data.corpus``): ``synthetic:KEY=VALUE,KEY=VALUE,...`` with keys order (k, 1..6),
vocab (2..95), zipf (exponent, 0..4), decay (0..4; 0 = a pure order-k chain, each context an
independent random permutation), seed, tokens (length of the text); a key left out takes its
default, e.g. ``synthetic:order=3,vocab=16``. `MarkovSource` implements
`harness.synthetic.base.Source`; `harness.synthetic.source_for` builds it from a spec string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from harness.errors import InputError
from harness.synthetic.base import (
    ALPHABET,
    canonical_spec,
    entropy,
    require,
    spec_syntax,
    to_bytes,
    to_symbols,
)

__all__ = ["GENERATOR_VERSION", "SEGMENT_TOKENS", "SYNTAX", "MarkovSource", "MarkovSpec"]

GENERATOR_VERSION = 1
"""Bumped whenever the same spec would give different bytes (it is part of the cache key)."""
SEGMENT_TOKENS = 16384
"""Length of each independent stationary segment; equals DataConfig's default val_block_bytes."""
_MAX_TABLE = 1 << 24  # v^(k+1) transition probabilities held in memory (128 MiB of float64)


@dataclass(frozen=True, kw_only=True)
class MarkovSpec:
    """Settings of the Markov source (see the module docstring)."""

    order: int = 3
    """k: the next symbol depends on the last k symbols."""
    vocab: int = 16
    """Number of symbols (printable ASCII bytes, one token each under the byte tokenizer)."""
    zipf: float = 1.5
    """Exponent s of the Zipf law p(rank r) ∝ (r + 1)^-s of every next-symbol law."""
    decay: float = 1.0
    """Scale of each order's score relative to the next higher order; 0 = pure order k."""
    seed: int = 0
    """Seed of the transition tables and of the sample."""
    tokens: int = 4_000_000
    """Length of the text in symbols (= bytes = byte tokens)."""

    def __post_init__(self) -> None:
        for name in ("zipf", "decay"):  # 2 and 2.0 are one source: one canonical string
            object.__setattr__(self, name, float(getattr(self, name)))
        checks = (
            ("order", 1 <= self.order <= 6, "an integer 1..6"),
            ("vocab", 2 <= self.vocab <= len(ALPHABET), f"an integer 2..{len(ALPHABET)}"),
            ("zipf", 0.0 <= self.zipf <= 4.0, "a number 0..4"),
            ("decay", 0.0 <= self.decay <= 4.0, "a number 0..4"),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("tokens", self.tokens >= 1000, "an integer >= 1000"),
        )
        require(self, checks, SYNTAX)
        if self.vocab ** (self.order + 1) > _MAX_TABLE:
            raise InputError(
                f"data.corpus: synthetic vocab^(order+1) = "
                f"{self.vocab}^{self.order + 1} is over {_MAX_TABLE}; "
                f"accepted: a smaller vocab or order. {SYNTAX}"
            )

    def canonical(self) -> str:
        """The spec with every key, in a fixed order: equal sources give equal strings."""
        return canonical_spec(self)


SYNTAX = spec_syntax(MarkovSpec, "", "synthetic:order=3,vocab=16,zipf=1.5,seed=0,tokens=4e6")


def _zipf(vocab: int, s: float) -> np.ndarray:
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -s
    return p / p.sum()


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """The chain of a `MarkovSpec`: transition table, stationary law, exact entropies, sampler.

    ``transition`` has shape (vocab,) * order + (vocab,): P[c_1, ..., c_k, x] with c_k the
    most recent symbol. Build it with `MarkovSource.from_spec` (or `harness.synthetic.source_for`).
    """

    spec: MarkovSpec
    transition: np.ndarray

    @classmethod
    def from_spec(cls, spec: MarkovSpec) -> MarkovSource:
        k, v = spec.order, spec.vocab
        rng = np.random.default_rng([spec.seed, 0])  # stream 0: tables; stream 1: the sample
        # score(x | c_1..c_k) = sum_j decay^(k-j) eps_j(x | c_{k-j+1}..c_k), eps_j ~ N(0, 1)
        # drawn once per context of the last j symbols (j = 0: one global score per symbol).
        score = np.zeros((v,) * (k + 1))
        for j in range(k + 1):
            eps = rng.standard_normal(v ** (j + 1)).reshape((1,) * (k - j) + (v,) * (j + 1))
            score = score + spec.decay ** (k - j) * eps
        # Rank 0 = highest score; the rank's Zipf probability is the symbol's probability.
        ranks = np.argsort(np.argsort(-score, axis=-1, kind="stable"), axis=-1, kind="stable")
        return cls(spec=spec, transition=_zipf(v, spec.zipf)[ranks])

    @classmethod
    def from_transition(
        cls, transition: np.ndarray, spec: MarkovSpec | None = None
    ) -> MarkovSource:
        """A source from an explicit table (rows must sum to 1), e.g. a hand-computed case."""
        P = np.asarray(transition, dtype=np.float64)
        k, v = P.ndim - 1, P.shape[-1]
        if k < 1 or any(n != v for n in P.shape) or not np.allclose(P.sum(-1), 1.0, atol=1e-12):
            raise ValueError(
                f"transition: shape {P.shape} is not (v,)*(k+1) with rows summing to 1"
            )
        spec = spec or MarkovSpec(order=k, vocab=v, tokens=max(1000, SEGMENT_TOKENS))
        return cls(spec=spec, transition=P)

    @property
    def order(self) -> int:
        return self.transition.ndim - 1

    @property
    def vocab(self) -> int:
        return self.transition.shape[-1]

    @cached_property
    def _stationary(self) -> tuple[np.ndarray, float, int]:
        """(pi over contexts, shape (v,)*k; L1 residual |pi T - pi|; iterations)."""
        P, k, v = self.transition, self.order, self.vocab
        if not np.all(P > 0):
            # Not needed by our tables (all positive); a hand-made table with zeros may be
            # reducible or periodic, and then pi is not unique.
            raise ValueError("transition has zero entries: ergodicity is not guaranteed")
        pi = np.full((v,) * k, 1.0 / v**k)
        residual, it = math.inf, 0
        for it in range(1, 100_001):  # noqa: B007
            # One step of the context chain: (c_1..c_k) -> (c_2..c_k, x) with P[c_1..c_k, x].
            new = (pi[..., None] * P).sum(axis=0)
            new /= new.sum()
            residual = float(np.abs(new - pi).sum())
            pi = new
            if residual < 1e-15:
                break
        # Residual of the final pi, measured (not the step size of the last iteration).
        step = (pi[..., None] * P).sum(axis=0)
        return pi, float(np.abs(step - pi).sum()), it

    @property
    def stationary(self) -> np.ndarray:
        """Stationary distribution of the context chain, shape (vocab,) * order."""
        return self._stationary[0]

    @property
    def stationary_residual(self) -> float:
        """|pi T - pi|_1 of the computed stationary law (about 1e-16 when converged)."""
        return self._stationary[1]

    def entropy_rate(self) -> float:
        """H = sum_ctx pi(ctx) H(P(. | ctx)), nats per symbol."""
        return float((self.stationary * entropy(self.transition)).sum())

    def conditional_entropies(self) -> list[float]:
        """h_j = H(X_t | the previous j symbols) under the stationary law, j = 0..order.

        h_0 is the entropy of the symbol frequencies, h_order the entropy rate H; the gaps are
        what a model gains by learning each order. From the stationary joint law J of k + 1
        consecutive symbols: h_j = H(last j + 1 symbols) - H(last j symbols).
        """
        k = self.order
        joint = self.stationary[..., None] * self.transition  # (v,)*(k+1)
        h_blocks = [0.0]
        for m in range(1, k + 2):
            marg = joint.sum(axis=tuple(range(k + 1 - m))).ravel()
            h_blocks.append(float(entropy(marg)))
        return [h_blocks[j + 1] - h_blocks[j] for j in range(k + 1)]

    def window_floor(self, seq_len: int) -> float:
        """Lowest mean loss (nats per token) of any model that sees only its window.

        A window of seq_len targets predicts target j (1-based) from j earlier tokens, so the
        first k - 1 targets see less than the full context: the mean is
        (1 / T) sum_{j=1..T} h_min(j, k). It is at least `entropy_rate` and tends to it as T grows.
        """
        h = self.conditional_entropies()
        k = self.order
        return float(sum(h[min(j, k)] for j in range(1, seq_len + 1)) / seq_len)

    def _conditionals(self) -> list[np.ndarray]:
        """P(x | the last j symbols) under the stationary law, j = 0..order, each (v^j, v)."""
        k, v = self.order, self.vocab
        joint = self.stationary[..., None] * self.transition  # (v,)*(k+1)
        out = []
        for j in range(k):
            m = joint.sum(axis=tuple(range(k - j))).reshape(v**j, v)
            out.append(m / m.sum(axis=1, keepdims=True))
        return out + [self.transition.reshape(v**k, v)]

    def eval_floor(self, val_text: bytes, seq_len: int, eval_tokens: int) -> float:
        """Loss of the best window-limited predictor on exactly the harness's evaluation tokens.

        `harness.train` scores the first eval_tokens // seq_len windows of seq_len + 1 tokens
        of the validation text, starting at multiples of seq_len; target t of a window sees the
        t tokens before it in the window. The best such predictor gives P(x | the last
        min(t, order) symbols) (the stationary conditional; the true transition once t >=
        order), and nothing earlier than a segment start (segments are independent). Unlike
        `window_floor` (an expectation) this is the realised floor of the sampled tokens, so
        the measured validation losses are compared with it without the sampling noise of the
        validation set. ``val_text`` must be whole segments (the validation split's blocks of
        val_block_bytes, a multiple of SEGMENT_TOKENS, are).
        """
        k, v = self.order, self.vocab
        sym = to_symbols(val_text, v).astype(np.int64)
        n_windows = eval_tokens // seq_len
        if n_windows < 1 or n_windows * seq_len + 1 > sym.size:
            raise ValueError(f"{eval_tokens} eval tokens need more than {sym.size} symbols")
        pos = np.arange(1, n_windows * seq_len + 1)  # target positions in val_text
        seen = np.minimum(np.minimum((pos - 1) % seq_len + 1, pos % SEGMENT_TOKENS), k)
        total = 0.0
        for j, table in enumerate(self._conditionals()):
            p = pos[seen == j]
            ctx = np.zeros(p.size, dtype=np.int64)
            for i in range(j):  # the j symbols before each target, oldest first
                ctx = ctx * v + sym[p - j + i]
            total -= float(np.log(table[ctx, sym[p]]).sum())
        return total / pos.size

    def generate(self, n_tokens: int | None = None, segment_tokens: int = SEGMENT_TOKENS) -> bytes:
        """The text: ``n_tokens`` symbols (default spec.tokens) as ASCII bytes.

        Independent stationary segments of ``segment_tokens`` symbols, sampled in lockstep (one
        vectorised step per position), concatenated; the last one is cut to length.
        """
        n = self.spec.tokens if n_tokens is None else n_tokens
        k, v = self.order, self.vocab
        rng = np.random.default_rng([self.spec.seed, 1])
        n_seg = -(-n // segment_tokens)
        seg_len = min(n, segment_tokens)
        # Start contexts from pi: each segment is stationary from its first symbol.
        ctx = rng.choice(v**k, size=n_seg, p=self.stationary.ravel() / self.stationary.sum())
        out = np.empty((n_seg, seg_len), dtype=np.uint8)
        digits = (ctx[:, None] // v ** np.arange(k - 1, -1, -1)[None, :]) % v
        first = min(k, seg_len)
        out[:, :first] = digits[:, :first]
        cdf = np.cumsum(self.transition.reshape(v**k, v), axis=1)
        cdf[:, -1] = 1.0  # so that u < 1 always falls in some bin
        u = rng.random((seg_len, n_seg))
        mod = v**k
        for t in range(k, seg_len):
            x = (cdf[ctx] <= u[t][:, None]).sum(axis=1)
            out[:, t] = x
            ctx = (ctx * v + x) % mod
        return to_bytes(out.ravel()[:n])

    def log_loss(self, text: bytes) -> np.ndarray:
        """-ln P(x_t | previous k symbols) for each symbol after the first k of each segment.

        The true model's per-token loss; its mean converges to `entropy_rate` (the
        Shannon-McMillan-Breiman theorem), which tests check.
        """
        k, v = self.order, self.vocab
        sym = to_symbols(text, v)
        logp = np.log(self.transition.reshape(v**k, v))
        losses = []
        for start in range(0, sym.size, SEGMENT_TOKENS):
            s = sym[start : start + SEGMENT_TOKENS].astype(np.int64)
            if s.size <= k:
                continue
            ctx = np.zeros(s.size - k, dtype=np.int64)
            for i in range(k):
                ctx = ctx * v + s[i : s.size - k + i]
            losses.append(-logp[ctx, s[k:]])
        return np.concatenate(losses) if losses else np.zeros(0)

    def cache_id(self) -> str:
        """Stands in for the corpus hash in cache keys: the spec and the generator version."""
        return f"{self.spec.canonical()};generator={GENERATOR_VERSION}"

    def summary(self, seq_len: int | None = None) -> dict[str, Any]:
        """The exact numbers, for the corpus cache and results/NAME/corpus.json."""
        h = self.entropy_rate()
        out: dict[str, Any] = {
            "spec": self.spec.canonical(),
            "generator_version": GENERATOR_VERSION,
            "segment_tokens": SEGMENT_TOKENS,
            "alphabet": ALPHABET[: self.vocab].decode("ascii"),
            "entropy_rate_nats_per_token": h,
            "entropy_rate_bits_per_byte": h / math.log(2),
            "conditional_entropies_nats": self.conditional_entropies(),
            "stationary_residual_l1": self.stationary_residual,
            "stationary_iterations": self._stationary[2],
            "n_contexts": self.vocab**self.order,
            "source": "exact: H = sum_ctx pi(ctx) H(P(.|ctx)), pi by power iteration",
        }
        if seq_len is not None:
            out["seq_len"] = seq_len
            out["window_floor_nats_per_token"] = self.window_floor(seq_len)
        return out
