"""Where outputs go: one line per input line whatever the decoded text holds, FIFOs and devices
written in place, and output mistakes (a directory, a file, a malformed results.json) reported
in one line with nothing lost."""

from __future__ import annotations

import gzip
import os
import stat
import threading
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_command

from seq2seq.arguments import EVALUATE_ARGS
from seq2seq.config import DecodeConfig
from seq2seq.evaluate import run_evaluation
from seq2seq.inspection import attention_report
from seq2seq.outputs import write_translations
from seq2seq.tokenizer import Tokenizer
from seq2seq.translate import Translator, one_line

pytestmark = pytest.mark.slow

LINES = ["red dog runs", "", "the big cat", "a small bird near the house"]
# Every character `str.splitlines` splits at; byte fallback can decode to any of them.
BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
LONG = " ".join(["red dog runs near the big house"] * 6)  # 42 words


def with_line_breaks(decode):
    """A tokenizer's decode (bound or not) whose every text holds every kind of line break."""

    def decode_with_breaks(*args):
        return [f"a\nb\u2028c\rd{BREAKS}{text}{BREAKS}" for text in decode(*args)]

    return decode_with_breaks


def test_one_line_removes_every_line_break_splitlines_knows():
    splitting = [chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) == 2]
    assert sorted(splitting) == sorted(BREAKS)  # the list above is complete
    for char in splitting:
        assert one_line(f"a {char} b{char}") == "a b"
        assert one_line(f"a{char}{char}\r\nb") == "a b"
    assert one_line(" plain text\tstays ") == " plain text\tstays "


@pytest.mark.parametrize("nbest", [1, 3])
def test_translations_with_line_breaks_stay_one_line_each(toy_run, tmp_path, monkeypatch, nbest):
    decode = DecodeConfig(beam=3, nbest=nbest)
    translator = Translator.from_run(toy_run, device="cpu", decode=decode)
    tokenizer = translator.tokenizer
    monkeypatch.setattr(tokenizer, "decode", with_line_breaks(tokenizer.decode))
    output = tmp_path / "output.txt"
    write_translations(translator, str(write_source(tmp_path)), str(output))
    rows = output.read_text(encoding="utf-8").splitlines()
    assert len(rows) == len(LINES) * nbest
    texts = [row.split("\t")[3] for row in rows] if nbest > 1 else rows
    if nbest > 1:
        assert all(len(row.split("\t")) == 4 for row in rows)
    assert [bool(text) for text in texts] == [bool(line) for line in LINES for _ in range(nbest)]
    assert all(text.startswith("a b c d ") for text in texts if text)


@pytest.mark.parametrize("source", ["src", "split"])
def test_evaluate_writes_one_hypothesis_line_per_source(
    toy_run, toy_corpus, tmp_path, monkeypatch, capsys, source
):
    monkeypatch.setattr(Tokenizer, "decode", with_line_breaks(Tokenizer.decode))
    args = dict(EVALUATE_ARGS, run=str(toy_run), out=str(tmp_path), device="cpu")
    if source == "src":
        args.update(src=str(toy_corpus / "test.en"), ref=str(toy_corpus / "test.de"))
    else:
        args.update(split="test")
    run_evaluation(args, [], ("bleu",), False)
    [hypotheses] = tmp_path.glob("hyp.*.txt")
    references = (toy_corpus / "test.de").read_text().splitlines()
    lines = hypotheses.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(references)
    assert all(line.startswith("a b c d ") for line in lines)
    assert "BLEU = " in capsys.readouterr().out


# --------------------------------------------------------------------------- translate outputs


def write_source(tmp_path: Path) -> Path:
    source = tmp_path / "input.txt"
    source.write_text("".join(f"{line}\n" for line in LINES))
    return source


def test_output_to_a_fifo_is_written_in_place(toy_run, tmp_path):
    source = write_source(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        result = run_command(
            "seq2seq-translate", f"run={toy_run}", f"input={source}", f"output={fifo}"
        )
    finally:
        if reader.is_alive() and not received:  # the command never opened it: free the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    expected = Translator.from_run(toy_run, device="cpu").translate(LINES)
    assert received[0].decode().split("\n") == [*expected, ""]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "input.txt"]


def character_device(tmp_path: Path) -> Path:
    """A null device of our own where we may create one; /dev/null only where it cannot be
    replaced (/dev not writable)."""
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return device
    except PermissionError:
        if os.access("/dev", os.W_OK):
            pytest.skip("cannot create a device, and /dev/null could be replaced")
        return Path("/dev/null")


def test_output_to_a_character_device_leaves_it_a_device(toy_run, tmp_path):
    source = write_source(tmp_path)
    device = character_device(tmp_path)
    assert stat.S_ISCHR(device.stat().st_mode)
    result = run_command(
        "seq2seq-translate", f"run={toy_run}", f"input={source}", f"output={device}"
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(device.stat().st_mode)
    assert not list(device.parent.glob(f".{device.name}*"))  # no temporary beside it


def test_output_to_a_directory_is_one_line(toy_run, tmp_path):
    source = write_source(tmp_path)
    (tmp_path / "out").mkdir()
    result = run_command(
        "seq2seq-translate", f"run={toy_run}", f"input={source}", f"output={tmp_path / 'out'}"
    )
    assert_one_line_error(result, f"output={tmp_path / 'out'} is a directory; give a file name")
    assert list((tmp_path / "out").iterdir()) == []


def test_gzip_input_translates_like_the_plain_file(toy_run, tmp_path):
    compressed = tmp_path / "input.txt.gz"
    compressed.write_bytes(gzip.compress("".join(f"{line}\n" for line in LINES).encode()))
    result = run_command("seq2seq-translate", f"run={toy_run}", f"input={compressed}")
    assert result.returncode == 0, result.stderr
    expected = Translator.from_run(toy_run, device="cpu").translate(LINES)
    assert result.stdout.split("\n") == [*expected, ""]


def test_gzip_bytes_on_standard_input_are_named(toy_run):
    result = run_command("seq2seq-translate", f"run={toy_run}", stdin=gzip.compress(b"red dog\n"))
    assert_one_line_error(result, "standard input is gzip-compressed; ")
    assert result.stdout == b""


# --------------------------------------------------------------------------- attention


def test_attention_maps_are_cut_to_max_tokens_with_a_warning(
    toy_run, tmp_path, monkeypatch, capsys
):
    from seq2seq import plots

    drawn = []

    def record(maps, source, target, out_dir, prefix):
        drawn.append((maps, source, target))
        return {}

    monkeypatch.setattr(plots, "attention_figures", record)
    translator = Translator.from_run(toy_run, device="cpu")
    attention_report(translator, ["red dog"], tmp_path / "short", max_tokens=8)
    assert capsys.readouterr().err == ""
    translator.decode = DecodeConfig(min_len=20, max_len_b=30)  # a translation of 20+ pieces
    attention_report(translator, [LONG], tmp_path / "long", max_tokens=8)
    (_, short_source, short_target), (maps, source, target) = drawn
    assert short_source[-1] == short_target[-1] == "</s>"  # whole, ends included
    assert len(source) == 9 and source[-1] == "</s>"  # 8 pieces and the eos the model reads
    assert len(target) == 8 and "</s>" not in target  # the first 8 pieces of the translation
    assert maps.cross.shape[-2:] == (8, 9)
    assert maps.encoder.shape[-2:] == (9, 9) and maps.decoder.shape[-2:] == (8, 8)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: sentence 1: the attention maps show the first 8 of ")
    assert warnings[0].endswith(" pieces of its source (max_tokens= sets how many)")
    assert warnings[1].endswith(" pieces of its translation (max_tokens= sets how many)")


def test_attention_command_takes_max_tokens(toy_run, tmp_path):
    out = tmp_path / "maps"
    result = run_command(
        "seq2seq-attention", f"run={toy_run}", f"text={LONG}", f"out={out}", "max_tokens=6"
    )
    assert result.returncode == 0, result.stderr
    assert "the attention maps show the first 6 of the" in result.stderr
    assert (out / "index.html").is_file()


def test_attention_out_that_is_a_file_is_one_line(toy_run, tmp_path):
    out = tmp_path / "maps"
    out.write_text("keep me\n")
    result = run_command("seq2seq-attention", f"run={toy_run}", "text=red dog", f"out={out}")
    assert_one_line_error(result, f"out={out} exists and is not a directory; give a directory")
    assert out.read_text() == "keep me\n"


# --------------------------------------------------------------------------- evaluate outputs


def hypotheses_and_references(tmp_path: Path) -> tuple[Path, Path]:
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("A red dog runs\nThe big cat\n")
    ref.write_text("A red dog runs\nThe small cat\n")
    return hyp, ref


@pytest.mark.parametrize("translating", [False, True])
def test_evaluate_out_that_is_a_file_is_one_line(toy_run, toy_corpus, tmp_path, translating):
    hyp, ref = hypotheses_and_references(tmp_path)
    out = tmp_path / "results"
    out.write_text("keep me\n")
    given = [f"run={toy_run}", f"src={toy_corpus / 'test.en'}"] if translating else [f"hyp={hyp}"]
    result = run_command("seq2seq-evaluate", *given, f"ref={ref}", f"out={out}")
    assert_one_line_error(result, f"out={out} exists and is not a directory; give a directory")
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.txt", "ref.txt", "results"]


@pytest.mark.parametrize(
    "content, problem", [(b'{"hyp.txt": ', "not valid JSON"), (b"[1, 2]\n", "not a JSON object")]
)
def test_a_malformed_results_json_is_one_line_after_the_scores(tmp_path, content, problem):
    hyp, ref = hypotheses_and_references(tmp_path)
    results = tmp_path / "results.json"
    results.write_bytes(content)
    result = run_command("seq2seq-evaluate", f"hyp={hyp}", f"ref={ref}", "metrics=bleu,chrf")
    assert_one_line_error(result, f"cannot add the scores to {results}: {problem}")
    assert "fix or delete it" in result.stderr
    assert result.stdout.startswith("BLEU = ") and "\nchrF2 = " in result.stdout
    assert results.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.txt", "ref.txt", "results.json"]
