"""The teacher source (harness.synthetic.teacher): determinism, entropies, alignment, bad specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness import synthetic
from harness.config import DataConfig
from harness.data import prepare_corpus, split_train_val
from harness.errors import InputError
from harness.synthetic import source_for
from harness.synthetic.base import to_symbols
from harness.synthetic.teacher import HEAD_DIM, TeacherSource, TeacherSpec

SMALL = "synthetic:source=teacher,vocab=7,layers=1,width=32,scale=3,zipf=1,segment=16"


def _small(tokens: int = 4096, **kw: float) -> TeacherSource:
    args = dict(vocab=7, layers=1, width=32, scale=3.0, zipf=1.0, segment=16, tokens=tokens)
    return TeacherSource(TeacherSpec(**(args | kw)))  # type: ignore[arg-type]


def test_generation_is_deterministic() -> None:
    a = _small().generate()
    assert a == _small().generate()
    assert len(a) == 4096 and set(a) <= set(synthetic.ALPHABET[:7])
    assert _small(seed=1).generate() != a


def _numpy_log_probs(src: TeacherSource, seg: np.ndarray) -> np.ndarray:
    """The teacher's conditional laws for one segment, position by position in plain numpy
    (no torch, no batching, no cache): an independent implementation of the module docstring."""
    v, d = src.spec.vocab, src.spec.width
    heads, half = d // HEAD_DIM, HEAD_DIM // 2
    w = lambda t: t.numpy()  # noqa: E731

    def ln(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / math.sqrt(x.var() + 1e-5)

    def rot(x: np.ndarray, t: int) -> np.ndarray:
        ang = t * 10000.0 ** (-np.arange(half) / half)
        a, b = x[:half], x[half:]
        c, s = np.cos(ang), np.sin(ang)
        return np.concatenate([a * c - b * s, a * s + b * c])

    gelu = np.vectorize(lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))))
    inputs = [v] + [int(s) for s in seg[:-1]]
    out = []
    for t in range(len(seg)):
        xs = [w(src.emb)[inputs[i]].copy() for i in range(t + 1)]
        for blk in src.blocks:
            a = [ln(x) for x in xs]
            new = []
            for i in range(t + 1):
                att = np.zeros(d)
                for h in range(heads):
                    sl = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
                    q = rot((a[i] @ w(blk["q"]))[sl], i)
                    ks = [rot((a[j] @ w(blk["k"]))[sl], j) for j in range(i + 1)]
                    sc = np.array([q @ k for k in ks]) / math.sqrt(HEAD_DIM)
                    p = np.exp(sc - sc.max())
                    p /= p.sum()
                    att[sl] = sum(p[j] * (a[j] @ w(blk["v"]))[sl] for j in range(i + 1))
                y = xs[i] + att @ w(blk["o"])
                new.append(y + gelu(ln(y) @ w(blk["w1"])) @ w(blk["w2"]))
            xs = new
        logits = ln(xs[t]) @ w(src.out) + w(src.bias)
        out.append(logits - logits.max() - math.log(np.exp(logits - logits.max()).sum()))
    return np.array(out)


def test_entropy_matches_independent_recomputation() -> None:
    src = _small(tokens=16 * 64)
    text = src.generate()
    seg = to_symbols(text, 7).astype(np.int64).reshape(-1, 16)
    # The full causal forward (no cache) gives the laws the cached sampler drew from...
    logp = src.log_probs(seg)
    ent = -(np.exp(logp) * logp).sum(-1)
    assert src.entropy_rate() == pytest.approx(ent.mean(), abs=1e-12)
    nll = -np.take_along_axis(logp, seg[..., None], -1)[..., 0]
    assert src.stats["sample_nll_nats_per_token"] == pytest.approx(nll.mean(), abs=1e-12)
    # ...and a position-by-position numpy implementation gives the same laws.
    for i in (0, 17):
        np.testing.assert_allclose(_numpy_log_probs(src, seg[i]), logp[i], atol=1e-9)


def test_trivial_teachers_have_closed_form_entropy() -> None:
    # scale 0: the context is ignored; zipf 0 too: uniform, H = ln(vocab).
    assert _small(scale=0.0, zipf=0.0).entropy_rate() == pytest.approx(math.log(7), abs=1e-12)
    p = np.arange(1, 8, dtype=np.float64) ** -1.5
    p /= p.sum()
    h = _small(scale=0.0, zipf=1.5).entropy_rate()
    assert h == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-12)


def test_sample_nll_estimates_entropy_rate() -> None:
    # Shannon-McMillan-Breiman per segment: the teacher's NLL on its own sample has mean H.
    src = _small(tokens=16 * 3000)
    seg = to_symbols(src.generate(), 7).astype(np.int64).reshape(-1, 16)
    logp = src.log_probs(seg)
    ent = -(np.exp(logp) * logp).sum(-1).mean(1)
    nll = -np.take_along_axis(logp, seg[..., None], -1)[..., 0].mean(1)
    diff = nll - ent
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    assert abs(diff.mean()) < 4 * se
    assert src.stats["entropy_rate_stderr"] == pytest.approx(
        ent.std(ddof=1) / math.sqrt(ent.size), rel=1e-9
    )
    # The context matters: H is well below the symbol-frequency entropy.
    freq = np.bincount(seg.ravel(), minlength=7) / seg.size
    assert src.entropy_rate() < float(-(freq * np.log(freq)).sum()) - 0.2


def test_segments_align_with_split_and_windows(tmp_path: Path) -> None:
    spec = "synthetic:source=teacher,vocab=7,layers=1,width=16,scale=3,segment=32,tokens=40000"
    cfg = DataConfig(
        corpus=spec, seq_len=64, val_block_bytes=1024, val_fraction=0.1, eval_tokens=640
    )
    src = source_for(spec)
    text = src.generate()
    segments = {text[i : i + 32] for i in range(0, len(text) - 31, 32)}
    train, val = split_train_val(text, cfg)
    # Both splits are whole segments, so every window (start a multiple of seq_len, itself a
    # multiple of the segment) begins on a segment start.
    for part in (train, val):
        cut = [part[i : i + 32] for i in range(0, len(part) - 31, 32)]
        assert set(cut) <= segments
    corpus = prepare_corpus(cfg, tmp_path / "cache")
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert doc["loss_floor_nats_per_token"] == pytest.approx(src.entropy_rate())
    # The eval floor is the teacher's NLL on exactly the scored targets: a per-window loop.
    sym = np.asarray(corpus.val_tokens()).astype(np.uint8).tobytes()
    vs = to_symbols(sym, 7).astype(np.int64)
    total, count = 0.0, 0
    for j in range(640 // 64):
        for i in range(1, 65):  # targets 1..seq_len of window j
            p = j * 64 + i
            start = p - p % 32  # the target's segment, wholly inside the window or before it
            lp = src.log_probs(vs[None, start : p + 1])[0, -1]
            total -= lp[vs[p]]
            count += 1
    assert doc["eval_floor_nats_per_token"] == pytest.approx(total / count, abs=1e-12)
    assert doc["eval_tokens"] == 640


def test_cached_corpus_is_not_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "synthetic:source=teacher,vocab=5,layers=1,width=16,segment=64,tokens=20000"
    cfg = DataConfig(corpus=spec, seq_len=64, val_block_bytes=1024, eval_tokens=256)
    prepare_corpus(cfg, tmp_path / "cache")
    h = json.loads((tmp_path / "corpus.json").read_text())["loss_floor_nats_per_token"]
    synthetic._SOURCES.clear()
    monkeypatch.setattr(TeacherSource, "_generate", lambda self: pytest.fail("regenerated"))
    (tmp_path / "corpus.json").unlink()
    prepare_corpus(cfg, tmp_path / "cache")
    assert json.loads((tmp_path / "corpus.json").read_text())["loss_floor_nats_per_token"] == h


def test_no_eval_floor_when_segment_does_not_divide_seq_len(tmp_path: Path) -> None:
    spec = "synthetic:source=teacher,vocab=5,layers=1,width=16,segment=64,tokens=20000"
    cfg = DataConfig(corpus=spec, seq_len=48, val_block_bytes=1024, eval_tokens=480)
    prepare_corpus(cfg, tmp_path / "cache")
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert "eval_floor_nats_per_token" not in doc
    # Windows of 48 cut the 64-symbol segments: H is recorded but is no reachable floor.
    assert doc["loss_floor_nats_per_token"] is None
    assert doc["entropy_rate_nats_per_token"] > 0


def test_parse_and_canonical() -> None:
    src = source_for("synthetic: source = teacher , width=32, tokens=1e4, scale=2")
    assert src.spec == TeacherSpec(width=32, tokens=10_000, scale=2.0)
    assert source_for(src.spec.canonical()) is src
    assert source_for("synthetic:source=markov,order=2").spec.order == 2
    assert source_for("synthetic: source = markov , order=2").spec.order == 2


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:source=teach", r"source = 'teach'; accepted: markov"),
        ("synthetic:source=teacher,order=2", r"unknown key 'order'"),
        ("synthetic:source=teacher,width=20", r"teacher width = 20; accepted: a multiple of 16"),
        ("synthetic:source=teacher,layers=0", r"teacher layers = 0; accepted"),
        ("synthetic:source=teacher,scale=x", r"teacher scale = 'x' is not a number"),
        ("synthetic:source=teacher,segment=100", r"segment = 100; accepted: a power of two"),
        ("synthetic:source=teacher,tokens=10", r"tokens = 10; accepted"),
        ("synthetic:source=teacher,vocab=3,vocab=4", r"given twice"),
        ("synthetic:source=teacher,source=teacher", r"given once"),
    ],
)
def test_bad_spec(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        source_for(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["synthetic_teacher", "synthetic_teacher_width"])
def test_shipped_teacher_experiment_matches_committed_reference(name: str) -> None:
    # The experiment parses into the teacher its comment describes, and the committed
    # corpus.json and fits.json "reference" are for that spec and agree on H (regenerating the
    # 1.6M symbols takes ~2 minutes, so H itself is checked by the tests above, not here).
    from harness.config import load_experiment

    root = Path(__file__).resolve().parents[2]
    exp = load_experiment(root / "experiments" / f"{name}.toml")
    src = source_for(exp.data.corpus)
    assert isinstance(src, TeacherSource) and src.n_params == 99_328
    assert src.spec.segment == exp.data.seq_len  # every window starts on a segment start
    doc = json.loads((root / "results" / name / "corpus.json").read_text())
    assert doc["spec"] == src.spec.canonical()
    assert doc["generator_version"] == 1 and doc["eval_tokens"] == exp.data.eval_tokens
    ref = json.loads((root / "results" / name / "fits.json").read_text())
    ref = ref["reference"]
    assert ref["spec"] == src.spec.canonical()
    assert ref["entropy_rate_nats_per_token"] == pytest.approx(
        doc["entropy_rate_nats_per_token"], rel=1e-9
    )
    assert ref["eval_floor_nats_per_token"] == pytest.approx(
        doc["eval_floor_nats_per_token"], rel=1e-9
    )
