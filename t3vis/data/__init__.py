"""Datasets for t3vis: load a labelled text table (CSV, JSONL, Parquet, Hugging Face ``save_to_disk``) or the
bundled BBC News corpus as a ``TextDataset``, split it, and inject known label noise; for token classification
(NER) the same as a ``TaggedDataset`` (CoNLL files, token/tag records, the bundled Twitter NER corpus).

Typical use::

    ds = load_table("reviews.csv", text_column="review", label_column="sentiment")
    ds = inject_label_noise(split_train_validation(ds, 0.2, seed=0), 0.1, seed=0)
    RunWriter.create(run_dir, examples=ds.frame, label_names=ds.label_names, dataset=ds.describe(), model=...)

    tagged = inject_mention_noise(load_twitter_ner(validation_fraction=0.2, seed=0), 0.05, seed=0)
"""

from .bbc import load_bbc_news
from .conll import load_conll, load_tagged
from .dataset import SPLITS, TextDataset, from_frame
from .labels import align_labels, model_label_names
from .loaders import load_table
from .noise import inject_label_noise, inject_mention_noise
from .split import split_train_validation
from .subwords import WordAlignment, align_words
from .tagging import TaggedDataset, mentions, split_sentences
from .twitter_ner import load_twitter_ner

__all__ = ["SPLITS", "TaggedDataset", "TextDataset", "WordAlignment", "align_labels", "align_words", "from_frame",
           "inject_label_noise", "inject_mention_noise", "load_bbc_news", "load_conll", "load_table", "load_tagged",
           "load_twitter_ner", "mentions", "model_label_names", "split_sentences", "split_train_validation"]
