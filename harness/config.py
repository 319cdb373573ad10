"""Experiment settings: frozen dataclasses, TOML loading and ``--section.field=value`` overrides.

Precedence: dataclass defaults < ``experiments/NAME.toml`` < command-line overrides. Unknown keys
and wrong types are rejected with one line naming the file, the key, the value and what is
accepted (`harness.errors.InputError`). The TOML stays plain data.

``python -m harness.config EXP.toml [--k.v=x ...]`` prints the resolved settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from harness.errors import InputError, naming
from harness.parametrization import Parametrization

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ClusterConfig",
    "build_section",
    "DataConfig",
    "DownstreamConfig",
    "EvalConfig",
    "NO_EVAL",
    "ExecutionConfig",
    "ExperimentConfig",
    "GridConfig",
    "ModelConfig",
    "PointConfig",
    "ShapeConfig",
    "SizeResources",
    "TrackingConfig",
    "TrainConfig",
    "identity_dict",
    "load_experiment",
    "parse_overrides",
    "to_dict",
]


def _added(default: Any) -> Any:
    """A run-identity field added after the first release of the schema.

    It is left out of a run's identity (`identity_dict`) while it holds its default, so every
    run_id computed before the field existed stays valid and old runs are still found done.
    """
    return field(default=default, metadata={"identity": "if_set"})


MAX_NAME_BYTES = 200
"""The longest experiment name: it names a folder (255 bytes at most on common filesystems)."""


def _check(ok: bool, name: str, value: Any, accepted: str) -> None:
    """Raise the ValueError that `build_section` turns into a one-line InputError."""
    if not ok:
        raise ValueError(f"{name} = {value!r}: {accepted}")


@dataclass(frozen=True, kw_only=True)
class ShapeConfig:
    """An explicit model shape in a grid (instead of a target parameter count)."""

    n_layer: int
    """Transformer blocks."""
    n_embd: int
    """Residual-stream width d_model."""
    n_head: int = 0
    """Attention heads; 0 = n_embd // model.head_dim."""

    def __post_init__(self) -> None:
        _check(self.n_layer >= 1, "n_layer", self.n_layer, "must be >= 1")
        _check(self.n_embd >= 1, "n_embd", self.n_embd, "must be >= 1")
        _check(self.n_head >= 0, "n_head", self.n_head, "must be >= 0 (0 = derived)")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture family and the rule that turns a target N into a shape."""

    arch: Literal["llama", "gpt2", "bert", "modernbert"] = "llama"
    """Family, built from a transformers config (no download): 'llama' and 'gpt2' are causal
    decoders (next-token loss); 'bert' (post-LN, learned positions; Devlin et al. 2019) and
    'modernbert' (pre-LN, RoPE, GeGLU; Warner et al. 2024) are bidirectional encoders trained
    with the masked-token loss."""
    aspect_ratio: float = 16.0
    """n_embd / n_layer for shapes chosen from a target parameter count (Kaplan 2020 sec. 3.1)."""
    head_dim: int = 16
    """Width of one attention head; n_head = n_embd // head_dim. Under muP and CompleteP also
    the base head width: attention logits are q.k sqrt(head_dim) / d_head."""
    tie_embeddings: bool = True
    """Share the input embedding and the output projection."""
    parametrization: Literal["standard", "mup", "completep"] = "standard"
    """How init, per-group learning rates, Adam epsilon and the forward multipliers scale with
    width (and depth), so that train.lr tuned at the base shape transfers (harness.parametrization,
    docs/parametrization.md): 'standard'; 'mup' (Yang et al. 2022); 'completep' (muP plus
    residual branches scaled by base_depth / n_layer; Dey et al. 2025). llama and modernbert."""
    base_width: int = 0
    """muP, CompleteP: the n_embd at which train.lr is tuned (where every parametrization is the
    same model); it must divide every width of the grid, or every width divide it."""
    base_depth: int = 0
    """CompleteP: the n_layer at which train.lr is tuned."""
    input_multiplier: float = 1.0
    """muP's alpha_in: the embedding output is multiplied by it (tuned at the base shape)."""
    output_multiplier: float = 1.0
    """muP's alpha_out: the logits are alpha_out / (n_embd / base_width) times the standard
    ones."""

    def __post_init__(self) -> None:
        _check(self.aspect_ratio > 0, "aspect_ratio", self.aspect_ratio, "must be > 0")
        _check(self.head_dim >= 1, "head_dim", self.head_dim, "must be >= 1")
        # The parametrization's own settings, and the arch (build_section prefixes "model.").
        self.parametrization_settings().check_arch(self.arch, prefix="")

    def parametrization_settings(self) -> Parametrization:
        """The runs' `harness.parametrization.Parametrization`."""
        return Parametrization(
            kind=self.parametrization,
            base_width=self.base_width,
            base_depth=self.base_depth,
            base_head_dim=0 if self.parametrization == "standard" else self.head_dim,
            input_multiplier=self.input_multiplier,
            output_multiplier=self.output_multiplier,
        )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Corpus, tokenizer and the fixed validation split."""

    corpus: str = "shakespeare"
    """'shakespeare' (bundled, public domain), or a path: a UTF-8 text file or a folder of them,
    JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst), Parquet (a file or a folder of shards), a
    Hugging Face dataset saved with save_to_disk, or token ids (.npy, or a raw .bin with
    token_dtype); one file or a folder of one kind (data.format)."""
    format: str = _added("auto")
    """How data.corpus is read: 'auto' (from the path: its suffixes, or a folder's files),
    'text', 'jsonl', 'parquet', 'datasets', 'npy' or 'bin'. A structured file is never read as
    raw bytes."""
    text_field: str = _added("text")
    """The field (JSON Lines), column (Parquet, datasets) holding each document's text."""
    tokenizer: str = "byte"
    """'byte': one token per UTF-8 byte (loss converts exactly to bits per byte); 'bpe':
    byte-level BPE trained locally on the training split; 'gpt-neox-20b' (the Pythia tokenizer,
    bundled with its licences); or a path to a Hugging Face tokenizer.json or a folder that
    holds one (saved by transformers). Documents are joined with its end-of-text token."""
    token_dtype: str = _added("")
    """Token id type of a raw .bin corpus: 'uint16' or 'uint32' (.npy files carry their own)."""
    eos_id: int = _added(-1)
    """Token arrays: the id that ends each document (validation takes whole documents); -1 =
    the tokenizer's end-of-text token, or none (validation in blocks of val_block_bytes
    tokens)."""
    vocab_size: int = _added(0)
    """Token arrays without a tokenizer: the vocabulary size (every id must be below it); 0 =
    from data.tokenizer."""
    bpe_vocab_size: int = 2048
    """Vocabulary size of the BPE tokenizer (ignored for 'byte')."""
    seq_len: int = 128
    """Context length in tokens."""
    val_corpus: str = _added("")
    """A validation set of its own (a path, read as data.corpus is): data.corpus is then all
    training and this all validation; '' = hold out data.val_fraction of data.corpus."""
    val_fraction: float = 0.05
    """Share of the corpus held out for validation; no run ever trains on it."""
    val_block_bytes: int = 16384
    """The held-out share is made of blocks of this many bytes spread over the whole corpus."""
    eval_tokens: int = 65536
    """Held-out tokens scored at each evaluation (the same tokens for every run)."""
    unique_tokens: int = _added(0)
    """Train on only the first this many tokens of the training split, repeated for as many
    epochs as the token budget needs (data-constrained scaling, Muennighoff et al. 2023);
    a multiple of seq_len; 0 = the whole training split."""

    def __post_init__(self) -> None:
        _check(bool(self.corpus), "corpus", self.corpus, "a bundled name or a path")
        formats = ("auto", "text", "jsonl", "parquet", "datasets", "npy", "bin")
        _check(self.format in formats, "format", self.format, "one of " + ", ".join(formats))
        _check(bool(self.text_field), "text_field", self.text_field, "a field name")
        _check(bool(self.tokenizer), "tokenizer", self.tokenizer, "byte, bpe, a name or a path")
        _check(
            self.token_dtype in ("", "uint16", "uint32"),
            "token_dtype",
            self.token_dtype,
            "'uint16' or 'uint32' (or '' for a corpus that is not a raw .bin)",
        )
        _check(self.eos_id >= -1, "eos_id", self.eos_id, "an id >= 0, or -1")
        _check(self.vocab_size >= 0, "vocab_size", self.vocab_size, "must be >= 0")
        _check(self.bpe_vocab_size >= 260, "bpe_vocab_size", self.bpe_vocab_size, "must be >= 260")
        _check(self.seq_len >= 2, "seq_len", self.seq_len, "must be >= 2")
        _check(
            0 < self.val_fraction < 0.5, "val_fraction", self.val_fraction, "must be in (0, 0.5)"
        )
        _check(
            self.val_block_bytes >= 256, "val_block_bytes", self.val_block_bytes, "must be >= 256"
        )
        _check(
            self.eval_tokens >= self.seq_len, "eval_tokens", self.eval_tokens, "must be >= seq_len"
        )
        # Whole sequences, so that a run sees exactly U unique tokens per epoch (harness.data).
        _check(
            self.unique_tokens == 0
            or (self.unique_tokens > 0 and self.unique_tokens % self.seq_len == 0),
            "unique_tokens",
            self.unique_tokens,
            f"must be 0 (the whole training split) or a positive multiple of seq_len = "
            f"{self.seq_len} (whole sequences)",
        )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings shared by every run of an experiment."""

    batch_size: int = 32
    """Sequences per optimizer step (batch tokens = batch_size * seq_len)."""
    lr: float = 3e-3
    """Peak learning rate at width lr_ref_width."""
    lr_ref_width: int = 64
    """Width at which the peak learning rate equals `lr`."""
    lr_width_exponent: float = 0.0
    """Peak lr = lr * (lr_ref_width / n_embd) ** lr_width_exponent; 1.0 is muP's 1/width rule for
    Adam on hidden matrices, 0.0 one learning rate for all widths."""
    warmup_fraction: float = 0.05
    """Linear warmup over this share of the run's own steps (at least one step)."""
    min_lr_ratio: float = 0.1
    """The decay (cosine, or the WSD cooldown) ends at lr * min_lr_ratio exactly at the run's own
    last step (Chinchilla)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on norms, biases or embeddings)."""
    beta1: float = 0.9
    """AdamW decay rate of the first-moment (gradient mean) estimate, its betas[0]; in [0, 1)."""
    beta2: float = 0.95
    """AdamW decay rate of the second-moment (squared gradient) estimate, its betas[1]; in
    [0, 1)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables."""
    evals_per_run: int = 4
    """Validation evaluations spread over the run, the last one at the final step."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """'auto': bf16 autocast on a GPU that supports it, else fp32."""
    checkpoint_every_steps: int = 500
    """Save a resumable checkpoint every this many steps (0: only at the end)."""
    checkpoint_keep: int = 2
    """Newest checkpoints kept per run."""
    schedule: Literal["cosine", "wsd", "constant"] = _added("cosine")
    """Learning-rate schedule after warmup. 'cosine' decays to lr * min_lr_ratio at the run's own
    last step; 'wsd' (warmup-stable-decay, Hagele et al. 2024) holds the peak and decays over
    the last decay_fraction of the run, so runs of one size share their stable phase;
    'constant' holds the peak."""
    decay_fraction: float = _added(0.2)
    """WSD: share of the run's steps spent in the final decay (cooldown)."""
    decay_shape: Literal["linear", "1-sqrt"] = _added("1-sqrt")
    """WSD: cooldown from the peak to lr * min_lr_ratio, linear or 1 - sqrt (Hagele et al. 2024
    found 1 - sqrt better)."""
    warmup_tokens: int = _added(0)
    """Linear warmup over this many tokens, the same for every D (what lets WSD runs of one size
    share their stable phase); 0 = warmup_fraction of the run's own steps (refused with 'wsd')."""
    mask_fraction: float = _added(0.15)
    """Masked LM (model.arch = 'bert' or 'modernbert'): share of tokens chosen for prediction
    (BERT's 15%)."""
    size_rule: Literal["", "porian2024"] = _added("")
    """The peak learning rate and batch size of each model size by a published rule, in place
    of train.lr and train.batch_size: 'porian2024' (Porian et al. 2024's fits, as OLMo-core's
    ladder uses them: batch 2048 x 160 x (N/1.08e8)^(2/3) tokens, rounded to a power of two
    sequences, lr 0.0047 x (N/1.08e8)^(-1/3); `harness.size_rules`). '' = the same for all."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.lr_ref_width >= 1, "lr_ref_width", self.lr_ref_width, "must be >= 1")
        _check(
            0 <= self.warmup_fraction < 1,
            "warmup_fraction",
            self.warmup_fraction,
            "must be in [0, 1)",
        )
        _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1)")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")
        _check(self.evals_per_run >= 1, "evals_per_run", self.evals_per_run, "must be >= 1")
        _check(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            self.checkpoint_every_steps,
            "must be >= 0",
        )
        _check(self.checkpoint_keep >= 1, "checkpoint_keep", self.checkpoint_keep, "must be >= 1")
        _check(
            0 < self.decay_fraction <= 1,
            "decay_fraction",
            self.decay_fraction,
            "must be in (0, 1]",
        )
        _check(self.warmup_tokens >= 0, "warmup_tokens", self.warmup_tokens, "must be >= 0")
        # A warmup that scaled with each run's D would make WSD runs of one size differ from step
        # 0, so none could share a stable phase (harness.wsd); Hagele et al. 2024 fix it in steps.
        _check(
            self.schedule != "wsd" or self.warmup_tokens > 0,
            "warmup_tokens",
            self.warmup_tokens,
            "schedule 'wsd' needs a warmup of the same length for every D, so that runs of one "
            "size share their stable phase: set train.warmup_tokens > 0 (e.g. 5% of the "
            "smallest D)",
        )
        _check(0 < self.mask_fraction < 1, "mask_fraction", self.mask_fraction, "must be in (0, 1)")
        _check(
            not self.size_rule or self.lr_width_exponent == 0,
            "size_rule",
            self.size_rule,
            "a rule sets each size's learning rate: train.lr_width_exponent must be 0 with it",
        )


@dataclass(frozen=True, kw_only=True)
class PointConfig:
    """One explicit grid point: a model size (target N or a shape) and a token budget."""

    n_tokens: int
    """Training tokens D."""
    n_params: int = 0
    """Target non-embedding parameter count; 0 when the shape is given instead."""
    n_layer: int = 0
    """Transformer blocks of an explicit shape, given together with n_embd instead of n_params
    (heads: n_embd // model.head_dim); 0 when n_params is given."""
    n_embd: int = 0
    """Residual-stream width d_model of an explicit shape, given together with n_layer instead
    of n_params; 0 when n_params is given."""

    def __post_init__(self) -> None:
        _check(self.n_tokens > 0, "n_tokens", self.n_tokens, "must be > 0")
        _check(self.n_params >= 0, "n_params", self.n_params, "must be >= 0")
        has_shape = self.n_layer > 0 and self.n_embd > 0
        _check(
            (self.n_params > 0) != has_shape,
            "n_params",
            self.n_params,
            "give either n_params or both n_layer and n_embd",
        )


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """The runs. Model sizes (n_params, shapes) are crossed with the token budgets that one of
    the modes gives: n_tokens (cartesian N x D), flops (isoFLOP: D = C / 6N per budget),
    tokens_per_param (ladder: D = k N) or unique_tokens x epochs (repeated data, D = U x epochs);
    points lists (N, D) pairs outright. lrs and batch_sizes sweep the optimiser at every point.
    Every run is repeated per seed."""

    n_params: tuple[int, ...] = ()
    """Target non-embedding parameter counts (Kaplan's N); shapes follow model.aspect_ratio."""
    shapes: tuple[ShapeConfig, ...] = ()
    """Explicit shapes, e.g. [{n_layer = 2, n_embd = 64}], in addition to n_params."""
    n_tokens: tuple[int, ...] = ()
    """Training token budgets D (rounded to whole sequences of data.seq_len)."""
    flops: tuple[float, ...] = ()
    """IsoFLOP budgets C: every model size trains on D = C / (6 N) tokens of each budget."""
    tokens_per_param: tuple[float, ...] = ()
    """Tokens-per-parameter ladder: every model size trains on D = k N for each k."""
    unique_tokens: tuple[int, ...] = ()
    """Repeated data: unique-token budgets U (data.unique_tokens), crossed with epochs."""
    epochs: tuple[float, ...] = ()
    """Repeated data: passes over the U unique tokens; D = U x epochs."""
    points: tuple[PointConfig, ...] = ()
    """Explicit (size, D) pairs, e.g. [{n_params = 1e5, n_tokens = 2e6}]."""
    lrs: tuple[float, ...] = ()
    """Learning-rate sweep: every grid point once per peak learning rate (train.lr)."""
    batch_sizes: tuple[int, ...] = ()
    """Batch-size sweep: every grid point once per batch size (train.batch_size)."""
    seeds: tuple[int, ...] = (0,)
    """One run per seed for every grid point."""
    prior: str = "hoffmann2022"
    """The law that predicts each isoFLOP budget's compute-optimal N (harness.design):
    'hoffmann2022' (Hoffmann et al.'s published approach-3 fit), a path to a fits.json (its
    chinchilla law, e.g. an earlier grid's), or '' for none. `harness plan` notes every budget
    whose sizes do not bracket it."""
    sizes_per_budget: int = 0
    """IsoFLOP grids: this many sizes per budget, centred in log on the prior's N_opt and
    spread over size_span (each the model rule's shape nearest its target); 0 = only the sizes
    of n_params and shapes."""
    size_span: float = 16.0
    """Ratio of the largest to the smallest target size of a budget (sizes_per_budget)."""

    def __post_init__(self) -> None:
        _check(
            self.sizes_per_budget >= 0,
            "sizes_per_budget",
            self.sizes_per_budget,
            "must be >= 0 (0 = no centred sizes)",
        )
        _check(
            self.sizes_per_budget == 0 or self.sizes_per_budget >= 3,
            "sizes_per_budget",
            self.sizes_per_budget,
            "0, or at least 3 (a profile needs 3 sizes)",
        )
        _check(self.size_span > 1, "size_span", self.size_span, "must be > 1")
        _check(
            self.sizes_per_budget == 0 or bool(self.flops),
            "sizes_per_budget",
            self.sizes_per_budget,
            "needs grid.flops (isoFLOP budgets)",
        )
        _check(
            self.sizes_per_budget == 0 or bool(self.prior),
            "sizes_per_budget",
            self.sizes_per_budget,
            "needs grid.prior (the law to centre on)",
        )
        for n in self.n_params:
            _check(n > 0, "n_params", n, "every target parameter count must be > 0")
        for d in self.n_tokens:
            _check(d > 0, "n_tokens", d, "every token budget must be > 0")
        for c in self.flops:
            _check(c > 0, "flops", c, "every FLOP budget must be > 0")
        for k in self.tokens_per_param:
            _check(k > 0, "tokens_per_param", k, "every tokens-per-parameter ratio must be > 0")
        for u in self.unique_tokens:
            _check(u > 0, "unique_tokens", u, "every unique-token budget must be > 0")
        for e in self.epochs:
            _check(e > 0, "epochs", e, "every epoch count must be > 0")
        _check(
            bool(self.unique_tokens) == bool(self.epochs),
            "unique_tokens",
            self.unique_tokens,
            "give unique_tokens and epochs together",
        )
        for lr in self.lrs:
            _check(lr > 0, "lrs", lr, "every learning rate must be > 0")
        for b in self.batch_sizes:
            _check(b >= 1, "batch_sizes", b, "every batch size must be >= 1")
        for s in self.seeds:
            _check(s >= 0, "seeds", s, "every seed must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """Where and how runs execute. Not part of a run's identity (run_id)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto': CUDA when present, else CPU."""
    threads: int = 0
    """torch intra-op threads per run; 0 = torch's default (all cores) with one worker, and one
    thread per worker with several (`workers`)."""
    workers: int | Literal["auto"] = "auto"
    """Runs trained at once on this machine (`harness run`). 'auto': one per visible GPU times
    runs_per_device; on a CPU, as many as the usable cores allow at `threads` each (at least
    one thread), never more threads than cores."""
    runs_per_device: int = 1
    """Runs that share one GPU at once (small runs do not fill one). Each worker sees only its
    own GPU (CUDA_VISIBLE_DEVICES)."""
    progress: bool = True
    """Progress bars for the grid and the current run."""
    results_dir: str = "results"
    """Results go to RESULTS_DIR/EXPERIMENT_NAME/."""
    checkpoint_every_s: float = 0.0
    """Also save a resumable checkpoint when this many seconds of wall time have passed since the
    last one (0: by steps only, train.checkpoint_every_steps). Cadence never changes a result, so
    it is an execution setting, not part of the run's identity."""
    diverge_factor: float = 2.0
    """A run diverged when its mean training loss over `diverge_patience` consecutive log
    intervals exceeds diverge_factor * max(its first-step loss, ln(vocab_size)); ln(vocab_size)
    is the loss of a uniform guess, so such a model is confidently worse than knowing nothing.
    0 disables the rule (a non-finite loss always ends a run as diverged)."""
    diverge_patience: int = 2
    """Consecutive log intervals (about 1% of the run each, at least one step) over the
    threshold before a run counts as diverged; one spike that recovers is not a divergence."""
    diverge_retries: int = 0
    """After a divergence, run the same grid point again with its learning rate times
    diverge_lr_factor, up to this many times (each retry is a new run with its own run_id)."""
    diverge_lr_factor: float = 0.5
    """Learning-rate multiplier of each divergence retry."""
    share_wsd_trunks: bool = True
    """WSD runs that differ only in D share their stable phase: the longest trains it once and
    hands each shorter run its checkpoint where that run's decay begins (Hagele et al. 2024).
    The shorter runs' results are the same as if trained alone; only FLOPs are saved."""
    compile: bool = False
    """torch.compile the model (faster on GPUs for long runs; compile time is paid per run)."""
    devices_per_run: int = 1
    """Devices one run trains on at once through torch.distributed (`harness run`): GPUs, or on
    a CPU processes of `threads` threads each (gloo). The global batch (train.batch_size) and
    every result stay those of one device; only the time changes."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How a run spans devices: 'ddp' (DistributedDataParallel: every device holds the whole
    model) or 'fsdp' (FSDP2's fully_shard: parameters, gradients and optimizer state sharded)."""
    fsdp_mixed_precision: bool = True
    """Under FSDP at bf16 (train.precision): each block's parameters are gathered in bf16 and
    its gradients reduced in fp32 (FSDP2's MixedPrecisionPolicy, as torchtitan and OLMo-core
    train), in place of autocast. No bf16 weight copies are kept for the backward pass and the
    all-gathers move half the bytes; the residual stream is bf16, where autocast keeps it fp32.
    The sharded weights and AdamW's moments stay fp32. false = autocast, as on one device."""
    fsdp_reshard_after_forward: bool = True
    """Under FSDP: free each block's gathered parameters after its forward and gather them
    again for its backward (the least memory); false keeps them to the backward (one
    all-gather less per block, every block's gathered parameters held at once)."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in its backward pass instead of keeping
    them from the forward (transformers' gradient checkpointing, non-reentrant): a block keeps
    only its input, for one more forward pass of compute a step (a third more). Results are
    unchanged; `harness plan` counts the memory saved and the compute added."""
    micro_batch_size: int = 0
    """Sequences per forward pass on each device; gradients accumulate over the device's share
    of train.batch_size in micro-batches of this many. 0 = the whole share at once."""
    gpu: str = ""
    """The GPU `harness plan` sizes each run for, wherever the plan itself runs: a name of
    `harness.hardware.ACCELERATORS` (h100, h100-pcie, h100-nvl, h200, a100-80gb, a100-40gb, l4,
    rtx4090), or any name with gpu_memory_gb and gpu_bf16_tflops. The plan then builds no
    model: it estimates each run's memory per GPU (`harness.memory`), chooses the
    micro-batch and GPUs that fit, and GPU-hours at gpu_mfu. '' = the machine it runs on."""
    gpu_memory_gb: float = 0.0
    """Memory of one such GPU in GB (1e9 bytes); 0 = the table's."""
    gpu_bf16_tflops: float = 0.0
    """Dense bf16 peak of one such GPU in TFLOP/s; 0 = the table's."""
    gpu_mfu: float = 0.35
    """The model FLOP utilisation (FLOPs with attention over the bf16 peak) the plan's
    GPU-hours assume: well-tuned large-model training reaches 0.35-0.5 (Chowdhery et al.
    2022, PaLM, table 3)."""

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "threads", self.threads, "must be >= 0 (0 = torch default)")
        _check(
            self.devices_per_run >= 1, "devices_per_run", self.devices_per_run, "an integer >= 1"
        )
        _check(self.parallel in ("ddp", "fsdp"), "parallel", self.parallel, "'ddp' or 'fsdp'")
        _check(
            self.micro_batch_size >= 0,
            "micro_batch_size",
            self.micro_batch_size,
            "an integer >= 0 (0 = the device's whole share of the batch)",
        )
        _check(self.gpu_memory_gb >= 0, "gpu_memory_gb", self.gpu_memory_gb, "GB >= 0")
        _check(self.gpu_bf16_tflops >= 0, "gpu_bf16_tflops", self.gpu_bf16_tflops, "TFLOP/s >= 0")
        _check(0 < self.gpu_mfu <= 1, "gpu_mfu", self.gpu_mfu, "a fraction in (0, 1]")
        if self.gpu:
            from harness.hardware import accelerator

            try:
                accelerator(self.gpu, self.gpu_memory_gb, self.gpu_bf16_tflops)
            except ValueError as exc:
                _check(False, "gpu", self.gpu, str(exc).split("; accepted: ")[1])
        _check(
            self.workers == "auto" or self.workers >= 1,
            "workers",
            self.workers,
            "'auto' or an integer >= 1",
        )
        _check(
            self.runs_per_device >= 1, "runs_per_device", self.runs_per_device, "an integer >= 1"
        )
        _check(bool(self.results_dir), "results_dir", self.results_dir, "a directory path")
        _check(
            self.checkpoint_every_s >= 0,
            "checkpoint_every_s",
            self.checkpoint_every_s,
            "must be >= 0 (0 = by steps only)",
        )
        _check(
            self.diverge_factor == 0 or self.diverge_factor > 1,
            "diverge_factor",
            self.diverge_factor,
            "must be > 1, or 0 to disable the blow-up rule",
        )
        _check(
            self.diverge_patience >= 1, "diverge_patience", self.diverge_patience, "must be >= 1"
        )
        _check(self.diverge_retries >= 0, "diverge_retries", self.diverge_retries, "must be >= 0")
        _check(
            0 < self.diverge_lr_factor < 1,
            "diverge_lr_factor",
            self.diverge_lr_factor,
            "must be in (0, 1)",
        )


@dataclass(frozen=True, kw_only=True)
class SizeResources:
    """SLURM resources for the runs of at least ``min_n_params`` (a ``[[cluster.by_size]]``
    table); a field left out keeps the value of ``[cluster]``."""

    min_n_params: int
    """Applies to runs with at least this many non-embedding parameters (Kaplan's N); of several
    matching tables the one with the largest min_n_params wins."""
    partition: str | None = None
    """sbatch --partition for these runs; left out = cluster.partition."""
    qos: str | None = None
    """sbatch --qos for these runs; left out = cluster.qos."""
    time_min: int | None = None
    """Wall-clock limit per run for these runs, minutes (>= 1; a packed job asks for the sum, as
    with cluster.time_min); left out = cluster.time_min."""
    gpus_per_run: int | None = None
    """sbatch --gpus-per-node for these runs (>= 0; 0 asks for no GPU); left out =
    cluster.gpus_per_run."""
    tasks_per_run: int | None = None
    """Ranks per node for these runs (as cluster.tasks_per_run); left out = cluster's."""
    nodes_per_run: int | None = None
    """sbatch --nodes for these runs (>= 1); left out = cluster.nodes_per_run."""
    cpus_per_run: int | None = None
    """sbatch --cpus-per-task for these runs (>= 1); left out = cluster.cpus_per_run."""
    mem_gb: float | None = None
    """sbatch --mem for these runs, GB per run (> 0); left out = cluster.mem_gb."""
    constraint: str | None = None
    """sbatch --constraint (node features, e.g. 'h100') for these runs; left out =
    cluster.constraint."""

    def __post_init__(self) -> None:
        _check(self.min_n_params >= 0, "min_n_params", self.min_n_params, "must be >= 0")
        _check(
            self.time_min is None or self.time_min >= 1, "time_min", self.time_min, "must be >= 1"
        )
        _check(
            self.gpus_per_run is None or self.gpus_per_run >= 0,
            "gpus_per_run",
            self.gpus_per_run,
            "must be >= 0",
        )
        _check(
            self.nodes_per_run is None or self.nodes_per_run >= 1,
            "nodes_per_run",
            self.nodes_per_run,
            "must be >= 1",
        )
        _check(
            self.cpus_per_run is None or self.cpus_per_run >= 1,
            "cpus_per_run",
            self.cpus_per_run,
            "must be >= 1",
        )
        _check(self.mem_gb is None or self.mem_gb > 0, "mem_gb", self.mem_gb, "must be > 0")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """SLURM resources for `harness submit` (submitit). Ignored by local runs."""

    partition: str = ""
    """sbatch --partition; '' = the cluster's default partition."""
    account: str = ""
    """sbatch --account; required where the site enforces accounting."""
    qos: str = ""
    """sbatch --qos."""
    time_min: int = 60
    """Wall-clock limit per run (per unit of work: a WSD trunk with its branches is one),
    minutes; a job packing k units (runs_per_job) asks for k x time_min. A run that needs
    longer is checkpointed and requeued (up to max_timeouts times), so this may be shorter
    than the run."""
    gpus_per_run: int = 1
    """sbatch --gpus-per-node; 0 asks for no GPU. More than one trains each run on all of them,
    one task (torch.distributed rank) per GPU (execution.parallel)."""
    tasks_per_run: int = 0
    """sbatch --ntasks-per-node: a run's ranks on each node; 0 = one per GPU (gpus_per_run), or
    one without GPUs. On a CPU partition more than one trains each run on that many processes
    (gloo)."""
    nodes_per_run: int = 1
    """sbatch --nodes for each run: its ranks are tasks_per_run on each of them."""
    cpus_per_run: int = 8
    """sbatch --cpus-per-task (per rank); also the torch threads of each rank when
    execution.threads is 0."""
    mem_gb: float = 32.0
    """sbatch --mem, GB per run."""
    constraint: str = ""
    """sbatch --constraint (node features, e.g. 'a100')."""
    max_parallel: int = 64
    """At most this many array tasks running at once (sbatch --array=...%N), over all the
    arrays of one `harness submit`."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each job (module load, environment activation)."""
    extra: tuple[str, ...] = ()
    """Other sbatch options as 'key=value' (e.g. 'reservation=myres', 'signal=USR2@300');
    'key' alone for a flag."""
    python: str = ""
    """Command that starts Python on the compute nodes, after `setup`; '' = the interpreter
    running `harness submit` (its path must exist on the nodes)."""
    runs_per_job: int = 1
    """Pack up to this many runs into one SLURM job, trained one after another in its
    allocation (each under its own lock, resumed from its own checkpoint after a requeue): for
    clusters that cap the number of jobs, and runs too small to fill a GPU. 1 = a job per run."""
    max_timeouts: int = 3
    """Requeues after hitting time_min before a run counts as failed (submitit's
    max_num_timeout); preemptions do not count."""
    by_size: tuple[SizeResources, ...] = ()
    """Per model size overrides, e.g. [{min_n_params = 1e8, gpus_per_run = 4, time_min = 720}]."""

    def __post_init__(self) -> None:
        _check(self.time_min >= 1, "time_min", self.time_min, "must be >= 1")
        _check(self.gpus_per_run >= 0, "gpus_per_run", self.gpus_per_run, "must be >= 0")
        _check(
            self.tasks_per_run in (0, self.gpus_per_run) or self.gpus_per_run == 0,
            "tasks_per_run",
            self.tasks_per_run,
            f"0 or gpus_per_run = {self.gpus_per_run} (one rank per GPU)",
        )
        _check(self.tasks_per_run >= 0, "tasks_per_run", self.tasks_per_run, "must be >= 0")
        _check(self.nodes_per_run >= 1, "nodes_per_run", self.nodes_per_run, "must be >= 1")
        _check(self.cpus_per_run >= 1, "cpus_per_run", self.cpus_per_run, "must be >= 1")
        _check(self.mem_gb > 0, "mem_gb", self.mem_gb, "must be > 0")
        _check(self.max_parallel >= 1, "max_parallel", self.max_parallel, "must be >= 1")
        _check(self.max_timeouts >= 0, "max_timeouts", self.max_timeouts, "must be >= 0")
        _check(self.runs_per_job >= 1, "runs_per_job", self.runs_per_job, "must be >= 1")
        for item in self.extra:
            key = item.split("=", 1)[0].strip()
            _check(
                bool(key) and " " not in key and not key.startswith("-"),
                "extra",
                item,
                "each item is 'key=value' or 'key', an sbatch option without the leading --",
            )
        sizes = [s.min_n_params for s in self.by_size]
        _check(len(sizes) == len(set(sizes)), "by_size", sizes, "each min_n_params may appear once")


@dataclass(frozen=True, kw_only=True)
class DownstreamConfig:
    """Fine-tuning every pretrained grid model on a labelled classification task."""

    task: str = ""
    """'' = no downstream stage; 'shakespeare-plays' (bundled: which play a passage comes
    from) or a path to a CSV file with columns text and label."""
    methods: tuple[Literal["full", "lora"], ...] = ("full", "lora")
    """Fine-tune all weights ('full') and/or low-rank adapters ('lora', peft)."""
    n_labels: tuple[int, ...] = (0,)
    """Labelled-data-size grid: training examples per fine-tuning run, a class-balanced seeded
    subsample (nested: a smaller set is part of every larger one); 0 = all of them."""
    seeds: tuple[int, ...] = (0,)
    """Fine-tuning seeds (example subset, head and adapter initialisation, batch order)."""
    lr: float = 1e-3
    """Learning rate (constant, AdamW) of full fine-tuning."""
    lora_lr: float = 3e-3
    """Learning rate (constant, AdamW) of LoRA fine-tuning (adapters and head)."""
    lora_rank: int = 8
    """Rank r of the LoRA adapters (peft's r: the inner width of each low-rank update B A);
    >= 1. Used by 'lora' only."""
    lora_alpha: float = 16.0
    """LoRA scaling (peft's lora_alpha): each adapter's update B A is multiplied by
    lora_alpha / lora_rank; > 0. Used by 'lora' only."""
    batch_size: int = 32
    """Labelled examples per optimizer step of fine-tuning (both methods), also the batch size
    of the validation and test passes; >= 1."""
    max_epochs: int = 20
    """Upper bound on passes over the labelled training examples."""
    patience: int = 3
    """Early stopping: epochs without a better validation loss before stopping."""
    pooling: Literal["auto", "last", "mean"] = "auto"
    """Passage representation fed to the classifier head: the mean of the final hidden states
    over the passage's tokens ('mean') or the last token's ('last', the only position of a
    causal model that has seen the whole passage); 'auto' = 'mean' (measured far better for
    the small byte-level models of the quickstart, see harness.finetune)."""

    def __post_init__(self) -> None:
        _check(bool(self.n_labels), "n_labels", self.n_labels, "give sizes, 0 = all labels")
        for n in self.n_labels:
            _check(n >= 0, "n_labels", n, "every labelled-set size must be >= 1, or 0 = all")
        _check(bool(self.methods), "methods", self.methods, "give 'full', 'lora' or both")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.lora_lr > 0, "lora_lr", self.lora_lr, "must be > 0")
        _check(self.lora_rank >= 1, "lora_rank", self.lora_rank, "must be >= 1")
        _check(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "must be > 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.max_epochs >= 1, "max_epochs", self.max_epochs, "must be >= 1")
        _check(self.patience >= 1, "patience", self.patience, "must be >= 1")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Downstream tasks scored during pretraining (`harness.evals`, docs/evals.md): ranked
    classification (each answer choice's log-likelihood) through lm-evaluation-harness, on the
    run's own model in memory, on rank 0. Needs the optional extra: pip install
    'scaling-harness[eval]'. Part of a run's identity when tasks are given."""

    tasks: tuple[str, ...] = ()
    """What to score: bundled tasks by name ('shakespeare_cloze', 'facts_kv'), lm-eval task
    names, or paths to task YAML files of your own (their data may be local JSON lines);
    empty = no task evaluation. Multiple-choice tasks only."""
    num_fewshot: int = 0
    """Solved examples put before each question (drawn with ``seed``, the same for every run)."""
    limit: int = 500
    """Examples scored per task: the task's first ``limit`` (the same for every run of the
    experiment); 0 = all of them."""
    when: Literal["evals", "end"] = "evals"
    """'evals': at every held-out evaluation (train.evals_per_run of them, the last one
    included), so each checkpoint is a row of tasks.csv; 'end': after the last step only."""
    seed: int = 1234
    """Seed of the few-shot examples' draw (lm-eval's fewshot_random_seed)."""
    batch_size: int = 64
    """Questions (a context with its answer choices, one packed sequence) per forward pass of
    the scoring; >= 1. It sets speed and memory, and moves scores only by float rounding (the
    batches' shapes)."""

    def __post_init__(self) -> None:
        _check(len(set(self.tasks)) == len(self.tasks), "tasks", list(self.tasks), "each once")
        _check(all(t.strip() for t in self.tasks), "tasks", list(self.tasks), "non-empty names")
        _check(self.num_fewshot >= 0, "num_fewshot", self.num_fewshot, "must be >= 0")
        _check(self.limit >= 0, "limit", self.limit, "must be >= 0 (0 = every example)")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")


NO_EVAL = EvalConfig()
"""No task evaluation: a run's identity leaves [eval] out when it equals this."""


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Experiment tracking: each run's settings and metrics, and the grid's fitted laws, logged
    to TensorBoard, MLflow and/or Weights & Biases (optional extras: pip install
    'scaling-harness[tracking]'; docs/tracking.md). Not part of a run's identity (run_id)."""

    backend: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] = ()
    """Where to log: 'tensorboard', 'mlflow', 'wandb', or a list of several; empty = no
    tracking."""
    project: str = ""
    """The MLflow experiment and W&B project the runs are logged to; '' = the experiment's
    name (TensorBoard has no projects)."""
    uri: str = ""
    """Where the one backend logs (needs a single backend); '' = its default under the
    experiment's results folder RESULTS/NAME: TensorBoard a folder with one log folder per
    run_id (default RESULTS/NAME/tensorboard), MLflow a tracking URI (default the SQLite store
    sqlite:///RESULTS/NAME/mlflow.db), W&B the folder (wandb.init's dir) in whose wandb/
    subfolder its runs go (default RESULTS/NAME; offline unless WANDB_MODE is set)."""

    def __post_init__(self) -> None:
        _check(
            len(set(self.backend)) == len(self.backend),
            "backend",
            list(self.backend),
            "each of 'tensorboard', 'mlflow', 'wandb' at most once",
        )
        _check(
            not self.uri or len(self.backend) == 1,
            "uri",
            self.uri,
            "a location for a single backend; leave it '' to give each of several backends its "
            "default under the results folder",
        )


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One experiment: a grid of runs and the settings they share."""

    name: str
    """Names the results directory; defaults to the TOML file's stem."""
    description: str = ""
    """Free text saying what the experiment is for, for whoever reads the TOML file; the harness
    does not use it, and it is not part of any run's identity (run_id)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        # Not starting with '.': "." and ".." would put the results in results/ itself or above.
        ok = bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name)
        _check(
            ok and not self.name.startswith("."),
            "name",
            self.name,
            "letters, digits, '-', '_' and '.' only, not starting with '.'",
        )
        # A folder name: at most 255 bytes on every common filesystem, and the harness writes
        # names such as ".NAME.lock" beside it.
        _check(
            len(self.name.encode()) <= MAX_NAME_BYTES,
            "name",
            self.name[:40] + "...",
            f"at most {MAX_NAME_BYTES} characters (it names the results folder); this one has "
            f"{len(self.name.encode())}",
        )
        g = self.grid
        modes = [
            name
            for name, on in [
                ("n_tokens", g.n_tokens),
                ("flops", g.flops),
                ("tokens_per_param", g.tokens_per_param),
                ("unique_tokens", g.unique_tokens),
            ]
            if on
        ]
        _check(
            bool(modes or g.points),
            "grid.n_tokens",
            g.n_tokens,
            "give token budgets: grid.n_tokens, flops, tokens_per_param, unique_tokens with "
            "epochs, or points",
        )
        _check(
            len(modes) <= 1,
            "grid",
            modes,
            "use one of n_tokens, flops, tokens_per_param or unique_tokens/epochs per experiment",
        )
        _check(
            bool(g.n_params or g.shapes or g.sizes_per_budget) or not modes,
            "grid.n_params",
            g.n_params,
            "give at least one model size (grid.n_params, grid.shapes, or for isoFLOP grids "
            "grid.sizes_per_budget)",
        )
        _check(bool(self.grid.seeds), "grid.seeds", self.grid.seeds, "give at least one seed")
        # muP and CompleteP set each width's learning rates themselves; the harness's other
        # rules would scale them twice.
        scaled = self.model.parametrization != "standard"
        _check(
            not scaled or self.train.lr_width_exponent == 0,
            "train.lr_width_exponent",
            self.train.lr_width_exponent,
            f"model.parametrization {self.model.parametrization!r} scales each width's learning "
            "rates itself; accepted: 0 with it",
        )
        _check(
            not scaled or not self.train.size_rule,
            "train.size_rule",
            self.train.size_rule,
            f"model.parametrization {self.model.parametrization!r} scales each width's learning "
            "rates itself; accepted: '' with it",
        )
        # peft's adapters get one learning rate and a standard init: a LoRA fine-tune cannot
        # follow muP's per-group rules (full fine-tuning keeps the model's multipliers).
        _check(
            not scaled or not self.downstream.task or "lora" not in self.downstream.methods,
            "downstream.methods",
            list(self.downstream.methods),
            "LoRA adapters cannot follow the per-group rules of model.parametrization "
            f"{self.model.parametrization!r}; accepted: ['full'] with it",
        )

        # Ranked classification scores each choice by a causal LM's log-likelihood; a masked
        # LM gives none, and a corpus of token ids without a tokenizer cannot encode the text.
        _check(
            not self.eval.tasks or self.model.arch in ("llama", "gpt2"),
            "eval.tasks",
            list(self.eval.tasks),
            f"task scoring needs a causal LM; model.arch {self.model.arch!r} is a masked LM "
            "(accepted: llama or gpt2 with [eval], or no eval.tasks)",
        )
        _check(
            not self.eval.tasks or not self.data.vocab_size,
            "eval.tasks",
            list(self.eval.tasks),
            "task text needs the corpus's tokenizer; data.vocab_size says the corpus is token "
            "ids without one (accepted: data.tokenizer naming the tokenizer the ids come from)",
        )

    @property
    def results_path(self) -> Path:
        return Path(self.execution.results_dir) / self.name


# --- generic conversion from plain data -------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a table with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    """Convert a TOML value to the annotated type, or raise a one-line InputError."""

    def bad() -> InputError:
        return InputError(f"{source}: {where} = {value!r} is not {_type_name(tp)}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):  # `X | None`, or `int | Literal["auto"]`
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in (a for a in typing.get_args(tp) if a is not type(None)):
            try:
                return _convert(value, arg, where, source)
            except InputError:
                continue
        raise bad()
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad()
        return value
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return build_section(tp, value, where, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        # 1e5 is a float in TOML; accept it where it is a whole number.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise bad()
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        if not math.isfinite(value):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported settings type {tp!r} at {where}")  # a bug, not bad input


def build_section(cls: type, data: dict[str, Any], where: str, source: str) -> Any:
    """A settings dataclass from a plain table (TOML, JSON, a job's pickle), each value checked
    against its field's type; InputError naming ``source`` and the key otherwise."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in names:
            raise InputError(
                f"{source}: unknown key '{prefix}{key}'; valid keys: {', '.join(names)}"
            )
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}", source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        raise InputError(
            f"{source}: missing key(s) {', '.join(prefix + m for m in missing)}"
        ) from e
    except ValueError as e:
        raise InputError(f"{source}: {prefix}{e}") from e


# --- loading -----------------------------------------------------------------------------------


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--train.lr=1e-3", "--grid.seeds=[0,1]"]`` -> nested dict.

    A value is read as a TOML value (numbers, booleans, lists, quoted strings); anything that is
    not valid TOML is taken as a bare string, so ``--data.corpus=my.txt`` works unquoted.
    """
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise InputError(f"override {arg!r}: expected --section.field=value")
        key, raw = arg[2:].split("=", 1)
        parts = key.split(".")
        if not all(parts):
            raise InputError(f"override {arg!r}: expected --section.field=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"override {arg!r}: '{p}' is not a section")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment TOML, apply ``--section.field=value`` overrides and validate.

    Raises
    ------
    InputError
        Missing or malformed file, unknown key, wrong type or out-of-range value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such experiment file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: invalid TOML: {e}") from None
    data.setdefault("name", path.stem)
    source = str(path)
    if overrides:
        data = _merge(data, parse_overrides(overrides))
        source = f"{path} (with overrides {' '.join(overrides)})"
    exp: ExperimentConfig = build_section(ExperimentConfig, data, "", source)
    # Imported here, not with this module: the 20 modules that import the settings do not
    # load the synthetic sources (and numpy) for a corpus name.
    from harness import synthetic

    if synthetic.is_synthetic(exp.data.corpus):
        # The spec only (cheap): a bad one stops `harness plan` too, not only `harness run`.
        with naming(source):
            synthetic.spec_for(exp.data.corpus)
    return exp


def to_dict(obj: Any, *, identity: bool = False) -> Any:
    """A settings dataclass as plain JSON data (tuples become lists).

    ``identity=True`` gives a run's identity: fields added after the first schema (`_added`)
    are left out while they hold their defaults, so adding a setting never renames existing
    runs.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), identity=identity)
            for f in dataclasses.fields(obj)
            if not (
                identity
                and f.metadata.get("identity") == "if_set"
                and getattr(obj, f.name) == f.default
            )
        }
    if isinstance(obj, list | tuple):
        return [to_dict(v, identity=identity) for v in obj]
    return obj


def identity_dict(obj: Any) -> Any:
    """`to_dict(obj, identity=True)`: the settings that name a run (RunSpec.run_id)."""
    return to_dict(obj, identity=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("--"):
        print(
            "usage: python -m harness.config EXP.toml [--section.field=value ...]", file=sys.stderr
        )
        return 2
    try:
        exp = load_experiment(argv[0], argv[1:])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(to_dict(exp), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
