"""Export to Hugging Face Marian: same logits, same tokenization, same greedy output."""

from __future__ import annotations

import subprocess

import pytest
import sentencepiece as spm
import torch
from helpers import installed_script, pad_to, random_tokens, read_gz_lines, run_command, tiny_model
from toy import toy_overrides, write_toy_corpus

from seq2seq.config import DecodeConfig
from seq2seq.constants import EOS_ID, PAD_ID
from seq2seq.errors import UserError
from seq2seq.translate import Translator

transformers = pytest.importorskip("transformers")
from seq2seq.export import to_marian  # noqa: E402


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its initial value (LayerNorm weights 1 and biases 0 would
    hide a mix-up of two LayerNorms or of two biases)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_exported_model_gives_the_same_logits(activation):
    model = tiny_model(
        norm="post", positions="sinusoidal", tie_embeddings="all", activation=activation
    )
    marian = to_marian(randomised(model))
    sources = [random_tokens(1, n, seed=n) for n in (6, 3, 5)]
    src = torch.cat([pad_to(torch.cat([s, torch.tensor([[EOS_ID]])], dim=1), 7) for s in sources])
    tgt = random_tokens(3, 5, seed=9)
    with torch.no_grad():
        ours = model(src, src == PAD_ID, tgt)
        theirs = marian(
            input_ids=src, attention_mask=(src != PAD_ID).long(), decoder_input_ids=tgt
        ).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    "change, field",
    [
        ({"norm": "pre"}, "model.norm"),
        ({"positions": "learned"}, "model.positions"),
        ({"tie_embeddings": "decoder"}, "model.tie_embeddings"),
    ],
)
def test_configurations_marian_cannot_represent_are_refused(change, field):
    with pytest.raises(UserError, match=field):
        to_marian(tiny_model(**change))


@pytest.mark.slow
def test_exported_directory_loads_and_translates_like_ours(tmp_path):
    corpus = write_toy_corpus(tmp_path / "toy")
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [
            installed_script("seq2seq-train"),
            *toy_overrides(
                corpus,
                run_dir,
                train__max_steps=40,
                train__validate_every=40,
                train__valid_bleu=False,
                train__test_at_end=False,
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    out = tmp_path / "hf"
    export = subprocess.run(
        [installed_script("seq2seq-export"), f"run={run_dir}", "to=hf", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr[-2000:]

    hf_tokenizer = transformers.MarianTokenizer.from_pretrained(str(out))
    hf_model = transformers.MarianMTModel.from_pretrained(str(out)).eval()
    translator = Translator.from_run(
        run_dir, device="cpu", decode=DecodeConfig(strategy="greedy", max_len_a=0, max_len_b=20)
    )
    sentences = ["red dog runs", "the big cat near a house", "bird"]
    ours_ids = translator.tokenizer.encode(sentences, "src")
    batch = hf_tokenizer(sentences, return_tensors="pt", padding=True)
    for row, ids in zip(batch["input_ids"].tolist(), ours_ids, strict=True):
        assert row[: len(ids) + 1] == [*ids, EOS_ID]
    generated = hf_model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=21)
    hf_texts = hf_tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert hf_texts == translator.translate(sentences)


def test_export_to_an_unknown_format_is_one_line(tmp_path):
    result = subprocess.run(
        [
            installed_script("seq2seq-export"),
            f"run={tmp_path}",
            "to=onnx",
            f"out={tmp_path}/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown export format to=onnx" in result.stderr


def test_ctranslate2_greedy_output_equals_ours_on_the_multi30k_test_set(
    multi30k, multi30k_run, tmp_path
):
    ctranslate2 = pytest.importorskip("ctranslate2")
    out = tmp_path / "ct2"
    result = run_command("seq2seq-export", f"run={multi30k_run}", "to=ct2", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert {"model.bin", "config.json", "src.spm.model"} <= {p.name for p in out.iterdir()}
    limit = 60  # output tokens before eos, for both
    decode = DecodeConfig(strategy="greedy", max_len_a=0.0, max_len_b=limit)
    translator = Translator.from_run(multi30k_run, "best", "cpu", decode)
    sentences = read_gz_lines(multi30k / "test_2016_flickr.en.gz")
    ours = [
        nbest[0].tokens for nbest in translator.search_ids(translator.encode_sources(sentences))
    ]
    source, target = (translator.tokenizer.processors[side] for side in ("src", "tgt"))
    engine = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    found = engine.translate_batch(
        [source.encode(s.strip(), out_type=str) for s in sentences],
        beam_size=1,
        max_batch_size=64,
        max_decoding_length=limit + 1,
    )
    # ours stops at the limit with eos; CTranslate2 runs one step longer: compare `limit` tokens
    theirs = [[target.piece_to_id(p) for p in r.hypotheses[0]][:limit] for r in found]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same == len(sentences), f"{same} of {len(sentences)} identical"


def test_ctranslate2_export_with_an_unknown_quantization_is_one_line(toy_run, tmp_path):
    pytest.importorskip("ctranslate2")
    result = run_command(
        "seq2seq-export", f"run={toy_run}", "to=ct2", f"out={tmp_path}/x", "quantization=int3"
    )
    assert result.returncode == 2
    assert "unknown quantization=int3" in result.stderr


def test_ctranslate2_int8_export_holds_the_float32_weights_rounded_to_8_bits(
    multi30k, multi30k_run, tmp_path
):
    """The int8 export is what CTranslate2 itself makes of the float32 export (same
    translations with int8 compute), and its weights, widened again, score the float32
    translations as the float32 model does. (How far int8 *compute* moves a translation is
    the engine's matter: on a small model it changes many.)"""
    ctranslate2 = pytest.importorskip("ctranslate2")
    sentences = read_gz_lines(multi30k / "test_2016_flickr.en.gz", limit=200)
    exports = {}
    for quantization in ("float32", "int8"):
        exports[quantization] = tmp_path / quantization
        result = run_command(
            "seq2seq-export",
            f"run={multi30k_run}",
            "to=ct2",
            f"out={exports[quantization]}",
            f"quantization={quantization}",
        )
        assert result.returncode == 0, result.stderr
    sizes = {q: (out / "model.bin").stat().st_size for q, out in exports.items()}
    assert sizes["int8"] < 0.5 * sizes["float32"]  # the weights really are 8-bit

    source = spm.SentencePieceProcessor(model_file=str(exports["int8"] / "src.spm.model"))
    pieces = [source.encode(s.strip(), out_type=str) for s in sentences]

    def engine(quantization: str, compute_type: str):
        return ctranslate2.Translator(
            str(exports[quantization]), device="cpu", intra_threads=1, compute_type=compute_type
        )

    def translate(translator) -> list[list[str]]:
        return [r.hypotheses[0] for r in translator.translate_batch(pieces, beam_size=1)]

    assert translate(engine("int8", "int8")) == translate(engine("float32", "int8"))
    reference = translate(engine("float32", "float32"))
    log_probs = {}
    for quantization in ("float32", "int8"):
        scores = engine(quantization, "float32").score_batch(pieces, reference)
        log_probs[quantization] = [p for result in scores for p in result.log_probs]
    differences = [abs(a - b) for a, b in zip(log_probs["int8"], log_probs["float32"], strict=True)]
    assert sum(differences) / len(differences) < 0.05  # nats per token
    assert max(differences) < 0.5


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_ctranslate2_export_leaves_the_model_untouched(toy_run, tmp_path, quantization):
    pytest.importorskip("ctranslate2")
    from seq2seq.export_ct2 import export_ct2

    translator = Translator.from_run(toy_run, device="cpu")
    before = {name: t.clone() for name, t in translator.model.state_dict().items()}
    export_ct2(translator.model, translator.tokenizer, tmp_path / "ct2", quantization)
    after = translator.model.state_dict()
    assert [name for name, t in before.items() if not torch.equal(t, after[name])] == []
