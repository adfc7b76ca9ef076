"""The forward pass shared by every architecture: embed -> layers -> final norm -> head.

:class:`CausalLM` is the base of :class:`~llm_check.models.gptj.GPTJModel` and
:class:`~llm_check.models.llama.LlamaModel`; a subclass provides ``layers`` (blocks called as
``layer(x, cfg, cos, sin, key_mask, capture_positions, impl, k_block) -> (x, pattern, (q, k, v))``),
``embed``, ``rotary``, ``final`` and ``head``. Training, evaluation and attention capture all
call :meth:`CausalLM.__call__`; :func:`llm_check.models.forward` is its validated, jit-compiled
entry point for real inputs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm_check.models.attention import gather_positions
from llm_check.models.output import CaptureConfig, ForwardOutput


def last_positions(attention_mask) -> jax.Array:
    """Index of the last real token of each row, ``[B, 1]`` int32 (right or no padding)."""
    mask = jnp.asarray(attention_mask).astype(jnp.int32)
    return (jnp.sum(mask, axis=1, keepdims=True) - 1).clip(0).astype(jnp.int32)


class CausalLM(nnx.Module):
    """A decoder-only causal LM whose forward pass is :meth:`__call__` (see the module docstring)."""

    def __call__(self, input_ids, attention_mask=None, *, capture_positions=None,
                 capture: CaptureConfig | None = None, all_logits: bool | None = None, impl: str = "chunked",
                 k_block: int | None = None, scan: bool = True) -> ForwardOutput:
        """Logits of a batch and, optionally, attention captured at chosen query positions.

        Args:
          input_ids: ``[B, S]`` int32 token ids.
          attention_mask: ``[B, S]`` bool, True for real tokens; None means all real. Rotary
            positions are ``cumsum(mask) - 1``.
          capture_positions: ``[B, Q]`` int32 query positions to capture; None with a
            ``capture``: the last real token of each row (Q = 1).
          capture: the hooks to return (:class:`CaptureConfig`); None captures nothing and the
            attention skips the captured rows (training).
          all_logits: logits at every position (``[B, S, V]``) or only at ``capture_positions``
            (``[B, Q, V]``); None: every position unless ``capture_positions`` was given.
          impl: attention implementation (:data:`llm_check.models.attention.ATTENTION_IMPLS`).
          k_block: contraction block of the matmuls (:func:`llm_check.models.layers.blocked_dot`).
          scan: run the layers as one ``lax.scan`` over their stacked weights (one compiled
            layer) or as a Python loop (unrolled; the training step uses it).

        Inputs are not validated here (this runs traced); :func:`llm_check.models.forward`
        checks them. Returns a :class:`ForwardOutput`; ``capture_positions`` is None when
        ``capture`` is None.
        """
        B, S = input_ids.shape
        cfg = self.config
        if all_logits is None:
            all_logits = capture_positions is None
        if capture is None:
            capture_positions = None
            if not all_logits:
                raise ValueError("all_logits=False needs a capture (the positions whose logits to return)")
        elif capture_positions is None:
            capture_positions = (jnp.full((B, 1), S - 1, jnp.int32) if attention_mask is None
                                 else last_positions(attention_mask))
        if attention_mask is None:
            attention_mask = jnp.ones((B, S), bool)
            positions = jnp.broadcast_to(jnp.arange(S), (B, S))
        else:
            positions = jnp.clip(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)
        cos, sin = self.rotary(positions)
        x = self.embed(input_ids)
        hooks = capture or CaptureConfig(hook_pattern=False)

        def one_layer(x, layer):
            x, pattern, (q, k, v) = layer(x, cfg, cos, sin, attention_mask, capture_positions, impl, k_block)
            out = {}
            if hooks.hook_pattern:
                out["pattern"] = pattern
            if hooks.hook_q:      # [B, S, H, hd] -> [B, H, Q, hd] at the captured query positions
                out["q"] = gather_positions(q, capture_positions).transpose(0, 2, 1, 3)
            if hooks.hook_k:      # [B, S, KVH, hd] -> [B, KVH, S, hd]
                out["k"] = k.transpose(0, 2, 1, 3)
            if hooks.hook_v:
                out["v"] = v.transpose(0, 2, 1, 3)
            if hooks.hook_resid_post:
                out["resid"] = x
            return x, out

        if scan:
            # One lax.scan over the stacked layer weights: XLA compiles one layer instead of
            # num_hidden_layers unrolled copies (SmolLM2: 30), so each new batch shape compiles in
            # a fraction of the time; the stacked copy of the weights costs one pass over them.
            layer_def = nnx.graphdef(self.layers[0])
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(layer) for layer in self.layers])
            x, per_layer = jax.lax.scan(lambda x, s: one_layer(x, nnx.merge(layer_def, s)), x, stacked)
        else:
            outs = []
            for layer in self.layers:
                x, out = one_layer(x, layer)
                outs.append(out)
            per_layer = {name: jnp.stack([o[name] for o in outs]) for name in outs[0]} if outs else {}
        hidden = self.final(x)
        logits = self.head(hidden if all_logits else gather_positions(hidden, capture_positions), k_block)
        get = lambda name: per_layer.get(name)  # noqa: E731  (stacked [L, ...])
        return ForwardOutput(
            logits=logits,
            capture_positions=capture_positions,
            hook_pattern=get("pattern"),
            hook_q=get("q"),
            hook_k=get("k"),
            hook_v=get("v"),
            hook_resid_post=get("resid"),
            hook_normalized=hidden if hooks.hook_normalized else None,
        )
