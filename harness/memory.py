"""The memory one device needs to train a run, from the model's shape alone (no torch, nothing
built): what `harness plan` sizes micro-batches and devices with.

Per device, at the peak of a step after the first (the start of the backward pass, when the
activations are all alive and no gradient is yet; activation checkpointing below):

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
as the backward pass frees them, so the peak is the resident state plus the larger of the two
(the gradients at the end with the embedding's dense gradient and its sum with the tied output
projection's, 8 bytes per vocabulary entry and unit of width; counted for untied models too).
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
activations set the peak (16 points), 0.3-16% above where the block bound does (16). On four
ranks it can be low: 4.1% under for 4 layers of width 1024 on 64 tokens (mixed precision),
6.8% with activation checkpointing, 17% for 16 layers of width 512 under autocast with
checkpointing: FSDP's gather and reduce buffers, which do not shrink with more ranks, are
not yet counted.
tests/train/test_memory.py measures these again on other shapes. Not counted: the CUDA
context and the allocator's fragmentation (`plan` leaves `HEADROOM` of each device free for
them).

With activation checkpointing each block keeps only its input (the residual stream), and
autocast's casts of a block's matrices are made again in its recompute (its cache keeps them all
until the forward pass ends, which the backward's start is taken to include). The peak then
falls at the backward pass's start, in the last block's backward (beside every block's input),
in the first block's (beside nearly every gradient), or at the end, where the tied embedding's
dense gradient is summed with the output projection's. A block's backward holds its recomputed
activations and gradient temporaries of `RECOMPUTE_TEMPORARIES` bytes per token and unit of
width (measured, 19-28). Against one process's peak and two gloo FSDP ranks' (llama only: 7
shapes of 2-16 layers, widths 256-1024; fp32, autocast and mixed precision: 28 points) the
estimate was 0.1% below to 34% above (the most at 2-3 layers of width 1024, where it counts
every gradient beside the first block's backward).
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

RECOMPUTE_TEMPORARIES = 20
"""Bytes per token and unit of width of the gradient temporaries of a recomputed block's
backward pass, beyond its activations (measured: 19-28 on one CPU process, module
docstring)."""

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
    checkpointed_casts: int
    """Of `casts`, those of the blocks' matrices, which under activation checkpointing
    autocast keeps only until the forward pass ends (its cache), made again in each block's
    recompute (0 otherwise)."""
    recompute: int
    """With activation checkpointing, one block's backward pass: its activations made again,
    the gradient temporaries beside them, and its weight casts under autocast (0 without)."""
    first_input: int
    """With activation checkpointing, what the first block's backward sees besides the
    gradients: its input and the activations outside the blocks (0 without)."""
    embedding_grad: int
    """At the end of the backward pass: the embedding's dense gradient and its sum with the
    output projection's, which shares the matrix (an upper bound for untied models)."""
    activations: int
    """Activations saved for the backward pass over the micro-batch."""
    logits: int
    """The logits, their log-softmax and its gradient over the micro-batch."""

    def points(self) -> list[dict[str, int]]:
        """The points of a step where the peak can fall, each as its terms (resident state
        aside): the start of the backward pass; a block's backward (under FSDP, where blocks
        are large beside the activations, a bound: every activation and gradient at once;
        with activation checkpointing, the last block's, beside every block's input, or the
        first's, beside nearly every gradient); the end."""
        start = {
            "gathered weights": self.gathered,
            "bf16 weight casts": self.casts,
            "activations and logits": self.activations + self.logits,
        }
        block = {
            "bf16 weight casts": self.casts - self.checkpointed_casts,
            "a block's working set": self.block_working_set,
            "a block's recompute": self.recompute,
        }
        if self.recompute:
            last = {**block, "gathered weights": self.gathered, "activations": self.activations}
            first = {**block, "gathered weights": self.gathered, "gradients": self.grads}
            between = [last, {**first, "the first block's input": self.first_input}]
        elif self.block_working_set:
            between = [{**block, "activations": self.activations, "gradients": self.grads}]
        else:
            between = []
        end = {"gradients": self.grads, "the embedding's gradient": self.embedding_grad}
        return [start, *between, end]

    @property
    def total(self) -> int:
        return self.state + max(sum(point.values()) for point in self.points())

    def breakdown(self) -> str:
        """The total's terms in GB, as `total` adds them."""
        points = [
            " + ".join(f"{name} {b / 1e9:.1f}" for name, b in point.items() if b)
            for point in self.points()
        ]
        return f"state {self.state / 1e9:.1f} + the largest of [" + "], [".join(points) + "]"


def matrix_params(shape: ModelShape) -> int:
    """Parameters of the matrices autocast casts: every block's projections (attention 4 d^2,
    MLP 3 d f for the gated MLPs of llama and modernbert, else 2 d f), the encoders' head
    transform (d^2) and the output projection (V d)."""
    d, V = shape.n_embd, shape.vocab_size
    head = d * d if shape.arch in ("bert", "modernbert") else 0
    return shape.n_layer * _block_matrix_params(shape) + head + V * d


def _block_matrix_params(shape: ModelShape) -> int:
    """One block's share of `matrix_params`: attention 4 d^2 and the MLP's matrices."""
    d, f = shape.n_embd, shape.ffn_dim
    mlp = 3 * d * f if shape.arch in ("llama", "modernbert") else 2 * d * f
    return 4 * d * d + mlp


def estimate_memory(
    shape: ModelShape,
    *,
    micro_batch: int,
    devices: int = 1,
    parallel: str = "ddp",
    precision: str = "bf16",
    fsdp_mixed_precision: bool = True,
    reshard_after_forward: bool = True,
    activation_checkpointing: bool = False,
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
    activation_checkpointing : bool
        execution.activation_checkpointing: each block keeps only its input (the residual
        stream: fp32 under autocast, bf16 under FSDP's mixed precision).
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
    per_block = a_d * d + a_f * f  # saved-activation bytes per token of one block
    autocast = precision == "bf16" and not mixed
    casts = 2 * matrix_params(shape) if autocast else 0
    recompute = first_input = checkpointed_casts = 0
    if activation_checkpointing:
        residual = (2 if mixed else 4) * d  # a block's input, per token
        per_token = L * residual + b_d * d
        block_casts = 2 * _block_matrix_params(shape) if autocast else 0
        checkpointed_casts = L * block_casts  # cached to the forward's end, then made again
        recompute = int(tokens * (per_block + RECOMPUTE_TEMPORARIES * d)) + block_casts
        first_input = int(tokens * (residual + b_d * d))
    else:
        per_token = L * per_block + b_d * d
    return MemoryEstimate(
        state=resident,
        grads=grads,
        casts=casts,
        gathered=gathered,
        block_working_set=working_set,
        checkpointed_casts=checkpointed_casts,
        recompute=recompute,
        first_input=first_input,
        embedding_grad=8 * shape.vocab_size * d,
        activations=int(tokens * per_token),
        logits=LOGIT_BYTES * shape.vocab_size * tokens,
    )
