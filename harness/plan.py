"""`harness plan EXP.toml`: the grid as a table, with FLOPs and estimated times, before training.

For every run: N (non-embedding), shape, D, tokens per parameter, C = 6 N D (Kaplan et al.
2020; Hoffmann et al. 2022) and the FLOPs with attention, embeddings and logits
(`harness.model.flops_per_token`, Chinchilla appendix F), the isoFLOP budget, the swept learning
rate and batch size, and an estimated wall time. Nothing is written and nothing trains.

Time estimates:

- CPU: measured on the spot. A few optimizer steps (forward, backward, AdamW) of each distinct
  model shape and batch size run on random tokens, at most ~`CPU_TIMING_BUDGET_S` seconds in
  all, the smallest and the largest first; each gives tokens/s and a model FLOP utilisation
  (MFU, FLOPs with attention over the measured fp32 matmul peak,
  `harness.hardware.measure_cpu_matmul_flops`). A shape not timed within the budget gets the
  MFU of the timed shape nearest in FLOPs per step.
- CUDA: the datasheet peak (`harness.hardware.peak_flops`) times an assumed MFU
  (`ASSUMED_GPU_MFU`), printed with the table; small models reach far less.
- A named GPU (execution.gpu), wherever the plan runs: no model is built and nothing is
  timed. Each run's memory per GPU is estimated from its shape, the micro-batch and GPUs that
  fit are chosen, and its GPU-hours are its FLOPs at execution.gpu_mfu of the bf16 peak
  (`harness.sizing`); a run that fits nothing is refused with its numbers.

A run's time is D / (tokens/s) for training plus its evaluations (evals_per_run passes over
eval_tokens, forward only: a third of a training step's FLOPs per token), plus [eval]'s task
evaluations: the tokens one of them feeds the model (`harness.evals.tasks.tokens_per_evaluation`)
times the task evaluations of the run, also at a third of a training step per token.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import check_writable
from harness.config import ExperimentConfig, load_experiment
from harness.data import prepare_corpus
from harness.device import device_kind, precision_for
from harness.errors import naming
from harness.flops import step_work, training_flops
from harness.grid import GridExpansion, RunSpec
from harness.hardware import Accelerator, accelerator
from harness.memory import HEADROOM
from harness.model import ModelShape, count_params, flops_per_token
from harness.preflight import check_memory, checked_grid, memory_bytes, state_bytes
from harness.schedules import task_eval_steps
from harness.sizing import GpuFit, size_for_gpu
from harness.synthetic import is_synthetic
from harness.tokenizer import text_encoder
from harness.units import fmt_duration

__all__ = [
    "ASSUMED_GPU_MFU",
    "CPU_TIMING_BUDGET_S",
    "PlanRow",
    "Throughput",
    "format_plan",
    "plan",
    "plan_rows",
]

ASSUMED_GPU_MFU = 0.35
"""Assumed model FLOP utilisation on a GPU (FLOPs with attention over the dense datasheet peak):
well-tuned large-model training reaches 0.35-0.5 (Chowdhery et al. 2022, PaLM, table 3)."""

CPU_TIMING_BUDGET_S = 15.0
"""Seconds `harness plan` may spend timing training steps on a CPU."""


@dataclass(frozen=True, kw_only=True)
class PlanRow:
    """One run of the plan."""

    spec: RunSpec
    n_params: int
    """Non-embedding parameters N."""
    flops: float
    """6 N D."""
    flops_total: float
    """Training FLOPs with attention, embeddings and logits (Chinchilla appendix F)."""
    est_s: float | None
    """Estimated wall time of the run, seconds (None: no estimate for this device)."""
    gpu: GpuFit | None = None
    """Its sizing for execution.gpu (`harness.sizing`); None when the plan is for this machine."""

    @property
    def tokens_per_param(self) -> float:
        return self.spec.n_tokens / self.n_params


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """Training tokens/s per (shape, batch size), and how it was obtained."""

    device: str
    """'cpu' or 'cuda'."""
    peak_flops: float | None
    """Measured CPU matmul peak, or the GPU's datasheet peak; None when unknown."""
    tokens_per_s: dict[tuple[ModelShape, int], float]
    mfu: dict[tuple[ModelShape, int], float]
    """Model FLOP utilisation (with attention) per key: measured (CPU) or assumed (GPU)."""
    measured: frozenset[tuple[ModelShape, int]] = frozenset()
    """Keys timed for real (CPU); the others use the MFU of the largest timed shape."""
    timing_s: float = 0.0
    """Seconds spent timing steps."""
    note: str = ""


def _device(exp: ExperimentConfig) -> str:
    return device_kind(exp.execution)  # imports torch only for device = "auto"


def _precision(exp: ExperimentConfig, device: str) -> str:
    return precision_for(exp.train.precision, device)


def time_steps(
    shape: ModelShape,
    batch_size: int,
    *,
    device: str,
    precision: str,
    n_steps: int = 3,
    activation_checkpointing: bool = False,
) -> float:
    """Seconds per training step (forward, backward, AdamW) of `shape` on random tokens, the
    median of `n_steps` timed steps after two warm-up steps. Trains nothing that is kept."""
    import torch
    import torch.nn.functional as F

    from harness.model import build_model, enable_activation_checkpointing

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(shape).to(device)
    if activation_checkpointing:
        enable_activation_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, shape.vocab_size, (batch_size, shape.seq_len + 1), generator=gen)
    tokens = tokens.to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    for _ in range(2):
        step()
    times = []
    for _ in range(n_steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure_throughput(
    exp: ExperimentConfig,
    specs: tuple[RunSpec, ...],
    *,
    budget_s: float = CPU_TIMING_BUDGET_S,
    timer: Callable[..., float] = time_steps,
) -> Throughput:
    """Tokens/s of every distinct (shape, batch size) of `specs` on the experiment's device."""
    import torch

    from harness.hardware import measure_cpu_matmul_flops, peak_flops

    device = _device(exp)
    precision = _precision(exp, device)
    keys = sorted(
        {(s.model, s.train.batch_size) for s in specs},
        key=lambda k: (flops_per_token(k[0]).total * k[1], k[0].n_layer, k[0].n_embd, k[1]),
    )
    fpt = {k: flops_per_token(k[0]).total for k in keys}
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = peak_flops(name, precision)
        if peak is None:
            return Throughput(
                device=device,
                peak_flops=None,
                tokens_per_s={},
                mfu={},
                note=f"{name}: no datasheet peak known; no time estimate",
            )
        work = step_work(exp.execution.activation_checkpointing)
        tps = {k: ASSUMED_GPU_MFU * peak / (fpt[k] * work) for k in keys}
        return Throughput(
            device=device,
            peak_flops=peak,
            tokens_per_s=tps,
            mfu=dict.fromkeys(keys, ASSUMED_GPU_MFU),
            note=f"{name}: {precision} datasheet peak {peak / 1e12:.0f} TFLOP/s x assumed MFU "
            f"{ASSUMED_GPU_MFU:.0%} (FLOPs with attention; small models reach far less)",
        )
    threads = exp.execution.threads
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peak = measure_cpu_matmul_flops(threads, dtype)
        mfu: dict[tuple[ModelShape, int], float] = {}
        if timer is time_steps:
            import transformers  # noqa: F401  (its import, seconds, is not a training step)

        t_start = time.perf_counter()
        # The smallest and the largest shape first: MFU grows with size, so the two ends
        # bracket the shapes that the budget leaves untimed. A shape whose training state
        # would take more than a quarter of this machine's memory is not built to be timed
        # (a 1e9-parameter model took 12 GB and minutes): it takes its neighbours' MFU.
        ram = memory_bytes("cpu")
        order = keys[:1] + keys[-1:] + keys[1:-1] if len(keys) > 1 else keys
        order = [k for k in order if ram is None or state_bytes(k[0]) <= ram / 4]
        if not order:
            return Throughput(
                device="cpu",
                peak_flops=peak,
                tokens_per_s={},
                mfu={},
                note="cpu: every shape's training state exceeds a quarter of this machine's "
                "memory; none was timed, no time estimate",
            )
        for k in order:
            if mfu and time.perf_counter() - t_start > budget_s:
                break
            s_per_step = timer(
                k[0],
                k[1],
                device="cpu",
                precision=precision,
                activation_checkpointing=exp.execution.activation_checkpointing,
            )
            mfu[k] = fpt[k] * k[1] * k[0].seq_len / s_per_step / peak
        timing_s = time.perf_counter() - t_start
    finally:
        torch.set_num_threads(previous)
    measured = frozenset(mfu)

    def cost(k: tuple[ModelShape, int]) -> float:
        return math.log(fpt[k] * k[1])

    for k in keys:
        # An untimed shape takes the MFU of the timed shape nearest in log FLOPs per step.
        mfu.setdefault(k, mfu[min(measured, key=lambda m: (abs(cost(m) - cost(k)), cost(m)))])
    tps = {k: mfu[k] * peak / fpt[k] for k in keys}
    lo, hi = min(mfu[k] for k in measured), max(mfu[k] for k in measured)
    n_threads = threads or previous
    note = (
        f"cpu, {n_threads} thread(s), {precision}: matmul peak measured {peak / 1e9:.1f} GFLOP/s; "
        f"timed {len(measured)} of {len(keys)} shape(s) in {timing_s:.1f} s, MFU (FLOPs with "
        f"attention) {lo:.1%}" + (f"..{hi:.1%}" if hi > lo else "")
    )
    if len(measured) < len(keys):
        note += (
            f"; the {len(keys) - len(measured)} other(s) take the MFU of the timed shape "
            "nearest in FLOPs per step"
        )
    return Throughput(
        device="cpu",
        peak_flops=peak,
        tokens_per_s=tps,
        mfu=mfu,
        measured=measured,
        timing_s=timing_s,
        note=note,
    )


def plan_rows(
    grid: GridExpansion,
    throughput: Throughput | None,
    gpu_fits: dict[str, GpuFit] | None = None,
    task_tokens: int = 0,
    work: float = 1.0,
) -> list[PlanRow]:
    """One PlanRow per run; est_s None without a throughput for its shape, or from its GPU
    sizing (``gpu_fits``, by run_id). ``task_tokens``: the tokens of one task evaluation.
    ``work``: a training step's compute per token (`flops.step_work`), which the throughput
    and the sizing's time include and forward-only evaluations do not."""
    rows = []
    for s in grid.specs:
        n = count_params(s.model).non_embedding
        per_token = flops_per_token(s.model).total
        est = None
        fit = (gpu_fits or {}).get(s.run_id)
        # Task evaluations and held-out evaluations are forward passes only: a third of a
        # training step per token (without activation checkpointing's forward made again).
        forward_tokens = len(task_eval_steps(s)) * task_tokens
        if fit is not None:
            est = fit.wall_s * (1.0 + forward_tokens / (3.0 * work * s.n_tokens))
        elif throughput is not None:
            tps = throughput.tokens_per_s.get((s.model, s.train.batch_size))
            if tps:
                forward_tokens += s.train.evals_per_run * s.data.eval_tokens
                est = (s.n_tokens + forward_tokens / (3.0 * work)) / tps
        rows.append(
            PlanRow(
                spec=s,
                n_params=n,
                flops=float(training_flops(n, s.n_tokens)),
                flops_total=per_token * s.n_tokens,
                est_s=est,
                gpu=fit,
            )
        )
    return rows


def format_plan(
    exp: ExperimentConfig,
    grid: GridExpansion,
    rows: list[PlanRow],
    throughput: Throughput | None,
    gpu: Accelerator | None = None,
    task_tokens: int = 0,
) -> str:
    """The plan as text: a header, one line per run, totals, and the points dropped; sized for
    ``gpu`` where given (memory per GPU, micro-batch, GPUs, GPU-hours); ``task_tokens``, the
    tokens of one [eval] task evaluation."""
    g = exp.grid
    cols: list[tuple[str, Callable[[PlanRow], str]]] = [
        ("#", lambda r: ""),
        ("run_id", lambda r: r.spec.run_id),
        ("N", lambda r: f"{r.n_params:,}"),
        ("shape", lambda r: f"{r.spec.model.n_layer}x{r.spec.model.n_embd}/{r.spec.model.n_head}h"),
        ("D", lambda r: f"{r.spec.n_tokens:,}"),
        ("D/N", lambda r: f"{r.tokens_per_param:.3g}"),
    ]
    if g.unique_tokens:
        cols.append(("U", lambda r: f"{r.spec.data.unique_tokens:,}"))
        cols.append(("epochs", lambda r: f"{r.spec.n_tokens / r.spec.data.unique_tokens:.3g}"))
    cols.append(("6ND", lambda r: f"{r.flops:.3g}"))
    cols.append(("FLOPs+attn", lambda r: f"{r.flops_total:.3g}"))
    if g.flops:
        cols.append(("budget C", lambda r: f"{r.spec.flops_budget:.3g}"))
    if g.lrs:
        cols.append(("lr", lambda r: f"{r.spec.train.lr:.3g}"))
    if g.batch_sizes:
        cols.append(("batch", lambda r: f"{r.spec.train.batch_size}x{r.spec.data.seq_len}"))
    if len(g.seeds) > 1:
        cols.append(("seed", lambda r: str(r.spec.seed)))
    cols.append(("steps", lambda r: f"{r.spec.n_steps:,}"))
    if gpu is not None:
        cols.append(("GB/GPU", lambda r: f"{r.gpu.memory.total / 1e9:.1f}" if r.gpu else "-"))
        cols.append(("micro", lambda r: str(r.gpu.micro_batch) if r.gpu else "-"))
        cols.append(("GPUs", lambda r: str(r.gpu.devices) if r.gpu else "-"))
        cols.append(("GPU-h", lambda r: f"{r.gpu.gpu_hours:.3g}" if r.gpu else "-"))
    cols.append(("est. time", lambda r: fmt_duration(r.est_s)))
    table = [[name for name, _ in cols]]
    for i, r in enumerate(rows):
        table.append([str(i + 1)] + [fn(r) for _, fn in cols[1:]])
    widths = [max(len(row[j]) for row in table) for j in range(len(cols))]
    left = {"run_id", "shape"}
    lines = []
    n_sizes = len({r.n_params for r in rows})
    lines.append(
        f"{exp.name}: {len(rows)} runs, {n_sizes} model size(s), "
        f"{len({r.spec.n_tokens for r in rows})} distinct D, seeds {list(g.seeds)}; "
        f"plan only: nothing trains, nothing is written"
    )
    if throughput is not None:
        lines.append(f"throughput: {throughput.note}")
    para = exp.model.parametrization_settings()
    if para.kind != "standard":
        depth = f", base depth {para.base_depth}" if para.kind == "completep" else ""
        lines.append(
            f"parametrization {para.kind} (base width {para.base_width}{depth}): lr is the base "
            f"shape's; hidden matrices train at lr x {para.base_width} / n_embd "
            "(harness.parametrization)"
        )
    if gpu is not None:
        lines.append(
            f"sized for {gpu.name}: {gpu.memory_bytes / 1e9:.0f} GB ({1 - HEADROOM:.0%} used), "
            f"bf16 {gpu.bf16 / 1e12:.1f} TFLOP/s ({gpu.source}) x MFU "
            f"{exp.execution.gpu_mfu:.0%} (FLOPs with attention), {exp.execution.parallel}; "
            "no model built, nothing timed"
        )
    for row in table:
        lines.append(
            "  ".join(
                c.ljust(w) if cols[j][0] in left else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    total_6nd = sum(r.flops for r in rows)
    total = sum(r.flops_total for r in rows)
    known = [r.est_s for r in rows if r.est_s is not None]
    est = fmt_duration(sum(known)) if len(known) == len(rows) else "-"
    if gpu is not None:
        fits = [r.gpu for r in rows if r.gpu is not None]
        lines.append(
            f"total: 6ND {total_6nd:.3g} FLOPs, with attention {total:.3g} FLOPs; "
            f"{sum(f.gpu_hours for f in fits):.4g} {gpu.name} GPU-hours; at most "
            f"{max(f.devices for f in fits)} GPU(s) a run"
        )
        for r in rows:
            if r.gpu is not None and r.gpu.devices > r.gpu.given:
                lines.append(
                    f"needs more GPUs: run {r.spec.run_id} (N = {r.n_params:,}) fits on "
                    f"{r.gpu.devices}, it is given {r.gpu.given}: set cluster.gpus_per_run "
                    f"(a [[cluster.by_size]] table with min_n_params <= {r.n_params}) or "
                    "execution.devices_per_run"
                )
        # One micro-batch setting serves the whole grid: the smallest any run needs.
        lines.append(
            f"settings: execution.micro_batch_size = {min(f.micro_batch for f in fits)} fits "
            "every run (column micro: the largest each run fits)"
        )
    else:
        lines.append(
            f"total: 6ND {total_6nd:.3g} FLOPs, with attention {total:.3g} FLOPs; estimated time "
            f"{est} one run after another on {throughput.device if throughput else 'this device'}"
        )
    if g.flops:
        for c in g.flops:
            k = sum(r.spec.flops_budget == c for r in rows)
            lines.append(
                f"budget C = {c:.3g}: {k} run(s)"
                + ("; an isoFLOP minimum needs 3 or more sizes" if k < 3 else "")
            )
    for d in grid.dropped:
        lines.append(
            f"dropped: N = {d.n_params:,} ({d.n_layer}x{d.n_embd}), {d.mode} = "
            f"{d.value:g}: {d.reason}"
        )
    if exp.eval.tasks:
        e = exp.eval
        lines.append(
            f"eval: {len(e.tasks)} task(s) ({', '.join(e.tasks)}), "
            f"{e.limit or 'all'} examples each, {e.num_fewshot}-shot, "
            + ("at every held-out evaluation" if e.when == "evals" else "after the last step")
            + f": {task_tokens:,} tokens per task evaluation (forward only), in est. time"
        )
    lines += [f"note: {note}" for note in grid.notes]
    return "\n".join(lines)


def plan(path: str, overrides: list[str] | None = None, *, measure: bool = True) -> str:
    """Load an experiment, expand it, estimate each run's cost and return the plan as text.

    Raises
    ------
    InputError
        Bad experiment file or overrides, or a grid that expands to nothing.
    """
    exp = load_experiment(path, overrides)
    grid = checked_grid(exp, path)
    ex = exp.execution
    gpu = accelerator(ex.gpu, ex.gpu_memory_gb, ex.gpu_bf16_tflops) if ex.gpu else None
    with naming(path):  # as `harness run` checks them before training (preflight)
        check_writable(exp.results_path, folder=True, what="execution.results_dir")
        if gpu is None:  # planned for a GPU elsewhere, this machine's memory is no limit
            check_memory(exp, grid.specs, _device(exp))
    # Read the corpus now: a bad record, an id beyond the vocabulary or a corpus too small for
    # the validation split would fail every run, so the plan refuses it. Into a scratch cache:
    # the plan writes nothing (a synthetic corpus is generated, never malformed, and skipped).
    if not is_synthetic(exp.data.corpus):
        with naming(path), tempfile.TemporaryDirectory(prefix="harness-plan-") as tmp:
            prepare_corpus(exp.data, Path(tmp) / "cache")
    with naming(path):
        task_tokens = _task_tokens(exp)
    work = step_work(exp.execution.activation_checkpointing)
    if gpu is not None:
        from harness.execute.slurm import resources_for

        precision = "fp32" if exp.train.precision == "fp32" else "bf16"

        def given(spec: RunSpec) -> int:  # the GPUs `harness submit` gives a run of its size
            if ex.devices_per_run > 1:
                return ex.devices_per_run
            res = resources_for(exp.cluster, count_params(spec.model).non_embedding)
            return max(1, res.gpus_per_run) * res.nodes_per_run

        with naming(path):
            fits = {s.run_id: size_for_gpu(s, ex, gpu, precision, given(s)) for s in grid.specs}
        rows = plan_rows(grid, None, fits, task_tokens, work)
        return format_plan(exp, grid, rows, None, gpu, task_tokens)
    throughput = measure_throughput(exp, grid.specs) if measure else None
    rows = plan_rows(grid, throughput, task_tokens=task_tokens, work=work)
    return format_plan(exp, grid, rows, throughput, task_tokens=task_tokens)


def _task_tokens(exp: ExperimentConfig) -> int:
    """Tokens of one [eval] task evaluation, under the run's tokenizer."""
    if not exp.eval.tasks:
        return 0
    from harness.evals.tasks import load, tokens_per_evaluation

    # A BPE is trained as the corpus is tokenized: counted in bytes, at least its tokens.
    encode = text_encoder(exp.data.tokenizer)
    return tokens_per_evaluation(load(exp.eval), exp.eval, encode)
