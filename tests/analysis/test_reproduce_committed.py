"""Every committed results directory reproduces from its CSV, twice: with numpy as it is on this
CPU, and with numpy's SIMD kernels above its baseline switched off (NPY_DISABLE_CPU_FEATURES,
naming only the groups numpy finds here). The two passes run different float code paths on one
machine, as two CPUs would; the committed fits.json files were written on yet another CPU.
A stored value or CSV row edited in a copy must still fail, naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(p.parent.relative_to(ROOT) for p in (ROOT / "results").glob("**/fits.json"))


def _simd_above_baseline() -> list[str]:
    """The dispatchable SIMD groups numpy finds on this CPU (numpy.show_runtime's 'found')."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]


def _start(path: Path, *, baseline: bool, cwd: Path = ROOT) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    if baseline and _simd_above_baseline():
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(_simd_above_baseline())
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "reproduce", str(path), "--no-replot"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _reproduce(path: Path, *, baseline: bool, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return _finish(_start(path, baseline=baseline, cwd=cwd))


def test_every_committed_results_directory_is_covered() -> None:
    # 14 directories under results/ and one nested sample (results/NAME/EXPERIMENT).
    assert len(COMMITTED) >= 15
    assert Path("results/quickstart") in COMMITTED and Path("results/porian2024") in COMMITTED


def test_the_baseline_pass_switches_simd_off() -> None:
    found = _simd_above_baseline()
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(found)}
    code = (
        "from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__;"
        "print([f for f in __cpu_dispatch__ if __cpu_features__.get(f)])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", (found, out.stdout, out.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("path", COMMITTED, ids=[str(p) for p in COMMITTED])
def test_committed_results_reproduce(path: Path) -> None:
    # Both passes at once: each is one single-threaded process, and CI has two cores.
    procs = {baseline: _start(path, baseline=baseline) for baseline in (False, True)}
    done = {baseline: _finish(proc) for baseline, proc in procs.items()}  # both, then judged
    for baseline, out in done.items():
        simd = "simd_baseline" if baseline else "simd_as_found"
        assert out.returncode == 0, simd + "\n" + out.stdout[-3000:] + out.stderr[-2000:]
        assert "reproduce: OK" in out.stdout and " 0 differ" in out.stdout, simd


@pytest.fixture()
def quickstart_copy(tmp_path: Path) -> Path:
    d = tmp_path / "quickstart"
    shutil.copytree(ROOT / "results" / "quickstart", d, ignore=shutil.ignore_patterns("runs"))
    return d


@pytest.mark.slow
def test_an_edited_stored_value_fails_naming_it(quickstart_copy: Path) -> None:
    fj = quickstart_copy / "fits.json"
    doc = json.loads(fj.read_text())
    # A law the data determine (an undetermined law's values are compared as undetermined).
    doc["fits"]["chinchilla"]["params"]["alpha"] *= 1.01
    fj.write_text(json.dumps(doc))
    out = _reproduce(quickstart_copy, baseline=False, cwd=quickstart_copy.parent)
    assert out.returncode == 1
    assert "fits.chinchilla.params.alpha" in out.stdout and "1 differ" in out.stdout


@pytest.mark.slow
def test_an_edited_csv_row_fails(quickstart_copy: Path) -> None:
    csv = quickstart_copy / "runs.csv"
    lines = csv.read_text().splitlines()
    head, row = lines[0].split(","), lines[-1].split(",")
    i = head.index("loss")
    row[i] = repr(float(row[i]) * 0.95)  # the largest run 5% better
    lines[-1] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n")
    out = _reproduce(quickstart_copy, baseline=False, cwd=quickstart_copy.parent)
    assert out.returncode == 1
    assert "input.sha256" in out.stdout and "fits.chinchilla.params.alpha" in out.stdout
