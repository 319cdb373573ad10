"""The memory estimate of a training run (`harness.memory`) against torch's own accounting: the
bytes autograd saves for the backward pass (its hooks), and the peak RSS of a training step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.memory import estimate_memory, matrix_params
from harness.model import ModelShape, build_model, count_params, default_ffn_dim


def _saved_bytes(shape: ModelShape, batch: int, precision: str) -> int:
    """Bytes of every tensor autograd saves in one forward pass (not the parameters)."""
    torch.manual_seed(0)
    model = build_model(shape)
    ids = torch.randint(0, shape.vocab_size - 1, (batch, shape.seq_len))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(input_ids=ids, labels=ids)
    return sum(n for ptr, n in storages.items() if ptr not in params)


# Shapes none of the constants were fitted on: other widths, head counts, MLP widths and lengths.
SHAPES = [
    ("llama", 3, 160, 5, 448, 384, 96),
    ("llama", 2, 96, 2, 512, 1000, 200),
    ("gpt2", 2, 96, 3, 384, 700, 64),
    ("bert", 2, 128, 4, 512, 600, 64),
    ("modernbert", 2, 96, 3, 256, 600, 64),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch,n_layer,d,heads,ffn,vocab,seq", SHAPES)
def test_saved_activations_match_autograd(
    arch: str, n_layer: int, d: int, heads: int, ffn: int, vocab: int, seq: int, precision: str
) -> None:
    shape = ModelShape(arch=arch, n_layer=n_layer, n_embd=d, n_head=heads, vocab_size=vocab,
                       seq_len=seq, ffn_dim=ffn)  # fmt: skip
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
    assert one.total == one.state + max(one.casts + one.activations + one.logits, one.grads)
    fsdp = estimate_memory(shape, micro_batch=2, devices=4, parallel="fsdp", precision="bf16")
    assert (fsdp.state, fsdp.grads) == (12 * 88_640 // 4, 88_640)
    assert fsdp.activations == one.activations
    ddp = estimate_memory(shape, micro_batch=2, devices=4, parallel="ddp", precision="fp32")
    assert ddp.state == 16 * 88_640 and ddp.casts == 0  # and its gradient buckets


_STEP = textwrap.dedent(
    """
    import gc, sys, torch
    from harness.model import ModelShape, build_model
    torch.set_num_threads(1)
    torch.manual_seed(0)
    L, d, heads, f, V, s, b, precision = sys.argv[1:]
    shape = ModelShape(arch="llama", n_layer=int(L), n_embd=int(d), n_head=int(heads),
                       vocab_size=int(V), seq_len=int(s), ffn_dim=int(f))
    model = build_model(shape)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    ids = torch.randint(0, shape.vocab_size - 1, (int(b), shape.seq_len))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) * 1024 for x in f if x.startswith(key))

    step()  # the first step allocates AdamW's moments
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the resident size now
    before = status("VmRSS:")
    step()
    print(status("VmHWM:") - before)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
# Where the gradients (4 bytes a parameter) would add a fifth to the peak if they coexisted
# with the activations.
@pytest.mark.slow
@pytest.mark.parametrize("L,d,heads,vocab,seq,batch", [(6, 768, 12, 4096, 256, 8)])
def test_the_peak_of_a_training_step_on_this_cpu(
    L: int, d: int, heads: int, vocab: int, seq: int, batch: int, precision: str
) -> None:
    # A fresh process's peak resident memory in its second step rises above the weights and
    # AdamW's moments by the casts, the activations and the logits. glibc is told to return
    # every freed block at once (MALLOC_MMAP_THRESHOLD_), so that the peak is the tensors'.
    shape = ModelShape(arch="llama", n_layer=L, n_embd=d, n_head=heads, vocab_size=vocab,
                       seq_len=seq, ffn_dim=default_ffn_dim("llama", d))  # fmt: skip
    args = [str(v) for v in (L, d, heads, shape.ffn_dim, vocab, seq, batch, precision)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _STEP, *args], capture_output=True, text=True,
                         check=True, timeout=600, env=env)  # fmt: skip
    est = estimate_memory(shape, micro_batch=batch, precision=precision)
    assert int(out.stdout.strip()) == pytest.approx(est.total - est.state, rel=0.03)
