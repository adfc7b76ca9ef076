r"""The pretraining corpus p_pre: documents streamed from PRNG keys, and its exact per-token loss.

A document of length L is the HMM run from p0 (for ``han``, p0 is the mean of the task starts, so
this is "draw a task from the prior, start at its start state"): each state emits a token from
``B``; after an ordinary token the chain moves with ``T``, after the delimiter with the restart
``R`` (Assumption 1). For the ``ginc`` preset ``R = T``: '/' is an ordinary emission of the slot-0
states and the chain moves on, so these are GINC's own documents (one concept per document, started
from its start distribution); ``ginc-restart`` restarts the concept's chain at ``start_slot``.

Document ``i`` of a split is drawn from ``fold_in(split_key, i)`` alone, so a training batch is a
pure function of (seed, step) — nothing is stored, resuming needs only the step — and held-out
documents come from their own key. Draws are inverse-CDF lookups of float32 uniforms in float32
CDFs, so the same seed gives the same documents with or without float64 enabled.

The Bayes-optimal loss is computed exactly by the scaled forward algorithm in the *emission*
form of the document process,

.. math:: P(o_t \mid o_{<t}) = α_t^\top B[:, o_t], \qquad
          α_{t+1} ∝ (α_t ⊙ B[:, o_t])^\top (R \text{ if } o_t = δ \text{ else } T),

with α_0 = p0: −log P(o_t | o_<t; p_pre) per token, the floor no model of p_pre can beat
(:func:`theory.filtering.step` with ``mass="joint"``; a token of probability exactly 0 gives −inf,
and so does every later token of that document).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory.filtering import step as filter_step
from theory.hmm import HMM

TRAIN_TAG = 0x54524149   # fold_in tags of the two document streams
HELDOUT_TAG = 0x48454C44


def split_key(seed: int, split: str):
    """The PRNG key of a document stream: ``split`` is ``"train"`` or ``"heldout"``."""
    tags = {"train": TRAIN_TAG, "heldout": HELDOUT_TAG}
    if split not in tags:
        raise ValueError(f"split {split!r}, expected 'train' or 'heldout'")
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), tags[split])


class DocumentCDFs(NamedTuple):
    """Cumulative distributions the sampler inverts (float32; a pytree)."""

    p0: jax.Array      # [d]
    emit: jax.Array    # [d, m]
    trans: jax.Array   # [d, d]
    restart: jax.Array  # [d, d]
    delim: jax.Array   # [] int32


def document_cdfs(hmm: HMM) -> DocumentCDFs:
    def cdf(a):
        a = np.asarray(a, np.float64)
        c = np.cumsum(a, axis=-1)
        return jnp.asarray(c / c[..., -1:], jnp.float32)

    return DocumentCDFs(cdf(hmm.p0), cdf(hmm.B), cdf(hmm.T), cdf(hmm.R), jnp.int32(int(hmm.delim)))


def _draw(cdf, u):
    """Index i with CDF[i-1] <= u < CDF[i] (last index for u at the top)."""
    return jnp.minimum(jnp.sum(cdf <= u), cdf.shape[-1] - 1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("length",))
def _documents(key, indices, cdfs: DocumentCDFs, length: int):
    def one(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (2 * length + 1,), jnp.float32)
        s0 = _draw(cdfs.p0, u[0])

        def step(s, uu):
            o = _draw(cdfs.emit[s], uu[0])
            row = jnp.where(o == cdfs.delim, cdfs.restart[s], cdfs.trans[s])
            return _draw(row, uu[1]), o

        _, toks = jax.lax.scan(step, s0, u[1:].reshape(length, 2))
        return toks

    return jax.vmap(one)(indices)


def documents(key, hmm: HMM, start: int, num: int, length: int, cdfs: DocumentCDFs | None = None) -> jax.Array:
    """Documents ``start .. start+num-1`` of the stream ``key``: ``[num, length]`` int32 token ids."""
    if length < 1 or num < 0:
        raise ValueError(f"documents: length {length} and count {num}, expected length >= 1, count >= 0")
    cdfs = document_cdfs(hmm) if cdfs is None else cdfs
    return _documents(key, jnp.arange(start, start + num, dtype=jnp.uint32), cdfs, int(length))


@jax.jit
def _token_log_probs(p0, Bt, T, R, delim, docs):
    D = docs.shape[0]
    alpha0 = jnp.broadcast_to(p0 / p0.sum(), (D, p0.shape[0]))

    zero = jnp.zeros((D,), alpha0.dtype)

    def step(alpha, o):
        # normalised by P(o | prefix) (mass="joint"), so the step's log-normaliser is the token's log-prob
        a_t, lp_t = filter_step(alpha, zero, Bt[o], T, mass="joint")
        a_r, lp_r = filter_step(alpha, zero, Bt[o], R, mass="joint")
        return jnp.where((o == delim)[:, None], a_r, a_t), jnp.where(o == delim, lp_r, lp_t)

    _, lp = jax.lax.scan(step, alpha0, docs.T)
    return lp.T


def token_log_probs(hmm: HMM, docs, dtype=jnp.float64) -> np.ndarray:
    """log P(o_t | o_<t; p_pre) for every token of ``docs [D, L]``: ``[D, L]`` (scaled forward).

    Use float64 (needs ``jax_enable_x64``) where the numbers are compared exactly; float32 is
    accurate to about 1e-6 nats on these lengths.
    """
    dt = jnp.dtype(dtype)
    return np.asarray(_token_log_probs(jnp.asarray(hmm.p0, dt), jnp.asarray(hmm.B, dt).T, jnp.asarray(hmm.T, dt),
                                       jnp.asarray(hmm.R, dt), jnp.int32(int(hmm.delim)), jnp.asarray(docs, jnp.int32)))


def bayes_loss(hmm: HMM, docs, dtype=jnp.float64) -> float:
    """The Bayes-optimal cross-entropy of ``docs`` in nats per token (mean of −log P(o_t | o_<t))."""
    return float(-token_log_probs(hmm, docs, dtype).mean())


# ------------------------------------------------------------------ n-gram reference lines


class NGram(NamedTuple):
    """Add-``alpha`` smoothed counts: ``unigram [m]`` and ``bigram [m, m]`` probabilities."""

    unigram: np.ndarray
    bigram: np.ndarray


def fit_ngrams(docs, num_tokens: int, alpha: float = 0.5) -> NGram:
    """Unigram and bigram models fitted on ``docs [D, L]`` (bigram pairs within a document)."""
    docs = np.asarray(docs, np.int64)
    uni = np.bincount(docs.ravel(), minlength=num_tokens).astype(float) + alpha
    pairs = docs[:, :-1] * num_tokens + docs[:, 1:]
    bi = np.bincount(pairs.ravel(), minlength=num_tokens * num_tokens).reshape(num_tokens, num_tokens) + alpha
    return NGram(uni / uni.sum(), bi / bi.sum(1, keepdims=True))


def ngram_losses(model: NGram, docs) -> dict:
    """Held-out cross-entropy (nats/token) of the unigram and the bigram model on ``docs [D, L]``.

    The bigram model scores a document's first token with the unigram (it has no predecessor).
    """
    docs = np.asarray(docs, np.int64)
    uni = -np.log(model.unigram[docs])
    bi = uni.copy()
    bi[:, 1:] = -np.log(model.bigram[docs[:, :-1], docs[:, 1:]])
    return dict(unigram=float(uni.mean()), bigram=float(bi.mean()))
