"""The multi-power law of a learning curve (Luo et al. 2025): its binned sums against the exact
ones, recovery of known parameters from noisy curves, and `harness predict --curve --law`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis import curves as cv
from harness.analysis import multipower as mp
from harness.schedules import lr_at_step

# Of the order of Luo et al.'s fits (their table: B ~ 400, C ~ 2, beta ~ 0.6, gamma ~ 0.6 at a
# peak rate of 3e-4; here 4e-3, so B is smaller for the same drop in loss).
TRUE = {"L0": 1.8, "A": 0.6, "alpha": 0.5, "B": 60.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}


def _schedule(n_steps: int, schedule: str, shape: str = "1-sqrt") -> np.ndarray:
    return np.array(
        [
            lr_at_step(s, total_steps=n_steps, warmup=20, peak=4e-3, min_ratio=0.1,
                       schedule=schedule, decay_fraction=0.2, decay_shape=shape)  # type: ignore[arg-type]
            for s in range(n_steps)
        ]
    )  # fmt: skip


def _exact(p: dict[str, float], lrs: np.ndarray, t: int) -> float:
    """Luo et al.'s eq. 4 summed over every update, as written."""
    area = np.concatenate([[0.0], np.cumsum(lrs)])
    total = p["L0"] + p["A"] * area[t] ** -p["alpha"]
    for k in range(2, t + 1):  # updates k = 2..t: eta_{k-1} - eta_k
        drop = max(0.0, lrs[k - 2] - lrs[k - 1])
        since = area[t] - area[k - 1]
        g = 1.0 - (p["C"] * lrs[k - 1] ** -p["gamma"] * since + 1.0) ** -p["beta"]
        total -= p["B"] * drop * g
    return total


@pytest.mark.parametrize(
    "schedule,shape", [("cosine", "1-sqrt"), ("wsd", "1-sqrt"), ("wsd", "linear")]
)
def test_the_binned_sums_match_the_exact_law(schedule: str, shape: str) -> None:
    lrs = _schedule(1500, schedule, shape)
    steps = np.array([10, 200, 1199, 1200, 1201, 1300, 1499, 1500])
    exact = np.array([_exact(TRUE, lrs, int(t)) for t in steps])
    assert mp.loss_at(TRUE, lrs, steps) == pytest.approx(exact, rel=5e-5)


def _curves(seed: int = 0, sd: float = 0.002) -> list[cv.Curve]:
    rng = np.random.default_rng(seed)
    out = []
    runs = [(400, "cosine"), (800, "cosine"), (1200, "wsd"), (600, "wsd"), (1000, "constant")]
    for i, (n_steps, schedule) in enumerate(runs):
        lrs = _schedule(n_steps, schedule)
        steps = np.unique(np.linspace(40, n_steps, 12).astype(np.int64))
        loss = mp.loss_at(TRUE, lrs, steps) * np.exp(rng.normal(0, sd, steps.size))
        out.append(cv.Curve(f"run{i}", 1e6, lrs, steps, loss, batch_tokens=1024))
    return out


@pytest.mark.slow
def test_the_law_is_recovered_from_noisy_curves_with_intervals() -> None:
    curves = _curves()
    fitted = mp.fit_multipower(curves)
    p = fitted.fit.params
    for k in ("L0", "A", "alpha"):
        assert p[k] == pytest.approx(TRUE[k], rel=0.05), k
    boots, n_failed = mp.bootstrap_multipower(
        curves, fitted, n_resamples=200, rng=np.random.default_rng(0)
    )
    assert n_failed < 20
    for k, v in TRUE.items():
        lo, hi = np.percentile([b[k] for b in boots], [2.5, 97.5])
        assert lo < v < hi, (k, lo, hi)
    # The law it found predicts a schedule it never saw: WSD, a 40% cooldown, 1600 updates.
    lrs = np.array([lr_at_step(s, total_steps=1600, warmup=20, peak=4e-3, min_ratio=0.1,
                               schedule="wsd", decay_fraction=0.4)
                    for s in range(1600)])  # fmt: skip
    truth = _exact(TRUE, lrs, 1600)
    assert mp.loss_at(p, lrs, np.array([1600]))[0] == pytest.approx(truth, rel=0.01)


def test_curves_without_a_rate_drop_leave_the_drop_terms_undetermined() -> None:
    curves = []
    for n_steps in (600, 1000):
        lrs = _schedule(n_steps, "constant")
        steps = np.unique(np.linspace(40, n_steps, 16).astype(np.int64))
        # a constant rate after the warmup: no drop, so LD = 0 whatever B, C, beta, gamma are
        assert not np.any(np.diff(lrs[20:]) < 0)
        curves.append(cv.Curve(f"c{n_steps}", 1e6, lrs, steps, mp.loss_at(TRUE, lrs, steps)))
    fitted = mp.fit_multipower(curves)
    assert set(fitted.fit.undetermined) >= {"B", "C", "beta", "gamma"}
    assert fitted.fit.undetermined["B"] == cv.NO_ANNEALING


def test_one_schedule_or_too_few_points_are_refused() -> None:
    c = _curves()
    with pytest.raises(cv.InputError, match="1 run.s. with 1 schedule; accepted: runs of 2"):
        mp.fit_multipower(c[:1])
    few = [cv.Curve(x.run_id, 1e6, x.lrs, x.steps[:9], x.loss[:9]) for x in c[:3]]
    with pytest.raises(cv.InputError, match="27 measured points after the first update, fewer "
                       "than 4 for each of its 7 parameters"):  # fmt: skip
        mp.fit_multipower(few)


def _results(tmp_path: Path) -> Path:
    """A results folder: runs.csv and each run's metrics.csv (the rates in its lr column)."""
    rows = []
    for c in _curves():
        run_dir = tmp_path / "runs" / c.run_id
        run_dir.mkdir(parents=True)
        steps = np.arange(1, c.lrs.size + 1)
        train = np.interp(steps, c.steps, c.loss)  # drawn by `harness plot`, not fitted
        m = pd.DataFrame({"step": steps, "tokens": steps * 1024, "train_loss": train,
                          "val_loss": np.nan, "lr": c.lrs})  # fmt: skip
        m.loc[c.steps - 1, "val_loss"] = c.loss
        m.to_csv(run_dir / "metrics.csv", index=False)
        rows.append({"run_id": c.run_id, "n_params": 1e6, "n_tokens": c.lrs.size * 1024,
                     "loss": c.loss[-1], "status": "done"})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


@pytest.mark.slow
def test_predict_curve_with_the_multi_power_law(tmp_path: Path) -> None:
    root = _results(tmp_path)
    fit = harness_cli("fit", str(root), "--bootstrap", "100",
                      "--fits", "anneal_curve,multi_power_curve")  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    assert "multi_power_curve L0 + A (S1 + S_W)^-alpha - LD(t) (Luo et al. 2025)" in fit.stdout
    fj = root / "fits.json"
    doc = json.loads(fj.read_text())
    block = doc["fits"]["multi_power_curve"]["sizes"]["1000000"]
    assert block["runs"] == [f"run{i}" for i in range(5)] and "decay" not in block
    rep = harness_cli("reproduce", str(root), "--no-replot")
    assert rep.returncode == 0, rep.stdout[-2000:]
    # the settings a harness run's spec.json gives, written in (the CSV gave only rates)
    block["batch_tokens"] = 1024
    block["schedule"] = {"peak_lr": 4e-3, "min_lr_ratio": 0.1, "warmup_tokens": 20 * 1024,
                         "warmup_fraction": 0.0, "decay_fraction": 0.2,
                         "decay_shape": "1-sqrt"}  # fmt: skip
    fj.write_text(json.dumps(doc))
    out = harness_cli("predict", str(root), "--curve", "--law", "multi_power_curve",
                      "--n", "1e6", "--d", "1024000", "--schedule", "wsd", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    expect = mp.loss_at(block["params"], _schedule(1000, "wsd"), np.array([1000]))[0]
    assert row["loss"] == pytest.approx(expect, rel=1e-9)
    assert row["loss"] == pytest.approx(_exact(TRUE, _schedule(1000, "wsd"), 1000), rel=0.01)
    lo, hi = row["loss_ci95"]
    assert lo < row["loss"] < hi and row["best_cooldown_loss"] <= row["loss"] + 1e-12
    bogus = harness_cli("predict", str(root), "--curve", "--law", "kaplan", "--n", "1e6",
                        "--d", "1e6")  # fmt: skip
    assert bogus.returncode == 2
    assert "accepted: anneal_curve, multi_power_curve" in bogus.stderr
    plot = harness_cli("plot", str(root))
    assert plot.returncode == 0, plot.stderr
    assert (root / "figures" / "multi_power_curves.png").is_file()
