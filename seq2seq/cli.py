"""Console entry points. Each composes the Hydra config in `conf/` and runs one job."""

from __future__ import annotations

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from seq2seq.config import Config, register_configs
from seq2seq.errors import UserError

CONFIG_MODULE = "pkg://seq2seq.conf"


def to_config(cfg: DictConfig) -> Config:
    """The composed DictConfig as validated dataclasses (runs every `validate()`)."""
    return OmegaConf.to_object(cfg)


def report_user_errors(job: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """Run `job`; a UserError becomes one line on stderr and exit status 2, not a traceback."""

    def wrapped(cfg: DictConfig) -> None:
        try:
            job(cfg)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    wrapped.__name__ = job.__name__
    wrapped.__doc__ = job.__doc__
    return wrapped


def hydra_command(job: Callable[[DictConfig], None]) -> Callable[[], None]:
    """Turn a job into a console script that parses Hydra overrides from the command line."""
    register_configs()
    return hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="config")(
        report_user_errors(job)
    )


def info_job(cfg: DictConfig) -> None:
    """Build the configured model and print its architecture summary and parameter count."""
    from seq2seq.model import Transformer, count_parameters

    config = to_config(cfg)
    model = Transformer(config.model)
    m = config.model
    print(
        f"Transformer {m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, "
        f"{m.heads} heads, ffn {m.ffn_dim}, {m.norm.value}-norm, {m.positions.value} positions, "
        f"vocab {m.src_vocab_size}/{m.tgt_vocab_size}, tied embeddings: {m.tie_embeddings.value}"
    )
    print(f"parameters: {count_parameters(model):,}")


info = hydra_command(info_job)
