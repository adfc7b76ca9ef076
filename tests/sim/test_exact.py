"""Exact-rational references (theory/exact.py) on tiny HMMs drawn from integer weights.

Exact identities are checked with Rational equality (residual exactly 0); the float code (JAX
forward, block Gram) is checked against the exact values to 1e-12 relative.
"""
import jax.numpy as jnp
import numpy as np
import sympy as sp
from hypothesis import assume, example, given, strategies as st

from simulate.forward import bayes_direct, hmm_arrays
from theory import exact as ex
from theory import kernels as tk

DELIM = 0


@st.composite
def models(draw):
    """(float HMM, RationalHMM): K ∈ {1, 2} tasks of 1–2 states each (in any order), m ∈ {3, 4} tokens."""
    K = draw(st.integers(1, 2))
    sizes = [draw(st.integers(1, 2)) for _ in range(K)]
    m = draw(st.integers(3, 4))
    tos = np.array(draw(st.permutations(np.repeat(np.arange(K), sizes).tolist())))
    d = tos.size
    T_w = np.array(draw(st.lists(st.integers(0, 3), min_size=d * d, max_size=d * d))).reshape(d, d)
    T_w = np.where(tos[:, None] == tos[None, :], T_w, 0)
    T_w[np.flatnonzero(T_w.sum(1) == 0), np.flatnonzero(T_w.sum(1) == 0)] = 1  # empty row: stay put
    B_w = np.array(draw(st.lists(st.sampled_from([0, 1, 1, 2, 3]), min_size=d * m, max_size=d * m))).reshape(d, m)
    B_w[B_w.sum(1) == 0, 1] = 1
    starts = [draw(st.sampled_from(np.flatnonzero(tos == k).tolist())) for k in range(K)]
    p0_w = draw(st.lists(st.integers(1, 3), min_size=K, max_size=K))
    return ex.hmm_from_integer_weights(T_w, B_w, tos, start_states=starts, p0_w=p0_w, delim=DELIM)


def label_sets(m):
    return st.lists(st.integers(1, m - 1), min_size=1, max_size=m - 1, unique=True)


@st.composite
def prompt_cases(draw):
    """(hmm, rh, tokens with at least one delimiter, labels)."""
    hmm, rh = draw(models())
    m = rh.num_tokens
    toks = draw(st.lists(st.integers(0, m - 1), min_size=1, max_size=6))
    toks.insert(draw(st.integers(0, len(toks))), DELIM)
    return hmm, rh, toks, draw(label_sets(m))


@st.composite
def kernel_cases(draw):
    """(hmm, rh, l, x_test, task, labels)."""
    hmm, rh = draw(models())
    m = rh.num_tokens
    l = draw(st.integers(1, 3))
    x_test = draw(st.lists(st.integers(1, m - 1), min_size=l, max_size=l))
    task = draw(st.integers(0, hmm.num_tasks - 1))
    return hmm, rh, l, x_test, task, draw(label_sets(m))


# Two interleaved 2-state tasks, 4 tokens: block-restricted basis with a non-trivial order, and a
# singular Gram (rank 7 of 8 at l = 2).
FIXED = ex.hmm_from_integer_weights(
    T_w=[[1, 0, 2, 0], [0, 3, 0, 1], [1, 0, 1, 0], [0, 2, 0, 2]],
    B_w=[[1, 2, 1, 3], [2, 1, 3, 1], [1, 1, 2, 1], [3, 2, 1, 2]],
    task_of_state=[0, 1, 0, 1], start_states=[2, 1], p0_w=[1, 2])
FIXED_PROMPT = (*FIXED, [1, 3, 0, 2, 2, 0, 3], [1, 2])
FIXED_KERNEL = (*FIXED, 2, [1, 3], 1, [1, 3])


def _predictive_or_skip(f, *args, **kw):
    try:
        return f(*args, **kw)
    except ZeroDivisionError:
        assume(False)


def test_fixed_example_is_block_structured_and_singular():
    hmm, rh = FIXED
    b = tk.block_structure(hmm)
    assert (b.K, b.b) == (2, 2) and b.order.tolist() == [0, 2, 1, 3]
    G = ex.gram_exact(rh, 2)
    assert G.rank() == 7 < len(tk.restricted_to_full(b, 4)) == 8


def test_rational_hmm_round_trip():
    hmm, rh = FIXED
    assert ex.rational_hmm(hmm, max_denominator=100) == rh  # 1/3, 2/7, ... recovered exactly
    raw = ex.rational_hmm(hmm)  # the exact binary fractions stored in float64
    for name in ("T", "B", "R", "delim_weight", "p0", "task_start"):
        np.testing.assert_array_equal(np.array(getattr(raw, name).tolist(), float).reshape(np.shape(getattr(hmm, name))),
                                      np.asarray(getattr(hmm, name)))
    assert raw.T != rh.T  # 1/3 is not a binary fraction


@given(prompt_cases())
@example(FIXED_PROMPT)
def test_forward_exact_equals_path_enumeration(case):
    _, rh, toks, labels = case
    f = _predictive_or_skip(ex.forward_exact, rh, toks, labels)
    assert f == ex.predictive_by_paths_exact(rh, toks, labels)
    assert sum(f) == 1


@given(prompt_cases())
@example(FIXED_PROMPT)
def test_jax_forward_equals_exact(case):
    hmm, rh, toks, labels = case
    f = _predictive_or_skip(ex.forward_exact, rh, toks, labels)
    probs, logz = bayes_direct(hmm_arrays(hmm, jnp.float64), jnp.asarray([toks], jnp.int32), DELIM,
                               jnp.asarray(labels, jnp.int32))
    np.testing.assert_allclose(np.asarray(probs[0]), np.array(f.tolist(), float)[:, 0], rtol=1e-12, atol=0)
    ev = ex.evidence_exact(rh, toks)
    np.testing.assert_allclose(float(logz[0]), float(sp.log(ev).evalf(30)), rtol=1e-12)


@given(models(), st.integers(1, 3))
@example(FIXED, 2)
def test_block_gram_equals_exact(model, l):
    hmm, rh = model
    blocks = tk.block_structure(hmm)
    full = tk.restricted_to_full(blocks, hmm.num_states)
    Ge = np.array(ex.gram_exact(rh, l).tolist(), float)  # each entry correctly rounded
    np.testing.assert_allclose(tk.gram_matrix(hmm, l, blocks), Ge[np.ix_(full, full)], rtol=1e-12, atol=0)
    off = np.setdiff1d(np.arange(Ge.shape[0]), full)
    assert not np.any(Ge[off])


@given(kernel_cases())
@example(FIXED_KERNEL)
def test_kernel_identity_is_exact(case):
    _, rh, l, x_test, task, labels = case
    res = _predictive_or_skip(ex.kernel_identity_residual, rh, l, x_test, task, labels)
    assert res == sp.zeros(len(labels), 1)
    # Its consequence: Gram-kernel regression converges to the Oracle P(y | x_test, θ, Y).
    oracle = _predictive_or_skip(ex.forward_exact, rh, x_test, labels, start=rh.task_start[task, :])
    assert ex.gram_kernel_limit_exact(rh, l, x_test, task, labels) == oracle


def test_kernel_identity_fails_with_a_weighted_sigma():
    """Negative control: with Σ_{p0} = Σ_x P(x | p0) φφᵀ (or Σ_θ) in place of G_l the identity breaks."""
    _, rh, l, x_test, task, labels = FIXED_KERNEL
    assert ex.kernel_identity_residual(rh, l, x_test, task, labels) == sp.zeros(2, 1)
    for start in (rh.p0, rh.task_start[task, :]):
        res = ex.kernel_identity_residual(rh, l, x_test, task, labels, weight_start=start)
        assert all(r != 0 for r in res), res
