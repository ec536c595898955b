"""ModelConfig validation and the shipped model configs."""

from __future__ import annotations

import pytest
from helpers import RECIPES, compose_recipe
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from seq2seq.config import ModelConfig, register_configs
from seq2seq.errors import ConfigError
from seq2seq.model import Transformer, count_parameters

MODEL_SIZES = ["tiny", "small", "base", "big"]


def test_heads_must_divide_d_model_and_the_error_names_both_fields():
    with pytest.raises(ConfigError, match=r"model\.d_model \(100\).*model\.heads \(3\)"):
        ModelConfig(d_model=100, heads=3)


def test_tying_all_embeddings_needs_equal_vocabularies():
    with pytest.raises(ConfigError, match=r"model\.src_vocab_size.*model\.tgt_vocab_size"):
        ModelConfig(tie_embeddings="all", src_vocab_size=100, tgt_vocab_size=200)
    ModelConfig(tie_embeddings="decoder", src_vocab_size=100, tgt_vocab_size=200)


@pytest.mark.parametrize(
    "field, value",
    [("d_model", 0), ("encoder_layers", 0), ("dropout", 1.0), ("ffn_dim", -1), ("pad_id", 8000)],
)
def test_out_of_range_values_name_their_field(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        ModelConfig(**{field: value})


def test_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="'middle'"):
        ModelConfig(norm="middle")


def compose_model(size: str, overrides: list[str] | None = None) -> ModelConfig:
    register_configs()
    with initialize_config_module("seq2seq.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"model={size}", *(overrides or [])])
    return OmegaConf.to_object(cfg).model


@pytest.mark.parametrize("size", MODEL_SIZES)
def test_every_shipped_model_config_composes_and_validates(size):
    cfg = compose_model(size)
    assert isinstance(cfg, ModelConfig)


def test_paper_sizes_have_the_paper_parameter_counts():
    """Vaswani et al. report 65M (base) and 213M (big) with a 37k shared vocabulary."""
    base = count_parameters(Transformer(compose_model("base")))
    big = count_parameters(Transformer(compose_model("big")))
    assert 60e6 < base < 66e6
    assert 210e6 < big < 216e6


def test_overrides_are_type_checked():
    with pytest.raises(ConfigCompositionException, match="model.d_model=abc"):
        compose_model("tiny", ["model.d_model=abc"])
    with pytest.raises(ConfigCompositionException, match="model.norm=middle"):
        compose_model("tiny", ["model.norm=middle"])


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_composes_and_validates(name):
    config = compose_recipe(name)
    assert config.data.src_lang != config.data.tgt_lang
    Transformer(config.model)  # builds


def test_recipes_ship_with_the_package():
    from importlib.resources import files

    shipped = sorted(
        p.name.removesuffix(".yaml")
        for p in files("seq2seq.recipes").iterdir()
        if p.name.endswith(".yaml")
    )
    assert shipped == sorted(RECIPES)


def test_recipe_picks_its_model_and_the_command_line_wins():
    assert compose_recipe("wmt14_en_de_big").model.d_model == 1024
    assert compose_recipe("wmt14_en_de_big", ["model=base"]).model.d_model == 512
    assert (
        compose_recipe("wmt14_en_de", ["optim.lr=7e-4", "train.max_steps=2000"]).train.max_steps
        == 2000
    )


def test_model_layers_sets_both_stacks():
    model = compose_recipe("wmt14_en_de", ["model.layers=4"]).model
    assert (model.encoder_layers, model.decoder_layers, model.layers) == (4, 4, 0)
    unchanged = compose_recipe("wmt14_en_de").model
    assert (unchanged.encoder_layers, unchanged.decoder_layers) == (6, 6)
