"""Loss-curve laws (issue 33): Tissue et al.'s annealing law recovered from curves it generated,
with noise; fitted by `harness fit` from runs' metrics.csv; predicted by `harness predict
--curve`; curves without a learning rate refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis import curves as cv
from harness.schedules import lr_at_step

TRUE = {"L0": 1.8, "A": 0.6, "alpha": 0.5, "C": 0.4}
DECAY = 0.99


def test_the_areas_by_hand() -> None:
    # rates 1, 1, 0.5, 0.5 with momentum 0.5: S1 0, 1, 2, 2.5, 3; the drop of 0.5 at the third
    # update gives m = 0, 0, 0.5, 0.25, so S2 = 0, 0, 0, 0.5, 0.75. A rise (warmup) adds nothing.
    s1, s2 = cv.areas([1.0, 1.0, 0.5, 0.5], 0.5)
    assert s1.tolist() == [0.0, 1.0, 2.0, 2.5, 3.0]
    assert s2.tolist() == [0.0, 0.0, 0.0, 0.5, 0.75]
    _, up = cv.areas([0.1, 0.5, 1.0], 0.9)
    assert up.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert cv.lrs_from_rows([2, 4], [1.0, 0.0], 5).tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]


def _schedule(n_steps: int, schedule: str) -> np.ndarray:
    return np.array(
        [
            lr_at_step(
                s, total_steps=n_steps, warmup=20, peak=4e-3, min_ratio=0.1, schedule=schedule
            )  # type: ignore[arg-type]
            for s in range(n_steps)
        ]
    )


def _curves(seed: int = 0, sd: float = 0.003) -> list[cv.Curve]:
    rng = np.random.default_rng(seed)
    out = []
    runs = [(400, "cosine"), (800, "cosine"), (1200, "wsd"), (600, "wsd"), (1000, "constant")]
    for i, (n_steps, schedule) in enumerate(runs):
        lrs = _schedule(n_steps, schedule)
        s1, s2 = cv.areas(lrs, DECAY)
        steps = np.unique(np.linspace(40, n_steps, 12).astype(np.int64))
        loss = cv.anneal_loss(s1[steps], s2[steps], **TRUE) * np.exp(rng.normal(0, sd, steps.size))
        out.append(cv.Curve(f"run{i}", 1e6, lrs, steps, loss, batch_tokens=1024))
    return out


def test_the_law_is_recovered_from_noisy_curves_with_intervals() -> None:
    curves = _curves()
    fitted = cv.fit_anneal(curves)
    assert fitted.decay == DECAY  # the profile finds the momentum that made the curves
    p = fitted.fit.params
    for k, v in TRUE.items():
        assert p[k] == pytest.approx(v, rel=0.05), k
    assert not fitted.fit.undetermined
    kept, failed = cv.bootstrap_anneal(
        curves, fitted, n_resamples=200, rng=np.random.default_rng(1)
    )
    assert failed == 0 and len(kept) == 200
    for k, v in TRUE.items():
        lo, hi = np.percentile([s[k] for s in kept], [2.5, 97.5])
        assert lo < v < hi, k
    # A schedule none of the runs had: the final loss the law gives, within 1%.
    lrs = _schedule(2000, "cosine")
    s1, s2 = cv.areas(lrs, DECAY)
    truth = float(cv.anneal_loss(s1[-1], s2[-1], **TRUE))
    assert cv.predict_final(p, fitted.decay, lrs) == pytest.approx(truth, rel=0.01)


def test_too_few_points_and_bad_rates_are_refused() -> None:
    (one,) = _curves()[:1]
    short = cv.Curve("x", 1e6, one.lrs, one.steps[:4], one.loss[:4])
    with pytest.raises(cv.InputError, match="4 measured points after the first update, fewer"):
        cv.fit_anneal([short])
    bad = cv.Curve("y", 1e6, np.full(one.lrs.size, np.nan), one.steps, one.loss)
    with pytest.raises(cv.InputError, match="run y: learning rates missing"):
        cv.fit_anneal([bad])
    # Points counted after the first update with a rate: rates of 0 give no forward area.
    idle = cv.Curve("z", 1e6, np.zeros(one.lrs.size), one.steps, one.loss)
    with pytest.raises(cv.InputError, match="0 measured points after the first update"):
        cv.fit_anneal([idle])


def test_a_law_without_annealing_leaves_c_undetermined_and_forecasts_nothing_beyond() -> None:
    # Constant-rate runs only: C S2 is 0 at every point, so C is not identified. The law must
    # say so, and a forecast of a schedule that anneals must be refused, not a made-up number.
    rng = np.random.default_rng(3)
    flat = []
    for i, n_steps in enumerate((400, 700, 1000)):
        lrs = _schedule(n_steps, "constant")
        s1, s2 = cv.areas(lrs, DECAY)
        steps = np.unique(np.linspace(40, n_steps, 8).astype(np.int64))
        loss = cv.anneal_loss(s1[steps], s2[steps], **TRUE) * np.exp(rng.normal(0, 0.003, 8))
        flat.append(cv.Curve(f"c{i}", 1e6, lrs, steps, loss))
    fitted = cv.fit_anneal(flat)
    assert fitted.fit.undetermined["C"] == cv.NO_ANNEALING and fitted.s2_range[1] == 0.0
    wsd = _schedule(1000, "wsd")
    running = cv.Curve("run", 1e6, wsd, flat[2].steps[:3], flat[2].loss[:3])
    with pytest.raises(cv.InputError, match="does not reach its end: C no update"):
        cv.forecast_final(running, flat[:2])


def _results(tmp_path: Path, *, lr_column: bool = True) -> Path:
    """A results folder as the harness writes it, less the spec.json files: runs.csv and each
    run's metrics.csv, so the rates come from the logged lr column."""
    rows = []
    for c in _curves():
        run_dir = tmp_path / "runs" / c.run_id
        run_dir.mkdir(parents=True)
        steps = np.arange(1, c.lrs.size + 1)
        s1, s2 = cv.areas(c.lrs, DECAY)
        train = cv.anneal_loss(s1[1:], s2[1:], **TRUE)
        m = pd.DataFrame({"step": steps, "tokens": steps * 1024, "train_loss": train,
                          "val_loss": np.nan, "lr": c.lrs})  # fmt: skip
        m.loc[c.steps - 1, "val_loss"] = c.loss
        if not lr_column:
            m = m.drop(columns="lr")
        m.to_csv(run_dir / "metrics.csv", index=False)
        rows.append({"run_id": c.run_id, "n_params": 1e6, "n_tokens": c.lrs.size * 1024,
                     "loss": c.loss[-1], "status": "done"})  # fmt: skip
    # and four more sizes' final losses, so that the Chinchilla law has its 5 points
    for n in (2e6, 4e6, 8e6, 16e6):
        rows.append({"run_id": f"n{n:g}", "n_params": n, "n_tokens": 1e6,
                     "loss": 1.8 + 500 / n**0.34 + 400 / 1e6**0.28, "status": "done"})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


@pytest.mark.slow
def test_harness_fit_fits_the_curves_and_predict_uses_them(tmp_path: Path) -> None:
    root = _results(tmp_path)
    out = harness_cli("fit", str(root), "--bootstrap", "100")
    assert out.returncode == 0, out.stderr
    assert "anneal_curve     L0 + A S1^-alpha - C S2 (Tissue et al. 2024)" in out.stdout
    assert "N=1000000" in out.stdout and "lambda=0.99 (5 runs, 60 points)" in out.stdout
    doc = json.loads((root / "fits.json").read_text())
    block = doc["fits"]["anneal_curve"]["sizes"]["1000000"]
    for k, v in TRUE.items():
        assert block["params"][k] == pytest.approx(v, rel=0.05), k
    assert block["decay"] == DECAY and block["max_steps"] == 1200
    # The rates came from the CSV's lr column: no schedule settings, so --curve needs them.
    refused = harness_cli("predict", str(root), "--curve", "--n", "1e6", "--d", "1e6")
    assert refused.returncode == 2 and "records no" in refused.stderr
    rep = harness_cli("reproduce", str(root), "--no-replot")
    assert rep.returncode == 0, rep.stdout[-2000:]
    # its figure (no schedule figure: the rates came without their settings) and report table
    plot = harness_cli("plot", str(root))
    assert plot.returncode == 0, plot.stderr
    assert (root / "figures" / "anneal_curves.png").is_file()
    assert not (root / "figures" / "anneal_schedules.png").exists()
    page = harness_cli("report", str(root))
    assert page.returncode == 0, page.stderr
    html = (root / "report.html").read_text()
    assert "<h3>anneal_curve</h3>" in html and "5 runs, 60 points" in html


@pytest.mark.slow
def test_curves_without_a_learning_rate_are_refused_in_one_line(tmp_path: Path) -> None:
    root = _results(tmp_path, lr_column=False)
    out = harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and "metrics.csv: no lr column" in line
    assert not (root / "fits.json").exists()
    # By default the curve law is skipped with that reason; the other laws are fitted.
    default = harness_cli("fit", str(root), "--bootstrap", "0")
    assert default.returncode == 0, default.stderr
    assert "anneal_curve     skipped: " in default.stdout and "no lr column" in default.stdout
    assert "chinchilla       A=" in default.stdout
    assert harness_cli("plot", str(root)).returncode == 0


@pytest.mark.slow
def test_predict_curve_gives_the_law_under_each_schedule(tmp_path: Path) -> None:
    root = _results(tmp_path)
    assert harness_cli("fit", str(root), "--bootstrap", "100").returncode == 0
    # The settings a harness run's spec.json gives (here written in, as a fit of harness
    # runs records them): rate 4e-3 to 10%, 20 warmup updates of 1024 tokens.
    fj = root / "fits.json"
    doc = json.loads(fj.read_text())
    block = doc["fits"]["anneal_curve"]["sizes"]["1000000"]
    block["batch_tokens"] = 1024
    block["schedule"] = {
        "peak_lr": 4e-3,
        "min_lr_ratio": 0.1,
        "warmup_tokens": 20 * 1024,
        "warmup_fraction": 0.0,
        "decay_fraction": 0.2,
        "decay_shape": "1-sqrt",
    }
    fj.write_text(json.dumps(doc))
    out = harness_cli("predict", str(root), "--curve", "--n", "1e6", "--d", "2048000",
                      "--schedule", "wsd", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["steps"] == 2000 and row["cooldown"] == 0.2
    lrs = _schedule(2000, "wsd")
    s1, s2 = cv.areas(lrs, DECAY)
    law = {k: block["params"][k] for k in TRUE}
    assert row["loss"] == pytest.approx(float(cv.anneal_loss(s1[-1], s2[-1], **law)), rel=1e-9)
    lo, hi = row["loss_ci95"]
    assert lo < row["loss"] < hi and row["loss_pi95"][0] < lo and hi < row["loss_pi95"][1]
    assert row["extrapolation_decades"] == pytest.approx(math.log10(2000 / 1200))
    assert row["best_cooldown_loss"] <= row["loss"] + 1e-12
    cosine = harness_cli("predict", str(root), "--curve", "--n", "1e6", "--d", "2048000",
                         "--json")  # fmt: skip
    (c,) = json.loads(cosine.stdout)
    assert c["schedule"] == "cosine" and "best_cooldown" not in c
    bad = harness_cli("predict", str(root), "--curve", "--n", "3e6", "--d", "1e6")
    assert bad.returncode == 2 and "accepted: one of 1000000" in bad.stderr
    huge = harness_cli("predict", str(root), "--curve", "--n", "1e6", "--d", "1e13")
    assert huge.returncode == 2 and "accepted: at most 2000000 updates" in huge.stderr
    mixed = harness_cli("predict", str(root), "--curve", "--n", "1e6", "--d", "1e6",
                        "--cooldown", "0.3")  # fmt: skip
    assert mixed.returncode == 2 and "--cooldown goes with --schedule wsd" in mixed.stderr


def _size_blocks() -> dict[str, dict]:
    """Three sizes' fitted curve laws as fits.json holds them, the larger sizes lower."""
    schedule = {
        "peak_lr": 4e-3,
        "min_lr_ratio": 0.1,
        "warmup_tokens": 0.0,
        "warmup_fraction": 0.05,
        "decay_fraction": 0.2,
        "decay_shape": "1-sqrt",
    }
    return {
        str(n): {"params": {"L0": L0, "A": 0.6, "alpha": 0.5, "C": 0.4}, "decay": DECAY,
                 "schedule": schedule, "batch_tokens": 1024, "min_steps": 50, "max_steps": 2000}
        for n, L0 in ((1_000_000, 2.2), (4_000_000, 1.9), (16_000_000, 1.7))
    }  # fmt: skip


def test_the_size_law_fits_the_final_losses_the_curve_laws_imply() -> None:
    from harness.analysis import curve_sizes as cs
    from harness.analysis import fit as fitmod

    sizes = _size_blocks()
    N, D, L = cs.implied_points(sizes)
    assert N.size == 3 * cs.BUDGETS_PER_SIZE
    # each point is the final loss of a cosine run of D tokens under that size's law, by hand
    i = 4
    n_steps = int(D[i] / 1024)
    lrs = np.array([lr_at_step(s, total_steps=n_steps, warmup=math.ceil(0.05 * n_steps),
                               peak=4e-3, min_ratio=0.1) for s in range(n_steps)])  # fmt: skip
    s1, s2 = cv.areas(lrs, DECAY)
    want = cv.anneal_loss(s1[-1], s2[-1], **sizes[f"{N[i]:.0f}"]["params"])
    assert L[i] == pytest.approx(float(want), rel=1e-12)
    assert D.min() == 50 * 1024 and D.max() == 2000 * 1024
    fitted = fitmod.fit_chinchilla(N, D, L)
    # Curve laws known exactly (every bootstrap sample the same): every resample refits to the
    # full fit, none fails.
    same = {k: {q: np.full(30, v) for q, v in b["params"].items()} for k, b in sizes.items()}
    kept, failed = cs.bootstrap_implied(sizes, same, fitted, 30)
    assert failed == 0 and len(kept) == 30
    for p in kept:
        for k in ("alpha", "beta"):
            assert p[k] == pytest.approx(fitted.params[k], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(params="x"), "params = 'x'; accepted: an object of numbers"),
        (lambda b: b.update(decay="x"), "decay = 'x'; accepted: a number in [0, 1)"),
        (lambda b: b.update(max_steps="x"), "max_steps = 'x'; accepted: an integer >= 0"),
        (lambda b: b.update(undetermined=["C"]), "params and undetermined as objects"),
        (lambda b: b.update(schedule={"peak_lr": "x"}), "schedule = \"{'peak_lr': 'x'}\""),
    ],
)
def test_a_hand_edited_size_block_is_refused_in_one_line(
    tmp_path: Path, edit: object, message: str
) -> None:
    root = _results(tmp_path)
    assert (
        harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve").returncode == 0
    )
    fj = root / "fits.json"
    doc = json.loads(fj.read_text())
    edit(doc["fits"]["anneal_curve"]["sizes"]["1000000"])  # type: ignore[operator]
    fj.write_text(json.dumps(doc))
    for cmd in (["report"], ["plot"], ["predict", "--curve", "--n", "1e6", "--d", "1e6"]):
        out = harness_cli(cmd[0], str(root), *cmd[1:])
        assert out.returncode == 2, (cmd, out.stderr)
        (line,) = out.stderr.strip().splitlines()
        assert "fits.anneal_curve.sizes.1000000" in line and message in line, line


@pytest.mark.slow
def test_a_size_key_that_is_no_size_is_refused(tmp_path: Path) -> None:
    root = _results(tmp_path)
    assert (
        harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve").returncode == 0
    )
    fj = root / "fits.json"
    doc = json.loads(fj.read_text())
    sizes = doc["fits"]["anneal_curve"]["sizes"]
    sizes["abc"] = sizes.pop("1000000")
    fj.write_text(json.dumps(doc))
    out = harness_cli("report", str(root))
    assert out.returncode == 2 and "keys that are model sizes N > 0" in out.stderr


def _curves_csv(tmp_path: Path, *, by: str = "step") -> Path:
    """A foreign results folder: runs.csv and one long curves.csv (every 10th update's rate,
    the evaluations' losses), as another codebase would log them."""
    rows, logged = [], []
    for c in _curves():
        steps = np.arange(10, c.lrs.size + 1, 10)
        lr = pd.DataFrame({"run_id": c.run_id, "step": steps, "lr": c.lrs[steps - 1]})
        ev = pd.DataFrame({"run_id": c.run_id, "step": c.steps, "val_loss": c.loss})
        logged.append(lr.merge(ev, on=["run_id", "step"], how="outer"))
        rows.append({"run_id": c.run_id, "n_params": 1e6, "n_tokens": c.lrs.size * 1024,
                     "loss": c.loss[-1], "batch_tokens": 1024})  # fmt: skip
    curves = pd.concat(logged).sort_values(["run_id", "step"])
    if by == "tokens":
        curves = curves.assign(tokens=curves["step"] * 1024).drop(columns="step")
    curves.to_csv(tmp_path / "curves.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("by", ["step", "tokens"])
def test_curves_from_a_foreign_csv_are_fitted(tmp_path: Path, by: str) -> None:
    root = _curves_csv(tmp_path, by=by)
    out = harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve")
    assert out.returncode == 0, out.stderr
    block = json.loads((root / "fits.json").read_text())["fits"]["anneal_curve"]["sizes"]
    fitted = block["1000000"]
    assert fitted["runs"] == [f"run{i}" for i in range(5)] and fitted["n_points"] == 60
    # The rate between logged steps is interpolated (the warmup's first 10 updates held at the
    # 10th's rate): the law comes back within 10% (5% from every update's rate, above).
    for k, v in TRUE.items():
        assert fitted["params"][k] == pytest.approx(v, rel=0.1), k


@pytest.mark.slow
def test_a_foreign_curves_csv_is_refused_in_one_line(tmp_path: Path) -> None:
    root = _curves_csv(tmp_path)
    curves = pd.read_csv(root / "curves.csv")
    curves.drop(columns="lr").to_csv(root / "curves.csv", index=False)
    out = harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "curves.csv: no lr column; accepted: run_id, step (or tokens), lr and val_loss" in line
    curves.assign(run_id=curves["run_id"].replace("run3", "run9")).to_csv(
        root / "curves.csv", index=False
    )
    out = harness_cli("fit", str(root), "--bootstrap", "0", "--fits", "anneal_curve")
    assert out.returncode == 2 and "run_id 'run9' is not in the runs CSV" in out.stderr
    assert not (root / "fits.json").exists()


def test_a_size_whose_runs_sweep_the_peak_rate_is_skipped_by_name() -> None:
    """The laws' loss falls with the rate's area S1, so a learning-rate sweep past its optimum
    is no set of one size's schedules: such a size is skipped, with the reason."""
    from types import SimpleNamespace

    from harness.analysis.registry.anneal_curve import fit_per_size

    curves = _curves()[:2]
    doubled = cv.Curve("hot", 1e6, 2 * curves[1].lrs, curves[1].steps, curves[1].loss)
    frame = SimpleNamespace(curves_error=None, curves=[curves[0], doubled], n_bootstrap=0)
    with pytest.raises(cv.InputError, match=r"N=1000000: its runs sweep the peak learning rate "):
        fit_per_size(frame, "anneal_curve", cv.fit_anneal, None, dict)  # type: ignore[arg-type]
