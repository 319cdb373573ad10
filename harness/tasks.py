"""Labelled classification tasks for the downstream fine-tuning stage (`harness.finetune`).

Two kinds, named by ``[downstream] task``:

- ``'shakespeare-plays'`` (bundled, no download): a passage of ``data.seq_len`` bytes of the
  bundled Shakespeare corpus, labelled with the play it comes from. Passages are cut only from
  the held-out validation blocks of the experiment's pretraining split (the blocks that
  `harness.data.split_train_val` holds out of training, with the experiment's own
  ``val_fraction`` and ``val_block_bytes``), so no pretrained model has trained on a task
  passage, train, validation or test: fine-tuning measures what pretraining taught about
  Shakespeare, not what it memorised of these lines. The classes are the plays (never the
  poems) with the most held-out text, at most `N_PLAYS`, with the same number of passages each.
  The pretraining *validation loss* is measured on the same blocks; that is evaluation, not
  training, so it leaks nothing into the weights.
- a path to a CSV file with a header row and columns ``text`` and ``label`` (others ignored).

Both are split into train / validation / test deterministically (a fixed seed, not the
fine-tuning seed), per class, so every class has the same share in each split. Shakespeare
passages are split in chunks of `CHUNK_PASSAGES` consecutive passages, so that neighbouring
lines of one speech rarely sit on both sides of the train/test line. `subsample` draws the
class-balanced labelled subsets of the labelled-data-size grid.

This module needs numpy only (no torch).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from harness.config import DataConfig, DownstreamConfig
from harness.data import read_corpus_bytes
from harness.errors import InputError

__all__ = [
    "BUNDLED_TASKS",
    "Split",
    "Task",
    "csv_task",
    "held_out_ranges",
    "downstream_task",
    "load_task",
    "shakespeare_plays",
    "subsample",
]

BUNDLED_TASKS = ("shakespeare-plays",)
N_PLAYS = 8
"""Classes of 'shakespeare-plays': 8 plays, chance accuracy 1/8."""
MIN_PASSAGES = 20
"""Fewest passages per play (after balancing) for the task to be built at all."""
CHUNK_PASSAGES = 8
"""Consecutive passages that always land in the same split (8 x 128 bytes = about a speech)."""
TEST_FRACTION = 0.25
VAL_FRACTION = 0.15
SPLIT_SEED = 20_240_601
"""Fixed seed of the train/validation/test assignment: the same task for every fine-tune."""
# Works in the bundled index that are poems, not plays.
_POEMS = frozenset(
    {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece"}
    | {"sonnets", "venus_and_adonis"}
)
_ACCEPTED = (
    f"one of {', '.join(repr(t) for t in BUNDLED_TASKS)} or a path to a CSV file with columns "
    "text,label"
)


@dataclass(frozen=True)
class Split:
    """Examples of one split: UTF-8 texts and integer class ids (index into `Task.classes`)."""

    texts: tuple[bytes, ...]
    labels: np.ndarray
    """int64 class ids, one per text."""
    offsets: np.ndarray
    """Byte offset of each text in the source corpus (int64; -1 for a CSV row)."""

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Task:
    """A labelled classification task, split into train / validation / test."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    fingerprint: str
    """sha256 of everything in the task (texts, labels, split): equal tasks, equal prints."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def chance_accuracy(self) -> float:
        """Test accuracy of always guessing the most frequent test class (1/k when balanced)."""
        counts = np.bincount(self.test.labels, minlength=self.n_classes)
        return float(counts.max() / counts.sum())


def held_out_ranges(n_bytes: int, data: DataConfig) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of the validation blocks `harness.data.split_train_val` holds
    out of a text of ``n_bytes`` bytes (the same rule: every k-th block of
    ``val_block_bytes``, k = round(1 / val_fraction), starting at block k // 2)."""
    k = max(2, round(1 / data.val_fraction))
    blk = data.val_block_bytes
    n_blocks = math.ceil(n_bytes / blk)
    return [(i * blk, min((i + 1) * blk, n_bytes)) for i in range(n_blocks) if i % k == k // 2]


def _split_groups(
    group_of: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test): per class, whole groups go to one split, drawn by the
    fixed SPLIT_SEED; test gets round(25%) of a class's groups, validation round(15%), each at
    least one, train the rest (at least one)."""
    rng = np.random.default_rng(SPLIT_SEED)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in range(n_classes):
        groups = np.unique(group_of[labels == c])
        groups = groups[rng.permutation(len(groups))]
        n_test = max(1, round(TEST_FRACTION * len(groups)))
        n_val = max(1, round(VAL_FRACTION * len(groups)))
        chosen = (groups[n_test + n_val :], groups[n_test : n_test + n_val], groups[:n_test])
        for part, g in zip(parts, chosen, strict=True):
            part.append(np.flatnonzero((labels == c) & np.isin(group_of, g)))
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def _make_task(
    name: str,
    classes: tuple[str, ...],
    texts: list[bytes],
    labels: np.ndarray,
    offsets: np.ndarray,
    group_of: np.ndarray,
) -> Task:
    idx = _split_groups(group_of, labels, len(classes))
    splits = [
        Split(texts=tuple(texts[i] for i in ix), labels=labels[ix], offsets=offsets[ix])
        for ix in idx
    ]
    h = hashlib.sha256(json.dumps([name, list(classes)]).encode())
    for s in splits:
        h.update(len(s).to_bytes(8, "little"))
        for t in s.texts:
            h.update(len(t).to_bytes(8, "little") + t)
        h.update(s.labels.astype("<i8").tobytes())
    return Task(name, classes, *splits, fingerprint=h.hexdigest())


def shakespeare_plays(data: DataConfig, *, n_plays: int = N_PLAYS) -> Task:
    """'shakespeare-plays': which play a held-out passage of ``data.seq_len`` bytes comes from.

    Passages are whole, non-overlapping ``seq_len``-byte pieces of the intersection of a play
    with a held-out validation block (`held_out_ranges`), cut from the start of each such
    stretch. The ``n_plays`` plays with the most passages are the classes (ties by title),
    each cut to the count of the smallest (first passages in text order), so the classes are
    balanced and chance accuracy is 1 / n_plays. With the defaults (val_fraction 0.05, blocks
    of 16,384 bytes, seq_len 128): 8 plays x 128 passages, 640 train / 128 validation / 256
    test.

    Raises
    ------
    InputError
        The held-out blocks hold fewer than ``n_plays`` plays with MIN_PASSAGES passages each.
    """
    text = read_corpus_bytes("shakespeare")
    index = json.loads(
        resources.files("harness.corpora").joinpath("shakespeare.index.json").read_text()
    )
    seq_len = data.seq_len
    held = held_out_ranges(len(text), data)
    found: list[tuple[str, list[int]]] = []  # (title, passage offsets)
    for work in index["works"]:
        if work["title"] in _POEMS:
            continue
        a, b = work["byte_offset"], work["byte_offset"] + work["n_bytes"]
        starts: list[int] = []
        for s, e in held:
            lo, hi = max(a, s), min(b, e)
            starts.extend(range(lo, hi - seq_len + 1, seq_len))
        found.append((work["title"], starts))
    found.sort(key=lambda t: -len(t[1]))  # stable: ties keep the index's (title) order
    chosen = sorted(found[:n_plays])
    # Whole chunks only, so that every split is balanced too.
    per_class = min((len(s) for _, s in chosen), default=0) // CHUNK_PASSAGES * CHUNK_PASSAGES
    if len(chosen) < n_plays or per_class < MIN_PASSAGES:
        raise InputError(
            f"downstream.task = 'shakespeare-plays': the held-out blocks (data.val_fraction = "
            f"{data.val_fraction}, data.val_block_bytes = {data.val_block_bytes}) hold "
            f"{per_class} passages of data.seq_len = {seq_len} bytes for the "
            f"{n_plays}th play; accepted: at least {MIN_PASSAGES}: raise val_fraction or "
            f"val_block_bytes, or lower seq_len"
        )
    texts, labels, offsets, groups = [], [], [], []
    for c, (_, starts) in enumerate(chosen):
        for j, s in enumerate(starts[:per_class]):
            texts.append(text[s : s + seq_len])
            labels.append(c)
            offsets.append(s)
            groups.append(c * per_class + j // CHUNK_PASSAGES)
    return _make_task(
        "shakespeare-plays",
        tuple(title for title, _ in chosen),
        texts,
        np.asarray(labels, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(groups, dtype=np.int64),
    )


def csv_task(path: str | Path) -> Task:
    """A task from a user's CSV file: a header row with columns ``text`` and ``label``.

    Labels are strings; the classes are their sorted distinct values. Each label needs at
    least 3 rows (one each for train, validation and test); rows are split per label by the
    fixed SPLIT_SEED (25% test, 15% validation, the rest train). Texts longer than the model's
    context are truncated when encoded (`harness.finetune`).

    Raises
    ------
    InputError
        One line naming the file, the line and column, the value and what is accepted: a
        missing file, a file that is not UTF-8, a header without text or label, a row with a
        missing or empty text or label, fewer than 2 classes, or a class with under 3 rows.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(
            f"downstream.task = {str(path)!r}: {e.strerror}; accepted: {_ACCEPTED}"
        ) from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: byte {raw[e.start]:#04x} is not UTF-8; accepted: a UTF-8 "
            f"CSV file with columns text,label"
        ) from None
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: the file is empty; accepted: a header row text,label")
        cols = [h.strip() for h in header]
        missing = [c for c in ("text", "label") if c not in cols]
        if missing:
            raise InputError(
                f"{path}: line 1: header {cols!r} has no column {missing[0]!r}; accepted: a "
                f"header row naming columns text and label"
            )
        i_text, i_label = cols.index("text"), cols.index("label")
        texts: list[bytes] = []
        names: list[str] = []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(cols):
                raise InputError(
                    f"{path}: line {line}: {len(row)} fields {row!r}; accepted: {len(cols)} "
                    f"fields as in the header {cols!r} (quote a text holding commas)"
                )
            for col, i in (("text", i_text), ("label", i_label)):
                if not row[i].strip():
                    raise InputError(
                        f"{path}: line {line}, column {col}: empty value {row[i]!r}; accepted: "
                        f"a non-empty {col}"
                    )
            texts.append(row[i_text].encode("utf-8"))
            names.append(row[i_label].strip())
    except csv.Error as e:
        raise InputError(
            f"{path}: line {reader.line_num}: malformed CSV ({e}); accepted: a CSV file with "
            f"columns text,label"
        ) from None
    classes = tuple(sorted(set(names)))
    if len(classes) < 2:
        raise InputError(
            f"{path}: column label has {len(classes)} distinct value(s) {list(classes)!r}; "
            f"accepted: at least 2 classes"
        )
    labels = np.asarray([classes.index(n) for n in names], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 3:
        c = int(counts.argmin())
        raise InputError(
            f"{path}: column label: {classes[c]!r} has {counts[c]} row(s); accepted: at least "
            f"3 rows per label (one each for train, validation and test)"
        )
    n = len(texts)
    return _make_task(
        str(path),
        classes,
        texts,
        labels,
        np.full(n, -1, dtype=np.int64),
        np.arange(n, dtype=np.int64),
    )


def load_task(task: str, data: DataConfig) -> Task:
    """The task named by ``[downstream] task``: a bundled name or a CSV path.

    Raises
    ------
    InputError
        Neither a bundled task nor an existing file, or a bad CSV file (`csv_task`).
    """
    if task == "shakespeare-plays":
        return shakespeare_plays(data)
    path = Path(task).expanduser()
    if not path.is_file():
        raise InputError(f"downstream.task = {task!r}: no such task or file; accepted: {_ACCEPTED}")
    return csv_task(path)


def downstream_task(cfg: DownstreamConfig, data: DataConfig) -> Task:
    """``[downstream]``'s task, checked against its labelled-set sizes. `harness run` calls it
    before pretraining, so a bad task or n_labels is refused before anything trains.

    Raises
    ------
    InputError
        A bad task (`load_task`), or an n_labels the task cannot give.
    """
    task = load_task(cfg.task, data)
    n_train, k = len(task.train), task.n_classes
    for n in cfg.n_labels:
        if n and not k <= n <= n_train:
            raise InputError(
                f"downstream.n_labels = {n}: task {task.name!r} has {n_train} training examples "
                f"in {k} classes; accepted: 0 (all) or {k}..{n_train}"
            )
    return task


def subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset of ``n`` examples (sorted), drawn with ``seed``.

    Each class gets n // k examples, and the first n % k classes of a seeded class order one
    more; a class with too few examples gives all it has and the others make up the rest, so
    the subset always has exactly ``n``. Per class the examples are taken in a seeded order, so
    for one seed a smaller subset is part of every larger one (nested labelled-data grids).
    ``n`` = 0 or ``n`` >= len(labels) means all examples.

    Raises
    ------
    InputError
        ``n`` is below the number of classes (a class would get no example).
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if n == 0 or n >= len(labels):
        return np.arange(len(labels))
    if n < len(classes):
        raise InputError(
            f"downstream.n_labels = {n}: fewer than the {len(classes)} classes; accepted: 0 "
            f"(all) or {len(classes)}..{len(labels)}"
        )
    rng = np.random.default_rng(seed)
    order = {c: np.flatnonzero(labels == c) for c in classes}
    order = {c: ix[rng.permutation(len(ix))] for c, ix in order.items()}
    class_order = classes[rng.permutation(len(classes))]
    quota = {c: 0 for c in classes}
    left = n
    open_classes = list(class_order)
    while left > 0:  # water-filling: equal shares, capped at what each class holds
        share, extra = divmod(left, len(open_classes))
        for i, c in enumerate(list(open_classes)):
            give = min(share + (i < extra), len(order[c]) - quota[c])
            quota[c] += give
            left -= give
        open_classes = [c for c in open_classes if quota[c] < len(order[c])]
    return np.sort(np.concatenate([order[c][: quota[c]] for c in classes]))
