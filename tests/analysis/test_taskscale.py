"""Task accuracy chained from N and D (harness.analysis.taskscale, `harness predict --task`):
known chains recovered, many tasks per file, checkpoints as rows, the step-2 form chosen by its
stated criterion, paired samples stored and read back, and bad tables refused in one line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis import taskscale as ts
from harness.analysis.fitting import fit_path
from harness.analysis.laws import chinchilla_loss
from harness.analysis.predict import load_task, predict_task
from harness.errors import InputError

LOSS = {"E": 1.7, "A": 400.0, "B": 600.0, "alpha": 0.33, "beta": 0.3}
BPB = {"E": 0.4, "A": 60.0, "B": 120.0, "alpha": 0.3, "beta": 0.28}
# A sigmoid through Bhagia et al.'s ideal point (0, 1), from a floor near chance (0.26).
SIGMOID = {"a": -0.75, "b": 1.0 + 0.75 / (1.0 + math.exp(4.0 * 1.1)), "k": 4.0, "x0": 1.1}
EXPO = {"eps": 0.9, "k": 2.5, "gamma": 0.8}


def _ladder(d: Path, seed: int = 0, checkpoints: bool = True, run_id: bool = True) -> Path:
    """runs.csv (5 sizes x 3 budgets, the validation loss) and tasks.csv: task 'sig' with bpb
    rows and a sigmoid, task 'exp' (chance unknown) from the validation loss by Gadre et al.'s
    form; half-way checkpoints as rows of their own when ``checkpoints``."""
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 5), [2e9, 8e9, 3.2e10]))
    L = chinchilla_loss(N, D, **LOSS) * np.exp(rng.normal(0, 0.003, N.size))
    ids = [f"r{i:02d}" for i in range(N.size)]
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"run_id": ids, "n_params": N, "n_tokens": D, "loss": L}).to_csv(
        d / "runs.csv", index=False
    )
    rows = []
    for i, (n, dd, loss) in enumerate(zip(N, D, L, strict=True)):
        for frac in (0.5, 1.0) if checkpoints else (1.0,):
            x = float(chinchilla_loss(n, dd * frac, **BPB)) * math.exp(rng.normal(0, 0.003))
            acc = float(ts.step2_accuracy("sigmoid", x, SIGMOID)) + rng.normal(0, 0.004)
            base = {"run_id": ids[i]} if run_id else {}
            rows.append({**base, "n_params": n, "n_tokens": dd * frac, "task": "sig",
                         "metric": "bpb", "value": x, "chance": ""})  # fmt: skip
            rows.append({**base, "n_params": n, "n_tokens": dd * frac, "task": "sig",
                         "metric": "acc", "value": acc, "chance": 0.25})  # fmt: skip
        acc = float(ts.step2_accuracy("exponential", loss, EXPO)) + rng.normal(0, 0.004)
        rows.append({**({"run_id": ids[i]} if run_id else {}), "n_params": n, "n_tokens": dd,
                     "task": "exp", "metric": "acc", "value": acc, "chance": ""})  # fmt: skip
    pd.DataFrame(rows).to_csv(d / "tasks.csv", index=False)
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = _ladder(tmp_path_factory.mktemp("ladder"))
    fit_path(d, n_bootstrap=200, fits=["chinchilla"])
    return d


def test_step2_forms_recover_known_parameters() -> None:
    x = np.linspace(0.7, 2.2, 14)
    p, ok = ts.fit_step2("sigmoid", x, ts.step2_accuracy("sigmoid", x, SIGMOID), 0.25)
    assert ok
    for k, v in SIGMOID.items():
        assert p[k] == pytest.approx(v, rel=1e-3)
    p, ok = ts.fit_step2("exponential", x, ts.step2_accuracy("exponential", x, EXPO))
    assert ok
    for k, v in EXPO.items():
        assert p[k] == pytest.approx(v, rel=1e-4)


def test_each_task_is_chained_and_its_form_chosen_by_the_criterion(fitted: Path) -> None:
    doc = json.loads((fitted / "fits.json").read_text())
    tasks = doc["tasks"]["tasks"]
    assert set(tasks) == {"sig", "exp"}
    sig, exp = tasks["sig"], tasks["exp"]
    assert sig["step1"]["source"].startswith("bpb") and exp["step1"]["source"].startswith("val")
    # checkpoints are rows of their own: 15 runs x 2 evaluations for the bpb task
    assert sig["step1"]["n_points"] == 30 and sig["step2"]["n_points"] == 30
    assert exp["step2"]["n_points"] == 15 and exp["chance"] is None
    for block in (sig, exp):
        crit = block["step2"]["criterion"]
        chosen = block["step2"]["form"]
        other = next(f for f in ts.FORMS if f != chosen)
        assert crit[chosen] <= (math.inf if crit[other] is None else crit[other])
    # the law the data were made with wins, for both tasks
    assert sig["step2"]["form"] == "sigmoid" and exp["step2"]["form"] == "exponential"
    # the prediction at the ladder's largest run, near the truth
    pr = sig["prediction"]
    assert (pr["n_params"], pr["n_tokens"]) == (pytest.approx(1e9), pytest.approx(3.2e10))
    truth = float(ts.step2_accuracy("sigmoid", chinchilla_loss(1e9, 3.2e10, **BPB), SIGMOID))
    lo, hi = pr["ci95"]["accuracy"]
    assert lo <= pr["params"]["accuracy"] <= hi
    assert abs(pr["params"]["accuracy"] - truth) < 0.02
    assert pr["determined"] is True and 0 < pr["precision"]["accuracy"] < 1e-4


@pytest.mark.slow
def test_predict_task_from_the_cli_with_paired_samples(fitted: Path) -> None:
    out = harness_cli(
        "predict", str(fitted), "--task", "all", "--n", "2e9", "--d", "4e10", "--json"
    )
    assert out.returncode == 0, out.stderr
    rows = {r["task"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"sig", "exp"}
    for r in rows.values():
        assert set(r) >= {"accuracy", "accuracy_ci95", "undetermined", "extrapolation"}
        lo, hi = r["accuracy_ci95"]
        assert 0 <= lo <= hi <= 1
    truth_sig = float(ts.step2_accuracy("sigmoid", chinchilla_loss(2e9, 4e10, **BPB), SIGMOID))
    truth_exp = float(ts.step2_accuracy("exponential", chinchilla_loss(2e9, 4e10, **LOSS), EXPO))
    assert rows["sig"]["accuracy"] == pytest.approx(truth_sig, abs=0.03)
    assert rows["exp"]["accuracy"] == pytest.approx(truth_exp, abs=0.03)
    # the samples the interval comes from are the stored, paired ones
    tf, block = load_task(fitted, "sig")
    (row,) = predict_task(tf, block, [2e9], [4e10])
    assert row["accuracy_ci95"] == pytest.approx(rows["sig"]["accuracy_ci95"], rel=1e-9)
    assert len(tf.step1_samples) > 150 and len(tf.step2_samples) > 150
    # from a budget: at the compute-optimal N, D of the Chinchilla law
    out = harness_cli("predict", str(fitted), "--task", "sig", "--flops", "1e20", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["flops"] == pytest.approx(1e20)
    text = harness_cli("predict", str(fitted), "--task", "exp", "--n", "1e11", "--d", "2e12")
    assert "EXTRAPOLATED" in text.stdout
    bad = harness_cli("predict", str(fitted), "--task", "nope", "--n", "1e9", "--d", "1e10")
    assert bad.returncode == 2 and "accepted: exp, sig" in bad.stderr


@pytest.mark.slow
def test_a_table_without_run_id_works(tmp_path: Path) -> None:
    d = _ladder(tmp_path / "x", seed=1, checkpoints=False, run_id=False)
    fit_path(d, n_bootstrap=0, fits=["chinchilla"])
    tasks = json.loads((d / "fits.json").read_text())["tasks"]["tasks"]
    assert tasks["sig"]["step2"]["n_points"] == 15 and "skipped" not in tasks["exp"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"metric": "accuracy"}, "column 'metric' has value(s) 'accuracy'"),
        ({"value": 1.5}, "column 'value' has bad value(s) 1.5"),
        ({"chance": 1.0}, "column 'chance' has bad value(s) 1.0"),
        ({"n_params": -1}, "column 'n_params' has bad value(s) -1"),
    ],
)
def test_bad_task_tables_are_refused_in_one_line(tmp_path: Path, edit: dict, message: str) -> None:
    d = _ladder(tmp_path / "x", checkpoints=False)
    df = pd.read_csv(d / "tasks.csv")
    i = int(np.flatnonzero(df["metric"] == "acc")[0])
    for k, v in edit.items():
        df[k] = df[k].astype(object)
        df.loc[i, k] = v
    df.to_csv(d / "tasks.csv", index=False)
    with pytest.raises(InputError, match=re.escape("tasks.csv: " + message)):
        ts.load_tasks(d / "tasks.csv")
    out = harness_cli("fit", str(d), "--bootstrap", "0")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_repeated_row_and_two_chances_are_refused(tmp_path: Path) -> None:
    d = _ladder(tmp_path / "x", checkpoints=False)
    df = pd.read_csv(d / "tasks.csv")
    pd.concat([df, df.iloc[[1]]]).to_csv(d / "tasks.csv", index=False)
    with pytest.raises(InputError, match="repeat at line"):
        ts.load_tasks(d / "tasks.csv")
    df.loc[df["task"] == "sig", "chance"] = np.where(
        np.arange(int((df["task"] == "sig").sum())) % 4 == 1, 0.5, 0.25
    )
    df.to_csv(d / "tasks.csv", index=False)
    with pytest.raises(InputError, match="one chance accuracy per task"):
        ts.load_tasks(d / "tasks.csv")


@pytest.mark.slow
def test_figures_and_report_show_each_task(fitted: Path, tmp_path: Path) -> None:
    from harness.analysis.drawing import plot_path
    from harness.analysis.report import write_report

    names = {p.name for p in plot_path(fitted)}
    assert {"task_sig.png", "task_sig.svg", "task_exp.png", "task_exp.svg"} <= names
    page = write_report(fitted).read_text()
    doc = json.loads((fitted / "fits.json").read_text())
    assert "Task accuracy" in page
    for task, block in doc["tasks"]["tasks"].items():
        assert f'<td class="l">{task}</td>' in page
        assert f"{block['step2']['form']}:" in page
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("runs.csv", "tasks.csv"):
        (copy / f).write_bytes((fitted / f).read_bytes())
    summary = harness_cli("fit", str(copy), "--bootstrap", "0", "--fits", "chinchilla").stdout
    assert "task sig" in summary and "via sigmoid" in summary


def test_the_cluster_bootstrap_draws_whole_runs() -> None:
    from harness.analysis.common import resample_weights

    groups = np.array(["a", "a", "b", "c", "c", "c"])
    W = resample_weights(6, 500, np.random.default_rng(0), groups)
    for w in W:  # the points of one run are drawn together, as often as their run
        assert w[0] == w[1] and w[3] == w[4] == w[5]
    assert W.sum(axis=1).min() >= 3 and np.allclose(W.sum(axis=1) % 1, 0)


@pytest.mark.slow
def test_a_bpb_task_needs_no_chinchilla_fit_of_runs_csv(fitted: Path, tmp_path: Path) -> None:
    d = tmp_path / "k"
    d.mkdir()
    for f in ("runs.csv", "tasks.csv"):
        (d / f).write_bytes((fitted / f).read_bytes())
    fit_path(d, n_bootstrap=50, fits=["kaplan"])
    out = harness_cli("predict", str(d), "--task", "sig", "--n", "1e9", "--d", "3e10", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    # its range is that of the task's own bpb rows
    assert row["extrapolation"]["decades"]["n_params"] == 0.0
    bad = harness_cli("predict", str(d), "--task", "exp", "--n", "1e9", "--d", "3e10")
    assert bad.returncode == 2 and "no bpb rows and no Chinchilla fit" in bad.stderr


def test_a_loss_below_step_2s_data_is_flagged(fitted: Path) -> None:
    tf, block = load_task(fitted, "sig")
    (row,) = predict_task(tf, block, [1e12], [1e14])
    assert row["extrapolation"]["step2_loss_below_fitted"] is True
    (row,) = predict_task(tf, block, [1e8], [8e9])
    assert row["extrapolation"]["step2_loss_below_fitted"] is False


def _in_loop_ladder(d: Path, seed: int = 1) -> Path:
    """tasks.csv as the in-loop evaluation writes it (harness.results' columns): 5 sizes x 3
    budgets, each run scored at 3 checkpoints; mid-schedule checkpoints' bpb sit 8% above the
    law (a decaying schedule's middle is not a run trained to that D), the final ones on it;
    accuracy follows the sigmoid of each checkpoint's own bpb."""
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 5), [2e9, 8e9, 3.2e10]))
    d.mkdir(parents=True, exist_ok=True)
    ids = [f"r{i:02d}" for i in range(N.size)]
    L = chinchilla_loss(N, D, **LOSS)
    pd.DataFrame({"run_id": ids, "n_params": N, "n_tokens": D, "loss": L}).to_csv(
        d / "runs.csv", index=False
    )
    rows = []
    for i, (n, dd) in enumerate(zip(N, D, strict=True)):
        for step, frac in enumerate((1 / 3, 2 / 3, 1.0), start=1):
            final = frac == 1.0
            x = float(chinchilla_loss(n, dd * frac, **BPB)) * (1.0 if final else 1.08)
            x *= math.exp(rng.normal(0, 0.002))
            acc = float(ts.step2_accuracy("sigmoid", x, SIGMOID)) + rng.normal(0, 0.003)
            for metric, value, chance in (("bpb", x, ""), ("acc", acc, 0.25)):
                rows.append({"run_id": ids[i], "n_params": n, "n_tokens": dd * frac,
                             "task": "cloze", "metric": metric, "value": value,
                             "chance": chance, "step": step, "final": int(final),
                             "n_examples": 500, "seed": 0})  # fmt: skip
    pd.DataFrame(rows).to_csv(d / "tasks.csv", index=False)
    return d


def test_in_loop_rows_fit_step_1_on_final_checkpoints_and_pass_the_held_out_check(
    tmp_path: Path,
) -> None:
    from harness.analysis.drawing import plot_path

    d = _in_loop_ladder(tmp_path / "ladder")
    doc = json.loads(fit_path(d, n_bootstrap=100, fits=["chinchilla"]).read_text())
    block = doc["tasks"]["tasks"]["cloze"]
    step1 = block["step1"]
    assert step1["n_points"] == 15  # the final checkpoints only, not the 30 mid-schedule ones
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 5), [2e9, 8e9, 3.2e10]))
    truth = chinchilla_loss(N, D, **BPB)
    # Recovered, though mid-schedule rows sit 8% above the law: the law at every run within
    # 0.5% (measured 0.14%), E and the exponents within 10%.
    assert np.max(np.abs(chinchilla_loss(N, D, **step1["params"]) / truth - 1)) < 0.005
    for k in ("E", "alpha", "beta"):
        assert step1["params"][k] == pytest.approx(BPB[k], rel=0.1), k
    # The same rows without the final column: step 1 fitted on every checkpoint is 8% off.
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "runs.csv").write_bytes((d / "runs.csv").read_bytes())
    pd.read_csv(d / "tasks.csv").drop(columns=["final"]).to_csv(
        tmp_path / "all" / "tasks.csv", index=False
    )
    biased = json.loads(fit_path(tmp_path / "all", n_bootstrap=0, fits=["chinchilla"]).read_text())
    p_all = biased["tasks"]["tasks"]["cloze"]["step1"]["params"]
    assert np.max(np.abs(chinchilla_loss(N, D, **p_all) / truth - 1)) > 0.05
    assert block["step2"]["n_points"] == 45  # step 2: every checkpoint
    h = block["heldout"]
    assert h["n_fitted_runs"] == 11 and len(h["runs"]) == 4  # 6ND above its 0.75 quantile
    for r in h["runs"]:
        truth = float(
            ts.step2_accuracy(
                "sigmoid", chinchilla_loss(r["n_params"], r["n_tokens"], **BPB), SIGMOID
            )
        )
        assert r["params"]["accuracy"] == pytest.approx(truth, abs=0.01)
        # The interval is the predicted mean's (the fit's uncertainty): it holds the true
        # accuracy; an observed one adds its own noise (sd 0.003 here).
        lo, hi = r["ci95"]["accuracy"]
        assert lo <= truth <= hi
        assert abs(r["observed"] - truth) < 0.012
        assert r["params"]["abs_error"] == pytest.approx(
            abs(r["params"]["accuracy"] - r["observed"])
        )
    assert "task_cloze_heldout.png" in {p.name for p in plot_path(d)}
    # Stored and refitted agree, by reproduce's own rules.
    from harness.analysis.reproduce import reproduce_path

    ok, report = reproduce_path(d, replot=False)
    assert ok, report
