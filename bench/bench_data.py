"""Benchmark: tokenizing a JSON Lines corpus into the cache against the raw tokenizer (issue 18).

It writes a corpus of --mb megabytes as JSON Lines (Shakespeare passages of ~4 KB repeated with
a counter, so no two documents are equal), then, each in a fresh subprocess:

- (a) the raw rate: `tokenizers`' `encode_batch` over the same documents in batches of 1024,
  the ids thrown away;
- (b) `harness.data.prepare_corpus` with the GPT-NeoX tokenizer into a scratch cache: reading,
  tokenizing, splitting and writing the memory-mapped token files.

It prints MB/s of both, their ratio (goal: at least 0.8), and each process's peak RSS (goal:
under 1 GB, and not growing with the corpus: compare two --mb values).

    python bench/bench_data.py --mb 50          # ~1 min on 2 cores
    python bench/bench_data.py --mb 1000        # the issue's 1 GB; ~15 min at 2 MB/s per core
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAW = """
import json, resource, sys, time
from harness.tokenizer import load
tok = load("gpt-neox-20b")
def count(batch):
    return sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
t0 = time.perf_counter(); batch = []; n = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        batch.append(json.loads(line)["text"])
        if len(batch) == 1024:
            n += count(batch)
            batch = []
n += count(batch) if batch else 0
print(json.dumps({"s": time.perf_counter() - t0, "tokens": n,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PREPARE = """
import json, resource, sys, time
from pathlib import Path
from harness.config import DataConfig
from harness.data import prepare_corpus
cfg = DataConfig(corpus=sys.argv[1], tokenizer="gpt-neox-20b", eval_tokens=4096)
t0 = time.perf_counter()
c = prepare_corpus(cfg, Path(sys.argv[2]))
print(json.dumps({"s": time.perf_counter() - t0, "tokens": c.n_train_tokens + c.n_val_tokens,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_corpus(path: Path, mb: float) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "data"))
    from make_shakespeare_jsonl import passages

    docs = [d["text"] for d in passages()]
    target, n, i = int(mb * 1e6), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while n < target:
            line = json.dumps({"text": f"[{i}] " + docs[i % len(docs)]}) + "\n"
            f.write(line)
            n += len(line.encode())
            i += 1
    return n


def run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB of JSON Lines")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        t0 = time.perf_counter()
        n_bytes = write_corpus(corpus, args.mb)
        print(f"corpus: {n_bytes / 1e6:.1f} MB of JSON Lines in {time.perf_counter() - t0:.1f} s")
        raw = run(RAW, str(corpus))
        prep = run(PREPARE, str(corpus), str(Path(tmp) / "cache"))
    for name, r in (("raw encode_batch", raw), ("prepare_corpus", prep)):
        print(
            f"{name:17s} {n_bytes / 1e6 / r['s']:6.2f} MB/s  {r['tokens']:,} tokens  "
            f"{r['s']:.1f} s  peak RSS {r['rss_mb']:.0f} MB"
        )
    print(f"ratio prepare / raw: {raw['s'] / prep['s']:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
