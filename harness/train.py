"""Train one run: ``train(spec, run_dir) -> RunResult``, resuming from its own checkpoint.

The loop is AdamW with linear warmup and a cosine decay that ends exactly at this run's last
step (Hoffmann et al. 2022: a schedule longer than the run overestimates its loss), global
gradient clipping, validation on the experiment's fixed held-out tokens a few times per run and
at the end. A non-finite loss, or a training loss that blows up past
``execution.diverge_factor * max(first-step loss, ln(vocab_size))`` for
``execution.diverge_patience`` log intervals in a row, ends the run as ``diverged`` (with the step
and the reason) rather than raising. A full disk while writing a checkpoint fails the run with a
one-line message and leaves the previous checkpoint as it was.

Everything the run does is a function of its spec and its position, so a checkpoint holds the
model, the optimizer, the step and the RNG states, and resuming continues the same computation.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from harness import __version__
from harness.atomic import atomic_write
from harness.config import ExecutionConfig
from harness.data import Corpus, SequenceOrder, gather_windows, prepare_corpus, training_order
from harness.distributed import (
    World,
    agree,
    barrier,
    from_main,
    same_everywhere,
    sum_across,
    world,
)
from harness.errors import InputError, no_space
from harness.grid import RunSpec
from harness.hardware import measure_cpu_matmul_flops, mfu, peak_flops
from harness.model import build_model, count_params, flops_per_token
from harness.objectives import (
    IGNORE_INDEX,
    CausalLM,
    MaskedLM,
    eval_objective,
    training_objective,
)
from harness.results import FINISHED, ExperimentLayout, read_result, write_result, write_spec
from harness.schedules import lr_at_step, peak_lr, spec_lr_at_step
from harness.tracking import RunTracker, open_run
from harness.wsd import check_branch, decay_start

__all__ = ["RunResult", "lr_at_step", "peak_lr", "resolve_device", "train"]

log = logging.getLogger("harness.train")

METRICS_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "wall_s"]


@dataclass(frozen=True)
class RunResult:
    """What result.json records about a finished run."""

    run_id: str
    status: Literal["done", "diverged"]
    val_loss: float | None
    val_bpb: float | None
    train_loss: float | None
    steps: int
    n_tokens: int
    n_unique_tokens: int
    epochs: float
    peak_lr: float
    wall_s: float
    tokens_per_s: float
    """Training throughput: trained_tokens over the step loop's time, wall_s less eval_s (the
    held-out evaluations, which cost short runs up to half their time, are not training)."""
    device: str
    precision: str
    reason: str
    harness_version: str
    git_sha: str
    peak_flops: float | None
    """Peak FLOP/s of the device at the run's precision: the datasheet's on a known GPU (None on
    an unknown one), the measured matmul rate with the run's threads and dtype on a CPU."""
    mfu: float | None
    """6 N tokens_per_s / (peak_flops world_size) (N non-embedding parameters): tokens_per_s
    counts every device's tokens, so the peak is every device's too. Computed from tokens per
    second of the whole update, it is right under gradient accumulation as well (nanoGPT's
    MFU counted one micro-batch per update, PR #619)."""
    mfu_total: float | None
    """flops_per_token(shape).total tokens_per_s / (peak_flops world_size) (every matmul,
    Chinchilla app. F)."""
    branched_from: str | None = None
    """WSD trunk sharing (harness.wsd): the run_id of the trunk whose checkpoint this run
    started from at its decay start; None when it trained from step 0 itself."""
    trained_tokens: int = 0
    """Tokens this run trained itself: n_tokens less what it inherited from its trunk. wall_s
    and tokens_per_s are this part's."""
    trained_flops: float = 0.0
    """6 N trained_tokens: the FLOPs actually spent on this run (6 N n_tokens is its D's)."""
    started_unix: float = 0.0
    """When this process entered train() for the run (Unix seconds): with setup_s, wall_s and
    finish_s, where a grid's time goes between runs (bench/bench_overhead.py)."""
    setup_s: float = 0.0
    """Seconds from entering train() to the first step in this process: opening the corpus, the
    held-out batch, building the model, loading a checkpoint."""
    eval_s: float = 0.0
    """Seconds of wall_s spent in held-out evaluations."""
    finish_s: float = 0.0
    """Seconds after the last step until result.json: the peak-FLOP/s measurement (once per
    process on a CPU) and saving model.pt."""
    data_s: float = 0.0
    """Seconds of wall_s spent making the training batches: reading the token windows from the
    memory-mapped corpus, the objective's inputs and targets, the copy to the device."""
    world_size: int = 1
    """Devices (processes) the run trained on at once (execution.devices_per_run)."""
    parallel: str = "none"
    """How it spanned them: 'none' (one device), 'ddp' or 'fsdp' (execution.parallel)."""
    skipped_checkpoints: list[str] = dataclasses.field(default_factory=list)
    """Checkpoints found unreadable at a resume and passed over ("step_....pt: why"): a
    tampered or torn file is never loaded, and the run went on from an older one or from the
    start."""


def resolve_device(execution: ExecutionConfig, here: World | None = None) -> torch.device:
    """execution.device as a torch device; one rank of several takes its local GPU."""
    if execution.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("execution.device = 'cuda' but no CUDA device is available")
    kind = execution.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and here is not None and here.size > 1:
        return torch.device("cuda", here.local_rank)
    return torch.device(kind)


def _autocast_dtype(spec: RunSpec, device: torch.device) -> torch.dtype | None:
    p = spec.train.precision
    if p == "bf16":
        return torch.bfloat16
    if p == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def git_sha() -> str:
    """The harness checkout's commit, or '' where it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# --- checkpoints --------------------------------------------------------------------------------

_CKPT = re.compile(r"step_(\d{9})\.pt$")


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files, newest first."""
    ckpt_dir = run_dir / "ckpt"
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if _CKPT.search(p.name)]
    return sorted(found, key=lambda p: int(_CKPT.search(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of checkpoint writes that a killed process never renamed."""
    ckpt_dir = run_dir / "ckpt"
    if ckpt_dir.is_dir():
        for tmp in ckpt_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class DiskFullError(OSError):
    """No space left on the device while writing a run's files; the run fails, nothing is torn."""


class _KeptWriteError:
    """A file whose first write error is kept. torch.save swallows an OSError that write()
    raises and fails later with "[enforce fail at inline_container.cc] unexpected pos", which
    says nothing of a full disk (found with a 2 MB tmpfs)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._f.write(data))
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def torch_save_atomic(obj: Any, path: Path, what: str) -> Path:
    """torch.save ``obj`` to ``path`` atomically (`atomic_write`).

    Raises
    ------
    DiskFullError
        The device is full: one line naming ``what`` and the file; the temp file is removed,
        so the previous file at ``path`` is intact.
    """

    def write(f: Any) -> None:
        kept = _KeptWriteError(f)
        try:
            torch.save(obj, kept)
        except RuntimeError:
            if kept.error is not None:
                raise kept.error from None
            raise

    try:
        return atomic_write(path, write)
    except OSError as e:
        if no_space(e):
            raise DiskFullError(
                e.errno,
                f"no space left on device while writing {what} {path} (any earlier one is "
                "intact; free space and run again to resume)",
            ) from e
        raise


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically, then drop all but the newest ``keep``.

    Raises
    ------
    DiskFullError
        The device is full; the partial temp file is removed and older checkpoints are intact.
    """
    path = run_dir / "ckpt" / f"step_{state['step']:09d}.pt"
    torch_save_atomic(state, path, "checkpoint")
    for old in _checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(
    run_dir: Path, skipped: list[str] | None = None
) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a corrupt one is logged and skipped, never used, and
    named in ``skipped`` ("step_....pt: why"), which result.json and `harness run` show."""
    for path in _checkpoints(run_dir):
        try:
            # weights_only: a checkpoint holds tensors, numbers, strings and containers of
            # them only, and torch's restricted unpickler refuses anything else, so a tampered
            # file on a shared file system is skipped instead of running its code.
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a harness checkpoint")
            return state
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped the same way
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            if skipped is not None:
                skipped.append(f"{path.name}: {str(e).splitlines()[0][:200] if str(e) else e!r}")
    return None


# --- evaluation ---------------------------------------------------------------------------------


# inference_mode, not no_grad: it also skips the version counters and view tracking that only
# autograd needs, which made the CPU evaluation 1.2x faster at the shapes of the 4 x 4 cosine
# grid (the same sums, bit for bit). Nothing it creates outlives the call (the model's tensors
# are not its own).
@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    token_bytes: torch.Tensor,
    batch_size: int,
    autocast: torch.dtype | None,
) -> tuple[float, float]:
    """Mean validation loss (nats per scored token) and bits per byte over the fixed held-out
    windows, as (inputs, targets) of `harness.objectives.eval_objective`. Targets equal to
    IGNORE_INDEX (a masked LM's unchosen positions) score nothing, and their bytes do not count."""
    model.eval()
    device = inputs.device
    # Summed on the device and read back once (no host sync per batch); float64 gives the same
    # number as summing the batches' float32 sums as Python floats.
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.int64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, inputs.shape[0], batch_size):
        x, y = inputs[i : i + batch_size], targets[i : i + batch_size]
        with torch.autocast(
            device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            logits = model(input_ids=x).logits
        nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        total_nats += nats
        scored = y != IGNORE_INDEX  # cross_entropy's default ignore_index skips the rest
        total_tokens += scored.sum()
        # Not token_bytes[y[scored]]: a boolean index sizes its output on the host (a sync).
        total_bytes += (token_bytes[y.clamp_min(0)] * scored).sum()
    model.train()
    nats_sum, n_tokens, n_bytes = float(total_nats), int(total_tokens), int(total_bytes)
    # A corpus of token ids without a tokenizer knows no bytes: no bits per byte (nan).
    bpb = nats_sum / (math.log(2) * n_bytes) if n_bytes else math.nan
    return nats_sum / n_tokens, bpb


# --- metrics file -------------------------------------------------------------------------------


def _truncate_metrics(path: Path, last_step: int, dest: Path | None = None) -> None:
    """Keep the rows up to ``last_step`` (a resumed run rewrites what came after its checkpoint);
    written to ``dest`` instead where given (a WSD branch inherits its trunk's rows)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        # A process killed mid-append leaves a torn last line: keep only whole rows.
        rows = [
            r
            for r in csv.DictReader(f)
            if None not in r.values() and r["step"].isdigit() and int(r["step"]) <= last_step
        ]
    lines = [",".join(METRICS_COLUMNS)] + [",".join(r[c] for c in METRICS_COLUMNS) for r in rows]
    atomic_write(dest or path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(",".join(METRICS_COLUMNS) + "\n")
        f.write(
            ",".join(
                ""
                if row.get(c) is None
                else repr(row[c])
                if isinstance(row[c], float)
                else str(row[c])
                for c in METRICS_COLUMNS
            )
            + "\n"
        )


# --- WSD branches (harness.wsd) -------------------------------------------------------------------


def _pending_handoffs(
    trunk: RunSpec, run_dir: Path, branches: Sequence[RunSpec], step: int
) -> dict[int, list[RunSpec]]:
    """Branches still to be handed a checkpoint, by the trunk step at which they leave it.

    Left out: a branch whose decay starts at or before ``step`` (this trunk handed it off before
    the checkpoint it resumed from, or the branch is too short to share anything), and one that
    is finished or has a checkpoint at least that far (a hand-off of an earlier attempt, or a
    run of its own that got there); those train on from what they have.
    """
    out: dict[int, list[RunSpec]] = {}
    for branch in branches:
        check_branch(trunk, branch)
        at = decay_start(branch)
        branch_dir = run_dir.parent / branch.run_id
        if at <= step:
            continue
        try:
            done = (read_result(branch_dir) or {}).get("status") in FINISHED
        except InputError:
            done = False  # an unreadable record: the branch trains again anyway
        newest = _checkpoints(branch_dir)
        if done or (newest and int(_CKPT.search(newest[0].name).group(1)) >= at):  # type: ignore[union-attr]
            continue
        out.setdefault(at, []).append(branch)
    return out


def _hand_off(branch: RunSpec, branch_dir: Path, state: dict[str, Any], metrics: Path) -> None:
    """Write ``branch``'s resumable checkpoint from its trunk's ``state`` and its metrics.csv:
    the trunk's rows so far, which are this run's too (the same weights at every step)."""
    branch_dir.mkdir(parents=True, exist_ok=True)
    write_spec(branch_dir, branch)
    _remove_stale_temp_files(branch_dir)
    if metrics.exists():
        _truncate_metrics(metrics, state["step"], dest=branch_dir / "metrics.csv")
    else:  # the trunk logged nothing yet: nothing of an earlier attempt of the branch stays
        (branch_dir / "metrics.csv").unlink(missing_ok=True)
    inherited = {
        "run_id": branch.run_id,
        "wall_s": 0.0,
        "eval_s": 0.0,
        "data_s": 0.0,
        "inherited_wall_s": state["inherited_wall_s"] + state["wall_s"],
        "branched_from": state["run_id"],
        "branch_step": state["step"],
    }
    save_checkpoint(branch_dir, {**state, **inherited}, branch.train.checkpoint_keep)
    log.info("handed %s its checkpoint at step %d", branch.run_id, state["step"])


# --- the run's parts: settings, state, set-up --------------------------------------------------


def _eval_steps(total_steps: int, n_evals: int) -> set[int]:
    """Steps (1-based count of updates done) after which to evaluate; always the last."""
    return {max(1, round(total_steps * k / n_evals)) for k in range(1, n_evals + 1)}


@dataclass(frozen=True, eq=False)
class _Batches:
    """The training batches: the run's order over the training split, cut into its steps."""

    tokens: np.ndarray
    order: SequenceOrder
    objective: CausalLM | MaskedLM
    seq_len: int
    batch_size: int
    n_seq_total: int
    device: torch.device
    rank: int = 0
    world: int = 1
    micro_batch_size: int = 0

    def at(self, step: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
        """This rank's micro-batches (inputs, targets, scored targets) of the update at
        ``step``, and the update's sequences on all ranks; the last update may be short.

        Each rank reads a contiguous share of the update's sequences (as np.array_split cuts
        them), so k ranks read exactly the windows one process reads, at the same steps. A rank
        whose share is empty (an update of fewer sequences than ranks) still takes part in the
        gradient's all-reduce, with one window that counts for nothing (0 scored targets). Every
        rank runs the same number of micro-batches (FSDP gathers parameters in each one's
        forward and backward, so the ranks' collectives must pair up): a shorter share is
        padded with such windows.
        """
        first_seq = step * self.batch_size
        n_seq = min(self.batch_size, self.n_seq_total - first_seq)
        base, extra = divmod(n_seq, self.world)
        lo = self.rank * base + min(self.rank, extra)
        hi = lo + base + (self.rank < extra)
        empty = hi == lo
        if empty:
            lo, hi = n_seq - 1, n_seq
        # Through the module's gather_windows (tests spy on it), looked up at each call.
        windows = gather_windows(
            self.tokens, self.order.window_starts(first_seq + lo, hi - lo), self.seq_len
        )
        # Causal: next tokens; masked LM: masked inputs, targets only at the chosen positions.
        x, y = self.objective.batch(windows, first_seq + lo, self.device)
        m = self.micro_batch_size or (hi - lo)
        widest = -(-n_seq // self.world)  # the largest share, in sequences
        n_micro = -(-widest // self.micro_batch_size) if self.micro_batch_size else 1
        micro = []
        for i in range(0, hi - lo, m):
            xi, yi = x[i : i + m], y[i : i + m]
            scored = (yi != IGNORE_INDEX).sum() * (not empty)
            micro.append((xi, yi, scored))
        while len(micro) < n_micro:  # padding: a window that counts for nothing
            micro.append((x[:1], y[:1], (y[:1] != IGNORE_INDEX).sum() * 0))
        return micro, n_seq

    def tokens_done(self, step: int) -> int:
        """Tokens trained after ``step`` updates (the metrics' tokens column)."""
        return min(step * self.batch_size, self.n_seq_total) * self.seq_len


@dataclass(frozen=True, eq=False)
class _Evaluation:
    """The held-out evaluation: the fixed windows, and the steps after which it runs."""

    at: frozenset[int]
    forward: Callable[..., Any]
    inputs: torch.Tensor
    targets: torch.Tensor
    token_bytes: torch.Tensor
    batch_size: int
    autocast: torch.dtype | None
    device: torch.device

    def run(self) -> tuple[float, float, float]:
        """(val_loss, val_bpb, seconds it took)."""
        if self.device.type == "cuda":  # the queued training steps are not the evaluation's
            torch.cuda.synchronize(self.device)
        t_eval = time.perf_counter()
        val_loss, val_bpb = evaluate(
            self.forward,
            self.inputs,
            self.targets,
            self.token_bytes,
            self.batch_size,
            self.autocast,
        )
        return val_loss, val_bpb, time.perf_counter() - t_eval


@dataclass(frozen=True)
class _DivergenceRule:
    """When a run counts as diverged (execution.diverge_*): a non-finite loss, or a logged
    training loss over ``factor * max(first-step loss, ln(vocab))`` for ``patience`` log
    intervals in a row. ln(vocab) is a uniform guess's loss, so such a model is confidently worse
    than knowing nothing; patience lets one spike that recovers pass. ``factor`` 0 turns the
    blow-up part off; a non-finite loss always ends the run."""

    factor: float
    patience: int
    uniform_loss: float  # ln(vocab_size): the loss of a uniform guess

    @staticmethod
    def non_finite_val(val_loss: float, step: int) -> str:
        return "" if math.isfinite(val_loss) else f"non-finite validation loss at step {step}"

    @staticmethod
    def non_finite_train(mean_loss: float, step: int, n_steps: int) -> str:
        if math.isfinite(mean_loss):
            return ""
        return f"non-finite training loss {mean_loss} in steps {step - n_steps + 1}..{step}"

    def blow_up(
        self, train_loss: float, initial_loss: float | None, over_count: int, step: int
    ) -> tuple[int, str]:
        """(intervals over the threshold in a row, including this one; the reason when that
        reaches ``patience``, else '')."""
        threshold = self.factor * max(initial_loss or 0.0, self.uniform_loss)
        over_count = over_count + 1 if train_loss > threshold else 0
        if over_count < self.patience:
            return over_count, ""
        return over_count, (
            f"training loss blew up: {train_loss:.4g} > {threshold:.4g} "
            f"(diverge_factor {self.factor:g} x max(first-step loss "
            f"{initial_loss:.4g}, ln(vocab) {self.uniform_loss:.4g})) for "
            f"{over_count} log interval(s), at step {step}"
        )


@dataclass(frozen=True)
class _Checkpointing:
    """When to save a resumable checkpoint: every ``every_steps`` updates, every ``every_s``
    seconds of wall time (checked at step boundaries), and when the process is told to stop;
    never after the last step (the run finishes instead). 0 turns a cadence off."""

    every_steps: int
    every_s: float
    keep: int
    total_steps: int

    def due(self, step: int, t_last: float, stop_now: bool) -> bool:
        # The clock is read only when the step count does not already say so: the reads are
        # part of the behaviour (test_checkpoint_cadence_by_wall_time's fake clock counts them).
        return step < self.total_steps and bool(
            (self.every_steps and step % self.every_steps == 0)
            or (self.every_s and time.perf_counter() - t_last >= self.every_s)
            or stop_now
        )


@dataclass(frozen=True, eq=False)
class _Run:
    """What one train() call works with: set up once, unchanged by the steps."""

    spec: RunSpec
    run_dir: Path
    device: torch.device
    autocast: torch.dtype | None
    model: torch.nn.Module
    forward: Callable[..., Any]  # `model`, its DDP wrapper, or torch.compile's of either
    optimizer: torch.optim.Optimizer
    batches: _Batches
    evaluation: _Evaluation
    divergence: _DivergenceRule
    checkpointing: _Checkpointing
    log_every: int
    world: World = World()
    parallel: str = "none"  # 'ddp' or 'fsdp' on several devices
    tracker: RunTracker = dataclasses.field(default_factory=RunTracker)  # [tracking], rank 0

    def sync(self, last: bool) -> Any:
        """The context of one micro-batch's backward: gradients are all-reduced only after the
        last of an update (DDP's no_sync; FSDP2's set_requires_gradient_sync)."""
        import contextlib

        if self.parallel == "ddp" and not last:
            return self.ddp.no_sync()  # type: ignore[attr-defined]
        if self.parallel == "fsdp":
            self.model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    @property
    def ddp(self) -> Any:
        return self.forward._orig_mod if hasattr(self.forward, "_orig_mod") else self.forward

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.csv"


@dataclass
class _Progress:
    """Where the run stands: the fields down to over_count are what a checkpoint keeps (so that
    a resumed run continues the same computation), the rest this process's own."""

    # The training loss is summed on the device and read back only at log rows, evaluations
    # and checkpoints: a read each step would make the host wait for the device every step (on
    # a GPU, the next step's kernels could not be queued while this one runs). float64 makes
    # the sum the same number a Python float sum of the per-step losses gives.
    loss_acc: torch.Tensor
    step: int = 0
    wall_before: float = 0.0  # wall_s, eval_s and data_s of the earlier processes of this run
    eval_before: float = 0.0
    data_before: float = 0.0
    # A WSD branch's start (harness.wsd): its trunk's wall time so far (the metrics' wall_s
    # column goes on from it; result.json's wall_s is the run's own) and the trunk's run_id.
    inherited_wall: float = 0.0
    branched_from: str | None = None
    branch_step: int = 0
    # The divergence rule's and the logged average's state, so a resume changes nothing.
    initial_loss: float | None = None
    loss_count: int = 0
    over_count: int = 0
    t_loop: float = 0.0  # perf_counter when this process's first step began
    t_last_ckpt: float = 0.0
    eval_s: float = 0.0  # this process's evaluations
    data_s: float = 0.0  # this process's batch making
    steps_this_process: int = 0
    val_loss: float | None = None
    val_bpb: float | None = None
    train_loss: float | None = None  # the last finite logged mean
    status: Literal["done", "diverged"] = "done"
    reason: str = ""
    skipped_checkpoints: tuple[str, ...] = ()  # unreadable ones passed over at resume


def _set_up(
    spec: RunSpec, run_dir: Path, execution: ExecutionConfig, corpus: Corpus | None
) -> _Run:
    """The run directory, the data, the held-out batch, the model and its optimizer."""
    here = world()
    run_dir.mkdir(parents=True, exist_ok=True)
    if here.main:
        write_spec(run_dir, spec)
    if execution.threads > 0:
        torch.set_num_threads(execution.threads)
    layout = ExperimentLayout(run_dir.parent.parent)
    if corpus is None:  # rank 0 makes the cache entry (if none), then the others open it
        if here.main:
            corpus = prepare_corpus(spec.data, layout.cache_dir)
        barrier()
        corpus = corpus or prepare_corpus(spec.data, layout.cache_dir, build=False)
    device = resolve_device(execution, here)
    autocast = _autocast_dtype(spec, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The data first, then the seeded model: the order of the RNG's uses is the checkpoints'.
    batches, eval_inputs, eval_targets, token_bytes = _data(spec, corpus, device)
    batches = dataclasses.replace(
        batches, rank=here.rank, world=here.size, micro_batch_size=execution.micro_batch_size
    )
    parallel = execution.parallel if here.size > 1 else "none"
    model, forward, optimizer = _model(spec, execution, device, parallel)
    total_steps = spec.n_steps
    return _Run(
        spec=spec,
        run_dir=run_dir,
        device=device,
        autocast=autocast,
        model=model,
        forward=forward,
        optimizer=optimizer,
        batches=batches,
        evaluation=_Evaluation(
            at=frozenset(_eval_steps(total_steps, spec.train.evals_per_run)),
            # Every rank scores all held-out windows with its (equal) weights: the same number
            # on each, with no communication; DDP's wrapper is only for training.
            forward=model if parallel == "ddp" else forward,
            inputs=eval_inputs,
            targets=eval_targets,
            token_bytes=token_bytes,
            batch_size=spec.train.batch_size,
            autocast=autocast,
            device=device,
        ),
        divergence=_DivergenceRule(
            factor=execution.diverge_factor,
            patience=execution.diverge_patience,
            uniform_loss=math.log(spec.model.vocab_size),
        ),
        checkpointing=_Checkpointing(
            every_steps=spec.train.checkpoint_every_steps,
            every_s=execution.checkpoint_every_s,
            keep=spec.train.checkpoint_keep,
            total_steps=total_steps,
        ),
        log_every=max(1, total_steps // 100),
        world=here,
        parallel=parallel,
    )


def _data(
    spec: RunSpec, corpus: Corpus, device: torch.device
) -> tuple[_Batches, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training batches, the held-out (inputs, targets) and the bytes of each token."""
    seq_len = spec.data.seq_len
    # The whole training split, or its first data.unique_tokens tokens (repeated data).
    order = training_order(spec.data, corpus.n_train_tokens, spec.seed)
    if order.n_windows < 1:
        raise RuntimeError(
            f"the training split has {corpus.n_train_tokens} tokens, under one sequence"
        )
    train_tokens = corpus.train_tokens()
    val_tokens = corpus.val_tokens()
    n_eval = spec.data.eval_tokens // seq_len
    if (val_tokens.size - 1) // seq_len < n_eval:
        raise RuntimeError(
            f"data.eval_tokens = {spec.data.eval_tokens} exceeds the {val_tokens.size} "
            "held-out tokens"
        )
    # Held-out windows as (inputs, targets): for a masked LM under one fixed mask, the same for
    # every run and every evaluation (harness.objectives).
    eval_inputs, eval_targets = eval_objective(spec).batch(
        gather_windows(val_tokens, np.arange(n_eval, dtype=np.int64) * seq_len, seq_len),
        0,
        device,
    )
    batches = _Batches(
        tokens=train_tokens,
        order=order,
        objective=training_objective(spec),
        seq_len=seq_len,
        batch_size=spec.train.batch_size,
        n_seq_total=spec.n_tokens // seq_len,
        device=device,
    )
    token_bytes = torch.from_numpy(corpus.token_n_bytes()).to(device)
    return batches, eval_inputs, eval_targets, token_bytes


def _model(
    spec: RunSpec, execution: ExecutionConfig, device: torch.device, parallel: str = "none"
) -> tuple[torch.nn.Module, Callable[..., Any], torch.optim.Optimizer]:
    """The seeded model, what calls it in training (itself, its DDP wrapper, torch.compile's
    of either), and AdamW. Every rank builds the same model from the seed."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.model).to(device)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec.model).total
    wrapped: torch.nn.Module = model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    elif parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Each transformer block a unit of its own (its parameters gathered for its forward
        # and backward only), then the rest (embeddings, final norm, head) at the root.
        for block in _blocks(model):
            fully_shard(block)
        fully_shard(model)
    # torch.compile wraps the same parameters: checkpoints keep saving `model`'s state_dict
    # (no "_orig_mod." prefix), so a run may resume with compile on or off.
    forward = torch.compile(wrapped) if execution.compile else wrapped
    # Weight decay on matrices only (not norms, biases, or the embedding), as in GPT-3/Llama.
    embed = model.get_input_embeddings().weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not embed]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or p is embed]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=peak_lr(spec),
        betas=(spec.train.beta1, spec.train.beta2),
        fused=device.type == "cuda",
    )
    return model, forward, optimizer


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks: the largest ModuleList (Llama's model.layers, GPT-2's
    transformer.h, BERT's encoder.layer)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def _resume(run: _Run) -> _Progress:
    """The newest readable checkpoint loaded into the model, the optimizer and the RNGs, and
    the progress it holds; step 0 without one."""
    if run.world.main:
        _remove_stale_temp_files(run.run_dir)
    barrier()  # no rank reads the checkpoints while rank 0 tidies them
    skipped: list[str] = []
    state = load_latest_checkpoint(run.run_dir, skipped)

    def loss_acc(loss_sum: float) -> torch.Tensor:
        return torch.tensor(loss_sum, dtype=torch.float64, device=run.device)

    if state is None:
        return _Progress(loss_acc=loss_acc(0.0), skipped_checkpoints=tuple(skipped))
    _load_state(run, state["model"], state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if run.device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    p = _Progress(
        # The logged interval's loss so far, summed over ranks: rank 0 carries it on.
        loss_acc=loss_acc(float(state.get("loss_sum", 0.0)) if run.world.main else 0.0),
        step=int(state["step"]),
        wall_before=float(state["wall_s"]),
        eval_before=float(state.get("eval_s", 0.0)),
        data_before=float(state.get("data_s", 0.0)),
        inherited_wall=float(state.get("inherited_wall_s", 0.0)),
        branched_from=state.get("branched_from"),
        branch_step=int(state.get("branch_step", 0)),
        initial_loss=state.get("initial_loss"),
        loss_count=int(state.get("loss_count", 0)),
        over_count=int(state.get("over_count", 0)),
        skipped_checkpoints=tuple(skipped),
    )
    log.info(
        "resuming %s at step %d of %d%s",
        run.spec.run_id,
        p.step,
        run.spec.n_steps,
        f" (branched from {p.branched_from} at step {p.branch_step})" if p.branched_from else "",
    )
    return p


def _full_state(run: _Run, with_optimizer: bool = True) -> tuple[dict, dict]:
    """The model's and the optimizer's state as one process holds them, whatever the world: so
    a checkpoint resumes at any device count and in any mode. FSDP's shards are gathered on
    rank 0 by torch.distributed.checkpoint's state-dict API (a collective: every rank calls it),
    and its optimizer state, keyed by parameter name there, is keyed by position as
    torch.optim's own state_dict keys it."""
    if run.parallel != "fsdp":
        return run.model.state_dict(), run.optimizer.state_dict() if with_optimizer else {}
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(run.model, options=opts)
    if not with_optimizer:
        return model_sd, {}
    named = get_optimizer_state_dict(run.model, run.optimizer, options=opts)
    if not named:  # ranks other than 0 receive nothing
        return model_sd, {}
    index = {name: i for i, name in enumerate(_param_names(run))}
    return model_sd, {
        "state": {index[name]: v for name, v in named["state"].items()},
        "param_groups": [
            dict(g, params=[index[name] for name in g["params"]]) for g in named["param_groups"]
        ],
    }


def _param_names(run: _Run) -> list[str]:
    """The optimizer's parameters by name, in its order (the positions of its state_dict)."""
    names = {id(p): n for n, p in run.model.named_parameters()}
    return [names[id(p)] for g in run.optimizer.param_groups for p in g["params"]]


def _load_state(run: _Run, model_sd: dict, optim_sd: dict) -> None:
    """A checkpoint's full state into the model and optimizer (each rank read the whole file;
    under FSDP each keeps its shards)."""
    if run.parallel != "fsdp":
        run.model.load_state_dict(model_sd)
        run.optimizer.load_state_dict(optim_sd)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(run.model, model_sd, options=opts)
    names = _param_names(run)
    named = {
        "state": {names[i]: v for i, v in optim_sd["state"].items()},
        "param_groups": [
            dict(g, params=[names[i] for i in g["params"]]) for g in optim_sd["param_groups"]
        ],
    }
    set_optimizer_state_dict(run.model, run.optimizer, named, options=opts)


def _checkpoint_state(run: _Run, p: _Progress) -> dict[str, Any]:
    """The resumable checkpoint of the run as it stands (also what a WSD branch is handed);
    every rank calls it, rank 0's is the one saved."""
    # First: on a GPU this waits for the queued steps. Summed over ranks (a copy: the running
    # sum stays each rank's own until its log row).
    loss_sum_now = float(sum_across(p.loss_acc.clone()))
    model_sd, optim_sd = _full_state(run)
    return {
        "step": p.step,
        "model": model_sd,
        "optimizer": optim_sd,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
        "wall_s": p.wall_before + time.perf_counter() - p.t_loop,
        "eval_s": p.eval_before + p.eval_s,
        "data_s": p.data_before + p.data_s,
        "run_id": run.spec.run_id,
        "initial_loss": p.initial_loss,
        "loss_sum": loss_sum_now,
        "loss_count": p.loss_count,
        "over_count": p.over_count,
        "inherited_wall_s": p.inherited_wall,
        "branched_from": p.branched_from,
        "branch_step": p.branch_step,
    }


def _progress_bar(run: _Run, execution: ExecutionConfig, step: int) -> Any:
    """A tqdm bar over the run's tokens where execution.progress asks for one, else None."""
    if not execution.progress or not run.world.main:
        return None
    from tqdm.auto import tqdm

    spec = run.spec
    return tqdm(
        total=spec.n_tokens,
        initial=run.batches.tokens_done(step),
        unit="tok",
        unit_scale=True,
        desc=f"run {spec.run_id} L{spec.model.n_layer} d{spec.model.n_embd}",
        position=1,
        leave=False,
        dynamic_ncols=True,
    )


# --- the step, the evaluation, the log rows ---------------------------------------------------


def _train_step(run: _Run, p: _Progress) -> tuple[float, int]:
    """One AdamW update at ``p.step``: (its learning rate, the tokens it trained, all ranks)."""
    t_data = time.perf_counter()
    micro, n_seq = run.batches.at(p.step)
    p.data_s += time.perf_counter() - t_data
    lr = spec_lr_at_step(run.spec, p.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    autocast = run.autocast
    # Each micro-batch's mean loss weighs by its share of the update's scored targets on all
    # ranks, so the gradient is the whole update's mean loss's at any device count and
    # micro-batch size (DDP averages over ranks: hence the factor world size). With one device
    # and one micro-batch the weight is exactly 1: the plain mean loss, bit for bit.
    total = sum_across(torch.stack([n for _, _, n in micro]).sum())
    step_loss = torch.zeros((), dtype=torch.float64, device=run.device)
    for i, (x, y, n) in enumerate(micro):
        with run.sync(last=i == len(micro) - 1):
            with torch.autocast(
                run.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ):
                logits = run.forward(input_ids=x).logits
            # Through the module's F (tests wrap F.cross_entropy to record the step losses).
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) * (n / total)
            step_loss += loss.detach()
            (loss * run.world.size).backward()
    if p.initial_loss is None:  # a run's first step: the divergence rule's reference
        p.initial_loss = float(sum_across(step_loss.clone()))
    p.loss_acc += step_loss
    if run.spec.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.spec.train.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    p.step += 1
    p.steps_this_process += 1
    p.loss_count += 1
    return lr, n_seq * run.batches.seq_len


def _evaluate(run: _Run, p: _Progress) -> None:
    """The held-out loss after this step; a non-finite one ends the run as diverged (after its
    log row, which every evaluation step has)."""
    p.val_loss, p.val_bpb, seconds = run.evaluation.run()
    p.eval_s += seconds
    reason = run.divergence.non_finite_val(p.val_loss, p.step)
    if reason:
        p.status, p.reason = "diverged", reason


def _log_row(run: _Run, p: _Progress, lr: float, evaluated: bool) -> None:
    """Close a log interval: its mean training loss as a metrics.csv row, then the divergence
    rule on it. A non-finite mean ends the run without a row (result.json keeps the last finite
    mean)."""
    mean_loss = float(sum_across(p.loss_acc)) / p.loss_count  # every rank's share of each step
    reason = run.divergence.non_finite_train(mean_loss, p.step, p.loss_count)
    if reason:
        p.status, p.reason = "diverged", reason
        return
    p.train_loss = mean_loss
    if run.world.main:
        wall_s = p.inherited_wall + p.wall_before + time.perf_counter() - p.t_loop
        row = {
            "step": p.step,
            "tokens": run.batches.tokens_done(p.step),
            "train_loss": p.train_loss,
            "val_loss": p.val_loss if evaluated else None,
            "lr": lr,
            "wall_s": round(wall_s, 3),
        }
        _append_metrics(run.metrics_path, row)
        run.tracker.log_row(row)  # after the file: a reader of both sees the file first
    p.loss_acc.zero_()
    p.loss_count = 0
    if run.divergence.factor > 0 and p.status == "done":
        p.over_count, reason = run.divergence.blow_up(
            p.train_loss, p.initial_loss, p.over_count, p.step
        )
        if reason:
            p.status, p.reason = "diverged", reason


# --- the loop -----------------------------------------------------------------------------------


def train(
    spec: RunSpec,
    run_dir: Path,
    *,
    execution: ExecutionConfig | None = None,
    corpus: Corpus | None = None,
    stop_after_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    branches: Sequence[RunSpec] = (),
) -> RunResult | None:
    """Train the run described by ``spec`` in ``run_dir`` and write its result.json.

    ``branches``: shorter WSD runs that differ from this one only in D (`harness.wsd`). When this
    run has done `harness.wsd.decay_start(branch)` updates it writes that branch's resumable
    checkpoint (and its metrics.csv so far) into the branch's run directory, a sibling of
    ``run_dir``, unless the branch is finished or already has a checkpoint that far; training
    the branch afterwards resumes from there and does only its cooldown.

    Resumes from the newest readable checkpoint in ``run_dir/ckpt``. ``stop_after_steps`` ends
    the process's work after that many steps with a checkpoint and returns None (used to
    simulate preemption in tests). ``should_stop`` is polled at each step boundary (the SLURM
    launcher's signal handlers set it): when it says True, save a checkpoint and return None.

    Raises
    ------
    InputError
        ``run_dir`` holds a different run's spec.json.
    """
    t_enter, started_unix = time.perf_counter(), time.time()
    execution = execution or ExecutionConfig()
    run = _set_up(spec, Path(run_dir), execution, corpus)
    p = _resume(run)
    same_everywhere(p.step, "the step to resume from")  # each rank read the checkpoints
    if run.world.main:
        _truncate_metrics(run.metrics_path, p.step)
        run = dataclasses.replace(run, tracker=_open_tracker(run))
    try:
        return _loop(
            run, p, execution, t_enter, started_unix, stop_after_steps, should_stop, branches
        )
    except BaseException:
        run.tracker.close("failed")
        raise


def _precision(run: _Run) -> str:
    """The precision the run's matmuls run at, as `hardware.peak_flops` names it."""
    return "bf16" if run.autocast is not None else "fp32"


def _datasheet_peak(run: _Run) -> float | None:
    """One GPU's datasheet peak FLOP/s at the run's precision (`hardware.peak_flops`); None on a
    CPU, whose peak is measured once the run is over (`_finish`), or on an unknown GPU."""
    if run.device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(run.device), _precision(run))


def _open_tracker(run: _Run) -> RunTracker:
    """Rank 0's tracker ([tracking]; harness.tracking), after metrics.csv is cut back to the
    step the run resumes from. mfu per row only where the devices' peak is a datasheet's."""
    one = _datasheet_peak(run)
    peak = one * run.world.size if one is not None else None
    return open_run(
        run.spec,
        run.run_dir,
        flops_per_token=6.0 * count_params(run.spec.model).non_embedding,
        peak_flops=peak,
    )


def _loop(
    run: _Run,
    p: _Progress,
    execution: ExecutionConfig,
    t_enter: float,
    started_unix: float,
    stop_after_steps: int | None,
    should_stop: Callable[[], bool] | None,
    branches: Sequence[RunSpec],
) -> RunResult | None:
    """The steps of `train` from where the run resumes, then its result; None when stopped
    with a checkpoint."""
    spec = run.spec
    handoffs = from_main(_pending_handoffs(spec, run.run_dir, branches, p.step))
    p.t_loop = p.t_last_ckpt = time.perf_counter()
    setup_s = p.t_loop - t_enter
    bar = _progress_bar(run, execution, p.step)

    run.model.train()
    while p.step < spec.n_steps:
        lr, n_tokens = _train_step(run, p)
        if bar is not None:
            bar.update(n_tokens)
        evaluated = p.step in run.evaluation.at
        if evaluated:
            _evaluate(run, p)
        if evaluated or p.step % run.log_every == 0 or p.step == spec.n_steps:
            _log_row(run, p, lr, evaluated)
        if p.status == "diverged":
            break
        for branch in handoffs.pop(p.step, ()):
            branch_dir = run.run_dir.parent / branch.run_id
            state = _checkpoint_state(run, p)
            if run.world.main:
                _hand_off(branch, branch_dir, state, run.metrics_path)
        # stop_after_steps first: should_stop is not polled once the process is done anyway.
        stop_now = (stop_after_steps is not None and p.steps_this_process >= stop_after_steps) or (
            should_stop is not None and should_stop()
        )
        due = run.checkpointing.due(p.step, p.t_last_ckpt, stop_now)
        if run.world.size > 1:  # a signal on one rank, or one rank's clock, stops them all
            stop_now, due = agree(stop_now, due)
        if due:
            state = _checkpoint_state(run, p)
            if run.world.main:
                # Through the module's global: tests replace save_checkpoint to record saves.
                save_checkpoint(run.run_dir, state, run.checkpointing.keep)
            barrier()  # the checkpoint is whole before any rank goes on (or stops)
            p.t_last_ckpt = time.perf_counter()
            if stop_now:
                if bar is not None:
                    bar.close()
                run.tracker.close("stopped")
                return None

    if bar is not None:
        bar.close()
    return _finish(run, p, started_unix, setup_s)


# --- the result ---------------------------------------------------------------------------------


def _finish(run: _Run, p: _Progress, started_unix: float, setup_s: float) -> RunResult:
    """After the last step (or the divergence): model.pt of a done run, result.json, and the
    checkpoints dropped (a finished run needs no resume state; the store stays small)."""
    spec, device, autocast = run.spec, run.device, run.autocast
    wall_train = p.wall_before + time.perf_counter() - p.t_loop
    tokens_done = run.batches.tokens_done(p.step)
    trained_tokens = tokens_done - p.branch_step * run.batches.batch_size * run.batches.seq_len
    n_unique = min(spec.n_tokens, run.batches.order.n_unique_tokens)
    eval_total = p.eval_before + p.eval_s
    step_loop_s = wall_train - eval_total
    tokens_per_s = round(trained_tokens / step_loop_s, 1) if step_loop_s > 0 else 0.0
    precision = _precision(run)
    main, n_dev = run.world.main, run.world.size
    if p.status == "done":
        # The final weights (no optimizer state), before result.json: a done run always has
        # them. harness.finetune starts from them ([downstream]).
        weights, _ = _full_state(run, with_optimizer=False)
        if main:
            torch_save_atomic(weights, run.run_dir / "model.pt", "the final weights")
    # Measured after the timed loop, with its own generator: it changes no result but these.
    # One device's peak (rank 0's); MFU divides by it times the device count.
    device_peak = (
        _datasheet_peak(run)
        if device.type == "cuda"
        else measure_cpu_matmul_flops(torch.get_num_threads(), autocast or torch.float32)
        if main
        else None
    )
    device_peak = float(f"{device_peak:.4g}") if device_peak is not None else None
    all_peak = device_peak * n_dev if device_peak is not None else None
    result = RunResult(
        run_id=spec.run_id,
        status=p.status,
        val_loss=p.val_loss if p.status == "done" else None,
        val_bpb=p.val_bpb if p.status == "done" else None,
        train_loss=p.train_loss,
        steps=p.step,
        n_tokens=spec.n_tokens,
        n_unique_tokens=n_unique,
        epochs=spec.n_tokens / n_unique,
        peak_lr=peak_lr(spec),
        wall_s=round(wall_train, 3),
        tokens_per_s=tokens_per_s,
        device=str(device)
        + (f":{torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        precision=precision,
        reason=p.reason,
        harness_version=__version__,
        git_sha=git_sha(),
        peak_flops=device_peak,
        mfu=mfu(6.0 * count_params(spec.model).non_embedding, tokens_per_s, all_peak),
        mfu_total=mfu(flops_per_token(spec.model).total, tokens_per_s, all_peak),
        branched_from=p.branched_from,
        trained_tokens=trained_tokens,
        trained_flops=6.0 * count_params(spec.model).non_embedding * trained_tokens,
        started_unix=round(started_unix, 6),
        setup_s=round(setup_s, 3),
        eval_s=round(eval_total, 3),
        data_s=round(p.data_before + p.data_s, 3),
        # Since the last step (t_loop + the loop's own time): model.pt, the CPU peak.
        finish_s=round(time.perf_counter() - (p.t_loop + wall_train - p.wall_before), 3),
        world_size=n_dev,
        parallel=run.parallel,
        skipped_checkpoints=list(p.skipped_checkpoints),
    )
    if main:
        write_result(run.run_dir, asdict(result))
        for path in _checkpoints(run.run_dir):
            path.unlink(missing_ok=True)
        run.tracker.finish(asdict(result))
    barrier()  # the run is over for every rank once its result is written
    return result
