"""Row selection for `harness fit --where EXPR` (and the same expression stored in fits.json).

pandas' ``DataFrame.eval`` evaluates attribute access and method calls, so an expression taken
from a file (a stored fits.json is data from elsewhere) could write files or run code before it
failed. Expressions are therefore checked against a small grammar first, on Python's own parse
tree, and only then handed to pandas:

    expr    := expr ("and" | "or" | "&" | "|") expr  |  ("not" | "~") expr  |  "(" expr ")"
             | operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand)+
    operand := column name | number | string | "-" number

Anything else (attributes, calls, subscripts, arithmetic, names that are not columns) is
refused before evaluation, with one line naming it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.errors import InputError

__all__ = ["ACCEPTED", "check_where", "select_rows"]

ACCEPTED = ("accepted: comparisons of columns (as named after --columns) with numbers or "
            "quoted strings, joined by and/or/not and parentheses, e.g. "
            "'n_tokens <= 8e5 and n_params >= 2e4'")

_COMPARE = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


def _bad(node: ast.AST) -> str:
    return f"{type(node).__name__.lower()} {ast.unparse(node)!r} is not allowed"


def _check(node: ast.AST, columns: set[str] | None) -> str | None:
    """The first construct outside the grammar, described, or None."""
    if isinstance(node, ast.BoolOp):
        return next((m for v in node.values if (m := _check(v, columns))), None)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, (ast.Not, ast.Invert)):
            return _check(node.operand, columns)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return _operand(node.operand, columns)
        return _bad(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        return _check(node.left, columns) or _check(node.right, columns)
    if isinstance(node, ast.Compare):
        if not all(isinstance(op, _COMPARE) for op in node.ops):
            return f"comparison {ast.unparse(node)!r} uses an operator other than < <= > >= == !="
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.UnaryOp) and isinstance(side.op, ast.USub):
                side = side.operand
            if (m := _operand(side, columns)):
                return m
        return None
    return _bad(node)


def _operand(node: ast.AST, columns: set[str] | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)) \
            and not isinstance(node.value, bool):
        return None
    if isinstance(node, ast.Name):
        if columns is not None and node.id not in columns:
            return f"{node.id!r} is not a column (columns: {', '.join(sorted(columns))})"
        return None
    return _bad(node)


def check_where(where: str, what: str, columns: Iterable[str] | None = None) -> None:
    """Refuse a selection outside the grammar of the module docstring, before any evaluation.

    Parameters
    ----------
    where : str
        The expression.
    what : str
        Where it came from, for the message ("FILE: --where", "FILE: settings.where").
    columns : iterable of str, optional
        The names it may use; any name when None.

    Raises
    ------
    InputError
        One line naming the expression, the construct refused and what is accepted.
    """
    try:
        tree = ast.parse(where.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"{what} {where!r}: not an expression ({exc.msg}); {ACCEPTED}") from None
    problem = _check(tree.body, None if columns is None else set(columns))
    if problem:
        raise InputError(f"{what} {where!r}: {problem}; {ACCEPTED}")


def select_rows(df: pd.DataFrame, where: str, csv: Path) -> pd.DataFrame:
    """The rows of ``df`` for which ``where`` holds (`harness fit --where`), e.g.
    ``"n_tokens <= 8e5"`` to test how a law fitted on the smaller budgets extrapolates. The
    number of rows left out is kept in ``attrs["n_not_selected"]``.

    Raises
    ------
    InputError
        ``where`` is outside the grammar, is not true/false per row, or selects no row.
    """
    check_where(where, f"{csv}: --where", [c for c in df.columns if c != "line"])
    try:
        mask = df.eval(where, engine="python")
        if not isinstance(mask, pd.Series) or mask.dtype != bool:
            raise TypeError("not a true/false value per row")
    except Exception as exc:  # pandas raises many types for a bad expression  # noqa: BLE001
        raise InputError(f"{csv}: --where {where!r}: {' '.join(str(exc).split())}; "
                         f"{ACCEPTED}") from None
    out = df[mask].reset_index(drop=True)
    if out.empty:
        raise InputError(f"{csv}: --where {where!r} selects none of {len(df)} runs; {ACCEPTED}")
    out.attrs = {**df.attrs, "n_not_selected": int((~mask).sum())}
    return out
