"""The one HMM filter step (theory.filtering) against enumeration of hidden paths on a tiny HMM.

The reference sums p0(s_0) Π_t lik_t(s_t) M_t(s_t, s_{t+1}) over every state path (numpy, float64),
with M_t = R after the delimiter and T otherwise; the step's message must be that joint over the
next state divided by its mass, and its accumulated log-normaliser the log of the mass.
"""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from simulate import corpus
from simulate.forward import filter_sequence, hmm_arrays
from theory import filtering, kernels
from theory.hmm import make_hmm

DELIM = 3


def tiny():
    """3 states, 4 tokens (3 = delimiter). Token 2 is emitted only by state 2, which only state 2
    reaches under T and R never does; state 2 never emits token 1. So token 1 then token 2, or the
    delimiter then token 2, has probability exactly 0."""
    T = np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0], [0.2, 0.3, 0.5]])
    B = np.array([[0.6, 0.2, 0.0, 0.2], [0.1, 0.6, 0.0, 0.3], [0.3, 0.0, 0.6, 0.1]])
    R = np.array([[0.8, 0.2, 0.0], [0.4, 0.6, 0.0], [0.4, 0.6, 0.0]])
    p0 = np.array([0.2, 0.3, 0.5])
    return make_hmm(T, B, R, p0, task_start=np.array([[0.4, 0.6, 0.0]]), task_of_state=np.zeros(3, int),
                    delim=DELIM)


def enumerate_joint(hmm, tokens):
    """P(tokens, s_{t+1} = j) for every j ``[d]``, by summing over all hidden paths."""
    d = hmm.T.shape[0]
    out = np.zeros(d)
    for path in itertools.product(range(d), repeat=len(tokens) + 1):
        p = hmm.p0[path[0]]
        for t, o in enumerate(tokens):
            M = hmm.R if o == DELIM else hmm.T
            p *= hmm.B[path[t], o] * M[path[t], path[t + 1]]
        out[path[-1]] += p
    return out


def run_steps(hmm, tokens, mass, xp):
    a, lz = xp.asarray(hmm.p0), xp.zeros((), np.float64)
    total = 0.0
    for o in tokens:
        M = hmm.R if o == DELIM else hmm.T
        a, step_lz = filtering.step(a, xp.zeros((), np.float64), xp.asarray(hmm.B[:, o]), xp.asarray(M), mass=mass, xp=xp)
        total = total + step_lz
        assert not np.isnan(np.asarray(a)).any()
    return np.asarray(a), float(total)


SEQS = [(0,), (1, 0, 1), (0, 3, 1, 0), (2, 2, 3, 0, 1), (1, 3, 3, 0), (2, 1, 1, 0, 1, 1)]


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize("mass", ["predicted", "joint"])
@pytest.mark.parametrize("tokens", SEQS)
def test_step_matches_enumeration(tokens, mass, xp):
    hmm = tiny()
    joint = enumerate_joint(hmm, tokens)
    a, lz = run_steps(hmm, tokens, mass, xp)
    assert joint.sum() > 0
    np.testing.assert_allclose(a, joint / joint.sum(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(lz, np.log(joint.sum()), rtol=1e-13)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize("mass", ["predicted", "joint"])
def test_exact_zero_stays_zero_with_minus_inf(mass, xp):
    hmm = tiny()
    tokens = (0, 3, 2, 1, 3, 0)  # 2 right after a restart is impossible; later tokens (even a restart) cannot revive it
    assert enumerate_joint(hmm, tokens[:3]).sum() == 0.0 < enumerate_joint(hmm, tokens[:2]).sum()
    a, lz = xp.asarray(hmm.p0), xp.zeros((), np.float64)
    for t, o in enumerate(tokens):
        M = hmm.R if o == DELIM else hmm.T
        a, lz = filtering.step(a, lz, xp.asarray(hmm.B[:, o]), xp.asarray(M), mass=mass, xp=xp)
        if t >= 2:
            assert np.all(np.asarray(a) == 0.0) and np.asarray(lz) == -np.inf
    assert np.isfinite(np.asarray(filtering.normalise(xp.asarray([0.5, 0.5]), xp.zeros(()), xp=xp)[1]))


def test_skip_is_the_identity():
    hmm = tiny()
    a = jnp.asarray([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    lz = jnp.asarray([-1.0, -2.0])
    new, nlz = filtering.step(a, lz, jnp.asarray(hmm.B[:, 1]), jnp.asarray(hmm.T), skip=jnp.asarray([True, False]))
    np.testing.assert_array_equal(new[0], a[0])
    assert nlz[0] == -1.0
    ref = enumerate_joint(make_hmm(hmm.T, hmm.B, hmm.R, a[1], hmm.task_start, hmm.task_of_state, DELIM), (1,))
    np.testing.assert_allclose(new[1], ref / ref.sum(), rtol=1e-13)
    np.testing.assert_allclose(nlz[1], -2.0 + np.log(ref.sum()), rtol=1e-13)


def test_bad_mass_is_refused():
    with pytest.raises(ValueError, match="'both'"):
        filtering.step(jnp.ones(3), jnp.zeros(()), jnp.ones(3), jnp.eye(3), mass="both")


def test_callers_agree_with_enumeration():
    """forward.filter_sequence, corpus.token_log_probs and kernels.belief_features on the same HMM."""
    hmm = tiny()
    A = hmm_arrays(hmm, jnp.float64)
    for tokens in SEQS + [(0, 3, 2, 1), (1, 3, 2), (1, 2), (1, 2, 0)]:
        joint = enumerate_joint(hmm, tokens)
        toks = jnp.asarray([tokens], jnp.int32)
        alpha, logz = filter_sequence(A, A.p0[None] / A.p0.sum(), jnp.zeros((1,)), toks, DELIM)
        lp = corpus.token_log_probs(hmm, np.asarray([tokens]))
        assert not np.isnan(np.asarray(alpha)).any() and not np.isnan(lp).any()
        if joint.sum() > 0:
            np.testing.assert_allclose(alpha[0], joint / joint.sum(), rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(logz[0], np.log(joint.sum()), rtol=1e-13)
            np.testing.assert_allclose(lp.sum(), np.log(joint.sum()), rtol=1e-13)
        else:
            assert logz[0] == -np.inf and np.all(alpha == 0) and lp.sum() == -np.inf
        if DELIM not in tokens:
            for xp in (np, jnp):
                b = np.asarray(kernels.belief_features(hmm, np.asarray([tokens]), xp=xp))[0]
                if joint.sum() > 0:
                    np.testing.assert_allclose(b, joint / joint.sum(), rtol=1e-13, atol=1e-15)
                else:
                    assert np.isnan(b).all()
