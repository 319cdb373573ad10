"""The peak resident memory of a training step, each measured in fresh processes: what
tests/train/test_memory.py and bench/bench_memory.py hold `harness.memory`'s estimates against.

A process trains two steps of a llama shape as harness.train.loop does and reports how far its
resident memory rose in the second, above the weights and AdamW's moments (the first step
allocates them): /proc/self/clear_refs resets the high-water mark (VmHWM) before it. glibc is
told to return every freed block at once (MALLOC_MMAP_THRESHOLD_), so that the peak is the
tensors'. Under FSDP each of ``ranks`` gloo processes trains through the learner's own FSDP2
wrapping and reports its own peak.

Run as a script, this file is the child (spawn's children import the main module by path).
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from harness.model import ModelShape

_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def step_peak(shape: ModelShape, batch: int, precision: str, checkpointing: bool) -> int:
    """One process's peak in its second training step above its resident state."""
    return _run(["step", *_shape_args(shape, batch, precision), str(int(checkpointing))])[0]


def block_peaks(shape: ModelShape, batch: int, precision: str, checkpointing: bool) -> list[int]:
    """The largest bytes alive within each block's backward pass (first block first), of the
    tensors one process's second training step makes: torch's memory profiler's timeline,
    split at each block's output and input gradients."""
    return _run(["blocks", *_shape_args(shape, batch, precision), str(int(checkpointing))])


def fsdp_peaks(
    shape: ModelShape,
    batch: int,
    ranks: int,
    *,
    precision: str,
    mixed: bool,
    reshard: bool,
    checkpointing: bool,
) -> list[int]:
    """Each FSDP rank's peak in its second training step above its shards' resident state."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = [str(int(x)) for x in (mixed, reshard, checkpointing)]
    return _run(["fsdp", str(port), str(ranks), *_shape_args(shape, batch, precision), *flags])


def _shape_args(shape: ModelShape, batch: int, precision: str) -> list[str]:
    values = (shape.n_layer, shape.n_embd, shape.n_head, shape.ffn_dim, shape.vocab_size,
              shape.seq_len, batch, precision)  # fmt: skip
    return [str(v) for v in values]


def _run(args: list[str]) -> list[int]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         timeout=900, env={**os.environ, **_ENV})  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {out.returncode}:\n{out.stderr[-4000:]}")
    return [int(p) for p in out.stdout.split()]


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) * 1024 for x in f if x.startswith(key))


def _second_step_rise(step: Callable[[], None], sync: Callable[[], object] = lambda: None) -> int:
    step()  # the first step allocates AdamW's moments
    gc.collect()
    sync()  # every rank done with its first step
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the resident size now
    before = _status("VmRSS:")
    step()
    return _status("VmHWM:") - before


def _shape(L: str, d: str, heads: str, f: str, V: str, s: str) -> ModelShape:
    return ModelShape(arch="llama", n_layer=int(L), n_embd=int(d), n_head=int(heads),
                      vocab_size=int(V), seq_len=int(s), ffn_dim=int(f))  # fmt: skip


def _step_main(L: str, d: str, heads: str, f: str, V: str, s: str, b: str, precision: str,
               checkpointing: str, *, blocks: bool = False) -> None:  # fmt: skip
    import torch
    import torch.nn.functional as F

    from harness.model import build_model, enable_activation_checkpointing

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = _shape(L, d, heads, f, V, s)
    model = build_model(shape)
    if checkpointing == "1":  # as harness.train.learner builds it
        enable_activation_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    ids = torch.randint(0, shape.vocab_size - 1, (int(b), shape.seq_len))

    def step() -> None:  # as harness.train.loop's
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
        del logits
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if blocks:
        print(" ".join(str(p) for p in _block_backward_peaks(model, step)))
    else:
        print(_second_step_rise(step))


def _block_backward_peaks(model: Any, step: Callable[[], None]) -> list[int]:
    import time

    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    # A block's backward starts when its output's gradient is made and ends with its input's.
    marks: dict[tuple[str, int], int] = {}

    def mark(key: tuple[str, int]) -> Callable[[object], None]:
        def hook(grad: object) -> None:
            marks.setdefault(key, time.time_ns())

        return hook

    def on_output(i: int) -> Callable[..., None]:
        def hook(module: object, args: object, kwargs: object, out: object) -> None:
            out = out[0] if isinstance(out, tuple) else out
            if out.requires_grad:  # not in the recompute, whose outputs are discarded
                out.register_hook(mark(("start", i)))

        return hook

    def on_input(i: int) -> Callable[..., None]:
        def hook(module: object, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            if x.requires_grad:
                x.register_hook(mark(("end", i)))

        return hook

    layers = list(model.model.layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(on_output(i), with_kwargs=True)
        layer.register_forward_pre_hook(on_input(i), with_kwargs=True)
    step()  # the first step allocates AdamW's moments
    marks.clear()
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities, profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:  # fmt: skip
        step()
    alive: dict[object, int] = {}
    total, peaks = 0, [0] * len(layers)
    for t, action, (key, version), size in prof._memory_profile().timeline:
        if action == Action.CREATE:  # a storage made again at the same key replaces it
            total += size - alive.get((key, version), 0)
            alive[(key, version)] = size
        elif action == Action.INCREMENT_VERSION and (key, version) in alive:
            alive[(key, version + 1)] = alive.pop((key, version))
        elif action == Action.DESTROY and (key, version) in alive:
            total -= alive.pop((key, version))
        for i in range(len(layers)):
            if marks[("start", i)] <= t <= marks[("end", i)]:
                peaks[i] = max(peaks[i], total)
    return peaks


def _rank_main(rank: int, port: str, world: int, args: list[str]) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from harness.config import DataConfig, ExecutionConfig, TrainConfig
    from harness.grid import RunSpec
    from harness.train.learner import build_learner

    L, d, heads, f, V, s, b, precision, mixed, reshard, checkpointing = args
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    shape = _shape(L, d, heads, f, V, s)
    spec = RunSpec(experiment="m", model=shape, data=DataConfig(seq_len=int(s)),
                   train=TrainConfig(precision=precision), n_tokens=4096, seed=0)  # fmt: skip
    execution = ExecutionConfig(parallel="fsdp", fsdp_mixed_precision=mixed == "1",
                                fsdp_reshard_after_forward=reshard == "1",
                                activation_checkpointing=checkpointing == "1")  # fmt: skip
    dtype = torch.bfloat16 if precision == "bf16" else None
    learner = build_learner(spec, execution, torch.device("cpu"), "fsdp", dtype)
    ids = torch.randint(0, shape.vocab_size - 1, (int(b), shape.seq_len))

    def step() -> None:  # as harness.train.loop's
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=learner.autocast is not None):
            logits = learner.forward(input_ids=ids).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
        del logits
        loss.backward()
        learner.step(0.0)

    rise = _second_step_rise(step, dist.barrier)
    peaks = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(peaks, torch.tensor([rise], dtype=torch.float64))
    if rank == 0:
        print(" ".join(str(int(p)) for p in peaks))
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] in ("step", "blocks"):
        _step_main(*sys.argv[2:], blocks=sys.argv[1] == "blocks")
    else:
        import torch.multiprocessing as mp

        port, world = sys.argv[2], int(sys.argv[3])
        mp.spawn(_rank_main, args=(port, world, sys.argv[4:]), nprocs=world)
