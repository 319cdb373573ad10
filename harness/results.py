"""The results store: an experiment's layout and ``collect`` of its runs into runs.csv.

```
results/NAME/
  runs/<run_id>/   one run's files (`harness.rundir.RunDir`)
  cache/           tokenized corpus (not committed)
  runs.csv  fits.json  figures/  jobs.json
```

runs.csv (schema v1, docs/results-format.md) is derived from spec.json and result.json alone,
so it can be rebuilt at any time, also while other runs are still training.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.atomic import atomic_write_text
from harness.errors import InputError
from harness.flops import training_flops
from harness.hardware import mfu
from harness.model import ModelShape, count_params, flops_per_token
from harness.objectives import objective_name
from harness.parametrization import STANDARD
from harness.rundir import FINISHED, RunDir, read_json

__all__ = [
    "RUNS_CSV_COLUMNS",
    "TASKS_CSV_COLUMNS",
    "ExperimentLayout",
    "collect",
    "csv_cell",
    "run_row",
]

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
    "parametrization", "base_width", "base_depth", "input_multiplier", "output_multiplier",
]  # fmt: skip
# world_size, parallel (harness.distributed): the devices a run trained on at once and how it
# spanned them ('none', 'ddp', 'fsdp'); mfu counts all of them. Empty before 2026-12.
# parametrization, base_width, base_depth, input_multiplier, output_multiplier
# (harness.parametrization): 'standard' (0, 0, 1, 1), or 'mup' or 'completep', the base shape its
# learning rate was tuned at and muP's alpha_in and alpha_out.
# task_accuracy_full, task_accuracy_lora (downstream stage, harness.finetune): test accuracy of
# the run fine-tuned on all labels of [downstream] task, mean over the fine-tuning seeds; empty
# without a downstream stage. Every fine-tune's numbers are in downstream.csv.
# branched_from, trained_tokens, trained_flops (WSD trunk sharing, harness.wsd): the trunk a run
# started from at its decay start (empty: trained from step 0), and the tokens and 6 N x tokens
# it trained itself; sum(trained_flops) is what a grid spent, sum(flops) what its D's name.


TASKS_CSV_COLUMNS = [
    "run_id", "n_params", "n_tokens", "task", "metric", "value", "chance",
    "step", "final", "n_examples", "seed",
]  # fmt: skip
# tasks.csv (docs/results-format.md): one row per run, task evaluation, task and metric. The
# first seven are the downstream chain's long table; n_tokens is the tokens trained at that
# step, final 1 on the run's last step (the checkpoint at its own D, where step 1 of the chain
# is fitted) and 0 before it.


@dataclass(frozen=True)
class ExperimentLayout:
    """Paths of one experiment's results directory."""

    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def run(self, run_id: str) -> RunDir:
        """The run's directory as the owner of its files (`harness.rundir.RunDir`)."""
        return RunDir(self.run_dir(run_id))

    @property
    def runs_csv(self) -> Path:
        return self.root / "runs.csv"

    @property
    def tasks_csv(self) -> Path:
        """[eval]'s task scores of every run and checkpoint (`collect`), read by the analysis's
        downstream chain (`harness.analysis.taskscale`)."""
        return self.root / "tasks.csv"

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
        "trained_flops": None if tokens is None else training_flops(n_params, tokens),
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
        "flops": training_flops(counts.non_embedding, d),
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
        # Recomputed from the recorded peak and tokens/s (as harness.train does), so the columns
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
        **_parametrization(spec),
    }


def _parametrization(spec: dict[str, Any]) -> dict[str, Any]:
    """The runs.csv columns of a spec.json's parametrization (absent: the standard one)."""
    p = {**STANDARD.to_dict(), **(spec.get("parametrization") or {})}
    return {
        "parametrization": p["kind"],
        **{k: p[k] for k in ("base_width", "base_depth", "input_multiplier", "output_multiplier")},
    }


def downstream_headline(run_dir: Path) -> dict[str, float | None]:
    """task_accuracy_<method>: mean test accuracy over seeds of the run's all-labels fine-tunes
    (run_dir/downstream/*.json of harness.finetune); None where there is none."""
    acc: dict[str, list[float]] = {"full": [], "lora": []}
    for path in sorted(RunDir(run_dir).downstream_dir.glob("*.json")):
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
        run = RunDir(run_dir)
        result = run.read_result()
        if result is None:
            counts["unfinished"] += 1
            continue
        if not run.spec_json.exists():  # would drop a finished run from runs.csv
            raise InputError(
                f"{run_dir}: result.json without spec.json; expected both (harness writes "
                "spec.json before the run starts)"
            )
        try:
            row = run_row(run.read_spec(), result) | downstream_headline(run_dir)
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
    _write_csv(layout.runs_csv, RUNS_CSV_COLUMNS, rows)
    _collect_tasks(layout, [r for r in rows if r["status"] == "done"])
    return layout.runs_csv, counts


def _collect_tasks(layout: ExperimentLayout, done: list[dict[str, Any]]) -> None:
    """ROOT/tasks.csv from the done runs' own tasks.csv ([eval]); left as it is when no run
    scored a task (a tasks.csv brought from elsewhere stays)."""
    out = []
    for row in done:
        run = layout.run(str(row["run_id"]))
        if not run.tasks_csv.is_file():
            continue
        last = int(run.read_result()["steps"])
        with run.tasks_csv.open(newline="") as f:
            for r in csv.DictReader(f):
                if None in r.values() or not r["step"].isdigit() or int(r["step"]) > last:
                    continue  # a torn last line; rows past the result cannot be
                out.append(
                    {
                        "run_id": row["run_id"],
                        "n_params": row["n_params"],
                        "n_tokens": int(r["tokens"]),
                        "task": r["task"],
                        "metric": r["metric"],
                        "value": r["value"],
                        "chance": r["chance"],
                        "step": int(r["step"]),
                        "final": int(int(r["step"]) == last),
                        "n_examples": r["n_examples"],
                        "seed": row["seed"],
                    }
                )
    if out:
        _write_csv(layout.tasks_csv, TASKS_CSV_COLUMNS, out)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """A results CSV, atomically: the header, then each row's cells as `csv_cell` writes them."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
