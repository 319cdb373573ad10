"""The masked-LM objective (arch "bert"): counts, masking, the masked-token loss, resume, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny import tiny_toml

from harness.cli import main
from harness.config import DataConfig, load_experiment
from harness.data import SequenceOrder, gather_windows, prepare_corpus, vocab_size_for
from harness.errors import InputError
from harness.grid import expand
from harness.model import (
    ModelShape,
    build_model,
    count_params,
    default_ffn_dim,
    flops_per_token,
    shape_for_params,
)
from harness.objectives import (
    IGNORE_INDEX,
    CausalLM,
    MaskedLM,
    eval_objective,
    n_predictions,
    objective_name,
    training_objective,
)
from harness.results import RUNS_CSV_COLUMNS, ExperimentLayout
from harness.train import evaluate, train

torch.set_num_threads(1)

BERT = '[model]\narch = "bert"\n'


def _bert(**kw: object) -> ModelShape:
    args: dict = dict(
        arch="bert", n_layer=2, n_embd=32, n_head=2, vocab_size=257, seq_len=16, ffn_dim=128
    )
    args.update(kw)
    return ModelShape(**args)


# --- parameter and FLOP counts ------------------------------------------------------------------


def test_param_counts_by_hand_match_the_built_model() -> None:
    # d=32, f=128, L=2, V=257, n_ctx=16. Per block: q,k,v,o 4*32*32 + 4*32 = 4224; attention
    # LayerNorm 64; intermediate 32*128 + 128 = 4224; output 128*32 + 32 = 4128; output
    # LayerNorm 64 -> 12704. N = 2*12704 + embedding LayerNorm 64 + head transform
    # (32*32 + 32 + 64 = 1120) = 26592. Embedding: tokens 257*32 = 8224, positions 16*32 = 512,
    # token type 32, output bias 257 -> 9025.
    counts = count_params(_bert())
    assert (counts.non_embedding, counts.embedding, counts.total) == (26592, 9025, 35617)
    assert sum(p.numel() for p in build_model(_bert()).parameters()) == 35617
    # Untied: + the 257 x 32 output matrix; its bias stays the one shared bias.
    untied = _bert(tie_embeddings=False)
    assert count_params(untied).total == 35617 + 8224
    assert count_params(untied).non_embedding == 26592
    model = build_model(untied)
    assert sum(p.numel() for p in model.parameters()) == 43841
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias


def test_bert_base_counts() -> None:
    # BERT-base (L=12, d=768, f=3072, V=30522, n_ctx=512): a block is 7,087,872 parameters, as
    # in the published 110M model. N = 12 * 7,087,872 + 1,536 (embedding LayerNorm) + 592,128
    # (head transform 768^2 + 768 + 1536) = 85,648,128.
    shape = ModelShape(
        arch="bert", n_layer=12, n_embd=768, n_head=12, vocab_size=30522, seq_len=512,
        ffn_dim=default_ffn_dim("bert", 768),
    )  # fmt: skip
    counts = count_params(shape)
    assert shape.ffn_dim == 3072
    assert counts.non_embedding == 12 * 7_087_872 + 1_536 + 592_128 == 85_648_128
    assert counts.embedding == 30522 * 768 + 512 * 768 + 768 + 30522
    with torch.device("meta"):
        model = build_model(shape)
    assert sum(p.numel() for p in model.parameters()) == counts.total


def _modernbert(**kw: object) -> ModelShape:
    args: dict = dict(
        arch="modernbert", n_layer=2, n_embd=32, n_head=2, vocab_size=257, seq_len=16, ffn_dim=96
    )
    args.update(kw)
    return ModelShape(**args)


def test_modernbert_counts_by_hand_match_the_built_model() -> None:
    # d=32, f=96, L=2, V=257. Per block: Wqkv + Wo 4*32*32 = 4096; Wi 32*192 = 6144; Wo
    # 96*32 = 3072; two bias-free LayerNorms 64 -> 13376; block 0 has no attention norm (-32).
    # N = 2*13376 - 32 + embedding norm 32 + final norm 32 + head (32*32 + 32 = 1056) = 27840.
    # Embedding: tokens 257*32 = 8224 + output bias 257 = 8481 (RoPE: no position table).
    counts = count_params(_modernbert())
    assert (counts.non_embedding, counts.embedding, counts.total) == (27840, 8481, 36321)
    model = build_model(_modernbert())
    assert sum(p.numel() for p in model.parameters()) == 36321
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    untied = _modernbert(tie_embeddings=False)
    assert count_params(untied).total == 36321 + 8224
    assert sum(p.numel() for p in build_model(untied).parameters()) == 36321 + 8224
    # GeGLU: three matrices, so llama's 8/3 d width keeps ~12 d^2 per block.
    assert default_ffn_dim("modernbert", 768) == default_ffn_dim("llama", 768) == 2048
    s = shape_for_params(1e5, arch="modernbert", vocab_size=257, seq_len=128, aspect_ratio=32.0)
    assert abs(math.log(count_params(s).non_embedding / 1e5)) < math.log(1.4)
    with pytest.raises(InputError, match="modernbert's rotary embeddings need an even"):
        _modernbert(n_embd=30, n_head=2)
    f = flops_per_token(_modernbert())
    per_layer = (6 * 32 * 32 + 2 * 16 * 32 + 3 * 2 * 16 + 2 * 16 * 32 + 2 * 32 * 32) + 6 * 32 * 96
    assert f.total == 3 * (2 * 257 * 32 + 2 * per_layer + 2 * 32 * 32 + 2 * 32 * 257)


def test_flops_per_token_by_hand() -> None:
    s = _bert()  # d=32, f=128, L=2, V=257, n=16, h=2
    n = 26592
    per_layer = (6 * 32 * 32 + 2 * 16 * 32 + 3 * 2 * 16 + 2 * 16 * 32 + 2 * 32 * 32) + 4 * 32 * 128
    forward = 2 * 257 * 32 + 2 * per_layer + 2 * 32 * 32 + 2 * 32 * 257  # + head transform
    f = flops_per_token(s)
    assert f.six_n == 6 * n
    assert f.kaplan == 3 * (2 * n + 2 * 2 * 16 * 32)
    assert f.total == 3 * forward == 3 * 88_384


def test_shapes_and_vocab_for_bert() -> None:
    # No rotary embeddings: an odd head width is fine, unlike llama.
    assert ModelShape(**{**_bert().__dict__, "n_embd": 30, "n_head": 2}).head_dim == 15
    s = shape_for_params(1e5, arch="bert", vocab_size=257, seq_len=128, aspect_ratio=32.0)
    assert s.arch == "bert" and s.ffn_dim == 4 * s.n_embd
    assert abs(math.log(count_params(s).non_embedding / 1e5)) < math.log(1.4)
    assert vocab_size_for(DataConfig(), "bert") == 257
    assert vocab_size_for(DataConfig(tokenizer="bpe", bpe_vocab_size=512), "bert") == 513
    assert vocab_size_for(DataConfig()) == 256
    assert vocab_size_for(DataConfig(), "modernbert") == 257
    assert [objective_name(a) for a in ("llama", "gpt2", "bert", "modernbert")] == [
        "causal",
        "causal",
        "mlm",
        "mlm",
    ]


# --- masking ------------------------------------------------------------------------------------


def _tokens(count: int, seq_len: int = 128) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, seq_len))


def test_mask_fraction_and_the_80_10_10_rule() -> None:
    m = MaskedLM(vocab_size=257, mask_fraction=0.15, seed=7)
    tokens = _tokens(2000)
    inputs, targets = m.mask(tokens, first=0)
    chosen = targets != IGNORE_INDEX
    k = n_predictions(128, 0.15)
    assert k == 19  # round(0.15 * 128 = 19.2)
    assert (chosen.sum(axis=1) == k).all()  # exactly k per window
    assert (targets[chosen] == tokens[chosen]).all()  # targets are the original tokens
    assert (inputs[~chosen] == tokens[~chosen]).all()  # unchosen positions untouched
    n = chosen.sum()  # 38,000 draws; 4 standard errors of a share p are 4 sqrt(p(1-p)/n)
    masked = inputs[chosen] == 256
    kept = inputs[chosen] == tokens[chosen]
    random = ~masked & ~kept
    # A random replacement equals the original 1 time in 256, so it shows as kept.
    for share, p in [(masked, 0.8), (random, 0.1 * 255 / 256), (kept, 0.1 + 0.1 / 256)]:
        assert abs(share.mean() - p) < 4 * math.sqrt(p * (1 - p) / n), (share.mean(), p)
    assert inputs.max() <= 256 and inputs[chosen][random].max() < 256  # never [MASK] at random
    # Chosen positions spread evenly over the window.
    per_position = chosen.mean(axis=0)
    assert abs(per_position.mean() - k / 128) < 1e-12 and per_position.min() > 0.1


def test_mask_is_a_function_of_seed_and_stream_position() -> None:
    m = MaskedLM(vocab_size=257, mask_fraction=0.15, seed=3)
    tokens = _tokens(8)
    whole = m.mask(tokens, first=40)
    halves = [m.mask(tokens[:5], first=40), m.mask(tokens[5:], first=45)]
    for i in range(2):  # independent of how the stream is cut into batches
        assert (np.concatenate([h[i] for h in halves]) == whole[i]).all()
    assert all((a == b).all() for a, b in zip(whole, m.mask(tokens, first=40), strict=True))
    other_pos = m.mask(tokens, first=48)[1] != IGNORE_INDEX
    other_seed = MaskedLM(vocab_size=257, mask_fraction=0.15, seed=4).mask(tokens, 40)[1]
    assert ((whole[1] != IGNORE_INDEX) != other_pos).any()  # a new epoch masks afresh
    assert ((whole[1] != IGNORE_INDEX) != (other_seed != IGNORE_INDEX)).any()


def test_eval_mask_is_fixed_across_runs(tmp_path: Path) -> None:
    exp = load_experiment(
        tiny_toml(tmp_path, n_tokens="[4096]", extra=BERT), ["--grid.seeds=[0, 1]"]
    )
    a, b = expand(exp)
    assert a.seed != b.seed and a.run_id != b.run_id
    windows = np.asarray(np.random.default_rng(2).integers(0, 256, (6, 33)))
    device = torch.device("cpu")
    ea, eb = (
        eval_objective(a).batch(windows, 0, device),
        eval_objective(b).batch(windows, 0, device),
    )
    assert torch.equal(ea[0], eb[0]) and torch.equal(ea[1], eb[1])
    ta, tb = (training_objective(s).batch(windows, 0, device)[1] for s in (a, b))
    assert not torch.equal(ta, tb)  # training masks follow the run's seed
    assert not torch.equal(ta, ea[1])  # and differ from the evaluation mask
    # The causal objective is unchanged: next-token targets everywhere.
    x, y = CausalLM().batch(windows, 0, device)
    assert torch.equal(x, torch.from_numpy(windows[:, :-1])) and torch.equal(
        y, torch.from_numpy(windows[:, 1:])
    )


# --- the loss -----------------------------------------------------------------------------------


def test_evaluate_scores_only_masked_positions() -> None:
    torch.manual_seed(0)
    model = build_model(_bert(n_layer=1)).eval()
    windows = np.random.default_rng(5).integers(0, 256, (5, 17))
    m = MaskedLM(vocab_size=257, mask_fraction=0.25, seed=0)
    x, y = m.batch(windows, 0, torch.device("cpu"))
    token_bytes = torch.from_numpy(np.random.default_rng(6).integers(1, 4, 256))
    loss, bpb = evaluate(model, x, y, token_bytes, batch_size=2, autocast=None)

    # By hand: -log p(original token) at the chosen positions only.
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits.double(), dim=-1)
    nats, count, n_bytes = 0.0, 0, 0
    for i in range(5):
        for t in range(16):
            if y[i, t] != IGNORE_INDEX:
                nats -= float(logp[i, t, y[i, t]])
                count += 1
                n_bytes += int(token_bytes[y[i, t]])
    assert count == 5 * 4  # round(0.25 * 16) per window
    assert loss == pytest.approx(nats / count, rel=1e-5)
    assert bpb == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)
    all_positions = F.cross_entropy(
        logp.flatten(0, 1).float(), torch.from_numpy(windows[:, :-1]).flatten()
    )
    assert abs(float(all_positions) - loss) > 1e-3  # scoring every position would differ


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_first_training_step_loss_is_the_masked_loss(tmp_path: Path, arch: str) -> None:
    extra = f'[model]\narch = "{arch}"\n'
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[4096]", extra=extra))
    (spec,) = expand(exp)
    root = tmp_path / "results" / "tiny"
    result = train(spec, root / "runs" / spec.run_id, execution=exp.execution)
    assert result is not None and result.status == "done"
    with (root / "runs" / spec.run_id / "metrics.csv").open() as f:
        first = next(csv.DictReader(f))
    assert first["step"] == "1"

    # Rebuild step 1 by hand: same model init, the run's first 8 windows, its mask.
    corpus = prepare_corpus(spec.data, ExperimentLayout(root).cache_dir)
    order = SequenceOrder(corpus.n_train_tokens, 32, spec.seed)
    windows = gather_windows(corpus.train_tokens(), order.window_starts(0, 8), 32)
    inputs, targets = MaskedLM(vocab_size=257, mask_fraction=0.15, seed=spec.seed).mask(
        windows[:, :-1], 0
    )
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(inputs)).logits
    chosen = torch.from_numpy(targets != IGNORE_INDEX)
    manual = F.cross_entropy(logits[chosen], torch.from_numpy(targets)[chosen])
    assert float(first["train_loss"]) == pytest.approx(float(manual), rel=1e-6)
    assert int(chosen.sum()) == 8 * 5  # round(0.15 * 32 = 4.8) per window


# --- resume and the command line ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_masked_lm_resume_is_bit_exact(tmp_path: Path, arch: str) -> None:
    exp = load_experiment(
        tiny_toml(tmp_path, n_tokens="[4096]", extra=f'[model]\narch = "{arch}"\n')
    )
    (spec,) = expand(exp)
    assert spec.model.arch == arch and spec.n_steps == 16
    ref = train(spec, tmp_path / "a" / "runs" / spec.run_id, execution=exp.execution)
    assert ref is not None and ref.status == "done"
    run_dir = tmp_path / "b" / "runs" / spec.run_id
    for _ in range(3):  # three preemptions, at steps 5, 10 and 15
        assert train(spec, run_dir, execution=exp.execution, stop_after_steps=5) is None
    resumed = train(spec, run_dir, execution=exp.execution)
    assert resumed is not None
    assert resumed.val_loss == ref.val_loss and resumed.val_bpb == ref.val_bpb  # bit for bit
    assert resumed.train_loss == ref.train_loss
    # The masked loss on 257 classes (256 bytes + [MASK]), well below a uniform guess.
    assert ref.val_loss is not None and 0 < ref.val_loss < math.log(256)


@pytest.mark.slow  # trains, fits and plots: ~10 s quiet, ~30 s on a busy 2-core machine
def test_tiny_bert_grid_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    toml = tiny_toml(tmp_path, name="mlm", extra=BERT)
    assert main(["run", str(toml)]) == 0
    capsys.readouterr()
    root = tmp_path / "results" / "mlm"
    with (root / "runs.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == RUNS_CSV_COLUMNS and "objective" in RUNS_CSV_COLUMNS
        rows = list(reader)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert [int(r["n_tokens"]) for r in rows] == [1024, 2048]
    for r in rows:
        result = json.loads((root / "runs" / r["run_id"] / "result.json").read_text())
        assert float(r["loss"]) == result["val_loss"]  # the masked-token validation loss
        assert (r["arch"], r["objective"], r["vocab_size"]) == ("bert", "mlm", "257")
        assert int(r["n_params"]) == count_params(_bert(n_layer=1, seq_len=32)).non_embedding
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])  # twice the data, lower loss
