"""One run on two processes through torch.distributed, gloo on this CPU (issue 17).

A k-process run computes the 1-process run's updates: each rank takes a contiguous share of
every global batch, losses weigh by the global batch's targets, gradients are averaged. What
differs is float32 summation order (the all-reduce adds the two halves' gradients; FSDP
reduce-scatters them; micro-batches add in steps), so per-step losses agree to a tolerance, not
bit for bit. Measured by bench/parallel_tolerance.py on the tiny grid (32 updates of 8 sequences,
2026-12-02): the largest relative difference of any logged training loss from the 1-process
run's was 1.4e-7 for DDP and for FSDP, 1.8e-7 for DDP with micro-batches of 3 and 1.9e-7 for
micro-batches on one process; of the validation loss, at most 5.0e-8. One sequence less per
update (batch 7 against 8) moves the first logged loss by 2.9e-4 and the worst by 0.10. TOL
lies between: 50x the rounding, 30x under the smallest real difference.

At one world size resuming is exact, bit for bit, as for one process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from _tiny import harness_cli, tiny_toml

from harness.config import ExecutionConfig, load_experiment
from harness.execute.placement import plan_slots
from harness.execute.ranks import train_on_devices
from harness.grid import expand
from harness.model import count_params
from harness.train import train

TOL = 1e-5
TOL_BF16 = 5e-3
"""bf16 against the fp32 run, measured the same way (2026-12-07): the worst logged training
loss moved 5.9e-4 under autocast on one process and under FSDP's mixed precision on two,
5.1e-4 under FSDP with autocast; the validation loss at most 1.9e-4. 8x the largest, and 20x
under the worst move of one sequence less per update (0.10)."""


def _exp(tmp_path: Path, n_tokens: str = "[8192]", every: int = 0):  # noqa: ANN202
    """The tiny experiment's one run (32 updates of 8 sequences at 8192 tokens)."""
    overrides = [f"--train.checkpoint_every_steps={every}"] if every else []
    exp = load_experiment(tiny_toml(tmp_path, n_tokens=n_tokens), overrides)
    (spec,) = expand(exp)
    return exp, spec


def _run_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "results" / "tiny" / "runs" / name


def _rows(run_dir: Path) -> list[tuple[int, float, str]]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [(int(r.split(",")[0]), float(r.split(",")[2]), r.split(",")[3]) for r in lines]


def _close(a: list[tuple[int, float, str]], b: list[tuple[int, float, str]]) -> float:
    """The largest relative difference of two metrics files' training losses (same steps)."""
    assert [r[0] for r in a] == [r[0] for r in b]
    return max(abs(x[1] - y[1]) / abs(x[1]) for x, y in zip(a, b, strict=True))


def _on(exp, k: int, parallel: str = "ddp", micro: int = 0) -> ExecutionConfig:  # noqa: ANN001
    return dataclasses.replace(
        exp.execution,
        device="cpu",
        threads=1,
        devices_per_run=k,
        parallel=parallel,
        micro_batch_size=micro,
    )


def _rank_pids() -> list[int]:
    """This process's children that are spawned ranks (not multiprocessing's helpers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"spawn_main" in cmd:
            pids.append(int(d.name))
    return pids


def _assert_within(result, run_dir: Path, reference, tol: float) -> None:  # noqa: ANN001
    """A finished run whose logged training losses and validation loss are within ``tol`` of
    the reference's (``one_process``)."""
    ref, ref_rows = reference
    assert result is not None and result.status == "done"
    assert _close(_rows(run_dir), ref_rows) < tol
    assert abs(result.val_loss - ref.val_loss) / ref.val_loss < tol


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny run on one process: the reference every test compares with."""
    tmp = tmp_path_factory.mktemp("one")
    exp, spec = _exp(tmp)
    result = train(spec, _run_dir(tmp, "one"), execution=_on(exp, 1))
    return result, _rows(_run_dir(tmp, "one"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parallel", "micro"), [("ddp", 0), ("fsdp", 0), ("ddp", 3)], ids=["ddp", "fsdp", "ddp-accum"]
)
def test_two_processes_train_what_one_does(
    tmp_path: Path,
    one_process,
    parallel: str,
    micro: int,  # noqa: ANN001
) -> None:
    exp, spec = _exp(tmp_path)
    execution = _on(exp, 2, parallel, micro)
    # How a run is spread over devices is not part of what it computes: the same run_id.
    assert expand(dataclasses.replace(exp, execution=execution))[0].run_id == spec.run_id
    result = train_on_devices(spec, _run_dir(tmp_path, parallel), execution=execution)
    _assert_within(result, _run_dir(tmp_path, parallel), one_process, TOL)
    assert result.world_size == 2 and result.parallel == parallel
    # Tokens per second count both processes' tokens, so MFU divides by both peaks.
    n = count_params(spec.model).non_embedding
    assert result.mfu == pytest.approx(6 * n * result.tokens_per_s / (2 * result.peak_flops))
    assert not _rank_pids()  # no rank outlives its run


@pytest.mark.slow
@pytest.mark.parametrize("mixed", [True, False], ids=["mixed-precision", "autocast"])
def test_fsdp_at_bf16_trains_what_fp32_does(tmp_path: Path, one_process, mixed: bool) -> None:  # noqa: ANN001
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[8192]"), ["--train.precision=bf16"])
    (spec,) = expand(exp)
    execution = dataclasses.replace(_on(exp, 2, "fsdp"), fsdp_mixed_precision=mixed)
    result = train_on_devices(spec, _run_dir(tmp_path, "bf16"), execution=execution)
    _assert_within(result, _run_dir(tmp_path, "bf16"), one_process, TOL_BF16)
    assert result.precision == "bf16"


@pytest.mark.slow
@pytest.mark.parametrize("devices,parallel", [(1, "ddp"), (2, "ddp"), (2, "fsdp")])
def test_activation_checkpointing_trains_what_keeping_activations_does(
    tmp_path: Path,
    one_process,
    devices: int,
    parallel: str,  # noqa: ANN001
) -> None:
    # The recomputed forward is the same computation: bit for bit on one process, to the
    # parallel runs' tolerance on two.
    exp, spec = _exp(tmp_path)
    execution = dataclasses.replace(_on(exp, devices, parallel), activation_checkpointing=True)
    launch = train if devices == 1 else train_on_devices
    result = launch(spec, _run_dir(tmp_path, "checkpointed"), execution=execution)
    _assert_within(result, _run_dir(tmp_path, "checkpointed"), one_process, TOL)
    if devices == 1:
        ref, ref_rows = one_process
        assert _rows(_run_dir(tmp_path, "checkpointed")) == ref_rows
        assert result.val_loss == ref.val_loss


@pytest.fixture
def one_rank_group():  # noqa: ANN201
    """A gloo process group of this process alone, for FSDP2 in the test process."""
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("mixed", [True, False])
def test_fsdp_mixed_precision_gathers_bf16_weights_in_place_of_autocast(
    tmp_path: Path,
    one_rank_group,
    mixed: bool,  # noqa: ANN001
) -> None:
    import torch

    from harness.parametrization import blocks
    from harness.train.learner import build_learner

    exp, spec = _exp(tmp_path)
    execution = dataclasses.replace(exp.execution, fsdp_mixed_precision=mixed)
    learner = build_learner(spec, execution, torch.device("cpu"), "fsdp", torch.bfloat16)
    seen = []
    blocks(learner.model)[0].register_forward_pre_hook(
        lambda module, _: seen.append(next(module.parameters()).dtype)
    )
    learner.forward(input_ids=torch.zeros(1, 8, dtype=torch.long))
    # Mixed precision: the block computes with bf16 weights and nothing autocasts; else fp32
    # weights under bf16 autocast. The sharded weights AdamW steps stay fp32 either way.
    assert seen == [torch.bfloat16 if mixed else torch.float32]
    assert learner.autocast == (None if mixed else torch.bfloat16)
    assert {p.dtype for p in learner.optimizer.param_groups[0]["params"]} == {torch.float32}


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_uneven_shares_in_micro_batches(tmp_path: Path, parallel: str) -> None:
    # 261 sequences: 32 updates of 8, then one of 5, whose shares of 3 and 2 make 2 and 1
    # micro-batches of 2; the shorter is padded with a window that counts for nothing, so the
    # ranks' FSDP all-gathers pair up (without it FSDP waits forever).
    exp, spec = _exp(tmp_path, n_tokens="[8352]")
    ref = train(spec, _run_dir(tmp_path, "one"), execution=_on(exp, 1))
    result = train_on_devices(spec, _run_dir(tmp_path, "two"), execution=_on(exp, 2, parallel, 2))
    assert result is not None and result.steps == ref.steps == 33
    assert _close(_rows(_run_dir(tmp_path, "two")), _rows(_run_dir(tmp_path, "one"))) < TOL
    assert abs(result.val_loss - ref.val_loss) / ref.val_loss < TOL


@pytest.mark.slow
def test_gradient_accumulation_on_one_process(tmp_path: Path, one_process) -> None:  # noqa: ANN001
    ref, ref_rows = one_process
    exp, spec = _exp(tmp_path)
    # batch_size 8 in micro-batches of 3: 3 + 3 + 2 sequences, weighed by their targets.
    result = train(spec, _run_dir(tmp_path, "accum"), execution=_on(exp, 1, micro=3))
    assert result is not None and result.world_size == 1 and result.parallel == "none"
    assert _close(_rows(_run_dir(tmp_path, "accum")), ref_rows) < TOL
    assert abs(result.val_loss - ref.val_loss) / ref.val_loss < TOL


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_stopped_run_resumes_exactly_and_at_another_world_size(
    tmp_path: Path,
    one_process,
    parallel: str,  # noqa: ANN001
) -> None:
    ref, ref_rows = one_process
    exp, spec = _exp(tmp_path)
    whole = train_on_devices(spec, _run_dir(tmp_path, "whole"), execution=_on(exp, 2, parallel))
    assert whole is not None
    # Stopped after 10 updates with a checkpoint, then resumed on 2 processes: bit for bit.
    part = _run_dir(tmp_path, "part")
    assert (
        train_on_devices(spec, part, execution=_on(exp, 2, parallel), stop_after_steps=10) is None
    )
    assert [p.name for p in (part / "ckpt").iterdir()] == ["step_000000010.pt"]
    resumed = train_on_devices(spec, part, execution=_on(exp, 2, parallel))
    assert resumed is not None and resumed.val_loss == whole.val_loss
    assert "resuming" in (part / "train.log").read_text()  # rank 0's log is the run's
    assert _rows(part) == _rows(_run_dir(tmp_path, "whole"))
    # The same checkpoint resumed on one process: the 1-process run, to the tolerance.
    other = _run_dir(tmp_path, "other")
    train_on_devices(spec, other, execution=_on(exp, 2, parallel), stop_after_steps=10)
    alone = train(spec, other, execution=_on(exp, 1))
    assert alone is not None and alone.world_size == 1
    assert abs(alone.val_loss - ref.val_loss) / ref.val_loss < TOL
    assert _close(_rows(other), ref_rows) < TOL


def _run_in_thread(spec, run_dir: Path, execution: ExecutionConfig) -> dict:  # noqa: ANN001
    out: dict = {}

    def go() -> None:
        try:
            out["result"] = train_on_devices(spec, run_dir, execution=execution)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out["error"] = e

    out["thread"] = threading.Thread(target=go)
    out["thread"].start()
    return out


def _wait_for(path_glob: Path, pattern: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not list(path_glob.glob(pattern)):
        assert time.monotonic() < end, f"no {pattern} in {path_glob}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_cleanly_and_it_resumes_exactly(tmp_path: Path) -> None:
    exp, spec = _exp(tmp_path, n_tokens="[16384]", every=4)
    execution = _on(exp, 2)
    whole = train_on_devices(spec, _run_dir(tmp_path, "whole"), execution=execution)
    run_dir = _run_dir(tmp_path, "killed")
    job = _run_in_thread(spec, run_dir, execution)
    _wait_for(run_dir / "ckpt", "step_*.pt")
    pids = _rank_pids()
    assert len(pids) == 2
    os.kill(pids[-1], signal.SIGKILL)
    job["thread"].join(timeout=120)
    assert "error" in job and "of 2 exited with -9 (SIGKILL)" in str(job["error"]), job
    assert not _rank_pids()  # the other rank was stopped too
    assert not (run_dir / "result.json").exists()
    resumed = train_on_devices(spec, run_dir, execution=execution)
    assert resumed is not None and resumed.val_loss == whole.val_loss
    assert _rows(run_dir) == _rows(_run_dir(tmp_path, "whole"))


@pytest.mark.slow
def test_a_signal_on_one_rank_checkpoints_every_rank_at_one_step(tmp_path: Path) -> None:
    exp, spec = _exp(tmp_path, n_tokens="[16384]")
    execution = _on(exp, 2)
    whole = train_on_devices(spec, _run_dir(tmp_path, "whole"), execution=execution)
    run_dir = _run_dir(tmp_path, "signalled")
    job = _run_in_thread(spec, run_dir, execution)
    _wait_for(run_dir, "metrics.csv")
    os.kill(_rank_pids()[0], signal.SIGTERM)  # as a preemption notice reaches one task
    job["thread"].join(timeout=120)
    assert job.get("result", "missing") is None and "error" not in job, job
    (ckpt,) = (run_dir / "ckpt").iterdir()  # one checkpoint, of the step both ranks stopped at
    assert 0 < int(ckpt.stem.split("_")[1]) < spec.n_steps
    resumed = train_on_devices(spec, run_dir, execution=execution)
    assert resumed is not None and resumed.val_loss == whole.val_loss


@pytest.mark.slow
def test_harness_run_trains_each_run_on_two_processes(tmp_path: Path) -> None:
    toml = tiny_toml(tmp_path, n_tokens="[2048, 4096]")
    out = harness_cli("run", str(toml), "--execution.devices_per_run=2", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import pandas as pd

    runs = pd.read_csv(tmp_path / "results" / "tiny" / "runs.csv")
    assert list(runs["world_size"]) == [2, 2] and set(runs["parallel"]) == {"ddp"}
    assert (runs["status"] == "done").all()
    # More devices than this machine has: refused before anything trains.
    toml = tiny_toml(tmp_path, name="wide", n_tokens="[2048]")
    out = harness_cli("run", str(toml), "--execution.devices_per_run=64")
    assert out.returncode == 2 and "execution.devices_per_run = 64" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_placement_gives_a_run_on_k_devices_k_of_them() -> None:
    ex = ExecutionConfig(devices_per_run=2)
    slots = plan_slots(ex, n_units=8, gpus=["0", "1", "2", "3"], cores=16)
    assert [s.cuda_visible_devices for s in slots] == ["0,1", "2,3"]
    assert [s.threads for s in slots] == [4, 4]
    slots = plan_slots(ex, n_units=8, gpus=[], cores=4)  # 2 runs of 2 processes, 1 thread each
    assert [(s.cuda_visible_devices, s.threads) for s in slots] == [(None, 1), (None, 1)]
    slots = plan_slots(ex, n_units=8, gpus=[], cores=2)
    assert [(s.cuda_visible_devices, s.threads) for s in slots] == [(None, 1)]
