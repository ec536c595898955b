"""Task recipes shipped with the package (the repository's top-level `recipes/`)."""
