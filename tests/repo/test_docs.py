"""The configuration reference: docs/configuration.md matches the code, and every setting is
documented."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

import harness.config
from harness.config import (
    ClusterConfig,
    DownstreamConfig,
    ExecutionConfig,
    ExperimentConfig,
    GridConfig,
    SizeResources,
    TrainConfig,
    to_dict,
)
from harness.docs import REGENERATE, class_doc, config_reference, field_docs, main, sections

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
SOURCE = inspect.getsource(harness.config)


def rows(text: str, header: str) -> dict[str, list[str]]:
    """Key -> the cells of its row in the table of section ``header`` ('' = top-level keys)."""
    title = f"`{header}`" if header else "Top-level keys"
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == title)
    out: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ", 3)]
            out[cells[0].strip("`")] = cells
    return out


def row_line(text: str, header: str, key: str) -> str:
    """The whole rendered line of ``key`` in section ``header``."""
    cells = rows(text, header)[key]
    return "| " + " | ".join(cells) + " |"


def undocumented(source: str | None = None) -> list[str]:
    """Dotted names of the settings without an attribute docstring (the tables of
    ExperimentConfig are documented by their class docstrings)."""
    missing = []
    for section in sections():
        docs = field_docs(section.cls, source)
        hints = typing.get_type_hints(section.cls)
        for f in dataclasses.fields(section.cls):
            if section.cls is ExperimentConfig and dataclasses.is_dataclass(hints[f.name]):
                continue
            if not docs.get(f.name):
                missing.append(f"{section.path}.{f.name}".lstrip("."))
    return missing


def test_committed_reference_is_up_to_date() -> None:
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    expected = config_reference()
    if committed != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    "docs/configuration.md (committed)",
                    "config_reference() (from harness/config.py)",
                )
            )[:60]
        )
        pytest.fail(
            f"docs/configuration.md is out of date with harness/config.py; regenerate it with\n"
            f"    {REGENERATE}\n{diff}",
            pytrace=False,
        )


def test_every_setting_has_a_docstring() -> None:
    assert undocumented() == [], "add a docstring (a string literal right after the field)"
    for section in sections():
        assert class_doc(section.cls), f"{section.cls.__name__} needs a class docstring"


def test_a_field_without_docstring_is_caught() -> None:
    doc = re.compile(r'\n    """Pack up to this many runs into one SLURM job.*?"""', re.S)
    stripped, n = doc.subn("", SOURCE)
    assert n == 1
    assert undocumented(stripped) == ["cluster.runs_per_job"]


def test_sections_in_the_order_a_user_writes_them() -> None:
    headers = [s.header for s in sections()]
    assert headers[0] == ""
    hints = typing.get_type_hints(ExperimentConfig)
    tables = [name for name, tp in hints.items() if dataclasses.is_dataclass(tp)]
    assert sorted(s.path for s in sections() if s.path and "." not in s.path) == sorted(tables)
    order = [headers.index(f"[{t}]") for t in ("model", "data", "train", "grid", "execution")]
    assert order == sorted(order)
    assert headers.index("[downstream]") < headers.index("[cluster]")
    assert headers[headers.index("[cluster]") + 1] == "[[cluster.by_size]]"
    assert headers[headers.index("[grid]") + 1 : headers.index("[grid]") + 3] == [
        "[[grid.shapes]]",
        "[[grid.points]]",
    ]
    text = config_reference()
    assert text.startswith("# Configuration reference\n")
    assert REGENERATE in text.split("## ", 1)[0]
    assert set(rows(text, "")) == {"name", "description"}


def test_known_fields_render_exactly() -> None:
    text = config_reference()
    train, execution, cluster = TrainConfig(), ExecutionConfig(), ClusterConfig()
    lr_doc = field_docs(TrainConfig)["lr"]
    assert row_line(text, "[train]", "lr") == f"| `lr` | float | `{train.lr!r}` | {lr_doc} |"
    assert execution.workers == "auto"
    assert row_line(text, "[execution]", "workers") == (
        f'| `workers` | int or "auto" | `"auto"` | {field_docs(ExecutionConfig)["workers"]} |'
    )
    assert cluster.runs_per_job == 1
    assert row_line(text, "[cluster]", "runs_per_job") == (
        f"| `runs_per_job` | int | `1` | {field_docs(ClusterConfig)['runs_per_job']} |"
    )
    assert rows(text, "[execution]")["progress"][1:3] == ["bool", "`true`"]
    assert rows(text, "[grid]")["seeds"][1:3] == ["list of int", "`[0]`"]
    assert rows(text, "[grid]")["points"][1] == "array of tables (`[[grid.points]]`)"
    assert rows(text, "[downstream]")["methods"][1:3] == [
        'list of ("full" or "lora")',
        '`["full", "lora"]`',
    ]
    assert rows(text, "[[cluster.by_size]]")["mem_gb"][1:3] == ["float", "unset"]
    assert rows(text, "[[cluster.by_size]]")["min_n_params"][2] == "no default"
    assert rows(text, "")["name"][2] == "no default"


def test_every_default_reads_back_as_toml() -> None:
    text = config_reference()
    for section in sections():
        table = rows(text, section.header)
        for f in dataclasses.fields(section.cls):
            if f.name not in table:  # a [table] of its own
                continue
            cell = table[f.name][2]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                assert cell == "no default"
                continue
            value: Any = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if value is None:
                assert cell == "unset", (section.path, f.name)
                continue
            assert cell.startswith("`") and cell.endswith("`"), (section.path, f.name, cell)
            parsed = tomllib.loads(f"v = {cell[1:-1]}")["v"]
            assert parsed == to_dict(value), (section.path, f.name, cell)
            assert type(parsed) is type(to_dict(value)), (section.path, f.name, cell)


def test_a_changed_docstring_changes_the_reference() -> None:
    old = '"""Peak learning rate at width lr_ref_width."""'
    new = '"""Peak learning rate, as changed by a test."""'
    assert SOURCE.count(old) == 1
    changed = config_reference(source=SOURCE.replace(old, new))
    assert changed != REFERENCE.read_text(encoding="utf-8")  # the drift test would fail
    assert rows(changed, "[train]")["lr"][3] == "Peak learning rate, as changed by a test."
    # Nested tables and class docstrings are read from the given source too.
    old_doc = field_docs(SizeResources)["qos"]
    edited = SOURCE.replace(
        '"""sbatch --qos for these runs; left out = cluster.qos."""', '"""Edited\n    qos."""'
    )
    assert rows(config_reference(source=edited), "[[cluster.by_size]]")["qos"][3] == "Edited qos."
    assert old_doc != "Edited qos."
    edited = SOURCE.replace(
        '"""Where and how runs execute.', '"""Edited execution.\n\n    Where and how runs execute.'
    )
    assert "Edited execution. Where and how runs execute." in config_reference(source=edited)
    assert config_reference(source=SOURCE) == config_reference()


def test_docstrings_are_whitespace_normalised() -> None:
    docs = field_docs(GridConfig)
    assert all(" ".join(d.split()) == d for d in docs.values())
    assert docs["shapes"].startswith("Explicit shapes, e.g. [{n_layer = 2, n_embd = 64}]")
    assert "  " not in field_docs(DownstreamConfig)["pooling"]


def test_main_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == config_reference()
    assert main(["--check"]) == 2
    assert REGENERATE in capsys.readouterr().err


def test_import_does_not_import_torch() -> None:
    code = "import sys, harness.docs; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- the guide and its links ---------------------------------------------------------------------

GUIDES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "results").glob("**/README.md")),
    ROOT / "bench" / "README.md",
    ROOT / "slurm" / "README.md",
    ROOT / "CHANGELOG.md",
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for page in GUIDES:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_a_guide_of_at_most_15_kb() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 15 * 1024


def test_every_committed_experiment_has_a_readme() -> None:
    dirs = {p.parent for p in (ROOT / "results").glob("**/runs.csv")}
    missing = [
        str(d.relative_to(ROOT))
        for d in dirs
        if not any((a / "README.md").exists() for a in (d, d.parent))
    ]
    assert not missing, f"results directories without a README.md: {missing}"
