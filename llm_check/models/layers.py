"""Thin Flax NNX building blocks shared by the architectures: weights only, maths elsewhere."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Linear(nnx.Module):
    """``y = x @ kernel + bias``; kernel ``[d_in, d_out]`` (the transpose of torch's layout)."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool, dtype, rngs: nnx.Rngs, std: float = 0.02):
        self.kernel = nnx.Param((jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32) * std).astype(dtype))
        self.bias = nnx.Param(jnp.zeros((d_out,), dtype)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x, self.kernel[...], preferred_element_type=jnp.float32).astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


class Norm(nnx.Module):
    """Scale (and optional shift) of a LayerNorm / RMSNorm; the normalisation is in attention.py."""

    def __init__(self, dim: int, *, bias: bool, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype)) if bias else None


class Embedding(nnx.Module):
    """Token embedding table ``[V, D]``."""

    def __init__(self, vocab: int, dim: int, *, dtype, rngs: nnx.Rngs, std: float = 0.02):
        self.embedding = nnx.Param((jax.random.normal(rngs.params(), (vocab, dim), jnp.float32) * std).astype(dtype))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output head: ``x @ embedding.T`` -> ``[..., V]``."""
        return jnp.dot(x, self.embedding[...].T, preferred_element_type=jnp.float32)
