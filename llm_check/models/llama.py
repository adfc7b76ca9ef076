"""Llama-family decoder (Llama 2/3, SmolLM2): RMSNorm, SwiGLU MLP, rotary attention with
configurable theta (rotate-half convention, as in transformers), grouped-query attention, tied
or untied output head. Weights hold the Hugging Face q/k row order; the GGUF loader undoes
llama.cpp's permutation.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm_check.models import attention as att
from llm_check.models.base import CausalLM
from llm_check.models.layers import Embedding, Linear, Norm, blocked_dot


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama-family model (names follow transformers' LlamaConfig)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    # ("llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
    rope_scaling: tuple | None = None
    architecture: str = "llama"

    def __post_init__(self):
        from llm_check.errors import ConfigError

        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}; expected grouped heads")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim}; expected an even head dimension for RoPE")

    def inv_freq(self) -> np.ndarray:
        """Rotary inverse frequencies ``[head_dim // 2]`` float32 (Llama-3 scaling applied)."""
        dim = self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        if self.rope_scaling is None:
            return inv.astype(np.float32)
        _, factor, low, high, old_len = self.rope_scaling
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)


class LlamaBlock(nnx.Module):
    """One decoder layer: x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, cfg: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        d, hd = cfg.hidden_size, cfg.head_dim
        self.input_layernorm = Norm(d, bias=False, dtype=dtype)
        self.q_proj = Linear(d, cfg.num_attention_heads * hd, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(d, cfg.num_key_value_heads * hd, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(d, cfg.num_key_value_heads * hd, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Linear(cfg.num_attention_heads * hd, d, bias=cfg.attention_bias, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = Norm(d, bias=False, dtype=dtype)
        self.gate_proj = Linear(d, cfg.intermediate_size, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.up_proj = Linear(d, cfg.intermediate_size, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(cfg.intermediate_size, d, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, cfg: LlamaConfig, cos, sin, key_mask, capture_positions, impl: str = "chunked",
                 k_block: int | None = None):
        """x ``[B, S, D]`` -> (x, pattern ``[B, H, Q, S]``, (q, k, v) pre-rotary per head)."""
        B, S, _ = x.shape
        hd = cfg.head_dim
        h = att.rms_norm(x, self.input_layernorm.weight[...], cfg.rms_norm_eps)
        q = self.q_proj(h, k_block).reshape(B, S, cfg.num_attention_heads, hd)
        k = self.k_proj(h, k_block).reshape(B, S, cfg.num_key_value_heads, hd)
        v = self.v_proj(h, k_block).reshape(B, S, cfg.num_key_value_heads, hd)
        out, pattern = att.attention(
            att.apply_rope_half(q, cos, sin), att.apply_rope_half(k, cos, sin), v,
            key_mask, capture_positions, scale=hd ** -0.5, impl=impl)
        x = x + self.o_proj(out.reshape(B, S, -1), k_block)
        h = att.rms_norm(x, self.post_attention_layernorm.weight[...], cfg.rms_norm_eps)
        x = x + self.down_proj(jax.nn.silu(self.gate_proj(h, k_block)) * self.up_proj(h, k_block))
        return x, pattern, (q, k, v)


class LlamaModel(CausalLM):
    """Llama causal LM: embed -> blocks -> RMSNorm -> head (tied to the embedding or not)."""

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([LlamaBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.norm = Norm(cfg.hidden_size, bias=False, dtype=dtype)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype, rngs=rngs)

    def embed(self, input_ids):
        return self.embed_tokens(input_ids)

    def rotary(self, positions):
        return att.rope_angles(positions, self.config.head_dim, self.config.rope_theta,
                               inv_freq=jnp.asarray(self.config.inv_freq()))

    def final(self, x):
        """Final RMSNorm: ``[B, S, D]`` -> hidden ``[B, S, D]``."""
        return att.rms_norm(x, self.norm.weight[...], self.config.rms_norm_eps)

    def head(self, h, k_block: int | None = None):
        """Output head: ``[B, Q, D]`` -> logits ``[B, Q, V]`` float32 (``k_block``: see ``blocked_dot``)."""
        if self.lm_head is None:
            return self.embed_tokens.attend(h, k_block).astype(jnp.float32)
        return blocked_dot(h, self.lm_head.kernel[...], k_block)
