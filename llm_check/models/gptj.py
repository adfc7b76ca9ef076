"""GPT-J decoder (EleutherAI/gpt-j-6b layout): one LayerNorm feeding attention and MLP in
parallel, rotary embedding on the first ``rotary_dim`` dims of each head (interleaved pairs,
base 10000), GELU (tanh) MLP, untied output head with bias.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llm_check.models import attention as att
from llm_check.models.base import CausalLM
from llm_check.models.layers import Embedding, Linear, Norm, blocked_dot

_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class GPTJConfig:
    """Hyper-parameters of a GPT-J model (names follow transformers' GPTJConfig)."""

    vocab_size: int = 50400
    n_positions: int = 2048
    n_embd: int = 4096
    n_layer: int = 28
    n_head: int = 16
    rotary_dim: int | None = 64
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    rope_theta: float = 10000.0
    architecture: str = "gptj"

    def __post_init__(self):
        from llm_check.errors import ConfigError, UnsupportedModelError

        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.activation_function not in _ACTIVATIONS:
            raise UnsupportedModelError(
                f"activation_function={self.activation_function!r}; expected one of {sorted(_ACTIVATIONS)}")
        if self.rotary_dim is not None and (self.rotary_dim % 2 or self.rotary_dim > self.head_dim):
            raise ConfigError(f"rotary_dim={self.rotary_dim}; expected an even number <= head_dim={self.head_dim}")

    # transformers-style aliases so that generic code reads one set of names
    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    num_key_value_heads = property(lambda self: self.n_head)
    max_position_embeddings = property(lambda self: self.n_positions)
    head_dim = property(lambda self: self.n_embd // self.n_head)
    intermediate_size = property(lambda self: self.n_inner or 4 * self.n_embd)
    rot_dim = property(lambda self: self.rotary_dim or self.head_dim)


class GPTJBlock(nnx.Module):
    """One GPT-J layer: ``x + Attn(LN(x)) + MLP(LN(x))``."""

    def __init__(self, cfg: GPTJConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.n_embd
        self.ln_1 = Norm(d, bias=True, dtype=dtype)
        self.q_proj = Linear(d, d, bias=False, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(d, d, bias=False, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(d, d, bias=False, dtype=dtype, rngs=rngs)
        self.out_proj = Linear(d, d, bias=False, dtype=dtype, rngs=rngs)
        self.fc_in = Linear(d, cfg.intermediate_size, bias=True, dtype=dtype, rngs=rngs)
        self.fc_out = Linear(cfg.intermediate_size, d, bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x, cfg: GPTJConfig, cos, sin, key_mask, capture_positions, impl: str = "chunked",
                 k_block: int | None = None):
        """x ``[B, S, D]`` -> (x, pattern ``[B, H, Q, S]``, (q, k, v) pre-rotary per head)."""
        B, S, _ = x.shape
        hd = cfg.head_dim
        h = att.layer_norm(x, self.ln_1.weight[...], self.ln_1.bias[...], cfg.layer_norm_epsilon)
        q = self.q_proj(h, k_block).reshape(B, S, cfg.n_head, hd)
        k = self.k_proj(h, k_block).reshape(B, S, cfg.n_head, hd)
        v = self.v_proj(h, k_block).reshape(B, S, cfg.n_head, hd)
        out, pattern = att.attention(
            att.apply_rope_interleaved(q, cos, sin, cfg.rot_dim),
            att.apply_rope_interleaved(k, cos, sin, cfg.rot_dim), v,
            key_mask, capture_positions, scale=hd ** -0.5, impl=impl)
        attn_out = self.out_proj(out.reshape(B, S, -1), k_block)
        mlp_out = self.fc_out(_ACTIVATIONS[cfg.activation_function](self.fc_in(h, k_block)))
        return x + attn_out + mlp_out, pattern, (q, k, v)


class GPTJModel(CausalLM):
    """GPT-J causal LM: embed -> blocks -> LayerNorm -> head with bias."""

    def __init__(self, cfg: GPTJConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd, dtype=dtype, rngs=rngs)
        self.h = nnx.List([GPTJBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.n_layer)])
        self.ln_f = Norm(cfg.n_embd, bias=True, dtype=dtype)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=True, dtype=dtype, rngs=rngs)

    @property
    def layers(self):
        return self.h

    def embed(self, input_ids):
        return self.wte(input_ids)

    def rotary(self, positions):
        return att.rope_angles(positions, self.config.rot_dim, self.config.rope_theta)

    def final(self, x):
        """Final LayerNorm: ``[B, S, D]`` -> hidden ``[B, S, D]``."""
        return att.layer_norm(x, self.ln_f.weight[...], self.ln_f.bias[...], self.config.layer_norm_epsilon)

    def head(self, h, k_block: int | None = None):
        """Output head: ``[B, Q, D]`` -> logits ``[B, Q, V]`` float32 (``k_block``: see ``blocked_dot``)."""
        logits = blocked_dot(h, self.lm_head.kernel[...], k_block)
        return logits + self.lm_head.bias[...].astype(jnp.float32)
