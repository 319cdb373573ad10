"""Parametrizations: how initialisation, learning rates, Adam's epsilon and the forward
multipliers scale with a model's width and depth, so that hyperparameters tuned on a small
model stay good on a large one.

- ``standard``: every width and depth alike (transformers' init, std 0.02; one learning rate;
  attention logits scaled by 1/sqrt(d_head)). The harness's width rule ``train.lr_width_exponent``
  scales the one learning rate.
- ``mup``: the maximal update parametrization (Yang et al. 2022, "Tensor Programs V", table 3),
  in the formulation of Dey, Anthony & Hestness 2024 ("The practitioner's guide to the maximal
  update parameterization", table 1; EleutherAI/nanoGPT-mup), with the Adam epsilon rule of
  Dey et al. 2025 (eq. 40). With m_N = n_embd / base_width:

  ====================  ==================  =========================================
  what                  standard            mup
  ====================  ==================  =========================================
  hidden init std       sigma               sigma / sqrt(m_N)
  hidden Adam lr        eta                 eta / m_N
  Adam epsilon          eps                 eps / m_N (every parameter)
  embedding, norms      sigma, eta          sigma, eta (unchanged)
  input embedding       x W_emb             alpha_in x W_emb
  output logits         x W_out^T           alpha_out x W_out^T / m_N
  attention logits      q.k / sqrt(d_head)  q.k sqrt(d_base) / d_head
  ====================  ==================  =========================================

  The attention rule is Tensor Programs V's 1/d_head with its tunable multiplier set to
  sqrt(d_base), the base shape's head width (model.head_dim): at that head width the scale is
  the standard 1/sqrt(d_head), and it falls as 1/d_head where heads widen. (The muP guide's
  plain 1/d_head, at the harness's 16-wide heads, would be a quarter of the standard scale at
  every width; results/transfer_mup/README.md measures what that costs.)

- ``completep``: muP plus depth (Dey et al. 2025, "Don't be lazy: CompleteP enables
  compute-efficient deep transformers", table 1, alpha = 1). With m_L = n_layer / base_depth,
  each residual branch (attention, MLP) is multiplied by m_L^-1 before it joins the residual
  stream; hidden learning rates scale by m_L^(alpha - 1) = 1, the Adam epsilon of parameters
  inside the blocks by m_L^-1, and the weight decay of hidden matrices by m_N (AdamW's decay is
  multiplied by the learning rate, so lr x wd stays width-independent).

"Hidden" matrices are every weight matrix but the embedding and the output projection: the
attention and MLP projections, and ModernBERT's head transform. The base values (sigma = 0.02,
eta = train.lr, eps = 1e-8, the weight decay) are the base shape's, where every factor is 1: a
learning rate tuned there is carried to other shapes by the rules.

The rules (`Parametrization`, `group_rules`) are plain arithmetic; `apply` and `param_groups`
act on a built transformers model and import torch only when called.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, get_args

from harness.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch stays a lazy import
    import torch


class ModelShape(Protocol):
    """What a parametrization reads of a shape (`harness.model.ModelShape` has it; harness.model
    builds models with a parametrization, so this module does not import it)."""

    arch: str
    n_layer: int
    n_embd: int

    @property
    def head_dim(self) -> int: ...


__all__ = [
    "ARCHS_SUPPORTED",
    "GroupRule",
    "KINDS",
    "Parametrization",
    "STANDARD",
    "apply",
    "blocks",
    "classify",
    "embedding_output",
    "group_rules",
    "param_groups",
    "residual_branches",
]

Kind = Literal["standard", "mup", "completep"]
KINDS: tuple[str, ...] = get_args(Kind)

BASE_INIT_STD = 0.02
"""sigma: the init std of the base shape (transformers' initializer_range, `harness.model`)."""
BASE_ADAM_EPS = 1e-8
"""eps: torch's AdamW default, the harness's Adam epsilon under the standard parametrization."""

# Where each architecture's hooks go, by module name: the embedding's output (ModernBERT's after
# its LayerNorm, which would undo a scale before it); inside each block, the query projection
# (and the share of its output that is the query: ModernBERT fuses q, k and v in one matrix) and
# the two residual branches' output projections. Both are pre-LN (CompleteP's residual rule
# assumes it); BERT (post-LN) and GPT-2 are not built here.
_SITES: dict[str, tuple[str, str, int, tuple[str, str]]] = {
    "llama": ("model.embed_tokens", "self_attn.q_proj", 1, ("self_attn.o_proj", "mlp.down_proj")),
    "modernbert": ("model.embeddings", "attn.Wqkv", 3, ("attn.Wo", "mlp.Wo")),
}
ARCHS_SUPPORTED: tuple[str, ...] = tuple(_SITES)


def _ratio_ok(a: int, b: int) -> bool:
    """One of a, b divides the other (the multiplier is an integer or its inverse)."""
    return max(a, b) % min(a, b) == 0


@dataclass(frozen=True, kw_only=True)
class Parametrization:
    """A parametrization and the base shape its hyperparameters were tuned at.

    Attributes
    ----------
    kind : {"standard", "mup", "completep"}
    base_width : int
        n_embd of the base shape (muP, CompleteP); 0 for standard.
    base_depth : int
        n_layer of the base shape (CompleteP); 0 otherwise.
    base_head_dim : int
        The attention head width of the base shape (muP, CompleteP: the experiment's
        model.head_dim); 0 for standard. Attention logits are q.k sqrt(base_head_dim) / d_head:
        1/sqrt(d_head) at the base head width, falling as 1/d_head as heads widen.
    input_multiplier, output_multiplier : float
        muP's tunable alpha_in (embedding output) and alpha_out (logits); 1 by default.
    """

    kind: Kind = "standard"
    base_width: int = 0
    base_depth: int = 0
    base_head_dim: int = 0
    input_multiplier: float = 1.0
    output_multiplier: float = 1.0

    def __post_init__(self) -> None:
        # Messages name the settings as [model] spells them (ModelConfig prefixes "model.").
        if self.kind not in KINDS:
            raise InputError(
                f"parametrization = {self.kind!r}: accepted: {', '.join(map(repr, KINDS))}"
            )
        for name in ("base_width", "base_depth", "base_head_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} = {v!r}: accepted: an integer >= 0")
        for name in ("input_multiplier", "output_multiplier"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise InputError(f"{name} = {v!r}: accepted: a number > 0")
        if self.kind == "standard":
            extra = [
                n
                for n, v in (
                    ("base_width", self.base_width),
                    ("base_depth", self.base_depth),
                    ("base_head_dim", self.base_head_dim),
                    ("input_multiplier", self.input_multiplier - 1.0),
                    ("output_multiplier", self.output_multiplier - 1.0),
                )
                if v
            ]
            if extra:
                raise InputError(
                    f"{extra[0]} = {getattr(self, extra[0])!r}: the standard parametrization "
                    "has no base shape or multipliers; accepted: leave it unset, or set "
                    "parametrization = 'mup' or 'completep'"
                )
            return
        if self.base_width < 1:
            raise InputError(
                f"base_width = {self.base_width}: parametrization {self.kind!r} needs the "
                "width its hyperparameters are tuned at; accepted: an n_embd >= 1 (e.g. the "
                "grid's smallest)"
            )
        if self.base_head_dim < 1:
            raise InputError(
                f"base_head_dim = {self.base_head_dim}: parametrization {self.kind!r} needs the "
                "attention head width of its base shape; accepted: an integer >= 1"
            )
        if self.kind == "completep" and self.base_depth < 1:
            raise InputError(
                f"base_depth = {self.base_depth}: parametrization 'completep' needs the "
                "depth its hyperparameters are tuned at; accepted: an n_layer >= 1"
            )
        if self.kind == "mup" and self.base_depth:
            raise InputError(
                f"base_depth = {self.base_depth}: 'mup' scales width only; accepted: 0, or "
                "parametrization = 'completep' to scale depth too"
            )

    @property
    def depth_alpha(self) -> float:
        """CompleteP's alpha: residual branches scale as m_L^-alpha (1); 0 without depth rules."""
        return 1.0 if self.kind == "completep" else 0.0

    def width_multiplier(self, n_embd: int) -> float:
        """m_N = n_embd / base_width (1 under the standard parametrization)."""
        return n_embd / self.base_width if self.kind != "standard" else 1.0

    def depth_multiplier(self, n_layer: int) -> float:
        """m_L = n_layer / base_depth (1 but under CompleteP)."""
        return n_layer / self.base_depth if self.kind == "completep" else 1.0

    def check_arch(self, arch: str, prefix: str = "model.") -> None:
        """Refuse an architecture whose attention scale and residual branches the harness does
        not set (InputError; ``prefix`` names the settings' table)."""
        if self.kind != "standard" and arch not in _SITES:
            raise InputError(
                f"{prefix}parametrization = {self.kind!r}: with arch {arch!r}: accepted: "
                f"'standard', or archs {', '.join(map(repr, ARCHS_SUPPORTED))} (pre-LN models "
                "whose attention scale and residual branches the harness sets)"
            )

    def check_shape(self, shape: ModelShape, where: str) -> None:
        """Refuse a shape this parametrization cannot scale to (InputError naming `where`)."""
        if self.kind == "standard":
            return
        self.check_arch(shape.arch)
        if not _ratio_ok(shape.n_embd, self.base_width):
            raise InputError(
                f"{where}: n_embd = {shape.n_embd} against model.base_width = "
                f"{self.base_width}: the width multiplier {shape.n_embd / self.base_width:g} is "
                "not a whole ratio; accepted: a base width that divides every n_embd of the grid, "
                "or that every n_embd divides"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STANDARD = Parametrization()


class GroupRule(NamedTuple):
    """Multipliers of one kind of parameter on the base values sigma, eta, eps and the decay."""

    init_std: float
    lr: float
    eps: float
    weight_decay: float


GROUPS = ("embedding", "output", "hidden_matrix", "hidden_vector", "outer_matrix", "outer_vector")
"""Kinds of parameter: the input embedding (also the output projection when tied); an untied
output projection and its bias; matrices and vectors (norm weights, biases) inside the
transformer blocks; matrices and vectors outside them (a head transform; the final and
embedding norms)."""


def group_rules(p: Parametrization, n_embd: int, n_layer: int) -> dict[str, GroupRule]:
    """The multipliers of each kind of parameter (`GROUPS`) at width n_embd and depth n_layer.

    muP: Dey et al. 2024 table 1 (hidden init var / m_N, hidden Adam lr / m_N); eps / m_N for
    every parameter (Dey et al. 2025 eq. 40). CompleteP: Dey et al. 2025 table 1 with alpha = 1:
    inside the blocks lr x m_L^(alpha-1) and eps x m_L^-alpha, hidden weight decay x m_N.
    """
    m_n, m_l, alpha = p.width_multiplier(n_embd), p.depth_multiplier(n_layer), p.depth_alpha
    if p.kind == "standard":
        same = GroupRule(1.0, 1.0, 1.0, 1.0)
        return dict.fromkeys(GROUPS, same)
    depth_lr, depth_eps = m_l ** (alpha - 1.0), m_l**-alpha
    # Hidden weight decay x m_N is CompleteP's table 1 (AdamW multiplies the decay by the lr,
    # so lr x decay stays width-independent); the muP guide keeps the decay as it is.
    wd = m_n if p.kind == "completep" else 1.0
    return {
        "embedding": GroupRule(1.0, 1.0, 1.0 / m_n, 1.0),
        "output": GroupRule(1.0, 1.0, 1.0 / m_n, 1.0),
        "hidden_matrix": GroupRule(1.0 / math.sqrt(m_n), depth_lr / m_n, depth_eps / m_n, wd),
        "hidden_vector": GroupRule(1.0, depth_lr, depth_eps / m_n, 1.0),
        "outer_matrix": GroupRule(1.0 / math.sqrt(m_n), 1.0 / m_n, 1.0 / m_n, wd),
        "outer_vector": GroupRule(1.0, 1.0, 1.0 / m_n, 1.0),
    }


# --- on a built model (torch) ----------------------------------------------------------------


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks: the largest ModuleList (Llama's model.layers, GPT-2's
    transformer.h, BERT's encoder.layer)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def residual_branches(model: torch.nn.Module, arch: str) -> list[tuple[Any, Any]]:
    """Each block's (attention, MLP) output projections: what each adds to the residual."""
    _, _, _, (attention, mlp) = _SITES[arch]
    return [(b.get_submodule(attention), b.get_submodule(mlp)) for b in blocks(model)]


def embedding_output(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The module whose output is the embedding the blocks read (ModernBERT's after its norm):
    where alpha_in applies."""
    return model.get_submodule(_SITES[arch][0])


def classify(model: torch.nn.Module) -> dict[str, str]:
    """Each parameter's kind (`GROUPS`), by name: the input embedding's parameters are
    'embedding', the output projection's others 'output'; those inside a block are hidden, the
    rest outer; matrices are 2-D."""
    embedding = {id(p) for p in model.get_input_embeddings().parameters()}  # type: ignore[operator]
    out = model.get_output_embeddings()  # type: ignore[operator]
    output = {id(p) for p in out.parameters()} - embedding if out is not None else set()
    inside = {id(p) for block in blocks(model) for p in block.parameters()}
    kinds = {}
    for name, param in model.named_parameters():
        if id(param) in embedding:
            kinds[name] = "embedding"
        elif id(param) in output:
            kinds[name] = "output"
        else:
            where = "hidden" if id(param) in inside else "outer"
            kinds[name] = f"{where}_{'matrix' if param.dim() >= 2 else 'vector'}"
    return kinds


def apply(model: torch.nn.Module, shape: ModelShape, p: Parametrization) -> None:
    """Make a freshly built model follow ``p``: re-draw every matrix but the input embedding
    (std sigma x `GroupRule.init_std`, from torch's generator: transformers' own init scales
    some projections by depth, e.g. ModernBERT's by 1/sqrt(2 L)), and hook the forward
    multipliers: attention logits x sqrt(d_base) / d_head (the query scaled by
    sqrt(d_base / d_head), which multiplies the logits exactly as that softmax scale would),
    alpha_in on the embedding output, alpha_out / m_N on the output projection's input, and
    CompleteP's m_L^-1 on each residual branch. The hooks are part of the module, not of its
    state_dict: build the model with `harness.model.build_model` and ``p`` wherever a run's
    weights are loaded."""
    if p.kind == "standard":
        return
    import torch

    p.check_shape(shape, "model")
    rules = group_rules(p, shape.n_embd, shape.n_layer)
    kinds = classify(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # The input embedding keeps transformers' own draw (std sigma already).
            if param.dim() >= 2 and kinds[name] != "embedding":
                param.normal_(0.0, BASE_INIT_STD * rules[kinds[name]].init_std)

    def scale_output(factor: float, share: int = 1):
        def hook(_module, _inputs, output):
            if share == 1:
                return output * factor
            width = output.shape[-1] // share  # the first of `share` equal parts
            return torch.cat([output[..., :width] * factor, output[..., width:]], dim=-1)

        return hook

    _, query, share, _ = _SITES[shape.arch]
    attention = math.sqrt(p.base_head_dim / shape.head_dim)
    if attention != 1.0:
        for block in blocks(model):
            block.get_submodule(query).register_forward_hook(scale_output(attention, share))
    residual = p.depth_multiplier(shape.n_layer) ** -p.depth_alpha
    if residual != 1.0:
        for branch in residual_branches(model, shape.arch):
            for module in branch:
                module.register_forward_hook(scale_output(residual))
    if p.input_multiplier != 1.0:
        embedding_output(model, shape.arch).register_forward_hook(scale_output(p.input_multiplier))
    logit_scale = p.output_multiplier / p.width_multiplier(shape.n_embd)
    if logit_scale != 1.0:

        def scale_input(_module, inputs):
            return (inputs[0] * logit_scale, *inputs[1:])

        model.get_output_embeddings().register_forward_pre_hook(scale_input)  # type: ignore[operator]


def param_groups(
    model: torch.nn.Module, shape: ModelShape, p: Parametrization, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW's parameter groups. Weight decay on matrices only (not norms, biases or the input
    embedding), as GPT-3 and Llama. Standard: two groups, decayed and not. Otherwise a group per
    kind of parameter and decay, with ``lr_scale`` (the group's learning rate is the schedule's
    times it, `harness.train.learner.Learner.set_lr`), ``eps`` and ``weight_decay`` by
    `group_rules`."""
    embed = model.get_input_embeddings().weight  # type: ignore[operator]
    if p.kind == "standard":
        decay = [q for q in model.parameters() if q.dim() >= 2 and q is not embed]
        no_decay = [q for q in model.parameters() if q.dim() < 2 or q is embed]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    rules = group_rules(p, shape.n_embd, shape.n_layer)
    kinds = classify(model)
    groups = []
    for kind in GROUPS:
        rule = rules[kind]
        for decays in (True, False):
            params = [
                q
                for name, q in model.named_parameters()
                if kinds[name] == kind and (q.dim() >= 2 and q is not embed) == decays
            ]
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr_scale": rule.lr,
                        "eps": BASE_ADAM_EPS * rule.eps,
                        "weight_decay": weight_decay * rule.weight_decay if decays else 0.0,
                        "kind": kind,
                    }
                )
    return groups
