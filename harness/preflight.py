"""The checks an experiment passes before anything trains, in one place.

Loading (`config.load_experiment`) checks everything a setting can be checked for alone: keys,
types, ranges, combinations within a section. What needs more than the settings is checked
here: `checked_grid`, called by `harness plan`, `run` and `submit`, so that a grid `plan`
accepts the others do not refuse (a [tracking] backend that is not installed included); and
`check_can_train_here`, for the commands that train on this machine (`run`, `finetune`). Each
raises InputError with one line naming the experiment file.
"""

from __future__ import annotations

from harness.atomic import check_writable
from harness.config import ExperimentConfig
from harness.data import check_corpus
from harness.errors import InputError, naming
from harness.grid import GridExpansion, expand_grid
from harness.results import ExperimentLayout
from harness.tokenizer import is_pretrained
from harness.tokenizer import load as load_tokenizer
from harness.tracking import check_installed

__all__ = ["check_can_train_here", "check_device", "checked_grid"]


def checked_grid(exp: ExperimentConfig, source: str, *, corpus: bool = True) -> GridExpansion:
    """The experiment's grid, after every check that needs no training and no tokenizing: sizes
    the model rule can meet, a corpus that exists (unless ``corpus`` is False: `harness run`
    checks it only when something is left to train), and `[downstream]`'s task and n_labels.

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
    return grid


def check_device(exp: ExperimentConfig) -> None:
    """execution.device = "cuda" where torch sees no GPU, as bad input. Not for `harness
    submit`: its jobs run where the cluster puts them.

    Raises
    ------
    InputError
        No CUDA device for device = "cuda" (train.resolve_device's check).
    """
    from harness.execute.placement import usable_cores, visible_gpus
    from harness.train import resolve_device

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


def check_can_train_here(exp: ExperimentConfig, source: str, layout: ExperimentLayout) -> None:
    """What training on this machine needs besides the grid: the corpus, the device, and a
    results folder that can be written.

    Raises
    ------
    InputError
        The first failed check, its line prefixed with ``source``.
    """
    with naming(source):
        check_corpus(exp.data.corpus)
        check_device(exp)
        check_writable(layout.root, folder=True, what="execution.results_dir")
