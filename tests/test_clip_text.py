"""Bounded cost per example: texts are cut to what ``max_length`` tokens can reach before they are tokenised,
without changing a single token id of real text (BBC News through the bundled MiniLM tokenizer)."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from t3vis.data import load_bbc_news
from t3vis.models import default_model_path
from t3vis.models.inference import CHARS_PER_TOKEN, clip_text, tokenize
from t3vis.training import recorder


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def articles():
    return load_bbc_news().frame["text"].tolist()


def uncapped(tokenizer, texts, max_length):
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


@pytest.mark.parametrize("max_length", [8, 32, 96, 512])
def test_real_texts_keep_every_token_id(tokenizer, articles, max_length):
    expected = uncapped(tokenizer, articles, max_length)
    reached = np.array([len(ids) == max_length for ids in expected])
    cut = np.array([len(text) > max_length * CHARS_PER_TOKEN for text in articles])
    assert reached.sum() > 100  # the comparison covers texts that hit the limit ...
    if max_length <= 32:
        assert (cut & reached).sum() > 1000  # ... and texts the cap actually shortens
    assert tokenize(tokenizer, articles, max_length) == expected  # extraction, importance, serving batches
    assert recorder.tokenize(tokenizer, articles, max_length) == expected  # training and recorded dynamics


def test_a_huge_text_costs_what_its_start_costs(tokenizer, articles):
    huge = " ".join(articles) * 3  # ~15 MB of real prose in one example
    assert len(huge) > 10_000_000
    assert len(clip_text(huge, 32)) == 32 * CHARS_PER_TOKEN
    assert clip_text(articles[0], 512) is articles[0]  # short texts pass untouched
    ids = tokenize(tokenizer, [huge, articles[1]], 32)
    assert ids == uncapped(tokenizer, [huge[:100_000], articles[1]], 32)
    assert recorder.tokenize(tokenizer, [huge], 32) == ids[:1]
