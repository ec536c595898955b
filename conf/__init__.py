"""Hydra configs shipped with the package (the repository's top-level `conf/`)."""
