"""Where translations go: one line per input line (or `nbest` TSV rows), to standard output or to
a file that appears complete or not at all; what was finished survives a failure or a kill."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from seq2seq.errors import UserError
from seq2seq.files import is_special_file, read_lines, temporary_name
from seq2seq.translate import Translation, Translator


def format_translation(index: int, translation: Translation, nbest: int) -> str:
    """One line, or with decode.nbest > 1 exactly `nbest` TSV lines: input index (from 0),
    rank (from 1), score (length-normalised log-probability, nan for an empty input), text."""
    if nbest == 1:
        return translation.text + "\n"
    missing = nbest - len(translation.nbest)  # an empty input line has no hypotheses
    rows = translation.nbest + [(float("nan"), "")] * max(missing, 0)
    return "".join(
        f"{index}\t{rank}\t{score:.4f}\t{text}\n"
        for rank, (score, text) in enumerate(rows, start=1)
    )


def write_translations(
    translator: Translator, input_path: str, output: str, chunk_size: int = 5000
) -> None:
    """Translate the lines of `input_path` ("-": stdin) into `output` ("-": stdout)."""
    lines = read_lines(input_path)
    translations = translator.translate_stream(lines, chunk_size=chunk_size)
    if output == "-":
        write_to_stdout(translations, translator.decode.nbest)
    else:
        write_to_file(translator, translations, Path(output))
    warn_about_truncation(translator)


def write_to_stdout(translations: Iterator[Translation], nbest: int) -> None:
    if hasattr(sys.stdout, "reconfigure"):  # UTF-8 like the input, whatever the locale
        sys.stdout.reconfigure(encoding="utf-8")
    for index, translation in enumerate(translations):
        sys.stdout.write(format_translation(index, translation, nbest))
    sys.stdout.flush()


def check_output_path(output: Path) -> None:
    if output.is_dir():
        raise UserError(f"output={output} is a directory; give a file name")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")


def write_to_file(translator: Translator, translations: Iterator[Translation], output: Path):
    """A regular file is written under a temporary name and renamed at the end; a FIFO or
    device is written in place."""
    check_output_path(output)
    special = is_special_file(output)
    target = output if special else temporary_name(output)
    try:
        stream = open(target, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror}") from None
    written = 0
    try:
        with stream, progress_bar(translator), terminate_as_exit():
            for index, translation in enumerate(translations):
                stream.write(format_translation(index, translation, translator.decode.nbest))
                written = index + 1
        if not special:
            os.replace(target, output)
            partial_name(output).unlink(missing_ok=True)  # an earlier run's
    except BaseException:
        if not special:
            keep_partial_output(target, output, written)
        raise
    finally:
        if not special:
            target.unlink(missing_ok=True)


def warn_about_truncation(translator: Translator) -> None:
    if translator.truncated:
        print(
            f"warning: {translator.truncated} input line(s) longer than "
            f"{translator.max_source_tokens} tokens were truncated",
            file=sys.stderr,
        )


@contextlib.contextmanager
def progress_bar(translator: Translator) -> Iterator[None]:
    """A progress bar on stderr (when it is a terminal), advanced after every batch."""
    with tqdm(unit=" sentences", file=sys.stderr, disable=None, smoothing=0.1) as bar:
        translator.progress = bar.update
        try:
            yield
        finally:
            translator.progress = None


def partial_name(output: Path) -> Path:
    return output.with_name(f"{output.name}.partial")


def keep_partial_output(temporary: Path, output: Path, written: int) -> None:
    """After a failure or Ctrl-C, the translations finished so far stay in <output>.partial."""
    if written == 0 or not temporary.is_file():
        return
    partial = partial_name(output)
    try:
        os.replace(temporary, partial)
    except OSError as error:
        print(f"stopped; could not keep the finished translations: {error}", file=sys.stderr)
        return
    print(f"stopped: the first {written} translation(s) are in {partial}", file=sys.stderr)


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) ends the process like Ctrl-C, through `finally` blocks,
    instead of at once; only SIGKILL cannot be caught."""

    def exit_on(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
