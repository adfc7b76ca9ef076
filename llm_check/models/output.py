"""What a forward pass returns, and TransformerLens-style names for it."""
from __future__ import annotations

from typing import NamedTuple

import jax


class ForwardOutput(NamedTuple):
    """Result of :func:`llm_check.models.forward`. Fields not requested are ``None``.

    L layers, B batch, H query heads, KVH key/value heads, Q captured query positions,
    S sequence length, V vocabulary, D model width, hd head dim.

    - ``logits``: ``[B, Q, V]`` float32 at the captured positions, or ``[B, S, V]`` at every
      position when no capture positions were given.
    - ``patterns``: ``[L, B, H, Q, S]`` float32 post-softmax attention rows of the captured
      query positions (pad keys and future keys get 0).
    - ``q``, ``k``, ``v``: ``[L, B, H, Q, hd]`` per-head query / key / value vectors at the
      captured positions, *before* rotary embedding (TransformerLens ``hook_q/k/v``). For
      grouped-query models k and v are expanded to the query heads (head h reads key/value
      head ``h // (H // KVH)``).
    - ``k_all``, ``v_all``: ``[L, B, KVH, S, hd]`` keys and values at every position (pre-rotary).
    - ``hidden``: ``[B, S, D]`` final hidden states after the last norm (what the head reads).
    - ``capture_positions``: ``[B, Q]`` int32, the positions actually captured.
    """

    logits: jax.Array
    patterns: jax.Array
    capture_positions: jax.Array
    q: jax.Array | None = None
    k: jax.Array | None = None
    v: jax.Array | None = None
    k_all: jax.Array | None = None
    v_all: jax.Array | None = None
    hidden: jax.Array | None = None


def as_transformerlens_cache(out: ForwardOutput) -> dict:
    """TransformerLens-named dict of the captured arrays, one entry per layer.

    ``blocks.{L}.attn.pattern`` is ``[batch, head, query, key]`` (query = captured positions
    only); ``blocks.{L}.attn.hook_q/hook_k/hook_v`` are ``[batch, query, head, head_dim]`` as in
    TransformerLens; ``blocks.{L}.attn.k_all/v_all`` ``[batch, pos, kv_head, head_dim]``;
    ``ln_final.hook_normalized`` ``[batch, pos, d_model]``; ``logits``.
    """
    cache: dict = {"logits": out.logits, "capture_positions": out.capture_positions}
    for layer in range(out.patterns.shape[0]):
        cache[f"blocks.{layer}.attn.pattern"] = out.patterns[layer]
        for name, arr in (("hook_q", out.q), ("hook_k", out.k), ("hook_v", out.v)):
            if arr is not None:
                cache[f"blocks.{layer}.attn.{name}"] = arr[layer].transpose(0, 2, 1, 3)
        for name, arr in (("k_all", out.k_all), ("v_all", out.v_all)):
            if arr is not None:
                cache[f"blocks.{layer}.attn.{name}"] = arr[layer].transpose(0, 2, 1, 3)
    if out.hidden is not None:
        cache["ln_final.hook_normalized"] = out.hidden
    return cache
