"""Row selection for `harness fit --where EXPR` (and the same expression stored in fits.json).

pandas' ``DataFrame.eval`` evaluates attribute access and method calls, and its own
pre-processing (backticks, comments) can make it see another expression than a checker does; so
an expression taken from a file (a stored fits.json is data from elsewhere) could write files or
run code. Expressions are therefore parsed by Python, checked against a small grammar, and
evaluated here, on the checked tree, over the frame's columns: pandas never evaluates them.

    expr    := expr ("and" | "or" | "&" | "|") expr  |  ("not" | "~") expr  |  "(" expr ")"
               (& | ~ read as and, or, not, below comparisons in precedence, as pandas does)
             | operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand)+
    operand := column name | number | string | "-" number

Anything else (attributes, calls, subscripts, arithmetic, names that are not columns, and the
characters # ` @ \\ and line breaks) is refused before evaluation, with one line naming it.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import InputError

__all__ = ["ACCEPTED", "check_where", "select_rows", "where_columns"]

ACCEPTED = (
    "accepted: comparisons of columns (as named after --columns) with numbers or "
    "quoted strings, joined by and/or/not and parentheses, e.g. "
    "'n_tokens <= 8e5 and n_params >= 2e4'"
)

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
            if m := _operand(side, columns):
                return m
        return None
    return _bad(node)


def _operand(node: ast.AST, columns: set[str] | None) -> str | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float, str))
        and not isinstance(node.value, bool)
    ):
        return None
    if isinstance(node, ast.Name):
        if columns is not None and node.id not in columns:
            return f"{node.id!r} is not a column (columns: {', '.join(sorted(columns))})"
        return None
    return _bad(node)


def _as_python(where: str) -> str:
    """pandas reads & | ~ as and / or / not, below the comparisons in precedence
    ('a > 1 & b < 2' is '(a > 1) and (b < 2)'): spelled so for Python's parser."""
    words = {"&": "and", "|": "or", "~": "not"}
    toks = [
        words.get(t.string, t.string) if t.type == tokenize.OP else t.string
        for t in tokenize.generate_tokens(io.StringIO(where).readline)
    ]
    return " ".join(t for t in toks if t.strip())


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
    _parse(where, what, columns)


def where_columns(where: str, what: str) -> set[str]:
    """The column names ``where`` uses (checked as `check_where` checks it)."""
    tree = _parse(where, what, None)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _parse(where: str, what: str, columns: Iterable[str] | None) -> ast.expr:
    """The checked tree of ``where`` (see `check_where`)."""
    bad_chars = sorted({c for c in where if c in "#`@\\" or c in _BREAKS})
    if bad_chars:
        raise InputError(
            f"{what} {where!r}: the characters {''.join(bad_chars)!r} are not allowed; {ACCEPTED}"
        )
    try:
        tree = ast.parse(_as_python(where.strip()), mode="eval")
    except (SyntaxError, tokenize.TokenError) as exc:
        raise InputError(f"{what} {where!r}: not an expression ({exc.msg}); {ACCEPTED}") from None
    if isinstance(tree.body, (ast.Name, ast.Constant)):
        raise InputError(
            f"{what} {where!r}: a value alone is not a true/false condition; {ACCEPTED}"
        )
    problem = _check(tree.body, None if columns is None else set(columns))
    if problem:
        raise InputError(f"{what} {where!r}: {problem}; {ACCEPTED}")
    return tree.body


# Characters str.splitlines breaks on (a line break would hide what follows from a reader).
_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_OPS = {
    ast.Lt: "__lt__",
    ast.LtE: "__le__",
    ast.Gt: "__gt__",
    ast.GtE: "__ge__",
    ast.Eq: "__eq__",
    ast.NotEq: "__ne__",
}


def _evaluate(node: ast.expr, df: pd.DataFrame) -> Any:
    """Evaluate a checked tree over ``df``: a column is its Series, and/or/not act row-wise."""
    if isinstance(node, ast.BoolOp):
        parts = [_as_bool(_evaluate(v, df), df) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.BinOp):  # & and | (only these pass the check)
        a, b = _as_bool(_evaluate(node.left, df), df), _as_bool(_evaluate(node.right, df), df)
        return (a & b) if isinstance(node.op, ast.BitAnd) else (a | b)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return -_evaluate(node.operand, df)
        return ~_as_bool(_evaluate(node.operand, df), df)
    if isinstance(node, ast.Compare):
        out = None
        left = _evaluate(node.left, df)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comp, df)
            part = _as_bool(_compare(left, right, _OPS[type(op)]), df)
            out = part if out is None else out & part
            left = right
        return out
    if isinstance(node, ast.Name):
        return df[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    raise AssertionError(f"unchecked node {ast.dump(node)}")  # _check refuses everything else


def _compare(left: Any, right: Any, op: str) -> Any:
    if isinstance(left, pd.Series):
        return getattr(left, op)(right)
    if isinstance(right, pd.Series):  # 3 < n: the reflected comparison
        flip = {"__lt__": "__gt__", "__le__": "__ge__", "__gt__": "__lt__", "__ge__": "__le__"}
        return getattr(right, flip.get(op, op))(left)
    return getattr(left, op)(right)


def _as_bool(v: Any, df: pd.DataFrame) -> pd.Series:
    if isinstance(v, pd.Series):
        if v.dtype != bool:
            raise TypeError(f"{v.name!r} is not a true/false value per row")
        return v
    if isinstance(v, bool):
        return pd.Series(v, index=df.index)
    raise TypeError(f"{v!r} is not a true/false value per row")


def select_rows(df: pd.DataFrame, where: str, csv: Path) -> pd.DataFrame:
    """The rows of ``df`` for which ``where`` holds (`harness fit --where`), e.g.
    ``"n_tokens <= 8e5"`` to test how a law fitted on the smaller budgets extrapolates. The
    number of rows left out is kept in ``attrs["n_not_selected"]``.

    Raises
    ------
    InputError
        ``where`` is outside the grammar, is not true/false per row, or selects no row.
    """
    tree = _parse(where, f"{csv}: --where", [c for c in df.columns if c != "line"])
    try:
        mask = _as_bool(_evaluate(tree, df), df)
    except (TypeError, ValueError) as exc:  # e.g. a number compared with a string column
        raise InputError(
            f"{csv}: --where {where!r}: {' '.join(str(exc).split())}; {ACCEPTED}"
        ) from None
    out = df[mask].reset_index(drop=True)
    if out.empty:
        raise InputError(f"{csv}: --where {where!r} selects none of {len(df)} runs; {ACCEPTED}")
    out.attrs = {**df.attrs, "n_not_selected": int((~mask).sum())}
    return out
