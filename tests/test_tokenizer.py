"""SentencePiece: special ids, round trips on real sentences, saved files and their hashes."""

from __future__ import annotations

import pytest
from helpers import read_gz_lines

from seq2seq.config import TokenizerConfig
from seq2seq.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer

UNSEEN = "Ελληνικά, 中文 und ein Emoji 🙂 ﬁn"


@pytest.fixture(scope="module")
def corpus(multi30k):
    """6,000 training sentences per language; English is the source, German + French the target."""
    lines = {
        lang: read_gz_lines(multi30k / f"train.{lang}.gz", limit=6000)
        for lang in ("en", "de", "fr")
    }
    return {"src": lines["en"], "tgt": lines["de"] + lines["fr"]}


@pytest.fixture(scope="module")
def joint(corpus, tmp_path_factory):
    directory = tmp_path_factory.mktemp("joint")
    return Tokenizer.train(TokenizerConfig(vocab_size=2000), corpus, directory)


def test_special_ids_are_fixed(joint):
    processor = joint.processors["src"]
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (
        PAD_ID,
        UNK_ID,
        BOS_ID,
        EOS_ID,
    )
    assert joint.vocab_size("src") == joint.vocab_size("tgt") == 2000


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_round_trip_on_real_sentences(joint, multi30k, lang):
    sentences = read_gz_lines(multi30k / f"val.{lang}.gz")
    side = "src" if lang == "en" else "tgt"
    decoded = joint.decode(joint.encode(sentences, side), side)
    assert decoded == [joint.normalize(s, side) for s in sentences]
    # Normalisation leaves real text alone: accents and umlauts survive exactly.
    unchanged = sum(d == s.strip() for d, s in zip(decoded, sentences, strict=True))
    assert unchanged >= 0.99 * len(sentences)
    for letter in "äöüßÄÖÜéèàçêôœ":
        assert sum(d.count(letter) for d in decoded) == sum(s.count(letter) for s in sentences)
    if lang != "en":
        assert any(letter in "".join(decoded) for letter in "äöüéèàç")


def test_unseen_characters_round_trip_through_byte_fallback(joint):
    ids = joint.encode([UNSEEN], "src")[0]
    assert UNK_ID not in ids
    assert joint.decode([ids], "src") == [joint.normalize(UNSEEN, "src")]
    assert "中文" in joint.decode([ids], "src")[0]


def test_without_byte_fallback_unseen_characters_become_unk(corpus, tmp_path):
    small = {side: lines[:2000] for side, lines in corpus.items()}
    tokenizer = Tokenizer.train(
        TokenizerConfig(vocab_size=800, byte_fallback=False), small, tmp_path
    )
    assert UNK_ID in tokenizer.encode(["中文"], "src")[0]


def test_decode_drops_padding_and_sentence_markers(joint):
    ids = joint.encode(["Ein Hund."], "tgt")[0]
    assert joint.decode([[BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]], "tgt") == ["Ein Hund."]


def test_the_n_best_segmentations_spell_the_same_text_best_first(joint):
    sentence = "Eine Gruppe von Menschen steht vor einem Iglu."
    (candidates,) = joint.nbest([sentence], "tgt", 8)
    assert len({tuple(c) for c in candidates}) == 8
    assert candidates[0] == joint.encode([sentence], "tgt")[0]
    assert {joint.decode([c], "tgt")[0] for c in candidates} == {sentence}
    scores = joint.piece_scores("tgt")
    totals = [sum(scores[i] for i in c) for c in candidates]
    assert totals == sorted(totals, reverse=True)


def test_saved_files_are_verified_on_load(joint):
    directory = joint.files["src"].parent
    loaded = Tokenizer.load(directory)
    assert loaded.joint
    assert loaded.encode(["A dog."], "src") == joint.encode(["A dog."], "src")
    assert loaded.sha256() == joint.sha256()


def test_a_swapped_vocabulary_is_refused(joint, corpus, tmp_path):
    import shutil

    for name in ("spm.model", "tokenizer.json"):
        shutil.copy(joint.files["src"].parent / name, tmp_path / name)
    other = Tokenizer.train(
        TokenizerConfig(vocab_size=900),
        {side: lines[:1000] for side, lines in corpus.items()},
        tmp_path / "other",
    )
    shutil.copy(other.files["src"], tmp_path / "spm.model")
    with pytest.raises(UserError, match="does not match the SHA-256"):
        Tokenizer.load(tmp_path)


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="tokenizer.json is missing"):
        Tokenizer.load(tmp_path)


def test_separate_models_per_language(corpus, tmp_path):
    small = {"src": corpus["src"][:3000], "tgt": corpus["tgt"][:3000]}
    tokenizer = Tokenizer.train(
        TokenizerConfig(joint=False, vocab_size=700, model_type="bpe"), small, tmp_path
    )
    assert not tokenizer.joint
    assert {p.name for p in tokenizer.files.values()} == {"spm.src.model", "spm.tgt.model"}
    assert set(Tokenizer.load(tmp_path).sha256()) == {"spm.src.model", "spm.tgt.model"}
    assert tokenizer.decode(tokenizer.encode(["Ein Hund."], "tgt"), "tgt") == ["Ein Hund."]


def test_too_large_vocabulary_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="vocab_size"):
        Tokenizer.train(
            TokenizerConfig(vocab_size=5000), {"src": ["a b c"], "tgt": ["d e"]}, tmp_path
        )
