"""The ICL pass's length buckets: every prompt once, padding under PAD_MULTIPLE tokens per prompt,
no all-padding rows, and the captured attention rows and label logits equal to running each prompt
alone (no padding at all) up to float32 rounding, on a tiny random Llama."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx

from icl_kernel.runfolder import RunFolder
from llm_check.models import forward
from llm_check.models.llama import LlamaConfig, LlamaModel
from llm_check.realdata import icl
from llm_check.realdata import prompts as P


def test_plan_covers_once_pads_little_probe_first():
    rng = np.random.default_rng(0)
    lengths = rng.integers(89, 280, size=300)
    plan = icl.plan_batches(lengths, 16, first=[7, 3, 250])
    flat = np.concatenate(plan.batches)
    assert sorted(flat.tolist()) == list(range(300))
    k = next(j for j, b in enumerate(plan.batches) if not set(b.tolist()) <= {3, 7, 250})
    assert sorted(np.concatenate(plan.batches[:k]).tolist()) == [3, 7, 250]  # probe items lead, alone
    for b, s in zip(plan.batches, plan.padded_lengths):
        assert 1 <= len(b) <= 16 and s % icl.PAD_MULTIPLE == 0
        assert np.all(s - lengths[b] >= 0) and np.all(s - lengths[b] < icl.PAD_MULTIPLE)
    padded = sum(len(b) * s for b, s in zip(plan.batches, plan.padded_lengths))
    assert plan.padded_tokens == padded and plan.real_tokens == lengths.sum()
    assert plan.padding_fraction == pytest.approx(1 - lengths.sum() / padded)
    assert plan.padding_fraction < 0.03  # < 8 tokens on prompts of 89..279
    # the old batching (length-sorted batches of 16, padded to 32, dummy rows) padded far more
    old = sum(16 * (-(-lengths[b].max() // 32) * 32) for b in icl.make_batches(lengths, 16))
    assert 1 - lengths.sum() / old > 3 * plan.padding_fraction


def test_probe_items_lead():
    lengths = np.array([50, 10, 30, 20, 40, 60, 5])
    plan = icl.plan_batches(lengths, 3, first=[5, 1], multiple=8)
    leading = np.concatenate(plan.batches[:2]).tolist()
    assert sorted(leading) == [1, 5] and len(plan.batches[0]) == 1  # 10 and 60 pad to 16 and 64
    rest = np.concatenate(plan.batches[2:])
    assert np.all(np.diff(lengths[rest]) >= 0)


CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rope_theta=1e4)


def _prompt(ids):
    z = np.zeros((0, 2), np.int64)
    return P.Prompt("", np.asarray(ids, np.int32), z, z, z, np.array([0, 1]), len(ids) - 1, np.zeros(0, np.int64),
                    np.zeros(0, np.int64), z, z, np.zeros(2, np.int64), 0)


def test_bucketed_pass_equals_one_prompt_at_a_time(tmp_path):
    model = LlamaModel(CFG, rngs=nnx.Rngs(0))
    lm = SimpleNamespace(model=model, config=CFG)
    rng = np.random.default_rng(1)
    lengths = [9, 14, 21, 16, 9, 24, 14, 21]  # buckets of 16 {9, 9, 14 | 14, 16} and 24 {21, 21, 24}
    prompts = [_prompt(rng.integers(0, CFG.vocab_size, size=n)) for n in lengths]
    label_ids = [3, 17, 42]
    cfg = SimpleNamespace(batch_size=3, task="tiny")
    with RunFolder.create(tmp_path / "run", command="llm-check", config={"test": 1}) as rf:
        _, timings, plan = icl.icl_pass(lm, prompts, label_ids, cfg, rf, quiet=True)
        rows, logits, top = icl.load_chunks(rf, len(prompts))
    assert sum(n for n, _ in timings) == len(prompts)
    assert any(len(b) > 1 for b in plan.batches)  # some prompts really share a padded batch
    assert any(np.any(plan.padded_lengths[k] > np.asarray(lengths)[b]) for k, b in enumerate(plan.batches))
    for i, p in enumerate(prompts):
        last = np.array([[len(p.ids) - 1]], np.int32)  # alone: no padding at all
        out = forward(model, p.ids[None, :], None, last, capture=icl.CAPTURE_ICL)
        alone_rows = np.asarray(out.hook_pattern[:, 0, :, 0, :])  # [L, H, S]
        alone_logits = np.asarray(out.logits[0, 0, :])
        assert rows[i].shape == alone_rows.shape
        np.testing.assert_allclose(rows[i], alone_rows, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logits[i], alone_logits[label_ids], rtol=1e-5, atol=1e-5)
        assert top[i] == np.argmax(alone_logits)
