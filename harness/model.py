"""Model shapes, exact parameter counts, FLOP counts, and the transformers model they describe.

A `ModelShape` is everything that fixes the parameter count of a transformer LM: a causal
decoder, Llama-style (RMSNorm, RoPE, SwiGLU, no biases; the default) or GPT-2 (LayerNorm, learned
positions, GELU MLP, biases), or a BERT masked-LM encoder (Devlin et al. 2019: post-LayerNorm,
learned positions, GELU MLP, biases, an MLM head). From a shape this module

- counts parameters in closed form (`count_params`), equal to the built model's count exactly;
  `non_embedding` is Kaplan et al. 2020's N, the N of every scaling law in this harness;
- counts training FLOPs per token three ways (`flops_per_token`): 6N (Kaplan 2020, Chinchilla's
  C ≈ 6ND), Kaplan 2020 table 1 (6N plus the attention-context term), and Chinchilla (Hoffmann
  et al. 2022) appendix F (every matmul, embeddings and logits included);
- picks a shape for a target N at a fixed aspect ratio n_embd / n_layer (`shape_for_params`);
- builds the `transformers` model from a config, with no download (`build_model`).

Only `build_model` needs torch and transformers; they are imported inside it, so the counting
functions work where only the analysis dependencies are installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from harness.errors import InputError
from harness.flops import training_flops

if TYPE_CHECKING:  # pragma: no cover - for annotations only; torch stays a lazy import
    import transformers

    from harness.parametrization import Parametrization

__all__ = [
    "Arch",
    "FlopsPerToken",
    "ModelShape",
    "ParamCounts",
    "build_model",
    "count_params",
    "default_ffn_dim",
    "enable_activation_checkpointing",
    "flops_per_token",
    "shape_for_params",
]

Arch = Literal["llama", "gpt2", "bert", "modernbert"]
ARCHS: tuple[str, ...] = get_args(Arch)

# Small fixed settings of the built models (not part of the shape: they change no count).
_RMS_NORM_EPS = 1e-5
_LAYER_NORM_EPS = 1e-5
_ROPE_THETA = 10_000.0
_INIT_STD = 0.02


def _check_positive_number(name: str, value: object, what: str) -> None:
    """A finite number > 0 (not a bool), or InputError naming it and saying what it is."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InputError(f"{name}={value!r} is invalid: it must be a positive number{what}.")


def _check_positive_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a layer count is a bug upstream, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r} is invalid: it must be a positive integer.")


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The shape of a transformer LM; it fixes the parameter count.

    Attributes
    ----------
    arch : {"llama", "gpt2", "bert", "modernbert"}
        "llama": RMSNorm, RoPE, SwiGLU MLP, no biases. "gpt2": LayerNorm, learned positions,
        GELU MLP, biases. "bert": a bidirectional masked-LM encoder (BertForMaskedLM):
        post-LayerNorm, learned positions, GELU MLP, biases; any head_dim (no rotary).
        "modernbert": a bidirectional masked-LM encoder (ModernBertForMaskedLM; Warner et al.
        2024): pre-LayerNorm (no norm biases), RoPE, GeGLU MLP, bias-free but for the output
        bias.
    n_layer : int
        Transformer blocks.
    n_embd : int
        Residual width d_model (= d_attn = n_head * head_dim).
    n_head : int
        Attention heads (as many key/value heads: no grouped-query attention).
    vocab_size : int
        Token vocabulary size (bert: the tokenizer's plus its [MASK] token, the last id).
    seq_len : int
        Context length n_ctx in tokens.
    ffn_dim : int
        MLP hidden width d_ff (llama: the SwiGLU intermediate_size; gpt2 and bert: usually
        4 * n_embd).
        `default_ffn_dim` gives the usual value.
    tie_embeddings : bool
        Share the token embedding with the output projection (lm_head).
    """

    arch: Arch
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    seq_len: int
    ffn_dim: int
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(
                f"arch={self.arch!r} is invalid: use one of {', '.join(map(repr, ARCHS))}."
            )
        for name in ("n_layer", "n_embd", "n_head", "vocab_size", "seq_len", "ffn_dim"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.tie_embeddings, bool):
            raise InputError(
                f"tie_embeddings={self.tie_embeddings!r} is invalid: use true or false."
            )
        if self.n_embd % self.n_head != 0:
            raise InputError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: choose n_head "
                f"among the divisors of n_embd, or n_embd a multiple of n_head."
            )
        if self.arch in ("llama", "modernbert") and self.head_dim % 2 != 0:
            # RoPE rotates pairs of channels within each head.
            raise InputError(
                f"n_embd / n_head = {self.head_dim} (n_embd={self.n_embd}, n_head={self.n_head}) "
                f"is odd: {self.arch}'s rotary embeddings need an even head dimension; change "
                f"n_head."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head, n_embd // n_head."""
        return self.n_embd // self.n_head


def default_ffn_dim(arch: Arch, n_embd: int) -> int:
    """The usual MLP hidden width for `arch` at width `n_embd`.

    gpt2 and bert: 4 * n_embd (two matrices, 8 d^2 per layer; BERT-base's 3072 at 768).
    llama: SwiGLU has three matrices, so Llama (Touvron et al. 2023) uses 2/3 * 4d = 8/3 * d,
    rounded up (here to a multiple of 16), which keeps ~8 d^2 MLP and ~12 d^2 parameters per
    layer, as GPT-2.

    Raises
    ------
    ValueError
        If `arch` is unknown or `n_embd` is not a positive integer.
    """
    _check_positive_int("n_embd", n_embd)
    if arch in ("gpt2", "bert"):
        return 4 * n_embd
    if arch in ("llama", "modernbert"):  # modernbert's GeGLU has three matrices too
        # ceil(8/3 d / 16) * 16 == ceil(d / 6) * 16, in exact integer arithmetic.
        return -(-n_embd // 6) * 16
    raise InputError(f"arch={arch!r} is invalid: use one of {', '.join(map(repr, ARCHS))}.")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a built model.

    Attributes
    ----------
    non_embedding : int
        Kaplan et al. 2020's N: everything except the embedding tables (token, and gpt2/bert
        position and bert's one-row token-type table), the output projection when untied, and
        bert's output bias. Norms and biases are included, as is bert's MLM head transform.
    total : int
        Every parameter of the built model, tied weights counted once.
    embedding : int
        The embedding tables, + the lm_head when untied (+ bert's output bias). total -
        non_embedding.
    """

    non_embedding: int
    total: int
    embedding: int


def count_params(shape: ModelShape) -> ParamCounts:
    """Count the parameters of `build_model(shape)` in closed form, without torch.

    With d = n_embd, f = ffn_dim, L = n_layer, V = vocab_size:

    - llama, per block: q, k, v, o (4 d^2, no biases) + gate, up, down (3 d f) + 2 RMSNorm
      weights (2 d); plus the final norm (d). Embedding V d (+ V d untied lm_head). RoPE has
      no parameters.
    - gpt2, per block: c_attn (3 d^2 + 3 d) + c_proj (d^2 + d) + c_fc (d f + f) + c_proj
      (f d + d) + 2 LayerNorms (4 d); plus ln_f (2 d). Embeddings V d + n_ctx d (+ V d untied
      lm_head, which has no bias).
    - bert, per block: query, key, value, output (4 d^2 + 4 d) + attention LayerNorm (2 d) +
      intermediate (d f + f) + output (f d + d) + output LayerNorm (2 d); plus the embedding
      LayerNorm (2 d) and the MLM head transform, dense + GELU + LayerNorm (d^2 + d + 2 d).
      Embeddings V d + n_ctx d + d (token type, one row) + the output bias V (+ V d untied).
    - modernbert, per block: Wqkv + Wo (4 d^2) + Wi (d x 2f) + Wo (f d) + two bias-free
      LayerNorms (2 d), less block 0's attention norm (d; the embedding norm precedes it);
      plus the embedding norm (d), the final norm (d) and the head transform, bias-free dense +
      norm (d^2 + d). Embeddings V d + the output bias V (+ V d untied); no position table.

    What counts as N for bert, consistently with llama/gpt2: every norm and bias inside the
    network counts (as gpt2's ln_f), and so does the head transform, a d x d layer every token
    passes through, like a block's matrices. Everything sized by the vocabulary or the context
    is embedding: the tables (Kaplan excludes position embeddings too), the one-row
    token-type table (an embedding table; here a learned constant), and the decoder's
    vocabulary-sized output bias, which belongs to the output projection (unembedding).

    GPT-2 small (L=12, d=768, V=50257, n_ctx=1024, tied) gives 85,056,000 and 124,439,808.

    Returns
    -------
    ParamCounts
    """
    d, f, L, V = shape.n_embd, shape.ffn_dim, shape.n_layer, shape.vocab_size
    if shape.arch == "llama":
        per_layer = 4 * d * d + 3 * d * f + 2 * d
        non_embedding = L * per_layer + d
        embedding = V * d
    elif shape.arch == "gpt2":
        per_layer = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        non_embedding = L * per_layer + 2 * d
        embedding = V * d + shape.seq_len * d
    elif shape.arch == "bert":
        per_layer = (4 * d * d + 4 * d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        non_embedding = L * per_layer + 2 * d + (d * d + d + 2 * d)
        embedding = V * d + shape.seq_len * d + d + V
    else:  # modernbert: block 0 has no attention norm (the embedding norm precedes it)
        per_layer = 4 * d * d + 3 * d * f + 2 * d
        non_embedding = L * per_layer - d + d + d + (d * d + d)
        embedding = V * d + V
    if not shape.tie_embeddings:
        embedding += V * d  # the output matrix (its bias, bert's only, is counted above)
    return ParamCounts(
        non_embedding=non_embedding, total=non_embedding + embedding, embedding=embedding
    )


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token (forward + backward = 3 x forward), three conventions.

    Attributes
    ----------
    six_n : float
        6 N with N = non-embedding parameters: Kaplan 2020 (C ≈ 6 N per token) and Chinchilla's
        C ≈ 6 N D. The `flops` column of runs.csv is six_n * D.
    kaplan : float
        6 (N + n_layer n_ctx d_attn): Kaplan 2020 table 1, C_forward = 2 N + 2 n_layer n_ctx
        d_attn, times 3.
    total : float
        Chinchilla 2022 appendix F: every matmul including embeddings, attention logits and the
        output logits, plus softmax, times 3. The `flops_total` column is total * D.
    """

    six_n: float
    kaplan: float
    total: float


def flops_per_token(shape: ModelShape) -> FlopsPerToken:
    """Training FLOPs per token of `shape`, in the three conventions of `FlopsPerToken`.

    A multiply-add is 2 FLOPs. The backward pass costs twice the forward (Kaplan 2020 sec 2.1,
    Chinchilla appendix F), so training is 3 x forward. Attention terms assume full sequences
    of n_ctx = seq_len tokens and, like both papers, do not halve for the causal mask.

    Chinchilla appendix F, per token (their per-sequence counts divided by seq_len), with
    d = n_embd = key_size * num_heads, f = ffn_dim, V = vocab_size, n = seq_len, h = n_head:

    - embeddings: 2 V d
    - per layer, attention: QKV 6 d^2; QK^T logits 2 n d; softmax 3 h n; softmax @ V (their
      "reduction") 2 n d; output projection 2 d^2
    - per layer, MLP: 2 d f per matrix: 2 matrices (4 d f) for gpt2 and bert, 3 (6 d f) for
      SwiGLU and GeGLU (modernbert)
    - bert and modernbert only, the MLM head transform: 2 d^2
    - final logits: 2 d V

    Norms, biases, activations and gpt2's position-embedding add are left out, as there. For
    bert every count is per input token, masked or not: BertForMaskedLM runs the encoder, the
    head and the logits at every position (the loss then reads the masked ones), so a masked
    LM's D is its input tokens and C = 6 N D holds as for the causal models. Its attention is
    bidirectional, which the formulas (no halving for a causal mask) already assume.
    """
    n_params = count_params(shape).non_embedding
    d, f, L = shape.n_embd, shape.ffn_dim, shape.n_layer
    V, n_ctx, h = shape.vocab_size, shape.seq_len, shape.n_head

    six_n = float(training_flops(n_params, 1))
    # Kaplan 2020 table 1: d_attn = n_head * head_dim = n_embd here.
    kaplan = 3.0 * (2.0 * n_params + 2.0 * L * n_ctx * d)

    embeddings = 2 * V * d
    attention = 6 * d * d + 2 * n_ctx * d + 3 * h * n_ctx + 2 * n_ctx * d + 2 * d * d
    n_mlp_matrices = 3 if shape.arch in ("llama", "modernbert") else 2
    mlp = n_mlp_matrices * 2 * d * f
    logits = 2 * d * V
    head = 2 * d * d if shape.arch in ("bert", "modernbert") else 0
    forward = embeddings + L * (attention + mlp) + head + logits
    return FlopsPerToken(six_n=six_n, kaplan=kaplan, total=3.0 * forward)


# "Nearby" shapes (Kaplan 2020 sec 3.1: at fixed N, loss changes little while n_embd / n_layer
# stays within a few x of its optimum). A shape with n_layer = L is a candidate when its aspect
# ratio is within a factor (1 + _ASPECT_SLACK / L) of the setting. The window is wide for the
# smallest models, where n_embd moves in coarse head_dim steps and only a few layers exist, and
# narrows as 1/L, because at depth L the other n_layer values already fill in N finely.
_ASPECT_SLACK = 1.5


def shape_for_params(
    target_n_params: int,
    *,
    arch: Arch = "llama",
    aspect_ratio: float = 32.0,
    head_dim: int = 16,
    vocab_size: int,
    seq_len: int,
    tie_embeddings: bool = True,
) -> ModelShape:
    """The shape whose non-embedding parameter count is nearest `target_n_params`.

    Kaplan et al. 2020 (sec 3.1) find loss depends only weakly on shape at fixed N, so sizes in
    a grid keep one aspect ratio n_embd / n_layer. With N ≈ 12 n_layer d^2 and n_layer =
    d / aspect_ratio, the ideal width is d = (N aspect_ratio / 12)^(1/3), n_layer = d /
    aspect_ratio. Rounding both to integers, with n_embd a multiple of head_dim (n_head =
    n_embd // head_dim), misses N by up to ~2x at small sizes, so the search counts nearby
    shapes exactly (`count_params`, MLP width `default_ffn_dim`): every n_layer >= 1 with the
    n_embd whose ratio n_embd / n_layer is within a factor 1 + 1.5 / n_layer of aspect_ratio
    (plus the multiples of head_dim just outside). It returns the one nearest the target in
    log N; a tie goes to the one nearest the aspect ratio. The candidates do not depend on the
    target, so N grows monotonically with it.

    N is then within ~1% of the target at 1e8, ~5% at 1e7, ~25% from ~5e4 up; near 1e4
    (aspect 32, head_dim 16) the nearest shapes are 1 layer of width 16 or 32, up to ~1.4x
    away. The aspect ratio is within ~1.4x of the setting from n_layer = 4 up, within 2.5x
    below.

    Parameters
    ----------
    target_n_params : int
        Target non-embedding parameter count N.
    arch, vocab_size, seq_len, tie_embeddings
        Passed to `ModelShape` (vocab_size and seq_len do not change N).
    aspect_ratio : float
        n_embd / n_layer to aim for.
    head_dim : int
        Width of one attention head; n_embd is a multiple of it.

    Returns
    -------
    ModelShape

    Raises
    ------
    ValueError
        If an argument is out of range, or the target is below the smallest model
        (one layer of width head_dim).
    """
    _check_positive_number("target_n_params", target_n_params, " of non-embedding parameters")
    _check_positive_number(
        "aspect_ratio", aspect_ratio, " (n_embd / n_layer; Kaplan 2020 used 10..200)"
    )
    _check_positive_int("head_dim", head_dim)
    if arch in ("llama", "modernbert") and head_dim % 2 != 0:
        raise InputError(
            f"head_dim={head_dim} is odd: {arch}'s rotary embeddings need an even head dimension."
        )

    def make(n_layer: int, n_embd: int) -> ModelShape:
        return ModelShape(
            arch=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_embd // head_dim,
            vocab_size=vocab_size,
            seq_len=seq_len,
            ffn_dim=default_ffn_dim(arch, n_embd),
            tie_embeddings=tie_embeddings,
        )

    smallest = count_params(make(1, head_dim)).non_embedding
    if target_n_params < smallest:
        raise InputError(
            f"target_n_params={target_n_params:g} is below the smallest {arch} model with "
            f"head_dim={head_dim} (1 layer of width {head_dim}: N={smallest}): raise the target "
            f"or lower head_dim."
        )

    # The candidate set does not depend on the target, so the chosen N never decreases as the
    # target grows. Walk n_layer up from 1; the window's smallest N grows with n_layer, so stop
    # once it is farther above the target than the best candidate so far.
    log_target = math.log(target_n_params)
    best: tuple[float, float, int, int] | None = None  # (|log N/target|, |log aspect err|, L, d)
    n_layer = 1
    while True:
        slack = 1.0 + _ASPECT_SLACK / n_layer
        lo_k = max(1, math.floor(aspect_ratio * n_layer / slack / head_dim))
        hi_k = max(lo_k, math.ceil(aspect_ratio * n_layer * slack / head_dim))
        if n_layer == 1:
            lo_k = 1  # the smallest model is always a candidate
        smallest_here = count_params(make(n_layer, lo_k * head_dim)).non_embedding
        if best is not None and math.log(smallest_here) - log_target > best[0]:
            break
        for k in range(lo_k, hi_k + 1):
            n_embd = k * head_dim
            n = count_params(make(n_layer, n_embd)).non_embedding
            key = (
                abs(math.log(n) - log_target),
                abs(math.log(n_embd / n_layer / aspect_ratio)),
                n_layer,
                n_embd,
            )
            if best is None or key < best:
                best = key
        n_layer += 1
    assert best is not None  # n_layer = 1 always has a candidate
    _, _, n_layer, n_embd = best
    return make(n_layer, n_embd)


def enable_activation_checkpointing(model: transformers.PreTrainedModel) -> None:
    """Make each block's activations again in its backward pass instead of keeping them:
    transformers' per-block checkpointing, non-reentrant as torch recommends (named
    `activation_checkpointing_enable` from transformers 5, `gradient_checkpointing_enable`
    before). Inside the block, so that FSDP's hooks gather a recomputed block again."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_model(
    shape: ModelShape, parametrization: Parametrization | None = None
) -> transformers.PreTrainedModel:
    """Build the randomly initialised `transformers` LM of `shape`, with no download.

    llama: `LlamaForCausalLM` (RMSNorm, RoPE theta 1e4, SwiGLU, bias-free, n_head key/value
    heads). gpt2: `GPT2LMHeadModel`. bert: `BertForMaskedLM` (no pooler, one token type,
    exact GELU, LayerNorm eps 1e-12 as BERT; the [MASK] id is vocab_size - 1, see
    `harness.objectives`). modernbert: `ModernBertForMaskedLM` (global attention in every
    block, RoPE theta 1e4, exact-GELU GeGLU, its own init: out-projections scaled by
    1/sqrt(2 L)). All: SDPA attention, dropout 0. llama and gpt2: use_cache False, and
    bos = eos = vocab_size - 1 (GPT-2's own 50256 at its vocabulary of 50257; GPT2Config's
    default would fall outside a smaller vocabulary). pad_token_id stays None: Llama passes it
    to `nn.Embedding(padding_idx=...)`, which zeroes that row and blocks its gradient, and
    training packs sequences without padding. Initialisation follows transformers (normal,
    std 0.02); seed torch before calling for a reproducible model.

    A `harness.parametrization.Parametrization` other than the standard one re-draws the hidden
    matrices and hooks its forward multipliers (`harness.parametrization.apply`); load a run's
    weights into a model built with the run's parametrization.

    The parameter count equals `count_params(shape).total`. Call inside
    ``with torch.device("meta"):`` to inspect a model without allocating it.
    """
    import transformers  # lazy: the counting functions must work without torch

    special_id = shape.vocab_size - 1
    common: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        tie_word_embeddings=shape.tie_embeddings,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=None,
        use_cache=False,
        initializer_range=_INIT_STD,
    )
    # The shape in the names Llama, BERT and ModernBERT configs share (GPT-2's are its own).
    sizes: dict[str, Any] = dict(
        hidden_size=shape.n_embd,
        intermediate_size=shape.ffn_dim,
        num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head,
        max_position_embeddings=shape.seq_len,
    )
    # Encoders: no padding and no special token but [MASK] (BertConfig's default pad id 0
    # would zero a real token's embedding row and block its gradient); training packs
    # sequences without padding.
    encoder: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        tie_word_embeddings=shape.tie_embeddings,
        pad_token_id=None,
        initializer_range=_INIT_STD,
        **sizes,
    )
    config: transformers.PretrainedConfig
    model_cls: type[transformers.PreTrainedModel]
    if shape.arch == "llama":
        config = transformers.LlamaConfig(
            num_key_value_heads=shape.n_head,
            hidden_act="silu",
            rms_norm_eps=_RMS_NORM_EPS,
            rope_parameters={"rope_type": "default", "rope_theta": _ROPE_THETA},
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            **sizes,
            **common,
        )
        model_cls = transformers.LlamaForCausalLM
    elif shape.arch == "gpt2":
        config = transformers.GPT2Config(
            n_embd=shape.n_embd,
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_inner=shape.ffn_dim,
            n_positions=shape.seq_len,
            activation_function="gelu_new",
            layer_norm_epsilon=_LAYER_NORM_EPS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            summary_first_dropout=0.0,
            **common,
        )
        model_cls = transformers.GPT2LMHeadModel
    elif shape.arch == "bert":
        config = transformers.BertConfig(
            # One token type: training packs plain text, never sentence pairs.
            type_vocab_size=1,
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            is_decoder=False,  # bidirectional self-attention
            use_cache=False,
            **encoder,
        )
        model_cls = transformers.BertForMaskedLM
    elif shape.arch == "modernbert":
        config = transformers.ModernBertConfig(
            # Global attention in every block: ModernBERT's local (sliding) blocks save compute
            # at long contexts only; RoPE theta 1e4 as llama here (ModernBERT's 1.6e5 is for
            # its 8192-token context).
            layer_types=["full_attention"] * shape.n_layer,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": _ROPE_THETA}},
            hidden_activation="gelu",
            classifier_activation="gelu",
            norm_eps=_LAYER_NORM_EPS,
            embedding_dropout=0.0,
            attention_dropout=0.0,
            mlp_dropout=0.0,
            bos_token_id=None,
            eos_token_id=None,
            cls_token_id=None,
            sep_token_id=None,
            **encoder,
        )
        model_cls = transformers.ModernBertForMaskedLM
    # _from_config builds from a config only (no hub access) and takes the attention kernel.
    model = model_cls._from_config(config, attn_implementation="sdpa")
    if shape.arch == "bert" and not shape.tie_embeddings:
        # transformers 5 drops all of BertForMaskedLM's ties when tie_word_embeddings is False,
        # also the decoder's bias to `predictions.bias`, which then sits unused beside a second
        # bias. Untying concerns the matrix only: share the one output bias again.
        head = model.cls.predictions
        head.decoder.bias = head.bias
    if parametrization is not None:
        from harness.parametrization import apply

        apply(model, shape, parametrization)
    return model
