"""The facts source (harness.synthetic.facts): exact entropies, sample, alignment, floors, specs."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness.config import DataConfig
from harness.data import prepare_corpus, split_train_val
from harness.errors import InputError
from harness.synthetic import source_for
from harness.synthetic.base import to_symbols
from harness.synthetic.facts import FactsSource, FactsSpec


def _facts(text: bytes, spec: FactsSpec) -> np.ndarray:
    return to_symbols(text, spec.vocab + 1).reshape(-1, spec.segment)


def test_hand_computed_entropy() -> None:
    # 4 entities with keys of 2 binary symbols and p ∝ 1, 1/2, 1/3, 1/4 (zipf 1):
    # H(entity) = -sum p ln p with p = (12, 6, 4, 3) / 25; a fact is 2 + 3 + 1 = 6 symbols.
    src = source_for("synthetic:source=facts,vocab=2,key=2,value=3,entities=4,zipf=1,tokens=6000")
    p = np.array([12, 6, 4, 3]) / 25
    h = -(p * np.log(p)).sum()
    assert src.entity_entropy() == pytest.approx(h, abs=1e-15)
    assert src.entropy_rate() == pytest.approx(h / 6, abs=1e-15)
    ent = src.conditional_entropies()
    assert len(ent) == 6 and ent[2:] == [0.0] * 4
    # Chain rule: the two key symbols' conditional entropies add up to H(entity); with all
    # four codes used, the first symbol's entropy is that of the mass of the codes 0x vs 1x.
    assert sum(ent) == pytest.approx(h, abs=1e-14)
    first = np.bincount(src.keys[:, 0], weights=src.p, minlength=2)
    assert ent[0] == pytest.approx(-(first * np.log(first)).sum(), abs=1e-15)


def test_uniform_entities_have_log_entropy() -> None:
    src = source_for("synthetic:source=facts,vocab=10,key=2,value=5,entities=100,zipf=0")
    assert src.entropy_rate() == pytest.approx(math.log(100) / 8, abs=1e-14)
    assert src.conditional_entropies()[:2] == pytest.approx([math.log(10)] * 2, abs=1e-13)


def test_sample_follows_the_table_and_the_zipf_law() -> None:
    spec = FactsSpec(vocab=8, key=2, value=3, entities=40, zipf=1.2, tokens=6 * 60_000)
    src = FactsSource(spec)
    facts = _facts(src.generate(), spec)
    assert facts.shape == (60_000, 6) and np.all(facts[:, -1] == 8)
    # Every key names one entity and is always followed by that entity's value.
    code = facts[:, 0].astype(int) * 8 + facts[:, 1]
    table: dict[int, bytes] = {}
    for c, val in zip(code, map(bytes, facts[:, 2:5]), strict=True):
        assert table.setdefault(int(c), val) == val
    rank = {int(k[0]) * 8 + int(k[1]): e for e, k in enumerate(src.keys)}
    counts = Counter(rank[c] for c in code.tolist())
    freq = np.array([counts[e] for e in range(40)]) / 60_000
    se = np.sqrt(src.p * (1 - src.p) / 60_000)
    assert np.all(np.abs(freq - src.p) < 5 * se)
    assert len({tuple(k) for k in src.keys}) == 40  # distinct keys


def test_true_model_log_loss_averages_to_entropy_rate() -> None:
    spec = FactsSpec(vocab=16, key=3, value=4, entities=4096, zipf=1.5, tokens=8 * 200_000)
    src = FactsSource(spec)
    loss = src.symbol_log_loss(_facts(src.generate(), spec)).reshape(-1, 8)
    per_fact = loss.sum(axis=1)  # -ln p(entity) of each fact
    se = per_fact.std(ddof=1) / math.sqrt(per_fact.size)
    assert abs(per_fact.mean() - src.entity_entropy()) < 4 * se
    assert np.all(loss[:, 3:] == 0)  # values and separators are free once the key is read
    # Zipf(1.5) over 4096 another way: H = ln Z + s E[ln r], Z = sum_r r^-s.
    r = np.arange(1, 4097.0)
    z = (r**-1.5).sum()
    h = math.log(z) + 1.5 * float((r**-1.5 * np.log(r)).sum() / z)
    assert src.entropy_rate() == pytest.approx(h / 8, abs=1e-13)


def test_generation_is_deterministic_and_seeded() -> None:
    a = FactsSource(FactsSpec(tokens=8000)).generate()
    assert a == FactsSource(FactsSpec(tokens=8000)).generate()
    assert a != FactsSource(FactsSpec(tokens=8000, seed=1)).generate()
    # A longer text starts with the shorter one (the entities are drawn in order), cut to
    # length mid-fact.
    longer = FactsSource(FactsSpec(tokens=8003)).generate()
    assert len(longer) == 8003 and longer.startswith(a)


def test_facts_align_with_split_and_windows_and_eval_floor(tmp_path: Path) -> None:
    spec = "synthetic:source=facts,vocab=6,key=2,value=5,entities=30,zipf=1,tokens=40000"
    cfg = DataConfig(
        corpus=spec, seq_len=64, val_block_bytes=1024, val_fraction=0.1, eval_tokens=640
    )
    src = source_for(spec)
    text = src.generate()
    train, val = split_train_val(text, cfg)
    for part in (train, val):  # whole facts: every 8th symbol a separator
        sym = to_symbols(part, 7)
        assert np.all(sym[7::8] == 6) and np.all(sym[np.arange(sym.size) % 8 != 7] < 6)
    corpus = prepare_corpus(cfg, tmp_path / "cache")
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert doc["loss_floor_nats_per_token"] == pytest.approx(src.entropy_rate(), abs=1e-15)
    assert doc["spec"] == src.spec.canonical() and doc["segment_tokens"] == 8
    # The eval floor by a per-target loop: the key symbols' conditional laws from counting
    # the entity probabilities by key prefix, values and separators at no loss.
    vs = to_symbols(np.asarray(corpus.val_tokens()).astype(np.uint8).tobytes(), 7)
    mass: Counter[tuple[int, ...]] = Counter()
    for e, key in enumerate(src.keys):
        for j in range(3):
            mass[tuple(key[:j])] += src.p[e]
    total = 0.0
    for pos in range(1, 641):  # targets 1..seq_len of each of the 10 windows
        start = pos - pos % 8
        j = pos - start
        if j < 2:
            prefix = tuple(int(x) for x in vs[start : pos + 1])
            total -= math.log(mass[prefix] / mass[prefix[:-1]])
    assert doc["eval_floor_nats_per_token"] == pytest.approx(total / 640, rel=1e-12)
    assert doc["eval_tokens"] == 640


@pytest.mark.parametrize(("seq_len", "val_block_bytes"), [(60, 1024), (64, 1020)])
def test_no_floor_when_facts_do_not_start_every_window(
    tmp_path: Path, seq_len: int, val_block_bytes: int
) -> None:
    # Windows of 60, or validation blocks of 1020 bytes, cut the 8-symbol facts: H is recorded
    # but is no reachable floor, and there is no eval floor.
    spec = "synthetic:source=facts,vocab=6,key=2,value=5,entities=30,tokens=40000"
    cfg = DataConfig(
        corpus=spec, seq_len=seq_len, val_block_bytes=val_block_bytes, eval_tokens=10 * seq_len
    )
    prepare_corpus(cfg, tmp_path / "cache")
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert "eval_floor_nats_per_token" not in doc and doc["loss_floor_nats_per_token"] is None
    assert doc["entropy_rate_nats_per_token"] == source_for(spec).entropy_rate()


def test_parse_and_canonical() -> None:
    src = source_for("synthetic: source = facts , value=2, tokens=1e4, zipf=2")
    assert src.spec == FactsSpec(value=2, tokens=10_000, zipf=2.0)
    assert source_for(src.spec.canonical()) is src
    assert src.spec.segment == 6


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            "synthetic:source=fact",
            r"source = 'fact'; accepted: markov \(the default\), teacher or facts",
        ),
        ("synthetic:source=facts,order=2", r"unknown key 'order'"),
        (
            "synthetic:source=facts,vocab=2,key=3,entities=9",
            r"facts entities = 9; accepted: an integer 2..vocab\^key = 8",
        ),
        ("synthetic:source=facts,vocab=95", r"facts vocab = 95; accepted: an integer 2..94"),
        ("synthetic:source=facts,value=0", r"facts value = 0; accepted"),
        ("synthetic:source=facts,zipf=x", r"facts zipf = 'x' is not a number"),
        ("synthetic:source=facts,key=9", r"facts key = 9; accepted: an integer 1..8"),
        ("synthetic:source=facts,vocab=94,key=4", r"facts key = 4; accepted: at most vocab\^key"),
    ],
)
def test_bad_spec(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        source_for(spec)
    assert "\n" not in str(err.value)


def test_shipped_facts_experiment_reference_is_what_its_source_gives(tmp_path: Path) -> None:
    # Cheap to regenerate (2M symbols in about a second), so the committed corpus.json of
    # experiments/synthetic_facts.toml is rebuilt here from its spec and compared byte for
    # byte, and fits.json's "reference" carries the same H.
    from harness.config import load_experiment

    root = Path(__file__).resolve().parents[2]
    exp = load_experiment(root / "experiments" / "synthetic_facts.toml")
    src = source_for(exp.data.corpus)
    assert isinstance(src, FactsSource) and exp.data.seq_len % src.spec.segment == 0
    prepare_corpus(exp.data, tmp_path / "cache")
    committed = root / "results" / "synthetic_facts"
    assert (tmp_path / "corpus.json").read_text() == (committed / "corpus.json").read_text()
    doc = json.loads((tmp_path / "corpus.json").read_text())
    assert doc["entropy_rate_nats_per_token"] == pytest.approx(3.0460453461330816 / 8, abs=1e-15)
    ref = json.loads((committed / "fits.json").read_text())["reference"]
    for key in ("entropy_rate_nats_per_token", "eval_floor_nats_per_token"):  # 10 digits there
        assert ref[key] == pytest.approx(doc[key], abs=1e-10)


def test_no_eval_floor_where_the_scored_targets_reach_a_cut_fact() -> None:
    # 1001 symbols: the last fact is cut after 1 of its 8 symbols; a validation text ending
    # there cannot be scored as whole facts, so no floor (not an error).
    src = source_for("synthetic:source=facts,vocab=4,key=2,value=5,entities=10,tokens=1001")
    text = src.generate()
    assert src.eval_floor(text[-489:], 8, 488) is None
    assert src.eval_floor(text[504:1000], 8, 488) is not None  # 62 whole facts
    with pytest.raises(ValueError, match="names no entity"):
        src.symbol_log_loss(to_symbols(b"eabcdeab", 5))  # the separator in a key
