"""Attention maths as plain ``jnp`` functions; the Flax modules only hold weights and call these.

Shapes: B batch, S sequence, H query heads, KVH key/value heads (grouped-query attention when
KVH < H; query head h reads key/value head ``h // (H // KVH)``), hd head dim, Q captured
query positions.

Softmax is always taken in float32; matmuls run in the activations' dtype (float32 or
bfloat16) with float32 accumulation.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

# A finite "minus infinity": a fully masked row (a left-pad query) then gives a uniform row
# rather than NaN.
_MASK_VALUE = -1e30


def rope_angles(positions: jax.Array, rotary_dim: int, theta: float,
                inv_freq: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """cos, sin of the rotary angles, each ``[B, S, rotary_dim // 2]`` float32.

    ``angle[b, s, i] = positions[b, s] * theta ** (-2 i / rotary_dim)`` unless ``inv_freq``
    (``[rotary_dim // 2]``, e.g. Llama-3 scaled frequencies) is given.
    """
    if inv_freq is None:
        inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope_half(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Llama / Hugging Face "rotate-half" RoPE on the whole head: pairs (i, i + hd/2).

    x: ``[B, S, H, hd]``; cos, sin: ``[B, S, hd/2]``. Computed in x's dtype like transformers.
    """
    cos = jnp.concatenate([cos, cos], axis=-1)[:, :, None, :].astype(x.dtype)
    sin = jnp.concatenate([sin, sin], axis=-1)[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def apply_rope_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array, rotary_dim: int) -> jax.Array:
    """GPT-J RoPE: pairs (2i, 2i+1) of the first ``rotary_dim`` dims; the rest pass through.

    x: ``[B, S, H, hd]``; cos, sin: ``[B, S, rotary_dim/2]``. With llama.cpp's permuted q/k
    weights this is also the right rotation for raw GGUF Llama weights.
    """
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    cos = jnp.repeat(cos, 2, axis=-1)[:, :, None, :].astype(x.dtype)
    sin = jnp.repeat(sin, 2, axis=-1)[:, :, None, :].astype(x.dtype)
    pairs = rot.reshape(*rot.shape[:-1], rotary_dim // 2, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(rot.shape)
    return jnp.concatenate([rot * cos + rotated * sin, rest], axis=-1)


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """``x[b, positions[b, q], ...]``: ``[B, S, ...]`` and ``[B, Q]`` -> ``[B, Q, ...]``."""
    idx = positions.reshape(positions.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                     capture_positions: jax.Array | None, scale: float
                     ) -> tuple[jax.Array, jax.Array | None]:
    r"""Causal softmax attention with padding mask and grouped-query heads.

    q: ``[B, S, H, hd]``; k, v: ``[B, S, KVH, hd]``; key_mask: ``[B, S]`` bool (False = pad key);
    capture_positions: ``[B, Q]`` int or None.

    .. math:: A_{h,i,j} = \mathrm{softmax}_j\big(\mathrm{scale}\; q_{h,i}\cdot k_{g(h),j}
              + m_{ij}\big),\quad m_{ij} = 0 \text{ if } j \le i \text{ and key } j
              \text{ is real, else } -\infty

    Returns ``out [B, S, H, hd]`` in q's dtype and the post-softmax rows of the captured query
    positions ``[B, H, Q, S]`` float32 (None when capture_positions is None). The full
    ``[B, H, S, S]`` matrix is a per-layer temporary; only the captured rows are returned.
    Without captured rows (training, plain forward passes) the work is done by
    :func:`softmax_attention` (head-major layout, hand-written backward pass).
    """
    B, S, H, hd = q.shape
    kvh = k.shape[2]
    rep = H // kvh
    if capture_positions is None:
        # [B, KVH, rep*S, hd]: the rep query heads of a key/value head are stacked along the query
        # axis, so every matmul is a plain batched GEMM over (batch, key/value head).
        qh = q.reshape(B, S, kvh, rep, hd).transpose(0, 2, 3, 1, 4).reshape(B, kvh, rep * S, hd)
        causal = jnp.tril(jnp.ones((S, S), dtype=bool))
        allowed = causal[None, :, :] & key_mask[:, None, :].astype(bool)          # [B, Sq, Sk]
        if rep > 1:
            allowed = jnp.tile(allowed, (1, rep, 1))
        out = softmax_attention(qh, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), allowed[:, None], scale)
        out = out.reshape(B, kvh, rep, S, hd).transpose(0, 3, 1, 2, 4).reshape(B, S, H, hd)
        return out.astype(q.dtype), None
    qg = q.reshape(B, S, kvh, rep, hd)
    scores = jnp.einsum("bqgrd,bkgd->bgrqk", qg, k, preferred_element_type=jnp.float32) * scale
    causal = jnp.tril(jnp.ones((S, S), dtype=bool))
    allowed = causal[None, :, :] & key_mask[:, None, :].astype(bool)   # [B, Sq, Sk]
    scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)                             # [B, KVH, rep, S, S]
    out = jnp.einsum("bgrqk,bkgd->bqgrd", probs.astype(v.dtype), v,
                     preferred_element_type=jnp.float32).astype(q.dtype)
    pattern = None
    if capture_positions is not None:
        probs = probs.reshape(B, H, S, S)
        idx = capture_positions[:, None, :, None]
        pattern = jnp.take_along_axis(probs, idx, axis=2)               # [B, H, Q, S]
    return out.reshape(B, S, H, hd), pattern


def _softmax_attention_fwd(q, k, v, allowed, scale):
    scores = jnp.einsum("bgqd,bgkd->bgqk", q, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.where(allowed, scores, _MASK_VALUE), axis=-1)
    out = jnp.einsum("bgqk,bgkd->bgqd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out, (q, k, v, allowed, probs, out)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: float) -> jax.Array:
    r"""``softmax(scale q kᵀ, masked) v`` per (batch, group), head-major: ``[B, G, Q, S]`` scores.

    q: ``[B, G, Q, hd]``; k, v: ``[B, G, S, hd]``; allowed: bool broadcastable to ``[B, G, Q, S]``
    (a disallowed score becomes ``_MASK_VALUE`` before the softmax). Returns ``[B, G, Q, hd]``
    float32.

    The backward pass is the textbook gradient written out (a custom VJP) rather than left to
    autodiff, which on XLA:CPU differentiated the softmax through its quotient (several extra
    passes over the ``[B, G, Q, S]`` tensors) and kept more of them alive: with
    :math:`P` the probabilities, :math:`O = PV` and :math:`dO` the output cotangent,

    .. math:: dV = P^\top dO,\quad dP = dO\,V^\top,\quad
              dS = P \odot (dP - \mathrm{rowsum}(dO \odot O))\ (0 \text{ where masked}),\quad
              dQ = \mathrm{scale}\; dS\,K,\quad dK = \mathrm{scale}\; dS^\top Q,

    using :math:`\sum_k P_{qk}\,dP_{qk} = \sum_d dO_{qd}\,O_{qd}`. Only ``P`` (and q, k, v, O)
    is kept from the forward pass.
    """
    return _softmax_attention_fwd(q, k, v, allowed, scale)[0]


def _softmax_attention_bwd(scale, res, dout):
    q, k, v, allowed, probs, out = res
    dt = v.dtype
    dv = jnp.einsum("bgqk,bgqd->bgkd", probs.astype(dt), dout.astype(dt), preferred_element_type=jnp.float32)
    dp = jnp.einsum("bgqd,bgkd->bgqk", dout.astype(dt), v, preferred_element_type=jnp.float32)
    delta = jnp.sum(dout * out, axis=-1, keepdims=True)
    ds = jnp.where(allowed, probs * (dp - delta), 0.0) * scale
    dq = jnp.einsum("bgqk,bgkd->bgqd", ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bgqk,bgqd->bgkd", ds.astype(q.dtype), q, preferred_element_type=jnp.float32)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


ATTENTION_IMPLS = ("einsum", "chunked", "xla", "cudnn")
QUERY_BLOCK = 256


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, scale: float,
                      block: int = QUERY_BLOCK) -> jax.Array:
    """Causal attention output ``[B, S, H, hd]`` computed ``block`` queries at a time.

    Same maths as :func:`causal_attention`, but the largest temporary is ``[B, H, block, S]``
    instead of ``[B, H, S, S]``: memory grows linearly with the sequence (long prompts on CPU).
    """
    B, S, H, hd = q.shape
    kvh = k.shape[2]
    rep = H // kvh
    nb = -(-S // block)
    qp = jnp.pad(q, ((0, 0), (0, nb * block - S), (0, 0), (0, 0)))
    qb = qp.reshape(B, nb, block, kvh, rep, hd).transpose(1, 0, 2, 3, 4, 5)   # [nb, B, C, KVH, rep, hd]
    key_pos = jnp.arange(S)
    key_mask = key_mask.astype(bool)

    def one_block(args):
        qi, start = args
        scores = jnp.einsum("bqgrd,bkgd->bgrqk", qi, k, preferred_element_type=jnp.float32) * scale
        allowed = (key_pos[None, :] <= (start + jnp.arange(block))[:, None])[None] & key_mask[:, None, :]
        probs = jax.nn.softmax(jnp.where(allowed[:, None, None], scores, _MASK_VALUE), axis=-1)
        return jnp.einsum("bgrqk,bkgd->bqgrd", probs.astype(v.dtype), v,
                          preferred_element_type=jnp.float32).astype(q.dtype)

    out = jax.lax.map(one_block, (qb, jnp.arange(nb) * block))                # [nb, B, C, KVH, rep, hd]
    return out.transpose(1, 0, 2, 3, 4, 5).reshape(B, nb * block, H, hd)[:, :S]


def captured_rows(q: jax.Array, k: jax.Array, key_mask: jax.Array, capture_positions: jax.Array,
                  scale: float) -> jax.Array:
    """Post-softmax attention rows of the captured queries only, ``[B, H, Q, S]`` float32.

    Costs O(B H Q S hd): used with fused attention kernels that never form the S x S matrix.
    q: ``[B, S, H, hd]`` (after RoPE), k: ``[B, S, KVH, hd]`` (after RoPE).
    """
    B, S, H, hd = q.shape
    kvh = k.shape[2]
    rep = H // kvh
    qc = gather_positions(q, capture_positions).reshape(B, -1, kvh, rep, hd)  # [B, Q, KVH, rep, hd]
    scores = jnp.einsum("bqgrd,bkgd->bgrqk", qc, k, preferred_element_type=jnp.float32) * scale
    allowed = (jnp.arange(S)[None, None, :] <= capture_positions[:, :, None]) & key_mask[:, None, :].astype(bool)
    scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
    return jax.nn.softmax(scores, axis=-1).reshape(B, H, -1, S)


def attention(q, k, v, key_mask, capture_positions, scale: float, impl: str = "chunked"):
    """Dispatch: ``"einsum"`` forms the S x S probabilities (:func:`causal_attention`);
    ``"chunked"`` works through ``QUERY_BLOCK`` queries at a time (:func:`chunked_attention`);
    ``"xla"`` / ``"cudnn"`` use ``jax.nn.dot_product_attention``. All but "einsum" recompute only
    the captured rows (:func:`captured_rows`). ``"cudnn"`` needs a GPU, bf16/fp16 and right
    padding (keys masked by length); the others take any padding mask."""
    if impl == "einsum":
        return causal_attention(q, k, v, key_mask, capture_positions, scale)
    if impl == "chunked":
        out = chunked_attention(q, k, v, key_mask, scale)
    elif impl == "xla":
        out = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :].astype(bool),
                                           scale=scale, is_causal=True, implementation="xla")
    elif impl == "cudnn":
        lengths = jnp.sum(key_mask, axis=1, dtype=jnp.int32)  # int32 also with x64 enabled (cuDNN requires it)
        out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation="cudnn",
                                           query_seq_lengths=lengths, key_value_seq_lengths=lengths)
    else:
        raise ValueError(f"attention impl {impl!r}; expected one of {ATTENTION_IMPLS}")
    rows = None if capture_positions is None else captured_rows(q, k, key_mask, capture_positions, scale)
    return out.astype(q.dtype), rows


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Llama RMSNorm over the last axis, in float32, cast back to x's dtype before the scale."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight * xf.astype(x.dtype)


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis, statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)
