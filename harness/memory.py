"""The memory one device needs to train a run, from the model's shape alone (no torch, nothing
built): what `harness plan` sizes micro-batches and devices with.

The estimate is the largest of a few points of a step after the first, each the sum of what
is alive then (`MemoryEstimate.points`). The main one is the start of the backward pass, when
the activations are all alive and no gradient is yet; there, per device:

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
as the backward pass frees them. On one device its end is the other main point: the gradients,
with the embedding's dense gradient and its sum with the tied output projection's (8 bytes per
vocabulary entry and unit of width; counted for untied models too). The blocks' backward
passes lie between the two.

A block's backward pass peaks at one of two moments (measured with torch's memory profiler,
`bench/bench_memory.py --blocks`): as it starts, when its activations are all alive and it has
made only its first gradient (its MLP's output projection, d f), with `BACKWARD_TEMPORARIES`,
the gradients flowing through it; and as it ends, when it has made all its gradients and holds
its input, its first norm's fp32 backward (`END_TEMPORARIES`) and, under autocast, the cast of
the matrix it reaches last (the attention's input projection). Beside them: the gradients
already made (the head's and the blocks' above) and the activations of the blocks below. Each
of these terms is linear in the block's index, so the first and the last block bound the rest.

Under FSDP2 on several devices the blocks' backward passes can set the peak, where a few wide
blocks see a few tokens. Each block's backward also holds its parameters gathered, the next
block's gathered ahead (prefetched) and the block above's fp32 reduce-scatter buffer (FSDP2
keeps one until the next reduce-scatter starts); its gradients are unsharded, in the gathered
dtype. Then they are copied into an fp32 buffer and reduce-scattered. Beside them: the root's
parameters (embeddings, final norm, head) and their unsharded gradients, the activations of
the blocks below and the reduced shards of the blocks above. The prefetch and the reduce
buffer break the linearity at both ends, so the peak is at the last block, the one below it,
the second or the first (`_fsdp_blocks`). Then come the embedding's backward, beside the first
block's reduce buffer (kept until the root's reduce-scatter), and the root's reduce-scatter.
Every term is counted from FSDP2's own code (torch 2.13, `_fsdp_collectives`); under gloo,
every all-gather and reduce-scatter also stages through a copy of the whole unsharded buffer
(measured: 1 + 1/W of the reduce-scatter's input, and 2 of the all-gather's output with the
output itself), which NCCL does not.

The activation constants are measured, not derived: the bytes of every tensor autograd saves
(`torch.autograd.graph.saved_tensors_hooks`) for each architecture, in fp32 and under bf16
autocast, fitted over shapes of 1-3 layers, widths 64-256 and MLP widths 64-512 (max error
0.08%; torch 2.13, transformers' SDPA attention, which keeps no seq_len^2 probabilities),
likewise with bf16 parameters (FSDP's mixed precision: 1.7%), and the whole from the peak
resident memory of a second training step (glibc told to return freed blocks,
MALLOC_MMAP_THRESHOLD_; `bench/bench_memory.py`). On one process it matches that to 0.2% (4-8
layers, widths 256-768, vocabularies 2k-50k, fp32 and bf16), and is 2% under at 3 layers of
width 1152: there the CPU's AdamW (a loop over the parameters; CUDA's is fused) sets the peak,
with 2.2x the largest parameter's fp32 bytes (the embedding's) of temporaries beside every
gradient. Within each block's backward on one process (5 shapes of 2-16 layers, widths
512-1152, 64-1024 tokens a micro-batch; fp32 and bf16, with and without checkpointing: 40
blocks) the larger of its two points was 0.3-7.8% above the most the profiler saw alive. Under
FSDP2 on 2, 4 and 8 gloo processes (4 shapes; mixed precision with and without resharding,
autocast, fp32: 48 runs, 224 rank peaks), with `backend="gloo"`, it was 0.3% below to 0.2%
above each rank's peak where the backward's start sets it, and 0.5% below to 1.6% above where
a block does (below 0.997 only on 8 ranks, whose collectives overlap differently from run to
run on 2 cores). The bound these points replace (every activation and gradient at once, beside
one block's working set) was up to 22% below a rank's peak on 4 ranks; counting a block's
activations and all its gradients at once, up to 4.9% above.
tests/train/test_memory.py measures these again on other shapes. Not counted: the CUDA
context and the allocator's fragmentation (`plan` leaves `HEADROOM` of each device free for
them).

With activation checkpointing each block keeps only its input (the residual stream), and its
backward starts by making its activations and autocast's casts again. Autocast's cache keeps
every cast until the forward pass ends, so that is a point of its own (with the head's bf16
logits and the fp32 copy the model returns). Against one process's peak (the 4 shapes, fp32 and
bf16) the estimate was 2% below (the CPU's AdamW, as above) to 0.9% above; against 2 and 4 gloo
FSDP ranks' (mixed precision and autocast: 16 runs, 48 rank peaks) 0.2% below to 2.2% above; on
8 ranks (8 runs, measured while the recompute still counted the block's input twice, up to 0.6%
more) 0.9% below, at a reduce-scatter, to 3.4% above. Counting a block's recompute beside all
its gradients, as before, was up to 43% above on one process and 20% under FSDP.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import ModelShape, count_params

__all__ = ["HEADROOM", "STATE_BYTES_PER_PARAM", "MemoryEstimate", "Point", "estimate_memory"]

STATE_BYTES_PER_PARAM = 16
"""Training state of one parameter: fp32 weight, gradient and AdamW's two moments, 4 bytes
each."""

HEADROOM = 0.1
"""Share of a device's memory a plan leaves free: the CUDA context (~0.5-1 GB), the caching
allocator's fragmentation, NCCL buffers."""

BACKWARD_TEMPORARIES = {"fp32": 16, "bf16": 6}
"""Bytes per token and unit of width that a block's backward pass holds beyond its activations,
its input, its casts and its gradients, by precision: the gradients flowing through it.
Measured with torch's memory profiler (the timeline `bench/bench_memory.py --blocks` reads) as
a block's backward starts, on 8 llama shapes of 2-16 layers, widths 448-1152, one process: 9-16
in fp32, -6 to 6 in bf16."""

END_TEMPORARIES = 26
"""Bytes per token and unit of width that a block's backward pass holds as it ends, beyond its
input and its gradients: its first norm's backward, which computes in fp32 whatever the
parameters' dtype. Measured with torch's memory profiler: 12-14 on one process in fp32, 26 on
8 gloo FSDP ranks under FSDP's mixed precision (the norm's bf16 input cast up and its fp32
gradients)."""

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
class Point:
    """A moment of a training step where the peak can fall, and what is alive then beside the
    resident state, term by term."""

    name: str
    terms: tuple[tuple[str, int], ...]

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.terms)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one device holds in a training step: the quantities, and the moments where they
    can peak together."""

    state: int
    """Resident: weights and optimizer moments (this device's share under FSDP), and DDP's
    gradient buckets."""
    grads: int
    """The fp32 gradients at the end of the backward pass (this device's share under FSDP)."""
    casts: int
    """bf16 copies of the weight matrices kept by autocast (0 in fp32 and under FSDP's mixed
    precision)."""
    activations: int
    """Activations saved for the backward pass over the micro-batch (with activation
    checkpointing, each block's input)."""
    logits: int
    """The logits, their log-softmax and its gradient over the micro-batch."""
    points: tuple[Point, ...]
    """The moments where the peak can fall (module docstring); the largest is the peak."""

    @property
    def peak(self) -> Point:
        return max(self.points, key=lambda p: p.bytes)

    @property
    def total(self) -> int:
        return self.state + self.peak.bytes

    def breakdown(self) -> str:
        """The total's terms in GB, at the point that sets it."""
        terms = " + ".join(f"{name} {b / 1e9:.1f}" for name, b in self.peak.terms if b)
        return f"state {self.state / 1e9:.1f} + at {self.peak.name}: {terms}"


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


def _attention_input_params(shape: ModelShape) -> int:
    """The parameters of the matrix a block's backward reaches last: the attention's query
    projection (d^2), or its fused query-key-value projection (3 d^2) in gpt2 and modernbert."""
    return (3 if shape.arch in ("gpt2", "modernbert") else 1) * shape.n_embd**2


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
    backend: str = "nccl",
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
    backend : {"nccl", "gloo"}
        The collectives' library under FSDP: gloo (CPU) stages every all-gather and
        reduce-scatter through a copy of the whole unsharded buffer; NCCL does not.
    """
    d, f, L, V = shape.n_embd, shape.ffn_dim, shape.n_layer, shape.vocab_size
    tokens = micro_batch * shape.seq_len
    counts = count_params(shape)
    n = counts.total
    fsdp = parallel == "fsdp" and devices > 1  # one device trains without a wrapper
    mixed = fsdp and precision == "bf16" and fsdp_mixed_precision
    autocast = precision == "bf16" and not mixed
    a_d, a_f, b_d = _ACTIVATIONS[(shape.arch, "bf16_params" if mixed else precision)]
    sharded_over = devices if fsdp else 1
    state = -(-12 * n // sharded_over)  # fp32 weights and AdamW's two moments
    if parallel == "ddp" and devices > 1:
        state += 4 * n  # its gradient buckets
    grads = -(-4 * n // sharded_over)
    block_activations = int(tokens * (a_d * d + a_f * f))  # one block's, for its backward
    outside = int(tokens * b_d * d)  # those saved outside the blocks
    block_casts = 2 * _block_matrix_params(shape) if autocast else 0
    casts = 2 * matrix_params(shape) if autocast else 0
    logits = LOGIT_BYTES * V * tokens
    # The gradients flowing through a block's backward, by precision.
    temporaries = BACKWARD_TEMPORARIES["fp32" if precision == "fp32" else "bf16"] * d * tokens
    block_input = tokens * (2 if mixed else 4) * d  # the residual stream a block takes in
    if activation_checkpointing:
        # A block keeps its input; its backward makes its other activations and its casts
        # again. With an fp32 residual stream its first norm saves the very input it kept;
        # under FSDP's mixed precision llama's norm saves an fp32 copy of it instead (a layer
        # norm's saved input is counted twice there: an over-count).
        kept = block_input
        activations = L * kept + outside
        recomputed = block_activations - (0 if mixed else block_input) + block_casts
    else:
        kept = block_activations + block_casts
        activations = L * block_activations + outside
        recomputed = 0
    # A block's backward peaks as it starts, with its activations all alive and only its
    # first gradient made (its MLP's output projection, d f parameters), or as it ends, with
    # all its gradients made, its input, its first norm's fp32 backward and under autocast
    # the cast of the matrix it reaches last (module docstring).
    first_gradient = d * f
    early = kept + recomputed + temporaries
    late = block_input + END_TEMPORARIES * d * tokens
    late += (2 * _attention_input_params(shape)) if autocast else 0
    block = counts.non_embedding // L  # a block's parameters (the few outside: the root's)
    root = n - L * block  # the root's: embeddings, final norm, head
    param_bytes = 2 if mixed else 4  # FSDP's gathered weights and their unsharded gradients
    gathered = param_bytes * (root + (0 if reshard_after_forward else L * block)) if fsdp else 0
    # With activation checkpointing no block's casts are saved for the backward pass, but
    # autocast's cache keeps them all until the forward pass ends: a point of its own.
    saved_casts = casts - L * block_casts if activation_checkpointing else casts
    forward_end = Point("the forward's end", (
        ("gathered weights", gathered),
        ("bf16 weight casts", casts),
        # the head's bf16 logits and the fp32 copy the model returns (measured)
        ("activations and logits", activations + 6 * V * tokens),
    ))  # fmt: skip
    start = Point("the backward's start", (
        ("gathered weights", gathered),
        ("bf16 weight casts", saved_casts),
        ("activations and logits", activations + logits),
    ))  # fmt: skip
    if fsdp:
        rest = _fsdp_points(
            L, block, root, V * d, devices, param_bytes, reshard_after_forward,
            backend == "gloo", outside=outside, kept=kept, first_gradient=first_gradient,
            early=early, late=late,
        )  # fmt: skip
    else:
        rest = []
        # the head's gradient (tied: the embedding's), made by the head's backward, with the
        # encoders' head transform's (d^2)
        head = V * d + (d * d if shape.arch in ("bert", "modernbert") else 0)
        for k in _block_ends(L):
            before = (
                ("gradients: the head's and the blocks' above", 4 * (head + (L - 1 - k) * block)),
                ("activations: the blocks' below and outside them", outside + k * kept),
            )
            rest += _block_backward(
                _block_name(k, L), before, (4 * first_gradient, early), (4 * block, late)
            )
        rest.append(Point("the backward's end", (
            ("gradients", grads),
            # its dense gradient and the sum with the tied head's (an upper bound untied)
            ("the embedding's gradient", 8 * V * d),
        )))  # fmt: skip
    return MemoryEstimate(
        state=state,
        grads=grads,
        casts=casts,
        activations=activations,
        logits=logits,
        points=(*([forward_end] if activation_checkpointing and autocast else []), start, *rest),
    )


def _fsdp_points(
    n_layer: int,
    block: int,
    root: int,
    embedding: int,
    devices: int,
    param_bytes: int,
    reshard: bool,
    gloo: bool,
    *,
    outside: int,
    kept: int,
    first_gradient: int,
    early: int,
    late: int,
) -> list[Point]:
    """Under FSDP2, after the backward's start (module docstring): each block's backward pass
    (under gloo also its start, where it gathers the next block ahead) and its gradients'
    reduce-scatter, for the blocks `_fsdp_blocks` names; then the embedding's backward and the
    root's reduce-scatter.

    ``block`` and ``root`` are parameter counts, ``embedding`` the embedding matrix's;
    ``kept`` the bytes a block keeps for its backward; ``first_gradient`` the parameters of
    the first gradient its backward makes; ``early`` the bytes of its activations, casts and
    temporaries as its backward starts, ``late`` those of its input, temporaries and last
    cast as it ends.
    """
    weights = param_bytes * block  # a block's gathered weights, and its unsharded gradients
    shard = -(-4 * block // devices)  # its reduced fp32 gradients, this device's share
    root_weights = param_bytes * root  # gathered from the forward to the end
    points = []
    for k in _fsdp_blocks(n_layer):
        which = _block_name(k, n_layer)
        before = (
            ("the root's weights gathered", root_weights),
            ("the root's gradients", root_weights),  # the head's, from the backward's start
            ("the blocks below, kept gathered", 0 if reshard else k * weights),
            ("activations", outside + k * kept),  # the blocks' below it
            ("reduced gradients", (n_layer - 1 - k) * shard),  # the blocks' above it
        )
        prefetched = weights if reshard and k > 0 else 0
        above = 4 * block if k < n_layer - 1 else 0  # its reduce buffer, kept until now
        if gloo and prefetched:  # as it starts: the next block's all-gather and its staging
            cast_shard = -(-weights // devices) if param_bytes == 2 else 0  # cast to bf16
            points.append(Point(f"{which} block's prefetch", (
                *before,
                ("its weights gathered", weights),
                ("the block above's reduce buffer", above),
                ("its activations", kept),
                ("the next block's all-gather: its input, output and staging copy",
                 cast_shard + 2 * prefetched),
            )))  # fmt: skip
        holding = (
            ("its weights gathered", weights),
            ("the next block's prefetched", prefetched),
            ("the block above's reduce buffer", above),
        )
        points += _block_backward(
            which, (*before, *holding), (param_bytes * first_gradient, early), (weights, late)
        )
        # Its gradients are copied into one fp32 buffer and freed; under gloo the
        # reduce-scatter then stages that buffer through a copy, beside this device's share.
        points.append(Point(f"{which} block's reduce-scatter", (
            *before,
            ("the next block's prefetched", prefetched),
            ("its reduce buffer", 4 * block),
            ("its gradients (gloo: its share and a staging copy)",
             shard + 4 * block if gloo else weights),
        )))  # fmt: skip
    blocks_reduced = ("the blocks' reduced gradients", n_layer * shard)
    embedding_backward = Point("the embedding's backward", (
        blocks_reduced,
        ("the first block's reduce buffer", 4 * block),  # kept to the root's reduce-scatter
        ("the root's weights gathered", root_weights),
        ("the root's gradients", root_weights),
        ("the embedding's dense gradient", param_bytes * embedding),
    ))  # fmt: skip
    root_shard = -(-4 * root // devices)
    root_reduce = Point("the root's reduce-scatter", (
        blocks_reduced,
        ("its reduce buffer", 4 * root),
        ("its gradients (gloo: its share and a staging copy)",
         root_shard + 4 * root if gloo else root_weights),
    ))  # fmt: skip
    return [*points, embedding_backward, root_reduce]


def _block_backward(
    which: str,
    beside: tuple[tuple[str, int], ...],
    start: tuple[int, int],
    end: tuple[int, int],
) -> list[Point]:
    """A block's backward pass as it starts and as it ends (module docstring), each beside
    ``beside``: ``start`` the bytes of its first gradient and of its activations, casts and
    temporaries; ``end`` those of all its gradients and of its input, temporaries and last
    cast."""
    return [
        Point(f"{which} block's backward", (
            *beside,
            ("its first gradient", start[0]),
            ("its activations, casts and temporaries", start[1]),
        )),
        Point(f"the end of {which} block's backward", (
            *beside,
            ("its gradients", end[0]),
            ("its input, temporaries and last cast", end[1]),
        )),
    ]  # fmt: skip


def _block_ends(n_layer: int) -> list[int]:
    """The blocks (0 the first) among which a block's points on one device are largest, last
    first: every term is linear in the block's index."""
    return sorted({n_layer - 1, 0}, reverse=True)


def _fsdp_blocks(n_layer: int) -> list[int]:
    """The blocks (0 the first) among which a block's points are largest, last first: from the
    penultimate to the second every term changes linearly with the block's index (activations
    fall and reduced gradients grow by a block's), so the largest is at one end or the other;
    the last has no reduce buffer above it, the first prefetches nothing."""
    return sorted({n_layer - 1, n_layer - 2, 1, 0} & set(range(n_layer)), reverse=True)


def _block_name(k: int, n_layer: int) -> str:
    if k == n_layer - 1:
        return "the last"
    if k == 0:
        return "the first"
    return "the penultimate" if k == n_layer - 2 else "the second"
