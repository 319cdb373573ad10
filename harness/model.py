"""Model shapes, exact parameter counts, FLOP counts, and the transformers model they describe.

A `ModelShape` is everything that fixes the parameter count of a decoder-only transformer LM:
Llama-style (RMSNorm, RoPE, SwiGLU, no biases; the default) or GPT-2 (LayerNorm, learned
positions, GELU MLP, biases). From a shape this module

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

if TYPE_CHECKING:  # pragma: no cover - for annotations only; torch stays a lazy import
    import transformers

__all__ = [
    "Arch",
    "FlopsPerToken",
    "ModelShape",
    "ParamCounts",
    "build_model",
    "count_params",
    "default_ffn_dim",
    "flops_per_token",
    "shape_for_params",
]

Arch = Literal["llama", "gpt2"]
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
    """The shape of a decoder-only transformer LM; it fixes the parameter count.

    Attributes
    ----------
    arch : {"llama", "gpt2"}
        "llama": RMSNorm, RoPE, SwiGLU MLP, no biases. "gpt2": LayerNorm, learned positions,
        GELU MLP, biases.
    n_layer : int
        Transformer blocks.
    n_embd : int
        Residual width d_model (= d_attn = n_head * head_dim).
    n_head : int
        Attention heads (as many key/value heads: no grouped-query attention).
    vocab_size : int
        Token vocabulary size.
    seq_len : int
        Context length n_ctx in tokens.
    ffn_dim : int
        MLP hidden width d_ff (llama: the SwiGLU intermediate_size; gpt2: usually 4 * n_embd).
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
        if self.arch == "llama" and self.head_dim % 2 != 0:
            # RoPE rotates pairs of channels within each head.
            raise InputError(
                f"n_embd / n_head = {self.head_dim} (n_embd={self.n_embd}, n_head={self.n_head}) "
                f"is odd: llama's rotary embeddings need an even head dimension; change n_head."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head, n_embd // n_head."""
        return self.n_embd // self.n_head


def default_ffn_dim(arch: Arch, n_embd: int) -> int:
    """The usual MLP hidden width for `arch` at width `n_embd`.

    gpt2: 4 * n_embd (two matrices, 8 d^2 per layer). llama: SwiGLU has three matrices, so
    Llama (Touvron et al. 2023) uses 2/3 * 4d = 8/3 * d, rounded up (here to a multiple of 16),
    which keeps ~8 d^2 MLP and ~12 d^2 parameters per layer, as GPT-2.

    Raises
    ------
    ValueError
        If `arch` is unknown or `n_embd` is not a positive integer.
    """
    _check_positive_int("n_embd", n_embd)
    if arch == "gpt2":
        return 4 * n_embd
    if arch == "llama":
        # ceil(8/3 d / 16) * 16 == ceil(d / 6) * 16, in exact integer arithmetic.
        return -(-n_embd // 6) * 16
    raise InputError(f"arch={arch!r} is invalid: use one of {', '.join(map(repr, ARCHS))}.")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a built model.

    Attributes
    ----------
    non_embedding : int
        Kaplan et al. 2020's N: everything except the token (and gpt2 position) embeddings and
        an untied lm_head. Norms and biases are included.
    total : int
        Every parameter of the built model, tied weights counted once.
    embedding : int
        Token (+ gpt2 position) embeddings, + the lm_head when untied. total - non_embedding.
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
    else:
        per_layer = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        non_embedding = L * per_layer + 2 * d
        embedding = V * d + shape.seq_len * d
    if not shape.tie_embeddings:
        embedding += V * d  # lm_head, bias-free in both architectures
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
    - per layer, MLP: 2 d f per matrix: 2 matrices (4 d f) for gpt2, 3 (6 d f) for SwiGLU
    - final logits: 2 d V

    Norms, biases, activations and gpt2's position-embedding add are left out, as there.
    """
    n_params = count_params(shape).non_embedding
    d, f, L = shape.n_embd, shape.ffn_dim, shape.n_layer
    V, n_ctx, h = shape.vocab_size, shape.seq_len, shape.n_head

    six_n = 6.0 * n_params
    # Kaplan 2020 table 1: d_attn = n_head * head_dim = n_embd here.
    kaplan = 3.0 * (2.0 * n_params + 2.0 * L * n_ctx * d)

    embeddings = 2 * V * d
    attention = 6 * d * d + 2 * n_ctx * d + 3 * h * n_ctx + 2 * n_ctx * d + 2 * d * d
    n_mlp_matrices = 3 if shape.arch == "llama" else 2
    mlp = n_mlp_matrices * 2 * d * f
    logits = 2 * d * V
    forward = embeddings + L * (attention + mlp) + logits
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
    if arch == "llama" and head_dim % 2 != 0:
        raise InputError(
            f"head_dim={head_dim} is odd: llama's rotary embeddings need an even head dimension."
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


def build_model(shape: ModelShape) -> transformers.PreTrainedModel:
    """Build the randomly initialised `transformers` causal LM of `shape`, with no download.

    llama: `LlamaForCausalLM` (RMSNorm, RoPE theta 1e4, SwiGLU, bias-free, n_head key/value
    heads). gpt2: `GPT2LMHeadModel`. Both: SDPA attention, dropout 0, use_cache False, and
    bos = eos = vocab_size - 1 (GPT-2's own 50256 at its vocabulary of 50257; GPT2Config's
    default would fall outside a smaller vocabulary). pad_token_id stays None: Llama passes it
    to `nn.Embedding(padding_idx=...)`, which zeroes that row and blocks its gradient, and
    training packs sequences without padding. Initialisation follows transformers (normal,
    std 0.02); seed torch before calling for a reproducible model.

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
    config: transformers.PretrainedConfig
    model_cls: type[transformers.PreTrainedModel]
    if shape.arch == "llama":
        config = transformers.LlamaConfig(
            hidden_size=shape.n_embd,
            intermediate_size=shape.ffn_dim,
            num_hidden_layers=shape.n_layer,
            num_attention_heads=shape.n_head,
            num_key_value_heads=shape.n_head,
            max_position_embeddings=shape.seq_len,
            hidden_act="silu",
            rms_norm_eps=_RMS_NORM_EPS,
            rope_parameters={"rope_type": "default", "rope_theta": _ROPE_THETA},
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            **common,
        )
        model_cls = transformers.LlamaForCausalLM
    else:
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
    # _from_config builds from a config only (no hub access) and takes the attention kernel.
    return model_cls._from_config(config, attn_implementation="sdpa")
