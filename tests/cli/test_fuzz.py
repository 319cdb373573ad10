"""Fuzz every command with malformed input: it exits 0, 1 or 2, never with a traceback, and a
failing command never changes a committed result.

A seeded generator mutates real inputs: the quickstart TOML (byte flips, insertions, deletions,
truncations), single settings (wrong types, unknown keys, extreme values, unicode), a valid
runs.csv (missing columns, NaN, text in numeric columns, empty, binary garbage) and run
directories (truncated or garbage spec.json, result.json, metrics.csv). Each case goes through
the real entry point, `harness.cli.main(argv)`, in this process; a few go through a subprocess.

`run` must not train: the corpus preparation that precedes the first run is replaced by a
sentinel, so a mutated experiment that happens to be valid stops there (exit 0 for this test).
`submit` is fuzzed with --dry-run only, which validates and prints the sbatch script without
calling sbatch.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "experiments" / "quickstart.toml").read_bytes()
SEED = 20261128


class _ReachedTraining(Exception):
    """Raised instead of preparing the corpus: the experiment was valid up to training."""


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.data

    def stop(*args: object, **kwargs: object) -> None:
        raise _ReachedTraining

    monkeypatch.setattr(harness.data, "prepare_corpus", stop)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `harness ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 2
    except _ReachedTraining:
        code = 0
    except Exception:  # noqa: BLE001 - a crash: report it like the CLI would have shown it
        import traceback

        code = 99
        print(traceback.format_exc(), file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def _check(argv: list[str], code: int, err: str, case: str) -> None:
    where = f"{case}: harness {' '.join(a[:80] for a in argv)!r}"
    assert code in (0, 1, 2), f"{where}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{where}:\n{err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), f"{where}: stderr {err!r}"


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        name: (root / name).read_bytes() if (root / name).exists() else None
        for name in ("runs.csv", "fits.json")
    }


# --- mutations ----------------------------------------------------------------------------------

EXTREME = [
    "1e300",
    "-1e300",
    "-1",
    "0",
    "0.0",
    "-0.0",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "9999999999999999999999",
    '""',
    '"\u00e9\u2603\U0001f600"',
    '"\\u0000"',
    "true",
    "[]",
    "[[]]",
    "{}",
    "{a = 1}",
    '[1, "x"]',
    "[" + ", ".join(["1e9"] * 2000) + "]",
    '"' + "x" * 5000 + '"',
    '"../../etc"',
    '"/dev/null"',
    "1979-05-27",
]
FIELDS = {
    "model": ["arch", "aspect_ratio", "head_dim", "tie_embeddings"],
    "data": [
        "corpus",
        "tokenizer",
        "bpe_vocab_size",
        "seq_len",
        "val_fraction",
        "val_block_bytes",
        "eval_tokens",
    ],
    "train": [
        "batch_size",
        "lr",
        "lr_ref_width",
        "lr_width_exponent",
        "warmup_fraction",
        "min_lr_ratio",
        "weight_decay",
        "beta1",
        "beta2",
        "grad_clip",
        "evals_per_run",
        "precision",
        "checkpoint_every_steps",
        "checkpoint_keep",
    ],
    "grid": ["n_params", "shapes", "n_tokens", "seeds"],
    "execution": [
        "device",
        "threads",
        "progress",
        "checkpoint_every_s",
        "diverge_factor",
        "diverge_patience",
        "diverge_retries",
        "diverge_lr_factor",
    ],
    "cluster": [
        "partition",
        "time_min",
        "gpus_per_run",
        "mem_gb",
        "extra",
        "by_size",
        "max_parallel",
        "setup",
    ],
}


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.choice(["flip", "insert", "delete", "truncate", "splice"])
    for _ in range(rng.randint(1, 8) if kind != "truncate" else 1):
        if not b:
            break
        i = rng.randrange(len(b))
        if kind == "flip":
            b[i] = rng.randrange(256)
        elif kind == "insert":
            b[i:i] = bytes(
                rng.choice(
                    [
                        b"[",
                        b"]",
                        b"=",
                        b'"',
                        b"\n",
                        b",",
                        b"{",
                        b"\xff",
                        b"0",
                        b"-",
                        b".",
                        b"#",
                        b"e9",
                    ]
                )
            )
        elif kind == "delete":
            del b[i : i + rng.randint(1, 10)]
        elif kind == "truncate":
            del b[i:]
        else:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 30)]
    return bytes(b)


def _override(rng: random.Random) -> str:
    section = rng.choice([*FIELDS, "nope", "train.lr"])
    fields = FIELDS.get(section, ["x"])
    name = rng.choice([*fields, "unknown_key", "", "\u00e9"]) if rng.random() < 0.9 else "a.b.c"
    return f"--{section}.{name}={rng.choice(EXTREME)}"


# --- experiments: run and submit ---------------------------------------------------------------


@pytest.mark.usefixtures("no_training")
def test_fuzz_experiments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    results = tmp_path / "results"
    codes: dict[int, int] = {}
    for i in range(260):
        exp = tmp_path / f"fz{i % 7}.toml"
        if i % 3 == 0:
            exp.write_bytes(QUICKSTART)
            overrides = [_override(rng) for _ in range(rng.randint(1, 3))]
        else:
            exp.write_bytes(_mutate_bytes(rng, QUICKSTART))
            overrides = []
        command = "submit" if i % 5 == 4 else "run"
        argv = [command, str(exp), *overrides, f"--execution.results_dir={results}"]
        if command == "submit":
            argv.append("--dry-run")
        code, _, err = _cli(argv, capsys)
        _check(argv, code, err, f"experiment case {i}")
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(2, 0) > 100 and codes.get(0, 0) > 5, codes  # both kinds were exercised


# --- runs.csv: fit, plot, reproduce -------------------------------------------------------------


def _valid_runs_csv() -> str:
    """A small Chinchilla-shaped grid: L = E + A/N^a + B/D^b, 4 sizes x 4 budgets."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["n_params", "n_tokens", "loss", "status", "run_id", "seed"])
    k = 0
    for n in (1e4, 3e4, 1e5, 3e5):
        for d in (5e4, 1.5e5, 5e5, 1.5e6):
            loss = 1.7 + 400 / n**0.34 + 410 / d**0.28
            w.writerow([int(n), int(d), round(loss, 6), "done", f"r{k:02d}", 0])
            k += 1
    return buf.getvalue()


def _mutate_csv(rng: random.Random, text: str) -> bytes:
    rows = list(csv.reader(io.StringIO(text)))
    kind = rng.choice(
        [
            "drop_column",
            "nan",
            "text",
            "empty",
            "garbage",
            "bytes",
            "header_only",
            "ragged",
            "negative",
            "inf",
            "duplicate_header",
            "status",
            "one_row",
        ]
    )
    if kind == "drop_column":
        j = rng.randrange(3)
        rows = [r[:j] + r[j + 1 :] for r in rows]
    elif kind in ("nan", "text", "negative", "inf"):
        for _ in range(rng.randint(1, 5)):
            r, c = rng.randrange(1, len(rows)), rng.randrange(3)
            rows[r][c] = {
                "nan": "nan",
                "text": rng.choice(["abc", "1,5", "\u00e9", "1e", " "]),
                "negative": "-5",
                "inf": "inf",
            }[kind]
    elif kind == "empty":
        return b""
    elif kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    elif kind == "bytes":
        return _mutate_bytes(rng, text.encode())
    elif kind == "header_only":
        rows = rows[:1]
    elif kind == "ragged":
        r = rng.randrange(1, len(rows))
        rows[r] = rows[r][: rng.randrange(len(rows[r]))] + (["x"] * rng.randint(0, 3))
    elif kind == "duplicate_header":
        rows[0] = ["loss"] + rows[0][1:]
    elif kind == "status":
        for r in rows[1:]:
            r[3] = rng.choice(["failed", "diverged", "", "weird"])
    elif kind == "one_row":
        rows = rows[:2]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


@pytest.mark.slow
def test_fuzz_runs_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 1)
    good = tmp_path / "good"
    good.mkdir()
    (good / "runs.csv").write_text(_valid_runs_csv())
    assert _cli(["fit", str(good), "--bootstrap", "0"], capsys)[0] == 0
    fits = (good / "fits.json").read_bytes()
    for i in range(50):
        root = tmp_path / f"c{i}"
        root.mkdir()
        (root / "runs.csv").write_bytes(_mutate_csv(rng, _valid_runs_csv()))
        if i % 4 == 0:
            (root / "fits.json").write_bytes(fits)  # a stored result the fuzz must not touch
        # plot writes real figures (about a second each): a few cases only.
        command = "plot" if i % 16 == 15 else "reproduce" if i % 5 == 3 else "fit"
        argv = [command, str(root)]
        if command == "fit":
            argv += ["--bootstrap", "0"]
        elif command == "reproduce":
            argv += ["--no-replot"]
            if not (root / "fits.json").exists():
                # Valid UTF-8 only: test_reproduce_non_utf8_fits_json covers the rest.
                garbled = _mutate_bytes(rng, fits).decode("utf-8", "replace")
                (root / "fits.json").write_text(garbled, encoding="utf-8")
        before = _snapshot(root)
        code, _, err = _cli(argv, capsys)
        _check(argv, code, err, f"csv case {i}")
        if code != 0:
            assert _snapshot(root) == before, f"csv case {i}: {argv} changed a stored result"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"schema": 1, "fits": {"\xff": 1}}', "not UTF-8 text"),  # found by this fuzz
        (b'{"schema": 1, "input": "runs.csv", "fits": {}}', "input.path = None"),
        (b'{"schema": 1, "input": {"path": 3}, "fits": {}}', "input.path = 3"),
    ],
)
def test_reproduce_corrupt_fits_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    (tmp_path / "runs.csv").write_text(_valid_runs_csv())
    (tmp_path / "fits.json").write_bytes(content)
    argv = ["reproduce", str(tmp_path), "--no-replot"]
    code = main(argv)
    err = capsys.readouterr().err
    _check(argv, code, err, "corrupt fits.json")
    assert code == 2 and message in err


# --- run directories: collect, status -----------------------------------------------------------


def _run_dir_mutations() -> list[tuple[str, Callable[[random.Random, bytes], bytes]]]:
    def json_value(value: object) -> Callable[[random.Random, bytes], bytes]:
        return lambda rng, data: json.dumps(value).encode()

    def edit(key: str, value: object) -> Callable[[random.Random, bytes], bytes]:
        def f(rng: random.Random, data: bytes) -> bytes:
            obj = json.loads(data)
            if value is KeyError:
                obj.pop(key, None)
            else:
                obj[key] = value
            return json.dumps(obj).encode()

        return f

    return [
        ("truncate", lambda rng, data: data[: rng.randrange(len(data))]),
        ("bytes", _mutate_bytes),
        ("garbage", lambda rng, data: bytes(rng.randrange(256) for _ in range(64))),
        ("empty", lambda rng, data: b""),
        ("list", json_value([1, 2])),
        ("null", json_value(None)),
        ("nan", lambda rng, data: data.replace(b"3.0", b"NaN").replace(b"32", b"-32")),
        ("drop model", edit("model", KeyError)),
        ("drop status", edit("status", KeyError)),
        ("model str", edit("model", "llama")),
        ("model junk", edit("model", {"arch": "llama", "n_layer": "x"})),
        ("n_tokens text", edit("n_tokens", "many")),
        ("n_tokens huge", edit("n_tokens", 1e300)),
        ("seed list", edit("seed", [0])),
        ("data junk", edit("data", {"tokenizer": 5})),
        ("status weird", edit("status", "exploded")),
        ("status int", edit("status", 3)),
        ("val_loss text", edit("val_loss", "low")),
        ("train junk", edit("train", [])),
        ("unicode", edit("experiment", "\u00e9\u2603")),
    ]


def _fake_results(root: Path) -> list[Path]:
    """Two finished run directories made without training, and their runs.csv."""
    from harness.config import load_experiment
    from harness.grid import expand
    from harness.results import collect
    from harness.rundir import RunDir

    toml = root.parent / f"{root.name}.toml"
    toml.write_bytes(QUICKSTART)
    exp = load_experiment(
        toml,
        [
            "--grid.n_params=[10000, 50000]",
            "--grid.n_tokens=[5e4]",
            f"--execution.results_dir={root.parent}",
        ],
    )
    dirs = []
    for i, spec in enumerate(expand(exp)):
        run_dir = exp.results_path / "runs" / spec.run_id
        run_dir.mkdir(parents=True)
        RunDir(run_dir).write_spec(spec)
        RunDir(run_dir).write_result(
            {
                "run_id": spec.run_id,
                "status": "done",
                "val_loss": 3.0 - i / 10,
                "val_bpb": 4.3,
                "train_loss": 3.1,
                "peak_lr": 0.004,
                "wall_s": 1.0,
                "n_unique_tokens": 51200,
                "epochs": 1.0,
                "tokens_per_s": 100.0,
                "device": "cpu",
            },
        )
        (run_dir / "metrics.csv").write_text(
            "step,tokens,train_loss,val_loss,lr,wall_s\n"
            "1,1024,5.5,,0.004,0.1\n2,2048,5.0,4.9,0.004,0.2\n"
        )
        dirs.append(run_dir)
    collect(exp.results_path)
    return dirs


def test_fuzz_run_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 2)
    mutations = _run_dir_mutations()
    for i in range(90):
        root = tmp_path / f"fz{i}"
        run_dir = rng.choice(_fake_results(root))
        name = ["spec.json", "result.json", "metrics.csv"][i % 3]
        label, mutate = rng.choice(mutations)
        path = run_dir / name
        try:
            path.write_bytes(mutate(rng, path.read_bytes()))
        except (ValueError, AttributeError):  # a JSON edit on metrics.csv: garble it instead
            path.write_bytes(_mutate_bytes(rng, path.read_bytes()))
        for command in ("collect", "status"):
            argv = [command, str(root)]
            before = _snapshot(root)
            code, _, err = _cli(argv, capsys)
            _check(argv, code, err, f"run dir case {i} ({name}: {label})")
            if code != 0:
                assert _snapshot(root) == before, f"case {i}: a failing {command} changed runs.csv"


# --- a few through a real process ---------------------------------------------------------------


@pytest.mark.slow
def test_fuzz_subprocess_sample(tmp_path: Path) -> None:
    rng = random.Random(SEED + 3)
    cases = []
    for i in range(2):
        exp = tmp_path / f"s{i}.toml"
        exp.write_bytes(_mutate_bytes(rng, QUICKSTART) + b"\n[grid]\nfoo = 1\n")
        cases.append(["run", str(exp), f"--execution.results_dir={tmp_path / 'r'}"])
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"\x00\xff garbage\n")
    cases += [["fit", str(bad_csv)], ["collect", str(tmp_path)]]
    for argv in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        _check(argv, proc.returncode, proc.stderr, "subprocess")
        assert proc.returncode == 2
    assert not (tmp_path / "r").exists()
