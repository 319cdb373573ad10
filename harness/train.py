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
import errno
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
from harness.data import Corpus, gather_windows, prepare_corpus, training_order
from harness.errors import InputError
from harness.grid import RunSpec
from harness.hardware import measure_cpu_matmul_flops, mfu, peak_flops
from harness.model import build_model, count_params, flops_per_token
from harness.objectives import IGNORE_INDEX, eval_objective, training_objective
from harness.results import FINISHED, ExperimentLayout, read_result, write_result, write_spec
from harness.wsd import check_branch, decay_start, wsd_decay_steps

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
    """6 N tokens_per_s / peak_flops (N non-embedding parameters)."""
    mfu_total: float | None
    """flops_per_token(shape).total tokens_per_s / peak_flops (every matmul, Chinchilla app. F)."""
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


def peak_lr(spec: RunSpec) -> float:
    """Width-dependent peak learning rate: lr * (lr_ref_width / n_embd) ** lr_width_exponent."""
    t = spec.train
    return t.lr * (t.lr_ref_width / spec.model.n_embd) ** t.lr_width_exponent


def warmup_steps(spec: RunSpec) -> int:
    """Warmup updates: ceil(train.warmup_tokens / batch tokens), the same for every D (what lets
    WSD runs of one size share their stable phase); with warmup_tokens = 0, warmup_fraction of
    the run's own steps. At least one."""
    t = spec.train
    if t.warmup_tokens > 0:
        return max(1, math.ceil(t.warmup_tokens / spec.batch_tokens))
    return max(1, math.ceil(t.warmup_fraction * spec.n_steps))


def lr_at_step(
    step: int,
    *,
    total_steps: int,
    warmup: int,
    peak: float,
    min_ratio: float,
    schedule: Literal["cosine", "wsd", "constant"] = "cosine",
    decay_fraction: float = 0.2,
    decay_shape: Literal["linear", "1-sqrt"] = "1-sqrt",
) -> float:
    """Learning rate for the update at ``step`` (0-based) of a run of ``total_steps`` updates.

    Every schedule starts with a linear warmup, peak * (step + 1) / warmup.

    - 'cosine': after the warmup a half cosine from ``peak`` down to ``peak * min_ratio``,
      reached exactly at the last step, ``total_steps - 1`` (Hoffmann et al. 2022).
    - 'constant': ``peak`` after the warmup.
    - 'wsd' (warmup-stable-decay; Hagele et al. 2024, sec. 3, eq. for the (1-sqrt) cooldown):
      ``peak`` until the last k = round(decay_fraction * total_steps) updates, which cool down
      with progress p = (step - (total_steps - k) + 1) / k in (0, 1] to
      peak * (min_ratio + (1 - min_ratio) * (1 - p)) ('linear') or
      peak * (min_ratio + (1 - min_ratio) * (1 - sqrt(p))) ('1-sqrt'), so the last update uses
      exactly peak * min_ratio (as the cosine does; the paper's code counts p from 0 and stops
      one step short of its floor). A run so short that its warmup reaches into its cooldown
      takes the lower of the two factors at each step.
    """
    if schedule == "cosine":
        if step < warmup:
            return peak * (step + 1) / warmup
        decay_steps = total_steps - 1 - warmup
        progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup) / decay_steps)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    ramp = min(1.0, (step + 1) / warmup)
    if schedule == "constant":
        return peak * ramp
    k = wsd_decay_steps(total_steps, decay_fraction)
    if step < total_steps - k:  # the stable phase
        return peak * ramp
    progress = min(1.0, (step - (total_steps - k) + 1) / k)
    shape = progress if decay_shape == "linear" else math.sqrt(progress)
    return peak * min(ramp, min_ratio + (1 - min_ratio) * (1 - shape))


def spec_lr_at_step(spec: RunSpec, step: int) -> float:
    """`lr_at_step` with the run's own settings."""
    t = spec.train
    return lr_at_step(
        step,
        total_steps=spec.n_steps,
        warmup=warmup_steps(spec),
        peak=peak_lr(spec),
        min_ratio=t.min_lr_ratio,
        schedule=t.schedule,
        decay_fraction=t.decay_fraction,
        decay_shape=t.decay_shape,
    )


def resolve_device(execution: ExecutionConfig) -> torch.device:
    if execution.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("execution.device = 'cuda' but no CUDA device is available")
    if execution.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(execution.device)


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


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically, then drop all but the newest ``keep``.

    Raises
    ------
    DiskFullError
        The device is full; the partial temp file is removed and older checkpoints are intact.
    """
    path = run_dir / "ckpt" / f"step_{state['step']:09d}.pt"
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                e.errno,
                f"no space left on device while writing checkpoint {path} "
                "(the previous checkpoint is intact; free space and run again to resume)",
            ) from e
        raise
    except RuntimeError as e:  # torch.save wraps some write errors in its own
        if "No space left on device" in str(e) or "ENOSPC" in str(e):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while writing checkpoint {path} "
                "(the previous checkpoint is intact; free space and run again to resume)",
            ) from e
        raise
    for old in _checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a corrupt one is logged and skipped, never used."""
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
    return None


# --- evaluation ---------------------------------------------------------------------------------


# inference_mode, not no_grad: it also skips the version counters and view tracking that only
# autograd needs, which made the CPU evaluation 1.2x faster at the quickstart's shapes (the same
# sums, bit for bit). Nothing it creates outlives the call (the model's tensors are not its own).
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
    return nats_sum / n_tokens, nats_sum / (math.log(2) * n_bytes)


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
        "inherited_wall_s": state["inherited_wall_s"] + state["wall_s"],
        "branched_from": state["run_id"],
        "branch_step": state["step"],
    }
    save_checkpoint(branch_dir, {**state, **inherited}, branch.train.checkpoint_keep)
    log.info("handed %s its checkpoint at step %d", branch.run_id, state["step"])


# --- the loop -----------------------------------------------------------------------------------


def _eval_steps(total_steps: int, n_evals: int) -> set[int]:
    """Steps (1-based count of updates done) after which to evaluate; always the last."""
    return {max(1, round(total_steps * k / n_evals)) for k in range(1, n_evals + 1)}


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
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_spec(run_dir, spec)
    if execution.threads > 0:
        torch.set_num_threads(execution.threads)
    layout = ExperimentLayout(run_dir.parent.parent)
    corpus = corpus or prepare_corpus(spec.data, layout.cache_dir)
    device = resolve_device(execution)
    autocast = _autocast_dtype(spec, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    seq_len, batch_size = spec.data.seq_len, spec.train.batch_size
    n_seq_total = spec.n_tokens // seq_len
    total_steps = spec.n_steps
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
    objective = training_objective(spec)
    token_bytes = torch.from_numpy(corpus.token_n_bytes()).to(device)

    torch.manual_seed(spec.seed)
    model = build_model(spec.model).to(device)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec.model).total
    # torch.compile wraps the same parameters: checkpoints keep saving `model`'s state_dict
    # (no "_orig_mod." prefix), so a run may resume with compile on or off.
    forward = torch.compile(model) if execution.compile else model
    peak = peak_lr(spec)
    # Weight decay on matrices only (not norms, biases, or the embedding), as in GPT-3/Llama.
    embed = model.get_input_embeddings().weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not embed]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or p is embed]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=peak,
        betas=(spec.train.beta1, spec.train.beta2),
        fused=device.type == "cuda",
    )
    warmup = warmup_steps(spec)

    step, wall_before, eval_before = 0, 0.0, 0.0
    # A WSD branch's start (harness.wsd): its trunk's wall time so far (the metrics' wall_s
    # column goes on from it; result.json's wall_s is the run's own) and the trunk's run_id.
    inherited_wall, branched_from, branch_step = 0.0, None, 0
    initial_loss: float | None = None
    loss_sum, loss_count, over_count = 0.0, 0, 0
    metrics_path = run_dir / "metrics.csv"
    _remove_stale_temp_files(run_dir)
    state = load_latest_checkpoint(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        step, wall_before = int(state["step"]), float(state["wall_s"])
        eval_before = float(state.get("eval_s", 0.0))
        # The divergence rule's and the logged average's state, so a resume changes nothing.
        initial_loss = state.get("initial_loss")
        loss_sum = float(state.get("loss_sum", 0.0))
        loss_count = int(state.get("loss_count", 0))
        over_count = int(state.get("over_count", 0))
        inherited_wall = float(state.get("inherited_wall_s", 0.0))
        branched_from = state.get("branched_from")
        branch_step = int(state.get("branch_step", 0))
        log.info(
            "resuming %s at step %d of %d%s",
            spec.run_id,
            step,
            total_steps,
            f" (branched from {branched_from} at step {branch_step})" if branched_from else "",
        )
    _truncate_metrics(metrics_path, step)
    handoffs = _pending_handoffs(spec, run_dir, branches, step)

    eval_at = _eval_steps(total_steps, spec.train.evals_per_run)
    ckpt_every = spec.train.checkpoint_every_steps
    log_every = max(1, total_steps // 100)
    val_loss = val_bpb = None
    last_train_loss: float | None = None
    status: Literal["done", "diverged"] = "done"
    reason = ""
    # The training loss is summed on the device and read back only at log rows, evaluations and
    # checkpoints: a read each step would make the host wait for the device every step (on a GPU,
    # the next step's kernels could not be queued while this one runs). float64 makes the sum
    # the same number a Python float sum of the per-step losses gives.
    loss_acc = torch.tensor(loss_sum, dtype=torch.float64, device=device)
    t_loop = time.perf_counter()
    setup_s = t_loop - t_enter
    eval_s = 0.0  # this process's evaluations
    t_last_ckpt = t_loop
    ckpt_every_s = execution.checkpoint_every_s
    uniform_loss = math.log(spec.model.vocab_size)
    steps_this_process = 0

    bar = None
    if execution.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=spec.n_tokens,
            initial=min(step * batch_size, n_seq_total) * seq_len,
            unit="tok",
            unit_scale=True,
            desc=f"run {spec.run_id} L{spec.model.n_layer} d{spec.model.n_embd}",
            position=1,
            leave=False,
            dynamic_ncols=True,
        )

    def checkpoint_state() -> dict[str, Any]:
        loss_sum_now = float(loss_acc)  # first: on a GPU this waits for the queued steps
        return {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "wall_s": wall_before + time.perf_counter() - t_loop,
            "eval_s": eval_before + eval_s,
            "run_id": spec.run_id,
            "initial_loss": initial_loss,
            "loss_sum": loss_sum_now,
            "loss_count": loss_count,
            "over_count": over_count,
            "inherited_wall_s": inherited_wall,
            "branched_from": branched_from,
            "branch_step": branch_step,
        }

    model.train()
    while step < total_steps:
        first_seq = step * batch_size
        n_seq = min(batch_size, n_seq_total - first_seq)
        windows = gather_windows(train_tokens, order.window_starts(first_seq, n_seq), seq_len)
        # Causal: next tokens; masked LM: masked inputs, targets only at the chosen positions.
        x, y = objective.batch(windows, first_seq, device)
        lr = lr_at_step(
            step,
            total_steps=total_steps,
            warmup=warmup,
            peak=peak,
            min_ratio=spec.train.min_lr_ratio,
            schedule=spec.train.schedule,
            decay_fraction=spec.train.decay_fraction,
            decay_shape=spec.train.decay_shape,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(
            device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            logits = forward(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        if initial_loss is None:  # a run's first step: the divergence rule's reference
            initial_loss = float(loss.detach())
        loss_acc += loss.detach()
        loss.backward()
        if spec.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_this_process += 1
        loss_count += 1
        if bar is not None:
            bar.update(n_seq * seq_len)

        evaluated = step in eval_at
        if evaluated:
            if device.type == "cuda":  # the queued training steps are not the evaluation's
                torch.cuda.synchronize(device)
            t_eval = time.perf_counter()
            val_loss, val_bpb = evaluate(
                forward, eval_inputs, eval_targets, token_bytes, batch_size, autocast
            )
            eval_s += time.perf_counter() - t_eval
            if not math.isfinite(val_loss):
                status, reason = "diverged", f"non-finite validation loss at step {step}"
        if evaluated or step % log_every == 0 or step == total_steps:
            mean_loss = float(loss_acc) / loss_count
            if not math.isfinite(mean_loss):  # result.json keeps the last finite mean
                first = step - loss_count + 1
                status = "diverged"
                reason = f"non-finite training loss {mean_loss} in steps {first}..{step}"
                break
            last_train_loss = mean_loss
            _append_metrics(
                metrics_path,
                {
                    "step": step,
                    "tokens": min(step * batch_size, n_seq_total) * seq_len,
                    "train_loss": last_train_loss,
                    "val_loss": val_loss if evaluated else None,
                    "lr": lr,
                    "wall_s": round(inherited_wall + wall_before + time.perf_counter() - t_loop, 3),
                },
            )
            loss_acc.zero_()
            loss_count = 0
            if execution.diverge_factor > 0 and status == "done":
                threshold = execution.diverge_factor * max(initial_loss or 0.0, uniform_loss)
                over_count = over_count + 1 if last_train_loss > threshold else 0
                if over_count >= execution.diverge_patience:
                    status = "diverged"
                    reason = (
                        f"training loss blew up: {last_train_loss:.4g} > {threshold:.4g} "
                        f"(diverge_factor {execution.diverge_factor:g} x max(first-step loss "
                        f"{initial_loss:.4g}, ln(vocab) {uniform_loss:.4g})) for "
                        f"{over_count} log interval(s), at step {step}"
                    )
        if status == "diverged":
            break
        for branch in handoffs.pop(step, ()):
            _hand_off(branch, run_dir.parent / branch.run_id, checkpoint_state(), metrics_path)
        stop_now = (stop_after_steps is not None and steps_this_process >= stop_after_steps) or (
            should_stop is not None and should_stop()
        )
        if step < total_steps and (
            (ckpt_every and step % ckpt_every == 0)
            or (ckpt_every_s and time.perf_counter() - t_last_ckpt >= ckpt_every_s)
            or stop_now
        ):
            save_checkpoint(run_dir, checkpoint_state(), spec.train.checkpoint_keep)
            t_last_ckpt = time.perf_counter()
            if stop_now:
                if bar is not None:
                    bar.close()
                return None

    if bar is not None:
        bar.close()
    wall_train = wall_before + time.perf_counter() - t_loop
    tokens_done = min(step * batch_size, n_seq_total) * seq_len
    trained_tokens = tokens_done - branch_step * batch_size * seq_len
    n_unique = min(spec.n_tokens, order.n_unique_tokens)
    eval_total = eval_before + eval_s
    step_loop_s = wall_train - eval_total
    tokens_per_s = round(trained_tokens / step_loop_s, 1) if step_loop_s > 0 else 0.0
    precision = "bf16" if autocast is not None else "fp32"
    if status == "done":
        # The final weights (no optimizer state), before result.json: a done run always has
        # them. harness.finetune starts from them ([downstream]).
        atomic_write(run_dir / "model.pt", lambda f: torch.save(model.state_dict(), f))
    # Measured after the timed loop, with its own generator: it changes no result but these.
    device_peak = (
        peak_flops(torch.cuda.get_device_name(device), precision)
        if device.type == "cuda"
        else measure_cpu_matmul_flops(torch.get_num_threads(), autocast or torch.float32)
    )
    device_peak = float(f"{device_peak:.4g}") if device_peak is not None else None
    result = RunResult(
        run_id=spec.run_id,
        status=status,
        val_loss=val_loss if status == "done" else None,
        val_bpb=val_bpb if status == "done" else None,
        train_loss=last_train_loss,
        steps=step,
        n_tokens=spec.n_tokens,
        n_unique_tokens=n_unique,
        epochs=spec.n_tokens / n_unique,
        peak_lr=peak,
        wall_s=round(wall_train, 3),
        tokens_per_s=tokens_per_s,
        device=str(device)
        + (f":{torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        precision=precision,
        reason=reason,
        harness_version=__version__,
        git_sha=git_sha(),
        peak_flops=device_peak,
        mfu=mfu(6.0 * count_params(spec.model).non_embedding, tokens_per_s, device_peak),
        mfu_total=mfu(flops_per_token(spec.model).total, tokens_per_s, device_peak),
        branched_from=branched_from,
        trained_tokens=trained_tokens,
        trained_flops=6.0 * count_params(spec.model).non_embedding * trained_tokens,
        started_unix=round(started_unix, 6),
        setup_s=round(setup_s, 3),
        eval_s=round(eval_total, 3),
        # Since the last step (t_loop + the loop's own time): model.pt, the CPU peak.
        finish_s=round(time.perf_counter() - (t_loop + wall_train - wall_before), 3),
    )
    write_result(run_dir, asdict(result))
    # A finished run needs no resume state; drop it to keep the store small.
    for path in _checkpoints(run_dir):
        path.unlink(missing_ok=True)
    return result
