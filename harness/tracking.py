"""A run's tracker: its settings and metrics logged to TensorBoard, MLflow or Weights & Biases.

``[tracking] backend`` names the backends (none by default). `prepare`, called by `harness run`
and `harness submit` before anything trains, resolves the settings (project, where each backend
logs, as absolute paths) into ``RESULTS/NAME/tracking.json``; every process that trains a run
of the experiment (a local worker, a rank, a SLURM job) reads them from there, so the launchers
carry nothing new. `open_run` opens a run's tracker on rank 0 (the other ranks log nothing):

- the run's settings (the resolved spec, flattened to ``section.field`` keys) once, when the
  backend first sees the run;
- at each metrics.csv row (`harness.train`): train_loss, val_loss (when evaluated), lr, tokens
  (seen so far), tokens_per_s (over the log interval, evaluations included) and, on a GPU whose
  peak is known, mfu, at the row's step;
- at the end the run's result (final val_loss, val_bpb, tokens_per_s, mfu, status).

`log_fits` logs the grid's fitted law parameters (fits.json's "fits") as one more tracker run,
``NAME-fits``, at step = the number of runs fitted.

Resume: the run_id is the key. TensorBoard logs to one folder per run_id (a resumed process
adds an event file there); MLflow continues the run tagged ``harness_run_id = RUN_ID`` in the
experiment; W&B calls ``wandb.init(id=RUN_ID, resume="allow")`` (offline, each process writes
an offline-run folder of that id; `wandb sync` uploads them into one run). Each run directory
keeps ``tracking_state.json``, the last step each backend logged: a resumed run restarts at its
checkpoint step, recomputes the same losses (harness.train resumes exactly), and logs only the
rows after that last step, so no reader sees a step twice; rows of metrics.csv a backend has
not seen (a WSD branch's inherited rows, tracking switched on halfway) are logged when it opens.
A process killed between a backend's write and the state file's may log one row twice.

Failures never fail a run: a backend that raises is warned about once (one line, naming it and
the error) and dropped for the rest of the process. A backend that is not installed is refused
before anything trains (`check_installed`, exit 2). The backends are imported only when used.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import InputError
from harness.rundir import RunDir

if TYPE_CHECKING:
    from harness.config import ExperimentConfig, TrackingConfig
    from harness.grid import RunSpec

__all__ = [
    "SETTINGS_FILE",
    "STATE_FILE",
    "RunTracker",
    "check_installed",
    "log_fits",
    "open_run",
    "prepare",
    "read_settings",
    "resolve",
]

log = logging.getLogger("harness.tracking")

SETTINGS_FILE = "tracking.json"
"""The resolved [tracking] settings, in the experiment's results folder."""
STATE_FILE = "tracking_state.json"
"""In a run directory: the last step each backend logged, by backend and location."""

# The module each backend needs, and the pip extra that installs it.
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
_RUN_TAG = "harness_run_id"


def check_installed(cfg: TrackingConfig) -> None:
    """Refuse a backend whose package is not installed (found without importing it).

    Raises
    ------
    InputError
        One line naming tracking.backend, the value and the pip extra to install.
    """
    for name in cfg.backend:
        if importlib.util.find_spec(_MODULES[name]) is None:
            raise InputError(
                f"tracking.backend = {name!r}: the {_MODULES[name]} package is not installed; "
                f"accepted: install it with pip install 'scaling-harness[{name}]' (all three: "
                "'scaling-harness[tracking]'), or leave tracking.backend out"
            )


def resolve(exp: ExperimentConfig, root: Path | None = None) -> dict[str, Any]:
    """The [tracking] settings with every default filled in: the backends, the project and
    each backend's location, absolute paths under ``root`` (default the results folder)."""
    cfg = exp.tracking
    root = Path(root or exp.results_path).resolve()
    defaults = {
        "tensorboard": str(root / "tensorboard"),
        "mlflow": f"sqlite:///{root / 'mlflow.db'}",
        "wandb": str(root),
    }
    where = {}
    for name in cfg.backend:
        uri = cfg.uri or defaults[name]
        if name != "mlflow" or "://" not in uri:  # a folder (or MLflow's file store)
            uri = str(Path(uri).expanduser().resolve())
        where[name] = uri
    return {
        "experiment": exp.name,
        "project": cfg.project or exp.name,
        "backends": where,
        "artifacts": str(root / "mlflow-artifacts"),
    }


def prepare(exp: ExperimentConfig, root: Path | None = None) -> dict[str, Any] | None:
    """Write the resolved settings to ROOT/tracking.json for the processes that train the
    runs (or remove the file where tracking is off); the settings, or None when off. MLflow's
    store and experiment are created here, once, before workers write to them in parallel."""
    from harness.atomic import atomic_write_json

    root = Path(root or exp.results_path)
    path = root / SETTINGS_FILE
    if not exp.tracking.backend:
        path.unlink(missing_ok=True)
        return None
    check_installed(exp.tracking)
    settings = resolve(exp, root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)
    if "mlflow" in settings["backends"]:
        _guarded("mlflow", lambda: _mlflow_experiment(settings))
    return settings


def read_settings(root: Path) -> dict[str, Any] | None:
    """ROOT/tracking.json, or None where it is absent (tracking off) or unreadable (warned)."""
    path = Path(root) / SETTINGS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("tracking: cannot read %s (%s); this run is not tracked", path, e)
        return None


def _guarded(name: str, call: Callable[[], Any]) -> Any:
    """``call()``, or None after one warning line naming the backend and the error."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - a tracking failure never fails a run
        log.warning(
            "tracking: %s failed (%s: %s); going on without it",
            name,
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
        return None


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"train.lr": 0.01, ...}``; lists as JSON text."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    value = json.dumps(obj) if isinstance(obj, list | tuple) else obj
    return {prefix[:-1]: value}


# --- the backends ------------------------------------------------------------------------------


class _Backend:
    """One backend's writer for one tracker run (a training run, or the grid's fits)."""

    name = ""

    def __init__(self, settings: dict[str, Any], key: str) -> None:
        self.settings = settings
        self.key = key  # the run_id, or NAME-fits
        self.where = settings["backends"][self.name]

    def open(self) -> None: ...

    def params(self, params: dict[str, Any]) -> None: ...

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def summary(self, step: int, values: dict[str, Any]) -> None: ...

    def close(self, status: str) -> None:
        """``status``: 'done', 'diverged', 'stopped' (a checkpoint, to be resumed), 'failed'."""


class _TensorBoard(_Backend):
    name = "tensorboard"

    def open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(self.where) / self.key))

    def params(self, params: dict[str, Any]) -> None:
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("settings", "| setting | value |\n| --- | --- |\n" + table, 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()  # before the state file says the step is logged

    def summary(self, step: int, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, int | float):
                self.writer.add_scalar(f"final/{k}", v, step)
            else:
                self.writer.add_text(f"final/{k}", str(v), step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def _mlflow_client(settings: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings["backends"]["mlflow"])


def _mlflow_experiment(settings: dict[str, Any]) -> str:
    """The id of the MLflow experiment named after the project, created where absent."""
    client = _mlflow_client(settings)
    name = settings["project"]
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    local = (
        settings["backends"]["mlflow"].startswith(("sqlite:", "file:"))
        or "://" not in (settings["backends"]["mlflow"])
    )
    try:
        # A local store keeps artifacts beside it, not in ./mlruns of whatever the cwd is.
        return str(
            client.create_experiment(
                name, artifact_location=settings["artifacts"] if local else None
            )
        )
    except Exception:
        found = client.get_experiment_by_name(name)  # another process created it meanwhile
        if found is None:
            raise
        return str(found.experiment_id)


class _MLflow(_Backend):
    name = "mlflow"
    _STATUS = {"done": "FINISHED", "diverged": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}

    def open(self) -> None:
        self.client = _mlflow_client(self.settings)
        experiment_id = _mlflow_experiment(self.settings)
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.{_RUN_TAG} = '{self.key}'", max_results=1
        )
        if found:  # a resumed run: the same MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {_RUN_TAG: self.key, "harness_experiment": self.settings["experiment"]}
            self.run_id = self.client.create_run(
                experiment_id, run_name=self.key, tags=tags
            ).info.run_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def summary(self, step: int, values: dict[str, Any]) -> None:
        numbers = {f"final_{k}": v for k, v in values.items() if isinstance(v, int | float)}
        if numbers:
            self.log(step, numbers)
        for k, v in values.items():
            if not isinstance(v, int | float):
                self.client.set_tag(self.run_id, k, str(v))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, self._STATUS.get(status, "FINISHED"))


class _WandB(_Backend):
    name = "wandb"

    def open(self) -> None:
        import wandb

        Path(self.where).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.settings["project"],
            id=re.sub(r"[^A-Za-z0-9_-]", "-", self.key),  # W&B's run id alphabet
            name=self.key,
            resume="allow",
            dir=self.where,
            # Offline unless the user chose a mode (WANDB_MODE=online syncs as it goes).
            mode=None if os.environ.get("WANDB_MODE") else "offline",
            reinit="create_new",
            settings=wandb.Settings(
                console="off",  # the harness's own output is not W&B's to capture
                silent=True,
                disable_git=True,
                save_code=False,
                x_disable_stats=True,
                x_disable_machine_info=True,
            ),
        )

    def params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def summary(self, step: int, values: dict[str, Any]) -> None:
        self.run.summary.update({f"final_{k}": v for k, v in values.items()})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=1 if status == "failed" else 0)


_BACKENDS: dict[str, type[_Backend]] = {b.name: b for b in (_TensorBoard, _MLflow, _WandB)}


class _Guard:
    """A backend whose every call is `_guarded`: after its first failure it is dropped."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.alive = True

    @property
    def state_key(self) -> str:
        return f"{self.backend.name} {self.backend.where}"

    def __call__(self, method: str, *args: Any) -> bool:
        if not self.alive:
            return False
        done = _guarded(self.backend.name, lambda: getattr(self.backend, method)(*args) or True)
        self.alive = bool(done)
        return self.alive


# --- a run's tracker ---------------------------------------------------------------------------


def _read_rows(metrics_csv: Path) -> list[dict[str, str]]:
    if not metrics_csv.exists():
        return []
    with metrics_csv.open(newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values() and r["step"].isdigit()]


class RunTracker:
    """The backends one training run logs to (none on ranks other than 0, or tracking off).

    Every method is safe to call: a failing backend is warned about once and dropped.
    """

    def __init__(
        self,
        backends: Iterable[_Backend] = (),
        *,
        state_path: Path | None = None,
        flops_per_token: float = 0.0,
        peak_flops: float | None = None,
    ) -> None:
        self.guards = [_Guard(b) for b in backends]
        self.state_path = state_path
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.last: dict[str, int] = {}  # state key -> the last step that backend logged
        self.previous: tuple[int, float] | None = None  # (tokens, wall_s) of the last row
        self.closed = False
        self.state_ok = True  # False after the state file could not be written (warned once)

    def _metrics(self, row: dict[str, Any]) -> dict[str, float]:
        """A metrics.csv row as the numbers logged at its step."""
        tokens, wall_s = int(row["tokens"]), float(row["wall_s"])
        out = {"train_loss": float(row["train_loss"]), "lr": float(row["lr"])}
        if row.get("val_loss") not in (None, ""):
            out["val_loss"] = float(row["val_loss"])
        # [eval]'s task scores: metrics.csv's TASK/METRIC columns, on task evaluation rows.
        for key, value in row.items():
            if "/" in key and value not in (None, ""):
                out[f"tasks/{key}"] = float(value)
        out["tokens"] = float(tokens)
        if self.previous is not None and wall_s > self.previous[1]:
            rate = (tokens - self.previous[0]) / (wall_s - self.previous[1])
            out["tokens_per_s"] = rate
            if self.peak_flops:
                out["mfu"] = self.flops_per_token * rate / self.peak_flops
        self.previous = (tokens, wall_s)
        return out

    def log_row(self, row: dict[str, Any]) -> None:
        """One metrics.csv row (the dict harness.train appends), to each backend that has not
        logged its step yet."""
        if not self.guards:
            return
        step = int(row["step"])
        metrics = self._metrics(row)
        changed = False
        for g in self.guards:
            if step > self.last.get(g.state_key, 0) and g("log", step, metrics):
                self.last[g.state_key] = step
                changed = True
        if changed:
            self._save_state()

    def finish(self, result: dict[str, Any]) -> None:
        """The run's result (result.json's fields), then close each backend."""
        values = {
            k: result[k]
            for k in ("val_loss", "val_bpb", "train_loss", "tokens_per_s", "mfu", "status")
            if result.get(k) is not None
        }
        for g in self.guards:
            g("summary", int(result.get("steps", 0)), values)
        self.close(str(result.get("status", "done")))

    def close(self, status: str) -> None:
        """Close each backend once: 'done', 'diverged', 'stopped' or 'failed'."""
        if self.closed:
            return
        self.closed = True
        for g in self.guards:
            g("close", status)

    def _save_state(self) -> None:
        if self.state_path is None or not self.state_ok:
            return
        path = self.state_path

        def write() -> bool:
            # Not fsynced: a row logged twice after a crash is the worst a lost write does.
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(self.last))
            tmp.replace(path)
            return True

        self.state_ok = bool(_guarded(f"its state file {path}", write))


def open_run(
    spec: RunSpec,
    run_dir: Path,
    *,
    flops_per_token: float = 0.0,
    peak_flops: float | None = None,
    settings: dict[str, Any] | None = None,
) -> RunTracker:
    """The tracker of the run ``spec`` in ``run_dir``, after its
    metrics.csv was cut back to the step it resumes from: each backend opened (or continued),
    the settings logged where the backend has not seen the run, and the rows of metrics.csv
    it has not logged yet logged now. ``settings`` default: RESULTS/NAME/tracking.json, found
    from ``run_dir`` (RESULTS/NAME/runs/RUN_ID). ``peak_flops``: the peak of all the run's
    devices, for mfu (None: not logged per row)."""
    run_dir = Path(run_dir)
    settings = settings if settings is not None else read_settings(run_dir.parent.parent)
    if not settings or not settings.get("backends"):
        return RunTracker()
    state_path = run_dir / STATE_FILE
    try:
        last = {k: int(v) for k, v in json.loads(state_path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        last = {}
    tracker = RunTracker(
        [_BACKENDS[name](settings, spec.run_id) for name in settings["backends"]],
        state_path=state_path,
        flops_per_token=flops_per_token,
        peak_flops=peak_flops,
    )
    for g in tracker.guards:
        g("open")  # one that fails is warned about and dropped
    tracker.last = {g.state_key: last[g.state_key] for g in tracker.guards if g.state_key in last}
    from harness.model import count_params

    params = _flat(spec.to_dict())
    params.update(n_params=count_params(spec.model).non_embedding, n_steps=spec.n_steps)
    for g in tracker.guards:
        if g.state_key not in tracker.last:  # the first time this backend sees the run
            g("params", params)
    for row in _read_rows(RunDir(run_dir).metrics_csv):  # what the backends have not seen yet
        tracker.log_row(row)
    return tracker


def log_fits(settings: dict[str, Any] | None, fits: dict[str, Any]) -> None:
    """fits.json's fitted laws as the tracker run NAME-fits: each law's parameters as
    ``LAW/PARAM`` at step = the most runs any law was fitted to. Warns, never raises."""
    if not settings or not settings.get("backends"):
        return
    metrics: dict[str, float] = {}
    n_points = 0
    for law, fit in (fits.get("fits") or {}).items():
        if not isinstance(fit, dict):
            continue
        for k, v in (fit.get("params") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                metrics[f"{law}/{k}"] = float(v)
        if isinstance(fit.get("n_points"), int):
            n_points = max(n_points, fit["n_points"])
    if not metrics:
        return
    key = f"{settings['experiment']}-fits"
    for name in settings["backends"]:
        guard = _Guard(_BACKENDS[name](settings, key))
        if guard("open") and guard("log", n_points, metrics):
            guard("close", "done")
