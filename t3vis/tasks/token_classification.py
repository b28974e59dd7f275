"""Token classification (NER, tagging): a tag per word, read from the logits at the word's first sub-token.

The unit of analysis is the *word*: a token run's rows (``examples/`` in the store, every per-row array, every
point and table row) are words, sentences in order and words in order within them. The columns ``sentence`` (the
sentence's row in the source) and ``position`` (the word's index in it) tie words back to sentences, so every
store, pipeline and view that works per row works per word unchanged; what differs is here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .base import Task

#: Words shown either side of a word in its ``context`` column.
CONTEXT_WORDS = 6
#: Marks around the word itself in its context (plain characters: the context is rendered as text).
MARK = ("«", "»")
#: The tag of words outside every entity (BIO/IOB2).
OUTSIDE = "O"


class TokenClassification(Task):
    name = "token_classification"
    label = "token classification"
    unit = "word"
    instance_view = "tags"
    head = "token"

    def align_labels(self, dataset, config):
        from ..data.labels import align_tags, model_label_names

        return align_tags(dataset, model_label_names(config))

    def default_filters(self, label_names: list[str]) -> dict:
        """Entity words only: ``O`` words are most of any corpus and would bury the entities in every view (one
        click on "Clear filters" shows them)."""
        entities = tuple(name for name in label_names if name != OUTSIDE)
        return {"label": entities} if entities and len(entities) < len(label_names) else {}

    score_input_names = ("mention", "surface_type_prob")

    def score_inputs(self, run) -> dict[str, np.ndarray]:
        """Each word's given mention (``mention_ids``) and its type's share among the other entity occurrences of
        the word (``surface_type_prob``): what ``mention_consensus`` adds to the recorded dynamics."""
        labels, names = run.column("label"), list(run.label_names)
        return {"mention": mention_ids(labels, run.column("sentence"), names),
                "surface_type_prob": surface_type_prob(run.column("text"), labels, names)}


TOKEN_CLASSIFICATION = TokenClassification()


def tag_types(label_names: Sequence[str]) -> list[str]:
    """Each tag's entity type: ``B-x`` and ``I-x`` share ``x``; ``O`` has ``""``; any other name is its own type."""
    from ..data.tagging import parse_tag

    return [part[1] if (part := parse_tag(name)) else str(name) for name in label_names]


def mention_ids(labels: np.ndarray, sentence: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """Each word's given mention, numbered 0, 1, ... in row order (-1: a word outside every mention), for rows in
    sentence order: the spans ``data.tagging.mentions`` reads (``B-x`` starts a mention, ``I-x`` continues an ``x``
    mention of the same sentence and otherwise starts one, as seqeval reads them), vectorised over the rows."""
    from ..data.tagging import parse_tag

    labels, sentence = np.asarray(labels, np.int64), np.asarray(sentence)
    parsed = [parse_tag(name) or ("B", str(name)) for name in label_names]  # a name that is no BIO tag: one word
    prefix = np.array([p for p, _ in parsed], object)[labels]
    kind = np.array([k for _, k in parsed], object)[labels]
    entity = prefix != "O"
    continues = np.zeros(len(labels), bool)
    continues[1:] = ((prefix[1:] == "I") & entity[:-1] & (kind[1:] == kind[:-1]) & (sentence[1:] == sentence[:-1]))
    starts = entity & ~continues
    return np.where(entity, np.cumsum(starts) - 1, -1).astype(np.int64)


def surface_type_prob(words: Sequence[str], labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """For each entity word, the share of the *other* entity occurrences of the same word (lower-cased, every split)
    given the same type, as the Krichevsky-Trofimov estimate ``(same + 1/2) / (others + 1)``: 1/2 for a word seen
    once, towards 1 for a word always typed alike, towards 0 for one typed otherwise everywhere else. The same
    string annotated differently across a corpus is the classic sign of an annotation error (Dickinson and Meurers
    2003). NaN for words tagged ``O``. Float32 out."""
    labels = np.asarray(labels, np.int64)
    types = np.asarray(tag_types(label_names), object)[labels]
    entity = types != ""
    words = pd.Series(np.asarray(words, object)[entity]).fillna("").astype(str).str.lower()
    frame = pd.DataFrame({"word": words.to_numpy(), "type": types[entity]})
    occurrences = frame.groupby("word")["type"].transform("size").to_numpy()
    same = frame.groupby(["word", "type"])["type"].transform("size").to_numpy()
    out = np.full(len(labels), np.nan, np.float32)
    out[entity] = (same - 1 + 0.5) / (occurrences - 1 + 1.0)
    return out


def entity_probs(logits: np.ndarray, outside: int) -> np.ndarray:
    """Each word's probabilities among the entity tags only: a float64 softmax over every tag but ``outside``,
    columns in tag order with ``outside`` left out (NaN rows for words without logits)."""
    entity = np.delete(np.asarray(logits, np.float64), outside, axis=1)
    shifted = entity - entity.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def typed_gold_prob(logits: np.ndarray, labels: np.ndarray, outside: int) -> np.ndarray:
    """Each word's given tag's probability among the entity tags only (``entity_probs``): whether the model agrees
    with the word's *type*, however sure it is that the word is an entity at all. NaN for words tagged ``outside``
    and for words without logits (cut off). Float32 out."""
    labels = np.asarray(labels, np.int64)
    probs = entity_probs(logits, outside)
    column = np.clip(labels - (labels > outside), 0, probs.shape[1] - 1)  # the tag's column once O is removed
    out = probs[np.arange(len(labels)), column]
    out[labels == outside] = np.nan
    return out.astype(np.float32)


def type_prob(logits: np.ndarray, labels: np.ndarray, outside: int, label_names: Sequence[str]) -> np.ndarray:
    """Each word's given *type*'s probability among the entity tags (``entity_probs``, the ``B-`` and ``I-`` tags of
    the type summed): whether the model agrees with the type, wherever it puts the mention's boundary. NaN for words
    tagged ``outside`` and for words without logits. Float32 out."""
    labels = np.asarray(labels, np.int64)
    types = np.asarray(tag_types(label_names), object)
    same_type = np.delete(types, outside)[None, :] == types[labels][:, None]  # [words, entity tags (columns)]
    out = (entity_probs(logits, outside) * same_type).sum(axis=1)
    out[labels == outside] = np.nan
    return out.astype(np.float32)


#: Nearest entity words whose given types ``neighbour_type_prob`` counts (measured on the Twitter NER demo: 50 ranks
#: flips best on seeds 0 and 1 among 10-200; benchmarks/RESULTS.md "Token classification").
TYPE_NEIGHBOURS = 50


def neighbour_type_prob(features: np.ndarray, types: np.ndarray, n_types: int, k: int = TYPE_NEIGHBOURS,
                        block: int = 2048) -> np.ndarray:
    """For each of ``m`` entity words (``features [m, D]``, ``types [m]`` in ``0..n_types-1``), the share of its
    ``k`` nearest other entity words given the same type, Laplace-smoothed over the types:
    ``(same + 1) / (k + n_types)``. A second opinion on a word's type that no weight of the model memorised for
    that word: a flipped mention sits among words of its true type. Nearness is the cosine similarity of the
    features centred on their mean (a Transformer's hidden states share one dominant direction that makes every
    pair look alike). NaN for every word when there are fewer than two. Exact, in blocks of ``block`` rows (memory
    ``block x m``)."""
    import torch

    types = np.asarray(types, np.int64)
    k = min(int(k), len(types) - 1)
    if k < 1:
        return np.full(len(types), np.nan, np.float32)
    x = torch.as_tensor(np.asarray(features, np.float32))
    x = torch.nn.functional.normalize(x - x.mean(0), dim=1)
    kinds = torch.as_tensor(types)
    same = torch.empty(len(types), dtype=torch.float64)
    for start in range(0, len(types), block):
        stop = min(len(types), start + block)
        sims = x[start:stop] @ x.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = -torch.inf  # not its own neighbour
        nearest = sims.topk(k, dim=1).indices
        same[start:stop] = (kinds[nearest] == kinds[start:stop, None]).sum(1).double()
    return ((same + 1) / (k + n_types)).numpy().astype(np.float32)


def word_contexts(sentences: Sequence[Sequence[str]], width: int = CONTEXT_WORDS) -> list[str]:
    """Every word in its sentence, ``width`` words either side, the word itself in « »: what a table row shows."""
    out = []
    left_mark, right_mark = MARK
    for words in sentences:
        words = [str(w) for w in words]
        n = len(words)
        for i, word in enumerate(words):
            lo, hi = max(0, i - width), min(n, i + width + 1)
            parts = (["…"] if lo else []) + words[lo:i] + [f"{left_mark}{word}{right_mark}"] + words[i + 1:hi] \
                + (["…"] if hi < n else [])
            out.append(" ".join(parts))
    return out


def unit_frame(dataset) -> pd.DataFrame:
    """The run's rows for a ``TaggedDataset``: one per word, with the columns the store keeps.

    ``text`` is the word, ``label`` its tag, then ``split``, ``sentence``, ``position``, ``context`` (the word in
    its sentence), ``flipped``/``original_label`` after noise, and the sentences' metadata.
    """
    words = dataset.words().rename(columns={"word": "text", "tag": "label", "original_tag": "original_label"})
    words["context"] = word_contexts(dataset.frame["tokens"])
    first = ["text", "label", "split", "sentence", "position", "context"]
    return words[first + [c for c in words.columns if c not in first]].reset_index(drop=True)


def sentence_offsets(sentence: np.ndarray) -> np.ndarray:
    """Where each sentence's words start among the rows (``[S + 1]``), from the rows' ``sentence`` column (rows
    sorted by sentence, as ``unit_frame`` writes them)."""
    sentence = np.asarray(sentence, np.int64)
    if len(sentence) and np.any(np.diff(sentence) < 0):
        raise ValueError("rows are not sorted by sentence")
    counts = np.bincount(sentence, minlength=int(sentence.max()) + 1 if len(sentence) else 0)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def sentence_spans(sentence: np.ndarray, rows) -> list[np.ndarray]:
    """The rows of every sentence (in order) that holds one of the word ``rows``, from the rows' ``sentence``
    column: what runs the model over whole sentences for some words (importance, re-prediction)."""
    sentence = np.asarray(sentence)
    offsets = sentence_offsets(sentence)
    chosen = np.unique(sentence[np.asarray(rows, np.int64)])
    return [np.arange(offsets[s], offsets[s + 1]) for s in chosen]


def run_sentences(run, rows: np.ndarray) -> tuple[list[list[str]], list[np.ndarray]]:
    """The whole sentences (words and tag ids) that the word ``rows`` of a token run belong to, in order."""
    spans = sentence_spans(run.column("sentence"), rows)
    words, tags = run.column("text"), run.column("label").astype(np.int64)
    return [list(map(str, words[span])) for span in spans], [tags[span] for span in spans]
