"""The package ships its configs, wherever it is installed."""

from importlib.resources import files

import seq2seq


def test_configs_ship_inside_the_package():
    conf = files("seq2seq.conf")
    assert conf.joinpath("config.yaml").is_file()
    for size in ("tiny", "small", "base", "big"):
        assert conf.joinpath("model", f"{size}.yaml").is_file()


def test_recipes_ship_inside_the_package():
    assert files("seq2seq.recipes").joinpath("README.md").is_file()


def test_version_is_exposed():
    assert seq2seq.__version__.count(".") == 2


def test_the_installed_version_is_the_package_version():
    from importlib.metadata import version

    assert version("seq2seq") == seq2seq.__version__
