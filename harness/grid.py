"""Expand an experiment into one `RunSpec` per grid point.

A run's identity is everything that changes what it computes: model shape, data and tokenizer
settings, optimisation settings, token budget and seed. ``run_id`` is a short hash of exactly
that, so running an experiment again finds the runs already done, and changing any of those
settings makes new runs instead of silently reusing old ones. Where a run executes (device,
threads, cluster) is not part of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.config import DataConfig, ExperimentConfig, TrainConfig, identity_dict
from harness.data import vocab_size_for
from harness.errors import InputError
from harness.model import ModelShape, default_ffn_dim, shape_for_params

__all__ = ["RunSpec", "expand", "resolve_n_tokens", "spec_from_dict"]


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

    def identity(self) -> dict[str, Any]:
        """The settings that define the run (the experiment's name is not one of them)."""
        return {
            "model": identity_dict(self.model),
            "data": identity_dict(self.data),
            "train": identity_dict(self.train),
            "n_tokens": self.n_tokens,
            "seed": self.seed,
        }

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

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "run_id": self.run_id, **self.identity()}


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    """Inverse of `RunSpec.to_dict` (reads a run directory's spec.json)."""
    from harness.config import _build  # the same validation as the TOML path

    data = _build(DataConfig, d["data"], "data", "spec.json")
    train = _build(TrainConfig, d["train"], "train", "spec.json")
    return RunSpec(
        experiment=d["experiment"],
        model=ModelShape(**d["model"]),
        data=data,
        train=train,
        n_tokens=int(d["n_tokens"]),
        seed=int(d["seed"]),
    )


def resolve_n_tokens(n_tokens: int, seq_len: int) -> int:
    """Round a token budget to whole sequences (at least one), so D is exactly what trains."""
    return max(1, int(n_tokens / seq_len + 0.5)) * seq_len  # half up, not Python's half-even


def _shapes(exp: ExperimentConfig, vocab_size: int) -> list[ModelShape]:
    m, seq_len = exp.model, exp.data.seq_len
    shapes = []
    for target in exp.grid.n_params:
        try:
            shapes.append(
                shape_for_params(
                    target,
                    arch=m.arch,
                    aspect_ratio=m.aspect_ratio,
                    head_dim=m.head_dim,
                    vocab_size=vocab_size,
                    seq_len=seq_len,
                    tie_embeddings=m.tie_embeddings,
                )
            )
        except ValueError as e:
            raise InputError(f"grid.n_params = {target}: {e}") from None
    for s in exp.grid.shapes:
        n_head = s.n_head or max(1, s.n_embd // m.head_dim)
        try:
            shapes.append(
                ModelShape(
                    arch=m.arch,
                    n_layer=s.n_layer,
                    n_embd=s.n_embd,
                    n_head=n_head,
                    vocab_size=vocab_size,
                    seq_len=seq_len,
                    ffn_dim=default_ffn_dim(m.arch, s.n_embd),
                    tie_embeddings=m.tie_embeddings,
                )
            )
        except ValueError as e:
            raise InputError(f"grid.shapes ({s.n_layer} x {s.n_embd}): {e}") from None
    return shapes


def expand(exp: ExperimentConfig) -> list[RunSpec]:
    """All runs of the grid, in order: model size, then D, then seed; duplicates dropped."""
    specs: dict[str, RunSpec] = {}
    for shape in _shapes(exp, vocab_size_for(exp.data)):
        for d in exp.grid.n_tokens:
            for seed in exp.grid.seeds:
                spec = RunSpec(
                    experiment=exp.name,
                    model=shape,
                    data=exp.data,
                    train=exp.train,
                    n_tokens=resolve_n_tokens(d, exp.data.seq_len),
                    seed=seed,
                )
                specs.setdefault(spec.run_id, spec)
    return list(specs.values())
