"""Configuration schemas: one dataclass per config group, registered with Hydra's ConfigStore.

Hydra validates every override against these dataclasses (unknown keys and wrong types are
errors); `validate()` checks the combinations that a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore

from seq2seq.constants import PAD_ID
from seq2seq.errors import ConfigError


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

    d_model: int = 512
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: Activation = Activation.relu
    norm: NormPlacement = NormPlacement.post
    positions: Positions = Positions.sinusoidal
    max_positions: int = 1024
    tie_embeddings: TieEmbeddings = TieEmbeddings.all
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    pad_id: int = PAD_ID

    def __post_init__(self) -> None:
        # Plain strings are accepted from Python callers; Hydra already passes enum members.
        self.activation = Activation(self.activation)
        self.norm = NormPlacement(self.norm)
        self.positions = Positions(self.positions)
        self.tie_embeddings = TieEmbeddings(self.tie_embeddings)
        self.validate()

    @property
    def d_head(self) -> int:
        return self.d_model // self.heads

    def validate(self) -> None:
        """Raise ConfigError naming the fields of the first invalid value or combination."""
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
        for name in ("src_vocab_size", "tgt_vocab_size"):
            if not 0 <= self.pad_id < getattr(self, name):
                raise ConfigError(
                    f"model.pad_id ({self.pad_id}) must be a valid id of model.{name} "
                    f"({getattr(self, name)})"
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
    cache_dir: str | None = None  # downloads and encoded splits; None = the usual caches
    num_proc: int = 2  # processes that encode the corpus
    # Cleaning, training split only (validation and test data are never filtered or reordered)
    min_length: int = 1  # subword tokens per side (pairs with an empty side are always dropped)
    max_length: int = 250  # subword tokens per side
    max_length_ratio: float = 3.0  # longer side / shorter side, in subword tokens

    def __post_init__(self) -> None:
        self.source = DataSource(self.source)
        if self.src_lang == self.tgt_lang:
            raise ConfigError(f"data.src_lang and data.tgt_lang are both '{self.src_lang}'")
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ConfigError(
                f"need 1 <= data.min_length ({self.min_length}) <= data.max_length "
                f"({self.max_length})"
            )
        if self.max_length_ratio < 1:
            raise ConfigError(f"data.max_length_ratio must be >= 1, got {self.max_length_ratio}")
        if self.num_proc < 1:
            raise ConfigError(f"data.num_proc must be at least 1, got {self.num_proc}")


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
    sample_size: int = 2_000_000  # sentences sampled for training (bounded memory and time)
    sampling_alpha: float = 0.0  # subword regularisation during training; 0 = off
    threads: int = 2

    def __post_init__(self) -> None:
        self.model_type = SubwordModel(self.model_type)
        if self.vocab_size < 8:
            raise ConfigError(f"tokenizer.vocab_size must be at least 8, got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise ConfigError(
                f"tokenizer.character_coverage must be in (0, 1], got {self.character_coverage}"
            )
        if self.sample_size < 1:
            raise ConfigError(f"tokenizer.sample_size must be positive, got {self.sample_size}")


@dataclass
class Config:
    """The root config that every command composes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


def register_configs() -> None:
    """Register the schemas so YAML files in conf/ are validated against them."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    store.store(group="model", name="schema", node=ModelConfig)
    store.store(group="data", name="schema", node=DataConfig)
    store.store(group="tokenizer", name="schema", node=TokenizerConfig)
