r"""The HMM filter step: condition on a token, predict the next state, renormalise.

The model (Assumption 1): a state emits a token, then moves — with ``T`` after an ordinary token,
with the restart ``R`` after the delimiter. A filtered message α (a distribution over the state
that emits the next token) is advanced by one token o in two steps, as in dynamax's
``_condition_on`` and ``_predict``:

.. math:: w = α ⊙ \ell_o \quad\text{(condition: joint of state and token, } \ell_o = B[:, o]
          \text{ or the delimiter weight)}, \qquad α' ∝ w M \quad\text{(predict, } M = T \text{ or } R).

Messages are kept scaled: the step divides by a normaliser c and adds log c to an accumulated
log-normaliser, so Σ log c = log P(tokens) at any length. A message of mass exactly 0 (a prefix of
probability 0) stays 0 with log-normaliser −inf from then on, never NaN.

Which normaliser: ``mass="predicted"`` (the default) divides by the mass of w M (the forward pass
of :mod:`simulate.forward`, :func:`theory.kernels.belief_features`); ``mass="joint"`` divides by
the mass of w, which is P(o | prefix) itself (the per-token log-loss of :mod:`simulate.corpus`).
The two are equal when M is row-stochastic and differ only in rounding; each caller keeps the
one its published numbers were computed with.

Every function is pure and dtype-generic, and takes ``xp`` (``jax.numpy`` by default, or
``numpy``) for the few calls that are not array methods, so numpy callers stay numpy.
The exceptions, deliberately specialised: GINC's compact two-lane filter
(:mod:`simulate.ginc`, sparse messages on the emitting states) and the block-factorised filter
of :mod:`simulate.factorised` (one normaliser per task block) write their own moves.
"""
from __future__ import annotations

import jax.numpy as jnp


def condition(alpha, lik):
    """The joint of state and observation, ``alpha ⊙ lik`` (unnormalised), ``[..., d]``.

    ``alpha [..., d]`` is the message, ``lik [..., d]`` (or ``[d]``) the per-state probability of
    the observed token (a row of ``Bᵀ``, or the delimiter weight).
    """
    return alpha * lik


def predict(joint, M):
    """Move the joint ``[..., d]`` one step with the transition ``M [d, d]`` (``T`` or ``R``)."""
    return joint @ M


def normalise(a, logz, mass=None, xp=jnp):
    """Divide ``a [..., d]`` by ``mass [...]`` (default: ``a.sum(-1)``) and add its log to ``logz``.

    Where the mass is exactly 0 the result is the zero message and ``logz = -inf`` (never NaN).
    """
    c = a.sum(-1) if mass is None else mass
    pos = c > 0
    safe = xp.where(pos, c, 1.0)
    return a / safe[..., None], xp.where(pos, logz + xp.log(safe), -xp.inf)


def step(alpha, logz, lik, M, skip=None, mass: str = "predicted", xp=jnp):
    """One filter step: condition on the token (``lik``), predict with ``M``, renormalise.

    Shapes: ``alpha [..., d]``, ``logz [...]``, ``lik [..., d]``, ``M [d, d]``; ``skip [...]`` bool
    (optional) marks padding positions, where ``(alpha, logz)`` pass through unchanged. ``mass`` is
    ``"predicted"`` (normalise by the mass of the moved message) or ``"joint"`` (by the mass of the
    joint, P(token | prefix)); see the module docstring. Returns ``(alpha' [..., d], logz' [...])``.
    """
    w = condition(alpha, lik)
    new = predict(w, M)
    if mass == "predicted":
        new, lz = normalise(new, logz, xp=xp)
    elif mass == "joint":
        new, lz = normalise(new, logz, w.sum(-1), xp=xp)
    else:
        raise ValueError(f"normaliser mass {mass!r}, expected 'predicted' or 'joint'")
    if skip is None:
        return new, lz
    return xp.where(skip[..., None], alpha, new), xp.where(skip, logz, lz)
