"""The synthetic Markov corpus: exact entropy rate, sampler, spec, cache hook, fits reference."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import DataConfig
from harness.data import prepare_corpus, read_corpus_bytes
from harness.errors import InputError
from harness.synthetic import (
    ALPHABET,
    SEGMENT_TOKENS,
    MarkovSource,
    MarkovSpec,
    parse_spec,
    source_for,
    write_reference,
)


def _h(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


# --- exact entropy rate -------------------------------------------------------------------


def test_two_state_chain_hand_computed() -> None:
    # P = [[1-a, a], [b, 1-b]]: pi = (b, a) / (a + b), H = (b h(a) + a h(b)) / (a + b)
    # (Cover and Thomas, example 4.2.1).
    a, b = 0.1, 0.3
    src = MarkovSource.from_transition(np.array([[1 - a, a], [b, 1 - b]]))
    np.testing.assert_allclose(src.stationary, [0.75, 0.25], rtol=0, atol=1e-15)
    expected = (b * _h([a, 1 - a]) + a * _h([b, 1 - b])) / (a + b)
    assert src.entropy_rate() == pytest.approx(expected, rel=1e-14)
    # By hand: h(0.1) = 0.3250830, h(0.3) = 0.6108643; (0.3 * 0.3250830 + 0.1 * 0.6108643) / 0.4
    assert expected == pytest.approx(0.3965283, abs=1e-7)
    # Order 1: every target sees its full context, so the window floor is H itself.
    assert src.window_floor(128) == pytest.approx(expected, rel=1e-14)
    h = src.conditional_entropies()
    assert h[0] == pytest.approx(_h([0.75, 0.25]), rel=1e-14) and h[1] == pytest.approx(expected)


def test_iid_source_is_shannon_entropy() -> None:
    p = np.array([0.5, 0.25, 0.125, 0.125])  # H = 1.75 bits
    order2 = np.broadcast_to(p, (4, 4, 4)).copy()
    src = MarkovSource.from_transition(order2)
    assert src.entropy_rate() == pytest.approx(1.75 * math.log(2), rel=1e-14)
    np.testing.assert_allclose(src.conditional_entropies(), [1.75 * math.log(2)] * 3, rtol=1e-13)


def test_stationary_law_matches_dense_eigenvector() -> None:
    src = MarkovSource.from_spec(MarkovSpec(order=2, vocab=5, zipf=1.3, seed=3))
    v, k = 5, 2
    P = src.transition.reshape(v**k, v)
    T = np.zeros((v**k, v**k))  # context (a, b) -> (b, x)
    for ctx in range(v**k):
        for x in range(v):
            T[ctx, (ctx * v + x) % v**k] += P[ctx, x]
    w, vecs = np.linalg.eig(T.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    np.testing.assert_allclose(src.stationary.ravel(), pi, rtol=0, atol=1e-13)
    assert src.stationary_residual < 1e-14
    H = -(pi[:, None] * P * np.log(P)).sum()
    assert src.entropy_rate() == pytest.approx(H, rel=1e-13)


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:order=2,vocab=32,zipf=1.1,decay=0.5"])
def test_every_context_is_one_zipf_law(spec: str) -> None:
    # Each next-symbol law is the Zipf law up to a permutation, so H through pi must equal the
    # Shannon entropy of that Zipf law exactly: a check of the stationary computation.
    src = source_for(spec)
    z = np.arange(1, src.vocab + 1, dtype=float) ** -src.spec.zipf
    z /= z.sum()
    np.testing.assert_allclose(
        np.sort(src.transition, axis=-1)[..., ::-1],
        np.broadcast_to(z, src.transition.shape),
        rtol=1e-15,
    )
    assert src.entropy_rate() == pytest.approx(_h(list(z)), rel=1e-13)


def test_default_source_has_graded_structure() -> None:
    src = source_for("synthetic:")
    h = src.conditional_entropies()
    # Each order teaches the model something: strictly falling, ending at H; exact numbers
    # of the default source (quoted in the README).
    assert all(h[j] > h[j + 1] + 0.2 for j in range(3))
    np.testing.assert_allclose(h, [2.6101523, 2.3870814, 2.1203098, 1.8603862], atol=1e-7)
    assert src.entropy_rate() == pytest.approx(h[-1], rel=1e-12)
    floor = src.window_floor(128)  # targets 1 and 2 of a window see 1 and 2 symbols
    assert floor == pytest.approx((h[1] + h[2] + 126 * h[3]) / 128, rel=1e-14)
    assert floor > src.entropy_rate()


# --- the sample -----------------------------------------------------------------------


def test_true_model_log_loss_converges_to_entropy_rate() -> None:
    src = source_for("synthetic:tokens=300000")
    text = src.generate()
    assert len(text) == 300_000 and set(text) <= set(ALPHABET[:16])
    loss = src.log_loss(text)
    # Standard error from the independent segments' means (each segment is its own chain).
    seg = len(loss) // 19
    means = loss[: 19 * seg].reshape(19, seg).mean(axis=1)
    se = means.std(ddof=1) / math.sqrt(19)
    H = src.entropy_rate()
    assert se < 0.004
    assert abs(loss.mean() - H) < 0.01 and abs(loss.mean() - H) < 4 * se
    # Symbol frequencies match the stationary marginal (h_0) too.
    counts = np.bincount(np.frombuffer(text, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / counts.sum()
    assert _h(list(p)) == pytest.approx(src.conditional_entropies()[0], abs=0.005)


def test_generation_is_deterministic() -> None:
    spec = MarkovSpec(order=2, vocab=8, tokens=50_000, seed=7)
    a = MarkovSource.from_spec(spec).generate()
    b = MarkovSource.from_spec(spec).generate()
    assert a == b
    assert (
        MarkovSource.from_spec(MarkovSpec(order=2, vocab=8, tokens=50_000, seed=8)).generate() != a
    )
    # Golden: if this changes, the same spec gives other bytes; bump GENERATOR_VERSION.
    assert hashlib.sha256(a).hexdigest()[:16] == GOLDEN_SHA
    assert read_corpus_bytes("synthetic:order=2,vocab=8,tokens=5e4,seed=7") == a


GOLDEN_SHA = "f61ed0b722df2869"


def test_segments_are_stationary_from_the_start() -> None:
    # The first symbol of each segment follows the stationary marginal (no burn-in bias).
    src = source_for("synthetic:order=2,vocab=3,zipf=2")
    text = src.generate(40_000 * 5, segment_tokens=5)
    sym = np.frombuffer(text, dtype=np.uint8).reshape(40_000, 5) - ALPHABET[0]
    first = np.bincount(sym[:, 0] * 3 + sym[:, 1], minlength=9) / 40_000  # first context
    np.testing.assert_allclose(first, src.stationary.ravel(), atol=0.01)
    assert SEGMENT_TOKENS == DataConfig().val_block_bytes


# --- spec -----------------------------------------------------------------------------


def test_parse_spec() -> None:
    assert parse_spec("synthetic:") == MarkovSpec() == parse_spec("synthetic")
    s = parse_spec("synthetic: order=2, vocab=32 ,zipf=1.1,decay=0,seed=3,tokens=2e6")
    assert s == MarkovSpec(order=2, vocab=32, zipf=1.1, decay=0.0, seed=3, tokens=2_000_000)
    assert parse_spec(s.canonical()) == s
    assert s.canonical() == ("synthetic:order=2,vocab=32,zipf=1.1,decay=0.0,seed=3,tokens=2000000")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:order=3,colour=2", r"bad item 'colour=2'"),
        ("synthetic:order", r"bad item 'order'"),
        ("synthetic:order=2.5", r"order = '2.5' is not an integer"),
        ("synthetic:zipf=abc", r"zipf = 'abc' is not a number"),
        ("synthetic:vocab=200", r"vocab = 200; accepted: an integer 2..95"),
        ("synthetic:order=0", r"order = 0; accepted: an integer 1..6"),
        ("synthetic:order=6,vocab=95", r"vocab\^\(order\+1\) = 95\^7"),
        ("synthetic:seed=1,seed=2", r"seed given twice"),
        ("synthetic:tokens=10", r"tokens = 10; accepted: an integer >= 1000"),
    ],
)
def test_bad_spec(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        parse_spec(spec)
    msg = str(err.value)
    assert "\n" not in msg and "Accepted: 'synthetic:' then comma-separated KEY=VALUE" in msg
    assert msg.startswith("data.corpus")


# --- cache hook and results/NAME/corpus.json ---------------------------------------------


def test_prepare_corpus_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "synthetic:order=2,vocab=8,tokens=200000,seed=1"
    cfg = DataConfig(corpus=spec, val_block_bytes=4096, eval_tokens=1024)
    cache = tmp_path / "results" / "exp" / "cache"
    c = prepare_corpus(cfg, cache)
    assert c.n_train_tokens + c.n_val_tokens == 200_000 and c.vocab_size == 256
    src = source_for(spec)
    doc = json.loads((cache.parent / "corpus.json").read_text())
    assert doc["entropy_rate_nats_per_token"] == pytest.approx(src.entropy_rate(), rel=1e-15)
    assert doc["loss_floor_nats_per_token"] == doc["entropy_rate_nats_per_token"]
    assert doc["entropy_rate_bits_per_byte"] == pytest.approx(src.entropy_rate() / math.log(2))
    assert doc["window_floor_nats_per_token"] == pytest.approx(src.window_floor(128))
    info = json.loads((c.directory / "info.json").read_text())
    assert info["synthetic"]["entropy_rate_nats_per_token"] == doc["entropy_rate_nats_per_token"]
    assert info["corpus_sha256"] == hashlib.sha256(src.generate()).hexdigest()
    # Cached: found by the spec, without generating the text again.
    monkeypatch.setattr(MarkovSource, "generate", lambda self, n=None: pytest.fail("regenerated"))
    assert prepare_corpus(cfg, cache) == c
    # A bad spec is one InputError line.
    with pytest.raises(InputError, match=r"synthetic vocab = 1; accepted"):
        prepare_corpus(DataConfig(corpus="synthetic:vocab=1"), cache)


def test_eval_floor_matches_a_per_token_loop() -> None:
    # Two whole segments; seq_len 12 does not divide 16384, so a window straddles the junction.
    src = source_for("synthetic:order=2,vocab=4,zipf=1.5,seed=3,tokens=32768")
    text = src.generate()
    sym = np.frombuffer(text, dtype=np.uint8) - ALPHABET[0]
    P, pi = src.transition, src.stationary
    seq_len, n_windows = 12, 2700  # 32,400 targets, past the junction at 16,384
    total = 0.0
    for w in range(n_windows):
        for t in range(1, seq_len + 1):
            pos = w * seq_len + t
            j = min(t, pos % SEGMENT_TOKENS, 2)
            ctx = sym[pos - j : pos]
            if j == 2:
                p = P[ctx[0], ctx[1]]
            elif j == 1:  # P(x | c) = sum_a pi(a, c) P(a, c, x) / sum_a pi(a, c)
                p = (pi[:, ctx[0], None] * P[:, ctx[0]]).sum(0) / pi[:, ctx[0]].sum()
            else:  # the stationary symbol frequencies
                p = pi.sum(0)
            total -= math.log(p[sym[pos]])
    got = src.eval_floor(text, seq_len, n_windows * seq_len)
    assert got == pytest.approx(total / (n_windows * seq_len), rel=1e-12)


def test_eval_floor_tends_to_window_floor() -> None:
    src = source_for("synthetic:order=2,vocab=8,zipf=2,seed=0,tokens=1000000")
    text = src.generate()
    # 7,812 windows of 128: the realised floor is the expected one within sampling noise
    # (per-token loss sd ~1 nat: standard error ~1 / sqrt(1e6) = 0.001).
    got = src.eval_floor(text, 128, 1_000_000 - 1)
    assert got == pytest.approx(src.window_floor(128), abs=0.005)
    assert got != pytest.approx(src.entropy_rate(), abs=1e-4)  # the window starts cost
    with pytest.raises(ValueError, match="eval tokens"):
        src.eval_floor(text[:1000], 128, 1024)


def test_prepare_corpus_records_eval_floor(tmp_path: Path) -> None:
    from harness.data import split_train_val

    spec = "synthetic:order=2,vocab=8,zipf=2,tokens=400000"
    cfg = DataConfig(corpus=spec, eval_tokens=4096, seq_len=64)  # val blocks: whole segments
    cache = tmp_path / "exp" / "cache"
    prepare_corpus(cfg, cache)
    doc = json.loads((cache.parent / "corpus.json").read_text())
    src = source_for(spec)
    _, val = split_train_val(src.generate(), cfg)
    assert doc["eval_floor_nats_per_token"] == src.eval_floor(val, 64, 4096)
    assert doc["eval_tokens"] == 4096
    # Blocks that are not whole segments: no eval floor (segment junctions unknown).
    cfg2 = DataConfig(corpus=spec, eval_tokens=4096, seq_len=64, val_block_bytes=4096)
    prepare_corpus(cfg2, tmp_path / "exp2" / "cache")
    doc2 = json.loads((tmp_path / "exp2" / "corpus.json").read_text())
    assert "eval_floor_nats_per_token" not in doc2


def test_bpe_has_no_nats_per_token_floor(tmp_path: Path) -> None:
    src = source_for("synthetic:order=1,vocab=8,tokens=100000")
    path = write_reference(tmp_path / "corpus.json", src, "bpe", 64)
    doc = json.loads(path.read_text())
    # A BPE token spans several symbols: only bits per byte compare; the nats/token floor is None.
    assert doc["loss_floor_nats_per_token"] is None
    assert doc["entropy_rate_bits_per_byte"] == pytest.approx(src.entropy_rate() / math.log(2))
    mtime = path.stat().st_mtime_ns
    write_reference(path, src, "bpe", 64)  # unchanged content: not rewritten
    assert path.stat().st_mtime_ns == mtime


# --- a real (tiny) training run stays above H ---------------------------------------------


@pytest.mark.slow  # trains a real (tiny) model: a few seconds quiet, ~1 min on a busy machine
def test_tiny_run_val_loss_between_floor_and_unigram_entropy(tmp_path: Path) -> None:
    from harness.config import load_experiment
    from harness.grid import expand
    from harness.train import train

    spec = "synthetic:order=1,vocab=6,zipf=2,decay=1,tokens=100000"
    toml = tmp_path / "syn.toml"
    toml.write_text(f"""
[data]
corpus = "{spec}"
seq_len = 32
val_block_bytes = 1024
eval_tokens = 4096
[train]
batch_size = 16
lr = 1e-2
evals_per_run = 1
checkpoint_every_steps = 0
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}]
n_tokens = [40960]
[execution]
threads = 1
progress = false
results_dir = "{tmp_path / "results"}"
""")
    exp = load_experiment(toml, [])
    (run,) = expand(exp)
    result = train(run, tmp_path / "results" / "syn" / "runs" / run.run_id, execution=exp.execution)
    src = source_for(spec)
    h = src.conditional_entropies()
    # Above the true floor (no model beats the source), below the unigram entropy (it learned
    # the transitions, not only the symbol frequencies).
    assert result.status == "done" and result.val_loss is not None
    assert src.window_floor(32) < result.val_loss < h[0]
    ref = json.loads((tmp_path / "results" / "syn" / "corpus.json").read_text())
    assert ref["loss_floor_nats_per_token"] == pytest.approx(src.entropy_rate(), rel=1e-15)


# --- fits.json reference, reproduce without corpus.json -------------------------------------


@pytest.mark.slow
def test_fits_reference_and_reproduce(tmp_path: Path) -> None:
    from harness.analysis.drawing import plot_path
    from harness.analysis.fitting import fit_path, summarize
    from harness.analysis.reproduce import reproduce_path

    rng = np.random.default_rng(0)
    E, A, B, alpha, beta = 1.86, 40.0, 300.0, 0.35, 0.4
    N, D = np.meshgrid([1e4, 3e4, 1e5, 3e5], [1e5, 3e5, 1e6, 3e6])
    L = E + A / N**alpha + B / D**beta
    L = L * np.exp(rng.normal(0, 0.002, L.shape))
    out = tmp_path / "res"
    out.mkdir()
    pd.DataFrame({"n_params": N.ravel(), "n_tokens": D.ravel(), "loss": L.ravel()}).to_csv(
        out / "runs.csv", index=False
    )
    cfg = DataConfig(
        corpus="synthetic:order=2,vocab=8,tokens=100000", val_block_bytes=4096, eval_tokens=1024
    )
    prepare_corpus(cfg, out / "cache")  # writes out/corpus.json
    fj = fit_path(out, n_bootstrap=0, fits=["chinchilla"])
    doc = json.loads(fj.read_text())
    H = source_for(cfg.corpus).entropy_rate()
    assert doc["reference"]["entropy_rate_nats_per_token"] == pytest.approx(H, rel=1e-9)
    assert "true entropy rate H = " in summarize(doc) and "chinchilla E - H = " in summarize(doc)
    figures = plot_path(out)
    assert len(figures) >= 4
    # From runs.csv and fits.json alone (no corpus.json): the fits reproduce, and the replotted
    # figures, H line included (the refit's "reference" carries it), are byte-identical.
    (out / "corpus.json").unlink()
    ok, table = reproduce_path(out)
    assert ok, table
    m = re.search(r"(\d+) stored, (\d+) of them byte-identical", table)
    assert m and m.group(1) == m.group(2) != "0", table


# --- the shipped synthetic experiments and their committed references ------------------------

_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "h_rounded"),
    [
        ("synthetic", [1.753, 1.401, 1.168]),
        ("synthetic_capacity", [1.886, 1.618, 1.375, 1.168]),
    ],
)
def test_shipped_experiment_matches_committed_reference(name: str, h_rounded: list[float]) -> None:
    # The experiment file parses; its source's h_0..h_k are the ones its comment quotes; the
    # committed corpus.json and fits.json "reference" are what the source gives today (a change
    # to the generator or the split would make the committed E - H compare with a stale H).
    from harness.config import load_experiment
    from harness.data import split_train_val

    exp = load_experiment(_ROOT / "experiments" / f"{name}.toml")
    src = source_for(exp.data.corpus)
    h = src.conditional_entropies()
    assert [round(x, 3) for x in h] == h_rounded
    assert src.entropy_rate() == pytest.approx(h[-1], rel=1e-12)
    doc = json.loads((_ROOT / "results" / name / "corpus.json").read_text())
    assert doc["spec"] == src.spec.canonical()
    assert doc["entropy_rate_nats_per_token"] == pytest.approx(src.entropy_rate(), rel=1e-12)
    np.testing.assert_allclose(doc["conditional_entropies_nats"], h, rtol=1e-12)
    _, val = split_train_val(src.generate(), exp.data)
    floor = src.eval_floor(val, exp.data.seq_len, exp.data.eval_tokens)
    assert doc["eval_floor_nats_per_token"] == pytest.approx(floor, rel=1e-12)
    ref = json.loads((_ROOT / "results" / name / "fits.json").read_text())["reference"]
    assert ref["spec"] == src.spec.canonical()
    assert ref["entropy_rate_nats_per_token"] == pytest.approx(src.entropy_rate(), rel=1e-9)
    assert ref["eval_floor_nats_per_token"] == pytest.approx(floor, rel=1e-9)


# --- the package: one Source protocol, one module per source, no import cycle ---------------


def test_source_modules_import_only_base() -> None:
    # Every import anywhere in a module (inside functions too): a source module may import
    # harness.synthetic.base only, and base no module of the package, so no cycle can form.
    import ast

    pkg = _ROOT / "harness" / "synthetic"
    for path in sorted(pkg.glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: a relative import"
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module or ""}
        ours = {m for m in found if m == "harness.synthetic" or m.startswith("harness.synthetic.")}
        base = {m for m in ours if m.split(".")[:3] == ["harness", "synthetic", "base"]}
        if path.stem == "base":
            assert ours == set(), ours
        elif path.stem != "__init__":
            assert base and ours == base, (path.name, ours - base)


@pytest.mark.parametrize(
    "corpus",
    [
        "synthetic:order=2,vocab=4,tokens=2000",
        "synthetic:source=facts,vocab=4,key=2,value=2,entities=8,tokens=2000",
        "synthetic:source=teacher,vocab=4,layers=1,width=16,segment=16,tokens=2000",
    ],
)
def test_every_source_is_a_source_and_pickles(corpus: str) -> None:
    import pickle

    from harness.synthetic import Source, SourceSpec, spec_for

    spec = spec_for(corpus)
    assert isinstance(spec, SourceSpec) and isinstance(source_for(corpus), Source)
    assert type(spec).__module__.startswith("harness.synthetic.")
    assert pickle.loads(pickle.dumps(spec)) == spec  # a spawned worker can rebuild the source
    assert source_for(pickle.loads(pickle.dumps(spec)).canonical()).generate() == (
        source_for(corpus).generate()
    )
