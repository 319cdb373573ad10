"""[eval]'s tasks by name or file, loaded through lm-eval's TaskManager and checked (`load`
is what `harness plan`, `run` and `submit` call first: a task that does not load, or lm-eval
missing, is one line and exit 2, before anything trains).

A name in eval.tasks is a bundled task (`harness.evals.bundled`), a path to a task YAML file
(``.yaml``/``.yml``; relative data files in its ``dataset_kwargs.data_files`` are read from
the YAML's folder, so a task travels as one folder), or a task lm-eval itself registers
(e.g. 'hellaswag', whose data must then be reachable: the Hugging Face cache or the network).
Only multiple-choice tasks (ranked classification) are scored.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import EvalConfig
from harness.errors import InputError
from harness.evals.bundled import BUNDLED, bundled_dir

__all__ = ["LoadedTask", "load", "quiet", "tokens_per_evaluation"]

_INSTALL = "pip install 'scaling-harness[eval]' (lm-eval)"
_ACCEPTED = (
    f"a bundled task ({', '.join(BUNDLED)}), a path to a task YAML file, or an lm-eval task name"
)


@dataclass(frozen=True, eq=False)
class LoadedTask:
    """One task ready to score: lm-eval's Task object and what the harness records of it."""

    name: str
    task: Any  # lm_eval.api.task.Task
    metrics: tuple[str, ...]
    """What it reports: 'acc', 'acc_norm' where the task defines it, and 'bpb'."""


def _is_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _absolute_data(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config with relative local data files made absolute against ``folder``."""

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            p = Path(v).expanduser()
            return str(folder / p) if not p.is_absolute() and (folder / p).exists() else v
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = fix(kwargs["data_files"])
        config = {**config, "dataset_kwargs": kwargs}
    return config


def _spec(name: str) -> str | dict[str, Any]:
    """What TaskManager.load takes for one name: a config dict (bundled, file) or the name."""
    # lm-eval's own reader (includes, !function tags); its module is private: pinned in [eval].
    from lm_eval.tasks._yaml_loader import load_yaml

    if name in BUNDLED:
        path = bundled_dir() / f"{name}.yaml"
    elif _is_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InputError(f"eval.tasks = {name!r}: no such file; accepted: {_ACCEPTED}")
    else:
        return name
    try:
        config = load_yaml(path)
    except Exception as exc:  # yaml's and lm-eval's errors  # noqa: BLE001
        first = " ".join(str(exc).split())[:300]
        raise InputError(
            f"eval.tasks = {name!r}: cannot read ({type(exc).__name__}: {first}); "
            "accepted: an lm-eval task YAML file"
        ) from None
    if not isinstance(config, dict) or not config.get("task"):
        raise InputError(
            f"eval.tasks = {name!r}: the YAML names no task (its 'task' key); "
            f"accepted: an lm-eval task YAML file"
        )
    config.pop("group", None)
    config.pop("tag", None)
    return _absolute_data(config, path.parent.resolve())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval and datasets log each task's loading at INFO and draw progress bars: not in a
    grid's output."""
    names = ("lm-eval", "lm_eval", "datasets")
    levels = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for n, lv in zip(names, levels, strict=True):
            logging.getLogger(n).setLevel(lv)


def load(cfg: EvalConfig) -> list[LoadedTask]:
    """Every task of ``cfg``, loaded, with its few-shot number and seed set.

    Raises
    ------
    InputError
        lm-eval is not installed; a task that is not found, does not load, names no data or
        is not multiple-choice; fewer examples than eval.num_fewshot needs.
    """
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise InputError(
            f"eval.tasks = {list(cfg.tasks)!r} needs lm-evaluation-harness, which is "
            f"not installed; accepted: {_INSTALL}, or no eval.tasks"
        ) from None
    out = []
    registered = [n for n in cfg.tasks if n not in BUNDLED and not _is_file(n)]
    with quiet():
        manager = TaskManager(include_defaults=bool(registered))
        for name in cfg.tasks:
            spec = _spec(name)
            try:
                loaded = manager.load([spec])["tasks"]
            except Exception as exc:  # lm-eval raises what its loaders raise  # noqa: BLE001
                first = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise InputError(
                    f"eval.tasks = {name!r} does not load ({type(exc).__name__}: "
                    f"{first}); accepted: {_ACCEPTED}"
                ) from None
            if len(loaded) != 1:
                raise InputError(
                    f"eval.tasks = {name!r} is a group of {len(loaded)} tasks; "
                    "accepted: one task per name (list a group's tasks one by one)"
                )
            ((task_name, task),) = loaded.items()
            if any(t.name == task_name for t in out):
                raise InputError(
                    f"eval.tasks = {name!r} is task {task_name!r}, which another entry names "
                    "too; accepted: each task once (its columns and rows are keyed by name)"
                )
            out.append(_ready(name, task_name, task, cfg))
    return out


def _ready(name: str, task_name: str, task: Any, cfg: EvalConfig) -> LoadedTask:
    kind = task.get_config("output_type")
    if kind != "multiple_choice":
        raise InputError(
            f"eval.tasks = {name!r} has output_type {kind!r}; accepted: "
            "multiple_choice tasks (ranked classification)"
        )
    task.set_config(key="num_fewshot", value=cfg.num_fewshot)
    task.set_fewshot_seed(seed=cfg.seed)
    n_docs = len(task.eval_docs)
    if n_docs == 0:
        raise InputError(f"eval.tasks = {name!r} has no examples; accepted: a task with data")
    _check_first_doc(name, task)
    if cfg.num_fewshot and not (task.has_training_docs() or task.has_validation_docs()):
        # Drawn from the scored split itself, a few-shot example could be its own question.
        if n_docs <= cfg.num_fewshot:
            raise InputError(
                f"eval.num_fewshot = {cfg.num_fewshot}: task {name!r} has "
                f"{n_docs} examples; accepted: fewer few-shot examples than that"
            )
    listed = set(getattr(task, "_metric_fn_list", {}))
    metrics = ("acc",) + (("acc_norm",) if "acc_norm" in listed else ()) + ("bpb",)
    return LoadedTask(name=task_name, task=task, metrics=metrics)


def _check_first_doc(name: str, task: Any) -> None:
    """The first example read as scoring reads it: a context, a list of choices, a target."""
    doc = task.eval_docs[0]
    try:
        text, choices = task.doc_to_text(doc), task.doc_to_choice(doc)
        task.doc_to_target(doc)
    except Exception as exc:  # whatever the task's templates raise  # noqa: BLE001
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(
            f"eval.tasks = {name!r}: its first example does not read ({type(exc).__name__}: "
            f"{first}); accepted: doc_to_text, doc_to_choice and doc_to_target that read "
            "every example"
        ) from None
    if not isinstance(choices, list) or len(choices) < 2 or text is None:
        raise InputError(
            f"eval.tasks = {name!r}: its first example has choices {str(choices)[:80]!r}; "
            "accepted: a doc_to_choice giving a list of two or more answers"
        )


def tokens_per_evaluation(
    tasks: list[LoadedTask], cfg: EvalConfig, encode: Callable[[str], list[int]]
) -> int:
    """Tokens one task evaluation feeds the model (`harness.evals.scoring` packs a question's
    answers after one context): per example its context, as many again for each few-shot
    example (an estimate: shots are other questions with their answers), and its answers."""
    total = 0
    for t in tasks:
        docs = t.task.eval_docs
        n = len(docs) if not cfg.limit else min(cfg.limit, len(docs))
        delim = t.task.config.target_delimiter
        for i in range(n):
            doc = docs[i]
            context = len(encode(str(t.task.doc_to_text(doc))))
            answers = sum(len(encode(delim + str(c))) for c in t.task.doc_to_choice(doc))
            total += context * (1 + cfg.num_fewshot) + answers
    return total
