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


@dataclass
class Config:
    """The root config that every command composes."""

    model: ModelConfig = field(default_factory=ModelConfig)


def register_configs() -> None:
    """Register the schemas so YAML files in conf/ are validated against them."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    store.store(group="model", name="schema", node=ModelConfig)
