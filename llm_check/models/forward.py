"""The validated, jit-compiled entry point to the models' forward pass, with attention capture.

:func:`forward` checks its inputs and runs the model's own forward
(:meth:`llm_check.models.base.CausalLM.__call__`, layers as one ``lax.scan``, matmuls in
``K_BLOCK``-wide contraction blocks). Nothing is hooked: the layer loop returns the post-softmax
rows of the captured query positions (and optionally per-head q/k/v) alongside the hidden states.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm_check.errors import CapturePositionError, InputError, PromptTooLongError
from llm_check.models.attention import ATTENTION_IMPLS
from llm_check.models.base import last_positions
from llm_check.models.output import CaptureConfig, ForwardOutput

PATTERN_ONLY = CaptureConfig()
# Contraction block of the forward's matmuls (see llm_check.models.layers.blocked_dot): float32
# logits of SmolLM2 stay as close to a float64 reference as transformers' float32 ones.
K_BLOCK = 64


def forward(model, input_ids, attention_mask=None, capture_positions=None,
            capture: CaptureConfig = PATTERN_ONLY, attention_impl: str = "chunked") -> ForwardOutput:
    """Run ``model`` on a padded batch and capture attention at chosen query positions.

    Args:
      model: a :class:`~llm_check.models.llama.LlamaModel` or :class:`~llm_check.models.gptj.GPTJModel`.
      input_ids: ``[B, S]`` int token ids (pad ids are arbitrary valid ids).
      attention_mask: ``[B, S]`` bool/int, 1 for real tokens; None means all real. Right
        padding is the intended layout; rotary positions are ``cumsum(mask) - 1`` so left
        padding also gets the right positions.
      capture_positions: ``[B, Q]`` int query positions per item. None: logits at every
        position and attention captured at the last real token of each item (Q = 1).
      capture: a frozen :class:`CaptureConfig` naming the TransformerLens hooks to return
        (default: ``hook_pattern`` only).
      attention_impl: ``"chunked"`` (default; 256 queries at a time, so temporaries grow
        linearly with S), ``"einsum"`` (forms each layer's S x S probabilities at once),
        ``"xla"`` or ``"cudnn"`` (``jax.nn.dot_product_attention``; "cudnn" needs a GPU, bf16
        and right padding). All but "einsum" recompute the captured rows in O(Q S), so memory
        beyond the weights grows with Q and S, not S^2.

    Returns a :class:`ForwardOutput`. Raises :class:`PromptTooLongError` when S exceeds the
    context and :class:`CapturePositionError` for a position outside ``[0, S)`` or on a pad token.
    """
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
        raise InputError(f"input_ids has shape {tuple(input_ids.shape)}; expected [batch, seq]")
    B, S = input_ids.shape
    ctx = model.config.max_position_embeddings
    if S > ctx:
        raise PromptTooLongError(f"sequence length {S} exceeds the model context {ctx}")
    if not isinstance(input_ids, jax.core.Tracer):
        ids_np = np.asarray(input_ids)
        vocab = model.config.vocab_size
        if ids_np.size and (ids_np.min() < 0 or ids_np.max() >= vocab):
            bad = int(ids_np.min()) if ids_np.min() < 0 else int(ids_np.max())
            raise InputError(f"token id {bad} is outside the vocabulary; expected 0 <= id < {vocab}")
    if attention_mask is None:
        attention_mask = jnp.ones((B, S), dtype=bool)
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != (B, S):
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected {(B, S)}")
    if not isinstance(capture, CaptureConfig):
        raise InputError(f"capture {capture!r}; expected a CaptureConfig")
    if attention_impl not in ATTENTION_IMPLS:
        raise InputError(f"attention_impl {attention_impl!r}; expected one of {list(ATTENTION_IMPLS)}")
    if attention_impl == "cudnn" and not isinstance(attention_mask, jax.core.Tracer):
        m = np.asarray(attention_mask).astype(bool)
        if (m[:, 1:] & ~m[:, :-1]).any():
            raise InputError("attention_impl 'cudnn' masks keys by length; expected right padding (a prefix of real tokens)")
    all_logits = capture_positions is None
    if capture_positions is None:
        capture_positions = last_positions(attention_mask)
    else:
        capture_positions = jnp.asarray(capture_positions)
        if capture_positions.ndim == 1:
            capture_positions = capture_positions[:, None]
        if capture_positions.ndim != 2 or capture_positions.shape[0] != B:
            raise CapturePositionError(
                f"capture_positions has shape {tuple(capture_positions.shape)}; expected [{B}, Q]")
        _check_positions(capture_positions, attention_mask, S)
        capture_positions = capture_positions.astype(jnp.int32)
    graphdef, state = nnx.split(model)
    return _forward_jit(graphdef, state, input_ids.astype(jnp.int32), attention_mask.astype(bool),
                        capture_positions, all_logits=all_logits, capture=capture, impl=attention_impl)


def _check_positions(positions, mask, S: int) -> None:
    if isinstance(positions, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        return
    pos = np.asarray(positions)
    bad = (pos < 0) | (pos >= S)
    if bad.any():
        b, q = map(int, np.argwhere(bad)[0])
        raise CapturePositionError(
            f"capture position {int(pos[b, q])} (item {b}) is outside the sequence; expected 0 <= pos < {S}")
    real = np.take_along_axis(np.asarray(mask).astype(bool), pos, axis=1)
    if not real.all():
        b, q = map(int, np.argwhere(~real)[0])
        n = int(np.asarray(mask)[b].astype(bool).sum())
        raise CapturePositionError(
            f"capture position {int(pos[b, q])} (item {b}) is a padding token; expected one of the item's {n} real tokens")


@functools.partial(jax.jit, static_argnames=("graphdef", "all_logits", "capture", "impl"))
def _forward_jit(graphdef, state, input_ids, attention_mask, capture_positions, *, all_logits,
                 capture: CaptureConfig, impl) -> ForwardOutput:
    model = nnx.merge(graphdef, state)
    return model(input_ids, attention_mask, capture_positions=capture_positions, capture=capture,
                 all_logits=all_logits, impl=impl, k_block=K_BLOCK)


def pad_batch(token_lists, pad_id: int = 0, multiple: int = 64, min_batch: int = 1):
    """Right-pad token id lists into ``(ids [B, S] int32, mask [B, S] bool, last [B, 1] int32)``.

    S is rounded up to a multiple of ``multiple`` and B up to ``min_batch`` (extra rows are all
    pad with one real token) so that batches of similar size reuse one compiled forward.
    ``last`` holds each row's last real position (the default capture position).
    """
    lengths = [len(t) for t in token_lists]
    if not lengths or min(lengths) == 0:
        raise InputError("pad_batch got an empty prompt; expected at least one token per prompt")
    B = max(len(lengths), min_batch)
    S = -(-max(lengths) // multiple) * multiple
    ids = np.full((B, S), pad_id, dtype=np.int32)
    mask = np.zeros((B, S), dtype=bool)
    mask[:, 0] = True
    for b, toks in enumerate(token_lists):
        ids[b, :len(toks)] = toks
        mask[b, :len(toks)] = True
    last = (mask.sum(1, keepdims=True) - 1).astype(np.int32)
    return ids, mask, last
