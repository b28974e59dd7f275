"""align_words with the bundled MiniLM's real (fast, WordPiece) tokenizer: every word reads back from its
sub-tokens, labels sit on first sub-tokens only, truncation drops whole words."""

import numpy as np
import pytest
from transformers import AutoTokenizer, BertTokenizerLegacy

from t3vis.data import align_words, load_twitter_ner
from t3vis.data.subwords import IGNORE_INDEX
from t3vis.errors import DatasetError, ModelError
from t3vis.models import default_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)


@pytest.fixture(scope="module")
def corpus():
    ds = load_twitter_ner()
    return [list(t) for t in ds.frame["tokens"]], [list(t) for t in ds.frame["tags"]]


def word_pieces(tokenizer, alignment, i: int, w: int) -> list[str]:
    """The sub-tokens of word ``w`` of sentence ``i``, by the alignment's word ids."""
    positions = [p for p, word in enumerate(alignment.word_ids[i]) if word == w]
    assert positions == list(range(positions[0], positions[0] + len(positions)))  # contiguous
    assert positions[0] == alignment.first_token[i][w]
    return tokenizer.convert_ids_to_tokens([alignment.input_ids[i][p] for p in positions])


def test_every_word_reads_back_from_its_sub_tokens(tokenizer, corpus):
    sentences, tags = corpus
    alignment = align_words(tokenizer, sentences, tags, max_length=256)
    unknown = 0
    for i, words in enumerate(sentences):
        assert alignment.word_ids[i][0] == alignment.word_ids[i][-1] == -1  # [CLS] ... [SEP]
        assert alignment.input_ids[i][0] == tokenizer.cls_token_id and alignment.input_ids[i][-1] == \
            tokenizer.sep_token_id
        assert (alignment.first_token[i] >= 0).all()  # nothing truncated at 256
        for w, word in enumerate(words):
            pieces = word_pieces(tokenizer, alignment, i, w)
            if tokenizer.unk_token in pieces:
                unknown += 1
            else:
                assert "".join(p.removeprefix("##") for p in pieces) == word.lower()
    assert unknown < 0.01 * sum(map(len, sentences))  # emoji and the like only


def test_labels_sit_on_first_sub_tokens_only(tokenizer, corpus):
    sentences, tags = corpus
    alignment = align_words(tokenizer, sentences, tags, max_length=256)
    for i, (row, first) in enumerate(zip(alignment.labels, alignment.first_token)):
        labels = np.asarray(row)
        assert len(labels) == len(alignment.input_ids[i])
        assert labels[first].tolist() == tags[i]
        rest = np.ones(len(labels), bool)
        rest[first] = False
        assert (labels[rest] == IGNORE_INDEX).all()
    assert align_words(tokenizer, sentences[:3], None, 64).labels is None


def test_truncation_drops_whole_words_and_keeps_every_label(tokenizer, corpus):
    sentences, tags = corpus
    full = align_words(tokenizer, sentences, tags, max_length=256)
    cut = align_words(tokenizer, sentences, tags, max_length=16)
    n_cut = 0
    for i, words in enumerate(sentences):
        assert len(cut.input_ids[i]) <= 16
        kept = cut.first_token[i] >= 0
        k = int(kept.sum())
        assert kept[:k].all() and not kept[k:].any()  # a prefix of the words
        sizes = np.bincount([w for w in full.word_ids[i] if w >= 0], minlength=len(words))
        assert [w for w in cut.word_ids[i] if w >= 0] == np.repeat(np.arange(k), sizes[:k]).tolist()  # all pieces
        if k < len(words):
            n_cut += 1
            assert sizes[: k + 1].sum() + 2 > 16  # the next word would not fit whole
        assert cut.input_ids[i][1:-1] == full.input_ids[i][1:1 + sizes[:k].sum()]
        labels = np.asarray(cut.labels[i])
        assert labels[cut.first_token[i][kept]].tolist() == tags[i][:k]
        assert (labels != IGNORE_INDEX).sum() == k  # no label on a part of a word
    assert n_cut > 1000


def test_a_word_cut_in_the_middle_is_dropped_and_words_without_pieces_are_marked(tokenizer):
    words = ["t3vis", "unbelievably", "\u200b", "ok"]
    whole = align_words(tokenizer, [words], [[1, 0, 0, 0]], max_length=64)
    assert whole.first_token[0][2] == -1 and (whole.first_token[0][[0, 1, 3]] >= 0).all()  # no piece for U+200B
    sizes = np.bincount([w for w in whole.word_ids[0] if w >= 0])
    assert sizes[0] >= 2 and sizes[1] >= 2
    limit = 2 + sizes[0] + 1  # room for the first word and one piece of the second
    part = align_words(tokenizer, [words], [[1, 0, 0, 0]], max_length=limit)
    assert part.first_token[0].tolist() == [1, -1, -1, -1]
    assert part.labels[0] == [IGNORE_INDEX, 1] + [IGNORE_INDEX] * (sizes[0] - 1) + [IGNORE_INDEX]
    first_too_long = align_words(tokenizer, [words], None, max_length=2 + sizes[0] - 1)
    assert first_too_long.input_ids[0] == [tokenizer.cls_token_id, tokenizer.sep_token_id]
    emoji = align_words(tokenizer, [["so", "\U0001F600"]], None, 16)
    assert word_pieces(tokenizer, emoji, 0, 1) == [tokenizer.unk_token]  # a word the vocabulary lacks


def test_clear_errors(tokenizer):
    slow = BertTokenizerLegacy.from_pretrained(default_model_path(), local_files_only=True)
    with pytest.raises(ModelError, match="slow .* expected a fast tokenizer"):
        align_words(slow, [["a"]], None, 16)
    with pytest.raises(DatasetError, match="sentence 1 has 2 words but 1 tags"):
        align_words(tokenizer, [["a"], ["b", "c"]], [[0], [0]], 16)
    with pytest.raises(DatasetError, match="max_length=2: expected more than the 2 special tokens"):
        align_words(tokenizer, [["a"]], None, 2)
    empty = align_words(tokenizer, [], [], 16)
    assert empty.input_ids == [] and empty.labels == []
