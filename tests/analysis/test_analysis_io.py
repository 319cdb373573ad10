"""load_runs: the happy path, column maps, status filtering, and one-line error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.io import load_runs, parse_column_map
from harness.errors import InputError

GOOD = """run_id,n_params,n_tokens,loss,status
a,1e6,1e8,3.5,done
b,2e6,1e8,3.4,done
c,4e6,2e8,,failed
d,4e6,4e8,3.1,diverged
e,8e6,4e8,3.0,done
"""


def _write(tmp_path: Path, text: str, name: str = "runs.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_directory_drops_and_counts_not_done(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    df = load_runs(tmp_path)
    assert list(df["run_id"]) == ["a", "b", "e"]
    assert df.attrs["n_excluded"] == 2
    assert list(df["line"]) == [2, 3, 6]
    assert df["n_params"].dtype == float


def test_column_map(tmp_path: Path) -> None:
    p = _write(tmp_path, "N,D,L\n1e6,1e8,3.5\n2e6,2e8,3.3\n", "mine.csv")
    df = load_runs(p, parse_column_map("n_params=N,n_tokens=D,loss=L"))
    assert list(df["n_params"]) == [1e6, 2e6]
    assert df.attrs["n_excluded"] == 0


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("n_params,loss\n1,2\n", r"runs.csv: missing column\(s\) n_tokens; found n_params, loss"),
        (
            "n_params,n_tokens,loss\n1e6,1e8,3\n1e6,2e8,nan\n",
            r"column 'loss' has NaN/inf value\(s\) nan at line 3; accepted: finite numbers > 0",
        ),
        (
            "n_params,n_tokens,loss\n1e6,1e8,3\n1e6,inf,3\n",
            r"column 'n_tokens' has NaN/inf value\(s\) inf at line 3",
        ),
        (
            "n_params,n_tokens,loss\n0,1e8,3\n-5,2e8,3\n1e6,1e8,3\n",
            r"column 'n_params' has non-positive value\(s\) 0.0, -5.0 at lines 2, 3",
        ),
        (
            "n_params,n_tokens,loss\n1e6,1e8,abc\n1e6,1e8,3\n",
            r"column 'loss' has non-numeric value\(s\) 'abc' at line 2",
        ),
        (
            "n_params,n_tokens,loss,status\n1e6,1e8,3,done\n1e6,1e8,3,failed\n",
            r"1 usable row\(s\) \(1 excluded by status\); accepted: at least 2 runs",
        ),
        ('n_params,n_tokens,loss\n1,2,3\n"4,5,6\n', r"runs.csv: cannot parse as CSV"),
        ("", r"runs.csv: the file is empty"),
        (
            "run_id,n_params,n_tokens,loss\na,1e6,1e8,3\nb,2e6,1e8,3\na,1e6,1e8,3\n",
            r"run_id 'a' appears on lines 2, 4; accepted: each run once",
        ),
        # A bad setting column would regroup the runs silently (isoFLOP budgets, sweeps).
        (
            "n_params,n_tokens,loss,flops_budget\n1e6,1e8,3,1e15\n2e6,5e7,3,inf\n",
            r"column 'flops_budget' has bad value\(s\) inf at line 3; accepted: blank or a finite "
            r"number > 0 in rows with status 'done'",
        ),
        (
            "n_params,n_tokens,loss,lr\n1e6,1e8,3,1e-3\n2e6,5e7,3,abc\n1e6,1e8,3,-1\n",
            r"column 'lr' has bad value\(s\) 'abc', '-1' at lines 3, 4",
        ),
        (
            "n_params,n_tokens,loss,batch_tokens\n1e6,1e8,3,0\n2e6,5e7,3,64\n",
            r"column 'batch_tokens' has bad value\(s\) 0.0 at line 2",
        ),
    ],
)
def test_bad_input_one_line(tmp_path: Path, text: str, pattern: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(InputError, match=pattern) as info:
        load_runs(tmp_path / "runs.csv")
    assert "\n" not in str(info.value)
    assert str(tmp_path / "runs.csv") in str(info.value)


def test_setting_columns_may_be_blank(tmp_path: Path) -> None:
    # points runs beside an isoFLOP grid have no budget; a failed run has no lr.
    _write(
        tmp_path,
        "n_params,n_tokens,loss,status,flops_budget,lr\n"
        "1e6,1e8,3,done,6e14,1e-3\n2e6,5e7,3,done,,1e-3\n3e6,1e7,,failed,,\n",
    )
    assert len(load_runs(tmp_path)) == 2


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("n_params=N,flops_budet=C", r"--columns: unknown name 'flops_budet' in 'flops_budet=C'"),
        ("n_params=N,n_tokens=N", r"--columns: 'n_tokens=N' maps a name or column a second time"),
        ("n_params=N,n_params=M", r"--columns: 'n_params=M' maps a name or column a second time"),
        ("n_params", r"--columns: bad item 'n_params'; accepted: NAME=COLUMN"),
    ],
)
def test_column_map_refuses_bad_specs(spec: str, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        parse_column_map(spec)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file; accepted: a CSV file or a directory"):
        load_runs(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no runs.csv in this directory"):
        load_runs(tmp_path)


def test_column_map_names_missing_column(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    with pytest.raises(InputError, match=r"--columns names column\(s\) 'NP' that the file lacks"):
        load_runs(tmp_path, {"n_params": "NP"})
    with pytest.raises(InputError, match="--columns: bad item 'n_params'"):
        parse_column_map("n_params")


def test_run_id_stays_text(tmp_path: Path) -> None:
    # run_id names runs/<run_id>/: "0123" and "1e5" must not be read as numbers.
    _write(tmp_path, "run_id,n_params,n_tokens,loss\n0123,1e6,1e8,3.5\n1e5,2e6,1e8,3.4\n")
    assert list(load_runs(tmp_path)["run_id"]) == ["0123", "1e5"]
