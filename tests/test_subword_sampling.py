"""Subword regularisation: sampled segmentations spell the same text, vary between epochs, are
seeded by the batch's place in the data order (so resuming samples the same), and respect the
length limit."""

from __future__ import annotations

import datasets
import pytest
import torch
from helpers import read_gz_lines

from seq2seq.batching import Batch, EncodedSplit
from seq2seq.config import SubwordModel, TokenizerConfig
from seq2seq.data import encode_split
from seq2seq.errors import ConfigError
from seq2seq.subword_sampling import SampledSegmentation
from seq2seq.tokenizer import Tokenizer

MAX_TOKENS = 600


@pytest.fixture(scope="module")
def text(multi30k) -> datasets.Dataset:
    src, tgt = (read_gz_lines(multi30k / f"train.{lang}.gz", limit=1500) for lang in ("en", "de"))
    return datasets.Dataset.from_dict({"id": list(range(len(src))), "src": src, "tgt": tgt})


@pytest.fixture(scope="module")
def tokenizer(text, tmp_path_factory) -> Tokenizer:
    directory = tmp_path_factory.mktemp("spm")
    texts = {"src": iter(text["src"]), "tgt": iter(text["tgt"])}
    return Tokenizer.train(TokenizerConfig(vocab_size=1000), texts, directory)


def training_split(
    text: datasets.Dataset, tokenizer: Tokenizer, alpha: float = 0.3, max_length: int = 250
) -> EncodedSplit:
    split = EncodedSplit.from_dataset(encode_split(text, tokenizer))
    split.sampling = SampledSegmentation(
        text, tokenizer, alpha, 8, SubwordModel.unigram, max_length
    )
    return split


def batches(split: EncodedSplit, count: int, state: dict | None = None) -> list[Batch]:
    """The next `count` training batches of a fresh sampler (resumed from `state` if given)."""
    sampler = split.sampler(MAX_TOKENS, seed=3)
    if state is not None:
        sampler.load_state_dict(state)
    stream = (batch for _ in range(100) for batch in split.batches(sampler))
    return [next(stream) for _ in range(count)]


def same(a: Batch, b: Batch) -> bool:
    return torch.equal(a.src, b.src) and torch.equal(a.tgt_out, b.tgt_out)


def test_sampled_batches_spell_the_same_text_in_other_pieces(text, tokenizer):
    split = training_split(text, tokenizer)
    plain = EncodedSplit.from_dataset(split.dataset)
    changed = 0
    for batch in batches(split, 10):
        best = plain.batch(batch.ids.numpy())  # dataset rows are the ids here
        for side in ("src", "tgt_out"):
            sampled_ids, best_ids = getattr(batch, side).tolist(), getattr(best, side).tolist()
            lang = "src" if side == "src" else "tgt"
            assert tokenizer.decode(sampled_ids, lang) == tokenizer.decode(best_ids, lang)
            changed += sum(s != b for s, b in zip(sampled_ids, best_ids, strict=True))
    assert changed > 100


def test_the_same_place_in_the_data_order_samples_the_same_segmentation(text, tokenizer):
    split = training_split(text, tokenizer)
    sampler = split.sampler(MAX_TOKENS, seed=3)
    per_epoch = len(sampler)
    first = batches(split, per_epoch + 8)
    again = batches(training_split(text, tokenizer), per_epoch + 8)
    assert all(same(a, b) for a, b in zip(first, again, strict=True))

    resumed = batches(split, 8, state={**sampler.state_dict(), "epoch": 1, "position": 0})
    assert all(same(a, b) for a, b in zip(first[per_epoch:], resumed, strict=True))

    # the next epoch re-segments: the same sentences, other pieces
    by_sentence = {tuple(b.ids.tolist()): b for b in first[:per_epoch]}
    later = [by_sentence.get(tuple(b.ids.tolist())) for b in first[per_epoch:]]
    pairs = [(a, b) for a, b in zip(later, first[per_epoch:], strict=True) if a is not None]
    assert pairs and not any(same(a, b) for a, b in pairs)


def test_a_sample_longer_than_the_length_limit_keeps_the_best_segmentation(text, tokenizer):
    plain = EncodedSplit.from_dataset(encode_split(text, tokenizer))
    (free,) = batches(training_split(text, tokenizer, alpha=0.1, max_length=10**6), 1)
    best = plain.batch(free.ids.numpy())
    resampled = [
        len(f[~fm])
        for f, fm, b, bm in zip(
            free.src, free.src_pad_mask, best.src, best.src_pad_mask, strict=True
        )
        if not torch.equal(f[~fm], b[~bm])
    ]
    limit = max(resampled) - 2  # the longest resampled row (+ eos) is too long
    (limited,) = batches(training_split(text, tokenizer, alpha=0.1, max_length=limit), 1)
    too_long = 0
    for row in range(len(limited)):
        free_ids, limited_ids, best_ids = (
            b.src[row][~b.src_pad_mask[row]] for b in (free, limited, best)
        )
        if len(free_ids) - 1 > limit:
            too_long += not torch.equal(free_ids, best_ids)  # rows where the fallback shows
            assert torch.equal(limited_ids, best_ids)
        else:
            assert torch.equal(limited_ids, free_ids)
    assert too_long > 0


def test_sampling_needs_a_unigram_tokenizer(text, tokenizer):
    with pytest.raises(ConfigError, match=r"set tokenizer.model_type=unigram"):
        SampledSegmentation(text, tokenizer, 0.5, 8, SubwordModel.bpe, 250)
