"""The checks an experiment passes before anything trains, in one place.

Loading (`config.load_experiment`) checks everything a setting can be checked for alone: keys,
types, ranges, combinations within a section. What needs more than the settings is checked
here: `checked_grid`, called by `harness plan`, `run` and `submit`, so that a grid `plan`
accepts the others do not refuse (a [tracking] backend that is not installed included); and
`check_can_train_here`, for the commands that train on this machine (`run`, `finetune`). Each
raises InputError with one line naming the experiment file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from harness.atomic import check_writable
from harness.config import ExperimentConfig
from harness.data import check_corpus
from harness.errors import InputError, naming
from harness.grid import GridExpansion, RunSpec, expand_grid
from harness.memory import STATE_BYTES_PER_PARAM
from harness.results import ExperimentLayout
from harness.tokenizer import is_pretrained
from harness.tokenizer import load as load_tokenizer
from harness.tracking import check_installed

__all__ = [
    "STATE_BYTES_PER_PARAM",
    "check_can_train_here",
    "check_device",
    "check_memory",
    "checked_grid",
    "memory_bytes",
    "state_bytes",
]

# A run whose training state alone does not fit surely fails (activations come on top).


def state_bytes(shape: Any) -> int:
    """Bytes of a model's training state (`STATE_BYTES_PER_PARAM` a parameter, closed-form
    count: no model is built)."""
    from harness.model import count_params

    return STATE_BYTES_PER_PARAM * count_params(shape).total


def memory_bytes(device: str) -> int | None:
    """This machine's memory for training: RAM on a CPU, one GPU's memory on CUDA; None when
    it cannot be read."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(exp: ExperimentConfig, specs: Sequence[Any], device: str) -> None:
    """Refuse, before anything trains, a run whose training state alone exceeds this machine's
    memory: every such run would fail (issue 31: N = 1e15 tried to allocate 48 GB and both
    runs of its grid failed). Per device: DDP ranks each hold the whole state, FSDP a share;
    on a CPU the ranks share one RAM.

    Raises
    ------
    InputError
        The largest such run, its need and the memory there is.
    """
    have = memory_bytes(device)
    if have is None or not specs:
        return
    k = exp.execution.devices_per_run
    fsdp = exp.execution.parallel == "fsdp"
    per_copy = max(specs, key=lambda sp: state_bytes(sp.model))
    need = state_bytes(per_copy.model)
    if device == "cuda":
        need = need // k if fsdp else need
    elif not fsdp:
        need *= k
    if need > have:
        from harness.model import count_params

        n = count_params(per_copy.model).total
        raise InputError(
            f"grid: a model of {n:,} parameters needs {need / 2**30:,.1f} GiB for its weights, "
            f"gradients and AdamW state alone; this machine's {device} has "
            f"{have / 2**30:,.1f} GiB; accepted: sizes whose training state fits (16 bytes a "
            "parameter), or a cluster (`harness submit`)"
        )


def checked_grid(exp: ExperimentConfig, source: str, *, corpus: bool = True) -> GridExpansion:
    """The experiment's grid, after every check that needs no training and no tokenizing: sizes
    the model rule can meet, a corpus that exists (unless ``corpus`` is False: `harness run`
    checks it only when something is left to train), `[downstream]`'s task and n_labels, and
    `[eval]`'s tasks.

    Raises
    ------
    InputError
        The first failed check, its line prefixed with ``source`` (the experiment file).
    """
    with naming(source):
        check_installed(exp.tracking)
        grid = expand_grid(exp)
        if corpus:
            check_corpus(exp.data.corpus)
            if is_pretrained(exp.data.tokenizer):
                load_tokenizer(exp.data.tokenizer)
        if exp.downstream.task:
            from harness.tasks import downstream_task

            downstream_task(exp.downstream, exp.data)
        if exp.eval.tasks:  # lm-eval installed, every task loads and is multiple-choice
            from harness.evals.tasks import load

            load(exp.eval)
    return grid


def check_device(exp: ExperimentConfig) -> str:
    """The device type the runs train on here ("cuda" or "cpu"); execution.device = "cuda"
    where torch sees no GPU is bad input. Not for `harness submit`: its jobs run where the
    cluster puts them.

    Raises
    ------
    InputError
        No CUDA device for device = "cuda" (train.resolve_device's check).
    """
    from harness.device import resolve_device
    from harness.execute.placement import usable_cores, visible_gpus

    try:
        device = resolve_device(exp.execution)
    except RuntimeError as e:
        raise InputError(
            f"{e}; accepted: auto or cpu on this machine, cuda where a GPU is visible"
        ) from None
    k = exp.execution.devices_per_run
    have, what = (
        (len(visible_gpus()), "visible GPUs")
        if device.type == "cuda"
        else (usable_cores(), "usable cores (one process each)")
    )
    if k > have:
        raise InputError(
            f"execution.devices_per_run = {k}: this machine has {have} {what}; accepted: "
            f"1 to {have}"
        )
    return device.type


def check_can_train_here(
    exp: ExperimentConfig, source: str, layout: ExperimentLayout, specs: Sequence[RunSpec]
) -> None:
    """What training ``specs`` (the grid as the command expanded it) on this machine needs
    besides the grid: the corpus, the device, memory, and a results folder that can be written.

    Raises
    ------
    InputError
        The first failed check, its line prefixed with ``source``.
    """
    with naming(source):
        check_corpus(exp.data.corpus)
        device = check_device(exp)
        check_writable(layout.root, folder=True, what="execution.results_dir")
        check_memory(exp, specs, device)
