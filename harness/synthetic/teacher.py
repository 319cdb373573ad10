"""A synthetic corpus written by a fixed random transformer: a teacher whose size bounds the loss.

The Markov sources of `harness.synthetic.markov` have a table that a small model can hold once
it has seen enough data, so on them the gap between model sizes closes as D grows. Here the
text is sampled from a *teacher*: a small causal transformer with seeded random (untrained)
weights. Its next-symbol law is a fixed function of up to ``segment`` earlier symbols with
about ``12 width^2 layers`` parameters; a student smaller than that cannot represent it
whatever its data, so a capacity gap should persist at large D (the teacher-student setting:
the source is itself a network of known size).

Teacher (float64 throughout): token embedding (vocab + 1 rows, the last a begin-of-segment
token), N(0, 1), and rotary positions as the llama students; ``layers`` pre-LayerNorm blocks
(attention with heads of 16 dimensions, then a GELU MLP of width 4 ``width``), every matrix
N(0, 1 / fan_in) and no learned norms; the logit of symbol i is

    scale * LN(x) . w_i  -  zipf * ln(i + 1),    w_i ~ N(0, I / width)

so ``scale`` is the standard deviation of the context-dependent logits (0 = an i.i.d. Zipf
source; a larger scale makes each next-symbol law skewed and sharply context-dependent) and
``zipf`` gives the symbol frequencies a Zipf-like ranking. One symbol is one printable ASCII
byte (`harness.synthetic.base.ALPHABET`), so with the byte tokenizer one symbol is one token.

The text is a concatenation of independent segments of ``segment`` symbols, each sampled from
the begin-of-segment token, all segments in lockstep with a key/value cache (measured: 512k
symbols in 33.6 s on one thread, about a million a minute). Entropy: the corpus' entropy rate
per symbol is H = E[H(p_teacher(. | segment prefix))], the mean over offsets 0..segment-1 of
the conditional entropy; it is estimated as the mean of the teacher's exact conditional
entropies over every generated symbol, with a standard error from the spread of the per-segment
means (the segments are independent and identically distributed).

Alignment with the harness (`harness.data`): the train/validation split cuts the text into
blocks of ``val_block_bytes``; training and evaluation windows are seq_len + 1 tokens starting
at multiples of seq_len of the training split and of the validation split. When ``segment``
divides ``val_block_bytes``, every block (hence both splits) is made of whole segments, so
segment starts fall at multiples of ``segment`` in each split; when ``segment`` also divides
``seq_len``, every window starts on a segment start, so each target's whole segment prefix
lies inside its window and everything else the window holds comes from other, independent
segments. The Bayes-optimal prediction from the window is then exactly the teacher's
conditional law, and the lowest achievable mean loss on the evaluation tokens is the teacher's
own NLL on them (`TeacherSource.eval_floor`); with segment = seq_len every window's targets
are offsets 1..segment-1 of one segment and offset 0 of the next, so each offset is scored
once per window, as in H. Otherwise no eval floor is recorded.

Spec syntax (``data.corpus``): ``synthetic:source=teacher,KEY=VALUE,...`` with keys vocab
(2..95), layers (1..8), width (a multiple of 16, 16..256), scale (0..20), zipf (0..4),
segment (a power of two, 16..2048), seed, tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.synthetic.base import (
    ALPHABET,
    canonical_spec,
    require,
    spec_syntax,
    to_bytes,
    to_symbols,
)

__all__ = ["TEACHER_SYNTAX", "TeacherSource", "TeacherSpec"]

GENERATOR_VERSION = 1
"""Bumped whenever the same spec would give different bytes (it is part of the cache key)."""
HEAD_DIM = 16
_CHUNK = 2048  # segments sampled together, at most
_CHUNK_BYTES = 2 << 30  # and no more than fit this: key/value cache plus one attention matrix


@dataclass(frozen=True, kw_only=True)
class TeacherSpec:
    """Settings of the teacher source (see the module docstring)."""

    vocab: int = 16
    """Number of symbols (printable ASCII bytes, one token each under the byte tokenizer)."""
    layers: int = 2
    """Transformer blocks of the teacher."""
    width: int = 64
    """Residual width of the teacher (heads of 16 dimensions)."""
    scale: float = 4.0
    """Standard deviation of the context-dependent logits."""
    zipf: float = 1.0
    """Symbol i's logit bias is -zipf ln(i + 1): Zipf-like symbol frequencies."""
    segment: int = 128
    """Length of each independent segment (the teacher's context); align with data.seq_len."""
    seed: int = 0
    """Seed of the weights and of the sample."""
    tokens: int = 2_000_000
    """Length of the text in symbols (= bytes = byte tokens)."""

    def __post_init__(self) -> None:
        for name in ("scale", "zipf"):
            object.__setattr__(self, name, float(getattr(self, name)))
        checks = (
            ("vocab", 2 <= self.vocab <= len(ALPHABET), f"an integer 2..{len(ALPHABET)}"),
            ("layers", 1 <= self.layers <= 8, "an integer 1..8"),
            (
                "width",
                16 <= self.width <= 256 and self.width % HEAD_DIM == 0,
                "a multiple of 16, 16..256",
            ),
            ("scale", 0.0 <= self.scale <= 20.0, "a number 0..20"),
            ("zipf", 0.0 <= self.zipf <= 4.0, "a number 0..4"),
            (
                "segment",
                16 <= self.segment <= 2048 and self.segment & (self.segment - 1) == 0,
                "a power of two 16..2048",
            ),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("tokens", self.tokens >= 1000, "an integer >= 1000"),
        )
        require(self, checks, TEACHER_SYNTAX, what="teacher ")

    def canonical(self) -> str:
        """The spec with every key, in a fixed order: equal sources give equal strings."""
        return canonical_spec(self, "teacher")


TEACHER_SYNTAX = spec_syntax(
    TeacherSpec,
    "teacher",
    "synthetic:source=teacher,vocab=16,layers=2,width=64,scale=4,tokens=2e6",
)


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """Rotary embedding of (..., HEAD_DIM) vectors: pairs (i, i + HEAD_DIM / 2) turned."""
    import torch

    a, b = x[..., : HEAD_DIM // 2], x[..., HEAD_DIM // 2 :]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def _layer_norm(x: Any) -> Any:
    import torch

    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5)


class TeacherSource:
    """The teacher of a `TeacherSpec`: weights, sampler, exact conditional entropies, floors.

    Implements `harness.synthetic.base.Source`, the interface `harness.data` uses:
    `generate`, `cache_id`, `summary`, `entropy_rate`, `eval_floor`; and its optional
    `remember`, which restores the generation's statistics from the corpus cache so that a
    cached corpus is not regenerated.
    """

    def __init__(self, spec: TeacherSpec) -> None:
        import torch

        self.spec = spec
        v, d, s = spec.vocab, spec.width, spec.segment
        rng = np.random.default_rng([spec.seed, 0])  # stream 0: weights; stream 1: the sample

        def normal(*shape: int, std: float = 1.0) -> Any:
            return torch.from_numpy(rng.standard_normal(shape) * std)

        self.emb = normal(v + 1, d)  # row v: the begin-of-segment token
        # Rotary position embedding (Su et al. 2021), as the llama students use.
        ang = np.arange(s)[:, None] * 10000.0 ** (-np.arange(HEAD_DIM // 2) / (HEAD_DIM // 2))
        self.cos, self.sin = torch.from_numpy(np.cos(ang)), torch.from_numpy(np.sin(ang))
        self.blocks = [
            {
                "q": normal(d, d, std=d**-0.5),
                "k": normal(d, d, std=d**-0.5),
                "v": normal(d, d, std=d**-0.5),
                "o": normal(d, d, std=d**-0.5),
                "w1": normal(d, 4 * d, std=d**-0.5),
                "w2": normal(4 * d, d, std=(4 * d) ** -0.5),
            }
            for _ in range(spec.layers)
        ]
        self.out = normal(d, v, std=d**-0.5) * spec.scale
        self.bias = torch.from_numpy(-spec.zipf * np.log(np.arange(1, v + 1, dtype=np.float64)))
        self._stats: dict[str, Any] | None = None
        self._text: bytes | None = None

    @property
    def n_params(self) -> int:
        """Non-embedding parameters (the blocks' matrices and the output layer)."""
        d, v = self.spec.width, self.spec.vocab
        return self.spec.layers * 12 * d * d + d * v

    # --- the network ----------------------------------------------------------------------

    def _mlp(self, blk: dict[str, Any], x: Any) -> Any:
        import torch

        return torch.nn.functional.gelu(_layer_norm(x) @ blk["w1"]) @ blk["w2"]

    def _chunk(self) -> int:
        """Segments processed together: _CHUNK, fewer where their float64 key/value cache and
        one layer's attention matrix would pass _CHUNK_BYTES (2048 for the shipped spec)."""
        t, w = self.spec.segment, self.spec.width
        per_segment = t * w * 16 * self.spec.layers + (w // HEAD_DIM) * t * t * 8
        return max(1, min(_CHUNK, _CHUNK_BYTES // per_segment))

    def log_probs(self, symbols: np.ndarray) -> np.ndarray:
        """ln p_teacher(x_t | x_0..x_{t-1}) over all symbols, for segments given whole.

        ``symbols`` is (n, T) with T <= segment, each row a segment from its start; the result
        is (n, T, vocab), row t the law of x_t. A full causal forward pass, independent of the
        cached one `generate` uses (the tests check that both agree).
        """
        import torch

        n, t = symbols.shape
        h = self.spec.width // HEAD_DIM
        inp = torch.full((n, t), self.spec.vocab, dtype=torch.long)
        inp[:, 1:] = torch.from_numpy(symbols[:, :-1].astype(np.int64))
        x = self.emb[inp]
        cos, sin = self.cos[:t], self.sin[:t]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        for blk in self.blocks:
            a = _layer_norm(x)
            q, k, v = ((a @ blk[m]).view(n, t, h, HEAD_DIM).transpose(1, 2) for m in "qkv")
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
            att = att.masked_fill(~mask, -math.inf).softmax(-1)
            x = x + (att @ v).transpose(1, 2).reshape(n, t, -1) @ blk["o"]
            x = x + self._mlp(blk, x)
        logits = _layer_norm(x) @ self.out + self.bias
        return logits.log_softmax(-1).numpy()

    def _sample_chunk(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample len(u) segments with uniforms u (n, segment) through a key/value cache:
        (symbols, conditional entropy of each symbol's law, -ln p of each drawn symbol)."""
        import torch

        n, s = u.shape
        vocab, h = self.spec.vocab, self.spec.width // HEAD_DIM
        keys = [torch.empty(n, h, s, HEAD_DIM, dtype=torch.float64) for _ in self.blocks]
        vals = [torch.empty(n, h, s, HEAD_DIM, dtype=torch.float64) for _ in self.blocks]
        sym = np.empty((n, s), dtype=np.uint8)
        ent = np.empty((n, s))
        nll = np.empty((n, s))
        prev = torch.full((n,), vocab, dtype=torch.long)
        for t in range(s):
            x = self.emb[prev]
            cos, sin = self.cos[t], self.sin[t]
            for i, blk in enumerate(self.blocks):
                a = _layer_norm(x)
                q = _rotate((a @ blk["q"]).view(n, h, 1, HEAD_DIM), cos, sin)
                keys[i][:, :, t] = _rotate((a @ blk["k"]).view(n, h, HEAD_DIM), cos, sin)
                vals[i][:, :, t] = (a @ blk["v"]).view(n, h, HEAD_DIM)
                att = (q @ keys[i][:, :, : t + 1].transpose(-1, -2)) / math.sqrt(HEAD_DIM)
                x = x + (att.softmax(-1) @ vals[i][:, :, : t + 1]).reshape(n, -1) @ blk["o"]
                x = x + self._mlp(blk, x)
            logp = (_layer_norm(x) @ self.out + self.bias).log_softmax(-1).numpy()
            p = np.exp(logp)
            cdf = np.cumsum(p, axis=1)
            cdf[:, -1] = 1.0  # so that u < 1 always falls in some bin
            draw = np.minimum((cdf <= u[:, t : t + 1]).sum(axis=1), vocab - 1)
            sym[:, t] = draw
            ent[:, t] = -(p * logp).sum(axis=1)
            nll[:, t] = -logp[np.arange(n), draw]
            prev = torch.from_numpy(draw.astype(np.int64))
        return sym, ent, nll

    # --- the corpus -------------------------------------------------------------------------

    def _generate(self) -> tuple[bytes, dict[str, Any]]:
        import torch

        spec = self.spec
        s = spec.segment
        n_seg = -(-spec.tokens // s)
        rng = np.random.default_rng([spec.seed, 1])
        u = rng.random((n_seg, s))
        parts, ents, nlls = [], [], []
        with torch.no_grad():
            chunk = self._chunk()
            for i in range(0, n_seg, chunk):
                sym, ent, nll = self._sample_chunk(u[i : i + chunk])
                parts.append(sym)
                ents.append(ent)
                nlls.append(nll)
        sym, ent, nll = np.concatenate(parts), np.concatenate(ents), np.concatenate(nlls)
        # H from whole segments only (each covers every offset once); the text is cut to length.
        seg_h = ent.mean(axis=1)
        seg_nll = nll.mean(axis=1)
        stats = {
            "entropy_rate_nats_per_token": float(seg_h.mean()),
            "entropy_rate_stderr": (
                float(seg_h.std(ddof=1) / math.sqrt(n_seg)) if n_seg > 1 else None
            ),
            "sample_nll_nats_per_token": float(seg_nll.mean()),
            "sample_nll_stderr": (
                float(seg_nll.std(ddof=1) / math.sqrt(n_seg)) if n_seg > 1 else None
            ),
            "entropy_by_offset_nats": [float(x) for x in ent.mean(axis=0)[:: max(1, s // 16)]],
            "n_segments": n_seg,
        }
        return to_bytes(sym.ravel()[: spec.tokens]), stats

    def generate(self) -> bytes:
        """The text: spec.tokens symbols as ASCII bytes (kept for the process's lifetime)."""
        if self._text is None:
            self._text, self._stats = self._generate()
        return self._text

    def remember(self, summary: dict[str, Any]) -> None:
        """Take the generation's statistics from a cached `summary` (same spec and version)."""
        if (
            summary.get("spec") == self.spec.canonical()
            and summary.get("generator_version") == GENERATOR_VERSION
            and "entropy_rate_nats_per_token" in summary
        ):
            keys = (
                "entropy_rate_nats_per_token",
                "entropy_rate_stderr",
                "sample_nll_nats_per_token",
                "sample_nll_stderr",
                "entropy_by_offset_nats",
                "n_segments",
            )
            self._stats = {k: summary[k] for k in keys}

    @property
    def stats(self) -> dict[str, Any]:
        if self._stats is None:
            self.generate()
        assert self._stats is not None
        return self._stats

    def entropy_rate(self) -> float:
        """H, nats per symbol: the mean of the teacher's conditional entropies over the text."""
        return float(self.stats["entropy_rate_nats_per_token"])

    def eval_floor(self, val_text: bytes, seq_len: int, eval_tokens: int) -> float | None:
        """The teacher's own mean NLL on exactly the tokens the harness's evaluation scores.

        `harness.train` scores the first eval_tokens // seq_len windows of seq_len + 1 tokens
        of the validation text, starting at multiples of seq_len: targets at positions
        1..n_windows * seq_len. ``val_text`` must be whole segments (validation blocks of a
        multiple of ``segment`` bytes are). None unless ``segment`` divides seq_len (only then
        is the teacher's law the best a window-limited predictor can do: module docstring).
        """
        import torch

        s = self.spec.segment
        if seq_len % s:
            return None
        sym = to_symbols(val_text, self.spec.vocab).astype(np.int64)
        n_windows = eval_tokens // seq_len
        last = n_windows * seq_len  # the last scored position
        if n_windows < 1 or last + 1 > sym.size:
            raise ValueError(f"{eval_tokens} eval tokens need more than {sym.size} symbols")
        n_seg = last // s + 1
        seg = np.zeros((n_seg, s), dtype=np.int64)
        avail = sym[: n_seg * s]
        seg.ravel()[: avail.size] = avail
        chunk = self._chunk()
        with torch.no_grad():
            logp = np.concatenate(
                [self.log_probs(seg[i : i + chunk]) for i in range(0, n_seg, chunk)]
            )
        pos = np.arange(1, last + 1)
        return float(-logp[pos // s, pos % s, sym[pos]].mean())

    def cache_id(self) -> str:
        """Stands in for the corpus hash in cache keys: the spec and the generator version."""
        return f"{self.spec.canonical()};generator={GENERATOR_VERSION}"

    def summary(self, seq_len: int | None = None) -> dict[str, Any]:
        """The numbers for the corpus cache and results/NAME/corpus.json."""
        out: dict[str, Any] = {
            "spec": self.spec.canonical(),
            "generator_version": GENERATOR_VERSION,
            "segment_tokens": self.spec.segment,
            "alphabet": ALPHABET[: self.spec.vocab].decode("ascii"),
            **self.stats,
            "entropy_rate_bits_per_byte": self.entropy_rate() / math.log(2),
            "teacher_non_embedding_params": self.n_params,
            "source": "teacher: H = mean over the generated symbols of the teacher's exact "
            "conditional entropy; stderr from the independent segments' means",
        }
        if seq_len is not None:
            out["seq_len"] = seq_len
        return out
