"""Run directories: atomic checkpoints, safe loading, format version, checkpoint averaging.
The name of every file of a run directory is in `seq2seq.constants` (the run-directory contract).

A checkpoint is written into a temporary directory and renamed into place, so a crash at any
moment leaves every earlier checkpoint whole. The top-level files are hard links (or copies) of
the newest checkpoint, replaced atomically. Nothing is pickled: weights are safetensors, and
`train_state.pt` holds only tensors and plain containers, loaded with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

import seq2seq
from seq2seq.constants import (
    AVERAGE_WEIGHTS,
    BEST_WEIGHTS,
    CHECKPOINTS,
    LOCK,
    META,
    TRAIN_STATE,
    WEIGHTS,
)
from seq2seq.errors import DamagedFileError, UserError
from seq2seq.files import temporary_name, write_atomically

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
AVERAGED = "averaged"  # the metadata key of averaged weights: how many checkpoints
# the type of each field of meta.json, and its name in JSON
META_FIELDS = {
    "format_version": (int, "an integer"),
    "tokenizer_sha256": (dict, "an object"),
    "choices": (dict, "an object"),
}


def write_json_atomically(path: Path, value: dict) -> None:
    write_atomically(path, (json.dumps(value, indent=2) + "\n").encode())


def write_meta(
    run_dir: Path, tokenizer_sha256: dict[str, str], choices: dict[str, str] | None = None
) -> None:
    write_json_atomically(
        run_dir / META,
        {
            "format_version": FORMAT_VERSION,
            "seq2seq_version": seq2seq.__version__,
            "torch_version": torch.__version__,
            "tokenizer_sha256": tokenizer_sha256,
            "choices": choices or {},  # config groups chosen on the command line (recipe, model)
        },
    )


def read_json_object(path: Path) -> dict:
    """The JSON object a run file holds; anything else is a damaged file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DamagedFileError(path, "it is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DamagedFileError(path, f"it is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, f"it holds {json.dumps(value)[:40]}, not a JSON object")
    return value


def read_meta(run_dir: Path) -> dict:
    path = run_dir / META
    if not path.is_file():
        raise UserError(f"{run_dir} is not a seq2seq run directory ({META} is missing)")
    meta = read_json_object(path)
    for key, (kind, name) in META_FIELDS.items():
        if key in meta and type(meta[key]) is not kind:
            raise DamagedFileError(path, f"{key} must be {name}, got {json.dumps(meta[key])}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{run_dir} was written by a newer seq2seq (format "
            f"{meta['format_version']}); upgrade seq2seq to read it"
        )
    return meta


def create_run_dir(run_dir: Path) -> None:
    """Make the run directory (and its parents) if needed; a file in its place is an error."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir={run_dir} is a file, not a directory; give a directory path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run directory {run_dir}: {error.strerror}") from None


@contextlib.contextmanager
def locked(run_dir: Path, user: str = "training") -> Iterator[None]:
    """Hold the run directory's lock (an OS lock on run_dir/.lock, which names this process's
    PID): a second training of the same run is refused. The OS releases the lock when the
    process ends, however it ends, so a killed run never leaves it held. (`user`: what holds
    it, for the message; prepared data directories are locked the same way.)"""
    create_run_dir(run_dir)
    try:
        descriptor = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"cannot write in run directory {run_dir}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
            who = f"PID {holder}" if holder.isdigit() else "another process"
            raise UserError(
                f"{run_dir} is in use by another {user} ({who}); wait for it to end or "
                "stop it, then run this command again"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A last line cut short (the process was killed while
    writing it) is skipped with a warning; any other line that is not a record is an error."""
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines[: last + 1]):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and {"kind", "step"} <= record.keys():
            records.append(record)
        elif i == last:
            log.warning("%s: ignoring its last line, which was cut short: %.60s", path, line)
        else:
            raise UserError(
                f"{path}: line {i + 1} is not a metrics record (a JSON object with kind and "
                "step); fix or delete that line"
            )
    return records


def fsync(path: Path) -> None:
    """Flush a file's (or a directory's) contents to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same file as `source`, atomically replacing any old `target`."""
    temporary = temporary_name(target)
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:08d}"


def step_of(step_directory: Path) -> int:
    """The step of a checkpoint directory `step_N`."""
    return int(step_directory.name.split("_")[1])


def step_dirs(run_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary directories are ignored)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    complete = [
        p
        for p in root.glob("step_*")
        if p.is_dir() and (p / WEIGHTS).is_file() and (p / TRAIN_STATE).is_file()
    ]
    return sorted(complete)


def save_weights(model: nn.Module, path: Path, step: int) -> None:
    try:
        safetensors.torch.save_model(
            model, str(path), metadata={"format_version": str(FORMAT_VERSION), "step": str(step)}
        )
    except SafetensorError as error:  # its I/O failures (a full disk) as the OSError they are
        raise OSError(str(error)) from None


def save_checkpoint(
    run_dir: Path, step: int, model: nn.Module, train_state: dict, keep_last: int
) -> Path:
    """Write checkpoint `step`, point the top-level files at it, prune old step checkpoints."""
    final = step_dir(run_dir, step)
    temporary = temporary_name(final)
    for leftover in final.parent.glob(".step_*"):  # from a crash during an earlier save
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        save_weights(model, temporary / WEIGHTS, step)
        buffer = io.BytesIO()  # serialised in memory so a full disk surfaces as an OSError
        torch.save(train_state, buffer)
        (temporary / TRAIN_STATE).write_bytes(buffer.getbuffer())
        for written in (temporary / WEIGHTS, temporary / TRAIN_STATE, temporary):
            fsync(written)  # complete on disk before it becomes visible under its final name
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)  # give the space back
        raise
    if final.is_dir():  # a re-save of the same step
        remove_directory(final)
    os.replace(temporary, final)
    fsync(final.parent)
    link_or_copy(final / WEIGHTS, run_dir / WEIGHTS)
    link_or_copy(final / TRAIN_STATE, run_dir / TRAIN_STATE)
    for old in step_dirs(run_dir)[:-keep_last]:
        remove_directory(old)
    return final


def remove_directory(path: Path) -> None:
    """Delete a step checkpoint: renamed away first, so a crash never leaves half of one."""
    trash = path.with_name(f".{path.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash)


def mark_best(run_dir: Path, checkpoint: Path) -> None:
    link_or_copy(checkpoint / WEIGHTS, run_dir / BEST_WEIGHTS)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = step_dirs(run_dir)
    return checkpoints[-1] if checkpoints else None


def load_train_state(path: Path) -> dict:
    """The training state; refuses anything that is not plain data (no code runs on load)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"cannot load {path} safely: {str(error).splitlines()[0]}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing or unreadable one is a one-line error."""
    if not path.is_file():
        raise UserError(f"weights file {path} not found")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as error:
        raise UserError(f"cannot read weights {path}: {error}") from None


def first_few(items: list[str], shown: int = 3) -> str:
    """The first `shown` items and a count of the others: a line that stays short."""
    more = f"; ... and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`, naming the first missing, unexpected or
    mis-shaped tensors and counting the others."""
    state = read_weights(path)
    expected = model.state_dict()
    mismatched = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if mismatched:
        raise UserError(
            f"{path} does not fit this model (its shape != the config's): {first_few(mismatched)}"
        )
    missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    problems = [
        f"{len(names)} {kind} ({first_few(sorted(names))})"
        for kind, names in (("missing", missing), ("unexpected", unexpected))
        if names
    ]
    if problems:
        raise UserError(f"{path} does not fit this model: tensors {', '.join(problems)}")


def average_checkpoints(paths: list[Path], output: Path) -> None:
    """Average the weights of several checkpoints of one model into `output` (safetensors)."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, tensor in read_weights(path).items():
            total[name] = total.get(name, 0) + tensor.double()
    averaged = {name: (tensor / len(paths)).float().contiguous() for name, tensor in total.items()}
    metadata = {"format_version": str(FORMAT_VERSION), AVERAGED: str(len(paths))}
    try:
        write_atomically(output, safetensors.torch.save(averaged, metadata=metadata))
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror or error}") from None


def holds_averaged_weights(path: Path) -> bool:
    """Whether `path` is a safetensors file that `average_checkpoints` wrote."""
    try:
        with safetensors.safe_open(str(path), "pt") as weights:
            return AVERAGED in (weights.metadata() or {})
    except Exception:  # not safetensors at all: a directory, a config, a damaged file
        return False


def check_average_output(output: Path) -> None:
    """`out=` of seq2seq-average must be a new .safetensors file or averaged weights to replace,
    never another file (a run's config, tokenizer, checkpoint weights, training state)."""
    if output.is_dir():
        raise UserError(f"out={output} is a directory; give a file name ending in .safetensors")
    if output.suffix != ".safetensors":
        raise UserError(f"out={output} must be a file name ending in .safetensors")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
    if output.exists() and not holds_averaged_weights(output):
        raise UserError(
            f"out={output} exists and does not hold averaged weights: it is not overwritten; "
            "choose a new file name"
        )


def average_last(run_dir: Path, last: int, out: Path | None = None) -> str:
    """Average the `last` step checkpoints of `run_dir` into `out` (default: the run's
    averaged-weights file); returns what was done, in one line."""
    paths = [step / WEIGHTS for step in step_dirs(run_dir)][-last:]
    if not paths:
        raise UserError(f"no checkpoints in {run_dir / CHECKPOINTS}")
    out = out or run_dir / AVERAGE_WEIGHTS
    check_average_output(out)
    average_checkpoints(paths, out)
    return (
        f"averaged {len(paths)} checkpoints ({paths[0].parent.name} .. "
        f"{paths[-1].parent.name}) into {out}"
    )
