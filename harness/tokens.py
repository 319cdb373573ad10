"""Token ranges of memory-mapped shards, read as one array without copying them.

A pre-tokenized corpus (.npy or .bin shards, `harness.sources`) is split into training and
validation by whole documents. Copying both splits into the cache would double a corpus that
may be terabytes, so the cache keeps only the split's spans (shard, start, stop) and every run
reads the shards where they lie, through `TokenSpans`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TokenSpans"]


class TokenSpans:
    """The concatenation of ``shards[f][start:stop]`` for each span ``(f, start, stop)``, read
    like a 1-d array: ``len``, ``size``, integer-array indexing (what `harness.data.
    gather_windows` does) and slices. Only the tokens indexed are read."""

    def __init__(self, shards: Sequence[np.ndarray], spans: np.ndarray) -> None:
        spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
        self._shards = list(shards)
        self._file, self._start = spans[:, 0], spans[:, 1]
        lengths = spans[:, 2] - spans[:, 1]
        self._offset = np.concatenate([[0], np.cumsum(lengths)])  # span i starts at _offset[i]
        self.size = int(self._offset[-1])
        self.dtype = np.result_type(*(s.dtype for s in self._shards)) if shards else np.int64

    def __len__(self) -> int:
        return self.size

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise IndexError(f"token index out of range for {self.size} tokens")
        span = np.searchsorted(self._offset, idx, side="right") - 1
        local = idx - self._offset[span] + self._start[span]
        files = self._file[span]
        out = np.empty(idx.shape, dtype=self.dtype)
        for f in np.unique(files):  # one fancy read per shard touched
            where = files == f
            out[where] = self._shards[f][local[where]]
        return out

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, slice):
            r = range(self.size)[key]
            return self._gather(np.arange(r.start, r.stop, r.step, dtype=np.int64))
        if isinstance(key, (int, np.integer)):
            k = int(key) + (self.size if int(key) < 0 else 0)
            return self._gather(np.asarray([k], dtype=np.int64))[0]
        return self._gather(np.asarray(key, dtype=np.int64))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        parts = [
            np.asarray(self._shards[f][s : s + (self._offset[i + 1] - self._offset[i])])
            for i, (f, s) in enumerate(zip(self._file, self._start, strict=True))
        ]
        whole = np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)
        return whole.astype(dtype) if dtype is not None else whole
