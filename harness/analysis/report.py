"""`harness report PATH`: one self-contained HTML page of an experiment's results.

The page holds everything a reader needs and fetches nothing: the figures inline as SVG (drawn
afresh from fits.json and its bootstrap samples, `drawing.plot_path`), the grid as a table, each
law with its formula, parameters, 95% intervals and warnings, the held-out extrapolation check,
the compute-optimal table, and where the numbers came from (provenance). Styles are inline; there
is no script. Like the figures, it is made from runs.csv and fits.json alone, so it can be
re-made on any machine.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.common import fmt, read_fits_json
from harness.analysis.extrapolation import EXTRAPOLATION_DECADES_MAX
from harness.analysis.io import load_runs, resolve_csv, sha256_of
from harness.analysis.laws import flops
from harness.atomic import atomic_write_text
from harness.errors import InputError
from harness.units import si

__all__ = ["FORMULAS", "REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"

FORMULAS = {
    "chinchilla": "L(N, D) = E + A / N<sup>α</sup> + B / D<sup>β</sup> "
    "(Hoffmann et al. 2022, eq. 2)",
    "kaplan": "L(N, D) = [(N<sub>c</sub> / N)<sup>α<sub>N</sub> / α<sub>D</sub></sup> + "
    "D<sub>c</sub> / D]<sup>α<sub>D</sub></sup> (Kaplan et al. 2020, eq. 1.5)",
    "power_law_n": "L(N) = E + A / N<sup>α</sup> (at the largest D)",
    "power_law_d": "L(D) = E + A / D<sup>α</sup> (at the largest N)",
    "power_law_c": "L(C) = E + A / C<sup>α</sup> (the compute envelope)",
    "compute_optimal": "N<sub>opt</sub> = G (C/6)<sup>a</sup>, D<sub>opt</sub> = G<sup>-1</sup> "
    "(C/6)<sup>b</sup>, a = β/(α+β), b = α/(α+β) (Hoffmann et al. 2022, eq. 4)",
    "isoflop": "N<sub>opt</sub>(C) ∝ C<sup>a</sup>, D<sub>opt</sub>(C) ∝ C<sup>b</sup> from the "
    "minimum of each isoFLOP profile (Hoffmann et al. 2022, approach 2)",
    "approach1": "N<sub>opt</sub>(C) ∝ C<sup>a</sup> from the lowest loss reached at each compute "
    "(Hoffmann et al. 2022, approach 1)",
    "heldout": "the Chinchilla law fitted on the runs at or below a compute quantile, predicting "
    "the larger ones (Choshen et al. 2024)",
    "anneal_curve": "L(s) = L<sub>0</sub> + A S<sub>1</sub><sup>-α</sup> - C S<sub>2</sub>, "
    "S<sub>1</sub> the sum of the learning rates so far, S<sub>2</sub> the annealing area with "
    "momentum λ, one law per model size fitted to its runs' validation curves (Tissue et al. "
    "2024, eq. 1)",
    "multi_power_curve": "L(t) = L<sub>0</sub> + A (S<sub>1</sub> + S<sub>W</sub>)<sup>-α</sup> "
    "- B Σ<sub>k≤t</sub> (η<sub>k-1</sub> - η<sub>k</sub>) [1 - (C η<sub>k</sub><sup>-γ</sup> "
    "S<sub>k</sub>(t) + 1)<sup>-β</sup>], S<sub>k</sub>(t) the sum of the rates since update k, "
    "one law per model size fitted to its runs' validation curves (Luo et al. 2025, eq. 4)",
}
"""How each law of fits.json reads, as HTML; laws without an entry show their parameters only."""

_GREEK = {"alpha": "α", "beta": "β", "alpha_N": "α<sub>N</sub>", "alpha_D": "α<sub>D</sub>"}
TABLE_ROWS_MAX = 500
"""Runs listed in the grid's table at most (evenly spaced); runs.csv holds them all."""
_GRID_COLUMNS = [
    ("run_id", "run"),
    ("n_params", "N"),
    ("n_tokens", "D"),
    ("flops", "C = 6ND (FLOP)"),
    ("loss", "val. loss"),
    ("val_bpb", "bits/byte"),
    ("train_loss", "train loss"),
    ("status", "status"),
    ("wall_s", "wall (s)"),
]
_FIGURE_ORDER = ["loss_vs_n", "loss_vs_d", "contour", "extrapolation", "residuals", "optimal"]
_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
  max-width: 1180px; margin: 24px auto; padding: 0 18px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 30px;
  border-bottom: 1px solid #ddd; padding-bottom: 3px; } h3 { font-size: 16px; margin: 18px 0 4px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 4px 10px; margin: 4px 0; }
.bad { background: #fdeaea; border-left: 4px solid #c62828; padding: 4px 10px; margin: 4px 0; }
.muted { color: #666; } .formula { font-family: Georgia, serif; font-size: 15px; }
figure { display: inline-block; margin: 8px 10px 8px 0; vertical-align: top; }
figure svg { width: 560px; height: auto; } figcaption { color: #555; font-size: 12px; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def write_report(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    figures: Sequence[Path] | None = None,
) -> Path:
    """Write the experiment's HTML report (``<csv dir>/report.html`` or `out`) atomically.

    Parameters
    ----------
    path : path-like
        runs.csv, another CSV, or a directory holding runs.csv.
    out : path-like, optional
        The HTML file to write.
    figures : sequence of pathlib.Path, optional
        The figures `plot_path` has just drawn for this CSV (`harness run`); without them the
        page draws its own, in a scratch folder, from fits.json as it is now.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        Bad input (as `harness plot` raises it).
    """
    from harness.analysis.drawing import plot_path
    from harness.analysis.fitting import fits_dict

    csv = resolve_csv(path)
    target = Path(out) if out is not None else csv.parent / REPORT_NAME
    fj = csv.parent / "fits.json"
    doc: dict[str, Any] = {}
    note = ""
    if fj.is_file():
        doc = read_fits_json(fj)
        if doc.get("input", {}).get("sha256") not in (None, sha256_of(csv)):
            note = f"{fj.name} was fitted on another version of {csv.name}: run `harness fit`."
    else:
        try:
            doc = fits_dict(csv, n_bootstrap=0)
            note = f"No {fj.name}: fitted here without a bootstrap, so without intervals."
        except InputError as e:
            note = f"No law could be fitted: {e}"
    # The runs the fit read (a stored --where selects them), so that the page describes them.
    where = doc.get("settings", {}).get("where")
    df = load_runs(csv, where=where if isinstance(where, str) else None)
    if where:
        note = (note + " " if note else "") + f"Fitted on the runs --where {where!r} selects."
    if figures is not None:
        svgs = _svgs(figures)
    else:
        with tempfile.TemporaryDirectory(prefix=".report.") as tmp:
            svgs = _svgs(plot_path(csv, out_dir=tmp))
    page = _page(df, doc, svgs, csv, note)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, page)


def _svgs(figures: Sequence[Path]) -> dict[str, str]:
    """{figure name: its SVG as an element of the page} of the .svg files among `figures`."""
    return {
        f.stem: _inline_svg(f.read_text(encoding="utf-8"), f.stem)
        for f in figures
        if f.suffix == ".svg"
    }


def _inline_svg(text: str, stem: str) -> str:
    """An SVG file as an element of the page: no XML prolog, and its ids prefixed with the
    figure's name, so that two figures' clip paths and markers never share an id."""
    text = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", "", text)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S).strip()  # RDF: no figure
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", stem) + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    return re.sub(r"#([A-Za-z0-9_-]+)", lambda m: f"#{prefix}{m.group(1)}" if m.group(1) in ids
                  else m.group(0), text)  # fmt: skip


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return _e(fmt(x)) if isinstance(x, (int, float, np.floating, np.integer)) else _e(x)


def _interval(ci: Any) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _param_name(k: str) -> str:
    return _GREEK.get(k, _e(k).replace("_c", "<sub>c</sub>"))


def _table(head: list[str], rows: list[list[str]], left: int = 0) -> str:
    """An HTML table; the first `left` columns are left-aligned (cells are HTML already)."""

    def cell(tag: str, i: int, v: str) -> str:
        return f'<{tag} class="l">{v}</{tag}>' if i < left else f"<{tag}>{v}</{tag}>"

    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>")
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def _warnings(block: Mapping[str, Any]) -> list[str]:
    """What makes a law's numbers less than they seem, one line each."""
    out = []
    if block.get("converged") is False:
        out.append(f"<div class='bad'>not converged: {_e(block.get('message', ''))}</div>")
    if block.get("on_grid_edge"):
        edge = ", ".join(block.get("edge_params", []))
        out.append(
            f"<div class='warn'>on the edge of the start grid ({_e(edge)}): the optimum may lie "
            "beyond it; read these parameters with care</div>"
        )
    if block.get("determined") is False:
        out.append(
            "<div class='bad'>not determined by these data: "
            f"{_e(block.get('undetermined_reason', ''))}</div>"
        )
    und = block.get("undetermined") or {}
    if isinstance(und, list):  # older data-constrained blocks: names only
        und = dict.fromkeys(und, "no run's prediction depends on it")
    for k, why in und.items():
        out.append(f"<div class='warn'>{_param_name(k)} undetermined: {_e(why)}</div>")
    failed, n = block.get("n_bootstrap_failed"), block.get("n_bootstrap")
    if failed and n and failed / n > 0.1 and block.get("determined") is not False:
        out.append(
            f"<div class='warn'>{failed} of {n} bootstrap fits failed (left out of the "
            "intervals)</div>"
        )
    return out


def _law_section(name: str, block: Mapping[str, Any]) -> str:
    if "skipped" in block:
        return f"<h3>{_e(name)}</h3><p class='muted'>skipped: {_e(block['skipped'])}</p>"
    parts = [f"<h3>{_e(name)}</h3>"]
    if name in FORMULAS:
        parts.append(f"<p class='formula'>{FORMULAS[name]}</p>")
    if block.get("data"):
        parts.append(f"<p class='muted'>fitted on: {_e(block['data'])}</p>")
    params = block.get("params")
    if isinstance(params, Mapping) and name != "heldout":
        ci = block.get("ci95", {})
        rows = [[_param_name(k), _num(v), _interval(ci.get(k))] for k, v in params.items()]
        for k in ("a", "b", "G"):  # the compute-optimal exponents
            if k in block and k not in params:
                rows.append([_e(k), _num(block[k]), _interval(ci.get(k))])
        parts.append(_table(["parameter", "value", "95% interval"], rows, left=1))
    elif isinstance(block.get("sizes"), Mapping):  # a law per model size (anneal_curve)
        rows = []
        for label in sorted(block["sizes"], key=lambda k: float(k) if _is_number(k) else 0.0):
            b = block["sizes"][label]
            if not isinstance(b, Mapping) or "params" not in b:
                why = b.get("skipped", "") if isinstance(b, Mapping) else ""
                rows.append([_e(si(float(label)) if _is_number(label) else label),
                             f"skipped: {_e(why)}", "", "", "", "", ""])  # fmt: skip
                continue
            ci = b.get("ci95", {}) if b.get("determined") is not False else {}
            cells = [f"{_num(b['params'].get(k))} {_interval(ci.get(k))}"
                     for k in ("L0", "A", "alpha", "C")]  # fmt: skip
            rows.append([_e(si(float(label))), _num(b.get("decay")), *cells,
                         f"{len(b.get('runs', []))} runs, {b.get('n_points')} points"])  # fmt: skip
        parts.append(_table(["N", "λ", "L<sub>0</sub>", "A", "α", "C", "fitted on"], rows, left=1))
        for label, b in block["sizes"].items():
            warned = _warnings(b) if isinstance(b, Mapping) and "params" in b else []
            if warned:
                parts += [f"<p class='muted'>N = {_e(label)}:</p>", *warned]
    elif name in ("isoflop", "approach1", "compute_optimal"):
        ci = block.get("ci95", {})
        rows = [[_e(k), _num(block.get(k)), _interval(ci.get(k))] for k in ("a", "b", "G")
                if k in block]  # fmt: skip
        parts.append(_table(["parameter", "value", "95% interval"], rows, left=1))
    parts += _warnings(block)
    return "\n".join(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _heldout_section(block: Mapping[str, Any] | None, svgs: Mapping[str, str]) -> str:
    if not block or "skipped" in block:
        why = block["skipped"] if block else "no held-out check in fits.json"
        return f"<h2>Extrapolation check</h2><p class='muted'>{_e(why)}</p>"
    parts = [
        "<h2>Extrapolation check</h2>",
        f"<p>{FORMULAS['heldout']}: fitted on the {block['n_train']} runs with C ≤ "
        f"{_e(si(block['flops_threshold']))}FLOP (quantile {block['quantile']}), predicting the "
        f"{block['n_test']} larger ones. Mean absolute relative error "
        f"<b>{100 * block['are_mean']:.2g}%</b>, median {100 * block['are_median']:.2g}%, "
        f"max {100 * block['are_max']:.2g}%.</p>",
    ]
    rows = []
    pts = block.get("points", [])
    cis = [block.get("ci95", {}).get(f"predicted_{i}", [None, None]) for i in range(len(pts))]
    for p, ci in zip(pts, cis, strict=True):
        lo, hi = ci
        inside = "–" if lo is None else ("yes" if lo <= p["loss"] <= hi else "<b>no</b>")
        size = [_e(si(p[k])) for k in ("n_params", "n_tokens", "flops")]
        rows.append([*size, _num(p["loss"]), _num(p["predicted"]), _interval(ci), inside])
    if rows:
        parts.append(
            _table(["N", "D", "C", "observed", "predicted", "95% interval", "inside"], rows)
        )
    if "extrapolation" in svgs:
        parts.append(_figure("extrapolation", svgs["extrapolation"]))
    return "\n".join(parts)


def _compute_optimal_section(block: Mapping[str, Any] | None) -> str:
    if not block or "skipped" in block or "n_opt" not in block:
        why = block.get("skipped", "") if block else "no compute_optimal block in fits.json"
        return f"<h2>Compute-optimal allocation</h2><p class='muted'>{_e(why)}</p>"
    und = block.get("undetermined") or {}
    if block.get("determined") is False or "tokens_per_param" in und:
        why = block.get("undetermined_reason") or und.get("tokens_per_param", "")
        return (
            "<h2>Compute-optimal allocation</h2><div class='bad'>not determined by these data: "
            f"{_e(why)}; no allocation is given</div>"
        )
    ci = block.get("ci95", {})
    ext = block.get("extrapolation_decades", {})
    rows = []
    for c in sorted(block["n_opt"], key=float):
        budget = _e(f"{float(c):.3g}".replace("e+", "e"))  # 1e21, as budgets are written
        opt = [_e(si(block[k][c])) for k in ("n_opt", "d_opt")]
        tpp = [_num(block["tokens_per_param"][c]), _interval(ci.get("tokens_per_param", {}).get(c))]
        d = ext.get(c)
        far = (
            "–"
            if d is None
            else f"{d:.1f}" + (" <b>EXTRAPOLATED</b>" if d > EXTRAPOLATION_DECADES_MAX else "")
        )
        rows.append([budget, *opt, *tpp, far])
    return "\n".join([
        "<h2>Compute-optimal allocation</h2>",
        f"<p class='formula'>{FORMULAS['compute_optimal']}</p>",
        f"<p>a = {_num(block['a'])} {_interval(ci.get('a'))}, b = {_num(block['b'])} "
        f"{_interval(ci.get('b'))} <span class='muted'>({_e(block.get('source', ''))})</span></p>",
        _table(["compute C (FLOP)", "N_opt", "D_opt", "tokens per parameter", "95% interval",
                "decades of compute beyond the runs"], rows),
        *_warnings(block),
    ])  # fmt: skip


def _grid_section(df: pd.DataFrame, svgs: Mapping[str, str]) -> str:
    df = df.copy()
    if "flops" not in df:
        df["flops"] = flops(df["n_params"], df["n_tokens"])
    cols = [(c, h) for c, h in _GRID_COLUMNS if c in df.columns]
    df = df.sort_values(["n_params", "n_tokens"])
    n_runs = len(df)
    if n_runs > TABLE_ROWS_MAX:  # a page of 100,000 rows helps no one; runs.csv holds them
        df = df.iloc[np.linspace(0, n_runs - 1, TABLE_ROWS_MAX).round().astype(int)]
    rows = []
    for _, r in df.iterrows():
        row = []
        for c, _h in cols:
            v = r[c]
            if c in ("n_params", "n_tokens", "flops"):
                row.append(_e(si(v)))
            elif c in ("run_id", "status"):
                row.append(f"<code>{_e(v)}</code>" if c == "run_id" else _e(v))
            else:
                row.append(_num(float(v)) if pd.notna(v) else "–")
        rows.append(row)
    parts = ["<h2>The grid</h2>"]
    if n_runs > len(df):
        parts.append(
            f"<p class='muted'>{len(df)} of the {n_runs} runs, evenly spaced in the order of N "
            "then D (runs.csv holds them all).</p>"
        )
    parts += [_table([h for _, h in cols], rows, left=1 if cols[0][0] ==
                                          "run_id" else 0)]  # fmt: skip
    if "loss_grid" in svgs:
        parts.append(_figure("loss_grid", svgs["loss_grid"]))
    return "\n".join(parts)


def _figure(stem: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(stem)}</figcaption></figure>"


def _provenance(df: pd.DataFrame, doc: Mapping[str, Any], csv: Path) -> str:
    import matplotlib
    import scipy

    from harness import __version__

    def distinct(col: str) -> str:
        if col not in df.columns:
            return "–"
        vals = sorted({str(v) for v in df[col].dropna()})
        return ", ".join(vals) if vals else "–"

    specs = sorted((csv.parent / "runs").glob("*/spec.json"))
    settings = _sha256_text("".join(p.read_text(encoding="utf-8") for p in specs)) if specs else "–"
    rows = [
        ["experiment", _e(distinct("experiment"))],
        ["runs.csv sha256", f"<code>{_e(sha256_of(csv))}</code>"],
        ["settings hash (sha256 of the runs' spec.json)", f"<code>{_e(settings)}</code>"],
        ["N counts", _e(
            "all parameters (with embeddings)"
            if doc.get("settings", {}).get("n_convention") == "total"
            else "non-embedding parameters"
        )],
        ["fit settings", f"<code>{_e(json.dumps(doc.get('settings', {}), sort_keys=True))}</code>"],
        ["trained with git sha", _e(distinct("git_sha"))],
        ["trained with harness version", _e(distinct("harness_version"))],
        ["trained on", _e(distinct("device"))],
        ["report made with", _e(
            f"harness {__version__}, python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}, pandas {pd.__version__}, matplotlib "
            f"{matplotlib.__version__}")],
        ["report made on", _e(f"{platform.system()} {platform.machine()} "
                              f"({platform.processor() or 'unknown CPU'})")],
    ]  # fmt: skip
    return "<h2>Provenance</h2>" + _table([], rows, left=2)


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _headline(df: pd.DataFrame, fits: Mapping[str, Any]) -> str:
    parts = []
    n, d = df["n_params"], df["n_tokens"]
    c = flops(n, d)
    status = df["status"].value_counts().to_dict() if "status" in df else {"done": len(df)}
    parts.append(
        f"<p>{len(df)} runs ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}): "
        f"N from {_e(si(n.min()))} to {_e(si(n.max()))}, D from {_e(si(d.min()))} to "
        f"{_e(si(d.max()))}, compute from {_e(si(c.min()))}FLOP to {_e(si(c.max()))}FLOP.</p>"
    )
    ch = fits.get("chinchilla")
    if ch and "params" in ch:
        # An undetermined law's intervals come from the few resamples that did not fail: none.
        p, ci = ch["params"], ch.get("ci95", {}) if ch.get("determined") is not False else {}
        parts.append(
            f"<p class='formula'>L(N, D) = {_num(p['E'])} + {_num(p['A'])} / N<sup>"
            f"{p['alpha']:.3f}</sup> + {_num(p['B'])} / D<sup>{p['beta']:.3f}</sup></p>"
            f"<p>α = {p['alpha']:.3f} {_interval(ci.get('alpha'))}, β = {p['beta']:.3f} "
            f"{_interval(ci.get('beta'))} "
            + (
                "(95% bootstrap intervals)</p>"
                if ch.get("determined") is not False
                else "(<b>not determined by these data</b>: no interval)</p>"
            )
        )
    return "\n".join(parts)


def _tasks_section(obj: Mapping[str, Any], svgs: Mapping[str, str]) -> str:
    """Each task's chain: its step-2 form and parameters, and its accuracy at the target."""
    parts = ["<h2>Task accuracy</h2>"]
    if "skipped" in obj:
        return parts[0] + f"<p class='muted'>{_e(obj['skipped'])}</p>"
    tgt = obj.get("target", {})
    parts.append(
        "<p>Per task of tasks.csv: step 1, a loss L(N, D) (the task's bits per byte, or the "
        "validation loss); step 2, accuracy from it (Bhagia et al. 2024's sigmoid with the ideal "
        "point, or Gadre et al. 2024's exponential, chosen by the largest model's held-out "
        f"error); predicted at N = {_e(si(tgt.get('n_params', 0)))}, D = "
        f"{_e(si(tgt.get('n_tokens', 0)))} ({_e(tgt.get('why', ''))}), with the 95% interval of "
        "the chain's paired bootstrap samples.</p>"
    )
    rows = []
    for task, b in obj.get("tasks", {}).items():
        if "skipped" in b:
            rows.append([_e(task), "–", f"<span class='muted'>skipped: {_e(b['skipped'])}</span>",
                         "–", "–"])  # fmt: skip
            continue
        s2, pr = b["step2"], b["prediction"]
        und = pr.get("determined") is False
        params = ", ".join(f"{_e(k)} = {_num(v)}" for k, v in s2["params"].items())
        interval = "<b>not determined</b>" if und else _interval(pr.get("ci95", {}).get("accuracy"))
        acc = _num(pr["params"]["accuracy"])
        rows.append([_e(task), _e(b["step1"]["source"].split(":")[0]),
                     f"{_e(s2['form'])}: {params}", acc, interval])  # fmt: skip
    parts.append(_table(["task", "step 1", "step 2", "accuracy", "95% interval"], rows, left=3))
    parts += [_figure(k, svgs[k]) for k in sorted(svgs) if k.startswith("task_")]
    return "\n".join(parts)


def _page(
    df: pd.DataFrame, doc: Mapping[str, Any], svgs: Mapping[str, str], csv: Path, note: str
) -> str:
    name = ", ".join(sorted({str(v) for v in df["experiment"].dropna()})) if "experiment" in df \
        else csv.parent.name  # fmt: skip
    body = [f"<h1>Scaling report: {_e(name)}</h1>",
            f"<p class='muted'>from <code>{_e(csv.name)}</code> and fits.json</p>"]  # fmt: skip
    if note:
        body.append(f"<div class='warn'>{_e(note)}</div>")
    groups = doc.get("groups")
    blocks = [("", doc.get("fits", {}))] if not groups else [
        (", ".join(f"{k}={v}" for k, v in g["key"].items()), g["fits"]) for g in groups
    ]  # fmt: skip
    body.append(_headline(df, blocks[0][1] if len(blocks) == 1 else {}))
    holders = [(label, g) for (label, _), g in zip(blocks, groups or [doc], strict=True)]
    for label, sub in ((label, g["subsample"]) for label, g in holders if "subsample" in g):
        body.append(
            f"<div class='warn'>{_e(label + ': ' if label else '')}The laws are fitted on "
            f"{sub['fitted']} of {sub['rows']} runs ({_e(sub['method'])}; "
            f"<code>--max-rows</code>); their intervals are those of {sub['fitted']} runs, and "
            "the figures draw those runs.</div>"
        )
    shown = {"loss_grid", "extrapolation"}
    main = [s for s in _FIGURE_ORDER if s in svgs]
    if main:
        body.append("<h2>Figures</h2>" + "".join(_figure(s, svgs[s]) for s in main))
        shown |= set(main)
    body.append(_grid_section(df, svgs))
    for label, fits in blocks:
        if label:
            body.append(f"<h2>Group {_e(label)}</h2>")
        body.append(_heldout_section(fits.get("heldout"), svgs if not label else {}))
        body.append(_compute_optimal_section(fits.get("compute_optimal")))
        body.append("<h2>Fitted laws</h2>")
        body += [
            _law_section(k, b) for k, b in fits.items() if k not in ("heldout", "compute_optimal")
        ]
    if isinstance(doc.get("tasks"), Mapping):
        body.append(_tasks_section(doc["tasks"], svgs))
        shown |= {s for s in svgs if s.startswith("task_")}
    rest = [s for s in sorted(svgs) if s not in shown]
    if rest:
        body.append("<h2>More figures</h2>" + "".join(_figure(s, svgs[s]) for s in rest))
    body.append(_provenance(df, doc, csv))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Scaling report: {_e(name)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
