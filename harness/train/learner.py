"""The model and its optimizer, and how they span the devices: one process, DDP or FSDP2.

`build_learner` seeds and builds the model (every rank the same one), wraps it for the run's
parallelism and torch.compile, and makes AdamW. A `Learner` is also the checkpoint's model and
optimizer component: its state is the whole model's and optimizer's as one process holds them,
whatever the world (FSDP's shards gathered), so a checkpoint resumes at any device count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import ExecutionConfig
from harness.grid import RunSpec
from harness.model import build_model, count_params, enable_activation_checkpointing
from harness.parametrization import blocks, param_groups
from harness.schedules import peak_lr

__all__ = ["Learner", "build_learner"]


@dataclass(frozen=True, eq=False)
class Learner:
    """The model, what calls it in training, its optimizer and its parallelism."""

    model: torch.nn.Module
    forward: Callable[..., Any]  # `model`, its DDP wrapper, or torch.compile's of either
    optimizer: torch.optim.Optimizer
    parallel: str = "none"  # 'ddp' or 'fsdp' on several devices
    autocast: torch.dtype | None = None
    """The dtype the forward passes autocast to; None at fp32, and under FSDP's mixed
    precision, whose gathered parameters are already bf16."""

    @property
    def evaluator(self) -> Callable[..., Any]:
        """What scores the held-out windows: every rank all of them with its (equal) weights,
        the same number on each with no communication; DDP's wrapper is only for training."""
        return self.model if self.parallel == "ddp" else self.forward

    def sync(self, last: bool) -> Any:
        """The context of one micro-batch's backward: gradients are all-reduced only after the
        last of an update (DDP's no_sync; FSDP2's set_requires_gradient_sync)."""
        if self.parallel == "ddp" and not last:
            ddp = getattr(self.forward, "_orig_mod", self.forward)  # under torch.compile
            return ddp.no_sync()
        if self.parallel == "fsdp":
            self.model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def step(self, grad_clip: float) -> None:
        """Clip the global gradient norm (0: no clipping), step AdamW, clear the gradients."""
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        """The schedule's rate, times each group's parametrization scale (muP's per-group
        rates, `harness.parametrization.param_groups`)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    # --- the checkpoint's component ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = self.full_state()
        return {"model": model_sd, "optimizer": optim_sd}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_full_state(state["model"], state["optimizer"])

    def full_state(self, with_optimizer: bool = True) -> tuple[dict, dict]:
        """The model's and the optimizer's state as one process holds them. FSDP's shards are
        gathered on rank 0 by torch.distributed.checkpoint's state-dict API (a collective:
        every rank calls it), and its optimizer state, keyed by parameter name there, is keyed
        by position as torch.optim's own state_dict keys it."""
        if self.parallel != "fsdp":
            return self.model.state_dict(), self.optimizer.state_dict() if with_optimizer else {}
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(self.model, options=opts)
        if not with_optimizer:
            return model_sd, {}
        named = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        if not named:  # ranks other than 0 receive nothing
            return model_sd, {}
        index = {name: i for i, name in enumerate(self._param_names())}
        return model_sd, {
            "state": {index[name]: v for name, v in named["state"].items()},
            "param_groups": [
                dict(g, params=[index[name] for name in g["params"]]) for g in named["param_groups"]
            ],
        }

    def load_full_state(self, model_sd: dict, optim_sd: dict) -> None:
        """A checkpoint's full state into the model and optimizer (each rank read the whole
        file; under FSDP each keeps its shards)."""
        if self.parallel != "fsdp":
            self.model.load_state_dict(model_sd)
            self.optimizer.load_state_dict(optim_sd)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_sd, options=opts)
        names = self._param_names()
        named = {
            "state": {names[i]: v for i, v in optim_sd["state"].items()},
            "param_groups": [
                dict(g, params=[names[i] for i in g["params"]]) for g in optim_sd["param_groups"]
            ],
        }
        set_optimizer_state_dict(self.model, self.optimizer, named, options=opts)

    def _param_names(self) -> list[str]:
        """The optimizer's parameters by name, in its order (the positions of its state_dict)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]


def build_learner(
    spec: RunSpec,
    execution: ExecutionConfig,
    device: torch.device,
    parallel: str = "none",
    compute_dtype: torch.dtype | None = None,
) -> Learner:
    """The seeded model, its wrappers and AdamW, computing at ``compute_dtype`` (bf16, or None
    for fp32). Every rank builds the same model from the seed."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, spec.parametrization).to(device)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec.model).total
    if execution.activation_checkpointing:
        enable_activation_checkpointing(model)  # inside the DDP and FSDP wrappers
    wrapped: torch.nn.Module = model
    autocast = compute_dtype
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    elif parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if compute_dtype is not None and execution.fsdp_mixed_precision:
            # bf16 parameters gathered for compute, gradients reduced and kept in fp32
            # (torchtitan's and OLMo-core's policy); autocast then has nothing left to cast.
            policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
            autocast = None
        else:
            policy = MixedPrecisionPolicy()
        # Each transformer block a unit of its own (its parameters gathered for its forward
        # and backward only), then the rest (embeddings, final norm, head) at the root, which
        # FSDP2 keeps gathered from forward to backward.
        for block in blocks(model):
            fully_shard(
                block,
                mp_policy=policy,
                reshard_after_forward=execution.fsdp_reshard_after_forward,
            )
        fully_shard(model, mp_policy=policy)
    # torch.compile wraps the same parameters: checkpoints keep saving `model`'s state_dict
    # (no "_orig_mod." prefix), so a run may resume with compile on or off.
    forward = torch.compile(wrapped) if execution.compile else wrapped
    optimizer = torch.optim.AdamW(
        param_groups(model, spec.model, spec.parametrization, spec.train.weight_decay),
        lr=peak_lr(spec),
        betas=(spec.train.beta1, spec.train.beta2),
        fused=device.type == "cuda",
    )
    learner = Learner(model, forward, optimizer, parallel, autocast)
    learner.set_lr(peak_lr(spec))  # each group's scale, until the schedule sets the rate
    return learner
