"""The memory one device needs to train a run, from the model's shape alone (no torch, nothing
built): what `harness plan` sizes micro-batches and devices with.

Per device, at the peak of a step after the first (the start of the backward pass, when the
activations are all alive and no gradient is yet):

- resident state: fp32 weights and AdamW's two fp32 moments, 12 bytes a parameter, divided
  over the devices under FSDP; under DDP on more than one device also its gradient buckets
  (4 bytes a parameter, allocated once);
- under bf16 autocast, the bf16 copies of the weight matrices it casts and keeps for the
  backward pass (2 bytes each, every matrix of the blocks and the output projection);
- under FSDP on more than one device, the parameters it has gathered: the root's (embeddings,
  final norm, head), which FSDP2 keeps from forward to backward, and with
  `reshard_after_forward` off every block's; in bf16 under FSDP's mixed precision, which then
  keeps no casts, else in fp32;
- the activations saved for the backward pass, per token of the micro-batch:
  n_layer x (a_d d + a_f f) + b_d d, with d the width and f the MLP width;
- the logits: 12 bytes per vocabulary entry and token (the fp32 logits, their log-softmax kept
  for the backward pass, and its gradient: three V-wide fp32 rows per token).

The fp32 gradients (4 bytes a parameter, sharded under FSDP) take the place of the activations
as the backward pass frees them, so the peak is the resident state plus the larger of the two.
Under FSDP that holds where the micro-batch's activations and logits outweigh three blocks'
training state (16 bytes a parameter), as in a real ladder's shapes. Where a few wide blocks
see a few short sequences, the peak comes later, in a block's backward pass, and that point
is bounded by every saved activation and gradient at once plus the block's working set (its
parameters gathered, the next block's prefetched, its fp32 gradients before they are
reduced).

The activation constants are measured, not derived: the bytes of every tensor autograd saves
(`torch.autograd.graph.saved_tensors_hooks`) for each architecture, in fp32 and under bf16
autocast, fitted over shapes of 1-3 layers, widths 64-256 and MLP widths 64-512 (max error
0.08%; torch 2.13, transformers' SDPA attention, which keeps no seq_len^2 probabilities),
likewise with bf16 parameters (FSDP's mixed precision: 1.7%), and the whole from the peak
resident memory of a second training step, which it matches to 0.2% on one process (4-8
layers, widths 256-768, vocabularies 2k-50k, fp32 and bf16; glibc told to return freed
blocks, MALLOC_MMAP_THRESHOLD_). Under FSDP2 on two gloo processes (7 shapes of 2-8 layers,
widths 384-1280, in fp32, autocast, mixed precision, with and without resharding: 32
points), the estimate was never below a rank's peak: 0.1-0.2% above it where the
activations set the peak (16 points), 0.3-16% above where the block bound does (16).
tests/train/test_memory.py measures these again on other shapes. Not counted:
the CUDA context and the allocator's fragmentation (`plan` leaves `HEADROOM` of each device
free for them), and activation checkpointing, which the harness does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import ModelShape, count_params

__all__ = ["HEADROOM", "STATE_BYTES_PER_PARAM", "MemoryEstimate", "estimate_memory"]

STATE_BYTES_PER_PARAM = 16
"""Training state of one parameter: fp32 weight, gradient and AdamW's two moments, 4 bytes
each."""

HEADROOM = 0.1
"""Share of a device's memory a plan leaves free: the CUDA context (~0.5-1 GB), the caching
allocator's fragmentation, NCCL buffers."""

LOGIT_BYTES = 12
"""Bytes per vocabulary entry and token at the peak (module docstring)."""

# (a_d, a_f, b_d): saved-activation bytes per token, n_layer x (a_d d + a_f f) + b_d d.
_ACTIVATIONS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("llama", "fp32"): (40.3, 16.0, 11.9),
    ("llama", "bf16"): (34.3, 8.0, 9.9),
    ("gpt2", "fp32"): (32.4, 20.0, 7.7),
    ("gpt2", "bf16"): (20.4, 10.0, 5.7),
    ("bert", "fp32"): (32.4, 8.0, 19.7),
    ("bert", "bf16"): (24.4, 4.0, 11.7),
    ("modernbert", "fp32"): (40.4, 16.0, 19.7),
    ("modernbert", "bf16"): (24.4, 8.0, 11.7),
    # bf16 parameters (FSDP's mixed precision): the residual stream is bf16 too.
    ("llama", "bf16_params"): (24.1, 8.0, 8.6),
    ("gpt2", "bf16_params"): (16.1, 10.0, 4.1),
    ("bert", "bf16_params"): (16.1, 4.0, 10.1),
    ("modernbert", "bf16_params"): (20.1, 8.0, 10.6),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one device holds at the peak of a training step."""

    state: int
    """Resident: weights and optimizer moments (this device's share under FSDP), and DDP's
    gradient buckets."""
    grads: int
    """The gradients, at the end of the backward pass (this device's share under FSDP)."""
    casts: int
    """bf16 copies of the weight matrices kept by autocast (0 in fp32 and under FSDP's mixed
    precision)."""
    gathered: int
    """Parameters FSDP holds gathered when the backward pass starts: the root's, and with
    `reshard_after_forward` off every block's (0 without FSDP)."""
    block_working_set: int
    """Under FSDP, a block's backward pass: its parameters gathered, the next block's
    prefetched, and its fp32 gradients before they are reduced (0 without FSDP)."""
    activations: int
    """Activations saved for the backward pass over the micro-batch."""
    logits: int
    """The logits, their log-softmax and its gradient over the micro-batch."""

    @property
    def total(self) -> int:
        saved = self.casts + self.activations
        # Under FSDP, where blocks are large beside the activations: a bound (every saved
        # activation and gradient at once), not a point the step passes through.
        block_bound = saved + self.grads + self.block_working_set if self.block_working_set else 0
        return self.state + max(self.gathered + saved + self.logits, block_bound, self.grads)

    def breakdown(self) -> str:
        """The total's terms in GB, as `total` adds them."""

        def gb(*terms: int) -> str:
            return f"{sum(terms) / 1e9:.1f}"

        casts = f" + bf16 weight casts {gb(self.casts)}" if self.casts else ""
        gathered = f"gathered weights {gb(self.gathered)} + " if self.gathered else ""
        points = [
            f"{gathered}activations and logits {gb(self.activations, self.logits)}{casts}",
            f"gradients {gb(self.grads)}",
        ]
        if self.block_working_set:
            block = gb(self.block_working_set)
            points.insert(
                1,
                f"activations {gb(self.activations)}{casts} + gradients {gb(self.grads)} + a "
                f"block's working set {block}",
            )
        return f"state {gb(self.state)} + the largest of [" + "], [".join(points) + "]"


def matrix_params(shape: ModelShape) -> int:
    """Parameters of the matrices autocast casts: every block's projections (attention 4 d^2,
    MLP 3 d f for the gated MLPs of llama and modernbert, else 2 d f), the encoders' head
    transform (d^2) and the output projection (V d)."""
    d, f, L, V = shape.n_embd, shape.ffn_dim, shape.n_layer, shape.vocab_size
    mlp = 3 * d * f if shape.arch in ("llama", "modernbert") else 2 * d * f
    head = d * d if shape.arch in ("bert", "modernbert") else 0
    return L * (4 * d * d + mlp) + head + V * d


def estimate_memory(
    shape: ModelShape,
    *,
    micro_batch: int,
    devices: int = 1,
    parallel: str = "ddp",
    precision: str = "bf16",
    fsdp_mixed_precision: bool = True,
    reshard_after_forward: bool = True,
) -> MemoryEstimate:
    """The peak bytes on one device of a run of ``shape`` (module docstring).

    Parameters
    ----------
    shape : ModelShape
        The model (its seq_len is the context of every sequence).
    micro_batch : int
        Sequences in one forward pass on the device.
    devices : int
        Devices the run spans; under ``parallel="fsdp"`` they share the training state.
    parallel : {"ddp", "fsdp"}
    precision : {"bf16", "fp32"}
        bf16 (the weights, gradients and moments stay fp32) or fp32 throughout.
    fsdp_mixed_precision, reshard_after_forward : bool
        Under FSDP on several devices, execution.fsdp_mixed_precision (bf16 gathered
        parameters in place of autocast) and execution.fsdp_reshard_after_forward.
    """
    d, f, L = shape.n_embd, shape.ffn_dim, shape.n_layer
    tokens = micro_batch * shape.seq_len
    counts = count_params(shape)
    n = counts.total
    fsdp = parallel == "fsdp" and devices > 1  # one device trains without a wrapper
    mixed = fsdp and precision == "bf16" and fsdp_mixed_precision
    a_d, a_f, b_d = _ACTIVATIONS[(shape.arch, "bf16_params" if mixed else precision)]
    shard = devices if fsdp else 1
    resident = -(-12 * n // shard)  # fp32 weights and AdamW's two moments
    grads = -(-4 * n // shard)
    if parallel == "ddp" and devices > 1:
        resident += 4 * n  # its gradient buckets
    gathered = working_set = 0
    if fsdp:
        block = counts.non_embedding // L  # a block's parameters (the few outside: the root's)
        kept = 0 if reshard_after_forward else L
        param_bytes = 2 if mixed else 4
        gathered = param_bytes * (n - L * block + kept * block)
        working_set = (2 * param_bytes + 4) * block
    per_token = L * (a_d * d + a_f * f) + b_d * d
    return MemoryEstimate(
        state=resident,
        grads=grads,
        casts=2 * matrix_params(shape) if precision == "bf16" and not mixed else 0,
        gathered=gathered,
        block_working_set=working_set,
        activations=int(tokens * per_token),
        logits=LOGIT_BYTES * shape.vocab_size * tokens,
    )
