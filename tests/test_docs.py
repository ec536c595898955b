"""The documentation does not lie: every command it shows parses, every test it cites exists,
and the site builds."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import get_type_hints

import pytest
from hydra import compose, initialize_config_module

from seq2seq.arguments import KEY_VALUE_COMMANDS, with_decode_overrides
from seq2seq.cli import prepare_overrides, to_config
from seq2seq.config import DecodeConfig, register_configs
from seq2seq.overrides import check_overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md"]
HYDRA_COMMANDS = {"seq2seq-train", "seq2seq-info", "seq2seq-prepare"}


def shown_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every seq2seq command in a ```bash block of the docs."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():  # join continued lines
                line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
                line = re.sub(r"<(?! )[^<>]*(?<! )>", "X", line)  # placeholders such as <run dir>
                line = line.replace("$(which seq2seq-train)", "seq2seq-train")
                for segment in re.split(r"&&|\|", line):
                    words = shlex.split(segment)
                    while (
                        words
                        and words[0] in ("torchrun",)
                        or words[:1]
                        and words[0].startswith("--")
                    ):
                        words = words[1:]
                    if words and words[0].startswith("seq2seq-"):
                        found.append((page.name, without_redirections(words)))
    return found


def without_redirections(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("<", ">"):
            skip = True
        else:
            kept.append(word)
    return kept


COMMANDS = shown_commands()


def test_the_docs_show_every_command():
    shown = {argv[0] for _, argv in COMMANDS}
    assert shown >= HYDRA_COMMANDS | set(KEY_VALUE_COMMANDS)


@pytest.mark.parametrize("page, argv", COMMANDS, ids=[" ".join(a)[:70] for _, a in COMMANDS])
def test_every_command_in_the_docs_parses(page, argv):
    command, arguments = argv[0], [a for a in argv[1:] if a not in ("--cfg", "job")]
    if command == "seq2seq-prepare":
        arguments = prepare_overrides(arguments)
    if command in HYDRA_COMMANDS:
        sweep = "-m" in arguments
        arguments = [a for a in arguments if a != "-m"]
        check_overrides(arguments, multirun=sweep)
        if sweep:  # each job's config: the first value of every swept key
            arguments = [a.split(",")[0] for a in arguments]
        register_configs()
        with initialize_config_module("seq2seq.conf", version_base="1.3"):
            to_config(compose("config", overrides=arguments))
        return
    accepted = KEY_VALUE_COMMANDS[command]
    decode = [a for a in arguments if a.startswith("decode.")]
    for argument in arguments:
        key, sep, _ = argument.partition("=")
        assert sep and (key in accepted or argument in decode), f"{page}: {argv}"
    with_decode_overrides(DecodeConfig(), decode)


def test_every_test_the_docs_cite_exists():
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
    missing = set()
    for page in PAGES:
        for name, star in re.findall(r"(?<![.\w])(test_[a-z][a-z0-9_]+)(\*?)", page.read_text()):
            if (ROOT / "tests" / f"{name}.py").exists():
                continue  # a test file, not a test
            # test_name_* stands for a family of tests
            found = any(d.startswith(name) for d in defined) if star else name in defined
            if not found:
                missing.add(f"{page.name}: {name}{star}")
    assert not missing


def test_the_site_builds_without_warnings(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "concepts" / "index.html").is_file()


CONFIG_PAGE = ROOT / "docs" / "configuration.md"


def tables(page: Path) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every table of a page; cells are split at unescaped `|`."""
    found, lines = [], page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and not (i and lines[i - 1].startswith("|")):
            table = []
            for row in lines[i:]:
                if not row.startswith("|"):
                    break
                table.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]])
            found.append((table[0], table[2:]))  # table[1] is the |---| line
    return found


def composed_settings(node: object, prefix: str = "") -> dict[str, tuple[object, type]]:
    """key -> (value, type) of every leaf setting of a composed config, recursively."""
    settings = {}
    types = get_type_hints(type(node))
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            settings |= composed_settings(value, f"{prefix}{f.name}.")
        else:
            settings[f"{prefix}{f.name}"] = (value, types[f.name])
    return settings


def shown_default(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def test_the_configuration_page_lists_every_setting_with_its_default_and_choices():
    register_configs()
    with initialize_config_module("seq2seq.conf", version_base="1.3"):
        settings = composed_settings(to_config(compose("config")))
    rows = {row[0].strip("`"): row for _, table in tables(CONFIG_PAGE) for row in table}
    differences = [f"{key}: not on the page" for key in settings if key not in rows]
    differences += [f"{key}: not a setting" for key in rows if key not in settings]
    for key, row in rows.items():
        if len(row) != 3:
            differences.append(f"{key}: {len(row)} cells instead of 3 (escape | as \\|)")
        elif key in settings:
            value, kind = settings[key]
            if row[1] != f"`{shown_default(value)}`":
                differences.append(f"{key}: default {row[1]}, composed `{shown_default(value)}`")
            choices = (
                [c.value for c in kind] if isinstance(kind, type) and issubclass(kind, Enum) else []
            )
            for choice in choices:
                if not re.search(rf"(?<![\w.]){re.escape(choice)}(?!\w)", row[2]):
                    differences.append(f"{key}: choice {choice} is not described")
    assert not differences, "docs/configuration.md:\n" + "\n".join(differences)


ARCHITECTURE_PAGE = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "seq2seq"


def package_files() -> list[Path]:
    """The package's modules, speed-ups (`fast/`) included."""
    return sorted(PACKAGE.glob("*.py")) + sorted((PACKAGE / "fast").glob("*.py"))


def module_names() -> set[str]:
    """Every module of the package as its path below `seq2seq/`, e.g. `fast/kernels`."""
    return {
        str(path.relative_to(PACKAGE).with_suffix(""))
        for path in package_files()
        if path.stem != "__init__"
    }


def package_definitions() -> dict[str, set[str]]:
    """module -> the functions, classes and methods it defines (`def`, `class`)."""
    definitions = {}
    for path in package_files():
        tree = ast.parse(path.read_text())
        definitions[path.stem] = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
    return definitions


def package_uses() -> set[str]:
    """Every name the package's code refers to (calls, attributes, bases), docstrings excluded."""
    used = set()
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    return used


def code_column_names(page: Path) -> list[str]:
    """The dotted names in backticks in the `code` column of the page's tables."""
    names = []
    for header, rows in tables(page):
        if "code" in header:
            column = header.index("code")
            for row in rows:
                names += re.findall(r"`([A-Za-z_][\w.]*)`", row[column])
    return names


def test_every_function_the_architecture_table_names_is_what_the_package_runs():
    definitions = package_definitions()
    defined = set().union(*definitions.values())
    used = package_uses()
    names = code_column_names(ARCHITECTURE_PAGE)
    assert "MultiHeadAttention" in names  # the table was found
    problems = []
    for dotted in names:
        parts = [p for p in dotted.split(".") if p != "forward" and not p.startswith("__")]
        if not parts:  # `forward` alone: the module call
            continue
        name = parts[-1]
        if parts[0] in definitions and name not in definitions[parts[0]]:
            problems.append(f"`{dotted}`: not defined in seq2seq/{parts[0]}.py")
        elif name in defined and name not in used:
            problems.append(f"`{dotted}`: defined, but nothing in seq2seq/ calls it")
    assert not problems, "docs/architecture.md:\n" + "\n".join(problems)


def test_the_readme_layout_names_every_module():
    rows = [
        row[0]
        for header, rows in tables(ROOT / "README.md")
        if header[:1] == ["path"]
        for row in rows
    ]
    named = {path for cell in rows for path in re.findall(r"`seq2seq/(\w+)\.py`", cell)}
    for cell in rows:  # `seq2seq/fast/` | ... `kernels` ...: the row of the speed-ups
        if "`seq2seq/fast/`" in cell:
            (row,) = [r for header, rs in tables(ROOT / "README.md") for r in rs if r[0] == cell]
            named |= {f"fast/{name}" for name in re.findall(r"`(\w+)`", row[1])}
    assert sorted(module_names() - named) == [], "modules missing from the layout of README.md"
    assert sorted(named - module_names()) == [], "the layout of README.md names missing modules"


def test_the_architecture_page_names_every_module():
    (rows,) = [rows for header, rows in tables(ARCHITECTURE_PAGE) if header == ["stage", "modules"]]
    named = set()
    for _, cell in rows:
        named |= set(re.findall(r"`(\w+)`", cell.split("`fast/`")[0]))
        if "`fast/`" in cell:  # `fast/` (`dropout`, `autocast`, ...)
            inside = cell.split("`fast/`")[1].split(")")[0]
            named |= {f"fast/{name}" for name in re.findall(r"`(\w+)`", inside)}
    assert sorted(module_names() - named) == [], "modules missing from docs/architecture.md"
    assert sorted(named - module_names()) == [], "docs/architecture.md names missing modules"
