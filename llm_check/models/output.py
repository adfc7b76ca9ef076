"""What a forward pass returns, the capture selection, and TransformerLens-style names for it."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    """Which intermediate arrays :func:`llm_check.models.forward` returns (one frozen, hashable
    value, like the NNX Gemma example's ``SowConfig``; it is a static argument of the jitted pass).

    Field names are TransformerLens's hook names:

    - ``hook_pattern``: post-softmax attention rows of the captured query positions.
    - ``hook_q``: per-head queries at the captured query positions (pre-rotary).
    - ``hook_k``, ``hook_v``: keys and values at every position, per key/value head (pre-rotary).
    - ``hook_resid_post``: the residual stream after every layer.
    - ``hook_normalized``: the final hidden states after the last norm (``ln_final.hook_normalized``).
    """

    hook_pattern: bool = True
    hook_q: bool = False
    hook_k: bool = False
    hook_v: bool = False
    hook_resid_post: bool = False
    hook_normalized: bool = False


class ForwardOutput(NamedTuple):
    """Result of :func:`llm_check.models.forward`. Fields not selected by the capture are ``None``.

    L layers, B batch, H query heads, KVH key/value heads, Q captured query positions,
    S sequence length, V vocabulary, D model width, hd head dim.

    - ``logits``: ``[B, Q, V]`` float32 at the captured positions, or ``[B, S, V]`` at every
      position when no capture positions were given.
    - ``capture_positions``: ``[B, Q]`` int32, the positions actually captured.
    - ``hook_pattern``: ``[L, B, H, Q, S]`` post-softmax attention rows of the captured query
      positions (pad keys and future keys get 0).
    - ``hook_q``: ``[L, B, H, Q, hd]`` per-head queries at the captured positions, before rotary.
    - ``hook_k``, ``hook_v``: ``[L, B, KVH, S, hd]`` keys and values at every position, before
      rotary (query head h reads key/value head ``h // (H // KVH)``).
    - ``hook_resid_post``: ``[L, B, S, D]`` residual stream after each layer.
    - ``hook_normalized``: ``[B, S, D]`` final hidden states after the last norm (what the head reads).
    """

    logits: jax.Array
    capture_positions: jax.Array
    hook_pattern: jax.Array | None = None
    hook_q: jax.Array | None = None
    hook_k: jax.Array | None = None
    hook_v: jax.Array | None = None
    hook_resid_post: jax.Array | None = None
    hook_normalized: jax.Array | None = None


def as_transformerlens_cache(out: ForwardOutput) -> dict:
    """TransformerLens-named dict of the captured arrays, one entry per layer.

    ``blocks.{L}.attn.hook_pattern`` ``[batch, head, query, key]`` (query = captured positions
    only); ``blocks.{L}.attn.hook_q`` ``[batch, query, head, head_dim]``;
    ``blocks.{L}.attn.hook_k/hook_v`` ``[batch, pos, kv_head, head_dim]``;
    ``blocks.{L}.hook_resid_post`` ``[batch, pos, d_model]``; ``ln_final.hook_normalized``
    ``[batch, pos, d_model]``; ``logits``.
    """
    cache: dict = {"logits": out.logits, "capture_positions": out.capture_positions}
    layers = next(a.shape[0] for a in (out.hook_pattern, out.hook_q, out.hook_k, out.hook_v,
                                       out.hook_resid_post, jax.numpy.zeros((0,))) if a is not None)
    for layer in range(layers):
        if out.hook_pattern is not None:
            cache[f"blocks.{layer}.attn.hook_pattern"] = out.hook_pattern[layer]
        for name, arr in (("hook_q", out.hook_q), ("hook_k", out.hook_k), ("hook_v", out.hook_v)):
            if arr is not None:
                cache[f"blocks.{layer}.attn.{name}"] = arr[layer].transpose(0, 2, 1, 3)
        if out.hook_resid_post is not None:
            cache[f"blocks.{layer}.hook_resid_post"] = out.hook_resid_post[layer]
    if out.hook_normalized is not None:
        cache["ln_final.hook_normalized"] = out.hook_normalized
    return cache
