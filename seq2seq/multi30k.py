"""Multi30k task 1 (WMT16 multimodal translation, text only): find or download the raw files.

The official raw files live in the multi30k/dataset GitHub repository as
`data/task1/raw/<split>.<lang>.gz`. With `data.root` pointing at a directory holding the same
file names, nothing is downloaded. Otherwise the files are downloaded once into a cache directory
and verified: the SHA-256 of the decompressed text is compared with the pinned value where this
project has one (train, val and test_2016_flickr in en/de/fr).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from seq2seq.errors import UserError

log = logging.getLogger(__name__)

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
SPLITS = (
    "train",
    "val",
    "test_2016_flickr",
    "test_2017_flickr",
    "test_2018_flickr",
    "test_2017_mscoco",
)
LANGUAGES = ("en", "de", "fr", "cs")

# SHA-256 of the decompressed text of each official raw file.
TEXT_SHA256 = {
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.fr": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.fr": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.fr": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seq2seq" / "multi30k"


def check_names(split: str, lang: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown Multi30k split '{split}'; available: {', '.join(SPLITS)}")
    if lang not in LANGUAGES:
        raise UserError(f"language '{lang}' is not in Multi30k; available: {', '.join(LANGUAGES)}")


def local_file(root: Path, split: str, lang: str) -> Path:
    """`<root>/<split>.<lang>.gz` or `<root>/<split>.<lang>`; a clear error if neither exists."""
    for name in (f"{split}.{lang}.gz", f"{split}.{lang}"):
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        raise UserError(f"data.root '{root}' is not a directory")
    present = sorted(p.name for p in root.iterdir() if p.name.startswith(f"{split}."))
    hint = f"files for this split: {', '.join(present)}" if present else "no files for this split"
    raise UserError(f"Multi30k file {split}.{lang}.gz not found in data.root '{root}' ({hint})")


def text_sha256(path: Path) -> str:
    """SHA-256 of the decompressed content of a gzip file."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(split: str, lang: str, cache_dir: Path, base_url: str = BASE_URL) -> Path:
    """The cached raw file, downloaded and verified first if needed."""
    name = f"{split}.{lang}.gz"
    target = cache_dir / name
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url}/{name}"
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".part", delete=False) as part:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, part)
        except (urllib.error.URLError, OSError) as error:
            Path(part.name).unlink(missing_ok=True)
            raise UserError(
                f"could not download {url} ({error}); set data.root to a local copy of the files"
            ) from error
    verify(Path(part.name), f"{split}.{lang}", url)
    os.replace(part.name, target)
    return target


def verify(path: Path, key: str, url: str) -> None:
    actual = text_sha256(path)
    expected = TEXT_SHA256.get(key)
    if expected is None:
        log.warning("no pinned checksum for %s; downloaded text has SHA-256 %s", key, actual)
    elif actual != expected:
        path.unlink(missing_ok=True)
        raise UserError(f"checksum mismatch for {url}: expected {expected}, got {actual}")


def multi30k_file(
    split: str, lang: str, root: str | None, cache_dir: str | None, base_url: str = BASE_URL
) -> Path:
    """The path of one raw file: from `root` if given, else from the download cache."""
    check_names(split, lang)
    if root is not None:
        return local_file(Path(root), split, lang)
    return download(split, lang, Path(cache_dir) if cache_dir else default_cache_dir(), base_url)
