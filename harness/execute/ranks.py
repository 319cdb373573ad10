"""Launching one run's ranks on this machine: `train_on_devices`.

It starts ``execution.devices_per_run`` processes with torch's own launcher
(`torch.multiprocessing.start_processes`, spawn). Each joins one process group through a file
in a scratch folder (no port to pick), NCCL on GPUs and gloo on a CPU, and calls
`harness.train.train`, which trains its share of every update (`harness.distributed`). A signal
to the launching worker is passed on to every rank, which checkpoint at one step; a rank that
dies makes the launcher stop the others, and `train_on_devices` raises.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["stop_when_signalled", "train_on_devices"]

_STOP = threading.Event()


def stop_when_signalled(stop: threading.Event, idle: Callable[[], bool] | None = None) -> None:
    """Set ``stop`` on SIGTERM, SIGINT or SIGHUP, or when this process's parent is gone (its
    command or worker killed with -9): the run then checkpoints at its next step and ends. For
    the workers of `harness.execute.local` and the ranks started here.

    ``idle`` (a worker that waits for work between runs) says when no run is in progress. A
    signal that finds the process idle ends it at once; and once the parent is gone, the
    process ends as soon as it is idle: its parent will never send it work again, and a
    process pool's worker would otherwise wait on its pipe for good, adopted by init
    (issue 31: `kill -9` of `harness run` left its worker alive)."""

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if idle is not None and idle():
            os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            if stop.is_set() and idle is None:
                return
            time.sleep(0.5)
        stop.set()
        while idle is not None:  # orphaned: end once the run has checkpointed
            if idle():
                os._exit(128 + signal.SIGTERM)
            time.sleep(0.2)

    threading.Thread(target=watch_parent, daemon=True).start()


def _rank_main(
    local_rank: int,
    n: int,
    init_file: str,
    threads: int,
    payload: dict[str, Any],
) -> None:
    """One rank: its signals, threads and device, the process group, then the run."""
    import torch
    import torch.distributed as dist

    from harness.config import ExecutionConfig, build_section
    from harness.grid import spec_from_dict
    from harness.train import train

    stop_when_signalled(_STOP)
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(n), LOCAL_RANK=str(local_rank))
    if threads > 0:
        torch.set_num_threads(threads)
    cuda = payload["execution"].get("device") != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"file://{init_file}",
        rank=local_rank,
        world_size=n,
    )
    from harness.rundir import RunDir

    # Rank 0's log lines (resuming, hand-offs, skipped checkpoints) go to the run's train.log.
    run = RunDir(Path(payload["run_dir"]))
    handler = run.open_log() if local_rank == 0 else None
    try:
        train(
            spec_from_dict(payload["spec"]),
            Path(payload["run_dir"]),
            execution=build_section(ExecutionConfig, payload["execution"], "execution", "launcher"),
            branches=[spec_from_dict(b) for b in payload["branches"]],
            should_stop=_STOP.is_set,
            stop_after_steps=payload.get("stop_after_steps"),
            corpus=payload.get("corpus"),
        )
    finally:
        if handler is not None:
            run.close_log(handler)
        dist.destroy_process_group()


def train_on_devices(
    spec: Any,
    run_dir: Path,
    execution: Any,
    branches: Any = (),
    should_stop: Callable[[], bool] | None = None,
    *,
    stop_after_steps: int | None = None,
    corpus: Any = None,
) -> Any:
    """Train ``spec`` on ``execution.devices_per_run`` devices of this machine; rank 0's
    RunResult, or None when the ranks stopped with a checkpoint (a signal, ``should_stop``,
    ``stop_after_steps``). ``corpus``: the prepared `harness.data.Corpus` every rank opens
    (None: rank 0 prepares it).

    Raises
    ------
    RuntimeError
        A rank failed or was killed; the others were stopped, and the run resumes from its last
        checkpoint when started again.
    """
    import torch.multiprocessing as mp

    from harness.config import to_dict
    from harness.rundir import RunDir
    from harness.train import RunResult

    n = execution.devices_per_run
    # A worker's own share of the cores (harness.execute.placement) is in OMP_NUM_THREADS.
    threads = (
        execution.threads
        or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        or max(1, (os.cpu_count() or 1) // n)
    )
    payload = {
        "spec": to_dict(spec),
        "run_dir": str(run_dir),
        "execution": to_dict(execution),
        "branches": [to_dict(b) for b in branches],
        "stop_after_steps": stop_after_steps,
        "corpus": corpus,
    }
    with tempfile.TemporaryDirectory(prefix="harness-pg-") as tmp:
        ctx = mp.start_processes(
            _rank_main,
            args=(n, str(Path(tmp) / "init"), threads, payload),
            nprocs=n,
            join=False,
            start_method="spawn",
        )
        forwarded = False
        try:
            while not ctx.join(timeout=0.5):
                if not forwarded and should_stop is not None and should_stop():
                    for p in ctx.processes:  # each rank checkpoints at the next step boundary
                        if p.is_alive() and p.pid is not None:
                            os.kill(p.pid, signal.SIGTERM)
                    forwarded = True
        except mp.ProcessExitedException as e:  # killed by a signal; the others are stopped
            if forwarded and e.exit_code == -signal.SIGTERM:
                return None  # stopped before its handlers were set: nothing trained is lost
            raise RuntimeError(
                f"rank {e.error_index} of {n} exited with {e.exit_code}"
                + (f" ({signal.Signals(-e.exit_code).name})" if e.exit_code < 0 else "")
            ) from None
        except mp.ProcessRaisedException as e:
            last = str(e).strip().splitlines()[-1] if str(e).strip() else "an exception"
            raise RuntimeError(f"rank {e.error_index} of {n} failed: {last}") from None
        finally:
            for p in ctx.processes:  # nothing outlives the run
                if p.is_alive():
                    p.kill()
                    p.join()
    result = RunDir(run_dir).read_result()  # unreadable: raised, and the failure recorded
    if result is None or result.get("status") not in ("done", "diverged"):
        return None
    return RunResult(**{k: v for k, v in result.items() if k in RunResult.__dataclass_fields__})
