"""The training path of causal attention (no captured rows: head-major layout, hand-written
backward pass) against a plain autodiff reference: outputs and gradients, with grouped-query heads
and left padding (fully masked query rows)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_check.models import attention as att


def _reference(q, k, v, key_mask, scale):
    S, H, kvh = q.shape[1], q.shape[2], k.shape[2]
    k, v = jnp.repeat(k, H // kvh, axis=2), jnp.repeat(v, H // kvh, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    allowed = jnp.tril(jnp.ones((S, S), bool))[None] & key_mask[:, None, :]
    probs = jax.nn.softmax(jnp.where(allowed[:, None], scores, -1e30), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("B, S, H, kvh, hd", [(3, 7, 4, 4, 8), (2, 9, 6, 2, 4)])
def test_training_attention_matches_autodiff_reference(B, S, H, kvh, hd):
    kq, kk, kv, kw = jax.random.split(jax.random.PRNGKey(S * H + kvh), 4)
    q = jax.random.normal(kq, (B, S, H, hd))
    k = jax.random.normal(kk, (B, S, kvh, hd))
    v = jax.random.normal(kv, (B, S, kvh, hd))
    w = jax.random.normal(kw, (B, S, H, hd))
    key_mask = jnp.ones((B, S), bool).at[0, :3].set(False)      # left padding in the first row

    @jax.jit
    def both(q, k, v):
        return (att.causal_attention(q, k, v, key_mask, None, 0.3),
                att.causal_attention(q, k, v, key_mask, jnp.zeros((B, 1), jnp.int32), 0.3)[0],
                _reference(q, k, v, key_mask, 0.3))

    (out, rows), captured, ref = both(q, k, v)
    assert rows is None and out.shape == q.shape and out.dtype == q.dtype
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=0)
    np.testing.assert_allclose(out, captured, atol=2e-6, rtol=0)

    def grads(fn):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), argnums=(0, 1, 2)))

    got = grads(lambda q, k, v: att.causal_attention(q, k, v, key_mask, None, 0.3)[0])(q, k, v)
    want = grads(lambda q, k, v: _reference(q, k, v, key_mask, 0.3))(q, k, v)
    for name, g, r in zip("qkv", got, want):
        np.testing.assert_allclose(g, r, atol=2e-6, rtol=0, err_msg=f"d{name}")
