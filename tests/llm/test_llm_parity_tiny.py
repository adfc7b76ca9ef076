"""Live parity against transformers' eager PyTorch GPT-J and Llama on tiny random configs.

The checkpoint goes through save_pretrained -> our folder loader, so the weight tables are
tested too. Tolerance 1e-4 (float32) on logits, attention probabilities and q/k/v.
"""
from __future__ import annotations

import numpy as np
import pytest

from llm_helpers import hf_run, padded_batch, tiny_hf_model

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
TOL = 1e-4


def _load_ours(model, tmp_path, **save_kw):
    from llm_check.loading import load_model

    model.save_pretrained(tmp_path, **save_kw)
    return load_model(str(tmp_path))


@pytest.mark.parametrize("kind", ["llama", "gptj"])
def test_logits_and_attention_match_transformers(kind, tmp_path):
    from llm_check.models import CaptureConfig, forward

    hf = tiny_hf_model(kind, seed=1)
    ours = _load_ours(hf, tmp_path)
    ids, mask = padded_batch(2, [23, 17, 9], vocab=96)
    ref_logits, ref_att, ref_qkv = hf_run(hf, ids, mask)

    # all positions, default capture (last real token)
    out = forward(ours.model, ids, mask)
    for b, n in enumerate(mask.sum(1)):
        np.testing.assert_allclose(np.asarray(out.logits[b, :n]), ref_logits[b, :n], atol=TOL, rtol=0)
        ref_last = np.stack([a[b, :, n - 1, :] for a in ref_att])       # [L, H, S]
        np.testing.assert_allclose(np.asarray(out.hook_pattern[:, b, :, 0]), ref_last, atol=TOL, rtol=0)
        assert int(out.capture_positions[b, 0]) == n - 1

    # several captured positions per item, with q/k/v
    cap = np.array([[0, 5, 22], [3, 16, 16], [8, 1, 4]], dtype=np.int32)
    out = forward(ours.model, ids, mask, capture_positions=cap,
                  capture=CaptureConfig(hook_q=True, hook_k=True, hook_v=True))
    cfg = ours.config
    H, hd, kvh = cfg.num_attention_heads, cfg.head_dim, cfg.num_key_value_heads
    assert out.hook_pattern.shape == (cfg.num_hidden_layers, 3, H, 3, ids.shape[1])
    assert out.logits.shape == (3, 3, 96)
    for b in range(3):
        np.testing.assert_allclose(np.asarray(out.logits[b]), ref_logits[b, cap[b]], atol=TOL, rtol=0)
        for layer in range(cfg.num_hidden_layers):
            np.testing.assert_allclose(np.asarray(out.hook_pattern[layer, b]), ref_att[layer][b][:, cap[b], :],
                                       atol=TOL, rtol=0)
            q = ref_qkv[(layer, "q_proj")][b].reshape(-1, H, hd)[cap[b]].transpose(1, 0, 2)
            k = ref_qkv[(layer, "k_proj")][b].reshape(-1, kvh, hd)
            v = ref_qkv[(layer, "v_proj")][b].reshape(-1, kvh, hd)
            np.testing.assert_allclose(np.asarray(out.hook_q[layer, b]), q, atol=TOL, rtol=0)
            # pad positions hold unspecified values (their rotary position differs from HF's)
            n = int(mask[b].sum())
            np.testing.assert_allclose(np.asarray(out.hook_k[layer, b, :, :n]), k[:n].transpose(1, 0, 2),
                                       atol=TOL, rtol=0)
            np.testing.assert_allclose(np.asarray(out.hook_v[layer, b, :, :n]), v[:n].transpose(1, 0, 2),
                                       atol=TOL, rtol=0)


def _save_sharded_bin(model, folder, n_shards: int = 3):
    """transformers 5 only writes safetensors; write the classic sharded .bin layout by hand."""
    import json

    import torch

    model.config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = list(state)
    weight_map = {}
    for i in range(n_shards):
        shard = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = names[i::n_shards]
        torch.save({k: state[k] for k in part}, folder / shard)
        weight_map.update({k: shard for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_folders_load_identically(fmt, tmp_path):
    """Sharded safetensors (save_pretrained) and sharded .bin give transformers' logits."""
    from llm_check.models import forward
    from llm_check.loading import load_model

    hf = tiny_hf_model("llama", seed=3, tie_word_embeddings=True)
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path, max_shard_size="40KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("*.safetensors"))) > 2
    else:
        _save_sharded_bin(hf, tmp_path)
    ours = load_model(str(tmp_path))
    assert ours.config.tie_word_embeddings and ours.model.lm_head is None
    ids, mask = padded_batch(4, [12, 7], vocab=96)
    ref_logits, _, _ = hf_run(hf, ids, mask)
    out = forward(ours.model, ids, mask)
    for b, n in enumerate(mask.sum(1)):
        np.testing.assert_allclose(np.asarray(out.logits[b, :n]), ref_logits[b, :n], atol=TOL, rtol=0)


def test_bfloat16_close_to_float32(tmp_path):
    """bf16 weights/activations stay near the float32 reference (loose, bf16 has 8 mantissa bits)."""
    from llm_check.models import forward
    from llm_check.loading import load_model

    hf = tiny_hf_model("gptj", seed=5)
    hf.save_pretrained(tmp_path)
    ours = load_model(str(tmp_path), dtype="bfloat16")
    assert str(ours.model.h[0].q_proj.kernel[...].dtype) == "bfloat16"
    ids, mask = padded_batch(6, [20], vocab=96)
    ref_logits, ref_att, _ = hf_run(hf, ids, mask)
    out = forward(ours.model, ids, mask)
    scale = np.abs(ref_logits).max()
    assert np.abs(np.asarray(out.logits[0]) - ref_logits[0]).max() < 0.05 * scale
    assert np.abs(np.asarray(out.hook_pattern[:, 0, :, 0]) - np.stack([a[0, :, -1] for a in ref_att])).max() < 0.05


def test_llama3_rope_frequencies_match_transformers():
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llm_check.loading.hf_folder import config_from_hf

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    hf_cfg = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_parameters=scaling)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    ours = config_from_hf(hf_cfg.to_dict(), "test").inv_freq()
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bfloat16_checkpoints_read_exactly(fmt, tmp_path):
    """BF16 tensors (safetensors via ml_dtypes, .bin via torch) load bit-exactly: loaded as
    float32 they reproduce transformers run on the same bf16-rounded weights in float32."""
    import torch

    from llm_check.models import forward

    from llm_check.loading import load_model

    ref = tiny_hf_model("gptj", seed=7)
    hf = tiny_hf_model("gptj", seed=7).to(torch.bfloat16)
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
    else:
        _save_sharded_bin(hf, tmp_path, n_shards=2)
    # float32 reference with the bf16-rounded parameters (its sin/cos table stays float32)
    with torch.no_grad():
        for (name, p), (_, q) in zip(ref.named_parameters(), hf.named_parameters()):
            p.copy_(q.to(torch.float32))
    ours = load_model(str(tmp_path), dtype="float32")
    ids, mask = padded_batch(8, [15, 11], vocab=96)
    ref_logits, ref_att, _ = hf_run(ref, ids, mask)
    out = forward(ours.model, ids, mask)
    for b, n in enumerate(mask.sum(1)):
        np.testing.assert_allclose(np.asarray(out.logits[b, :n]), ref_logits[b, :n], atol=TOL, rtol=0)
        np.testing.assert_allclose(np.asarray(out.hook_pattern[:, b, :, 0, :n]),
                                   np.stack([a[b, :, n - 1, :n] for a in ref_att]), atol=TOL, rtol=0)
