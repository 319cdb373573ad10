"""Benchmark: tokenizing a corpus into the cache against the raw tokenizer, and the data time of
training steps on memory-mapped token shards (issue 18).

It writes a corpus of --mb megabytes (Shakespeare passages of ~4 KB repeated with a counter, so
no two documents are equal) as JSON Lines or, with --text, as one plain text file, then, each in
a fresh subprocess:

- (a) the raw rate: `tokenizers`' `encode_batch` over the same documents (JSON Lines) or
  pieces of whole lines (text, as `harness.encode` cuts them) in batches, the ids thrown away;
- (b) `harness.data.prepare_corpus` with the GPT-NeoX tokenizer into a scratch cache: reading,
  tokenizing, splitting and writing the memory-mapped token files.

It prints MB/s of both, their ratio (goal: at least 0.8), and each process's peak RSS (goal:
under 1 GB, and not growing with the corpus: compare two --mb values).

With --steps N it then saves the tokens as four .npy shards, which a corpus of token arrays
reads where they lie (`harness.tokens`), and trains N steps of two models on them (threads as
torch's default): result.json's data_s (making the batches) over wall_s (goal: under 2%).

    python bench/bench_data.py --mb 50 --steps 40   # ~3 min on 2 cores
    python bench/bench_data.py --mb 1000 --text     # the issue's 1 GB; ~3 min per 1 GB at 6 MB/s
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


RAW_TEXT = """
import json, resource, sys, time
from harness.tokenizer import load
tok = load("gpt-neox-20b")
def count(pieces):
    return sum(len(e.ids) for e in tok.encode_batch(pieces, add_special_tokens=False))
# As harness.encode hands text to a pretrained tokenizer: pieces of whole lines of about 4 K
# characters, about 4 MiB of them per call.
t0 = time.perf_counter(); pieces = []; cur = []; size = 0; total = 0; n = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        cur.append(line); size += len(line)
        if size >= 4096:
            pieces.append("".join(cur)); total += size; cur = []; size = 0
            if total >= 1 << 22:
                n += count(pieces); pieces = []; total = 0
pieces.append("".join(cur))
n += count(pieces)
print(json.dumps({"s": time.perf_counter() - t0, "tokens": n,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

TRAIN = """
import json, sys
from pathlib import Path
import numpy as np
from harness.config import ExecutionConfig, load_experiment
from harness.data import prepare_corpus
from harness.grid import expand
from harness.train import train
cache, shards, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
entry = next(p for p in cache.iterdir() if (p / "info.json").exists())
ids = np.concatenate([np.fromfile(entry / f, dtype=np.uint16) for f in ("train.bin", "val.bin")])
shards.mkdir()
for j, part in enumerate(np.array_split(ids, 4)):
    np.save(shards / f"{j}.npy", part)
toml = shards.parent / "bench.toml"
toml.write_text(
    f'[data]\\ncorpus = "{shards}"\\n{sys.argv[4]}\\nseq_len = 256\\n'
    'eval_tokens = 4096\\n[train]\\nbatch_size = 16\\nevals_per_run = 1\\n'
    'checkpoint_every_steps = 0\\n[grid]\\n'
    'shapes = [{n_layer = 2, n_embd = 64}, {n_layer = 4, n_embd = 256}]\\n'
    f'n_tokens = [{steps * 16 * 256}]\\n'
)
exp = load_experiment(toml)
corpus = prepare_corpus(exp.data, cache)
assert corpus.shards, "token arrays are read in place"
out = []
for spec in expand(exp):
    r = train(spec, shards.parent / "runs" / spec.run_id, corpus=corpus,
              execution=ExecutionConfig(progress=False))
    out.append({"shape": f"{spec.model.n_layer}x{spec.model.n_embd}", "steps": r.steps,
                "wall_s": r.wall_s, "data_s": r.data_s})
print(json.dumps(out))
"""


def write_corpus(path: Path, mb: float, text: bool = False) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "data"))
    from make_shakespeare_jsonl import passages

    docs = [d["text"] for d in passages()]
    target, n, i = int(mb * 1e6), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while n < target:
            doc = f"[{i}] " + docs[i % len(docs)]
            line = doc.rstrip("\n") + "\n\n" if text else json.dumps({"text": doc}) + "\n"
            f.write(line)
            n += len(line.encode())
            i += 1
    return n


def run(code: str, *args: str) -> object:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB")
    ap.add_argument("--text", action="store_true", help="plain text instead of JSON Lines")
    ap.add_argument("--steps", type=int, default=0, help="train this many steps on the shards")
    args = ap.parse_args()
    kind = "plain text" if args.text else "JSON Lines"
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        corpus = Path(tmp) / ("corpus.txt" if args.text else "corpus.jsonl")
        t0 = time.perf_counter()
        n_bytes = write_corpus(corpus, args.mb, args.text)
        print(f"corpus: {n_bytes / 1e6:.1f} MB of {kind} in {time.perf_counter() - t0:.1f} s")
        raw = run(RAW_TEXT if args.text else RAW, str(corpus))
        prep = run(PREPARE, str(corpus), str(Path(tmp) / "cache"))
        for name, r in (("raw encode_batch", raw), ("prepare_corpus", prep)):
            print(
                f"{name:17s} {n_bytes / 1e6 / r['s']:6.2f} MB/s  {r['tokens']:,} tokens  "
                f"{r['s']:.1f} s  peak RSS {r['rss_mb']:.0f} MB"
            )
        print(f"ratio prepare / raw: {raw['s'] / prep['s']:.2f} (goal >= 0.8)")
        if args.steps:
            # Plain text has no end-of-text ids: its shards are split in blocks, which
            # data.tokenizer = "byte" with the vocabulary given asks for.
            vocab = (
                "tokenizer = 'byte'\nvocab_size = 50277"
                if args.text
                else "tokenizer = 'gpt-neox-20b'"
            )
            shards = str(Path(tmp) / "shards")
            runs = run(TRAIN, str(Path(tmp) / "cache"), shards, str(args.steps), vocab)
            for r in runs:
                share = r["data_s"] / r["wall_s"]
                print(
                    f"train {r['shape']:6s} {r['steps']} steps on 4 memory-mapped .npy shards: "
                    f"{r['wall_s'] / r['steps'] * 1e3:.1f} ms/step, data "
                    f"{r['data_s'] / r['steps'] * 1e3:.2f} ms/step = {share:.2%} of wall_s "
                    "(goal < 2%)"
                )


if __name__ == "__main__":
    main()
