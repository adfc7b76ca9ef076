"""Forward-pass properties that need no reference implementation: padding invariance, capture
consistency, RoPE conventions, checkpoint round trips (no torch)."""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from llm_check.loading.export import llama_cpp_permute, save_gguf, save_hf_folder
from llm_check.loading.tables import gguf_unpermute
from llm_check.models import CaptureConfig, as_transformerlens_cache, forward, pad_batch
from llm_check.loading import load_model
from llm_check.models import attention as att
from llm_check.models.gptj import GPTJConfig, GPTJModel
from llm_check.models.llama import LlamaConfig, LlamaModel

LLAMA = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    max_position_embeddings=32, rope_theta=1e4, rms_norm_eps=1e-5)
GPTJ = GPTJConfig(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)
TOL = 1e-5


@pytest.fixture(scope="module", params=["llama", "gptj"])
def model(request):
    if request.param == "llama":
        return LlamaModel(LLAMA, rngs=nnx.Rngs(0))
    return GPTJModel(GPTJ, rngs=nnx.Rngs(0))


def test_padding_and_batchmates_do_not_change_an_item(model):
    """Right padding, left padding and other batch items leave an item's outputs unchanged."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 40, 11), rng.integers(0, 40, 6)
    alone = forward(model, a[None])
    ids, mask, last = pad_batch([a, b], pad_id=3, multiple=16)
    assert ids.shape == (2, 16) and last.tolist() == [[10], [5]]
    right = forward(model, ids, mask)
    np.testing.assert_allclose(np.asarray(right.logits[0, :11]), np.asarray(alone.logits[0]), atol=TOL)
    np.testing.assert_allclose(np.asarray(right.hook_pattern[:, 0, :, 0, :11]), np.asarray(alone.hook_pattern[:, 0, :, 0]),
                               atol=TOL)
    assert np.asarray(right.hook_pattern[:, 0, :, 0, 11:]).max() == 0
    left_ids = np.concatenate([np.full(5, 7), a])[None]
    left_mask = np.arange(16)[None] >= 5
    left = forward(model, left_ids, left_mask)
    np.testing.assert_allclose(np.asarray(left.logits[0, 5:]), np.asarray(alone.logits[0]), atol=1e-4)


def test_capture_positions_agree_with_full_logits(model):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 40, (2, 12))
    full = forward(model, ids, capture=CaptureConfig(hook_normalized=True))
    cap = np.array([[11, 0, 4], [2, 2, 7]])
    part = forward(model, ids, capture_positions=cap,
                   capture=CaptureConfig(hook_q=True, hook_k=True, hook_v=True, hook_resid_post=True))
    np.testing.assert_allclose(np.asarray(part.logits), np.asarray(full.logits)[np.arange(2)[:, None], cap], atol=TOL)
    rows = np.asarray(part.hook_pattern)
    cfg = model.config
    assert rows.shape == (cfg.num_hidden_layers, 2, cfg.num_attention_heads, 3, 12)
    np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-5)
    for b in range(2):      # causal: nothing after the query position
        for q in range(3):
            assert rows[:, b, :, q, cap[b, q] + 1:].max(initial=0.0) == 0.0
    # the default capture (last token, 11) of item 0 equals its explicit capture at 11
    np.testing.assert_allclose(rows[:, 0, :, 0], np.asarray(full.hook_pattern[:, 0, :, 0]), atol=TOL)
    assert full.hook_normalized.shape == (2, 12, cfg.hidden_size)
    kvh, H = cfg.num_key_value_heads, cfg.num_attention_heads
    assert part.hook_k.shape == part.hook_v.shape == (cfg.num_hidden_layers, 2, kvh, 12, cfg.head_dim)
    assert part.hook_q.shape == (cfg.num_hidden_layers, 2, H, 3, cfg.head_dim)
    assert part.hook_normalized is None and full.hook_q is None
    # the last layer's residual stream, normalised, is what the head reads
    np.testing.assert_allclose(np.asarray(model.final(part.hook_resid_post[-1])), np.asarray(full.hook_normalized),
                               atol=TOL)
    cache = as_transformerlens_cache(part)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, H, 3, 12)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 3, H, cfg.head_dim)
    assert cache["blocks.0.attn.hook_k"].shape == (2, 12, kvh, cfg.head_dim)
    assert cache["blocks.1.hook_resid_post"].shape == (2, 12, cfg.hidden_size)


def test_capture_selection_is_one_frozen_value(model):
    """The selection is hashable (a static jit argument) and cannot be changed after creation."""
    import dataclasses

    c = CaptureConfig(hook_k=True)
    assert hash(c) == hash(CaptureConfig(hook_k=True)) and c != CaptureConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hook_k = False  # type: ignore[misc]
    out = forward(model, np.arange(5)[None] % 40, capture=CaptureConfig(hook_pattern=False))
    assert out.hook_pattern is None and out.logits.shape == (1, 5, 40)
    with pytest.raises(ValueError, match="CaptureConfig"):
        forward(model, np.arange(5)[None] % 40, capture=True)


def test_jit_forward_in_bfloat16(model):
    import jax.numpy as jnp

    bf = type(model)(model.config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = forward(bf, np.arange(10)[None] % 40)
    ref = forward(model, np.arange(10)[None] % 40)
    assert out.logits.dtype == jnp.float32 and np.isfinite(np.asarray(out.logits)).all()
    assert np.abs(np.asarray(out.logits) - np.asarray(ref.logits)).max() < 0.05 * np.abs(np.asarray(ref.logits)).max() + 0.02


def test_llama_cpp_permutation_turns_rotate_half_into_interleaved_rope():
    """GGUF q/k rows with interleaved RoPE == HF rows with rotate-half RoPE, up to the row
    permutation; gguf_unpermute inverts llama.cpp's permute."""
    rng = np.random.default_rng(2)
    n_head, hd, d, S = 3, 8, 12, 5
    w = rng.normal(size=(n_head * hd, d)).astype(np.float32)           # torch layout [out, in]
    w_gguf = llama_cpp_permute(w, n_head)
    np.testing.assert_array_equal(gguf_unpermute(n_head)(w_gguf), w.T)
    x = rng.normal(size=(1, S, d)).astype(np.float32)
    cos, sin = att.rope_angles(np.arange(S)[None], hd, 1e4)
    hf = np.asarray(att.apply_rope_half((x @ w.T).reshape(1, S, n_head, hd), cos, sin))
    gg = np.asarray(att.apply_rope_interleaved((x @ w_gguf.T).reshape(1, S, n_head, hd), cos, sin, hd))
    perm = llama_cpp_permute(np.arange(n_head * hd)[:, None], n_head)[:, 0].reshape(n_head, hd)
    np.testing.assert_allclose(gg, hf[..., perm[0] % hd], atol=1e-5)


def test_gguf_and_sharded_folder_round_trips(tmp_path):
    m = LlamaModel(LLAMA, rngs=nnx.Rngs(5))
    ids = np.arange(20)[None] % 40
    ref = np.asarray(forward(m, ids).logits)
    gg = load_model(str(save_gguf(m, tmp_path / "m.gguf")))
    assert gg.tokenizer is None and gg.config.num_key_value_heads == 2
    np.testing.assert_allclose(np.asarray(forward(gg.model, ids).logits), ref, atol=1e-5)
    hf = load_model(str(save_hf_folder(m, tmp_path / "hf", n_shards=4)), dtype="float32")
    assert hf.config == LLAMA
    np.testing.assert_array_equal(np.asarray(forward(hf.model, ids).logits), ref)


def test_gptj_folder_ignores_causal_mask_buffers(tmp_path):
    """EleutherAI/gpt-j-6b's .bin carries attn.bias / attn.masked_bias buffers: not weights."""
    from safetensors.numpy import load_file, save_file

    m = GPTJModel(GPTJ, rngs=nnx.Rngs(6))
    folder = save_hf_folder(m, tmp_path / "gptj")
    state = load_file(str(folder / "model.safetensors"))
    state["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.uint8))
    state["transformer.h.0.attn.masked_bias"] = np.array(-1e9, np.float32)
    save_file(state, str(folder / "model.safetensors"))
    loaded = load_model(str(folder))
    ids = np.arange(9)[None]
    np.testing.assert_array_equal(np.asarray(forward(loaded.model, ids).logits), np.asarray(forward(m, ids).logits))


def test_llama3_rope_scaling_matches_transformers_formula():
    """inv_freq with llama3 scaling: long wavelengths divided by factor, short ones kept."""
    cfg = LlamaConfig(**{**LLAMA.__dict__, "head_dim": 64, "hidden_size": 256,
                         "rope_scaling": ("llama3", 8.0, 1.0, 4.0, 16.0)})
    plain = LlamaConfig(**{**cfg.__dict__, "rope_scaling": None}).inv_freq()
    scaled = cfg.inv_freq()
    wavelen = 2 * np.pi / plain
    np.testing.assert_allclose(scaled[wavelen < 16 / 4], plain[wavelen < 16 / 4])
    np.testing.assert_allclose(scaled[wavelen > 16 / 1], plain[wavelen > 16 / 1] / 8.0)
    mid = (wavelen >= 4) & (wavelen <= 16)
    assert mid.any() and np.all((scaled[mid] <= plain[mid]) & (scaled[mid] >= plain[mid] / 8))


def test_attention_impls_agree(model):
    """attention_impl="xla" (jax.nn.dot_product_attention) and "chunked" (the default), both
    with recomputed captured rows, give the einsum path's logits and attention rows (which are
    read straight off its S x S softmax), with left and right padding."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 40, (2, 14))
    mask = np.ones((2, 14), bool)
    mask[0, 10:] = False     # right padding
    mask[1, :3] = False      # left padding
    cap = np.array([[9, 0, 4], [13, 3, 8]])
    a = forward(model, ids, mask, capture_positions=cap, attention_impl="einsum")
    for impl in ("xla", "chunked"):
        b = forward(model, ids, mask, capture_positions=cap, attention_impl=impl)
        np.testing.assert_allclose(np.asarray(b.logits), np.asarray(a.logits), atol=1e-5)
        np.testing.assert_allclose(np.asarray(b.hook_pattern), np.asarray(a.hook_pattern), atol=1e-6)


@pytest.mark.parametrize("S,block", [(13, 4), (12, 4), (5, 8)])
def test_chunked_attention_matches_full_attention(S, block):
    """Query blocks (ragged last block, exact multiple, one short block) give the full result."""
    rng = np.random.default_rng(S)
    B, H, kvh, hd = 2, 4, 2, 8
    q = rng.normal(size=(B, S, H, hd)).astype(np.float32)
    k = rng.normal(size=(B, S, kvh, hd)).astype(np.float32)
    v = rng.normal(size=(B, S, kvh, hd)).astype(np.float32)
    mask = np.ones((B, S), bool)
    mask[1, S - 3:] = False
    mask[0, :2] = False
    full, _ = att.causal_attention(q, k, v, mask, None, 0.3)
    chunked = att.chunked_attention(q, k, v, mask, 0.3, block=block)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(full), atol=1e-6)


def test_bad_attention_impl_and_cudnn_needs_right_padding(model):
    from llm_check import errors

    with pytest.raises(errors.InputError, match="'flash'"):
        forward(model, np.zeros((1, 4), np.int32), attention_impl="flash")
    with pytest.raises(errors.InputError, match="right padding"):
        forward(model, np.zeros((1, 4), np.int32), np.array([[0, 1, 1, 1]], bool), attention_impl="cudnn")


def test_folder_with_one_gguf_loads_that_file(tmp_path):
    from llm_check import errors

    m = LlamaModel(LLAMA, rngs=nnx.Rngs(8))
    save_gguf(m, tmp_path / "only.gguf")
    loaded = load_model(str(tmp_path))
    ids = np.arange(6)[None]
    np.testing.assert_allclose(np.asarray(forward(loaded.model, ids).logits), np.asarray(forward(m, ids).logits),
                               atol=1e-5)
    save_gguf(m, tmp_path / "second.gguf")
    with pytest.raises(errors.ModelLoadError, match="2 .gguf files"):
        load_model(str(tmp_path))


def test_model_call_is_the_forward_of_training_and_capture(model):
    """``forward`` and ``train.all_logits`` both run the model's own ``__call__``: the scanned
    and the unrolled layer loop give the same logits and captures."""
    import jax.numpy as jnp

    from llm_check.synthetic.train import all_logits

    rng = np.random.default_rng(3)
    ids, mask, last = pad_batch([rng.integers(0, 40, 13), rng.integers(0, 40, 7)], multiple=16)
    full = CaptureConfig(hook_q=True, hook_k=True, hook_v=True, hook_resid_post=True, hook_normalized=True)
    via_forward = forward(model, ids, mask, capture_positions=last, capture=full)
    ids, mask, last = jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(last)
    for scan in (True, False):
        out = model(ids, mask, capture_positions=last, capture=full, scan=scan)
        for name, want in via_forward._asdict().items():
            np.testing.assert_allclose(np.asarray(getattr(out, name)), np.asarray(want), atol=TOL, rtol=0,
                                       err_msg=f"{name} scan={scan}")
    plain = model(ids[:1, :13], capture=None)
    assert plain.capture_positions is None and plain.hook_pattern is None and plain.logits.shape == (1, 13, 40)
    np.testing.assert_allclose(np.asarray(all_logits(model, ids[:1, :13])), np.asarray(plain.logits), atol=TOL)
    np.testing.assert_allclose(np.asarray(plain.logits[0]), np.asarray(forward(model, np.asarray(ids[:1, :13])).logits[0]),
                               atol=TOL)
    with pytest.raises(ValueError, match="all_logits=False"):
        model(ids, mask, capture=None, all_logits=False)
