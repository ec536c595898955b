"""The documentation does not lie: every command it shows parses, every test it cites exists,
and the site builds."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from seq2seq.arguments import with_decode_overrides
from seq2seq.cli import KEY_VALUE_COMMANDS, to_config
from seq2seq.config import DecodeConfig, register_configs
from seq2seq.overrides import check_overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md"]
HYDRA_COMMANDS = {"seq2seq-train", "seq2seq-info"}


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
    if command in HYDRA_COMMANDS:
        check_overrides(arguments)
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
