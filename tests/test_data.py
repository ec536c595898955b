"""Loading parallel data from every source, the errors users make, cleaning, encoding cache."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import read_gz_lines

from seq2seq import multi30k as multi30k_source
from seq2seq.batching import token_lengths
from seq2seq.config import DataConfig
from seq2seq.data import (
    cleaning_mask,
    count_lines,
    encode_split,
    load_hub_split,
    load_split,
    log_cleaning,
)
from seq2seq.errors import UserError

PAIRS = [
    ("A man rides a bike.", "Ein Mann fährt Fahrrad."),
    ("Two dogs play.", "Zwei Hunde spielen."),
    ("  A café  ", "  Ein Café  "),
]


def write_lines(path: Path, lines: list[str]) -> Path:
    text = "".join(f"{line}\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def files_config(tmp_path: Path, spec: str, **kwargs) -> DataConfig:
    return DataConfig(
        source="files",
        train=spec,
        src_lang="en",
        tgt_lang="de",
        cache_dir=str(tmp_path / "cache"),
        **kwargs,
    )


# --------------------------------------------------------------------------- Multi30k


def test_multi30k_local_copy_loads_every_line_in_order(multi30k, tmp_path):
    cfg = DataConfig(root=str(multi30k), cache_dir=str(tmp_path))
    train = load_split(cfg, "train")
    assert len(train) == 29000
    assert train.column_names == ["id", "src", "tgt"]
    english = read_gz_lines(multi30k / "train.en.gz", limit=3)
    german = read_gz_lines(multi30k / "train.de.gz", limit=3)
    assert train[:3]["src"] == [s.strip() for s in english]
    assert train[:3]["tgt"] == [s.strip() for s in german]


@pytest.mark.parametrize("split, lines", [("valid", 1014), ("test", 1000)])
def test_validation_and_test_splits_are_neither_filtered_nor_reordered(
    multi30k, tmp_path, split, lines
):
    cfg = DataConfig(root=str(multi30k), src_lang="en", tgt_lang="fr", cache_dir=str(tmp_path))
    dataset = load_split(cfg, split)
    assert dataset["id"] == list(range(lines))


def test_multi30k_download_verifies_the_checksum(multi30k, tmp_path):
    """The download code path, fed from a file:// URL instead of GitHub."""
    cache = tmp_path / "downloads"
    path = multi30k_source.multi30k_file(
        "val", "de", None, str(cache), base_url=f"file://{multi30k}"
    )
    assert path == cache / "val.de.gz"
    assert multi30k_source.text_sha256(path) == multi30k_source.TEXT_SHA256["val.de"]
    assert [p.name for p in cache.iterdir()] == ["val.de.gz"]  # no partial files left


def test_multi30k_download_with_wrong_checksum_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_lines(mirror / "val.en.gz", ["not the real file"])
    cache = tmp_path / "downloads"
    with pytest.raises(UserError, match="checksum mismatch"):
        multi30k_source.multi30k_file("val", "en", None, str(cache), base_url=f"file://{mirror}")
    assert not (cache / "val.en.gz").exists()


def test_multi30k_unreachable_download_suggests_a_local_copy(tmp_path):
    with pytest.raises(UserError, match="data.root"):
        multi30k_source.multi30k_file(
            "val", "en", None, str(tmp_path), base_url=f"file://{tmp_path}/nowhere"
        )


def test_multi30k_unknown_language_lists_the_available_ones(multi30k):
    cfg = DataConfig(root=str(multi30k), src_lang="en", tgt_lang="xx")
    with pytest.raises(UserError, match="'xx'.*en, de, fr, cs"):
        load_split(cfg, "train")


def test_multi30k_missing_local_file_is_named(tmp_path):
    cfg = DataConfig(root=str(tmp_path), src_lang="en", tgt_lang="de")
    with pytest.raises(UserError, match="train.en.gz not found"):
        load_split(cfg, "train")


# --------------------------------------------------------------------------- local files


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_pair_of_plain_text_files(tmp_path, suffix):
    write_lines(tmp_path / f"train.en{suffix}", [en for en, _ in PAIRS])
    write_lines(tmp_path / f"train.de{suffix}", [de for _, de in PAIRS])
    dataset = load_split(files_config(tmp_path, str(tmp_path / f"train.{{lang}}{suffix}")), "train")
    assert dataset["src"] == [en.strip() for en, _ in PAIRS]
    assert dataset["tgt"] == [de.strip() for _, de in PAIRS]


def test_tsv_file(tmp_path):
    write_lines(tmp_path / "train.tsv", [f"{en}\t{de}" for en, de in PAIRS])
    dataset = load_split(files_config(tmp_path, str(tmp_path / "train.tsv")), "train")
    assert dataset["tgt"] == [de.strip() for _, de in PAIRS]


def test_tsv_with_a_wrong_column_count_names_the_line(tmp_path):
    write_lines(tmp_path / "train.tsv", ["a\tb", "only one column"])
    with pytest.raises(UserError, match="line 2 has 1 tab-separated columns"):
        load_split(files_config(tmp_path, str(tmp_path / "train.tsv")), "train")


@pytest.mark.parametrize("nested", [True, False])
def test_jsonl_file(tmp_path, nested):
    records = [{"en": en, "de": de} for en, de in PAIRS]
    if nested:
        records = [{"translation": r} for r in records]
    write_lines(tmp_path / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    dataset = load_split(files_config(tmp_path, str(tmp_path / "train.jsonl")), "train")
    assert dataset["src"] == [en.strip() for en, _ in PAIRS]


def test_jsonl_without_the_language_lists_the_available_ones(tmp_path):
    write_lines(tmp_path / "train.jsonl", [json.dumps({"en": "a", "fr": "b"})])
    with pytest.raises(UserError, match="no 'de' text; languages there: en, fr"):
        load_split(files_config(tmp_path, str(tmp_path / "train.jsonl")), "train")


def test_files_with_different_line_counts_name_both_files_and_counts(tmp_path):
    write_lines(tmp_path / "train.en", ["a", "b", "c"])
    write_lines(tmp_path / "train.de", ["x", "y"])
    with pytest.raises(UserError, match=r"train\.en has 3 lines but .*train\.de has 2"):
        load_split(files_config(tmp_path, str(tmp_path / "train.{lang}")), "train")


def test_missing_file_is_named(tmp_path):
    write_lines(tmp_path / "train.en", ["a"])
    with pytest.raises(UserError, match=r"file not found: .*train\.de"):
        load_split(files_config(tmp_path, str(tmp_path / "train.{lang}")), "train")


def test_directory_instead_of_file(tmp_path):
    write_lines(tmp_path / "train.en", ["a"])
    (tmp_path / "train.de").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        load_split(files_config(tmp_path, str(tmp_path / "train.{lang}")), "train")


def test_empty_files_are_an_error(tmp_path):
    write_lines(tmp_path / "train.en", [])
    write_lines(tmp_path / "train.de", [])
    with pytest.raises(UserError, match="empty"):
        load_split(files_config(tmp_path, str(tmp_path / "train.{lang}")), "train")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_invalid_utf8_names_file_and_line(tmp_path, suffix):
    path = tmp_path / f"bad.en{suffix}"
    data = b"fine\nalso fine\nbad \xff byte\n"
    if suffix:
        with gzip.open(path, "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    with pytest.raises(UserError, match=r"bad\.en(\.gz)?: invalid UTF-8 on line 3"):
        count_lines(path)


def test_invalid_utf8_far_into_a_large_file_names_the_right_line(tmp_path):
    path = tmp_path / "big.en"
    path.write_bytes(b"x" * 100 + b"\n" + (b"line\n" * 300_000) + b"\xc3(\n")
    with pytest.raises(UserError, match="line 300002"):
        count_lines(path)


def test_line_count_without_final_newline(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"one\ntwo")
    assert count_lines(path) == 2


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_prefix_names_a_pair_of_files_like_fairseq(tmp_path, suffix):
    write_lines(tmp_path / f"train.en{suffix}", ["a", "b"])
    write_lines(tmp_path / f"train.de{suffix}", ["x", "y"])
    dataset = load_split(files_config(tmp_path, str(tmp_path / "train")), "train")
    assert dataset["tgt"] == ["x", "y"]


def test_prefix_without_files_names_the_expected_file(tmp_path):
    with pytest.raises(UserError, match=r"file not found: .*corpus\.en"):
        load_split(files_config(tmp_path, str(tmp_path / "corpus")), "train")


def test_an_edited_file_is_read_again(tmp_path):
    write_lines(tmp_path / "train.en", ["a", "b"])
    write_lines(tmp_path / "train.de", ["x", "y"])
    cfg = files_config(tmp_path, str(tmp_path / "train.{lang}"))
    assert load_split(cfg, "train")["src"] == ["a", "b"]
    write_lines(tmp_path / "train.en", ["changed", "b"])
    assert load_split(cfg, "train")["src"] == ["changed", "b"]


# --------------------------------------------------------------------------- hub datasets


def write_hub_style_dataset(root: Path) -> Path:
    """A dataset directory laid out like wmt/wmt14 on the hub: parquet files per config and
    split, declared in the README's YAML header."""
    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    for split, pairs in (("train", PAIRS), ("validation", PAIRS[:2])):
        rows = {"translation": [{"de": de, "en": en} for en, de in pairs]}
        (root / "de-en").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(root / "de-en" / f"{split}-00000-of-00001.parquet")
        )
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: de-en\n  data_files:\n"
        "  - split: train\n    path: de-en/train-*\n"
        "  - split: validation\n    path: de-en/validation-*\n---\n"
    )
    return root


def hub_config(tmp_path: Path, **overrides) -> DataConfig:
    """A hub-source config over a local dataset laid out like wmt/wmt14 (en -> de)."""
    root = write_hub_style_dataset(tmp_path / "wmt_like")
    values = dict(
        source="hub",
        name=str(root),
        subset="de-en",
        src_lang="en",
        tgt_lang="de",
        cache_dir=str(tmp_path / "cache"),
    )
    return DataConfig(**{**values, **overrides})


def test_hub_code_path_on_a_local_dataset_in_the_translation_schema(tmp_path):
    cfg = hub_config(tmp_path, valid="validation")
    train = load_split(cfg, "train")
    assert train["src"] == [en.strip() for en, _ in PAIRS]
    assert train["tgt"] == [de.strip() for _, de in PAIRS]
    assert train["id"] == [0, 1, 2]
    assert len(load_split(cfg, "valid")) == 2


def test_hub_language_not_in_the_dataset_lists_the_available_ones(tmp_path):
    cfg = hub_config(tmp_path, tgt_lang="ro")
    with pytest.raises(UserError, match="'ro' is not in .*available: de, en"):
        load_hub_split(cfg, "train")


def test_hub_unknown_split_is_a_user_error(tmp_path):
    cfg = hub_config(tmp_path)
    with pytest.raises(UserError, match="split nonexistent"):
        load_hub_split(cfg, "nonexistent")


# --------------------------------------------------------------------------- cleaning, encoding


class CharTokenizer:
    """A stand-in tokenizer: one id per character (ids 4..), enough to test cleaning."""

    def encode(self, texts, side):
        return [[4 + (ord(c) % 50) for c in text] for text in texts]

    def fingerprint(self):
        return "characters"


def test_cleaning_drops_empty_too_long_and_unequal_pairs_and_logs_counts(tmp_path, caplog):
    lines = [
        ("good", "gut"),
        ("", "leer"),
        ("x" * 30, "y" * 30),
        ("ab", "a much longer one"),
        ("fine", "fein"),
    ]
    write_lines(tmp_path / "train.en", [en for en, _ in lines])
    write_lines(tmp_path / "train.de", [de for _, de in lines])
    cfg = files_config(
        tmp_path, str(tmp_path / "train.{lang}"), max_length=20, max_length_ratio=3.0
    )
    encoded = encode_split(load_split(cfg, "train"), CharTokenizer())
    keep, reasons = cleaning_mask(
        token_lengths(encoded, "src_ids"), token_lengths(encoded, "tgt_ids"), cfg
    )
    with caplog.at_level(logging.INFO, logger="seq2seq.data"):
        log_cleaning(int(keep.sum()), len(keep), reasons, cfg)
    assert np.flatnonzero(keep).tolist() == [0, 4]
    assert "kept 2 of 5 pairs" in caplog.text
    assert "shorter than 1 tokens: 1" in caplog.text
    assert "longer than 20 tokens: 1" in caplog.text
    assert "length ratio above 3: 1" in caplog.text


def test_token_lengths_come_from_arrow_offsets(tmp_path):
    write_lines(tmp_path / "train.en", ["abc", "", "hello"])
    write_lines(tmp_path / "train.de", ["x", "yz", "w"])
    cfg = files_config(tmp_path, str(tmp_path / "train.{lang}"))
    encoded = encode_split(load_split(cfg, "train"), CharTokenizer())
    assert token_lengths(encoded, "src_ids").tolist() == [3, 0, 5]
    assert token_lengths(encoded, "tgt_ids").tolist() == [1, 2, 1]


def test_encoding_is_cached_and_reused(tmp_path):
    write_lines(tmp_path / "train.en", ["abc", "de"])
    write_lines(tmp_path / "train.de", ["x", "yz"])
    cfg = files_config(tmp_path, str(tmp_path / "train.{lang}"))
    first = encode_split(load_split(cfg, "train"), CharTokenizer())
    cache_file = Path(first.cache_files[0]["filename"])
    stamp = cache_file.stat().st_mtime_ns

    class Refusing(CharTokenizer):
        def encode(self, texts, side):
            raise AssertionError("re-encoded although a cached encoding exists")

    second = encode_split(load_split(cfg, "train"), Refusing())
    assert Path(second.cache_files[0]["filename"]) == cache_file
    assert cache_file.stat().st_mtime_ns == stamp
    assert second["src_ids"] == first["src_ids"]


def test_a_different_tokenizer_encodes_again(tmp_path):
    write_lines(tmp_path / "train.en", ["abc"])
    write_lines(tmp_path / "train.de", ["x"])
    cfg = files_config(tmp_path, str(tmp_path / "train.{lang}"))
    first = encode_split(load_split(cfg, "train"), CharTokenizer())

    class Other(CharTokenizer):
        def encode(self, texts, side):
            return [[5] for _ in texts]

        def fingerprint(self):
            return "other"

    second = encode_split(load_split(cfg, "train"), Other())
    assert second["src_ids"] == [[5]] != first["src_ids"]


def test_cache_directory_can_be_removed_safely(tmp_path):
    write_lines(tmp_path / "train.en", ["abc"])
    write_lines(tmp_path / "train.de", ["x"])
    cfg = files_config(tmp_path, str(tmp_path / "train.{lang}"))
    load_split(cfg, "train")
    shutil.rmtree(tmp_path / "cache")
    assert load_split(cfg, "train")["src"] == ["abc"]
