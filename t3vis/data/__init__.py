"""Datasets for t3vis: load a labelled text table (CSV, JSONL, Parquet, Hugging Face ``save_to_disk``) or the
bundled BBC News corpus as a ``TextDataset``, split it, and inject known label noise.

Typical use::

    ds = load_table("reviews.csv", text_column="review", label_column="sentiment")
    ds = inject_label_noise(split_train_validation(ds, 0.2, seed=0), 0.1, seed=0)
    RunWriter.create(run_dir, examples=ds.frame, label_names=ds.label_names, dataset=ds.describe(), model=...)
"""

from .bbc import load_bbc_news
from .dataset import SPLITS, TextDataset, from_frame
from .labels import align_labels, model_label_names
from .loaders import load_table
from .noise import inject_label_noise
from .split import split_train_validation

__all__ = ["SPLITS", "TextDataset", "align_labels", "from_frame", "inject_label_noise", "load_bbc_news",
           "load_table", "model_label_names", "split_train_validation"]
