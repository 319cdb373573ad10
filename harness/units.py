"""Numbers as people read them: SI prefixes for figures, the report and progress lines, the
short scientific form of `harness plan` and `harness status` tables, and durations.

Plain math only (no numpy, no torch): the analysis, the executor and the command line all use it.
"""

from __future__ import annotations

import math

__all__ = ["fmt_duration", "fmt_si", "fmt_si_unit", "si"]

_PREFIXES = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"]


def _prefixed(x: float, digits: str) -> tuple[float, str]:
    """x scaled into [1, 1000) by an SI prefix, and the prefix (x < 1000 keeps none). A value
    that ``digits`` rounds up to 1000 (999.7k at 3 digits) takes the next prefix (1M)."""
    k = min(int(math.floor(math.log10(abs(x)) / 3)), len(_PREFIXES) - 1) if abs(x) >= 1000 else 0
    if abs(float(format(x / 1000.0**k, digits))) >= 1000 and k + 1 < len(_PREFIXES):
        k += 1
    return x / 1000.0**k, _PREFIXES[k]


def si(x: float) -> str:
    """A number as a reader takes it in: 13408 -> '13.4k', 150000 -> '150k', 1.5e6 -> '1.5M',
    1e18 -> '1E', 2.5 -> '2.5', 3e-4 -> '3e-4' (three significant digits at most)."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    if abs(x) < 1e-2:
        mant, exp = f"{x:.2e}".split("e")
        return f"{float(mant):g}e{int(exp)}"
    v, prefix = _prefixed(x, ".3g")
    return f"{float(f'{v:.3g}'):g}{prefix}"


def fmt_si_unit(x: float, unit: str) -> str:
    """Three significant digits, zeros kept, and an SI prefix on a unit: 1.2e15 FLOP ->
    '1.20 PFLOP', 36.9e9 -> '36.9 GFLOP', 512 -> '512 FLOP', 999.7e3 -> '1.00 MFLOP'; 0 or less
    -> '0 FLOP'."""
    if x <= 0 or not math.isfinite(x):
        return f"0 {unit}"
    v, prefix = _prefixed(x, ".3g")
    text = f"{v:.{max(0, 3 - len(str(int(v))))}f}"
    if len(text.split(".")[0]) > len(str(int(v))):  # 99.97 -> '100.0': one digit fewer
        text = f"{v:.{max(0, 3 - len(str(round(v))))}f}"
    return f"{text} {prefix}{unit}"


def fmt_si(x: float) -> str:
    """13408 -> '1.34e4', 512 -> '5.1e2' (short numbers for tables)."""
    return f"{x:.2g}" if x < 1e3 else f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def fmt_duration(s: float | None) -> str:
    """42 -> '42s', 185 -> '3m05s', 7500 -> '2h05m', 200000 -> '2d07h'; None -> '-'."""
    if s is None or not math.isfinite(s):
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
