"""Where an export writes: a directory of its own, outside the run, and only its own files.

The exporters (Hugging Face's `save_pretrained`, CTranslate2's converter) may delete files of
the directory they write into. They write into a new directory instead, and their files are then
moved into `out`: a file of the same name is replaced, every other file of `out` stays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from seq2seq.errors import UserError


def check_export_output(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuse an `out=` that is a file, the run directory or inside it, or a non-empty
    directory without overwrite=true."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out={out_dir} is a file; give a directory for the exported model")
    if out_dir.resolve().is_relative_to(run_dir.resolve()):
        raise UserError(
            f"out={out_dir} is inside the run directory {run_dir}; export to a directory of its own"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(
            f"out={out_dir} is not empty; choose a new directory, or give overwrite=true to "
            "replace the files the export writes (other files stay)"
        )


def write_export(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run `write(directory)` on a directory that does not exist yet, then move the files it
    wrote into `out_dir`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {out_dir}: {error.strerror}") from None
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch:
        written = Path(scratch) / "export"
        write(written)
        for path in sorted(written.iterdir()):
            target = out_dir / path.name
            try:
                os.replace(path, target)
            except OSError as error:
                raise UserError(f"cannot write {target}: {error.strerror}") from None


EXPORT_FORMATS = {"hf": "Hugging Face MarianMTModel", "ct2": "CTranslate2"}


def export_run(
    run_dir: Path, to: str, out: Path, checkpoint: str, quantization: str, overwrite: bool
) -> str:
    """Export the run's `checkpoint` weights as a `to` model into `out`; returns what was
    done, in one line."""
    from seq2seq.translate import Translator

    if to not in EXPORT_FORMATS:
        raise UserError(f"unknown export format to={to}; available: {', '.join(EXPORT_FORMATS)}")
    if to == "hf" and quantization != "float32":
        raise UserError("quantization=... applies to to=ct2 only")
    check_export_output(run_dir, out, overwrite)
    translator = Translator.from_run(run_dir, checkpoint, "cpu")
    if to == "hf":
        from seq2seq.export import export_hf

        export_hf(translator.model, translator.tokenizer, out)
    else:
        from seq2seq.export_ct2 import export_ct2

        export_ct2(translator.model, translator.tokenizer, out, quantization)
    return f"exported {run_dir} to {out} ({EXPORT_FORMATS[to]})"
