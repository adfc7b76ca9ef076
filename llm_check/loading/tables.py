"""Weight-name tables: checkpoint tensor name -> (parameter path in our model, transform).

One table per checkpoint format. Transforms take the checkpoint array as stored (numpy,
torch-style ``[out, in]`` for linear layers) and return our layout.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]
Table = dict[str, tuple[tuple, Transform] | None]  # None: a known name to skip


def as_is(w: np.ndarray) -> np.ndarray:
    return w


def linear(w: np.ndarray) -> np.ndarray:
    """torch ``[out, in]`` -> our kernel ``[in, out]``."""
    return w.T


def gguf_unpermute(n_head: int) -> Transform:
    """Undo llama.cpp's q/k row permutation (pairs interleaved -> rotate-half halves), then transpose.

    llama.cpp's converter reorders the rows inside each head from (half, pair) to (pair, half)
    order so that its interleaved RoPE works; transformers' rotate-half RoPE needs them back.
    """
    def transform(w: np.ndarray) -> np.ndarray:
        hd = w.shape[0] // n_head
        return w.reshape(n_head, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape).T
    return transform


# Buffers some transformers versions saved next to the weights; not parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


def hf_llama(cfg) -> Table:
    """transformers ``LlamaForCausalLM`` state-dict names."""
    table: Table = {
        "model.embed_tokens.weight": (("embed_tokens", "embedding"), as_is),
        "model.norm.weight": (("norm", "weight"), as_is),
    }
    # A tied checkpoint may still carry a copy of the embedding as lm_head.weight: skip it.
    table["lm_head.weight"] = None if cfg.tie_word_embeddings else (("lm_head", "kernel"), linear)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        table[p + "input_layernorm.weight"] = (("layers", i, "input_layernorm", "weight"), as_is)
        table[p + "post_attention_layernorm.weight"] = (("layers", i, "post_attention_layernorm", "weight"), as_is)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            table[p + f"self_attn.{proj}.weight"] = (("layers", i, proj, "kernel"), linear)
            if cfg.attention_bias:
                table[p + f"self_attn.{proj}.bias"] = (("layers", i, proj, "bias"), as_is)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            table[p + f"mlp.{proj}.weight"] = (("layers", i, proj, "kernel"), linear)
            if cfg.mlp_bias:
                table[p + f"mlp.{proj}.bias"] = (("layers", i, proj, "bias"), as_is)
    return table


def hf_gptj(cfg) -> Table:
    """transformers ``GPTJForCausalLM`` state-dict names (EleutherAI/gpt-j-6b layout)."""
    table: Table = {
        "transformer.wte.weight": (("wte", "embedding"), as_is),
        "transformer.ln_f.weight": (("ln_f", "weight"), as_is),
        "transformer.ln_f.bias": (("ln_f", "bias"), as_is),
        "lm_head.weight": (("lm_head", "kernel"), linear),
        "lm_head.bias": (("lm_head", "bias"), as_is),
    }
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        table[p + "ln_1.weight"] = (("h", i, "ln_1", "weight"), as_is)
        table[p + "ln_1.bias"] = (("h", i, "ln_1", "bias"), as_is)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            table[p + f"attn.{proj}.weight"] = (("h", i, proj, "kernel"), linear)
        for proj in ("fc_in", "fc_out"):
            table[p + f"mlp.{proj}.weight"] = (("h", i, proj, "kernel"), linear)
            table[p + f"mlp.{proj}.bias"] = (("h", i, proj, "bias"), as_is)
    return table


def gguf_llama(cfg) -> Table:
    """llama.cpp GGUF tensor names for the ``llama`` architecture (arrays as ``[out, in]``)."""
    table: Table = {
        "token_embd.weight": (("embed_tokens", "embedding"), as_is),
        "output_norm.weight": (("norm", "weight"), as_is),
    }
    if not cfg.tie_word_embeddings:
        table["output.weight"] = (("lm_head", "kernel"), linear)
    for i in range(cfg.num_hidden_layers):
        p = f"blk.{i}."
        table[p + "attn_norm.weight"] = (("layers", i, "input_layernorm", "weight"), as_is)
        table[p + "ffn_norm.weight"] = (("layers", i, "post_attention_layernorm", "weight"), as_is)
        table[p + "attn_q.weight"] = (("layers", i, "q_proj", "kernel"), gguf_unpermute(cfg.num_attention_heads))
        table[p + "attn_k.weight"] = (("layers", i, "k_proj", "kernel"), gguf_unpermute(cfg.num_key_value_heads))
        table[p + "attn_v.weight"] = (("layers", i, "v_proj", "kernel"), linear)
        table[p + "attn_output.weight"] = (("layers", i, "o_proj", "kernel"), linear)
        table[p + "ffn_gate.weight"] = (("layers", i, "gate_proj", "kernel"), linear)
        table[p + "ffn_up.weight"] = (("layers", i, "up_proj", "kernel"), linear)
        table[p + "ffn_down.weight"] = (("layers", i, "down_proj", "kernel"), linear)
    return table
