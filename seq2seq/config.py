"""Configuration schemas: one dataclass per config group, registered with Hydra's ConfigStore.

Command-line overrides are checked against these dataclasses (seq2seq/overrides.py: unknown
keys and wrong types are errors); each `validate()` checks the ranges and combinations that a type
cannot express, and runs whenever a config is built (command line, saved config, Python).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from seq2seq.constants import PAD_ID
from seq2seq.errors import ConfigError, DamagedFileError, first_line

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

CONFIG_MODULE = "seq2seq.conf"  # the Hydra config package: conf/ of the repository
CONFIG_GROUPS = ("recipe", "model", "data", "tokenizer", "optim", "train", "decode")


def check_finite(config: Any, group: str) -> None:
    """Raise ConfigError for a NaN or infinite value: every float option takes a finite number."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{group}.{f.name} must be a finite number, got {value}")


class Activation(str, Enum):
    relu = "relu"
    gelu = "gelu"


class NormPlacement(str, Enum):
    post = "post"  # the paper's: x = norm(x + sublayer(x))
    pre = "pre"  # x = x + sublayer(norm(x)), plus a final norm after each stack


class Positions(str, Enum):
    sinusoidal = "sinusoidal"
    learned = "learned"
    none = "none"  # no positional information: attention is then permutation-equivariant


class TieEmbeddings(str, Enum):
    none = "none"  # three separate matrices
    decoder = "decoder"  # decoder input embedding == output projection
    all = "all"  # encoder input == decoder input == output projection (needs a shared vocabulary)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters: saved with every checkpoint and used to rebuild the model."""

    d_model: int = 512  # width of embeddings and of every layer's input and output
    heads: int = 8  # attention heads; must divide d_model
    encoder_layers: int = 6
    decoder_layers: int = 6
    layers: int = 0  # shorthand: when > 0, sets encoder_layers and decoder_layers (then 0)
    ffn_dim: int = 2048  # inner size of the position-wise feed-forward block
    dropout: float = 0.1  # on embeddings and on every sublayer's output
    attention_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward block
    activation: Activation = Activation.relu  # relu | gelu
    norm: NormPlacement = NormPlacement.post  # post (the paper's) | pre
    positions: Positions = Positions.sinusoidal  # sinusoidal | learned | none
    max_positions: int = 1024  # longest source or target sequence, eos/bos included
    tie_embeddings: TieEmbeddings = TieEmbeddings.all  # none | decoder | all
    src_vocab_size: int = 8000  # set from the tokenizer when training
    tgt_vocab_size: int = 8000  # set from the tokenizer when training
    pad_id: int = PAD_ID  # fixed: 0

    def __post_init__(self) -> None:
        # Plain strings are accepted from Python callers; Hydra already passes enum members.
        self.activation = Activation(self.activation)
        self.norm = NormPlacement(self.norm)
        self.positions = Positions(self.positions)
        self.tie_embeddings = TieEmbeddings(self.tie_embeddings)
        if self.layers:
            self.encoder_layers = self.decoder_layers = self.layers
            self.layers = 0
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the fields of the first invalid value or combination."""
        check_finite(self, "model")
        positive = (
            "d_model",
            "heads",
            "ffn_dim",
            "max_positions",
            "src_vocab_size",
            "tgt_vocab_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        for name in ("encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.d_model % self.heads != 0:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.heads ({self.heads})"
            )
        if self.tie_embeddings == TieEmbeddings.all and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "model.tie_embeddings=all needs one shared vocabulary, but model.src_vocab_size "
                f"({self.src_vocab_size}) != model.tgt_vocab_size ({self.tgt_vocab_size}); "
                "use a joint tokenizer or model.tie_embeddings=decoder"
            )
        if self.pad_id != PAD_ID:
            raise ConfigError(
                f"model.pad_id is fixed at {PAD_ID} (the tokenizer's padding id), got {self.pad_id}"
            )


class DataSource(str, Enum):
    multi30k = "multi30k"  # the official raw files: data.root (local copy) or a download
    hub = "hub"  # a Hugging Face dataset with the `translation` schema (hub name or local dir)
    files = "files"  # local files: plain-text pairs, TSV or JSONL


@dataclass
class DataConfig:
    """Where the parallel corpus comes from, and how the training split is cleaned."""

    source: DataSource = DataSource.multi30k
    src_lang: str = "en"
    tgt_lang: str = "de"
    # Each split is a split name (multi30k, hub) or a path (files): `corpus.{lang}.gz` for a
    # pair of line-aligned plain-text files, `corpus.tsv` (source<TAB>target), `corpus.jsonl`.
    train: str = "train"
    valid: str = "val"
    test: str = "test_2016_flickr"
    root: str | None = None  # multi30k: directory with a local copy of the raw files
    name: str | None = None  # hub: dataset name (wmt/wmt14) or a local dataset directory
    subset: str | None = None  # hub: the dataset's config, e.g. de-en
    streaming: bool = False  # hub: read the dataset as a stream instead of downloading it whole
    cache_dir: str | None = None  # downloads and encoded splits; None = the usual caches
    num_proc: int = 2  # threads that encode a corpus being prepared (processes for test sets)
    # Prepared data (seq2seq-prepare out=<dir>): training reads its shards, never the text
    prepared: str | None = None  # a directory written by seq2seq-prepare
    shard_pairs: int = 100_000  # pairs per shard when preparing
    window_pairs: int = 1_000_000  # shards batched together: sorted by length within, shuffled
    # Cleaning, training split only (validation and test data are never filtered or reordered)
    min_length: int = 1  # subword tokens per side (pairs with an empty side are always dropped)
    max_length: int = 250  # subword tokens per side
    max_length_ratio: float = 3.0  # longer side / shorter side, in subword tokens

    def __post_init__(self) -> None:
        self.source = DataSource(self.source)
        self.validate()

    def validate(self) -> None:
        check_finite(self, "data")
        if self.src_lang == self.tgt_lang:
            raise ConfigError(f"data.src_lang and data.tgt_lang are both '{self.src_lang}'")
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ConfigError(
                f"need 1 <= data.min_length ({self.min_length}) <= data.max_length "
                f"({self.max_length})"
            )
        if self.max_length_ratio < 1:
            raise ConfigError(f"data.max_length_ratio must be >= 1, got {self.max_length_ratio}")
        if self.streaming and self.source != DataSource.hub:
            raise ConfigError(
                f"data.streaming reads hub datasets; data.source is {self.source.value}: "
                "set data.streaming=false or data.source=hub"
            )
        for name in ("num_proc", "shard_pairs", "window_pairs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {getattr(self, name)}")


class SubwordModel(str, Enum):
    unigram = "unigram"
    bpe = "bpe"


@dataclass
class TokenizerConfig:
    """SentencePiece training options."""

    joint: bool = True  # one model for both languages (needed for model.tie_embeddings=all)
    model_type: SubwordModel = SubwordModel.unigram
    vocab_size: int = 8000
    character_coverage: float = 1.0  # 0.9995 for languages with very large alphabets
    byte_fallback: bool = True  # unseen characters become UTF-8 bytes instead of <unk>
    sample_size: int = 2_000_000  # sentences sampled (one pass) to train on: bounds memory, time
    threads: int = 2

    def __post_init__(self) -> None:
        self.model_type = SubwordModel(self.model_type)
        self.validate()

    def validate(self) -> None:
        check_finite(self, "tokenizer")
        if self.vocab_size < 8:
            raise ConfigError(f"tokenizer.vocab_size must be at least 8, got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise ConfigError(
                f"tokenizer.character_coverage must be in (0, 1], got {self.character_coverage}"
            )
        if self.sample_size < 1:
            raise ConfigError(f"tokenizer.sample_size must be positive, got {self.sample_size}")


class OptimizerName(str, Enum):
    adam = "adam"
    adamw = "adamw"


class Schedule(str, Enum):
    inverse_sqrt = "inverse_sqrt"  # linear warm-up to optim.lr, then lr * sqrt(warmup / step)
    noam = "noam"  # the paper's: optim.lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    cosine = "cosine"  # linear warm-up, then cosine decay to optim.min_lr at the horizon
    linear = "linear"  # linear warm-up, then linear decay to optim.min_lr at the horizon
    constant = "constant"  # linear warm-up, then optim.lr


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    optimizer: OptimizerName = OptimizerName.adam
    lr: float = 5e-4  # peak learning rate (for noam: the factor in front of the formula)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.inverse_sqrt
    warmup_steps: int = 4000
    warmup_fraction: float = 0.0  # if > 0: the warm-up is this fraction of the horizon instead
    cooldown: float = 0.0  # the last fraction of the horizon, where lr falls linearly to min_lr
    min_lr: float = 0.0  # the final learning rate (cosine, linear, cooldown)

    def __post_init__(self) -> None:
        self.optimizer = OptimizerName(self.optimizer)
        self.schedule = Schedule(self.schedule)
        self.validate()

    def validate(self) -> None:
        check_finite(self, "optim")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        for name in ("warmup_steps", "eps", "weight_decay", "min_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "warmup_fraction", "cooldown"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr={self.min_lr} must not exceed optim.lr={self.lr}")


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16 (CPU with AVX-512 BF16 / AMX, and CUDA)
    fp16 = "fp16"  # autocast to float16 with loss scaling (CUDA only)
    auto = "auto"  # bf16 where the device computes it natively, else fp32


class StopMetric(str, Enum):
    bleu = "bleu"
    loss = "loss"


@dataclass
class TrainConfig:
    """The training loop."""

    seed: int = 1
    max_tokens: int = 4096  # tokens per batch per process, padding included
    accumulate: int = 1  # batches per optimizer step
    max_steps: int = 0  # optimizer steps; 0 = no limit
    max_epochs: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget; 0 = no limit
    label_smoothing: float = 0.1
    clip_norm: float = 0.0  # gradient clipping by global norm; 0 = off
    precision: Precision = Precision.fp32
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ..., mps
    threads: int = 0  # torch threads on CPU; 0 = torch's default
    log_every: int = 50  # steps between progress-bar and metrics.jsonl updates
    validate_every: int = 1000  # steps between validations (and checkpoints)
    valid_bleu: bool = True  # also decode the validation set and score BLEU
    valid_beam: int = 1  # beam size of that decoding; 1 = greedy
    keep_last: int = 5  # step checkpoints kept in checkpoints/ (for averaging)
    average_last: int = 0  # at the end: average the last N checkpoints, validate, keep if best
    ema: float = 0.0  # decay of a moving average of the weights (e.g. 0.999); 0 = off
    subword_alpha: float = 0.0  # sampled segmentations ~ P^alpha (subword regularisation); 0 = off
    subword_nbest: int = 8  # ... drawn from this many most likely segmentations
    stop_metric: StopMetric = StopMetric.bleu  # chooses the best checkpoint
    patience: int = 0  # validations without improvement before stopping; 0 = never stop early
    test_at_end: bool = True  # translate and score data.test with the best weights at the end

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        self.stop_metric = StopMetric(self.stop_metric)
        self.validate()

    def validate(self) -> None:
        check_finite(self, "train")
        for name in (
            "max_tokens",
            "accumulate",
            "log_every",
            "validate_every",
            "keep_last",
            "valid_beam",
            "subword_nbest",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_epochs", "max_minutes", "threads", "patience", "clip_norm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if not 0 <= self.ema < 1:
            raise ConfigError(f"train.ema must be in [0, 1), got {self.ema}")
        if self.subword_alpha < 0:
            raise ConfigError(f"train.subword_alpha must be >= 0, got {self.subword_alpha}")
        if not 0 <= self.average_last <= self.keep_last:
            raise ConfigError(
                f"train.average_last={self.average_last} must be between 0 and "
                f"train.keep_last={self.keep_last} (the checkpoints kept to average)"
            )


class SearchStrategy(str, Enum):
    greedy = "greedy"
    beam = "beam"
    sample = "sample"


class LengthPenalty(str, Enum):
    power = "power"  # score / len ** alpha (fairseq, Hugging Face, Marian, CTranslate2)
    gnmt = "gnmt"  # score / ((5 + len) / 6) ** alpha (Wu et al. 2016; OpenNMT-py)


@dataclass
class DecodeConfig:
    """How translations are searched for (validation, translate, evaluate)."""

    strategy: SearchStrategy = SearchStrategy.beam  # greedy | beam | sample
    beam: int = 5  # beam size
    length_penalty: float = 1.0  # alpha; 0 = rank by the plain sum of log-probabilities
    length_penalty_form: LengthPenalty = LengthPenalty.power  # power | gnmt
    nbest: int = 1  # hypotheses returned per sentence (at most the beam size)
    max_len_a: float = 1.2  # max output length = a * source length + b, capped by the model
    max_len_b: int = 10  # see max_len_a
    min_len: int = 0  # eos is not allowed before this many tokens
    no_repeat_ngram: int = 0  # forbid repeating any n-gram of this size; 0 = off
    temperature: float = 1.0  # sampling: divide logits by this
    top_k: int = 0  # sampling: keep the k most probable tokens; 0 = all
    top_p: float = 1.0  # sampling: keep the smallest set with this much probability
    seed: int = 0  # sampling: random seed
    max_tokens: int = 8192  # source tokens per batch, padding included
    workers: int = 1  # CPU: batches decoded at once, each by one thread (torch threads split)
    kernels: bool = True  # CPU: compiled top-k and attention kernels (seq2seq/fast/kernels.py)

    def __post_init__(self) -> None:
        self.strategy = SearchStrategy(self.strategy)
        self.length_penalty_form = LengthPenalty(self.length_penalty_form)
        self.validate()

    def validate(self) -> None:
        check_finite(self, "decode")
        for name in ("beam", "nbest", "max_tokens", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decode.{name} must be at least 1, got {getattr(self, name)}")
        if self.nbest > 1 and self.strategy != SearchStrategy.beam:
            raise ConfigError(
                f"decode.nbest={self.nbest} needs decode.strategy=beam "
                f"(it is {self.strategy.value})"
            )
        if self.nbest > self.beam:
            raise ConfigError(
                f"decode.nbest ({self.nbest}) cannot exceed decode.beam ({self.beam})"
            )
        if self.temperature <= 0:
            raise ConfigError(f"decode.temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"decode.top_p must be in (0, 1], got {self.top_p}")
        for name in ("min_len", "no_repeat_ngram", "top_k", "max_len_a", "max_len_b"):
            if getattr(self, name) < 0:
                raise ConfigError(f"decode.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_len_a == 0 and self.max_len_b == 0:
            raise ConfigError(
                "decode.max_len_a and decode.max_len_b are both 0: every translation would be "
                "empty; the maximum output length is max_len_a * source length + max_len_b"
            )


@dataclass
class Config:
    """The root config that every command composes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    run_dir: str | None = None  # None = runs/<recipe>/<timestamp>

    def __post_init__(self) -> None:
        if self.train.subword_alpha > 0 and self.tokenizer.model_type != SubwordModel.unigram:
            raise ConfigError(
                "train.subword_alpha samples segmentations of a unigram model: set "
                "tokenizer.model_type=unigram (in a new run) or train.subword_alpha=0"
            )


def schema_keys(node: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema (`model.d_model`, `train.max_steps`, ...)."""
    keys = []
    for f in fields(node):
        key = f"{prefix}{f.name}"
        keys.append(key)
        default = f.default_factory() if callable(f.default_factory) else None
        if is_dataclass(default):
            keys += schema_keys(type(default), f"{key}.")
    return keys


def read_saved_settings(path: Path) -> dict:
    """The settings a run's config.yaml holds, read as plain YAML data: a tag such as
    `!!python/object` is an error, never an object that gets built."""
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DamagedFileError(path, "it is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise DamagedFileError(path, f"it is not valid YAML ({yaml_problem(error)})") from None
    if saved is None:
        raise DamagedFileError(path, "it is empty")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise DamagedFileError(path, "it is not a mapping of settings with a model section")
    return saved


def yaml_problem(error: yaml.YAMLError) -> str:
    """`<what> on line N` for a YAML error, in one line."""
    mark = getattr(error, "problem_mark", None)
    where = f" on line {mark.line + 1}" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or error}{where}"


def load_saved_config(path: Path) -> DictConfig:
    """A run's config.yaml, typed by the schema. Keys this version does not know (written by
    another version of seq2seq) are dropped with a warning rather than refusing the run."""
    saved = read_saved_settings(path)
    known = set(schema_keys(Config))
    dropped = []
    for group, values in list(saved.items()):
        if group not in known:
            dropped.append(group)
            del saved[group]
        elif isinstance(values, dict):
            for key in [k for k in values if f"{group}.{k}" not in known]:
                dropped.append(f"{group}.{key}")
                del values[key]
    if dropped:
        log.warning(
            "%s: ignoring settings this version does not know: %s", path, ", ".join(dropped)
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), saved)
        assert isinstance(merged, DictConfig)
        return merged
    except Exception as error:  # a wrong type or value in a hand-edited file
        raise ConfigError(f"{path}: {first_line(error)}") from None


def group_folder(group: str) -> Traversable:
    """Where a config group's named options live: recipes/ for `recipe`, else conf/<group>/."""
    return files("seq2seq.recipes") if group == "recipe" else files(CONFIG_MODULE) / group


def group_options(group: str) -> list[str]:
    """The named options of a config group (`model`: base, big, small, tiny); [] for none."""
    folder = group_folder(group)
    if not folder.is_dir():
        return []
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def sweep_directory(run_dir: str | None, recipe: str | None, time: str) -> str:
    """Where a sweep's jobs go (hydra.sweep.dir), each in a folder named by its number:
    run_dir= when given, else runs/<recipe>/sweep-<time>."""
    return run_dir or f"runs/{recipe or 'custom'}/sweep-{time}"


def register_configs() -> None:
    """Register the schemas (so YAML files in conf/ are validated against them), the recipes
    (the `recipe` group, read from the package's recipes/ folder) and the sweep directory."""
    OmegaConf.register_new_resolver("seq2seq_sweep_dir", sweep_directory, replace=True)
    store = ConfigStore.instance()
    for recipe in group_options("recipe"):
        store.store(
            group="recipe",
            name=recipe,
            node=OmegaConf.create(
                (group_folder("recipe") / f"{recipe}.yaml").read_text(encoding="utf-8")
            ),
            package="_global_",
        )
    store.store(name="schema", node=Config)
    store.store(group="model", name="schema", node=ModelConfig)
    store.store(group="data", name="schema", node=DataConfig)
    store.store(group="tokenizer", name="schema", node=TokenizerConfig)
    store.store(group="optim", name="schema", node=OptimConfig)
    store.store(group="train", name="schema", node=TrainConfig)
    store.store(group="decode", name="schema", node=DecodeConfig)


Schema = TypeVar("Schema")


def to_dataclass(node: Any, schema: type[Schema]) -> Schema:
    """A composed config node as its validated dataclass (runs every `validate()`)."""
    value = OmegaConf.to_object(node)
    if not isinstance(value, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(value).__name__}")
    return value
