"""The bundled offline tasks: lm-eval task YAMLs over JSON Lines files in this folder, built from
the harness's own corpora by `build` (``python -m harness.evals.bundled`` rewrites them; a test
checks the committed files equal what it builds).

Both are ranked classification with four choices of equal length (chance 1/4), small enough
to score in seconds and learnable by the models of a CPU grid:

- ``shakespeare_cloze``: which 16-byte continuation of a 64-byte passage is the real one
  (HellaSwag's question, Zellers et al. 2019, asked of plain text). Passages come only from the
  validation blocks of the bundled Shakespeare corpus under the default split (data.val_fraction
  0.05, data.val_block_bytes 16384: the quickstart's), so no run of such an experiment trains
  on them; the wrong continuations are other passages' real ones, cut at the same offsets.
- ``facts_kv``: which value goes with this key, in the facts source of
  experiments/synthetic_facts.toml (`harness.synthetic.facts`): one question per entity of the
  held-out stream (in order of first appearance, so the frequent ones all and the rare ones
  as they come), the context its key alone (where a fact starts, as every training window
  does), the choices its value and three other questions' values. Each value is the answer
  once and a wrong choice about three times, so a model that prefers some values scores
  chance (with the stream's Zipf frequencies, the top entity's value would be right in 38% of
  questions). Accuracy is the share of these entities whose value a model has stored.

Cuts, distractors and answer positions are drawn with a fixed seed. numpy only (no torch).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from harness.config import DataConfig
from harness.data import read_corpus_bytes
from harness.synthetic import source_for
from harness.tasks import held_out_ranges

__all__ = ["BUNDLED", "FACTS_CORPUS", "build", "bundled_dir"]

BUNDLED = ("shakespeare_cloze", "facts_kv")
"""Task names of the bundled tasks (each a NAME.yaml and NAME.jsonl here)."""
FACTS_CORPUS = (
    "synthetic:source=facts,vocab=16,key=3,value=4,entities=4096,zipf=1.5,seed=0,tokens=2e6"
)
"""The facts source ``facts_kv`` is built from (experiments/synthetic_facts.toml's)."""
N_EXAMPLES = 1000
N_CHOICES = 4
CONTEXT_BYTES, ENDING_BYTES = 64, 16
SEED = 20_261_207


def bundled_dir() -> Path:
    """The folder of the bundled task files."""
    return Path(str(resources.files("harness.evals").joinpath("bundled")))


def _spread(n_items: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``n_items`` (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_items - 1, min(n, n_items)).round().astype(np.int64))


def _choices(rng: np.random.Generator, true: str, pool: list[str], k: int) -> tuple[list[str], int]:
    """``true`` and k - 1 distinct others from ``pool``, shuffled; and where ``true`` went."""
    others: list[str] = []
    for i in rng.permutation(len(pool)):
        if pool[i] != true and pool[i] not in others:
            others.append(pool[i])
        if len(others) == k - 1:
            break
    label = int(rng.integers(k))
    return others[:label] + [true] + others[label:], label


def cloze_examples() -> list[dict[str, object]]:
    """``shakespeare_cloze``'s examples (module docstring)."""
    text = read_corpus_bytes("shakespeare")
    window = CONTEXT_BYTES + ENDING_BYTES
    passages = [
        text[s : s + window].decode("ascii")
        for a, b in held_out_ranges(len(text), DataConfig(corpus="shakespeare"))
        for s in range(a, b - window + 1, window)
    ]
    endings = [p[CONTEXT_BYTES:] for p in passages]
    rng = np.random.default_rng(SEED)
    out: list[dict[str, object]] = []
    for i in _spread(len(passages), N_EXAMPLES):
        choices, label = _choices(rng, endings[i], endings, N_CHOICES)
        out.append({"context": passages[i][:CONTEXT_BYTES], "endings": choices, "label": label})
    return out


def facts_examples() -> list[dict[str, object]]:
    """``facts_kv``'s examples (module docstring)."""
    source = source_for(FACTS_CORPUS)
    spec = source.spec
    seg, k = spec.segment, spec.key
    text = source.generate()
    first: dict[str, str] = {}  # key -> value, each entity once, in order of appearance
    for a, b in held_out_ranges(len(text), DataConfig(corpus=FACTS_CORPUS)):
        for s in range(a, b - seg + 1, seg):
            fact = text[s : s + seg].decode("ascii")
            first.setdefault(fact[:k], fact[k : k + spec.value])
    keys = list(first)
    picked = [keys[i] for i in _spread(len(keys), N_EXAMPLES)]
    answers = [first[key] for key in picked]
    rng = np.random.default_rng(SEED + 1)
    out: list[dict[str, object]] = []
    for key, value in zip(picked, answers, strict=True):
        choices, label = _choices(rng, value, answers, N_CHOICES)
        out.append({"context": key, "endings": choices, "label": label})
    return out


YAML = """\
# {title}
# Built by `python -m harness.evals.bundled` (harness/evals/bundled.py) from {source}.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {name}.jsonl
output_type: multiple_choice
test_split: test
# Fields of each JSON line, read as they are (no template to render).
doc_to_text: context
doc_to_choice: endings
doc_to_target: label
# The choice follows the context directly (they are cuts of one text, spaces included).
target_delimiter: ""
# Four choices of equal length: length-normalised accuracy would equal acc.
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""

_META = {
    "shakespeare_cloze": (
        "Which 16-byte continuation of a 64-byte held-out Shakespeare passage is the real one.",
        "the validation blocks of the bundled Shakespeare corpus (public domain)",
        cloze_examples,
    ),
    "facts_kv": (
        "Which value goes with this key, in the facts source of synthetic_facts.toml.",
        f"the validation blocks of {FACTS_CORPUS}",
        facts_examples,
    ),
}


def build(out_dir: Path) -> list[Path]:
    """Write every bundled task's YAML and JSONL into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, source, examples) in _META.items():
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in examples())
        (out_dir / f"{name}.jsonl").write_text(lines, encoding="utf-8")
        (out_dir / f"{name}.yaml").write_text(
            YAML.format(title=title, source=source, name=name), encoding="utf-8"
        )
        written += [out_dir / f"{name}.yaml", out_dir / f"{name}.jsonl"]
    return written


if __name__ == "__main__":
    for path in build(bundled_dir()):
        print(path)
