"""Expand an experiment into one `RunSpec` per grid point.

A run's identity is everything that changes what it computes: model shape, data and tokenizer
settings, optimisation settings, token budget and seed. ``run_id`` is a short hash of exactly
that, so running an experiment again finds the runs already done, and changing any of those
settings makes new runs instead of silently reusing old ones. Where a run executes (device,
threads, cluster) is not part of it, and neither is the isoFLOP budget a run was derived from
(`RunSpec.flops_budget`, a tag for analysis). The parametrization (muP, CompleteP) is, when it
is not the standard one.

Grid modes (`harness.config.GridConfig`), each crossed with every model size:

- ``n_tokens``: the cartesian N x D grid (Kaplan et al. 2020).
- ``flops``: isoFLOP profiles (Hoffmann et al. 2022, approach 2): D = C / (6 N) with N the
  exact non-embedding count of the chosen shape, so 6 N D = C up to the rounding of D to whole
  sequences. Pairs whose D is below one batch of the run are dropped (`GridExpansion.dropped`).
- ``tokens_per_param``: a ladder D = k N (k = 20 is Chinchilla's compute-optimal ratio).
- ``unique_tokens`` x ``epochs``: repeated data (Muennighoff et al. 2023): the run trains on the
  first U tokens (``data.unique_tokens = U``) for D = U x epochs tokens.
- ``points``: explicit (size, D) pairs, alone or beside one of the modes.

``lrs`` and ``batch_sizes`` sweep the optimiser at every point; ``seeds`` repeat every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.config import (
    NO_EVAL,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    identity_dict,
)
from harness.data import vocab_size_for
from harness.design import Prior, bracket_notes, centred_sizes, load_prior
from harness.errors import InputError
from harness.flops import tokens_for_flops, training_flops
from harness.model import ModelShape, count_params, default_ffn_dim, shape_for_params
from harness.parametrization import STANDARD, Parametrization
from harness.size_rules import porian2024

__all__ = [
    "DroppedPoint",
    "GridExpansion",
    "RunSpec",
    "expand",
    "expand_grid",
    "explicit_shape",
    "resolve_n_tokens",
    "spec_from_dict",
]


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one training run needs, resolved (no defaults left to look up)."""

    experiment: str
    model: ModelShape
    data: DataConfig
    train: TrainConfig
    n_tokens: int
    """Training tokens D, a whole number of sequences."""
    seed: int
    flops_budget: float | None = None
    """The isoFLOP budget C (FLOPs) this run's D was derived from (grid.flops); None outside an
    isoFLOP grid. A tag for analysis (runs.csv's flops_budget groups the profiles), not part of
    the run's identity: it changes nothing the run computes."""
    parametrization: Parametrization = STANDARD
    """How init, learning rates and multipliers scale with the shape (muP, CompleteP)."""
    eval: EvalConfig = NO_EVAL
    """Downstream tasks scored during training ([eval], `harness.evals`)."""

    def identity(self) -> dict[str, Any]:
        """The settings that define the run (the experiment's name is not one of them). The
        parametrization only when it is not the standard one, so that every run_id made before
        it existed stays valid."""
        out = {
            "model": identity_dict(self.model),
            "data": identity_dict(self.data),
            "train": identity_dict(self.train),
            "n_tokens": self.n_tokens,
            "seed": self.seed,
        }
        if self.parametrization != STANDARD:
            out["parametrization"] = self.parametrization.to_dict()
        if self.eval.tasks:  # what a run records is part of what it is
            out["eval"] = identity_dict(self.eval)
        return out

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def batch_tokens(self) -> int:
        return self.train.batch_size * self.data.seq_len

    @property
    def n_steps(self) -> int:
        """Optimizer steps; the last one may hold fewer sequences so that D is exact."""
        n_seq = self.n_tokens // self.data.seq_len
        return -(-n_seq // self.train.batch_size)

    @property
    def flops(self) -> int:
        """6 N D: the run's training compute (N non-embedding)."""
        return training_flops(count_params(self.model).non_embedding, self.n_tokens)

    def to_dict(self) -> dict[str, Any]:
        out = {"experiment": self.experiment, "run_id": self.run_id, **self.identity()}
        if self.flops_budget is not None:  # absent otherwise: older spec.json files stay equal
            out["flops_budget"] = self.flops_budget
        return out


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    """Inverse of `RunSpec.to_dict` (reads a run directory's spec.json)."""
    from harness.config import build_section  # the same validation as the TOML path

    data = build_section(DataConfig, d["data"], "data", "spec.json")
    train = build_section(TrainConfig, d["train"], "train", "spec.json")
    budget = d.get("flops_budget")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0
    ):
        raise InputError(f"spec.json: flops_budget = {budget!r}; accepted: a number > 0 or absent")
    raw = d.get("parametrization", {})
    if not isinstance(raw, dict) or set(raw) - set(STANDARD.to_dict()):
        raise InputError(
            f"spec.json: parametrization = {raw!r}; accepted: absent, or an object with "
            f"{', '.join(STANDARD.to_dict())}"
        )
    try:
        parametrization = Parametrization(**raw)
    except InputError as e:
        raise InputError(f"spec.json: parametrization.{e}") from None
    model = ModelShape(**d["model"])
    parametrization.check_shape(model, "spec.json")
    tasks = build_section(EvalConfig, d.get("eval", {}), "eval", "spec.json")
    return RunSpec(
        experiment=d["experiment"],
        model=model,
        data=data,
        train=train,
        n_tokens=int(d["n_tokens"]),
        seed=int(d["seed"]),
        flops_budget=None if budget is None else float(budget),
        parametrization=parametrization,
        eval=tasks,
    )


def resolve_n_tokens(n_tokens: float, seq_len: int) -> int:
    """Round a token budget to whole sequences (at least one), so D is exactly what trains."""
    return max(1, int(n_tokens / seq_len + 0.5)) * seq_len  # half up, not Python's half-even


@dataclass(frozen=True, kw_only=True)
class DroppedPoint:
    """A (size, budget) pair of a derived-D mode that gives no sensible run."""

    n_params: int
    """Non-embedding parameters N of the shape."""
    n_layer: int
    n_embd: int
    n_tokens: int
    """The D it would have trained on."""
    batch_tokens: int
    """Tokens of one optimizer step of that run."""
    mode: str
    """'flops' or 'tokens_per_param'."""
    value: float
    """The budget C or the ratio k that gave this D."""

    @property
    def reason(self) -> str:
        return (
            f"D = {self.n_tokens:,} tokens is below one batch ({self.batch_tokens:,} tokens): "
            "fewer than one optimizer step"
        )


@dataclass(frozen=True, kw_only=True)
class GridExpansion:
    """The runs of an experiment and the derived points left out."""

    specs: tuple[RunSpec, ...]
    dropped: tuple[DroppedPoint, ...] = ()
    notes: tuple[str, ...] = ()
    """Where the grid trains something other than what was written: sizes that give one shape,
    token budgets rounded by more than 1% to whole sequences."""


@dataclass(frozen=True)
class _Point:
    shape: ModelShape
    n_params: int
    n_tokens: int
    data: DataConfig
    flops_budget: float | None
    mode: str
    value: float


def _target_shape(exp: ExperimentConfig, target: int, vocab_size: int, where: str) -> ModelShape:
    m = exp.model
    try:
        return shape_for_params(
            target,
            arch=m.arch,  # type: ignore[arg-type]
            aspect_ratio=m.aspect_ratio,
            head_dim=m.head_dim,
            vocab_size=vocab_size,
            seq_len=exp.data.seq_len,
            tie_embeddings=m.tie_embeddings,
        )
    except ValueError as e:  # InputError is a ValueError
        raise InputError(f"{where} = {target}: {e}") from None


def shape_for_target(exp: ExperimentConfig, target: int, where: str) -> ModelShape:
    """The model rule's shape nearest a target non-embedding N, as grid.n_params makes it."""
    return _target_shape(exp, target, vocab_size_for(exp.data, exp.model.arch), where)


def explicit_shape(exp: ExperimentConfig, n_layer: int, n_embd: int, where: str) -> ModelShape:
    """The experiment's model at n_layer x n_embd, as grid.shapes makes it (n_embd //
    model.head_dim heads)."""
    vocab_size = vocab_size_for(exp.data, exp.model.arch)
    return _explicit_shape(exp, n_layer, n_embd, 0, vocab_size, where)


def _explicit_shape(
    exp: ExperimentConfig, n_layer: int, n_embd: int, n_head: int, vocab_size: int, where: str
) -> ModelShape:
    m = exp.model
    try:
        return ModelShape(
            arch=m.arch,  # type: ignore[arg-type]
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head or max(1, n_embd // m.head_dim),
            vocab_size=vocab_size,
            seq_len=exp.data.seq_len,
            ffn_dim=default_ffn_dim(m.arch, n_embd),  # type: ignore[arg-type]
            tie_embeddings=m.tie_embeddings,
        )
    except ValueError as e:
        raise InputError(f"{where} ({n_layer} x {n_embd}): {e}") from None


def _shapes(exp: ExperimentConfig, vocab_size: int) -> list[ModelShape]:
    shapes = [_target_shape(exp, t, vocab_size, "grid.n_params") for t in exp.grid.n_params]
    shapes += [
        _explicit_shape(exp, s.n_layer, s.n_embd, s.n_head, vocab_size, "grid.shapes")
        for s in exp.grid.shapes
    ]
    return shapes


def _notes(exp: ExperimentConfig, shapes: list[ModelShape]) -> list[str]:
    """`GridExpansion.notes`: what the grid changes of the sizes and budgets written
    (``shapes`` from `_shapes`, whose first entries are grid.n_params' in order)."""
    notes, first = [], {}
    for t, shape in zip(exp.grid.n_params, shapes, strict=False):
        if shape in first:
            notes.append(
                f"grid.n_params = {t}: the same shape as {first[shape]} ({shape.n_layer} x "
                f"{shape.n_embd}, N = {count_params(shape).non_embedding:,}); trained once"
            )
        else:
            first[shape] = t
    for d in exp.grid.n_tokens:
        r = resolve_n_tokens(d, exp.data.seq_len)
        if abs(r - d) > 0.01 * d:
            notes.append(
                f"grid.n_tokens = {d:g}: trains on {r:,} tokens (whole sequences of "
                f"data.seq_len = {exp.data.seq_len})"
            )
    return notes


def _points(
    exp: ExperimentConfig, vocab_size: int, shapes: list[ModelShape], prior: Prior | None
) -> list[_Point]:
    """Every (shape, D, data) of the grid before the optimiser sweeps and seeds, mode order
    (``shapes`` from `_shapes`; `points` shapes, and the sizes centred on ``prior``, are made
    here)."""
    g, seq_len = exp.grid, exp.data.seq_len
    out: list[_Point] = []
    for shape in shapes:
        n = count_params(shape).non_embedding

        def add(
            d: float,
            mode: str,
            value: float,
            *,
            data: DataConfig = exp.data,
            budget: float | None = None,
            shape: ModelShape = shape,
            n: int = n,
        ) -> None:
            out.append(_Point(shape, n, resolve_n_tokens(d, seq_len), data, budget, mode, value))

        for d in g.n_tokens:
            add(d, "n_tokens", d)
        for c in g.flops:
            # Chinchilla's C = 6 N D with the exact N of this shape (Hoffmann et al. 2022).
            add(tokens_for_flops(c, n), "flops", c, budget=c)
        for k in g.tokens_per_param:
            add(k * n, "tokens_per_param", k)
        for u in g.unique_tokens:
            try:
                data = dataclasses.replace(exp.data, unique_tokens=u)
            except ValueError as e:
                raise InputError(f"grid.unique_tokens = {u}: {e}") from None
            for e in g.epochs:
                add(u * e, "unique_tokens", u, data=data)
    if g.sizes_per_budget:
        # Sizes centred on each budget's compute-optimal N as the prior predicts it, so that
        # every isoFLOP profile can bracket its minimum (harness.design).
        assert prior is not None  # GridConfig requires a prior with sizes_per_budget
        for c in g.flops:
            for t in centred_sizes(prior.n_opt(c), g.sizes_per_budget, g.size_span):
                where = (
                    f"grid.sizes_per_budget at budget C = {c:g} (accepted: larger budgets or a "
                    "smaller size_span): target N"
                )
                shape = _target_shape(exp, max(1, round(t)), vocab_size, where)
                n = count_params(shape).non_embedding
                d = resolve_n_tokens(tokens_for_flops(c, n), seq_len)
                out.append(_Point(shape, n, d, exp.data, c, "flops", c))
    for i, p in enumerate(g.points):
        where = f"grid.points[{i}]"
        if p.n_params:
            shape = _target_shape(exp, p.n_params, vocab_size, f"{where}.n_params")
        else:
            shape = _explicit_shape(exp, p.n_layer, p.n_embd, 0, vocab_size, where)
        n = count_params(shape).non_embedding
        out.append(
            _Point(
                shape,
                n,
                resolve_n_tokens(p.n_tokens, seq_len),
                exp.data,
                None,
                "points",
                p.n_tokens,
            )
        )
    return out


def expand_grid(exp: ExperimentConfig) -> GridExpansion:
    """All runs of the grid, and the derived (size, budget) pairs left out.

    Order: model size N, then D (then unique tokens U), then the learning rate and batch size
    of the sweeps in the order given, then seed; stable, so sizes of equal N and points of
    equal (N, D) keep the order of the TOML. A run that appears twice (same run_id) is kept
    once, with the isoFLOP budget of its first appearance.

    Raises
    ------
    InputError
        A size that gives no valid shape, a unique-token budget that DataConfig refuses, or a
        derived-D grid in which every point is dropped.
    """
    vocab_size = vocab_size_for(exp.data, exp.model.arch)
    shapes = _shapes(exp, vocab_size)
    # The prior law of an isoFLOP grid: read once, for the centred sizes and the notes.
    prior = load_prior(exp.grid.prior) if exp.grid.flops else None
    points = sorted(
        _points(exp, vocab_size, shapes, prior),
        key=lambda p: (p.n_params, p.n_tokens, p.data.unique_tokens),
    )
    g = exp.grid
    trains = [
        exp.train
        if (lr, bs) == (exp.train.lr, exp.train.batch_size)
        else dataclasses.replace(exp.train, lr=lr, batch_size=bs)
        for lr in (g.lrs or (exp.train.lr,))
        for bs in (g.batch_sizes or (exp.train.batch_size,))
    ]
    if exp.train.size_rule and (g.lrs or g.batch_sizes):
        raise InputError(
            f"train.size_rule = {exp.train.size_rule!r} sets each size's learning rate and "
            "batch size; accepted: no grid.lrs or grid.batch_sizes sweep with it"
        )
    parametrization = exp.model.parametrization_settings()
    specs: dict[str, RunSpec] = {}
    dropped: list[DroppedPoint] = []
    for p in points:
        parametrization.check_shape(
            p.shape, f"grid size {p.shape.n_layer} x {p.shape.n_embd} (N = {p.n_params:,})"
        )
        for train in trains:
            if train.size_rule:  # porian2024, the one rule
                lr, batch = porian2024(count_params(p.shape).non_embedding, exp.data.seq_len)
                train = dataclasses.replace(train, lr=lr, batch_size=batch)
            batch_tokens = train.batch_size * exp.data.seq_len
            if p.mode in ("flops", "tokens_per_param") and p.n_tokens < batch_tokens:
                # D is derived, not chosen: a size far from the budget gets a D below a single
                # optimizer step, which says nothing about the scaling law.
                dropped.append(
                    DroppedPoint(
                        n_params=p.n_params,
                        n_layer=p.shape.n_layer,
                        n_embd=p.shape.n_embd,
                        n_tokens=p.n_tokens,
                        batch_tokens=batch_tokens,
                        mode=p.mode,
                        value=p.value,
                    )
                )
                continue
            for seed in g.seeds:
                spec = RunSpec(
                    experiment=exp.name,
                    model=p.shape,
                    data=p.data,
                    train=train,
                    n_tokens=p.n_tokens,
                    seed=seed,
                    flops_budget=p.flops_budget,
                    parametrization=parametrization,
                    eval=exp.eval,
                )
                specs.setdefault(spec.run_id, spec)
    if not specs:
        d = dropped[0]
        raise InputError(
            f"grid.{d.mode}: every point is dropped (e.g. N = {d.n_params:,}, "
            f"{d.mode} = {d.value:g}: {d.reason}); accepted: budgets that give every size at "
            "least one batch of tokens"
        )
    notes = _notes(exp, shapes)
    if prior is not None:
        sizes: dict[float, list[int]] = {}
        for s in specs.values():
            if s.flops_budget is not None:
                sizes.setdefault(s.flops_budget, []).append(count_params(s.model).non_embedding)
        notes += bracket_notes(prior, sizes)
    return GridExpansion(
        specs=tuple(specs.values()),
        dropped=tuple(dict.fromkeys(dropped)),
        notes=tuple(notes),
    )


def expand(exp: ExperimentConfig) -> list[RunSpec]:
    """All runs of the grid (see `expand_grid`), in order: size, D, sweep, seed."""
    return list(expand_grid(exp).specs)
