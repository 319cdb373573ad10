"""Write shakespeare_passages.jsonl.gz: the bundled Shakespeare corpus as JSON Lines documents.

One document per passage: whole paragraphs (blank-line separated) of one work, gathered until
a passage reaches 4,000 bytes, with the work's title. The text of every document is the
bundled corpus's own bytes (harness/corpora/shakespeare.txt.xz, public domain), so the
documents' bytes add up to the corpus less the blank lines between passages.

    python experiments/data/make_shakespeare_jsonl.py   # from the repository root
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

from harness.data import read_corpus_bytes

TARGET_BYTES = 4000


def passages() -> list[dict[str, str]]:
    text = read_corpus_bytes("shakespeare")
    index = json.loads(
        resources.files("harness.corpora").joinpath("shakespeare.index.json").read_text()
    )
    out = []
    for work in index["works"]:
        body = text[work["byte_offset"] : work["byte_offset"] + work["n_bytes"]].decode("utf-8")
        cur: list[str] = []
        for para in body.split("\n\n"):
            if not para.strip():
                continue
            cur.append(para.strip("\n"))
            if sum(len(p.encode()) for p in cur) >= TARGET_BYTES:
                out.append({"title": work["title"], "text": "\n\n".join(cur) + "\n"})
                cur = []
        if cur:
            out.append({"title": work["title"], "text": "\n\n".join(cur) + "\n"})
    return out


def main() -> None:
    path = Path(__file__).with_name("shakespeare_passages.jsonl.gz")
    docs = passages()
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    # mtime=0: the same bytes on every run, so the file's sha256 (the cache key) is stable.
    path.write_bytes(gzip.compress(lines, mtime=0))
    print(f"wrote {path}: {len(docs)} documents, {len(lines):,} bytes of JSON Lines")


if __name__ == "__main__":
    main()
