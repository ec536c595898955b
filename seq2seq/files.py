"""Reading and writing the toolkit's files safely: text lines decoded strictly (an error names the
line), and writes that never leave half a file under the final name."""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from seq2seq.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"


def check_file(path: Path) -> None:
    """A readable file must exist and not be a directory."""
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a file")


def open_binary(path: Path) -> BinaryIO:
    """`path` for reading bytes; `.gz` files are decompressed."""
    stream = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return cast(BinaryIO, stream)


def open_source(path: str | Path) -> tuple[BinaryIO, str]:
    """(byte stream, name for messages) of a file or of standard input ("-")."""
    if str(path) == "-":
        return sys.stdin.buffer, "standard input"
    check_file(Path(path))
    return open_binary(Path(path)), str(path)


def read_lines(path: str | Path) -> Iterator[str]:
    """Lines of a UTF-8 text file, a `.gz` file or standard input ("-"), newlines removed;
    invalid UTF-8 is an error naming the line."""
    stream, name = open_source(path)
    try:
        for number, raw in enumerate(stream, start=1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise UserError(invalid_utf8(name, number, raw)) from None
    except (OSError, EOFError) as error:  # unreadable or truncated gzip
        raise UserError(f"cannot read {name}: {error}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def invalid_utf8(name: str, number: int, raw: bytes) -> str:
    if number == 1 and raw.startswith(GZIP_MAGIC):
        return f"{name} is gzip-compressed; give a file name ending in .gz or decompress it"
    return f"{name}: invalid UTF-8 on line {number}"


def make_directory(path: Path, argument: str) -> Path:
    """Create the output directory `path` (and its parents) given as `argument=`; something
    other than a directory in the way is an error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(
            f"{argument}={path} exists and is not a directory; give a directory"
        ) from None
    except OSError as error:
        raise UserError(f"cannot create directory {path}: {error.strerror}") from None
    return path


def is_special_file(path: Path) -> bool:
    """A FIFO, device or socket: written in place, never replaced by a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed over `path`, on failure
    removed. A FIFO or device at `path` is yielded itself and written in place."""
    if is_special_file(path):
        yield path
        return
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through a temporary file and a rename."""
    with replaced_atomically(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
