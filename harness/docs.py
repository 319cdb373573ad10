"""The configuration reference, ``docs/configuration.md``, rendered from the settings dataclasses.

Every setting of `harness.config` is a dataclass field with its docstring written as a string
literal right after it (an attribute docstring). Python keeps no such docstring at run time, so
they are read from the source of each class with `ast`. The sections, their order and their
fields come from `ExperimentConfig`'s fields (a field whose type is a settings dataclass is a
``[table]``, one holding a tuple of them an array of tables, ``[[table.key]]``), so a new field
or section shows up in the reference by itself; ``tests/repo/test_docs.py`` fails until the
committed file is regenerated:

    python -m harness.docs > docs/configuration.md

Standard library only (and `harness.config`, which does not import torch).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import math
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from harness.config import ExperimentConfig

__all__ = [
    "REGENERATE",
    "Section",
    "class_doc",
    "config_reference",
    "field_docs",
    "main",
    "sections",
    "toml_value",
]

REGENERATE = "python -m harness.docs > docs/configuration.md"
"""The command that rewrites the committed reference."""

# Written after the sections that every experiment has: [cluster] only matters to `harness
# submit`, and its [[cluster.by_size]] tables then end the file (as in the README's table).
_WRITTEN_LAST = ("cluster",)


@dataclass(frozen=True)
class Section:
    """One TOML table of an experiment file and the dataclass that holds its keys."""

    path: str
    """Dotted key of the table: '' for the top-level keys, 'model', 'cluster.by_size'."""
    cls: type
    """The settings dataclass whose fields are the table's keys."""
    array: bool = False
    """An array of tables (``[[path]]``, one per item of a tuple field) rather than a table."""

    @property
    def header(self) -> str:
        """The TOML header that opens the table: ``[model]``, ``[[cluster.by_size]]``."""
        if not self.path:
            return ""
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"


# --- structure ---------------------------------------------------------------------------------


def _nested(tp: Any) -> tuple[type, bool] | None:
    """(dataclass, is_array) when a field of type ``tp`` is a table or an array of tables."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp, False
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if args and dataclasses.is_dataclass(args[0]) and isinstance(args[0], type):
            return args[0], True
    return None


def _is_row(f: dataclasses.Field[Any], hints: dict[str, Any]) -> bool:
    """A key written inside the section: everything but a nested (non-array) table."""
    nested = _nested(hints[f.name])
    return nested is None or nested[1]


def sections(root: type = ExperimentConfig) -> list[Section]:
    """The tables of an experiment file, in the order a user writes them.

    First the top-level keys (``name``, ``description``), then each table field of ``root`` in
    field order (``[cluster]`` last, see `_WRITTEN_LAST`), each directly followed by the
    tables nested in it (``[[cluster.by_size]]``).
    """
    out: list[Section] = []

    def visit(section: Section) -> None:
        out.append(section)
        hints = typing.get_type_hints(section.cls)
        children = []
        for f in dataclasses.fields(section.cls):
            nested = _nested(hints[f.name])
            if nested is not None:
                path = f"{section.path}.{f.name}" if section.path else f.name
                children.append(Section(path, nested[0], nested[1]))
        if not section.path:
            children.sort(key=lambda s: s.path in _WRITTEN_LAST)  # stable: field order otherwise
        for child in children:
            visit(child)

    visit(Section("", root))
    return out


# --- docstrings from the source ----------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _class_node(cls: type, tree: ast.Module | None) -> ast.ClassDef:
    """The class statement of ``cls``: from ``tree`` (a parsed module source) if given, else
    from the class's own source (`inspect.getsource`)."""
    if tree is None:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node
    raise LookupError(f"class {cls.__name__} not found in the source")


def _docs(node: ast.ClassDef) -> dict[str, str]:
    docs: dict[str, str] = {}
    for stmt, after in itertools.pairwise(node.body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = _normalise(after.value.value)
    return docs


def class_doc(cls: type, source: str | None = None) -> str:
    """The class docstring of ``cls`` as written in the source, whitespace-normalised ('' when
    there is none; a dataclass's ``__doc__`` is never empty, it falls back to the signature)."""
    return _normalise(
        ast.get_docstring(_class_node(cls, None if source is None else ast.parse(source))) or ""
    )


def field_docs(cls: type, source: str | None = None) -> dict[str, str]:
    """Field name -> its attribute docstring, whitespace-normalised (undocumented fields are
    absent). ``source``: a module's text to read the class from instead of its real source."""
    return _docs(_class_node(cls, None if source is None else ast.parse(source)))


# --- rendering values and types ----------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as TOML writes it: true/false, quoted strings, tuples as [..]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + items + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "no default"
    if value is None:
        return "unset"
    return f"`{toml_value(value)}`"


def _type_text(node: ast.expr, tables: dict[str, str]) -> str:
    """An annotation, readable: ``int | Literal["auto"]`` -> ``int or "auto"``; ``None`` (no
    TOML value, a key left out) is dropped; ``tables``: class name -> the header of its table."""

    def options(n: ast.expr) -> list[str]:
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
            return options(n.left) + options(n.right)
        if isinstance(n, ast.Constant) and n.value is None:
            return []
        if isinstance(n, ast.Subscript):
            name = ast.unparse(n.value).rsplit(".", 1)[-1]
            args = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            if name == "Literal":
                return [toml_value(ast.literal_eval(a)) for a in args]
            if name in ("Union", "Optional"):
                return [o for a in args for o in options(a)]
            if name in ("tuple", "Tuple", "list", "List"):
                item = args[0]
                if isinstance(item, ast.Name) and item.id in tables:
                    return [f"array of tables (`{tables[item.id]}`)"]
                inner = options(item)
                text = inner[0] if len(inner) == 1 else "(" + " or ".join(inner) + ")"
                return [f"list of {text}"]
        if isinstance(n, ast.Name) and n.id in tables:
            return [f"table (`{tables[n.id]}`)"]
        return [ast.unparse(n)]

    return " or ".join(options(node)) or "unset"


def _annotation(f: dataclasses.Field[Any]) -> ast.expr:
    text = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
    return ast.parse(text, mode="eval").body


# --- the document ------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


_HEAD = f"""\
# Configuration reference

<!-- Generated by harness/docs.py from harness/config.py; do not edit by hand. -->

Every key an experiment file (`experiments/NAME.toml`) accepts, with its type, its default and
what it does. This file is generated from the settings dataclasses in `harness/config.py` and
their field docstrings; do not edit it by hand. After changing a setting, regenerate it with

    {REGENERATE}

(`tests/repo/test_docs.py` fails until it matches the code). Settings resolve as dataclass
defaults < the TOML file < `--section.field=value` overrides on the command line; `python -m
harness.config EXP.toml [--section.field=value ...]` prints the result. Unknown keys, wrong
types and out-of-range values are refused with one line naming the key.
"""


def config_reference(root: type = ExperimentConfig, *, source: str | None = None) -> str:
    """The Markdown configuration reference of ``root`` (docs/configuration.md).

    Pure: the same classes give the same text. ``source``: the text of the module that defines
    the classes, to read the docstrings from instead of the classes' real source (tests render
    from an edited copy of harness/config.py).
    """
    tree = None if source is None else ast.parse(source)
    found = sections(root)
    tables = {s.cls.__name__: s.header for s in found if s.path}
    parts = [_HEAD]
    for section in found:
        node = _class_node(section.cls, tree)
        docs = _docs(node)
        hints = typing.get_type_hints(section.cls)
        level = "##" if section.path.count(".") == 0 else "###"
        title = f"`{section.header}`" if section.path else "Top-level keys"
        lines = [f"{level} {title}", ""]
        intro = _normalise(ast.get_docstring(node) or "")
        if intro:
            lines += [intro, ""]
        if not section.path:
            lines += ["Written before the first table.", ""]
        elif section.array:
            parent, key = section.path.rsplit(".", 1)
            lines += [
                f"One `{section.header}` table per item of `{section.path}`, or a list of "
                f"inline tables, `{key} = [{{...}}, ...]` under `[{parent}]`.",
                "",
            ]
        lines += ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(section.cls):
            if not _is_row(f, hints):
                continue
            row = [
                f"`{f.name}`",
                _type_text(_annotation(f), tables),
                _default(f),
                docs.get(f.name, ""),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.docs``: print the reference (redirect it to docs/configuration.md)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print(f"usage: {REGENERATE}", file=sys.stderr)
        return 2
    sys.stdout.write(config_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
