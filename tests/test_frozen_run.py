"""A frozen run (tests/data/frozen_run: a tiny model, its tokenizer and config, as training wrote
them) must load and translate exactly as it did when it was frozen, whatever changes later.

When the run-directory format changes (`checkpoint.FORMAT_VERSION`), this run stays as it is:
the loader migrates it, and these tests prove that old runs still translate the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_command

from seq2seq import checkpoint, constants
from seq2seq.translate import Translator

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
FROZEN_RUN = DATA / "frozen_run"


def expected() -> list[tuple[str, str, float]]:
    """(source, translation, score of the translation) as recorded when the run was frozen."""
    rows = (
        line.split("\t") for line in (DATA / "frozen_run.expected.tsv").read_text().splitlines()
    )
    return [(source, translation, float(score)) for source, translation, score in rows]


def test_the_frozen_run_translates_as_it_did():
    translator = Translator.from_run(FROZEN_RUN, device="cpu")
    sources = [source for source, _, _ in expected()]
    translations = list(translator.translate_full(sources))
    assert [t.text for t in translations] == [text for _, text, _ in expected()]
    for translation, (_, _, score) in zip(translations, expected(), strict=True):
        if translation.nbest:  # an empty input line has no hypothesis
            assert translation.nbest[0][0] == pytest.approx(score, abs=1e-4)


def test_the_frozen_run_through_the_command():
    sources = "".join(f"{source}\n" for source, _, _ in expected())
    result = run_command("seq2seq-translate", f"run={FROZEN_RUN}", stdin=sources)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [text for _, text, _ in expected()]


def copy_of_frozen_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FROZEN_RUN, tmp_path / "run"))


def test_a_run_of_a_newer_format_is_refused(tmp_path):
    run_dir = copy_of_frozen_run(tmp_path)
    meta = json.loads((run_dir / constants.META).read_text())
    meta["format_version"] = checkpoint.FORMAT_VERSION + 1
    (run_dir / constants.META).write_text(json.dumps(meta))
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin="red dog\n")
    assert_one_line_error(result, "was written by a newer seq2seq")
    assert "upgrade seq2seq" in result.stderr
    assert result.stdout == ""


def test_config_keys_this_version_does_not_know_are_dropped_with_a_warning(tmp_path):
    run_dir = copy_of_frozen_run(tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(
        config.read_text().replace("model:\n", "model:\n  future_option: 3\n", 1)
        + "future_group:\n  knob: true\n"
    )
    sources = "".join(f"{source}\n" for source, _, _ in expected())
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin=sources)
    assert result.returncode == 0, result.stderr
    assert "ignoring settings this version does not know" in result.stderr
    assert "model.future_option" in result.stderr and "future_group" in result.stderr
    assert result.stdout.splitlines() == [text for _, text, _ in expected()]
