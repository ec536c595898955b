"""seq2seq-translate and seq2seq-evaluate on a trained toy run, as users run them."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import assert_one_line_error, installed_script, random_tokens, run_command, tiny_model

from seq2seq import translate
from seq2seq.arguments import with_decode_overrides
from seq2seq.config import DecodeConfig, Precision
from seq2seq.errors import UserError
from seq2seq.translate import Translator

pytestmark = pytest.mark.slow


def run(name: str, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    return run_command(name, *args, stdin=stdin)


LINES = ["red dog runs", "", "the big cat", "   ", "a small bird near the house"]


def test_every_input_line_gets_exactly_one_output_line(toy_run):
    result = run("seq2seq-translate", f"run={toy_run}", stdin="\n".join(LINES) + "\n")
    assert result.returncode == 0, result.stderr
    output = result.stdout.split("\n")[:-1]
    assert len(output) == len(LINES)
    assert output[1] == "" and output[3] == ""
    for i in (0, 2, 4):  # each line translates as it does alone
        alone = run("seq2seq-translate", f"run={toy_run}", stdin=LINES[i] + "\n").stdout
        assert output[i] == alone.rstrip("\n")


def test_python_api_gives_the_same_translations(toy_run):
    translator = Translator.from_run(toy_run, device="cpu")
    cli = run("seq2seq-translate", f"run={toy_run}", stdin="\n".join(LINES) + "\n")
    assert translator.translate(LINES) == cli.stdout.split("\n")[:-1]


def test_an_over_long_line_is_truncated_with_a_warning_and_neighbours_are_unaffected(toy_run):
    long_line = " ".join(["dog"] * 10_000)
    alone = run("seq2seq-translate", f"run={toy_run}", stdin="the big cat\n").stdout
    result = run(
        "seq2seq-translate", f"run={toy_run}", stdin=f"the big cat\n{long_line}\nthe big cat\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 3
    assert lines[0] == lines[2] == alone.strip()
    assert "1 input line(s) longer than" in result.stderr
    assert "Traceback" not in result.stderr


def test_files_in_and_out_leave_no_temporary_file(toy_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(LINES) + "\n")
    output = tmp_path / "out" / "output.txt"
    output.parent.mkdir()
    result = run("seq2seq-translate", f"run={toy_run}", f"input={source}", f"output={output}")
    assert result.returncode == 0, result.stderr
    assert len(output.read_text().split("\n")[:-1]) == len(LINES)
    assert [p.name for p in output.parent.iterdir()] == ["output.txt"]


def test_nbest_writes_ranked_tsv_lines(toy_run):
    result = run(
        "seq2seq-translate",
        f"run={toy_run}",
        "decode.strategy=beam",
        "decode.beam=4",
        "decode.nbest=3",
        stdin="red dog runs\n\nthe big cat\n",
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(str(i), str(r)) for i in range(3) for r in (1, 2, 3)]
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)
    assert [r[2:] for r in rows[3:6]] == [["nan", ""]] * 3  # an empty line: 3 empty rows


def test_decoding_options_can_be_overridden_in_python(toy_run):
    greedy = Translator.from_run(toy_run, device="cpu", decode=DecodeConfig(strategy="greedy"))
    beam1 = Translator.from_run(toy_run, device="cpu", decode=DecodeConfig(beam=1))
    assert greedy.translate(LINES) == beam1.translate(LINES)


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["decode.bem=3"], "", "unknown decoding option 'decode.bem'; did you mean decode.beam"),
        (["decode.beam=x"], "", "decode.beam"),
        (["outptu=x"], "", "did you mean output?"),
        ([], b"fine\n\xff\xfe bad\n", "standard input: invalid UTF-8 on line 2"),
        (["input=/nonexistent/input.txt"], "", "file not found: /nonexistent/input.txt"),
        (["input=/"], "", "/ is a directory, not a file"),
        (["output=/nonexistent/out.txt"], "red\n", "directory /nonexistent does not exist"),
    ],
)
def test_translate_mistakes_are_one_line_errors(toy_run, args, stdin, message):
    result = run("seq2seq-translate", f"run={toy_run}", *args, stdin=stdin)
    assert_one_line_error(result, message)


def test_a_misspelled_decoding_option_prints_exactly_this():
    """Checked against the schema itself: a new OmegaConf cannot change the message."""
    with pytest.raises(UserError) as caught:
        with_decode_overrides(DecodeConfig(), ["decode.beam=4", "decode.lenght_penalty=1"])
    assert str(caught.value) == (
        "unknown decoding option 'decode.lenght_penalty'; "
        "did you mean decode.length_penalty or decode.length_penalty_form?"
    )


def test_missing_run_directory(tmp_path):
    result = run("seq2seq-translate", f"run={tmp_path / 'nope'}", stdin="")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_a_swapped_tokenizer_is_refused(toy_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(toy_run, copy)
    (copy / "spm.model").write_bytes((copy / "spm.model").read_bytes() + b"\0")
    result = run("seq2seq-translate", f"run={copy}", stdin="red dog\n")
    assert result.returncode == 2
    assert "SHA-256" in result.stderr


def test_evaluate_a_split_of_the_run(toy_run, tmp_path):
    result = run("seq2seq-evaluate", f"run={toy_run}", "split=test", f"out={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BLEU = ")
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in result.stdout
    assert "chrF2 = " in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    (entry,) = results.values()
    assert entry["sentences"] == 40
    assert (tmp_path / entry["hypotheses"]).is_file()


def test_evaluate_matches_the_sacrebleu_command_line(toy_run, toy_corpus, tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text(
        run(
            "seq2seq-translate", f"run={toy_run}", stdin=(toy_corpus / "test.en").read_text()
        ).stdout
    )
    ref = toy_corpus / "test.de"
    ours = run("seq2seq-evaluate", f"hyp={hyp}", f"ref={ref}")
    assert ours.returncode == 0, ours.stderr
    theirs = run(
        "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-b", "-w", "2", "-f", "text"
    )
    bleu, chrf = (float(x) for x in theirs.stdout.split())
    assert f"BLEU = {bleu:.2f}" in ours.stdout
    assert f"chrF2 = {chrf:.2f}" in ours.stdout
    assert json.loads((tmp_path / "results.json").read_text())["hyp.txt"]["bleu"]["score"] == (
        pytest.approx(bleu, abs=0.01)
    )


def test_evaluate_hypotheses_with_results_elsewhere(toy_corpus, tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text((toy_corpus / "test.de").read_text())
    out = tmp_path / "scores"
    result = run("seq2seq-evaluate", f"hyp={hyp}", f"ref={toy_corpus / 'test.de'}", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "results.json").read_text())["hyp.txt"]["bleu"]["score"] == 100.0
    assert not (tmp_path / "results.json").exists()
    lowercase = run("seq2seq-evaluate", f"hyp={hyp}", f"ref={hyp}", "lowercase=maybe")
    assert_one_line_error(lowercase, "lowercase must be true or false, got 'maybe'")


def test_several_references_are_scored_together_as_sacrebleu_does(tmp_path):
    from sacrebleu.metrics import BLEU

    from seq2seq.metrics import corpus_scores

    hypotheses = ["the cat sat on the mat", "a dog runs"]
    first = ["the cat is on the mat", "a dog is running"]
    second = ["there is a cat on the mat", "a dog runs"]
    both = corpus_scores(hypotheses, [first, second], ("bleu",))["bleu"]
    assert both.score == round(BLEU().corpus_score(hypotheses, [first, second]).score, 2)
    assert both.score > corpus_scores(hypotheses, first, ("bleu",))["bleu"].score
    assert "nrefs:2" in both.signature


def test_checkpoint_last_and_best_load_their_own_weights(toy_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    weights = safetensors.torch.load_file(str(copy / "model.safetensors"))
    safetensors.torch.save_file(
        {name: torch.zeros_like(t) for name, t in weights.items()}, str(copy / "model.safetensors")
    )  # the last weights are now all zero: every token ties
    outputs = {
        which: run("seq2seq-translate", f"run={copy}", f"checkpoint={which}", stdin="red dog\n")
        for which in ("best", "last", copy / "model.safetensors")
    }
    assert all(result.returncode == 0 for result in outputs.values())
    assert outputs["last"].stdout == outputs[copy / "model.safetensors"].stdout
    assert outputs["best"].stdout != outputs["last"].stdout


def test_the_progress_bar_advances_batch_by_batch(toy_run, tmp_path, monkeypatch):
    from seq2seq import outputs

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    source = tmp_path / "input.txt"
    source.write_text("\n".join(LINES * 4) + "\n")
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(outputs, "tqdm", functools.partial(outputs.tqdm, mininterval=0))
    translator = Translator.from_run(toy_run, device="cpu", decode=DecodeConfig(max_tokens=8))
    outputs.write_translations(translator, str(source), str(tmp_path / "out.txt"))
    counts = [int(n) for n in re.findall(r"(\d+) sentences \[", stderr.getvalue())]
    assert "sentences/s" in stderr.getvalue()
    assert counts[-1] == 12  # the non-empty lines, all in one chunk of 20
    assert len(set(counts)) > 3  # it moved during the chunk, not only at its end
    assert translator.progress is None


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_failure_keeps_the_finished_translations(toy_run, tmp_path, capsys, stop):
    from seq2seq.outputs import write_translations

    translator = Translator.from_run(toy_run, device="cpu")
    stream = translator.translate_stream

    def two_then_stop(lines, chunk_size):
        yield from translator.translate_full(["red dog", "the big cat"])
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler ends a job
        raise KeyboardInterrupt

    translator.translate_stream = two_then_stop
    source = tmp_path / "input.txt"
    source.write_text("red dog\nthe big cat\nmore\n")
    output = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else SystemExit):
        write_translations(translator, str(source), str(output), chunk_size=2)
    partial = tmp_path / "out.txt.partial"
    assert not output.exists()
    assert partial.read_text().splitlines() == translator.translate(["red dog", "the big cat"])
    assert f"the first 2 translation(s) are in {partial}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "out.txt.partial"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    translator.translate_stream = stream
    write_translations(translator, str(source), str(output), chunk_size=2)  # replaces .partial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "out.txt"]


def test_evaluate_source_and_reference_files(toy_run, toy_corpus, tmp_path):
    result = run(
        "seq2seq-evaluate",
        f"run={toy_run}",
        f"src={toy_corpus / 'test.en'}",
        f"ref={toy_corpus / 'test.de'}",
        f"out={tmp_path}",
        "metrics=bleu,chrf,ter",
    )
    assert result.returncode == 0, result.stderr
    assert "TER = " in result.stdout
    assert (tmp_path / "hyp.test.en.txt").is_file()


@pytest.mark.parametrize(
    "ref_lines, ref_bytes, message",
    [
        (["a", "b", "c"], None, "has 2 lines but"),
        (None, b"a\n\xff\n", "invalid UTF-8 on line 2"),
        ("missing", None, "file not found: "),
        ("directory", None, "is a directory, not a file"),
    ],
)
def test_evaluate_mistakes_are_one_line_errors(tmp_path, ref_lines, ref_bytes, message):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a\nb\n")
    ref = tmp_path / "ref.txt"
    if ref_lines == "directory":
        ref.mkdir()
    elif isinstance(ref_lines, list):
        ref.write_text("\n".join(ref_lines) + "\n")
    elif ref_bytes is not None:
        ref.write_bytes(ref_bytes)
    result = run("seq2seq-evaluate", f"hyp={hyp}", f"ref={ref}")
    assert_one_line_error(result, message)


def sacrebleu_cache_with_local_wmt14(root: Path, sources: list[str], refs: list[str]) -> None:
    """What sacreBLEU's download leaves in $SACREBLEU for wmt14 en-de: the tarball (here a
    stand-in, so nothing is downloaded) and its extracted SGML files (here our lines)."""
    from sacrebleu.dataset import DATASETS

    dataset = DATASETS["wmt14"]
    raw = root / "wmt14" / "raw"
    raw.mkdir(parents=True)
    for url in dataset.data:
        (raw / dataset._get_tarball_filename(url)).write_bytes(b"stand-in")
    for relative, lines in zip(dataset.langpairs["en-de"], (sources, refs), strict=True):
        segments = [f'<seg id="{i}">{line}</seg>' for i, line in enumerate(lines, start=1)]
        (raw / relative).parent.mkdir(parents=True, exist_ok=True)
        (raw / relative).write_text('<doc docid="d" genre="news">\n' + "\n".join(segments) + "\n")


def test_evaluate_a_sacrebleu_test_set_from_its_cache(toy_run, toy_corpus, tmp_path):
    sources = (toy_corpus / "test.en").read_text().splitlines()
    refs = (toy_corpus / "test.de").read_text().splitlines()
    sacrebleu_cache_with_local_wmt14(tmp_path / "sacrebleu", sources, refs)
    env = {**os.environ, "SACREBLEU": str(tmp_path / "sacrebleu")}
    out = tmp_path / "out"
    result = subprocess.run(
        [
            installed_script("seq2seq-evaluate"),
            f"run={toy_run}",
            "testset=wmt14",
            "langpair=en-de",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BLEU = ")
    (entry,) = json.loads((out / "results.json").read_text()).values()
    assert entry["sentences"] == len(sources)
    split = run("seq2seq-evaluate", f"run={toy_run}", "split=test", f"out={tmp_path}/split")
    assert result.stdout.split("\n")[0] == split.stdout.split("\n")[0]  # the same lines, scored


def test_a_sacrebleu_language_pair_must_be_the_runs_direction(toy_run):
    result = run("seq2seq-evaluate", f"run={toy_run}", "testset=wmt14", "langpair=de-en")
    assert_one_line_error(result, "langpair=de-en does not match the run, which translates en")


def test_an_unreachable_sacrebleu_test_set_is_one_line(toy_run, tmp_path):
    env = {**os.environ, "SACREBLEU": str(tmp_path / "empty")}
    for testset, message in (("wmt99", "No such test set wmt99"), ("wmt14", "cannot get")):
        result = subprocess.run(
            [
                installed_script("seq2seq-evaluate"),
                f"run={toy_run}",
                f"testset={testset}",
                "langpair=en-de",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert_one_line_error(result, message)


def test_a_bf16_translator_computes_what_autocast_computes_on_the_float32_model():
    model = tiny_model()
    cfg = DecodeConfig(beam=3)
    sources = [random_tokens(1, n, seed=n)[0].tolist() for n in (3, 5, 8)]
    bf16 = Translator(model, None, cfg, "cpu", Precision.bf16).search_ids(sources)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = Translator(model, None, cfg, "cpu").search_ids(sources)
    assert [[(h.tokens, h.score) for h in n] for n in bf16] == [
        [(h.tokens, h.score) for h in n] for n in reference
    ]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # a copy was converted


def test_a_bf16_translator_keeps_the_output_layer_in_both_precisions():
    low = Translator(tiny_model(), None, DecodeConfig(), "cpu", Precision.bf16).model
    output = low.output_projection
    low_weight = output.low.dense_weight()
    assert low_weight.dtype == torch.bfloat16  # the logits: no cast per step
    assert output.weight.dtype == torch.float32  # the re-scoring of the top candidates
    assert torch.equal(low_weight, output.weight.to(torch.bfloat16))
    assert output.weight is low.decoder.embedder.embed_tokens.weight  # still tied


def test_workers_decode_batches_side_by_side_with_the_same_results(monkeypatch):
    model = tiny_model()
    sources = [random_tokens(1, n, seed=n)[0].tolist() for n in (3, 9, 5, 12, 4, 7, 6)]
    one = DecodeConfig(beam=3, max_tokens=16)  # several batches
    two = DecodeConfig(beam=3, max_tokens=16, workers=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as validation in bf16 runs it
        expected = Translator(model, None, one, "cpu").search_ids(sources)

    together = threading.Barrier(2, timeout=30)  # two batches must be in flight at once
    seen: list[tuple[int, int, bool]] = []  # (thread, torch threads, autocast) per batch
    search = translate.search

    def search_beside_another(*args):
        state = torch.get_num_threads(), torch.is_autocast_enabled("cpu")
        seen.append((threading.get_ident(), *state))
        if len(seen) <= 2:
            together.wait()
        return search(*args)

    monkeypatch.setattr(translate, "search", search_beside_another)
    torch.set_num_threads(2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            found = Translator(model, None, two, "cpu").search_ids(sources)
        assert torch.get_num_threads() == 2  # the share per worker was given back
    finally:
        torch.set_num_threads(1)
    assert len({thread for thread, _, _ in seen}) == 2
    assert {share for _, share, _ in seen} == {1}
    assert {autocast for _, _, autocast in seen} == {True}  # the caller's autocast carried over
    assert [[(h.tokens, h.score) for h in n] for n in found] == [
        [(h.tokens, h.score) for h in n] for n in expected
    ]


def test_translate_with_two_workers_from_the_command_line(toy_run):
    stdin = "\n".join(LINES) + "\n"
    args = ("seq2seq-translate", f"run={toy_run}", "decode.max_tokens=8")  # several batches
    one = run(*args, stdin=stdin)
    two = run(*args, "decode.workers=2", stdin=stdin)
    assert two.returncode == 0, two.stderr
    assert two.stdout == one.stdout
