"""Downstream fine-tuning: classifier, LoRA parameter counts, early stopping, the stage, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import word_corpus

from harness.cli import main
from harness.finetune import (
    DOWNSTREAM_CSV_COLUMNS,
    encode_split,
    fit_classifier,
    make_classifier,
)
from harness.model import ModelShape, build_model, count_params, default_ffn_dim
from harness.results import RUNS_CSV_COLUMNS
from harness.tasks import Split


def _shape(arch: str, d: int = 32, layers: int = 1) -> ModelShape:
    return ModelShape(
        arch=arch,
        n_layer=layers,
        n_embd=d,
        n_head=d // 16,
        vocab_size=256,
        seq_len=32,
        ffn_dim=default_ffn_dim(arch, d),
    )


def _lm(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_shape(arch))


def _split(texts: list[bytes], labels: list[int]) -> Split:
    n = len(texts)
    return Split(tuple(texts), np.asarray(labels, dtype=np.int64), np.full(n, -1, dtype=np.int64))


def _easy(n: int, seed: int):
    """Class 0: strings of 'a'/'b'; class 1: of 'y'/'z' (variable length, so padding matters)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        c = i % 2
        letters = np.array(list(b"ab" if c == 0 else b"yz"), dtype=np.uint8)
        texts.append(bytes(rng.choice(letters, size=rng.integers(8, 33))))
        labels.append(c)
    return encode_split(_split(texts, labels), list, 32)


def _random_labels(n: int, seed: int):
    rng = np.random.default_rng(seed)
    texts = [bytes(rng.integers(97, 123, size=32, dtype=np.uint8)) for _ in range(n)]
    return encode_split(_split(texts, rng.integers(0, 2, size=n).tolist()), list, 32)


def test_encode_split_pads_right_and_truncates():
    enc = encode_split(_split([b"abc", b"x" * 40], [0, 1]), list, 32)
    assert enc.input_ids.shape == (2, 32)
    assert enc.input_ids[0, :4].tolist() == [97, 98, 99, 0]
    assert enc.attention_mask.sum(1).tolist() == [3, 32]
    assert enc.labels.tolist() == [0, 1]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_ignores_padding(pooling):
    model = make_classifier(_lm("llama"), "llama", 3, method="full", pooling=pooling).eval()
    short = encode_split(_split([b"to be or not"], [0]), list, 32)
    padded = encode_split(_split([b"to be or not", b"x" * 30], [0, 1]), list, 32)
    with torch.no_grad():
        alone = model(short.input_ids, short.attention_mask)[0]
        batched = model(padded.input_ids, padded.attention_mask)[0]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fine_tuning_beats_chance_on_an_easy_task(arch):
    model = make_classifier(_lm(arch), arch, 2, method="full", pooling="mean", seed=0)
    out = fit_classifier(
        model,
        _easy(64, 1),
        _easy(32, 2),
        _easy(64, 3),
        lr=3e-3,
        batch_size=16,
        max_epochs=10,
        patience=2,
        seed=0,
    )
    assert out.accuracy >= 0.95  # chance 0.5
    assert out.test_loss < 0.3  # ln 2 = 0.693 for a guess


def _by_hand_lora(arch: str, d: int, f: int, r: int, layers: int) -> int:
    """Adapters: r * (fan_in + fan_out) per targeted matrix."""
    if arch == "llama":  # q, k, v, o: d -> d; gate, up: d -> f; down: f -> d
        per_layer = 4 * r * (d + d) + 2 * r * (d + f) + r * (f + d)
    else:  # gpt2: c_attn d -> 3d, attn c_proj d -> d, c_fc d -> f, mlp c_proj f -> d
        per_layer = r * (d + 3 * d) + r * (d + d) + r * (d + f) + r * (f + d)
    return layers * per_layer


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_trains_only_adapters_and_head(arch):
    shape = _shape(arch)
    d, f, k, r = shape.n_embd, shape.ffn_dim, 3, 4
    head = d * k + k
    lora = make_classifier(_lm(arch), arch, k, method="lora", pooling="mean", lora_rank=r)
    trainable = {n: p.numel() for n, p in lora.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert sum(trainable.values()) == _by_hand_lora(arch, d, f, r, 1) + head
    # llama: 4*4*64 + 2*4*(32+96) + 4*(96+32) = 1024 + 1024 + 512 = 2560 adapters.
    if arch == "llama":
        assert sum(trainable.values()) == 2560 + 99
    full = make_classifier(_lm(arch), arch, k, method="full", pooling="mean")
    # Tied embeddings: the base model holds every LM weight; the LM head adds none.
    assert sum(p.numel() for p in full.parameters() if p.requires_grad) == (
        count_params(shape).total + head
    )

    frozen = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    out = fit_classifier(
        lora,
        _easy(32, 1),
        _easy(16, 2),
        _easy(16, 3),
        lr=1e-2,
        batch_size=16,
        max_epochs=2,
        patience=1,
        seed=0,
    )
    assert out.trainable_params == sum(trainable.values())
    after = dict(lora.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())  # backbone untouched
    assert any(
        "lora_B" in n and bool(p.abs().sum() > 0) for n, p in after.items()
    )  # B starts at 0 and moved


def test_early_stopping_restores_the_best_epoch():
    # Random labels: the model can only overfit, so validation loss soon rises.
    model = make_classifier(_lm("llama"), "llama", 2, method="full", pooling="mean", seed=0)
    out = fit_classifier(
        model,
        _random_labels(64, 1),
        _random_labels(64, 2),
        _random_labels(64, 3),
        lr=1e-2,
        batch_size=16,
        max_epochs=30,
        patience=3,
        seed=0,
    )
    losses = [h["val_loss"] for h in out.history]
    assert out.epochs < 30 and out.epochs == out.best_epoch + 3 == len(losses)
    assert out.best_epoch == 1 + int(np.argmin(losses))
    assert min(losses) < losses[-1]
    # The restored weights score exactly the best epoch's validation loss.
    assert out.val_loss == min(losses)


def test_fit_is_deterministic_given_seeds():
    runs = []
    for _ in range(2):
        model = make_classifier(_lm("gpt2"), "gpt2", 2, method="lora", pooling="mean", seed=5)
        runs.append(
            fit_classifier(
                model,
                _easy(32, 1),
                _easy(16, 2),
                _easy(16, 3),
                lr=1e-2,
                batch_size=8,
                max_epochs=3,
                patience=3,
                seed=5,
            )
        )
    assert runs[0] == runs[1]


# --- the stage and the command line -------------------------------------------------------------


def _toml(tmp: Path) -> Path:
    """A 1-run tiny grid (tests/_tiny.py's settings) with a downstream stage. Holding out every
    80th block of 1 KiB keeps the task small: 8 plays x 64 passages of 32 bytes, 320 to train."""
    toml = tmp / "tiny.toml"
    toml.write_text(f"""
[data]
corpus = "{word_corpus(tmp)}"
seq_len = 32
val_fraction = 0.0125
val_block_bytes = 1024
eval_tokens = 1024
[train]
batch_size = 8
lr = 1e-2
evals_per_run = 1
checkpoint_every_steps = 0
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}]
n_tokens = [2048]
[execution]
threads = 1
progress = false
results_dir = "{tmp / "results"}"
[downstream]
task = "shakespeare-plays"
methods = ["full", "lora"]
n_labels = [16, 0]
lr = 3e-3
lora_lr = 1e-2
lora_rank = 4
batch_size = 64
max_epochs = 2
patience = 1
""")
    return toml


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    toml = _toml(tmp)
    assert main(["run", str(toml)]) == 0
    return tmp, toml, tmp / "results" / "tiny"


def test_run_fine_tunes_every_done_run_and_writes_the_tables(finetuned, capsys):
    _, _, root = finetuned
    rows = _rows(root / "downstream.csv")
    assert list(rows[0]) == DOWNSTREAM_CSV_COLUMNS
    assert len(rows) == 4  # 1 run x 2 methods x 2 sizes x 1 seed
    n_all = int(rows[0]["n_train_available"])
    assert (n_all, int(rows[0]["n_val"]), int(rows[0]["n_test"])) == (320, 64, 128)
    assert sorted((r["method"], int(r["n_labels"])) for r in rows) == [
        ("full", 16),
        ("full", n_all),
        ("lora", 16),
        ("lora", n_all),
    ]
    for r in rows:
        assert r["chance_accuracy"] == repr(1 / 8) and r["n_classes"] == "8"
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and int(r["epochs"]) <= 2
        assert r["all_labels"] == ("true" if int(r["n_labels"]) == n_all else "false")
    runs = _rows(root / "runs.csv")
    assert list(runs[0]) == RUNS_CSV_COLUMNS and RUNS_CSV_COLUMNS[-9:-7] == [
        "task_accuracy_full",
        "task_accuracy_lora",
    ]
    for m in ("full", "lora"):
        (want,) = [r["accuracy"] for r in rows if r["method"] == m and r["all_labels"] == "true"]
        assert float(runs[0][f"task_accuracy_{m}"]) == float(want)
    run_id = rows[0]["run_id"]
    names = sorted(p.name for p in (root / "runs" / run_id / "downstream").iterdir())
    assert names == [
        "full-n16-s0.json",
        "full-nall-s0.json",
        "lora-n16-s0.json",
        "lora-nall-s0.json",
    ]


@pytest.mark.slow
def test_rerun_is_idempotent_and_resumes_one_fine_tune(finetuned, capsys):
    _, toml, root = finetuned
    folder = next((root / "runs").iterdir()) / "downstream"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main(["finetune", str(toml)]) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    (folder / "lora-n16-s0.json").unlink()
    assert main(["finetune", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "3 already done, 1 to run" in out and out.count("test accuracy") == 1
    redone = json.loads((folder / "lora-n16-s0.json").read_text())
    old = json.loads(before["lora-n16-s0.json"])
    for key in ("accuracy", "test_loss", "val_loss", "epochs", "history", "trainable_params"):
        assert redone[key] == old[key]  # same seeds, same numbers

    table = (root / "downstream.csv").read_bytes()
    (root / "downstream.csv").unlink()
    assert main(["collect", str(root)]) == 0  # rebuilt from the JSON records alone
    assert "4 fine-tunes" in capsys.readouterr().out
    assert (root / "downstream.csv").read_bytes() == table


def test_changed_settings_are_refused_not_overwritten(finetuned, capsys):
    _, toml, _ = finetuned
    capsys.readouterr()
    assert main(["finetune", str(toml), "--downstream.lr=1e-2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "full-n16-s0.json: holds a fine-tune with other settings (lr: 0.003 -> 0.01)" in err


def test_missing_weights_fail_that_run_only(finetuned, capsys, tmp_path):
    tmp, toml, root = finetuned
    run_dir = next((root / "runs").iterdir())
    weights = run_dir / "model.pt"
    saved = weights.read_bytes()
    weights.unlink()
    try:
        assert main(["finetune", str(toml), "--downstream.seeds=[1]"]) == 1
        out = capsys.readouterr().out
        assert out.count("failed: ") == 4 and "model.pt: no final weights" in out
    finally:
        weights.write_bytes(saved)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--downstream.task=", r"downstream.task = '': no downstream task set"),
        ("--downstream.task=nope", r"downstream.task = 'nope': no such task or file"),
        ("--downstream.n_labels=[4]", r"downstream.n_labels = 4: task 'shakespeare-plays' has"),
    ],
)
def test_finetune_bad_input_exits_2_with_one_line(finetuned, capsys, override, message):
    _, toml, _ = finetuned
    capsys.readouterr()
    assert main(["finetune", str(toml), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert __import__("re").search(message, err)
