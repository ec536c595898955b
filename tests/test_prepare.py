"""Prepared data: the reservoir sample, shards that hold the corpus, reuse and change detection,
the window sampler, training from the shards, and one-line errors."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import RECIPES, assert_one_line_error, compose_recipe, run_command
from toy import toy_overrides, toy_pair, write_toy_corpus

from seq2seq.config import Config, DataConfig, TokenizerConfig
from seq2seq.errors import ConfigError
from seq2seq.prepare import MANIFEST, prepare, read_references, reservoir_sample
from seq2seq.sharded_batching import ShardedSplit, WindowSampler
from seq2seq.shards import FILES, Shard, shard_file
from seq2seq.tokenizer import Tokenizer


def toy_config(corpus: Path, **data: object) -> Config:
    """The toy task's config as seq2seq-train would compose it (shards of 100 pairs)."""
    return Config(
        data=DataConfig(
            source="files",
            train=str(corpus / "train"),
            valid=str(corpus / "valid"),
            test=str(corpus / "test"),
            shard_pairs=100,
            **data,
        ),
        tokenizer=TokenizerConfig(vocab_size=64, byte_fallback=False, threads=1),
    )


@pytest.fixture
def corpus(tmp_path):
    return write_toy_corpus(tmp_path / "corpus", {"train": 250, "valid": 30, "test": 20})


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def modification_times(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- the sample


def test_a_reservoir_sample_draws_every_item_equally_often():
    counts = Counter()
    for seed in range(2000):
        sample = reservoir_sample(range(50), 10, seed)
        assert len(set(sample)) == 10
        counts.update(sample)
    expected = 2000 * 10 / 50  # 400 per item
    assert all(abs(count - expected) < 0.2 * expected for count in counts.values())
    assert len(counts) == 50


def test_a_reservoir_sample_is_seeded_and_takes_all_of_a_short_input():
    assert reservoir_sample(range(1000), 5, 3) == reservoir_sample(range(1000), 5, 3)
    assert reservoir_sample(range(1000), 5, 3) != reservoir_sample(range(1000), 5, 4)
    assert reservoir_sample(range(4), 10, 0) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- the shards


def test_shards_hold_every_pair_encoded_in_corpus_order(corpus, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare(toy_config(corpus), out)
    tokenizer = Tokenizer.load(out)
    shards = manifest["splits"]["train"]["shards"]
    assert [s["pairs"] for s in shards] == [100, 100, 50]
    assert manifest["splits"]["train"]["ids_dtype"] == "uint16"
    src_text, tgt_text = read_lines(corpus / "train.en"), read_lines(corpus / "train.de")
    lines, src, tgt = [], [], []
    for index in range(len(shards)):
        shard = Shard.open(out / "train", index)
        lines += shard.lines.tolist()
        src += [shard.ids_of("src", row) for row in range(len(shard))]
        tgt += [shard.ids_of("tgt", row) for row in range(len(shard))]
    assert lines == list(range(250))
    assert src == tokenizer.encode(src_text, "src")
    assert tgt == tokenizer.encode(tgt_text, "tgt")
    assert read_references(out) == read_lines(corpus / "valid.de")


def test_preparing_again_with_the_same_inputs_reuses_everything(corpus, tmp_path, caplog):
    out = tmp_path / "prepared"
    prepare(toy_config(corpus), out)
    before = modification_times(out)
    with caplog.at_level("INFO"):
        prepare(toy_config(corpus), out)
    after = modification_times(out)
    shard_files = [name for name in before if name.endswith(".npy")]
    assert shard_files and all(after[name] == before[name] for name in shard_files)
    assert after[str(out / "spm.model")] == before[str(out / "spm.model")]
    assert "reusing the tokenizer" in caplog.text
    assert "reusing the encoded train split (250 pairs)" in caplog.text


def test_a_changed_validation_file_is_encoded_again_and_nothing_else(corpus, tmp_path, caplog):
    out = tmp_path / "prepared"
    prepare(toy_config(corpus), out)
    before = modification_times(out)
    with open(corpus / "valid.de", "a") as stream, open(corpus / "valid.en", "a") as other:
        stream.write("Red Dog\n")
        other.write("dog red\n")
    with caplog.at_level("INFO"):
        manifest = prepare(toy_config(corpus), out)
    assert "encoding valid (its corpus changed)" in caplog.text
    assert "reusing the tokenizer" in caplog.text
    assert manifest["splits"]["valid"]["pairs"] == 31
    after = modification_times(out)
    assert (
        after[str(shard_file(out / "train", 0, "src"))]
        == before[str(shard_file(out / "train", 0, "src"))]
    )
    assert read_references(out)[-1] == "Red Dog"


def test_a_changed_tokenizer_setting_trains_and_encodes_again(corpus, tmp_path, caplog):
    out = tmp_path / "prepared"
    first = prepare(toy_config(corpus), out)
    changed = toy_config(corpus)
    changed.tokenizer.vocab_size = 60
    with caplog.at_level("INFO"):
        second = prepare(changed, out)
    assert "training SentencePiece (unigram, 60 pieces)" in caplog.text
    assert "encoding train (the tokenizer changed)" in caplog.text
    assert first["tokenizer"]["fingerprint"] != second["tokenizer"]["fingerprint"]
    assert Tokenizer.load(out).vocab_size("src") == 60


def test_a_missing_shard_file_is_noticed_and_written_again(corpus, tmp_path, caplog):
    out = tmp_path / "prepared"
    prepare(toy_config(corpus), out)
    shard_file(out / "train", 1, "tgt").unlink()
    with caplog.at_level("INFO"):
        prepare(toy_config(corpus), out)
    assert "encoding train (shard files are missing or damaged)" in caplog.text
    assert all(shard_file(out / "train", 1, part).is_file() for part in FILES)


# ---------------------------------------------------------------------------- hub recipes

HUB_RECIPES = [name for name in RECIPES if not name.startswith("multi30k")]  # data.source=hub


def write_hub_copy(root: Path, subset: str, src: str, tgt: str, splits: dict[str, int]) -> Path:
    """A dataset directory laid out like the recipe's on the hub: a parquet file per config and
    split, in the `translation` schema, declared in the README's YAML header."""
    rng = random.Random(0)
    features = datasets.Features({"translation": datasets.Translation(languages=[src, tgt])})
    header = ["---", "configs:", f"- config_name: {subset}", "  data_files:"]
    for split, count in splits.items():
        pairs = [toy_pair(rng) for _ in range(count)]
        rows = {"translation": [{src: a, tgt: b} for a, b in pairs]}
        (root / subset).mkdir(parents=True, exist_ok=True)
        path = root / subset / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
        header += [f"  - split: {split}", f"    path: {subset}/{split}-*"]
    (root / "README.md").write_text("\n".join([*header, "---", ""]))
    return root


@pytest.mark.parametrize("name", HUB_RECIPES)
def test_each_hub_recipe_prepares_a_local_copy_laid_out_like_its_dataset(name, tmp_path):
    data = compose_recipe(name).data
    splits = {data.train: 400, data.valid: 20, data.test: 10}
    root = write_hub_copy(tmp_path / "hub", data.subset, data.src_lang, data.tgt_lang, splits)
    config = compose_recipe(
        name,
        [
            f"data.name={root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "tokenizer.vocab_size=64",
            "tokenizer.byte_fallback=false",
        ],
    )
    manifest = prepare(config, tmp_path / "prepared")
    assert (manifest["src_lang"], manifest["tgt_lang"]) == (data.src_lang, data.tgt_lang)
    assert manifest["splits"]["train"]["pairs"] == 400
    assert manifest["splits"]["valid"]["pairs"] == 20
    assert manifest["splits"]["train"]["source"].startswith(f"hub:{root}:{data.subset}:")


def test_a_streamed_hub_dataset_gives_the_same_shards(tmp_path):
    data = compose_recipe("wmt14_en_fr").data
    splits = {data.train: 400, data.valid: 20, data.test: 10}
    root = write_hub_copy(tmp_path / "hub", data.subset, data.src_lang, data.tgt_lang, splits)
    common = [
        f"data.name={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "tokenizer.vocab_size=64",
        "tokenizer.byte_fallback=false",
    ]
    whole = prepare(compose_recipe("wmt14_en_fr", common), tmp_path / "whole")
    streamed_config = compose_recipe("wmt14_en_fr", [*common, "data.streaming=true"])
    streamed = prepare(streamed_config, tmp_path / "streamed")
    assert streamed["splits"]["train"]["source"].startswith("hub-stream:")
    for split in ("train", "valid"):
        hashes = [[s["sha256"] for s in m["splits"][split]["shards"]] for m in (whole, streamed)]
        assert hashes[0] == hashes[1]


# ---------------------------------------------------------------------------- the sampler


def toy_lengths(shard_sizes: list[int], seed: int = 0):
    """A lengths function over shards of the given sizes, with random sentence lengths."""
    rng = np.random.default_rng(seed)
    bases = np.concatenate([[0], np.cumsum(shard_sizes)])
    lengths = [rng.integers(1, 30, size=(2, n)) for n in shard_sizes]

    def lengths_of(shard: int):
        return np.arange(bases[shard], bases[shard + 1]), lengths[shard][0], lengths[shard][1]

    return lengths_of, bases


def test_an_epoch_hands_out_every_pair_once_in_batches_within_one_window():
    lengths_of, bases = toy_lengths([40, 40, 40, 40, 25])
    sampler = WindowSampler(5, 185, lengths_of, window_shards=2, max_tokens=120, seed=3)
    windows = sampler.windows(0)
    assert sorted(np.concatenate(windows).tolist()) == [0, 1, 2, 3, 4]
    seen = []
    for batch in sampler:
        shards = set((np.searchsorted(bases, batch, side="right") - 1).tolist())
        assert any(shards <= set(w.tolist()) for w in windows)  # one window's shards only
        src, tgt = (np.concatenate([lengths_of(s)[k] for s in range(5)])[batch] for k in (1, 2))
        assert len(batch) * (max(src.max(), tgt.max()) + 1) <= 120 or len(batch) == 1
        seen += batch.tolist()
    assert sorted(seen) == list(range(185))
    assert sampler.epoch == 1
    assert [b.tolist() for b in sampler] != [
        b.tolist()
        for b in WindowSampler(
            5, int(bases[-1]), lengths_of, window_shards=2, max_tokens=120, seed=3
        )
    ]  # the next epoch is another order


def test_processes_take_disjoint_equal_shares():
    lengths_of, bases = toy_lengths([40, 40, 40])
    ranks = [
        [
            b.tolist()
            for b in WindowSampler(3, int(bases[-1]), lengths_of, 2, 100, world_size=2, rank=r)
        ]
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) > 0
    flat = [set(sum(batches, [])) for batches in ranks]
    assert not flat[0] & flat[1]


def test_a_resumed_sampler_continues_with_the_batches_it_would_have_given():
    lengths_of, bases = toy_lengths([40, 40, 40])
    straight = WindowSampler(3, int(bases[-1]), lengths_of, 2, 100, seed=1)
    expected = [b.tolist() for b in straight] + [b.tolist() for b in straight]
    for stop in (3, len(expected) // 2 + 1):  # within the first window; in the second epoch
        first = WindowSampler(3, int(bases[-1]), lengths_of, 2, 100, seed=1)
        taken = []
        while len(taken) < stop:
            for batch in first:
                taken.append(batch.tolist())
                if len(taken) == stop:
                    break
        resumed = WindowSampler(3, int(bases[-1]), lengths_of, 2, 100, seed=1)
        resumed.load_state_dict(first.state_dict())
        rest = []
        while len(taken) + len(rest) < len(expected):
            rest += [b.tolist() for b in resumed]
        assert taken + rest[: len(expected) - len(taken)] == expected


def test_resuming_with_other_cleaning_limits_is_refused():
    lengths_of, bases = toy_lengths([40, 40, 40])
    state = WindowSampler(3, 120, lengths_of, 2, 100).state_dict()
    with pytest.raises(ConfigError, match="pairs was 120 when the run was saved and is 110"):
        WindowSampler(3, 110, lengths_of, 2, 100).load_state_dict(state)


def test_resuming_with_another_window_is_refused():
    lengths_of, bases = toy_lengths([40, 40, 40])
    state = WindowSampler(3, int(bases[-1]), lengths_of, 2, 100).state_dict()
    with pytest.raises(ConfigError, match="window_shards was 2 when the run was saved and is 1"):
        WindowSampler(3, int(bases[-1]), lengths_of, 1, 100).load_state_dict(state)


def test_a_sharded_split_leaves_out_what_cleaning_drops(corpus, tmp_path):
    out = tmp_path / "prepared"
    prepare(toy_config(corpus), out)
    cfg = DataConfig(max_length=5, shard_pairs=100)
    split = ShardedSplit(out / "train", [100, 100, 50], cfg, window_pairs=200)
    assert split.window_shards == 2
    tokenizer = Tokenizer.load(out)
    encoded = [
        (len(s), len(t))
        for s, t in zip(
            tokenizer.encode(read_lines(corpus / "train.en"), "src"),
            tokenizer.encode(read_lines(corpus / "train.de"), "tgt"),
            strict=True,
        )
    ]
    assert len(split) == sum(max(pair) <= 5 for pair in encoded) < 250
    batch = split.batch(np.array([0, 249]))
    assert batch.ids.tolist() == [0, 249]


# ---------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    """The toy task prepared with seq2seq-prepare and trained from the shards."""
    root = tmp_path_factory.mktemp("prepared")
    corpus = write_toy_corpus(root / "corpus")
    out, run_dir = root / "prepared", root / "run"
    overrides = toy_overrides(corpus, run_dir, data__shard_pairs=250)
    prepared = run_command("seq2seq-prepare", *overrides, f"out={out}")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    trained = run_command(
        "seq2seq-train",
        *overrides,
        f"data.prepared={out}",
        "train.max_steps=20",
        "train.validate_every=10",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    return prepared, corpus, out, run_dir


def test_prepare_says_what_it_wrote(prepared_run):
    prepared, _, out, _ = prepared_run
    lines = prepared.stdout.splitlines()
    assert lines[0].startswith("train: 600 pairs in 3 shard(s), ")
    assert lines[0].endswith(f" MB in {out / 'train'}")
    assert lines[1].startswith("valid: 40 pairs in 1 shard(s), ")
    assert json.loads((out / MANIFEST).read_text())["src_lang"] == "en"


def test_training_from_prepared_data_validates_tests_and_keeps_the_tokenizer(prepared_run):
    _, _, out, run_dir = prepared_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [10, 20]
    assert all("bleu" in r for r in records if r["kind"] == "valid")
    assert (run_dir / "results.json").is_file()
    assert Tokenizer.load(run_dir).fingerprint() == Tokenizer.load(out).fingerprint()
    assert " of 600 pairs " in (run_dir / "train.log").read_text()  # the cleaning counts
    assert not (run_dir / "data").exists()  # the shards are read where they are


def test_prepare_without_out_is_a_one_line_error(tmp_path):
    corpus = write_toy_corpus(tmp_path / "corpus", {"train": 20, "valid": 5, "test": 5})
    result = run_command("seq2seq-prepare", *toy_overrides(corpus, tmp_path / "run"))
    assert_one_line_error(result, "give the directory to prepare into: out=<dir>")


def test_training_from_a_directory_that_holds_no_prepared_data_is_a_one_line_error(tmp_path):
    corpus = write_toy_corpus(tmp_path / "corpus", {"train": 20, "valid": 5, "test": 5})
    overrides = toy_overrides(corpus, tmp_path / "run")
    result = run_command("seq2seq-train", *overrides, f"data.prepared={tmp_path}")
    assert_one_line_error(result, f"{tmp_path} holds no prepared data")


def test_prepared_data_for_other_languages_or_tokenizer_is_refused(prepared_run, tmp_path):
    _, corpus, out, _ = prepared_run
    overrides = [*toy_overrides(corpus, tmp_path / "run"), f"data.prepared={out}"]
    other_languages = run_command("seq2seq-train", *overrides, "data.tgt_lang=fr")
    assert_one_line_error(other_languages, f"{out} holds en-de but the config asks for en-fr")
    other_vocabulary = run_command("seq2seq-train", *overrides, "tokenizer.vocab_size=99")
    assert_one_line_error(
        other_vocabulary, f"tokenizer.vocab_size is 99 but {out} was encoded with 64"
    )


def test_a_damaged_shard_stops_training_with_a_one_line_error(prepared_run, tmp_path):
    _, corpus, out, _ = prepared_run
    damaged = Path(shutil.copytree(out, tmp_path / "damaged"))
    with open(shard_file(damaged / "train", 2, "src"), "ab") as stream:
        stream.write(b"\0")
    overrides = toy_overrides(corpus, tmp_path / "run")
    result = run_command("seq2seq-train", *overrides, f"data.prepared={damaged}")
    assert_one_line_error(result, f"{damaged / 'train'} has missing or damaged shard files")


def test_a_data_order_saved_by_an_earlier_version_resumes_at_the_next_epoch_start(caplog):
    lengths_of, bases = toy_lengths([40, 40])
    sampler = WindowSampler(2, int(bases[-1]), lengths_of, 2, 100)
    with caplog.at_level("WARNING"):
        sampler.load_state_dict({"epoch": 3, "position": 7, "seed": 0, "max_tokens": 100})
    assert (sampler.epoch, sampler.window, sampler.position) == (4, 0, 0)
    assert "resumes at the start of epoch 4" in caplog.text
    sampler.load_state_dict({"epoch": 3, "position": 0, "seed": 0, "max_tokens": 100})
    assert sampler.epoch == 3  # an epoch not started yet is not skipped


def test_streaming_is_for_hub_datasets():
    with pytest.raises(ConfigError, match="data.streaming reads hub datasets; data.source is"):
        DataConfig(streaming=True)
