"""Damaged run files, and averaging and exporting that must not overwrite what they do not own:
each case is a one-line error (docs/errors.md), and nothing on disk is lost or changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
from helpers import assert_one_line_error, run_command

from seq2seq import checkpoint, constants
from seq2seq.config import TokenizerConfig
from seq2seq.tokenizer import sha256_file, train_sentencepiece

pytestmark = pytest.mark.slow


def copy_run(toy_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    return copy


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> contents)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_unchanged(run_dir: Path, before: dict[str, bytes]) -> None:
    """The run holds the same files, byte for byte; its log may only have grown, and the lock
    file names the last process that held it."""
    after = snapshot(run_dir)
    before.pop(constants.LOCK, None), after.pop(constants.LOCK, None)
    log_before, log_after = before.pop("train.log", b""), after.pop("train.log", b"")
    assert log_after.startswith(log_before)
    assert after.keys() == before.keys()
    assert [name for name in before if after[name] != before[name]] == []


def replace_file(path: Path, data: bytes) -> None:
    """Write a new file (weights files are hard links: never write into the shared one)."""
    path.unlink()
    path.write_bytes(data)


def translate(run_dir: Path, *args: str):
    return run_command("seq2seq-translate", f"run={run_dir}", *args, stdin="red dog\n")


def resume(run_dir: Path):
    return run_command("seq2seq-train", f"run_dir={run_dir}", "train.max_steps=210")


COMMANDS = {"translate": translate, "resume": resume}


# --------------------------------------------------------------------------- config.yaml


DAMAGED_CONFIGS = [
    ("model: [d_model\n", "it is not valid YAML"),
    ("- model\n- data\n", "it is not a mapping of settings with a model section"),
    ("", "it is empty"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("text, problem", DAMAGED_CONFIGS, ids=["syntax", "list", "empty"])
def test_a_damaged_config_is_one_line(toy_run, tmp_path, command, text, problem):
    run_dir = copy_run(toy_run, tmp_path)
    (run_dir / constants.CONFIG).write_text(text)
    before = snapshot(run_dir)
    result = COMMANDS[command](run_dir)
    assert_one_line_error(result, f"{run_dir / constants.CONFIG} is invalid or damaged")
    assert problem in result.stderr
    assert_unchanged(run_dir, before)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_config_with_a_python_tag_is_refused_and_never_runs(toy_run, tmp_path, command):
    run_dir = copy_run(toy_run, tmp_path)
    marker = tmp_path / "payload-ran"
    config = run_dir / constants.CONFIG
    payload = f'model:\n  payload: !!python/object/apply:os.system ["touch {marker}"]\n'
    config.write_text(config.read_text().replace("model:\n", payload, 1))
    before = snapshot(run_dir)
    result = COMMANDS[command](run_dir)
    assert_one_line_error(result, f"{config} is invalid or damaged: it is not valid YAML")
    assert "python/object/apply:os.system" in result.stderr
    assert not marker.exists()
    assert_unchanged(run_dir, before)


# --------------------------------------------------------------------------- meta.json


DAMAGED_METAS = [
    ('{"format_version": 1', "it is not valid JSON"),
    ("[]", "it holds [], not a JSON object"),
    ('{"format_version": "1"}', 'format_version must be an integer, got "1"'),
]


@pytest.mark.parametrize("text, problem", DAMAGED_METAS, ids=["syntax", "list", "string"])
def test_a_damaged_meta_json_is_one_line(toy_run, tmp_path, text, problem):
    run_dir = copy_run(toy_run, tmp_path)
    (run_dir / constants.META).write_text(text)
    before = snapshot(run_dir)
    result = translate(run_dir)
    assert_one_line_error(result, f"{run_dir / constants.META} is invalid or damaged: {problem}")
    assert_unchanged(run_dir, before)


# --------------------------------------------------------------------------- tokenizer.json


def without_hashes(manifest: str) -> str:
    values = json.loads(manifest)
    del values["sha256"]
    return json.dumps(values)


@pytest.mark.parametrize(
    "damage, problem",
    [(lambda text: text[:-3], "it is not valid JSON"), (without_hashes, "it has no sha256")],
    ids=["truncated", "no-sha256"],
)
def test_a_damaged_tokenizer_manifest_is_one_line(toy_run, tmp_path, damage, problem):
    run_dir = copy_run(toy_run, tmp_path)
    manifest = run_dir / constants.TOKENIZER_MANIFEST
    manifest.write_text(damage(manifest.read_text()))
    before = snapshot(run_dir)
    result = translate(run_dir)
    assert_one_line_error(result, f"{manifest} is invalid or damaged: {problem}")
    assert_unchanged(run_dir, before)


# --------------------------------------------------------------------------- another tokenizer


def swap_in_a_tokenizer_of(run_dir: Path, corpus: Path, vocab_size: int) -> Path:
    """Replace the run's SentencePiece model by one of another size, with its hashes updated
    where the run records them (so only the size tells them apart)."""
    manifest = json.loads((run_dir / constants.TOKENIZER_MANIFEST).read_text())
    spm_file = run_dir / manifest["files"]["src"]
    texts = [
        *(corpus / "train.en").read_text().splitlines(),
        *(corpus / "train.de").read_text().splitlines(),
    ]
    cfg = TokenizerConfig(vocab_size=vocab_size, byte_fallback=False)
    replace_file(spm_file, train_sentencepiece(iter(texts), cfg))
    hashes = {spm_file.name: sha256_file(spm_file)}
    manifest["sha256"] = hashes
    (run_dir / constants.TOKENIZER_MANIFEST).write_text(json.dumps(manifest))
    meta = json.loads((run_dir / constants.META).read_text())
    meta["tokenizer_sha256"] = hashes
    (run_dir / constants.META).write_text(json.dumps(meta))
    return spm_file


@pytest.mark.parametrize("command", COMMANDS)
def test_a_tokenizer_of_another_size_is_one_line(toy_run, toy_corpus, tmp_path, command):
    run_dir = copy_run(toy_run, tmp_path)
    spm_file = swap_in_a_tokenizer_of(run_dir, toy_corpus, 40)
    before = snapshot(run_dir)
    result = COMMANDS[command](run_dir)
    assert_one_line_error(
        result,
        f"tokenizer file {spm_file} has 40 pieces but the model's src vocabulary has 64: "
        "it is not the tokenizer this model was trained with",
    )
    assert_unchanged(run_dir, before)


# --------------------------------------------------------------------------- weights


def test_weights_with_other_tensor_names_give_a_short_line_with_a_count(toy_run, tmp_path):
    weights = safetensors.torch.load_file(str(toy_run / constants.BEST_WEIGHTS))
    other = tmp_path / "renamed.safetensors"
    safetensors.torch.save_file({f"model.{k}": v for k, v in weights.items()}, str(other))
    result = translate(toy_run, f"checkpoint={other}")
    assert_one_line_error(result, f"{other} does not fit this model: tensors ")
    line = result.stderr.strip()
    assert len(line.replace(str(other), "")) < 500, line
    assert f"{len(weights)} unexpected (model." in line
    assert f"... and {len(weights) - 3} more)" in line


# --------------------------------------------------------------------------- seq2seq-average


def average(run_dir: Path, *args: str):
    return run_command("seq2seq-average", f"run={run_dir}", *args)


def temporary_files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.name.endswith(".tmp")]


def test_average_with_a_damaged_checkpoint_names_the_file(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    damaged = checkpoint.step_dirs(run_dir)[0] / constants.WEIGHTS
    replace_file(damaged, damaged.read_bytes()[:1000])
    before = snapshot(run_dir)
    result = average(run_dir)
    assert_one_line_error(result, f"cannot read weights {damaged}")
    assert_unchanged(run_dir, before)


@pytest.mark.parametrize(
    "out, message",
    [
        ("directory", "is a directory; give a file name ending in .safetensors"),
        ("missing/avg.safetensors", "directory"),
    ],
    ids=["directory", "missing-directory"],
)
def test_average_into_a_directory_or_a_missing_one_is_one_line(toy_run, tmp_path, out, message):
    run_dir = copy_run(toy_run, tmp_path)
    (tmp_path / "directory").mkdir()
    before = snapshot(run_dir)
    result = average(run_dir, f"out={tmp_path / out}")
    assert_one_line_error(result, message)
    assert_unchanged(run_dir, before)
    assert temporary_files(tmp_path) == []
    assert list((tmp_path / "directory").iterdir()) == []
    assert not (tmp_path / "missing").exists()


def run_files(run_dir: Path) -> list[Path]:
    """Files of a run that averaged weights must never replace."""
    latest = checkpoint.latest_checkpoint(run_dir)
    return [
        run_dir / constants.CONFIG,
        run_dir / constants.META,
        run_dir / constants.TOKENIZER_MANIFEST,
        run_dir / constants.BEST_WEIGHTS,
        run_dir / constants.TRAIN_STATE,
        latest / constants.WEIGHTS,
    ]


@pytest.mark.parametrize(
    "index", range(6), ids=["config", "meta", "tokenizer", "best", "state", "step"]
)
def test_average_never_overwrites_a_file_of_the_run(toy_run, tmp_path, index):
    run_dir = copy_run(toy_run, tmp_path)
    target = run_files(run_dir)[index]
    before = snapshot(run_dir)
    result = average(run_dir, f"out={target}")
    assert_one_line_error(result, f"out={target} ")
    assert_unchanged(run_dir, before)
    assert temporary_files(run_dir) == []


def test_average_replaces_its_own_averaged_weights(toy_run, tmp_path):
    run_dir = copy_run(toy_run, tmp_path)
    first = average(run_dir, "last=1")
    averaged = run_dir / constants.AVERAGE_WEIGHTS
    once = averaged.read_bytes()
    second = average(run_dir, "last=2")
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert averaged.read_bytes() != once


# --------------------------------------------------------------------------- seq2seq-export


def export(run_dir: Path, out: Path, *args: str, to: str = "hf"):
    return run_command("seq2seq-export", f"run={run_dir}", f"to={to}", f"out={out}", *args)


@pytest.mark.parametrize("inside", ["", "exported"], ids=["run", "inside-run"])
def test_export_into_the_run_directory_is_refused(toy_run, tmp_path, inside):
    run_dir = copy_run(toy_run, tmp_path)
    before = snapshot(run_dir)
    result = export(run_dir, run_dir / inside, "overwrite=true")
    assert_one_line_error(result, "is inside the run directory")
    assert_unchanged(run_dir, before)


def test_export_to_an_existing_file_is_refused(toy_run, tmp_path):
    out = tmp_path / "model.txt"
    out.write_text("mine\n")
    result = export(toy_run, out)
    assert_one_line_error(result, f"out={out} is a file")
    assert out.read_text() == "mine\n"


def unrelated_files(out: Path) -> dict[str, bytes]:
    """Files an export does not write, among them one named like a weights shard (which
    Hugging Face's save_pretrained deletes from the directory it saves into)."""
    out.mkdir()
    files = {"notes.txt": b"mine\n", "model-00001-of-00002.safetensors": b"not a shard\n"}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def test_export_into_a_non_empty_directory_needs_overwrite(toy_run, tmp_path):
    out = tmp_path / "exported"
    files = unrelated_files(out)
    result = export(toy_run, out)
    assert_one_line_error(result, f"out={out} is not empty")
    assert "overwrite=true" in result.stderr
    assert snapshot(out) == files


@pytest.mark.parametrize(
    "to, written", [("hf", "config.json"), ("ct2", "model.bin")], ids=["hf", "ct2"]
)
def test_export_with_overwrite_keeps_the_files_it_does_not_write(toy_run, tmp_path, to, written):
    pytest.importorskip({"hf": "transformers", "ct2": "ctranslate2"}[to])
    out = tmp_path / "exported"
    files = unrelated_files(out)
    (out / written).write_text("an older export\n")
    result = export(toy_run, out, "overwrite=true", to=to)
    assert result.returncode == 0, result.stderr[-2000:]
    after = snapshot(out)
    assert {name: after[name] for name in files} == files
    assert after[written] != b"an older export\n"
    assert [path.name for path in out.iterdir() if path.name.startswith(".")] == []
