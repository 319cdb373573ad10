"""The memory estimate of a training run (`harness.memory`) against torch's own accounting: the
bytes autograd saves for the backward pass (its hooks), and the peak RSS of a training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _peaks import fsdp_peaks, step_peak

from harness import memory
from harness.memory import MemoryEstimate, estimate_memory, matrix_params
from harness.model import ModelShape, build_model, count_params, default_ffn_dim


def _saved_bytes(shape: ModelShape, batch: int, precision: str) -> int:
    """Bytes of every tensor autograd saves in one forward pass and the training loop's loss
    (not the parameters). "bf16_params": the model in bf16, as FSDP's mixed precision gathers
    it."""
    torch.manual_seed(0)
    model = build_model(shape)
    if precision == "bf16_params":
        model = model.to(torch.bfloat16)
    ids = torch.randint(0, shape.vocab_size - 1, (batch, shape.seq_len))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=ids).logits
        F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())  # as harness.train.loop
    return sum(n for ptr, n in storages.items() if ptr not in params)


# Shapes none of the constants were fitted on: other widths, head counts, MLP widths and lengths.
SHAPES = [
    ("llama", 3, 160, 5, 448, 384, 96),
    ("llama", 2, 96, 2, 512, 1000, 200),
    ("gpt2", 2, 96, 3, 384, 700, 64),
    ("bert", 2, 128, 4, 512, 600, 64),
    ("modernbert", 2, 96, 3, 256, 600, 64),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16_params"])
@pytest.mark.parametrize("arch,n_layer,d,heads,ffn,vocab,seq", SHAPES)
def test_saved_activations_match_autograd(
    arch: str, n_layer: int, d: int, heads: int, ffn: int, vocab: int, seq: int, precision: str
) -> None:
    shape = ModelShape(arch=arch, n_layer=n_layer, n_embd=d, n_head=heads, vocab_size=vocab,
                       seq_len=seq, ffn_dim=ffn)  # fmt: skip
    if precision == "bf16_params":  # FSDP's mixed precision, over two devices
        est = estimate_memory(shape, micro_batch=3, devices=2, parallel="fsdp")
        start = next(p for p in est.points if p.name == "the backward's start")
        assert est.casts == 0 and dict(start.terms)["gathered weights"] > 0
    else:
        est = estimate_memory(shape, micro_batch=3, precision=precision)
    # What autograd saves: the activations, the log-softmax (4 of the logits' 12 bytes: the
    # other 8 are the logits and the gradient alive at the backward's start) and the casts.
    saved = est.activations + est.logits // 3 + est.casts
    assert saved == pytest.approx(_saved_bytes(shape, 3, precision), rel=0.05)


def test_state_and_casts_by_hand() -> None:
    shape = ModelShape(arch="llama", n_layer=2, n_embd=64, n_head=2, vocab_size=100, seq_len=8,
                       ffn_dim=128)  # fmt: skip
    # 2 x (4 d^2 + 3 d f + 2 d) + d + V d (tied) = 2 x (16384 + 24576 + 128) + 64 + 6400
    assert count_params(shape).total == 88_640
    assert matrix_params(shape) == 2 * (4 * 64 * 64 + 3 * 64 * 128) + 100 * 64
    one = estimate_memory(shape, micro_batch=2, precision="bf16")
    assert (one.state, one.grads, one.casts) == (12 * 88_640, 4 * 88_640, 2 * 88_320)
    assert one.logits == 12 * 100 * 2 * 8
    end = one.grads + 8 * 100 * 64  # the embedding's dense gradient, and its sum with the head's
    # 16 tokens in bf16: a block's activations 16 x (34.3 x 64 + 8.0 x 128) = 51,507 and casts
    # 2 x 40,960; those outside the blocks 16 x 9.9 x 64 = 10,137; its input 16 x 4 x 64; its
    # backward's temporaries 6 x 64 x 16 = 6,144; its first gradient (d f) and all its
    # gradients (41,120 parameters) in fp32; the head's (the embedding's) from the head's backward;
    # at its end, beside its input, its first norm's fp32 backward (26 x 64 x 16) and the cast
    # of the query projection it reaches last (2 d^2).
    kept, outside, temporaries = 51_507 + 81_920, 10_137, 6_144
    at_end = 16 * 4 * 64 + 26 * 64 * 16 + 2 * 64 * 64
    first_gradient, block_gradients, head = 4 * 64 * 128, 4 * 41_120, 4 * 6_400
    assert _points(one) == {
        "the backward's start": one.casts + one.activations + one.logits,
        "the last block's backward": head + outside + kept + first_gradient + kept + temporaries,
        "the end of the last block's backward":
            head + outside + kept + block_gradients + at_end,
        "the first block's backward":
            head + block_gradients + outside + first_gradient + kept + temporaries,
        "the end of the first block's backward":
            head + block_gradients + outside + block_gradients + at_end,
        "the backward's end": end,
    }  # fmt: skip
    # The end's terms, which the start's of the first block happen to add up to here.
    at_the_end = next(p for p in one.points if p.name == "the end of the last block's backward")
    assert dict(at_the_end.terms)["its gradients"] == block_gradients
    assert dict(at_the_end.terms)["its input, temporaries and last cast"] == at_end
    assert one.total == one.state + max(one.casts + one.activations + one.logits, end)


def _points(est: MemoryEstimate) -> dict[str, int]:
    return {p.name: p.bytes for p in est.points}


def test_fsdp_points_by_hand() -> None:
    shape = ModelShape(arch="llama", n_layer=2, n_embd=64, n_head=2, vocab_size=100, seq_len=8,
                       ffn_dim=128)  # fmt: skip
    fsdp = estimate_memory(shape, micro_batch=2, devices=4, parallel="fsdp", precision="bf16")
    assert (fsdp.state, fsdp.grads, fsdp.casts) == (12 * 88_640 // 4, 88_640, 0)
    # Mixed precision: bf16 gathered weights and unsharded gradients, bf16 activations, 16
    # tokens. A block: 41,120 parameters (with half the final norm); the root: the 6,400 of the
    # embedding. One block's activations 16 x (24.1 x 64 + 8.0 x 128) = 41,062; those outside
    # the blocks 16 x 8.6 x 64 = 8,806; its backward's temporaries 6 x 64 x 16 = 6,144; its
    # first gradient (d f) 2 x 64 x 128 = 16,384; at its end its input 16 x 2 x 64 and its
    # first norm's fp32 backward 26 x 64 x 16.
    block_acts, outside, temporaries, first = 41_062, 8_806, 6_144, 16_384
    at_end = 16 * 2 * 64 + 26 * 64 * 16
    assert fsdp.activations == 2 * block_acts + outside
    root, block, gathered = 2 * 6_400 + 2 * 6_400, 41_120, 2 * 41_120  # weights and gradients
    shard = 4 * block // 4  # a block's reduced fp32 gradients, this device's quarter
    assert _points(fsdp) == {
        "the backward's start": 2 * 6_400 + fsdp.activations + 12 * 100 * 16,
        # its weights, the next block's prefetched, its first gradient, its activations
        "the last block's backward": sum(
            (root, outside, block_acts, 2 * gathered, first, block_acts, temporaries)
        ),
        # ... all its gradients, its input
        "the end of the last block's backward": sum(
            (root, outside, block_acts, 3 * gathered, at_end)
        ),
        # the next block's, its fp32 reduce buffer, its gradients
        "the last block's reduce-scatter": sum(
            (root, outside, block_acts, gathered, 4 * block, gathered)
        ),
        # below nothing, above the last block's shard and its reduce buffer
        "the first block's backward": sum(
            (root, outside, shard, gathered, 4 * block, first, block_acts, temporaries)
        ),
        "the end of the first block's backward": sum(
            (root, outside, shard, gathered, 4 * block, gathered, at_end)
        ),
        "the first block's reduce-scatter": root + outside + shard + 4 * block + gathered,
        # the blocks' shards, the first block's reduce buffer (kept to the root's reduce), the
        # root's weights and gradients, the embedding's dense gradient (6,400 in bf16)
        "the embedding's backward": 2 * shard + 4 * block + root + 2 * 6_400,
        # the blocks' shards, its fp32 reduce buffer, its bf16 gradients
        "the root's reduce-scatter": 2 * shard + 4 * 6_400 + 2 * 6_400,
    }
    assert fsdp.total == fsdp.state + _points(fsdp)["the end of the first block's backward"]
    # gloo stages the reduce-scatter through a copy of its whole input, beside the shard.
    # Where it prefetches the first block, the last block's backward starts with the all-gather:
    # its input (this device's shard cast to bf16), its output and a staging copy of it.
    gloo = estimate_memory(shape, micro_batch=2, devices=4, parallel="fsdp", backend="gloo")
    prefetch = _points(gloo).pop("the last block's prefetch")
    assert prefetch == sum(
        (root, outside, block_acts, gathered, block_acts, gathered // 4, 2 * gathered)
    )
    staged = {k: v - _points(fsdp)[k] for k, v in _points(gloo).items() if "prefetch" not in k}
    assert staged["the last block's reduce-scatter"] == shard + 4 * block - gathered
    assert staged["the root's reduce-scatter"] == 6_400 + 4 * 6_400 - 2 * 6_400
    assert (
        staged["the first block's backward"] == staged["the end of the first block's backward"] == 0
    )
    # Blocks kept gathered from the forward: nothing prefetched; at the last block's backward
    # the block below is still gathered.
    keep = estimate_memory(shape, micro_batch=2, devices=4, parallel="fsdp",
                           reshard_after_forward=False)  # fmt: skip
    kept, resharded = _points(keep), _points(fsdp)
    assert kept["the backward's start"] == resharded["the backward's start"] + 2 * gathered
    last = "the last block's reduce-scatter"
    assert kept[last] == resharded[last]
    autocast = estimate_memory(shape, micro_batch=2, devices=4, parallel="fsdp",
                               fsdp_mixed_precision=False)  # fmt: skip
    assert autocast.casts == 2 * matrix_params(shape) and autocast.state == fsdp.state
    alone = estimate_memory(shape, micro_batch=2, devices=1, parallel="fsdp")
    assert alone == estimate_memory(shape, micro_batch=2)  # one device trains without FSDP
    ddp = estimate_memory(shape, micro_batch=2, devices=4, parallel="ddp", precision="fp32")
    assert ddp.state == 16 * 88_640 and ddp.casts == 0  # and its gradient buckets


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("reshard", [True, False])
@pytest.mark.parametrize("mixed,backend", [(True, "nccl"), (False, "nccl"), (True, "gloo")])
@pytest.mark.parametrize("n_layer,devices,batch", [(7, 2, 1), (7, 8, 16), (12, 4, 2), (5, 4, 64)])
def test_four_blocks_hold_the_largest_of_every_block(
    monkeypatch: pytest.MonkeyPatch,
    n_layer: int,
    devices: int,
    batch: int,
    mixed: bool,
    backend: str,
    reshard: bool,
    checkpointing: bool,
) -> None:
    # The FSDP points are counted at the last, penultimate, second and first blocks only: the
    # largest over every block, counted one by one, is among them.
    shape = ModelShape(arch="llama", n_layer=n_layer, n_embd=256, n_head=4, vocab_size=2048,
                       seq_len=64, ffn_dim=688)  # fmt: skip

    def peak() -> int:
        return estimate_memory(shape, micro_batch=batch, devices=devices, parallel="fsdp",
                               fsdp_mixed_precision=mixed, reshard_after_forward=reshard,
                               activation_checkpointing=checkpointing,
                               backend=backend).total  # fmt: skip

    four = peak()
    monkeypatch.setattr(memory, "_fsdp_blocks", lambda n: list(range(n - 1, -1, -1)))
    assert peak() == four


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("n_layer,batch", [(7, 1), (7, 16), (12, 2), (5, 64)])
def test_the_first_and_last_blocks_hold_the_largest_of_every_block(
    monkeypatch: pytest.MonkeyPatch, n_layer: int, batch: int, precision: str, checkpointing: bool
) -> None:
    # On one device a block's points are counted at the first and the last block only.
    shape = ModelShape(arch="llama", n_layer=n_layer, n_embd=256, n_head=4, vocab_size=2048,
                       seq_len=64, ffn_dim=688)  # fmt: skip

    def largest_block_point() -> int:
        est = estimate_memory(shape, micro_batch=batch, precision=precision,
                              activation_checkpointing=checkpointing)  # fmt: skip
        return max(p.bytes for p in est.points if "block's" in p.name)

    ends = largest_block_point()
    monkeypatch.setattr(memory, "_block_ends", lambda n: list(range(n - 1, -1, -1)))
    assert largest_block_point() == ends


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
# Where the gradients (4 bytes a parameter) would add a fifth to the peak if they coexisted
# with the activations.
@pytest.mark.parametrize("L,d,heads,vocab,seq,batch", [(6, 768, 12, 4096, 256, 8)])
def test_the_peak_of_a_training_step_on_this_cpu(
    L: int, d: int, heads: int, vocab: int, seq: int, batch: int, precision: str
) -> None:
    # A fresh process's peak resident memory in its second step rises above the weights and
    # AdamW's moments by the casts, the activations and the logits (tests/_peaks.py).
    shape = ModelShape(arch="llama", n_layer=L, n_embd=d, n_head=heads, vocab_size=vocab,
                       seq_len=seq, ffn_dim=default_ffn_dim("llama", d))  # fmt: skip
    est = estimate_memory(shape, micro_batch=batch, precision=precision)
    assert step_peak(shape, batch, precision, False) == pytest.approx(
        est.total - est.state, rel=0.03
    )


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_peak_of_a_step_with_activation_checkpointing(precision: str) -> None:
    # On a shape BACKWARD_TEMPORARIES was not measured on, where the first block's backward sets
    # the peak: the block points were 0.3-7.8% above the most alive within a block's backward
    # on the shapes of `bench/bench_memory.py --blocks`; and below what the step would need
    # without checkpointing.
    shape = ModelShape(arch="llama", n_layer=8, n_embd=448, n_head=7, vocab_size=4096,
                       seq_len=256, ffn_dim=default_ffn_dim("llama", 448))  # fmt: skip
    est = estimate_memory(shape, micro_batch=8, precision=precision, activation_checkpointing=True)
    peak = step_peak(shape, 8, precision, True)
    assert est.peak.name == "the first block's backward"
    assert 0.99 * peak <= est.total - est.state <= 1.08 * peak
    plain = estimate_memory(shape, micro_batch=8, precision=precision)
    assert est.total - est.state < (plain.total - plain.state) / 2


# (n_layer, width, heads, vocabulary, seq_len, micro-batch): a peak at the backward's start,
# and one in a block's backward (few wide blocks, few tokens).
# Neither is among bench/bench_memory.py's shapes, which the docstring's ranges come from.
_ACTIVATIONS_PEAK = (6, 576, 9, 8192, 128, 8)
_BLOCK_PEAK = (3, 1280, 20, 4096, 64, 4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "ranks,precision,mixed,reshard,checkpointing,L,d,heads,vocab,seq,batch",
    [
        (2, "bf16", True, True, False, *_ACTIVATIONS_PEAK),
        (2, "bf16", True, False, False, *_ACTIVATIONS_PEAK),
        (2, "bf16", False, True, False, *_ACTIVATIONS_PEAK),
        (2, "fp32", True, True, False, *_ACTIVATIONS_PEAK),
        (2, "bf16", True, True, True, *_ACTIVATIONS_PEAK),
        (4, "bf16", True, True, False, *_BLOCK_PEAK),
        (4, "bf16", True, False, False, *_BLOCK_PEAK),
        (4, "bf16", False, True, False, *_BLOCK_PEAK),
        (4, "bf16", True, True, True, *_BLOCK_PEAK),
        (4, "bf16", False, True, True, *_BLOCK_PEAK),
    ],
    ids=[
        "activations-peak-mixed",
        "activations-peak-mixed-keep",
        "activations-peak-autocast",
        "activations-peak-fp32",
        "activations-peak-mixed-checkpointing",
        "block-peak-4-ranks-mixed",
        "block-peak-4-ranks-mixed-keep",
        "block-peak-4-ranks-autocast",
        "block-peak-4-ranks-mixed-checkpointing",
        "block-peak-4-ranks-autocast-checkpointing",
    ],
)
def test_the_peak_of_an_fsdp_step(
    ranks: int,
    precision: str,
    mixed: bool,
    reshard: bool,
    checkpointing: bool,
    L: int,
    d: int,
    heads: int,
    vocab: int,
    seq: int,
    batch: int,
) -> None:
    # Each gloo rank's peak in its second step above its shards of the weights and AdamW's
    # moments, through the learner's own FSDP2 wrapping, on shapes none of the constants was
    # fitted on: one whose peak is where the backward pass starts, one whose blocks are large
    # beside its activations, where a block's backward or reduce-scatter sets it.
    shape = ModelShape(arch="llama", n_layer=L, n_embd=d, n_head=heads, vocab_size=vocab,
                       seq_len=seq, ffn_dim=default_ffn_dim("llama", d))  # fmt: skip
    peaks = fsdp_peaks(shape, batch, ranks, precision=precision, mixed=mixed, reshard=reshard,
                       checkpointing=checkpointing)  # fmt: skip
    est = estimate_memory(shape, micro_batch=batch, devices=ranks, parallel="fsdp",
                          precision=precision, fsdp_mixed_precision=mixed,
                          reshard_after_forward=reshard, activation_checkpointing=checkpointing,
                          backend="gloo")  # fmt: skip
    if not checkpointing:  # the shape is in the regime it stands for
        assert (est.peak.name == "the backward's start") == (L == _ACTIVATIONS_PEAK[0])
    assert len(peaks) == ranks
    # 0.9% below to 3.4% above every rank's peak on the shapes of bench/bench_memory.py.
    for peak in peaks:
        assert 0.99 * peak <= est.total - est.state <= 1.06 * peak
