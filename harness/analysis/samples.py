"""The bootstrap's parameter samples, stored beside fits.json as ``fits.bootstrap.npz``.

fits.json keeps each law's 95% intervals; the samples they were taken from are what a new
question needs: the interval of a prediction at an (N, D) no one asked about at fit time, or of
N_opt at another budget (`predict`). One array per law and parameter, keyed ``law/param``
(``group/law/param`` for grouped fits), one entry per resample in resample order (those whose
fit did not converge are kept, as fits.json's intervals keep them).

The file is a plain numpy ``.npz`` (read with ``allow_pickle=False``), written with fixed zip
timestamps so that the same fit gives the same bytes, and atomically.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write_bytes
from harness.errors import InputError

__all__ = ["SUFFIX", "read_samples", "samples_path", "write_samples"]

SUFFIX = ".bootstrap.npz"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: no clock in the bytes


def samples_path(fits_json: str | os.PathLike[str]) -> Path:
    """fits.json -> fits.bootstrap.npz (any --out FILE.json -> FILE.bootstrap.npz)."""
    p = Path(fits_json)
    return p.with_name(p.stem + SUFFIX)


def write_samples(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an .npz, byte-identical for equal arrays (sorted keys, fixed dates)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asarray(arrays[key], dtype=float))
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entry.getvalue())
    return atomic_write_bytes(path, buf.getvalue())


def read_samples(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an .npz written by `write_samples`.

    Raises
    ------
    InputError
        The file is not such an .npz (or holds pickled objects).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=float) for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input, one line
        raise InputError(
            f"{path}: not a bootstrap sample file ({type(exc).__name__}: {exc}); accepted: "
            f"the {SUFFIX} `harness fit` writes beside fits.json"
        ) from None
