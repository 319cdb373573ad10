"""`harness report`: one self-contained HTML page, checked in a real browser (Debian's chromium
driven by playwright), and the figures it shows: SI labels, bootstrap bands, the held-out
extrapolation with its intervals, the contour plot and the grid's heat map.

The browser test skips where chromium or playwright is missing, except with HARNESS_BROWSER=1
(CI installs both), where a missing browser is a failure: CI cannot pass without looking."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli

from harness.analysis.fitting import fit_path
from harness.analysis.laws import chinchilla_loss
from harness.analysis.plots import _band, colours
from harness.analysis.report import write_report
from harness.units import si

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs.csv from the published Chinchilla law with 1% noise, fitted with 200 resamples."""
    d = tmp_path_factory.mktemp("page") / "chin"
    d.mkdir()
    rng = np.random.default_rng(1)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 4)))
    L = chinchilla_loss(N, D, **TRUE) * np.exp(rng.normal(0, 0.01, N.size))
    pd.DataFrame(
        {
            "run_id": [f"r{i:02d}" for i in range(N.size)],
            "experiment": "chin",
            "n_params": N,
            "n_tokens": D,
            "loss": L,
            "status": "done",
            "git_sha": "abc1234",
        }
    ).to_csv(d / "runs.csv", index=False)
    fit_path(d, n_bootstrap=200)
    return d


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (13408, "13.4k"),
        (13000, "13k"),
        (150_000, "150k"),
        (1.5e6, "1.5M"),
        (999_700, "1M"),
        (2.72e12, "2.72T"),
        (1e18, "1E"),
        (2.5, "2.5"),
        (3.0, "3"),
        (3e-4, "3e-4"),
        (0, "0"),
    ],
)
def test_si_labels(x: float, text: str) -> None:
    assert si(x) == text


def test_colours_are_one_per_quantity_and_value() -> None:
    n = colours([3e4, 1e4, 1e4, 9e4], "N")
    assert list(n) == [1e4, 3e4, 9e4]  # sorted, distinct
    assert colours([1e4, 3e4, 9e4], "N") == n  # the same sizes: the same colours
    assert colours([1e4, 3e4, 9e4], "D")[1e4] != n[1e4]  # D has a colour map of its own


def test_the_band_holds_the_law_its_samples_scatter_around() -> None:
    rng = np.random.default_rng(0)
    samples = {k: v * np.exp(rng.normal(0, 0.005, 500)) for k, v in TRUE.items()}
    n, d = np.geomspace(1e6, 1e9, 7), 1e10
    lo, hi = _band(samples, n, d)
    mid = chinchilla_loss(n, d, **TRUE)
    assert np.all(lo < mid) and np.all(mid < hi) and np.all(hi - lo < 0.1 * mid)
    assert _band({}, n, d) is None


def test_the_heldout_check_predicts_with_intervals(fitted: Path) -> None:
    import json

    block = json.loads((fitted / "fits.json").read_text())["fits"]["heldout"]
    pts = block["points"]
    cis = [block["ci95"][f"predicted_{i}"] for i in range(len(pts))]
    assert len(pts) == len(cis) == block["n_test"] == 5  # above the 0.75 quantile of 20 runs
    for p, (lo, hi) in zip(pts, cis, strict=True):
        truth = chinchilla_loss(p["n_params"], p["n_tokens"], **TRUE)
        assert lo < p["predicted"] < hi
        assert abs(p["predicted"] - truth) / truth < 0.03  # 1% noise, extrapolated 2-5x in C
    assert np.mean([lo <= p["loss"] <= hi for p, (lo, hi) in zip(pts, cis, strict=True)]) >= 0.6
    # Each end's Monte Carlo error (200 resamples) is positive and below the interval's width.
    ses_all = [block["ci95_mc_se"][f"predicted_{i}"] for i in range(len(pts))]
    for (lo, hi), ses in zip(cis, ses_all, strict=True):
        assert all(0 < se < hi - lo for se in ses)


def _external_references(page: str) -> list[str]:
    """Every attribute or CSS url that would make a browser fetch something (matplotlib's SVG
    embeds a colour bar as a data: image, which is inline)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    refs += re.findall(r"url\(\s*['\"]?([^)'\"]*)", page)
    return [r for r in refs if not r.startswith(("#", "data:"))]  # in-page, or inline data


@pytest.mark.slow
def test_the_report_tells_the_whole_story_in_one_file(fitted: Path) -> None:
    page = write_report(fitted).read_text(encoding="utf-8")
    assert _external_references(page) == [] and "<script" not in page and "<link" not in page
    for section in ("The grid", "Extrapolation check", "Compute-optimal allocation",
                    "Fitted laws", "Provenance"):  # fmt: skip
        assert f"<h2>{section}</h2>" in page
    svgs = re.findall(r"<svg\b", page)
    assert len(svgs) >= 6  # loss vs N and D, contour, extrapolation, residuals, heat map
    # Each figure's ids are its own (prefixed with its name), and every reference resolves.
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    stems = set(re.findall(r"<figcaption>([a-z_]+)</figcaption>", page))
    assert {i.split("-")[0] for i in ids} <= stems
    refs = set(re.findall(r"""(?:href=["']|url\()#([^"')]+)""", page))
    assert refs and refs <= ids
    # The fitted exponents with their intervals, near the truth.
    alpha = float(re.search(r"α = ([0-9.]+) \[", page).group(1))
    beta = float(re.search(r"β = ([0-9.]+) \[", page).group(1))
    assert abs(alpha - TRUE["alpha"]) < 0.05 and abs(beta - TRUE["beta"]) < 0.05
    # Seven compute budgets in the compute-optimal table, the grid's 20 runs, provenance.
    co = page.split("<h2>Compute-optimal allocation</h2>")[1].split("<h2>")[0]
    assert co.count("<tr>") == 1 + 7 and ">1e21<" in co
    grid = page.split("<h2>The grid</h2>")[1].split("<h2>")[0]
    assert grid.count("<code>r") == 20 and ">1M<" in grid and ">10G<" in grid
    assert "abc1234" in page and "runs.csv sha256" in page


def test_report_without_fits_shows_the_grid_and_says_why(tmp_path: Path) -> None:
    pd.DataFrame({"n_params": [1e6, 2e6], "n_tokens": [1e8, 1e8], "loss": [3.0, 2.9]}).to_csv(
        tmp_path / "runs.csv", index=False
    )
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No law could be fitted" in page and "<h2>The grid</h2>" in page


@pytest.mark.slow
def test_cli_report_bad_path_is_one_line_exit_2(tmp_path: Path) -> None:
    out = harness_cli("report", str(tmp_path / "nope"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "nope").exists()


def _browser_or_skip() -> None:
    ok = shutil.which(CHROMIUM) is not None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        ok = False
    if not ok:
        if os.environ.get("HARNESS_BROWSER") == "1":
            pytest.fail(f"HARNESS_BROWSER=1 but {CHROMIUM} or playwright is missing")
        pytest.skip("needs Debian's chromium and playwright (pip install playwright)")


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser_and_fetches_nothing(
    fitted: Path, tmp_path: Path
) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    report = write_report(fitted, out=tmp_path / "report.html")
    requests, problems = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            text = page.inner_text("body")
            sizes = page.eval_on_selector_all(
                "figure svg", "els => els.map(e => e.getBoundingClientRect().width)"
            )
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [report.as_uri()] and problems == []
    assert "Scaling report: chin" in text and "Extrapolation check" in text
    assert re.search(r"α = 0\.[0-9]+ \[0\.[0-9]+, 0\.[0-9]+\]", text)
    assert "20 runs (20 done)" in text and "Provenance" in text
    assert len(sizes) >= 6 and min(sizes) > 300  # every figure laid out at its width
    import matplotlib.image as mpimg

    shot = mpimg.imread(tmp_path / "report.png")
    assert shot.shape[1] == 1280 and shot.shape[0] > 3000  # the whole page, figures and tables
    assert shot[..., :3].std() > 0.05  # not a blank page
    keep = os.environ.get("HARNESS_KEEP_SCREENSHOT")
    if keep:  # for a person to look at
        shutil.copy(tmp_path / "report.png", keep)
