"""harness.analysis.downstream: the two-step accuracy fit, the chain, labels needed, and its
wiring into fit / plot / reproduce, on generated downstream.csv files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import analysis_cli

from harness.analysis import downstream as ds
from harness.analysis.drawing import plot_path
from harness.analysis.fit import GridEdgeWarning
from harness.analysis.fitting import fits_up_to_date
from harness.analysis.laws import chinchilla_loss
from harness.analysis.reproduce import reproduce_path
from harness.errors import InputError

CHANCE = 0.25
TRUE = {
    "full": {"a": -0.6, "b": 0.85, "k": 3.0, "L0": 3.3},
    "lora": {"a": -0.5, "b": 0.75, "k": 3.0, "L0": 3.2},
}
CHIN = {"E": 1.0, "A": 30.0, "B": 60.0, "alpha": 0.3, "beta": 0.3}


# ---------------------------------------------------------------------------------------------
# step 2: the sigmoid


def _sigmoid_data(
    noise: float, seed: int = 0, true: dict[str, float] = TRUE["full"]
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    L = np.repeat(np.linspace(1.8, 4.8, 10), 3)
    return L, ds.sigmoid_accuracy(L, **true) + rng.normal(0.0, noise, L.size)


def test_sigmoid_formula_hand_values() -> None:
    # Acc(L) = a / (1 + exp(-k (L - L0))) + b: at L0 the sigmoid is halfway, a/2 + b.
    assert ds.sigmoid_accuracy(3.0, -0.5, 0.75, 2.0, 3.0) == pytest.approx(0.5, abs=1e-15)
    assert ds.sigmoid_accuracy(1.2, -0.5, 0.75, 2.0, 3.0) == pytest.approx(
        0.75 - 0.5 / (1.0 + math.exp(3.6)), rel=1e-14
    )
    # Far from L0 the limits: ceiling b at low loss, floor a + b at high loss, no overflow.
    assert ds.sigmoid_accuracy([-1e4, 1e4], -0.5, 0.75, 2.0, 3.0) == pytest.approx([0.75, 0.25])


def test_sigmoid_recovers_parameters_noise_free() -> None:
    L, y = _sigmoid_data(0.0)
    f = ds.fit_sigmoid(L, y, chance=CHANCE)
    for k, v in TRUE["full"].items():
        assert f.params[k] == pytest.approx(v, rel=1e-6), k
    assert f.floor == pytest.approx(0.25, rel=1e-6) and f.ceiling == pytest.approx(0.85, rel=1e-6)
    assert f.free == ("floor", "s", "k", "L0") and f.converged and f.rmse < 1e-8


def test_sigmoid_recovers_parameters_with_noise_and_intervals_cover_them() -> None:
    L, y = _sigmoid_data(0.01, seed=3, true=TRUE["lora"])
    f = ds.fit_sigmoid(L, y, chance=0.2)
    assert f.params["a"] == pytest.approx(-0.5, abs=0.03)
    assert f.params["b"] == pytest.approx(0.75, abs=0.02)
    assert f.params["k"] == pytest.approx(3.0, rel=0.15)
    assert f.params["L0"] == pytest.approx(3.2, abs=0.05)
    assert f.rmse == pytest.approx(0.01, rel=0.35)
    boots, failed = ds.bootstrap_sigmoid(
        L, y, f, chance=0.2, n_resamples=200, rng=np.random.default_rng(0)
    )
    assert failed == 0 and len(boots) == 200
    for k, v in TRUE["lora"].items():
        lo, hi = np.percentile([b[k] for b in boots], [2.5, 97.5])
        assert lo < v < hi, (k, lo, hi)
    again, _ = ds.bootstrap_sigmoid(
        L, y, f, chance=0.2, n_resamples=200, rng=np.random.default_rng(0)
    )
    assert again == boots  # seeded: identical


def test_sigmoid_bounds_keep_the_paper_sign_convention() -> None:
    # Accuracies below chance at high loss and a dip: the floor stays at chance, the ceiling
    # at or below 1, a <= 0 and k >= 0 (accuracy falls as loss rises).
    L = np.linspace(1.0, 5.0, 9)
    y = np.array([1.0, 1.0, 0.99, 0.9, 0.6, 0.3, 0.15, 0.1, 0.12])
    f = ds.fit_sigmoid(L, y, chance=0.25)
    assert f.floor == pytest.approx(0.25, abs=1e-9)
    assert "floor=chance" in f.at_bounds
    assert f.ceiling <= 1.0 and f.params["a"] <= 0 and f.params["k"] >= 0
    assert f.params["a"] + f.params["b"] == pytest.approx(f.floor)


def test_sigmoid_degenerate_input_has_clear_messages() -> None:
    L = np.linspace(2, 4, 8)
    with pytest.raises(InputError, match=r"every accuracy \(8 rows, max 0.25\) is at chance"):
        ds.fit_sigmoid(L, np.full(8, 0.25), chance=0.25)
    # Within two binomial standard errors of chance counts as chance too.
    with pytest.raises(InputError, match="at chance"):
        ds.fit_sigmoid(L, 0.25 + np.linspace(0, 0.03, 8), chance=0.25, margin=0.0433)
    with pytest.raises(
        InputError,
        match=r"2 distinct pretraining loss value\(s\) in 4 rows, "
        r"fewer than the 3 a 2-parameter sigmoid needs",
    ):
        ds.fit_sigmoid([2, 2, 3, 3], [0.5, 0.5, 0.3, 0.3], chance=0.25)
    with pytest.raises(InputError, match="fewer than the 4 a 4-parameter"):
        ds.fit_sigmoid([2, 3, 4], [0.6, 0.4, 0.3], chance=0.25, fix_asymptotes=False)
    with pytest.raises(InputError, match=r"accuracy 1.5 at index 1; accepted: numbers in \[0, 1\]"):
        ds.fit_sigmoid([2, 3, 4, 5], [0.5, 1.5, 0.3, 0.3], chance=0.25)


def test_sigmoid_with_three_losses_fixes_the_asymptotes() -> None:
    # 3 distinct losses < 4 parameters: floor = chance and ceiling = 1, k and L0 fitted.
    true = {"a": -0.75, "b": 1.0, "k": 2.0, "L0": 3.0}
    L = np.array([2.0, 3.0, 4.0])
    f = ds.fit_sigmoid(L, ds.sigmoid_accuracy(L, **true), chance=0.25)
    assert f.free == ("k", "L0")
    for k, v in true.items():
        assert f.params[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


# ---------------------------------------------------------------------------------------------
# the chain


def test_chained_prediction_hand_values() -> None:
    s1 = {"E": 1.0, "A": 100.0, "B": 100.0, "alpha": 0.5, "beta": 0.5}
    s2 = {"a": -0.5, "b": 0.75, "k": 2.0, "L0": 3.0}
    # N = D = 1e4: L = 1 + 100/100 + 100/100 = 3 = L0, so Acc = 0.75 - 0.5/2 = 0.5.
    # N = D = 1e6: L = 1 + 0.1 + 0.1 = 1.2, Acc = 0.75 - 0.5 / (1 + e^3.6).
    got = ds.chained_accuracy([1e4, 1e6], [1e4, 1e6], "chinchilla", s1, s2)
    assert got == pytest.approx([0.5, 0.75 - 0.5 / (1 + math.exp(3.6))], rel=1e-14)
    # From compute along the frontier: alpha = beta and A = B give G = 1, N_opt = D_opt =
    # sqrt(C/6); C = 6e8 is N = D = 1e4 again.
    assert ds.accuracy_from_compute(6e8, "chinchilla", s1, s2) == pytest.approx(0.5, rel=1e-12)
    # Power law in C: L = 1 + 2e3 * (6e6)^-0.5 = 1.8165, Acc hand-computed.
    pc = {"E": 1.0, "A": 2e3, "alpha": 0.5}
    L = 1.0 + 2e3 / math.sqrt(6e6)
    want = 0.75 - 0.5 / (1 + math.exp(-2.0 * (L - 3.0)))
    assert ds.chained_accuracy(1e3, 1e3, "power_law_c", pc, s2) == pytest.approx(want, rel=1e-14)
    assert ds.accuracy_from_compute(6e6, "power_law_c", pc, s2) == pytest.approx(want, rel=1e-14)
    with pytest.raises(InputError, match="accepted: chinchilla, power_law_c"):
        ds.step1_loss("kaplan", s1, 1e4, 1e4)


# ---------------------------------------------------------------------------------------------
# labelled-data size


def test_labels_needed_interpolates_in_log_n() -> None:
    n, acc = [10, 100, 1000], [0.3, 0.5, 0.7]
    # 0.6 is halfway from 0.5 (n=100) to 0.7 (n=1000) in log n: n* = 10^2.5 = 316.23.
    r = ds.labels_needed(n, acc, 0.6)
    assert r.status == "reached" and r.n_labels == pytest.approx(10**2.5, rel=1e-12)
    # A quarter of the way from 0.3 to 0.5: 10^1.25 = 17.78.
    assert ds.labels_needed(n, acc, 0.35).n_labels == pytest.approx(10**1.25, rel=1e-12)
    assert ds.labels_needed(n, acc, 0.5).n_labels == pytest.approx(100.0, rel=1e-12)
    r = ds.labels_needed(n, acc, 0.2)
    assert (r.n_labels, r.status) == (10.0, "reached at the smallest size")
    r = ds.labels_needed(n, acc, 0.8)
    assert (r.n_labels, r.status) == (None, "not reached")
    # Seeds are averaged first: 0.4 and 0.6 at n=100 make 0.5.
    r = ds.labels_needed([10, 100, 100, 1000], [0.3, 0.4, 0.6, 0.7], 0.6)
    assert r.n_labels == pytest.approx(10**2.5, rel=1e-12)
    # A dip does not hide the first crossing: 0.55 first reached between 10 and 100.
    r = ds.labels_needed([10, 100, 1000], [0.5, 0.6, 0.52], 0.55)
    assert r.n_labels == pytest.approx(10**1.5, rel=1e-12)


def test_label_power_law_recovery_and_inverse() -> None:
    n = np.array([8, 16, 32, 64, 128, 256, 512], dtype=float)
    y = ds.label_power_law(n, 0.8, 2.0, 0.5)
    f = ds.fit_label_power_law(n, y, chance=0.25)
    assert (f.acc_inf, f.c, f.gamma) == pytest.approx((0.8, 2.0, 0.5), rel=1e-6)
    # acc(n) = 0.7 <=> 2 n^-0.5 = 0.1 <=> n = 400.
    assert f.n_for(0.7) == pytest.approx(400.0, rel=1e-6)
    assert f.n_for(0.8) is None
    with pytest.raises(InputError, match="3 distinct n_labels, fewer than the 4"):
        ds.fit_label_power_law([8, 16, 32], [0.3, 0.4, 0.5], chance=0.25)


# ---------------------------------------------------------------------------------------------
# downstream.csv and the report


def _experiment(d: Path, *, at_chance: bool = False, noise: float = 0.005) -> Path:
    """runs.csv (3 N x 3 D, Chinchilla losses) and downstream.csv (2 methods, 4 label sizes,
    2 seeds per model) generated from TRUE; accuracy at n labels is
    chance + (Acc(L) - chance) (n / 512)^0.25."""
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e4, 1e6, 3), np.geomspace(1e5, 1e7, 3)))
    L = chinchilla_loss(N, D, **CHIN)
    ids = [f"r{i}" for i in range(N.size)]
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"run_id": ids, "n_params": N, "n_tokens": D, "loss": L, "status": "done"}).to_csv(
        d / "runs.csv", index=False
    )
    rows = []
    for i in range(N.size):
        for m, p in TRUE.items():
            for n in (8, 32, 128, 512):
                for s in (0, 1):
                    top = CHANCE if at_chance else ds.sigmoid_accuracy(L[i], **p)
                    acc = CHANCE + (top - CHANCE) * (n / 512) ** 0.25 + rng.normal(0, noise)
                    rows.append(
                        {
                            "run_id": ids[i],
                            "n_params": N[i],
                            "n_tokens": D[i],
                            "loss": L[i],
                            "method": m,
                            "n_labels": n,
                            "seed": s,
                            "accuracy": float(np.clip(acc, 0, 1)),
                            "chance_accuracy": CHANCE,
                            "n_test": 400,
                            "status": "done",
                        }
                    )
    pd.DataFrame(rows).to_csv(d / "downstream.csv", index=False)
    return d


@pytest.mark.slow
def test_fit_downstream_recovers_the_generating_laws(tmp_path: Path) -> None:
    d = _experiment(tmp_path / "exp")
    frame = ds.load_downstream(d)
    runs = pd.read_csv(d / "runs.csv")
    out = ds.fit_downstream(frame, runs, n_bootstrap=20, target_accuracy=0.5)
    assert out["chance"] == CHANCE
    s1 = out["step1"]
    assert s1["law"] == "chinchilla"
    for k, v in CHIN.items():
        assert s1["params"][k] == pytest.approx(v, rel=1e-4), k
    for method, true in TRUE.items():
        m = out["methods"][method]
        s2 = m["step2"]
        assert s2["n_labels"] == 512 and s2["n_points"] == 18
        assert s2["params"]["L0"] == pytest.approx(true["L0"], abs=0.05)
        assert s2["params"]["b"] == pytest.approx(true["b"], abs=0.02)
        assert s2["params"]["k"] == pytest.approx(true["k"], rel=0.15)
        assert len(s2["ci95"]["L0"]) == 2
        ch = m["chained"]
        assert ch["max_abs_error"] < 0.02 and len(ch["points"]) == 9
        p0 = ch["points"][0]
        assert p0["predicted"] == pytest.approx(
            ds.chained_accuracy(
                p0["n_params"], p0["n_tokens"], "chinchilla", s1["params"], s2["params"]
            )
        )
        assert p0["ci95"][0] <= p0["predicted"] <= p0["ci95"][1]
        # Every size of the smallest models (N = 1e4, D = 1e5: loss 4.79) stays near chance.
        lab = m["labels"]
        assert lab["target"] == 0.5 and lab["target_rule"] == "given"
        first = lab["models"][0]
        assert (first["n_params"], first["n_tokens"]) == (1e4, 1e5)
        assert first["status"] == "not reached" and first["n_labels_needed"] is None
        best = max(lab["models"], key=lambda e: e["accuracy"][-1])
        assert best["status"] in ("reached", "reached at the smallest size")
        want = ds.labels_needed(best["n_labels"], best["accuracy"], 0.5).n_labels
        assert best["n_labels_needed"] == pytest.approx(want)
    # Without runs.csv, step 1 falls back to L(C) on the fine-tuned models (its E runs to
    # the edge of the start grid on these 5 distinct budgets: warned, not an error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridEdgeWarning)
        alone = ds.fit_downstream(frame, None, n_bootstrap=0)
    assert alone["step1"]["law"] == "power_law_c"
    # The default target is one for all methods: halfway from chance to the best seed mean.
    best = frame.groupby(["run_id", "method", "n_labels"])["accuracy"].mean().max()
    for m in alone["methods"].values():
        assert m["labels"]["target"] == pytest.approx(0.5 * (CHANCE + best), rel=1e-14)
        assert m["labels"]["target_rule"].startswith("halfway")


def test_fit_downstream_all_at_chance_is_skipped_not_crashed(tmp_path: Path) -> None:
    d = _experiment(tmp_path / "chance", at_chance=True, noise=0.0)
    out = ds.fit_downstream(ds.load_downstream(d), pd.read_csv(d / "runs.csv"), n_bootstrap=0)
    for m in out["methods"].values():
        assert "is at chance" in m["step2"]["skipped"]
        assert "skipped" in m["chained"]
        assert all(e["status"] == "reached at the smallest size" for e in m["labels"]["models"])


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda t: t.replace("accuracy", "acc", 1), r"missing column\(s\) accuracy"),
        (
            lambda t: t.replace(",chance_accuracy,", ",p0,", 1),
            r"missing column\(s\) chance_accuracy \(or n_classes\)",
        ),
        (
            lambda t: _cell(t, 3, "accuracy", "1.5"),
            r"column 'accuracy' has bad value\(s\) 1.5 at line 4; accepted: numbers in \[0, 1\]",
        ),
        (
            lambda t: _cell(t, 2, "n_labels", "many"),
            r"column 'n_labels' has bad value\(s\) 'many' at line 3; accepted: finite numbers > 0",
        ),
        (
            lambda t: _cell(t, 5, "chance_accuracy", "0.5"),
            r"column 'chance' has 2 different values 0.25, 0.5; accepted: one task",
        ),
        (lambda t: "", "the file is empty"),
        (lambda t: t.splitlines()[0] + "\n", r"no usable row \(0 excluded by status\)"),
    ],
)
def test_bad_downstream_csv_is_one_line_input_error(
    tmp_path: Path, edit: Callable[[str], str], pattern: str
) -> None:
    d = _experiment(tmp_path / "bad")
    path = d / "downstream.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=pattern) as exc:
        ds.load_downstream(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg


def _cell(text: str, row: int, col: str, value: str) -> str:
    lines = text.splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(col)] = value
    lines[row] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`harness fit` once on a generated experiment with downstream.csv: (dir, stdout)."""
    d = _experiment(tmp_path_factory.mktemp("ds") / "exp")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            analysis_cli()(
                "fit",
                str(d),
                "--bootstrap",
                "20",
                "--fits",
                "chinchilla",
                "--target-accuracy",
                "0.5",
            )
            == 0
        )
    return d, out.getvalue()


def test_cli_fit_writes_downstream_block_and_summary(fitted: tuple[Path, str]) -> None:
    d, stdout = fitted
    doc = json.loads((d / "fits.json").read_text())
    block = doc["downstream"]
    assert block["input"]["path"] == "downstream.csv" and block["input"]["n_rows"] == 144
    assert doc["settings"]["target_accuracy"] == 0.5
    assert set(block["methods"]) == {"full", "lora"}
    assert "downstream       downstream.csv: 144 fine-tuning runs, chance accuracy 0.25" in stdout
    assert "full  step 2 Acc(L) (n_labels=512, 18 runs): a=" in stdout
    assert "labels to reach accuracy 0.5:" in stdout
    # Step 1 is the very Chinchilla fit of "fits" (fitted once), intervals included.
    chin, step1 = doc["fits"]["chinchilla"], block["step1"]
    assert step1["law"] == "chinchilla" and step1["data"].startswith("pretraining runs (")
    assert step1["params"] == chin["params"] and step1["ci95"] == chin["ci95"]
    assert step1["ci95"] and step1["n_bootstrap"] == 20


@pytest.mark.slow
def test_reproduce_and_plots_with_downstream(fitted: tuple[Path, str], tmp_path: Path) -> None:
    d, _ = fitted
    ok, table = reproduce_path(d, replot=False)
    assert ok, table
    files = plot_path(d, out_dir=tmp_path / "a")
    names = {f.name for f in files}
    for stem in ("downstream_acc_vs_loss", "downstream_acc_vs_compute", "downstream_acc_vs_labels"):
        assert {stem + ".png", stem + ".svg"} <= names
    # Drawn again, the figure is byte-identical (no date or version metadata).
    from harness.analysis.downstream_plots import plot_accuracy_vs_loss
    from harness.analysis.plots import new_axes, save_figure

    block = json.loads((d / "fits.json").read_text())["downstream"]
    fig = plot_accuracy_vs_loss(new_axes(), ds.load_downstream(d), block)
    for f in save_figure(fig, tmp_path / "b" / "downstream_acc_vs_loss"):
        assert f.read_bytes() == (tmp_path / "a" / f.name).read_bytes(), f.name


def test_changed_downstream_csv_is_not_up_to_date(fitted: tuple[Path, str], tmp_path: Path) -> None:
    d, _ = fitted
    copy = tmp_path / "exp"
    copy.mkdir()
    for name in ("runs.csv", "downstream.csv", "fits.json"):
        (copy / name).write_bytes((d / name).read_bytes())
    (copy / "figures").mkdir()
    (copy / "figures" / "x.png").write_bytes(b"x")
    assert not fits_up_to_date(copy / "runs.csv")  # no bootstrap samples beside fits.json
    (copy / "fits.bootstrap.npz").write_bytes((d / "fits.bootstrap.npz").read_bytes())
    assert fits_up_to_date(copy / "runs.csv")
    with open(copy / "downstream.csv", "a") as f:
        f.write(open(d / "downstream.csv").read().splitlines()[1] + "\n")
    assert not fits_up_to_date(copy / "runs.csv")
    # Refitting with the changed file makes reproduce of the old fits.json disagree.
    ok, table = reproduce_path(copy, replot=False)
    assert not ok and "downstream.input" in table


def test_cli_rejects_target_out_of_range(fitted: tuple[Path, str], tmp_path: Path) -> None:
    d, _ = fitted
    with pytest.raises(InputError, match=r"--target-accuracy 2.0; accepted: a number in \(0, 1\]"):
        analysis_cli()(
            "fit",
            str(d),
            "--bootstrap",
            "0",
            "--fits",
            "chinchilla",
            "--target-accuracy",
            "2",
            "--out",
            str(tmp_path / "f.json"),
        )
