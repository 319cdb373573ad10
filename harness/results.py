"""The results store: run-directory layout, run records and ``collect`` into runs.csv.

```
results/NAME/
  runs/<run_id>/spec.json      resolved RunSpec (written before training starts)
  runs/<run_id>/metrics.csv    step, tokens, train_loss, val_loss, lr, wall_s
  runs/<run_id>/result.json    written once, atomically, when the run ends (done|diverged|failed)
  runs/<run_id>/ckpt/          resumable checkpoints while the run is unfinished
  runs/<run_id>/train.log      the run's log
  cache/                       tokenized corpus (not committed)
  runs.csv  fits.json  figures/
```

runs.csv (schema v1, docs/results-format.md) is derived from spec.json and result.json alone,
so it can be rebuilt at any time, also while other runs are still training.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness import __version__
from harness.atomic import atomic_write_json, atomic_write_text
from harness.errors import InputError
from harness.grid import RunSpec, spec_from_dict
from harness.hardware import mfu
from harness.model import ModelShape, count_params, flops_per_token
from harness.objectives import objective_name

__all__ = [
    "RUNS_CSV_COLUMNS",
    "close_run_log",
    "open_run_log",
    "ExperimentLayout",
    "RunState",
    "check_spec",
    "collect",
    "csv_cell",
    "read_result",
    "run_state",
    "write_result",
    "write_spec",
]

RunState = Literal["done", "diverged", "failed", "started", "pending"]
FINISHED: tuple[RunState, ...] = ("done", "diverged")

# Schema v1 (docs/results-format.md). The first three are all analysis needs. peak_flops, mfu
# and mfu_total (model FLOP utilisation, see harness.hardware) came later and stay last; they
# are empty for a result.json that does not record peak_flops. flops_budget (the isoFLOP budget
# C a run's D was derived from, grid.flops) is empty outside isoFLOP grids.
RUNS_CSV_COLUMNS = [
    "n_params", "n_tokens", "loss",
    "run_id", "experiment", "status", "arch", "n_layer", "n_embd", "n_head",
    "n_params_total", "n_unique_tokens", "epochs", "flops", "flops_total", "val_bpb",
    "train_loss", "tokenizer", "vocab_size", "seq_len", "batch_tokens", "lr", "schedule", "seed",
    "wall_s", "tokens_per_s", "device", "harness_version", "git_sha",
    "peak_flops", "mfu", "mfu_total",
    "flops_budget",
    "objective",
    "branched_from", "trained_tokens", "trained_flops",
    "task_accuracy_full", "task_accuracy_lora",
    "world_size", "parallel",
]  # fmt: skip
# world_size, parallel (harness.distributed): the devices a run trained on at once and how it
# spanned them ('none', 'ddp', 'fsdp'); mfu counts all of them. Empty before 2026-12.
# task_accuracy_full, task_accuracy_lora (downstream stage, harness.finetune): test accuracy of
# the run fine-tuned on all labels of [downstream] task, mean over the fine-tuning seeds; empty
# without a downstream stage. Every fine-tune's numbers are in downstream.csv.
# branched_from, trained_tokens, trained_flops (WSD trunk sharing, harness.wsd): the trunk a run
# started from at its decay start (empty: trained from step 0), and the tokens and 6 N x tokens
# it trained itself; sum(trained_flops) is what a grid spent, sum(flops) what its D's name.


@dataclass(frozen=True)
class ExperimentLayout:
    """Paths of one experiment's results directory."""

    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def runs_csv(self) -> Path:
        return self.root / "runs.csv"

    @property
    def fits_json(self) -> Path:
        return self.root / "fits.json"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def jobs_json(self) -> Path:
        return self.root / "jobs.json"


def check_spec(run_dir: Path, spec: RunSpec) -> bool:
    """True when ``run_dir`` holds this run's spec.json, False when it holds none.

    Raises
    ------
    InputError
        spec.json is unreadable or records different settings (a directory is never reused for
        another run: its checkpoints and results would be someone else's).
    """
    path = run_dir / "spec.json"
    if not path.exists():
        return False
    old = read_json(path)
    new = spec.to_dict()
    # Neither the experiment's name nor the isoFLOP budget tag changes what a run computes.
    tags = ("experiment", "flops_budget")
    if {k: v for k, v in old.items() if k not in tags} != {
        k: v for k, v in new.items() if k not in tags
    }:
        differ = sorted(
            k for k in set(old) | set(new) if k not in tags and old.get(k) != new.get(k)
        )
        raise InputError(
            f"{path}: holds settings that differ from run {spec.run_id}'s "
            f"(in {', '.join(differ)}); move the directory away to rerun it"
        )
    return True


def write_spec(run_dir: Path, spec: RunSpec) -> None:
    """Record the resolved spec; refuse a directory that holds a different run's spec."""
    if not check_spec(run_dir, spec):
        atomic_write_json(run_dir / "spec.json", spec.to_dict())


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "result.json", result)


_RESULT_NUMBERS = (
    "val_loss",
    "val_bpb",
    "train_loss",
    "peak_lr",
    "wall_s",
    "tokens_per_s",
    "epochs",
    "n_unique_tokens",
    "n_tokens",
    "steps",
    "peak_flops",
    "mfu",
    "mfu_total",
    "trained_tokens",
    "trained_flops",
    "world_size",
)
_RESULT_STRINGS = (
    "run_id",
    "reason",
    "error",
    "log",
    "device",
    "precision",
    "harness_version",
    "git_sha",
    "retried_as",
    "branched_from",
    "parallel",
)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A run's result.json, checked field by field; None when the run has not ended.

    Raises
    ------
    InputError
        Unreadable JSON, a status other than done|diverged|failed, or a field of the wrong type.
    """
    path = run_dir / "result.json"
    if not path.exists():
        return None
    result = read_json(path)
    status = result.get("status")
    if status not in ("done", "diverged", "failed"):
        raise InputError(f"{path}: status = {status!r}; accepted: done, diverged, failed")
    for key in _RESULT_NUMBERS:
        value = result.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InputError(f"{path}: {key} = {value!r}; accepted: a number or null")
    for key in _RESULT_STRINGS:
        value = result.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path}: {key} = {value!r}; accepted: a string")
    return result


def read_spec(run_dir: Path) -> dict[str, Any]:
    """A run's spec.json, checked by rebuilding the RunSpec from it (as plain data).

    Raises
    ------
    InputError
        Unreadable JSON, a missing key, or a setting of the wrong type or out of range.
    """
    path = run_dir / "spec.json"
    data = read_json(path)
    expected = "expected a spec.json written by harness"
    kinds = {
        "run_id": str,
        "experiment": str,
        "n_tokens": int,
        "seed": int,
        "model": dict,
        "data": dict,
        "train": dict,
    }
    for key, kind in kinds.items():
        if key not in data:
            raise InputError(f"{path}: missing key '{key}'; {expected}")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            name = {str: "a string", int: "an integer", dict: "an object"}[kind]
            raise InputError(f"{path}: {key} = {str(value)[:80]!r} is not {name}; {expected}")
    try:
        spec_from_dict(data)
    except InputError as e:
        raise InputError(f"{path}: {str(e).removeprefix('spec.json: ')}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{path}: model = {str(data['model'])[:120]}: {e}; {expected}") from None
    return data


def run_state(run_dir: Path) -> RunState:
    """done | diverged | failed (result.json says so), started (spec only), pending (nothing)."""
    result = read_result(run_dir)
    if result is not None:
        return result["status"]  # type: ignore[no-any-return]
    return "started" if (run_dir / "spec.json").exists() else "pending"


def csv_cell(value: Any) -> str:
    """A value as a results CSV writes it (runs.csv, downstream.csv): blank for None and NaN,
    floats exactly (repr round-trips), booleans as TOML and JSON write them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _planned_unique(spec: dict[str, Any], d: int) -> int | None:
    """Unique tokens a run with data.unique_tokens = U sees: min(D, U) (a failed run's
    result.json does not record it; for U = 0 it depends on the corpus, so None)."""
    u = int(spec["data"].get("unique_tokens", 0) or 0)
    return min(d, u) if u > 0 else None


def _planned_epochs(spec: dict[str, Any], d: int) -> float | None:
    u = _planned_unique(spec, d)
    return d / u if u else None


def _trained(result: dict[str, Any], n_params: int, d: int) -> dict[str, Any]:
    """branched_from, trained_tokens, trained_flops; a result.json from before WSD trunk sharing
    trained its whole D itself (a failed run's: unknown)."""
    tokens = result.get("trained_tokens")
    if tokens is None and result.get("status") in FINISHED:
        tokens = d
    return {
        "branched_from": result.get("branched_from"),
        "trained_tokens": tokens,
        "trained_flops": None if tokens is None else 6 * n_params * tokens,
    }


def run_row(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One runs.csv row from a run's spec.json and result.json."""
    shape = ModelShape(**spec["model"])
    counts = count_params(shape)
    flops = flops_per_token(shape)
    d = int(spec["n_tokens"])
    peak, tokens_per_s = result.get("peak_flops"), result.get("tokens_per_s")
    world_size = result.get("world_size")
    if peak is not None and world_size:
        peak = peak * world_size  # every device's peak: tokens_per_s counts every device's tokens
    return {
        "n_params": counts.non_embedding,
        "n_tokens": d,
        "loss": result.get("val_loss"),
        "run_id": spec["run_id"],
        "experiment": spec["experiment"],
        "status": result["status"],
        "arch": shape.arch,
        "n_layer": shape.n_layer,
        "n_embd": shape.n_embd,
        "n_head": shape.n_head,
        "n_params_total": counts.total,
        "n_unique_tokens": result.get("n_unique_tokens", _planned_unique(spec, d)),
        "epochs": result.get("epochs", _planned_epochs(spec, d)),
        "flops": 6 * counts.non_embedding * d,
        "flops_total": flops.total * d,
        "val_bpb": result.get("val_bpb"),
        "train_loss": result.get("train_loss"),
        "tokenizer": spec["data"]["tokenizer"],
        "vocab_size": shape.vocab_size,
        "seq_len": shape.seq_len,
        "batch_tokens": spec["train"]["batch_size"] * shape.seq_len,
        "lr": result.get("peak_lr"),
        "schedule": spec["train"].get("schedule", "cosine"),
        "seed": spec["seed"],
        "wall_s": result.get("wall_s"),
        "tokens_per_s": result.get("tokens_per_s"),
        "device": result.get("device"),
        "harness_version": result.get("harness_version", __version__),
        "git_sha": result.get("git_sha", ""),
        # Recomputed from the recorded peak and tokens/s (as train.py does), so the columns
        # follow from the row's own fields.
        "peak_flops": result.get("peak_flops"),
        "mfu": mfu(flops.six_n, tokens_per_s, peak) if tokens_per_s is not None else None,
        "mfu_total": mfu(flops.total, tokens_per_s, peak) if tokens_per_s is not None else None,
        "flops_budget": spec.get("flops_budget"),
        # 'causal' (next-token loss) or 'mlm' (masked-token loss, arch bert): `loss` is that
        # objective's validation loss, so losses compare only within one objective.
        "objective": objective_name(shape.arch),
        **_trained(result, counts.non_embedding, d),
        "world_size": world_size,
        "parallel": result.get("parallel"),
    }


def downstream_headline(run_dir: Path) -> dict[str, float | None]:
    """task_accuracy_<method>: mean test accuracy over seeds of the run's all-labels fine-tunes
    (run_dir/downstream/*.json of harness.finetune); None where there is none."""
    acc: dict[str, list[float]] = {"full": [], "lora": []}
    for path in sorted((run_dir / "downstream").glob("*.json")):
        record = read_json(path)
        if record.get("all_labels") is True and record.get("method") in acc:
            acc[record["method"]].append(float(record["accuracy"]))
    return {f"task_accuracy_{m}": sum(v) / len(v) if v else None for m, v in acc.items()}


def _n_rows(path: Path) -> int:
    """Data rows of a CSV file (lines after the header that are not blank)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def collect(root: Path) -> tuple[Path, dict[str, int]]:
    """Write ROOT/runs.csv from every finished or failed run directory under ROOT/runs.

    Runs still training (no result.json) are left out. Returns the path and a count per status.

    Raises
    ------
    InputError
        ROOT has no runs/ folder, or a run's record is unreadable.
    """
    layout = ExperimentLayout(Path(root))
    if not layout.runs_dir.is_dir():
        raise InputError(
            f"{root}: no runs/ folder here; expected a results directory of `harness run`"
        )
    rows, counts = [], {"done": 0, "diverged": 0, "failed": 0, "unfinished": 0}
    for run_dir in sorted(p for p in layout.runs_dir.iterdir() if p.is_dir()):
        result = read_result(run_dir)
        if result is None:
            counts["unfinished"] += 1
            continue
        if not (run_dir / "spec.json").exists():  # would drop a finished run from runs.csv
            raise InputError(
                f"{run_dir}: result.json without spec.json; expected both (harness writes "
                "spec.json before the run starts)"
            )
        try:
            row = run_row(read_spec(run_dir), result) | downstream_headline(run_dir)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # a record edited by hand, not a bug
            raise InputError(
                f"{run_dir}: a record lacks or mangles a field ({type(e).__name__}: {e}); "
                "expected the spec.json, result.json and downstream/*.json harness writes"
            ) from None
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        rows.append(row)
    if not rows and layout.runs_csv.is_file() and _n_rows(layout.runs_csv) > 0:
        # Committed results keep each run's spec.json but not its result.json: collecting
        # there would replace the stored runs.csv by an empty one.
        raise InputError(
            f"{layout.runs_dir}: no run has finished here ({counts['unfinished']} run "
            f"directories without result.json), and {layout.runs_csv} holds "
            f"{_n_rows(layout.runs_csv)} rows that collect would drop; accepted: a results "
            "directory whose runs have trained (`harness run` trains them)"
        )
    rows.sort(key=lambda r: (r["n_params"], r["n_tokens"], r["seed"], r["run_id"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUNS_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    atomic_write_text(layout.runs_csv, buf.getvalue())
    return layout.runs_csv, counts


def open_run_log(run_dir: Path) -> logging.Handler:
    """Send this process's log records to ``run_dir/train.log`` until `close_run_log`."""
    handler = logging.FileHandler(Path(run_dir) / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def close_run_log(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
