"""[eval]'s tasks (harness.evals): the bundled files, loading and refusing tasks, and scores
checked by hand on a model whose log-likelihoods are known in closed form."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import harness_cli, tiny_toml

from harness.config import DataConfig, EvalConfig
from harness.data import read_corpus_bytes
from harness.errors import InputError
from harness.evals.bundled import FACTS_CORPUS, build, bundled_dir
from harness.evals.scoring import InMemoryLM, score
from harness.evals.tasks import load, tokens_per_evaluation
from harness.tasks import held_out_ranges

BYTE = (lambda s: list(s.encode("utf-8")), 10)  # the byte tokenizer and its newline


def write_task(folder: Path, name: str, rows: list[dict], **extra: str) -> Path:
    """folder/NAME.yaml over folder/NAME.jsonl (a relative data file, read from the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = {
        "task": name,
        "dataset_path": "json",
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "context",
        "doc_to_choice": "endings",
        "doc_to_target": "label",
        "target_delimiter": '""',
        **extra,
    }
    body = "\n".join(f"{k}: {v}" for k, v in lines.items())
    body += f"\ndataset_kwargs:\n  data_files:\n    test: {name}.jsonl\n"
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


class Bigram(torch.nn.Module):
    """logits[t] = table[token t]: log p(next | everything before) = log_softmax(table[prev]),
    whatever the attention mask and positions; so every score has a closed form."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, input_ids: torch.Tensor, **_: object) -> object:
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_bundled_files_are_what_the_builder_writes(tmp_path: Path) -> None:
    for path in build(tmp_path):
        assert path.read_bytes() == (bundled_dir() / path.name).read_bytes(), path.name


def test_cloze_passages_come_from_held_out_text_only() -> None:
    text = read_corpus_bytes("shakespeare")
    ranges = held_out_ranges(len(text), DataConfig(corpus="shakespeare"))
    held = b"\0".join(text[a:b] for a, b in ranges)
    rows = [json.loads(x) for x in (bundled_dir() / "shakespeare_cloze.jsonl").open()]
    assert len(rows) == 1000
    for r in rows:
        real = (r["context"] + r["endings"][r["label"]]).encode()
        assert len(r["endings"]) == 4 and len({len(e) for e in r["endings"]}) == 1
        assert real in held  # the context and its real ending: one held-out passage
    # The answer's position is drawn uniformly: no choice slot is favoured.
    counts = np.bincount([r["label"] for r in rows], minlength=4)
    assert counts.min() > 200


def test_facts_questions_are_the_sources_own_facts() -> None:
    from harness.synthetic import source_for

    source = source_for(FACTS_CORPUS)
    text = source.generate()
    ranges = held_out_ranges(len(text), DataConfig(corpus=FACTS_CORPUS))
    held = b"".join(text[a:b] for a, b in ranges)
    rows = [json.loads(x) for x in (bundled_dir() / "facts_kv.jsonl").open()]
    keys = [r["context"] for r in rows]
    assert len(keys) == len(set(keys)) > 500  # one question per entity
    answers = [r["endings"][r["label"]] for r in rows]
    for r, value in zip(rows, answers, strict=True):
        assert (r["context"] + value).encode() in held
        assert sum(e == value for e in r["endings"]) == 1
    # Each value is the answer once (two entities may share a random value: 2 pairs of 624), so
    # a model that prefers some values gains nothing.
    assert max(answers.count(v) for v in set(answers)) <= 2
    assert len(set(answers)) >= len(answers) - 3


def test_bundled_tasks_load_as_multiple_choice() -> None:
    tasks = load(EvalConfig(tasks=("shakespeare_cloze", "facts_kv")))
    assert [t.name for t in tasks] == ["shakespeare_cloze", "facts_kv"]
    assert all(t.metrics == ("acc", "bpb") for t in tasks)
    n = tokens_per_evaluation(tasks, EvalConfig(tasks=("x",), limit=10), BYTE[0])
    assert n == 10 * (64 + 4 * 16) + 10 * (3 + 4 * 4)  # contexts and answers, in bytes


def test_an_example_without_a_right_answer_is_wrong_and_has_no_bits(tmp_path: Path) -> None:
    """lm-eval counts an example whose label names no choice as wrong; its bits per byte are
    left out (there is no right answer to score), the others' kept."""
    rows = [
        {"context": "xa", "endings": ["bq", "cq"], "label": 0},
        {"context": "ya", "endings": ["bq", "cq"], "label": 7},  # no such choice
    ]
    path = write_task(tmp_path, "oob", rows)
    cfg = EvalConfig(tasks=(str(path),), limit=0)
    lm = InMemoryLM(Bigram(torch.zeros(256, 256)), *BYTE, 16, torch.device("cpu"), 4)
    got = {s.metric: s for s in score(lm, load(cfg), cfg)}
    assert got["bpb"].n_examples == 1 and got["acc"].n_examples == 2
    assert got["bpb"].value == pytest.approx(8.0)  # uniform over 256 bytes: 8 bits each


def test_hand_checked_accuracy_and_bits_per_byte(tmp_path: Path) -> None:
    # A bigram table: after "a", "b" has logit 3 (all else 0); after anything else, uniform.
    table = torch.zeros(256, 256)
    table[ord("a"), ord("b")] = 3.0
    rows = [
        {"context": "xa", "endings": ["bq", "cq"], "label": 0},  # the likely answer is right
        {"context": "ya", "endings": ["bq", "cq", "dq"], "label": 2},  # ... and here wrong
        {"context": "za", "endings": ["cqq", "bq"], "label": 1},  # right, answers of 2 lengths
    ]
    path = write_task(
        tmp_path, "bigram", rows, metric_list="\n  - metric: acc\n  - metric: acc_norm"
    )
    cfg = EvalConfig(tasks=(str(path),), limit=0)
    (task,) = load(cfg)
    assert task.metrics == ("acc", "acc_norm", "bpb")
    lm = InMemoryLM(Bigram(table), *BYTE, max_len=16, device=torch.device("cpu"), batch_size=2)
    got = {(s.metric): s for s in score(lm, [task], cfg)}
    # By hand: log p(b | a) = 3 - ln(255 + e^3), log p(c | a) = -ln(255 + e^3); uniform after
    # any other byte: -ln 256.
    z = math.log(255 + math.e**3)
    lb, lc, u = 3 - z, -z, -math.log(256)
    # Example 1: "bq" (lb + u) beats "cq" (lc + u): right. Example 2: "bq" beats "dq": wrong.
    # Example 3: "bq" (lb + u) beats "cqq" (lc + 2u): right. acc = 2/3.
    assert got["acc"].value == pytest.approx(2 / 3)
    # acc_norm divides by the answer's length in bytes: 3 still picks "bq" ((lb+u)/2 > (lc+2u)/3).
    assert got["acc_norm"].value == pytest.approx(2 / 3)
    assert got["acc"].chance == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    # bpb: the right answer's -log-likelihood in bits per byte of its text, mean over examples.
    bits = [-(lb + u) / 2, -(lc + u) / 2, -(lb + u) / 2]
    # float32 log-softmax: 1e-6 relative
    assert got["bpb"].value == pytest.approx(np.mean(bits) / math.log(2), rel=1e-6)
    assert got["bpb"].chance is None and got["bpb"].n_examples == 3


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "max_len"), [("llama", 64), ("gpt2", 64), ("llama", 40)])
def test_packed_answers_score_as_each_answer_alone(arch: str, max_len: int) -> None:
    """The block-causal packing gives each answer the log-likelihood a forward pass of its
    context and itself alone gives, on transformers' own models; with max_len 40 each request
    keeps its last 41 tokens, as lm-eval's own model cuts them (answers of 16 and 12 tokens:
    contexts cut to 25 and 29 tokens)."""
    from harness.model import ModelShape, build_model

    torch.manual_seed(0)
    shape = ModelShape(
        arch=arch, n_layer=2, n_embd=32, n_head=2, vocab_size=256, seq_len=64, ffn_dim=64
    )
    model = build_model(shape).eval()
    lm = InMemoryLM(model, *BYTE, max_len=max_len, device=torch.device("cpu"), batch_size=4)
    lines = (bundled_dir() / "shakespeare_cloze.jsonl").open()
    requests = [  # (context, answer) pairs as lm-eval makes them; one answer shortened
        ((c, e), BYTE[0](c)[-48:], BYTE[0](e)[: 12 if k == 3 else 16])
        for r in [json.loads(x) for x in lines][:6]
        for k, (c, e) in enumerate((r["context"], end) for end in r["endings"])
    ]
    requests.append((("", ""), BYTE[0]("ab"), []))  # an empty answer: log 1
    packed = lm._loglikelihood_tokens(requests)
    assert packed[-1] == (0.0, True)
    with torch.inference_mode():
        for (_, ctx, ans), (ll, _) in zip(requests[:-1], packed[:-1], strict=True):
            whole = (ctx + ans)[-(max_len + 1) :]
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole[:-1]])).logits[0], -1)
            first = len(whole) - 1 - len(ans)
            alone = sum(float(logp[first + i, t]) for i, t in enumerate(ans))
            assert ll == pytest.approx(alone, abs=2e-5)


def test_scoring_leaves_the_global_generators_alone() -> None:
    cfg = EvalConfig(tasks=("facts_kv",), limit=4, num_fewshot=1)
    tasks = load(cfg)
    lm = InMemoryLM(Bigram(torch.zeros(256, 256)), *BYTE, 32, torch.device("cpu"), 8)
    torch.manual_seed(5)
    np.random.seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = score(lm, tasks, cfg)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert score(lm, tasks, cfg) == first  # the same few-shot draw each time


@pytest.mark.slow
def test_tasks_that_cannot_be_scored_are_refused(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=r"eval.tasks = 'no_such_task_xyz' does not load"):
        load(EvalConfig(tasks=("no_such_task_xyz",)))
    with pytest.raises(InputError, match=r"no such file"):
        load(EvalConfig(tasks=(str(tmp_path / "missing.yaml"),)))
    gen = write_task(tmp_path / "g", "gen", [{"context": "a", "endings": ["b"], "label": 0}])
    gen.write_text(gen.read_text().replace("multiple_choice", "loglikelihood"))
    with pytest.raises(InputError, match=r"output_type 'loglikelihood'; accepted: multiple_choice"):
        load(EvalConfig(tasks=(str(gen),)))
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "copy.yaml").write_text((bundled_dir() / "facts_kv.yaml").read_text())
    (twice / "facts_kv.jsonl").write_bytes((bundled_dir() / "facts_kv.jsonl").read_bytes())
    with pytest.raises(InputError, match=r"is task 'facts_kv', which another entry names too"):
        load(EvalConfig(tasks=("facts_kv", str(twice / "copy.yaml"))))
    nochoice = write_task(
        tmp_path / "n", "nochoice", [{"context": "a", "endings": ["b"], "label": 0}]
    )
    nochoice.write_text(nochoice.read_text().replace("doc_to_choice: endings\n", ""))
    with pytest.raises(InputError, match=r"'nochoice'|nochoice.yaml"):
        load(EvalConfig(tasks=(str(nochoice),)))
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # lm-eval not installed
    with pytest.raises(InputError, match=r"needs lm-evaluation-harness.*scaling-harness\[eval\]"):
        load(EvalConfig(tasks=("shakespeare_cloze",)))


@pytest.mark.slow
def test_plan_refuses_a_task_in_one_line_and_counts_task_time(tmp_path: Path) -> None:
    bad = tiny_toml(tmp_path, name="bad", extra='[eval]\ntasks = ["no_such_task_xyz"]')
    out = harness_cli("plan", str(bad))
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: eval.tasks = 'no_such_task_xyz' does not load")
    mlm = tiny_toml(
        tmp_path, name="mlm", extra='[model]\narch = "bert"\n[eval]\ntasks = ["facts_kv"]'
    )
    out = harness_cli("plan", str(mlm))
    assert out.returncode == 2 and "needs a causal LM" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    good = tiny_toml(tmp_path, name="good", extra='[eval]\ntasks = ["facts_kv"]\nlimit = 20')
    out = harness_cli("plan", str(good))
    assert out.returncode == 0, out.stderr
    assert "eval: 1 task(s) (facts_kv), 20 examples each, 0-shot, at every held-out" in out.stdout
    assert f"{20 * (3 + 4 * 4):,} tokens per task evaluation" in out.stdout


def test_eval_is_part_of_a_runs_identity_only_when_set(tmp_path: Path) -> None:
    from harness.config import load_experiment
    from harness.grid import expand, spec_from_dict

    plain = expand(load_experiment(tiny_toml(tmp_path, name="a", n_tokens="[1024]")))[0]
    scored = expand(
        load_experiment(
            tiny_toml(tmp_path, name="b", n_tokens="[1024]", extra='[eval]\ntasks = ["facts_kv"]')
        )
    )[0]
    assert "eval" not in plain.identity() and scored.identity()["eval"]["tasks"] == ["facts_kv"]
    assert plain.run_id != scored.run_id
    assert spec_from_dict(scored.to_dict()) == scored
