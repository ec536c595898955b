"""Users' mistakes and hostile files, through the commands as users run them: each case is a
one-line error with a non-zero exit and no traceback (docs/errors.md lists them all)."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import assert_one_line_error, run_command, tiny_model
from toy import toy_overrides, write_toy_corpus

pytestmark = pytest.mark.slow


def corpus_with(tmp_path: Path, en: bytes, de: bytes) -> Path:
    directory = tmp_path / "corpus"
    directory.mkdir()
    for split in ("train", "valid", "test"):
        (directory / f"{split}.en").write_bytes(en if split == "train" else b"a b\n")
        (directory / f"{split}.de").write_bytes(de if split == "train" else b"A B\n")
    return directory


TRAINING_DATA_MISTAKES = [
    (b"a\nb\nc\n", b"x\ny\n", "train.en has 3 lines but"),
    (b"", b"", "are empty"),
    (b"fine\n\xff bad\n", b"x\ny\n", "train.en: invalid UTF-8 on line 2"),
]


@pytest.mark.parametrize("en, de, message", TRAINING_DATA_MISTAKES)
def test_bad_training_data(tmp_path, en, de, message):
    corpus = corpus_with(tmp_path, en, de)
    result = run_command("seq2seq-train", *toy_overrides(corpus, tmp_path / "run"))
    assert_one_line_error(result, message)


def test_missing_training_file(tmp_path):
    corpus = corpus_with(tmp_path, b"a\n", b"b\n")
    (corpus / "train.de").unlink()
    result = run_command("seq2seq-train", *toy_overrides(corpus, tmp_path / "run"))
    assert_one_line_error(result, "file not found")


def test_directory_where_a_training_file_is_expected(tmp_path):
    corpus = corpus_with(tmp_path, b"a\n", b"b\n")
    (corpus / "train.de").unlink()
    (corpus / "train.de").mkdir()
    result = run_command("seq2seq-train", *toy_overrides(corpus, tmp_path / "run"))
    assert_one_line_error(result, "is a directory")


def test_multi30k_language_not_in_the_data(tmp_path, multi30k):
    result = run_command(
        "seq2seq-train",
        "recipe=multi30k_en_de",
        f"data.root={multi30k}",
        "data.tgt_lang=xx",
        f"run_dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "language 'xx' is not in Multi30k; available: en, de, fr, cs")


def copy_run(toy_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    return copy


def test_missing_weights_file(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    (run_dir / "model.best.safetensors").unlink()
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin="red dog\n")
    assert_one_line_error(result, "model.best.safetensors not found")


def test_truncated_weights_file(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    weights = run_dir / "model.best.safetensors"
    data = weights.read_bytes()
    weights.unlink()  # it is a hard link: write a new file, not into the checkpoint's
    weights.write_bytes(data[: len(data) // 2])
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin="red dog\n")
    assert_one_line_error(result, "cannot read weights")


def test_tokenizer_that_does_not_match_meta_json(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    meta = (run_dir / "meta.json").read_text()
    (run_dir / "meta.json").write_text(meta.replace('"spm.model": "', '"spm.model": "0'))
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin="red dog\n")
    assert_one_line_error(result, "not the one this model was trained with")


def test_weights_of_another_model_name_the_mismatching_tensors(toy_run, tmp_path):
    other = tmp_path / "other.safetensors"

    safetensors.torch.save_model(tiny_model(), str(other))
    result = run_command(
        "seq2seq-translate", f"run={toy_run}", f"checkpoint={other}", stdin="red dog\n"
    )
    assert_one_line_error(result, "encoder.layers.0.ffn.fc1.weight (48, 32) != (64, 32)")


def test_run_directory_that_does_not_exist(tmp_path):
    result = run_command("seq2seq-evaluate", f"run={tmp_path / 'nope'}", "split=test")
    assert_one_line_error(result, "is not a run directory")


class Payload:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_train_state_carrying_code_is_refused_and_never_runs(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    marker = tmp_path / "payload-ran"
    latest = sorted((run_dir / "checkpoints").iterdir())[-1]
    state = latest / "train_state.pt"
    state.unlink()
    torch.save({"step": Payload(marker)}, state)
    result = run_command("seq2seq-train", f"run_dir={run_dir}", "train.max_steps=80")
    assert_one_line_error(result, "cannot load")
    assert "safely" in result.stderr
    assert not marker.exists()


def test_weights_file_that_is_a_pickle_is_refused_and_never_runs(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    marker = tmp_path / "payload-ran"
    weights = run_dir / "model.best.safetensors"
    weights.unlink()
    weights.write_bytes(pickle.dumps(Payload(marker)))
    result = run_command("seq2seq-translate", f"run={run_dir}", stdin="red dog\n")
    assert_one_line_error(result, "cannot read weights")
    assert not marker.exists()


def test_config_values_are_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    root = f"$(touch {marker})"
    result = run_command(
        "seq2seq-train",
        "recipe=multi30k_en_de",
        f"data.root='{root}'",
        f"run_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_gzipped_training_data_with_invalid_utf8_names_the_line(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        with gzip.open(corpus / f"{split}.en.gz", "wb") as stream:
            stream.write(b"ok\n" * 5 + b"\xc3(\n")
        with gzip.open(corpus / f"{split}.de.gz", "wb") as stream:
            stream.write(b"ok\n" * 6)
    result = run_command("seq2seq-train", *toy_overrides(corpus, tmp_path / "run"))
    assert_one_line_error(result, "train.en.gz: invalid UTF-8 on line 6")


@pytest.mark.parametrize(
    "argument, message",
    [
        ("precision=fp64", "unknown precision 'fp64'; use fp32, bf16, fp16 or auto"),
        ("precision=fp16", "precision=fp16 needs a CUDA device"),
        ("device=gpu", "unknown device 'gpu'"),
    ],
)
def test_translate_device_and_precision_mistakes(toy_run, argument, message):
    result = run_command("seq2seq-translate", f"run={toy_run}", argument, stdin="red dog\n")
    assert_one_line_error(result, message)


def test_output_into_a_missing_directory(toy_run, tmp_path):
    result = run_command(
        "seq2seq-translate",
        f"run={toy_run}",
        f"output={tmp_path / 'nope' / 'out.txt'}",
        stdin="red dog\n",
    )
    assert_one_line_error(result, "does not exist")


def test_a_closed_pipe_ends_translation_quietly(toy_run):
    import subprocess

    from helpers import installed_script

    process = subprocess.Popen(
        [installed_script("seq2seq-translate"), f"run={toy_run}", "chunk=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdin.write(b"red dog runs\n" * 2000)
    process.stdin.close()
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert "Traceback" not in stderr


def test_over_long_validation_and_test_lines_are_truncated_not_fatal(tmp_path):
    corpus = write_toy_corpus(tmp_path / "corpus")
    long_line = " ".join(["red dog runs"] * 200)  # 600 words: beyond the tiny model's positions
    for split in ("valid", "test"):
        (corpus / f"{split}.en").write_text(f"red dog\n{long_line}\n")
        (corpus / f"{split}.de").write_text(f"Dog Red\n{long_line.title()}\n")
    result = run_command(
        "seq2seq-train",
        *toy_overrides(corpus, tmp_path / "run", train__max_steps=4, train__validate_every=2),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BLEU" in result.stdout
