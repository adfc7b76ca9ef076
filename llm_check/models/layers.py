"""Thin Flax NNX building blocks shared by the architectures: weights only, maths elsewhere."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def blocked_dot(x: jax.Array, w: jax.Array, k_block: int | None = None) -> jax.Array:
    """``x [..., K] @ w [K, N]`` -> ``[..., N]`` float32, summing the products ``k_block`` at a time.

    With ``k_block`` (and K > k_block) the contraction is cut into consecutive blocks of ``k_block``
    (the last one may be shorter), each one matmul, and the partial products are added in order.
    XLA:CPU's float32 matmul adds all K products in one running sum; bounding each running sum to
    ``k_block`` terms lowers the rounding error (random 2688 x 576 x 1536, RMS vs float64: 3.86e-7
    unsplit, 2.51e-7 torch, 1.56e-7 with 64). Consecutive matmuls cost about 3.5x one matmul on
    XLA:CPU at 64 (2x at 192); the batched einsum over blocks used before cost 12x. None: one matmul.
    """
    K = x.shape[-1]
    if k_block is None or K <= k_block:
        return jnp.dot(x, w, preferred_element_type=jnp.float32)
    acc = None
    for a in range(0, K, k_block):
        part = jnp.dot(x[..., a:a + k_block], w[a:a + k_block], preferred_element_type=jnp.float32)
        acc = part if acc is None else acc + part
    return acc


class Linear(nnx.Module):
    """``y = x @ kernel + bias``; kernel ``[d_in, d_out]`` (the transpose of torch's layout)."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool, dtype, rngs: nnx.Rngs, std: float = 0.02):
        self.kernel = nnx.Param((jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32) * std).astype(dtype))
        self.bias = nnx.Param(jnp.zeros((d_out,), dtype)) if bias else None

    def __call__(self, x: jax.Array, k_block: int | None = None) -> jax.Array:
        y = blocked_dot(x, self.kernel[...], k_block).astype(x.dtype)
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

    def attend(self, x: jax.Array, k_block: int | None = None) -> jax.Array:
        """Tied output head: ``x @ embedding.T`` -> ``[..., V]`` float32 (see :func:`blocked_dot`)."""
        return blocked_dot(x, self.embedding[...].T, k_block)
