"""`harness run`'s execution: the units of a grid on this machine's workers, in parallel.

A unit of work is one run, or a WSD trunk followed by the branches it hands checkpoints to
(`harness.wsd.plan_trunks`): a unit trains in one worker, its runs one after another. Units go
longest first (by the FLOPs they will spend), so a grid does not end on one big run while the
other workers idle.

Each worker is a spawned process of its own (one single-worker pool per `placement.Slot`):
it imports torch once, sees only its own GPU (CUDA_VISIBLE_DEVICES) and uses its own threads.
A worker that dies (SIGKILL, segfault, out of memory) fails the run it was on, alone; its pool
is rebuilt and the rest of its unit goes back in the queue.

Every run trains under its run directory's lock (`locks.RunLock`): another `harness run` or a
SLURM job on the same experiment skips a held run and names its holder, so no run is trained
twice and no metrics.csv is written by two processes.

Signals: SIGTERM, SIGINT and SIGHUP stop every worker at its next step boundary with a
checkpoint (forwarded to each worker; a terminal's Ctrl-C reaches them directly), and
`run_local` raises `Interrupted` once all have stopped; the command then writes runs.csv for
what finished and exits 128 + the signal's number. A second signal kills the workers at once.
A worker whose parent disappears (the command killed with -9) checkpoints and exits by itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ExecutionConfig, ExperimentConfig, to_dict
from harness.errors import InputError
from harness.execute.attempt import Outcome, Trainer, attempts, train_in_process
from harness.execute.locks import holder_of
from harness.execute.placement import Slot, plan_slots
from harness.execute.ranks import stop_when_signalled
from harness.execute.retry import retry_chain
from harness.grid import RunSpec, spec_from_dict
from harness.results import ExperimentLayout
from harness.rundir import FINISHED
from harness.wsd import inherited_tokens, plan_trunks

__all__ = ["Interrupted", "Unit", "plan_units", "run_local"]

log = logging.getLogger("harness.execute")


@dataclass(frozen=True)
class Unit:
    """Runs trained one after another in one worker: a run, or a WSD trunk and its branches."""

    runs: tuple[RunSpec, ...]
    branches: dict[str, tuple[RunSpec, ...]]
    """trunk run_id -> the branches it hands checkpoints to (within this unit)."""
    flops: float
    """FLOPs the unit will spend itself (a branch only trains its cooldown)."""


class Interrupted(Exception):
    """`harness run` was stopped by a signal; every worker stopped at a step boundary."""

    def __init__(self, signum: int, outcomes: list[Outcome]) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.outcomes = outcomes


def plan_units(
    specs: list[RunSpec], execution: ExecutionConfig, *, longest_first: bool = True
) -> list[Unit]:
    """The units of ``specs``, longest first (ties keep the grid's order), or in the grid's
    order. `harness run` and `harness submit` (one job per unit) share them."""
    branches_of: dict[str, list[RunSpec]] = {}
    order = list(specs)
    if execution.share_wsd_trunks:
        order, branches_of = plan_trunks(order)
    served = {b.run_id: t for t, bs in branches_of.items() for b in bs}
    inherits = {b.run_id: inherited_tokens(b) for bs in branches_of.values() for b in bs}

    def cost(s: RunSpec) -> float:
        return s.flops * (1 - inherits.get(s.run_id, 0) / s.n_tokens)

    units = []
    by_id = {s.run_id: s for s in order}
    for s in order:
        if s.run_id in served and served[s.run_id] in by_id:
            continue  # trained in its trunk's unit
        runs = (s, *[b for b in branches_of.get(s.run_id, ()) if b.run_id in by_id])
        units.append(
            Unit(
                runs,
                {s.run_id: tuple(runs[1:])} if len(runs) > 1 else {},
                sum(cost(r) for r in runs),
            )
        )
    if not longest_first:
        return units
    return sorted(units, key=lambda u: -u.flops)  # stable: equal costs keep the grid's order


# --- the worker ----------------------------------------------------------------------------------

_STOP = threading.Event()  # in a worker: stop at the next step boundary
_BUSY = threading.Event()  # in a worker: a unit of runs is in progress


def _worker_init(threads: int, cuda_visible_devices: str | None) -> None:
    """Worker set-up, before torch is imported: threads, GPU, signals, parent watch."""
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices

    stop_when_signalled(_STOP, idle=lambda: not _BUSY.is_set())


def _run_unit(
    unit: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    root: str,
    execution: dict[str, Any],
    corpus: Any = None,
) -> list[Outcome]:
    """Worker body: a unit's runs in order, each with its divergence retries (`attempts`), on
    the corpus the command prepared."""
    _BUSY.set()  # first: a signal from here on stops the unit at a step boundary
    try:
        from harness.config import build_section
        from harness.execute.ranks import train_on_devices

        exe = build_section(ExecutionConfig, execution, "execution", "launcher")
        # One process, or devices_per_run ranks of torch.distributed (harness.distributed).
        launch: Trainer = functools.partial(
            train_in_process if exe.devices_per_run == 1 else train_on_devices, corpus=corpus
        )
        layout = ExperimentLayout(Path(root))
        out: list[Outcome] = []
        for spec_dict, branch_dicts in unit:
            spec = spec_from_dict(spec_dict)
            if _STOP.is_set():
                out.append(Outcome(spec.run_id, "interrupted"))
                continue
            branches = [spec_from_dict(b) for b in branch_dicts]
            out += attempts(
                spec, layout, exe, branches=branches, train=launch, should_stop=_STOP.is_set
            )
        return out
    finally:
        _BUSY.clear()


# --- the main process ----------------------------------------------------------------------------


class _Worker:
    """One slot's single-worker pool, rebuilt when its process dies."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.pool = self._new()
        self.unit: Unit | None = None
        self.future: cf.Future[list[Outcome]] | None = None

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.slot.threads, self.slot.cuda_visible_devices),
        )

    def rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new()

    def pids(self) -> list[int]:
        # The pool's process ids (a private attribute of concurrent.futures, stable since 3.8):
        # the signals a terminal does not deliver (kill PID) are forwarded to them.
        return [
            p.pid
            for p in (getattr(self.pool, "_processes", None) or {}).values()
            if p.pid is not None and p.is_alive()
        ]


@contextmanager
def _signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGTERM, SIGINT, SIGHUP to ``on_signal`` while the grid runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    old = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda signum, frame: on_signal(signum))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_local(
    exp: ExperimentConfig,
    specs: list[RunSpec],
    layout: ExperimentLayout,
    *,
    slots: list[Slot] | None = None,
    grid: list[RunSpec] | None = None,
    corpus: Any = None,
) -> list[Outcome]:
    """Train ``specs`` on this machine's workers; return one outcome per run tried.

    A run that diverges is followed, in its worker, by its retry at a lower learning rate (its
    own run, ``execution.diverge_retries`` times at most; `attempt.attempts`).

    Parameters
    ----------
    exp : ExperimentConfig
    specs : list of RunSpec
        The runs to train (`retry.pending_runs`).
    layout : ExperimentLayout
    slots : list of Slot, optional
        The workers (default `placement.plan_slots`).
    grid : list of RunSpec, optional
        The whole grid, as the command expanded it (default ``specs``): the progress bar
        counts its runs done before.
    corpus : harness.data.Corpus, optional
        The corpus the command prepared, which every run opens (default: each prepares it).

    Raises
    ------
    InputError
        A run directory holds another run's spec.json; raised before anything trains.
    Interrupted
        SIGTERM, SIGINT or SIGHUP: every worker stopped at a step boundary with a checkpoint.
    """
    execution = exp.execution
    for spec in specs:
        layout.run(spec.run_id).check_spec(spec)
    queue = deque(plan_units(list(specs), execution))
    slots = slots or plan_slots(execution, n_units=len(queue))
    # Workers draw no bars of their own; the grid's bar and a line per worker are drawn here.
    worker_exe = to_dict(dataclasses.replace(execution, progress=False))
    outcomes: list[Outcome] = []
    stop: dict[str, int] = {}
    workers = [_Worker(s) for s in slots]

    def on_signal(signum: int) -> None:
        first = "signum" not in stop
        stop.setdefault("signum", signum)
        for w in workers:
            for pid in w.pids():
                try:
                    os.kill(pid, signal.SIGTERM if first else signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # Bars only on a terminal (as tqdm's disable=None would): a log file gets no redraws.
    bars = (
        _Bars(exp, queue, workers, layout, grid if grid is not None else list(specs))
        if execution.progress and queue and sys.stderr.isatty()
        else None
    )
    try:
        with _signals(on_signal):
            while queue or any(w.future for w in workers):
                for w in workers:
                    if w.future is None and queue and "signum" not in stop:
                        w.unit = queue.popleft()
                        payload = [
                            (s.to_dict(), [b.to_dict() for b in w.unit.branches.get(s.run_id, ())])
                            for s in w.unit.runs
                        ]
                        try:
                            w.future = w.pool.submit(
                                _run_unit, payload, str(layout.root), worker_exe, corpus
                            )
                        except BrokenProcessPool:
                            w.rebuild()
                            queue.appendleft(w.unit)
                if bars is not None:
                    bars.refresh()
                if "signum" in stop and not any(w.future for w in workers):
                    break
                running = [w.future for w in workers if w.future is not None]
                cf.wait(running, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for w in workers:
                    if w.future is None or not w.future.done():
                        continue
                    unit, fut = w.unit, w.future
                    w.future, w.unit = None, None
                    assert unit is not None
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        results = _died(unit, layout)
                        rest = [s for s in unit.runs if s.run_id not in {o.run_id for o in results}]
                        if rest and "signum" not in stop:
                            queue.appendleft(Unit(tuple(rest), {}, 0.0))
                        w.rebuild()
                    outcomes += results
                    if bars is not None:
                        bars.finished(unit, results)
    finally:
        for w in workers:
            w.pool.shutdown(wait=True, cancel_futures=True)
            for pid in w.pids():  # never leave a worker behind
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if bars is not None:
            bars.close()
    if "signum" in stop:
        raise Interrupted(stop["signum"], outcomes)
    return outcomes


def _died(unit: Unit, layout: ExperimentLayout) -> list[Outcome]:
    """The worker died: the run it was on (the first of the unit's runs and their divergence
    retries without a result that no other process holds) failed; the runs before it kept
    their results."""
    error = "the worker process died (killed, crashed or out of memory)"
    out = []
    for spec in unit.runs:
        for run_id in (spec.run_id, *retry_chain(spec.run_id, layout)):
            run = layout.run(run_id)
            done = run.finished()
            if done is not None:
                out.append(Outcome(run_id, done["status"], done.get("val_loss")))
            elif holder_of(run.path) is None:  # held: another process trains it, not this one
                run.record_failure(error)
                return [*out, Outcome(run_id, "failed", error=error)]
    return out


class _Bars:
    """The grid's bar over FLOPs (runs done, FLOPs done, ETA) and a line per worker (its run's
    step of steps, latest training loss and ETA), all read from the runs' metrics.csv."""

    def __init__(
        self,
        exp: ExperimentConfig,
        queue: deque[Unit],
        workers: list[_Worker],
        layout: ExperimentLayout,
        grid: list[RunSpec],
    ) -> None:
        from tqdm.auto import tqdm

        self.workers, self.layout = workers, layout
        self.specs: dict[str, RunSpec] = {}
        self.cost: dict[str, float] = {}  # FLOPs a run spends itself (a branch: its cooldown)
        self.inherited: dict[str, int] = {}  # tokens a WSD branch starts with
        self.spent: dict[str, float] = {}  # FLOPs its metrics.csv says it trained
        self.ended: dict[str, str] = {}  # run_id -> outcome, for the runs that came back
        for u in queue:
            self.add(u)
        self.before_runs, self.before_flops = _done_before(exp, grid, set(self.specs), layout)
        for run_id in self.specs:
            self._measure(run_id)
        # What was done before this command started (runs found done, the steps behind a
        # resumed run's checkpoint) took no time here: the rate leaves it out.
        self.at_start = self.before_flops + sum(self.spent.values())
        self.t0: float | None = None
        self.grid = tqdm(
            total=1.0,
            position=0,
            desc=f"grid {exp.name}",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {postfix}",
        )
        self.lines = [
            tqdm(
                total=1,
                position=i + 1,
                desc=f"{w.slot.label}: starting",
                dynamic_ncols=True,
                bar_format="{desc}",
                leave=False,
            )
            for i, w in enumerate(workers)
        ]
        self.refresh()

    def add(self, unit: Unit) -> None:
        """A unit to train: its runs join the grid's count and FLOPs."""
        branches = {b.run_id for bs in unit.branches.values() for b in bs}
        for s in unit.runs:
            if s.run_id in self.specs:  # the rest of a unit whose worker died
                continue
            self.specs[s.run_id] = s
            self.inherited[s.run_id] = inherited_tokens(s) if s.run_id in branches else 0
            self.cost[s.run_id] = s.flops * (1 - self.inherited[s.run_id] / s.n_tokens)
            self.spent[s.run_id] = 0.0

    def _measure(self, run_id: str) -> Any:
        """Read a run's newest metrics.csv row: its FLOPs trained so far; its progress."""
        from harness.execute.progress import read_progress

        spec, inh = self.specs[run_id], self.inherited[run_id]
        p = read_progress(self.layout.run_dir(run_id), tail_bytes=4096)
        if p is not None:
            part = (p.tokens - inh) / max(1, spec.n_tokens - inh)
            self.spent[run_id] = self.cost[run_id] * min(1.0, max(0.0, part))
        return p

    def _track(self, run_id: str) -> bool:
        """Count a divergence retry a worker set up (it trains after its run, in the same
        worker); False where its spec.json does not read (the bar leaves it out)."""
        if run_id not in self.specs:
            try:
                self.add(Unit((self.layout.run(run_id).spec(),), {}, 0.0))
            except InputError:
                return False
        return True

    def finished(self, unit: Unit, results: list[Outcome]) -> None:
        for o in results:
            if self._track(o.run_id):
                self.ended[o.run_id] = o.status
                self._measure(o.run_id)

    def totals(self) -> tuple[int, int, int, float, float]:
        """Runs done (or diverged), runs in all, runs failed, FLOPs done, FLOPs in all."""
        done = self.before_runs + sum(s in FINISHED for s in self.ended.values())
        failed = sum(s == "failed" for s in self.ended.values())
        flops_done = self.before_flops + sum(self.spent.values())
        # A run that came back without finishing (diverged, failed, interrupted, held by another
        # process) trains no further here: the grid's total keeps only what it trained.
        flops_total = self.before_flops + sum(
            self.spent[r] if self.ended.get(r, "done") != "done" else c
            for r, c in self.cost.items()
        )
        return done, self.before_runs + len(self.specs), failed, flops_done, flops_total

    def refresh(self) -> None:
        from harness.execute.progress import grid_eta_s, grid_line, run_line

        for w, line in zip(self.workers, self.lines, strict=True):
            if w.unit is None:
                line.set_description_str(f"{w.slot.label}: idle", refresh=True)
                continue
            shown = None
            for s in w.unit.runs:
                # A run, then the retries it diverged into, which train in the same worker.
                for run_id in (s.run_id, *retry_chain(s.run_id, self.layout)):
                    if run_id in self.ended or not self._track(run_id):
                        continue
                    p = self._measure(run_id)
                    if shown is None and self.layout.run(run_id).finished() is None:
                        shown = run_line(run_id, p, self.specs[run_id].n_steps)
            line.set_description_str(f"{w.slot.label}: {shown or 'finishing'}", refresh=True)
        done, n_runs, failed, flops_done, flops_total = self.totals()
        now = time.monotonic()
        if self.t0 is None and flops_done > self.at_start:
            # The clock starts at the first FLOPs trained here, not at the workers' start-up
            # (spawn, torch's import): what trained before it counts as done before.
            self.t0, self.at_start = now, flops_done
        # The ETA follows the FLOPs rate, not the runs rate: see grid_eta_s.
        eta = (
            None
            if self.t0 is None
            else grid_eta_s(flops_done, self.at_start, flops_total, now - self.t0)
        )
        text = grid_line(done, n_runs, flops_done, flops_total, eta, failed=failed)
        self.grid.total = max(flops_total, 1.0)
        self.grid.n = min(flops_done, self.grid.total)
        self.grid.bar_format = "{l_bar}{bar}| " + text.replace("{", "{{").replace("}", "}}")
        self.grid.refresh()

    def close(self) -> None:
        self.refresh()
        for b in (*self.lines, self.grid):  # the worker lines go, the grid's bar stays
            b.close()


def _done_before(
    exp: ExperimentConfig, grid: list[RunSpec], todo: set[str], layout: ExperimentLayout
) -> tuple[int, float]:
    """The grid's runs found done (or diverged) before this command: how many, their FLOPs."""
    done = [s for s in grid if s.run_id not in todo and layout.run(s.run_id).state() in FINISHED]
    return len(done), sum(u.flops for u in plan_units(done, exp.execution))
