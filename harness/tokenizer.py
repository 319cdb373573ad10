"""Hugging Face tokenizers as data.tokenizer: a bundled one by name, a tokenizer.json, or a
folder saved by transformers; their vocabulary, end-of-text token and bytes per token.

'byte' and 'bpe' (trained on the corpus) are `harness.data`'s own. Any other data.tokenizer
names a pretrained tokenizer, loaded offline with `tokenizers.Tokenizer.from_file`. Bits per
byte need the number of UTF-8 bytes each token id stands for (`token_n_bytes`). A byte-level
BPE (GPT-2, GPT-NeoX, Llama 3) spells each byte as one printable character (Radford et al.
2019's table, rebuilt by `_byte_of_char`), so a token's bytes are its characters mapped back.
Other tokenizers are measured by decoding the id alone. Special tokens stand for no text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from harness.errors import InputError

__all__ = [
    "BUNDLED_TOKENIZERS",
    "eos_token_id",
    "is_pretrained",
    "load",
    "path_of",
    "text_encoder",
    "token_n_bytes",
]

BUNDLED_TOKENIZERS = {"gpt-neox-20b": "tokenizers/gpt-neox-20b/tokenizer.json"}
"""Tokenizers shipped in harness/corpora/ with their licences and provenance (README.md)."""
OWN = ("byte", "bpe")
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")  # SentencePiece byte fallback


def is_pretrained(name: str) -> bool:
    """Whether data.tokenizer names a pretrained tokenizer (not 'byte' or 'bpe')."""
    return name not in OWN


def path_of(name: str) -> Path:
    """The tokenizer.json file data.tokenizer names (bundled, a file, or in a folder)."""
    if name in BUNDLED_TOKENIZERS:
        ref = resources.files("harness.corpora").joinpath(BUNDLED_TOKENIZERS[name])
        return Path(str(ref))
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    return path


@functools.lru_cache(maxsize=8)
def load(name: str):  # noqa: ANN201 (tokenizers.Tokenizer; imported lazily)
    """The tokenizer data.tokenizer names.

    Raises
    ------
    InputError
        No such file, or a file that `tokenizers` cannot load.
    """
    from tokenizers import Tokenizer

    path = path_of(name)
    accepted = (
        "accepted: byte, bpe, " + ", ".join(BUNDLED_TOKENIZERS) + ", a tokenizer.json, or a folder "
        "holding one"
    )
    if not path.is_file():
        raise InputError(f"data.tokenizer = {name!r}: {path} does not exist; {accepted}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust loader raises plain Exception subclasses
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(
            f"data.tokenizer = {name!r}: {path} does not load as a tokenizer ({reason}); {accepted}"
        ) from None


def eos_token_id(name: str) -> int | None:
    """The id of the tokenizer's end-of-text token (a special token with a usual name), or
    None when it has none."""
    tok = load(name)
    special = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for content in _EOS_NAMES:
        if content in special:
            return special[content]
    return None


def text_encoder(name: str, bpe_json: Path | None = None) -> Callable[[str], list[int]]:
    """data.tokenizer as a function of text, with no special tokens added: UTF-8 byte values
    ('byte'), the BPE trained on the corpus (its cache entry's tokenizer.json, ``bpe_json``;
    without one, bytes: at least as many as its tokens), or a pretrained tokenizer."""
    if name == "byte" or (name == "bpe" and bpe_json is None):
        return lambda text: list(text.encode("utf-8"))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bpe_json)) if name == "bpe" else load(name)
    return lambda text: list(tok.encode(text, add_special_tokens=False).ids)


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """The byte-level BPE alphabet: printable bytes stand for themselves, the other 68 are
    shifted to code points from 256 up, in byte order (GPT-2's bytes_to_unicode)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [b for b in range(256) if b not in keep]
    table = {chr(b): b for b in keep}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def token_n_bytes(name: str) -> np.ndarray:
    """UTF-8 bytes each token id stands for, (vocab_size,) int64: 0 for special tokens."""
    tok = load(name)
    n = tok.get_vocab_size(with_added_tokens=True)
    out = np.zeros(n, dtype=np.int64)
    added = tok.get_added_tokens_decoder()
    byte_level = type(tok.decoder).__name__ == "ByteLevel"
    table = _byte_of_char()
    for i in range(n):
        if i in added:
            t = added[i]
            out[i] = 0 if t.special else len(t.content.encode("utf-8"))
            continue
        s = tok.id_to_token(i)
        if s is None:
            continue
        if byte_level and all(c in table for c in s):
            out[i] = len(s)
        elif _BYTE_TOKEN.match(s):
            out[i] = 1
        else:
            out[i] = len(tok.decode([i], skip_special_tokens=False).encode("utf-8"))
    return out
