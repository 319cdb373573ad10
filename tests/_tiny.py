"""A tiny experiment on a small word corpus, shared by the tests that train for real.

A 1-layer d32 model trains a run of a few thousand tokens of this corpus in about a second.
Import it from a test module as ``from _tiny import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

WORDS = ("to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis")


def harness_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m harness.cli ARGS`` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def word_corpus(directory: Path, *, n_lines: int = 3000, words_per_line: int = 10) -> Path:
    """directory/corpus.txt: seeded random lines of WORDS (written once, then reused)."""
    path = directory / "corpus.txt"
    if not path.exists():
        rng = np.random.default_rng(0)
        lines = (" ".join(rng.choice(WORDS, words_per_line)) for _ in range(n_lines))
        path.write_text("\n".join(lines))
    return path


def tiny_toml(
    directory: Path,
    *,
    name: str = "tiny",
    n_tokens: str = "[1024, 2048]",
    execution: str = "",
    extra: str = "",
) -> Path:
    """Write directory/NAME.toml: the tiny grid, results under directory/results.

    ``execution`` adds lines to the [execution] table; ``extra`` appends further tables.
    """
    toml = directory / f"{name}.toml"
    toml.write_text(f"""
[data]
corpus = "{word_corpus(directory)}"
seq_len = 32
val_block_bytes = 1024
eval_tokens = 1024
[train]
batch_size = 8
lr = 1e-2
evals_per_run = 2
checkpoint_every_steps = 0
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}]
n_tokens = {n_tokens}
[execution]
threads = 1
progress = false
results_dir = "{directory / "results"}"
{execution}
{extra}
""")
    return toml


def analysis_cli() -> Callable[..., int]:
    """The analysis commands (fit, plot, reproduce) in this process: ``run("fit", dir)``
    returns the exit code."""
    from harness.analysis.cli import register

    parser = argparse.ArgumentParser(prog="harness")
    register(parser.add_subparsers(required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    return run
