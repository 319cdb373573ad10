"""Downstream stage: fine-tune every pretrained grid model on a labelled classification task.

For a finished pretraining run (``runs/<run_id>/`` with spec.json, result.json and the final
weights model.pt that `harness.train` keeps), the model is rebuilt (`harness.model.build_model`),
its language-model head dropped, and the transformers *base* model's final hidden states
(``model.base_model``: LlamaModel, GPT2Model, BertModel; after the final norm) pooled into one
vector per passage, which a linear head maps to class logits. Pooling (``downstream.pooling``):
'mean' over the real tokens (the default, every architecture) or 'last', the last real
token's state. For a causal model 'last' is the textbook choice (GPT-1, transformers'
``*ForSequenceClassification``): the only position whose attention saw the whole passage. But
a small LM trained for next-byte prediction keeps in that state mostly what the next byte
needs; the names, words and spellings that tell one play from another sit in the states of
the positions where they occur, and a mean reads all of them. Measured on the 3x64 Llama of
the former quickstart grid (experiments/wsd_cosine.toml; D = 5e5, all 640 labels, chance
0.125): test accuracy 0.434 (full) and 0.387 (LoRA) with 'mean', 0.152 and 0.168 with 'last'.
For bert (bidirectional) every position sees the whole passage and no [CLS] token was trained,
so 'mean' is the usual choice anyway.

Two methods: 'full' trains every weight of the backbone and the head (``downstream.lr``);
'lora' (Hu et al. 2021, via peft) freezes the backbone, adds rank-r adapters with scale
alpha / r to the attention and MLP projections (`LORA_TARGETS`), and trains the adapters and
the head (``downstream.lora_lr``). Both: AdamW (no weight decay: few steps on few examples),
a constant learning rate, gradient clipping at 1, batches in a seeded order per epoch; after
each epoch the validation loss is measured; training stops after ``patience`` epochs without a
better one (or at ``max_epochs``) and the weights of the best epoch are restored before the
test set is scored once. Same seeds, same numbers (on CPU, bit for bit).

Results: one JSON file per (run, method, labelled-set size, seed) in
``runs/<run_id>/downstream/<method>-n<labels|all>-s<seed>.json`` (written atomically, so the
stage resumes at the granularity of one fine-tune), gathered into ``RESULTS/NAME/downstream.csv``
(`DOWNSTREAM_CSV_COLUMNS`); runs.csv gets the all-labels test accuracy of each method
(`harness.results.downstream_headline`).
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import __version__
from harness.atomic import atomic_write_json, atomic_write_text
from harness.config import DownstreamConfig, ExperimentConfig
from harness.data import prepare_corpus
from harness.errors import InputError
from harness.grid import RunSpec, expand
from harness.model import build_model
from harness.results import ExperimentLayout, csv_cell, run_row
from harness.rundir import RunDir, read_json
from harness.tasks import Split, Task, downstream_task, subsample
from harness.tokenizer import is_pretrained
from harness.tokenizer import load as load_tokenizer

__all__ = [
    "DOWNSTREAM_CSV_COLUMNS",
    "LORA_TARGETS",
    "Encoded",
    "FitOutcome",
    "SequenceClassifier",
    "StageOutcome",
    "collect_downstream",
    "encode_split",
    "finetune_dir",
    "fit_classifier",
    "load_pretrained",
    "make_classifier",
    "result_name",
    "run_downstream",
]

Method = Literal["full", "lora"]
SCHEMA = 1
# Attention and MLP projections per architecture (module-name suffixes, as peft matches them).
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],  # transformers' Conv1D: peft's fan_in_fan_out
    "bert": ["query", "key", "value", "dense"],  # attention.output.dense, intermediate, output
}
PAD_ID = 0
"""Token id right-padding a text shorter than the longest of its split; masked out."""

DOWNSTREAM_CSV_COLUMNS = [
    "run_id", "experiment", "arch", "n_params", "n_params_total", "n_tokens", "loss", "val_bpb",
    "flops", "task", "n_classes", "chance_accuracy", "method", "n_labels", "all_labels",
    "n_train_available", "n_val", "n_test", "seed", "lr", "lora_rank", "lora_alpha", "pooling",
    "accuracy", "test_loss", "val_accuracy", "val_loss", "epochs", "best_epoch",
    "trainable_params", "wall_s", "status",
]  # fmt: skip
PRETRAINING_COLUMNS = DOWNSTREAM_CSV_COLUMNS[:9]
"""downstream.csv: the pretrained model's runs.csv fields (``loss`` is its pretraining
validation loss), the fine-tune's settings, and its outcome (``accuracy`` and ``test_loss``
on the test split with the best-validation weights)."""


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A split as tensors: right-padded token ids, attention mask and labels."""

    input_ids: torch.Tensor
    """(n, T) int64."""
    attention_mask: torch.Tensor
    """(n, T) int64, 1 on real tokens."""
    labels: torch.Tensor
    """(n,) int64 class ids."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> Encoded:
        i = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return Encoded(self.input_ids[i], self.attention_mask[i], self.labels[i])

    def to(self, device: torch.device) -> Encoded:
        return Encoded(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device)
        )


def encode_split(split: Split, encode: Callable[[bytes], list[int]], max_len: int) -> Encoded:
    """Token ids of each text, cut to the model's context ``max_len``, right-padded."""
    ids = [encode(t)[:max_len] or [PAD_ID] for t in split.texts]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((len(ids), width), dtype=torch.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.int64)
        mask[i, : len(x)] = 1
    return Encoded(input_ids, mask, torch.from_numpy(np.asarray(split.labels, dtype=np.int64)))


def _tokenizer(spec: RunSpec, cache_dir: Path) -> Callable[[bytes], list[int]]:
    """The pretraining tokenizer of ``spec``: bytes, a pretrained tokenizer, or the
    experiment's trained BPE."""
    if spec.data.tokenizer == "byte":
        return list
    if is_pretrained(spec.data.tokenizer):
        pre = load_tokenizer(spec.data.tokenizer)
        return lambda text: (
            pre.encode(text.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        )
    from tokenizers import Tokenizer

    corpus = prepare_corpus(spec.data, cache_dir)  # cached: the pretraining's own tokenizer
    tok = Tokenizer.from_file(str(corpus.directory / "tokenizer.json"))
    return lambda text: tok.encode(text.decode("utf-8", errors="replace")).ids


# --- model -----------------------------------------------------------------------------------


class SequenceClassifier(nn.Module):
    """A transformers base model, a pooling of its final hidden states, and a linear head."""

    def __init__(self, backbone: nn.Module, n_embd: int, n_classes: int, pooling: str) -> None:
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling = {pooling!r}; accepted: 'last', 'mean'")
        self.backbone = backbone
        self.pooling = pooling
        self.head = nn.Linear(n_embd, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, n_classes) logits."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "mean":
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:  # right padding: the last real token sits at length - 1
            last = attention_mask.sum(1) - 1
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(pooled)


def load_pretrained(run_dir: Path) -> tuple[RunSpec, nn.Module]:
    """The run's spec and its pretrained LM with the final weights (run_dir/model.pt).

    Raises
    ------
    InputError
        The run is not done, or it kept no final weights.
    """
    run = RunDir(run_dir)
    result = run.read_result()
    if result is None or result["status"] != "done":
        state = "unfinished" if result is None else result["status"]
        raise InputError(f"{run_dir}: run is {state}; only done runs are fine-tuned")
    spec = run.spec()
    weights = run.model_pt
    if not weights.exists():
        raise InputError(
            f"{weights}: no final weights (the run finished before the harness kept them); "
            f"move {run_dir} away and run `harness run` again to retrain it"
        )
    model = build_model(spec.model, spec.parametrization)  # its multipliers, as it trained
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return spec, model


def make_classifier(
    lm: nn.Module,
    arch: str,
    n_classes: int,
    *,
    method: Method,
    pooling: Literal["last", "mean"],
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    seed: int = 0,
) -> SequenceClassifier:
    """A classifier on ``lm``'s base model; for 'lora', only adapters and head train.

    The head (and the adapters' A matrices; B starts at zero, so the adapted model starts as
    the pretrained one) are initialised from ``seed``.
    """
    backbone = lm.base_model  # drops the LM head (tied weights stay in the embedding)
    torch.manual_seed(seed)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            target_modules=LORA_TARGETS.get(arch, "all-linear"),
            lora_dropout=0.0,
            bias="none",
            fan_in_fan_out=arch == "gpt2",
        )
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers 5 property that warns of its own deprecation.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            backbone = get_peft_model(backbone, config)  # freezes all but the adapters
    elif method != "full":
        raise ValueError(f"method = {method!r}; accepted: 'full', 'lora'")
    n_embd = int(lm.config.hidden_size)
    return SequenceClassifier(backbone, n_embd, n_classes, pooling)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOutcome:
    """What one fine-tune measured."""

    accuracy: float
    """Test accuracy with the best-validation-loss weights."""
    test_loss: float
    """Mean test cross-entropy, nats per example."""
    val_accuracy: float
    val_loss: float
    """At the best epoch (the restored weights)."""
    epochs: int
    """Epochs run (early stopping may end before max_epochs)."""
    best_epoch: int
    trainable_params: int
    history: list[dict[str, float]]
    """Per epoch: epoch, train_loss (mean over its batches), val_loss, val_accuracy."""


@torch.no_grad()
def evaluate(model: nn.Module, data: Encoded, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy) over ``data``."""
    model.eval()
    nats, correct = 0.0, 0
    for i in range(0, len(data), batch_size):
        logits = model(data.input_ids[i : i + batch_size], data.attention_mask[i : i + batch_size])
        y = data.labels[i : i + batch_size]
        nats += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return nats / len(data), correct / len(data)


def fit_classifier(
    model: nn.Module,
    train: Encoded,
    val: Encoded,
    test: Encoded,
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
) -> FitOutcome:
    """Train ``model``'s trainable parameters with early stopping on validation loss.

    AdamW (weight decay 0), constant ``lr``, global gradient-norm clipping at 1. After each
    epoch the validation loss is measured; the run stops when ``patience`` epochs in a row
    brought no lower one, the trainable weights of the best epoch are restored, and the test
    split is scored once with them.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in params], lr=lr, weight_decay=0.0)
    best_loss, best_epoch = math.inf, 0
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, float]] = []
    epoch = 0
    model.train()
    for epoch in range(1, max_epochs + 1):
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        total, count = 0.0, 0
        for i in range(0, len(train), batch_size):
            batch = train.take(order[i : i + batch_size])
            logits = model(batch.input_ids, batch.attention_mask)
            loss = F.cross_entropy(logits.float(), batch.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        val_loss, val_acc = evaluate(model, val, batch_size)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / count,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = {n: p.detach().clone() for n, p in params}
        elif epoch - best_epoch >= patience:
            break
    with torch.no_grad():
        for n, p in params:
            p.copy_(best_state[n])
    val_loss, val_acc = evaluate(model, val, batch_size)
    test_loss, test_acc = evaluate(model, test, batch_size)
    return FitOutcome(
        accuracy=test_acc,
        test_loss=test_loss,
        val_accuracy=val_acc,
        val_loss=val_loss,
        epochs=epoch,
        best_epoch=best_epoch,
        trainable_params=trainable_params(model),
        history=history,
    )


# --- the stage -------------------------------------------------------------------------------


def finetune_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).downstream_dir


def result_name(method: str, n_labels: int, seed: int) -> str:
    """'<method>-n<labels>-s<seed>.json'; n_labels 0 (all) is written 'all'."""
    return f"{method}-n{n_labels or 'all'}-s{seed}.json"


def resolve_pooling(cfg: DownstreamConfig, arch: str) -> Literal["last", "mean"]:
    # 'auto' is 'mean' for every arch (see the module docstring); the arch is an argument so
    # that a future arch can default otherwise.
    return "mean" if cfg.pooling == "auto" else cfg.pooling


def _settings(
    cfg: DownstreamConfig, task: Task, method: str, n_labels: int, seed: int, arch: str
) -> dict[str, Any]:
    """Everything that changes a fine-tune's numbers; a stored result with other settings is
    never taken for this one."""
    s: dict[str, Any] = {
        "task": task.name,
        "task_fingerprint": task.fingerprint,
        "method": method,
        "n_labels": n_labels,
        "seed": seed,
        "lr": cfg.lr if method == "full" else cfg.lora_lr,
        "batch_size": cfg.batch_size,
        "max_epochs": cfg.max_epochs,
        "patience": cfg.patience,
        "pooling": resolve_pooling(cfg, arch),
    }
    if method == "lora":
        s |= {"lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha}
    return s


def _stored(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result when it was made with ``settings``; None when there is none.

    Raises
    ------
    InputError
        The file holds a fine-tune with other settings (it is never overwritten silently).
    """
    if not path.exists():
        return None
    old = read_json(path)
    before = old.get("settings", {})
    if before != settings:
        differ = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        changes = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in differ)
        raise InputError(
            f"{path}: holds a fine-tune with other settings ({changes}); delete it (or the "
            f"downstream/ folders) to redo it, or use another experiment name"
        )
    return old


@dataclass(frozen=True)
class StageOutcome:
    """One fine-tune of the stage: done now, found done, or failed (with the error)."""

    run_id: str
    name: str
    state: Literal["done", "skipped", "failed"]
    record: dict[str, Any] | None
    error: str = ""


def _done_runs(
    exp: ExperimentConfig, layout: ExperimentLayout, specs: list[RunSpec] | None = None
) -> tuple[list[Path], int]:
    """Run directories of the grid's done runs (a diverged run's done retry stands in for it),
    and how many grid runs are not done."""
    done, not_done = [], 0
    for spec in expand(exp) if specs is None else specs:
        run_dir, seen = layout.run_dir(spec.run_id), set()
        result = RunDir(run_dir).read_result()
        while result is not None and result.get("retried_as") and run_dir.name not in seen:
            seen.add(run_dir.name)  # follow divergence retries to the last one
            run_dir = layout.run_dir(str(result["retried_as"]))
            result = RunDir(run_dir).read_result()
        if result is not None and result["status"] == "done":
            done.append(run_dir)
        else:
            not_done += 1
    return done, not_done


def run_downstream(
    exp: ExperimentConfig,
    layout: ExperimentLayout,
    *,
    echo: Callable[[str], None] = print,
    specs: list[RunSpec] | None = None,
) -> Iterator[StageOutcome]:
    """Fine-tune every done run of ``exp``'s grid (``specs``, as the command expanded it; by
    default expanded here) for each method x n_labels x seed.

    A fine-tune whose result file exists with the same settings is skipped, so the stage is
    idempotent and resumes where it stopped. One that raises is reported (state 'failed') and
    the others go on. Yields one outcome per fine-tune, as they finish.

    Raises
    ------
    InputError
        No task set, a bad task or CSV, an n_labels the task cannot give, or a stored result
        made with other settings (checked before anything trains).
    """
    cfg = exp.downstream
    if not cfg.task:
        raise InputError(
            "downstream.task = '': no downstream task set; accepted: 'shakespeare-plays' or a "
            "CSV path in the experiment's [downstream] table (or --downstream.task=...)"
        )
    if exp.execution.threads > 0:
        torch.set_num_threads(exp.execution.threads)
    from harness.device import resolve_device

    device = resolve_device(exp.execution)
    task = downstream_task(cfg, exp.data)
    run_dirs, not_done = _done_runs(exp, layout, specs)
    if not_done:
        echo(f"downstream: {not_done} run(s) of the grid are not done; they are left out")
    jobs = []
    for run_dir in run_dirs:
        arch = read_json(RunDir(run_dir).spec_json)["model"]["arch"]
        for method in cfg.methods:
            for n in cfg.n_labels:
                for seed in cfg.seeds:
                    settings = _settings(cfg, task, method, n, seed, arch)
                    path = finetune_dir(run_dir) / result_name(method, n, seed)
                    jobs.append((run_dir, method, n, seed, settings, path, _stored(path, settings)))
    n_todo = sum(j[-1] is None for j in jobs)
    echo(
        f"downstream {task.name!r}: {task.n_classes} classes, {len(task.train)} train / "
        f"{len(task.val)} val / {len(task.test)} test, chance {task.chance_accuracy:.3f}; "
        f"{len(jobs)} fine-tunes on {len(run_dirs)} runs, {len(jobs) - n_todo} already done, "
        f"{n_todo} to run"
    )
    cache: dict[str, tuple[RunSpec, dict[str, Encoded]]] = {}
    for run_dir, method, n, seed, settings, path, stored in jobs:
        name = path.name
        if stored is not None:
            yield StageOutcome(run_dir.name, name, "skipped", stored)
            continue
        try:
            if run_dir.name not in cache:
                cache.clear()  # one run's tensors at a time
                spec, _ = load_pretrained(run_dir)  # checks the weights exist
                encode = _tokenizer(spec, layout.cache_dir)
                cache[run_dir.name] = (
                    spec,
                    {
                        s: encode_split(getattr(task, s), encode, spec.model.seq_len).to(device)
                        for s in ("train", "val", "test")
                    },
                )
            spec, data = cache[run_dir.name]
            record = finetune_one(run_dir, spec, task, data, cfg, method, n, seed, device)
            record["settings"] = settings
            atomic_write_json(path, record)
            yield StageOutcome(run_dir.name, name, "done", record)
        except InputError as e:
            yield StageOutcome(run_dir.name, name, "failed", None, str(e))
        except Exception as e:  # noqa: BLE001 - one failing fine-tune must not stop the stage
            yield StageOutcome(run_dir.name, name, "failed", None, f"{type(e).__name__}: {e}")


def finetune_one(
    run_dir: Path,
    spec: RunSpec,
    task: Task,
    data: dict[str, Encoded],
    cfg: DownstreamConfig,
    method: Method,
    n_labels: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """One fine-tune of the run in ``run_dir``; returns the record its JSON file holds."""
    t0 = time.perf_counter()
    _, lm = load_pretrained(run_dir)
    pooling = resolve_pooling(cfg, spec.model.arch)
    model = make_classifier(
        lm,
        spec.model.arch,
        task.n_classes,
        method=method,
        pooling=pooling,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        seed=seed,
    ).to(device)
    idx = subsample(task.train.labels, n_labels, seed)
    lr = cfg.lr if method == "full" else cfg.lora_lr
    out = fit_classifier(
        model,
        data["train"].take(idx),
        data["val"],
        data["test"],
        lr=lr,
        batch_size=cfg.batch_size,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        seed=seed,
    )
    return {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "task": task.name,
        "n_classes": task.n_classes,
        "classes": list(task.classes),
        "chance_accuracy": task.chance_accuracy,
        "method": method,
        "n_labels": len(idx),
        "all_labels": len(idx) == len(task.train),
        "n_train_available": len(task.train),
        "n_val": len(task.val),
        "n_test": len(task.test),
        "seed": seed,
        "lr": lr,
        "lora_rank": cfg.lora_rank if method == "lora" else None,
        "lora_alpha": cfg.lora_alpha if method == "lora" else None,
        "pooling": pooling,
        **asdict(out),
        "wall_s": round(time.perf_counter() - t0, 3),
        "device": str(device),
        "status": "done",
        "harness_version": __version__,
    }


def collect_downstream(root: Path) -> tuple[Path, int]:
    """Write ROOT/downstream.csv from every runs/<run_id>/downstream/*.json; (path, rows).

    Raises
    ------
    InputError
        ROOT has no runs/ folder, or a record is unreadable.
    """
    layout = ExperimentLayout(Path(root))
    if not layout.runs_dir.is_dir():
        raise InputError(f"{root}: no runs/ folder here; expected a results directory")
    rows = []
    for run_dir in sorted(p for p in layout.runs_dir.iterdir() if p.is_dir()):
        files = sorted(finetune_dir(run_dir).glob("*.json"))
        result = RunDir(run_dir).read_result()
        if not files or result is None:
            continue
        pre = run_row(RunDir(run_dir).read_spec(), result)
        for f in files:
            rec = read_json(f)
            row = {k: pre[k] for k in PRETRAINING_COLUMNS}
            row |= {k: rec.get(k) for k in DOWNSTREAM_CSV_COLUMNS if k not in row}
            rows.append(row)
    rows.sort(key=lambda r: (r["n_params"], r["n_tokens"], r["run_id"], r["method"],
                             r["n_labels"], r["seed"]))  # fmt: skip
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=DOWNSTREAM_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(row.get(k)) for k in DOWNSTREAM_CSV_COLUMNS})
    path = layout.root / "downstream.csv"
    atomic_write_text(path, buf.getvalue())
    return path, len(rows)
