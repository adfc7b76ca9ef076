"""The restart factorisation (simulate/factorised.py): equal to the general forward and to path
enumeration on random block HMMs, refused where it does not hold, every n from one pass, stable at
n = 10⁴, and the same under the batch sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import tiny_hmm
from icl_kernel.errors import UserError
from simulate.factorised import (FactorisationError, bayes_curve, demo_log_likelihoods, factorised_arrays,
                                 restart_factorisation_applies, sweep_bayes_factorised)
from simulate.forward import bayes_direct, hmm_arrays, prompt_tokens, sweep_bayes
from simulate.runtime import batch_sharding
from theory.hmm import make_hmm
from theory.reference import path_probability_sum, predictive_by_enumeration

LABELS = [1, 2, 3]
FIELDS = ("bayes", "log_evidence", "task_mass", "oracle")
# The references, jitted once per shape (the HMM arrays are arguments, so one compile serves every HMM).
general = jax.jit(sweep_bayes, static_argnames=("grid",))
direct = jax.jit(bayes_direct, static_argnames=("delim",))


def random_block_hmm(seed, sizes, num_tokens=5, emitted_delim=True, p0_mixture=True, permute=True):
    """A random HMM satisfying the restart assumption, with everything else as general as allowed:
    unequal blocks, states of a block not contiguous, non-one-hot starts, p0 not a mixture of the
    starts (GINC-like), state-dependent delimiter weights (emitted delimiter) or a format one."""
    rng = np.random.default_rng(seed)
    K, d = len(sizes), sum(sizes)
    tos = np.repeat(np.arange(K), sizes)
    if permute:
        tos = tos[rng.permutation(d)]
    T = np.zeros((d, d))
    starts = np.zeros((K, d))
    for k in range(K):
        s = np.flatnonzero(tos == k)
        T[np.ix_(s, s)] = rng.dirichlet(np.ones(len(s)), size=len(s))
        starts[k, s] = rng.dirichlet(np.ones(len(s)))
    B = rng.dirichlet(np.ones(num_tokens), size=d)
    p0 = rng.dirichlet(np.ones(K)) @ starts if p0_mixture else rng.dirichlet(np.ones(d))
    return make_hmm(T, B, starts[tos], p0, starts, tos, 0, None if emitted_delim else np.ones(d))


def random_prompts(seed, hmm, P, N, length):
    """Random tokens (every probability is positive in random_block_hmm, so any prompt will do)."""
    rng = np.random.default_rng(seed)
    m = hmm.num_tokens
    return (rng.integers(1, m, (P, N, length)).astype(np.int32), rng.choice(LABELS, (P, N)).astype(np.int32),
            rng.integers(1, m, (P, length)).astype(np.int32), rng.integers(0, hmm.num_tasks, P).astype(np.int32))


def assert_same(got, ref, rtol=1e-12, atol=1e-13):
    for name in FIELDS:
        np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(ref, name)),
                                   rtol=rtol, atol=atol, err_msg=name)


@given(seed=st.integers(0, 2 ** 31 - 1), emitted=st.booleans(), mixture=st.booleans())
def test_factorised_equals_general_forward(seed, emitted, mixture):
    hmm = random_block_hmm(seed, (3, 1, 2), emitted_delim=emitted, p0_mixture=mixture)
    length = 3
    dx, dy, xt, th = random_prompts(seed, hmm, 3, 5, length)
    grid = (0, 1, 2, 3, 4, 5)
    ref = general(hmm_arrays(hmm, jnp.float64), dx, dy, xt, th, jnp.asarray(LABELS), grid=grid)
    F = factorised_arrays(hmm, LABELS, length, jnp.float64)
    assert_same(sweep_bayes_factorised(F, dx, dy, xt, th, grid), ref)
    curve = bayes_curve(F, dx, dy, xt, th)
    np.testing.assert_allclose(np.moveaxis(np.asarray(curve.bayes)[:, list(grid)], 1, 0), np.asarray(ref.bayes),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(curve.posterior).sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("budget,ends", [(None, (2, 2)), (300, (1, 1)), (0, (0, 0))])
def test_every_table_split_equals_general_forward(budget, ends):
    """l = 5 (the default preset's length) with end tables of 2, 1 and 0 tokens a side (then the
    tokens between are steps); l = 3, with (2, 0), is above."""
    hmm = random_block_hmm(7, (3, 1, 2))
    dx, dy, xt, th = random_prompts(7, hmm, 3, 5, 5)
    F = factorised_arrays(hmm, LABELS, 5, jnp.float64, **({} if budget is None else dict(budget=budget)))
    assert F.ends == ends
    grid = (0, 1, 2, 3, 4, 5)
    ref = general(hmm_arrays(hmm, jnp.float64), dx, dy, xt, th, jnp.asarray(LABELS), grid=grid)
    assert_same(sweep_bayes_factorised(F, dx, dy, xt, th, grid), ref)


@pytest.mark.parametrize("budget,ends", [(None, (2, 2)), (100, (1, 1)), (0, (0, 0))])
def test_a_task_that_cannot_produce_a_demonstration(budget, ends):
    """Task 0 never emits token 4, so every demonstration or x_test holding it has ℓ_0 = 0 (log −inf)
    and zero-mass table rows: the factorised numbers still equal the general forward's, with no NaN."""
    hmm = random_block_hmm(5, (2, 2, 1))
    B = np.asarray(hmm.B, float).copy()
    zero = np.asarray(hmm.task_of_state) == 0
    B[zero, 4] = 0.0
    B[zero] /= B[zero].sum(1, keepdims=True)
    hmm = make_hmm(hmm.T, B, hmm.R, hmm.p0, hmm.task_start, hmm.task_of_state, 0, None)
    dx, dy, xt, th = random_prompts(5, hmm, 6, 5, 5)
    dx[:3, 1, 2] = 4  # demonstration 1 of prompts 0-2: impossible under task 0 (a middle/junction token)
    dx[3:, 2, 0] = 4  # demonstration 2 of prompts 3-5: the same in its first token (a zero left-table row)
    dx[:, 3, 4] = 4   # demonstration 3 of every prompt: in its last token (a zero right-table row)
    xt[3, 0] = 4
    F = factorised_arrays(hmm, LABELS, 5, jnp.float64, **({} if budget is None else dict(budget=budget)))
    assert F.ends == ends
    ll = np.asarray(demo_log_likelihoods(F, dx, dy))
    for p, i in [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 2)] + [(p, 3) for p in range(6)]:
        assert np.isneginf(ll[p, i, 0]) and np.all(np.isfinite(ll[p, i, 1:])), (p, i)
    grid = (0, 1, 2, 3, 4, 5)
    ref = general(hmm_arrays(hmm, jnp.float64), dx, dy, xt, th, jnp.asarray(LABELS), grid=grid)
    got = sweep_bayes_factorised(F, dx, dy, xt, th, grid)
    assert np.all(np.isfinite(np.asarray(got.bayes)))
    assert_same(got, ref)


@pytest.mark.parametrize("n,length,mixture", [(1, 1, True), (1, 2, False), (2, 1, False)])
def test_factorised_equals_path_enumeration(n, length, mixture):
    hmm = random_block_hmm(11 + n + length, (2, 1), num_tokens=4, emitted_delim=not mixture, p0_mixture=mixture)
    dx, dy, xt, th = random_prompts(3, hmm, 2, n, length)
    F = factorised_arrays(hmm, LABELS, length, jnp.float64)
    sb = sweep_bayes_factorised(F, dx, dy, xt, th, (n,))
    toks = np.asarray(prompt_tokens(dx, dy, xt, n, 0))
    for p in range(2):
        np.testing.assert_allclose(np.asarray(sb.bayes[0, p]), predictive_by_enumeration(hmm, toks[p].tolist(), LABELS),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(float(sb.log_evidence[0, p]), np.log(path_probability_sum(hmm, toks[p].tolist())),
                                   rtol=1e-12)
        np.testing.assert_allclose(np.asarray(sb.oracle[p]), predictive_by_enumeration(
            hmm, xt[p].tolist(), LABELS, start=hmm.task_start[th[p]]), rtol=1e-12, atol=1e-14)


def test_demo_likelihood_is_the_segment_probability():
    """ℓ_θ(x, y) = P(x y δ | s_θ) (and from p0|θ for the first demonstration), by path enumeration."""
    hmm = random_block_hmm(5, (2, 2), num_tokens=4, p0_mixture=False)
    dx, dy, _, _ = random_prompts(5, hmm, 1, 2, 2)
    F = factorised_arrays(hmm, LABELS, 2, jnp.float64)
    ll = np.asarray(demo_log_likelihoods(F, dx, dy))[0]  # [N, K]
    tos = np.asarray(hmm.task_of_state)
    for i in range(2):
        seg = dx[0, i].tolist() + [int(dy[0, i]), 0]
        for k in range(hmm.num_tasks):
            start = np.where(tos == k, hmm.p0, 0.0) if i == 0 else hmm.task_start[k]
            np.testing.assert_allclose(ll[i, k], np.log(path_probability_sum(hmm, seg, start)), rtol=1e-12)


def _refusals():
    base = tiny_hmm(1, num_tasks=2, num_states=4, num_tokens=5, leak=0.0)
    T, B, R, p0, S, tos = (np.array(a) for a in (base.T, base.B, base.R, base.p0, base.task_start, base.task_of_state))

    def hmm(**kw):
        arrs = dict(T=T, B=B, R=R, p0=p0, task_start=S, task_of_state=tos, delim=0) | kw
        return make_hmm(**arrs)

    R_other = R.copy()
    R_other[1] = np.eye(4)[1]  # state 1 (task 0) restarts to itself, not to task 0's start (state 0)
    T_cross = T.copy()
    T_cross[0] = [0.5, 0.3, 0.2, 0.0]  # state 0 (task 0) moves to state 2 (task 1)
    S_out = S.copy()
    S_out[0] = [0.9, 0.0, 0.1, 0.0]
    B_nolabel = B.copy()
    B_nolabel[2:, 2] = 0.0  # task 1 never emits label 2
    B_nolabel[2:] /= B_nolabel[2:].sum(1, keepdims=True)
    B_nox = B.copy()
    B_nox[2] = [1.0, 0, 0, 0, 0]  # task 1's start state emits only the delimiter: no delimiter-free x
    return [
        ("leak", tiny_hmm(1, num_tasks=2, num_states=4, num_tokens=5, leak=0.1), "restart"),
        ("restart target", hmm(R=R_other), "restart"),
        ("cross-task T", hmm(T=T_cross), "block structure"),
        ("start outside its block", hmm(task_start=S_out, R=S_out[tos]), "other tasks' states"),
        ("label never emitted", hmm(B=B_nolabel), "cannot emit label 2"),
        ("no delimiter-free x", hmm(B=B_nox), "delimiter-free x of length 2"),
    ]


@pytest.mark.parametrize("name,hmm,reason", _refusals(), ids=[r[0] for r in _refusals()])
def test_refuses_where_it_does_not_hold(name, hmm, reason):
    ok, why = restart_factorisation_applies(hmm, LABELS, 2)
    assert not ok and reason in why, why
    with pytest.raises(FactorisationError, match=reason) as err:
        factorised_arrays(hmm, LABELS, 2)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_applies_to_the_presets():
    assert restart_factorisation_applies(tiny_hmm(0, leak=0.0), LABELS, 3) == (True, "")
    assert restart_factorisation_applies(random_block_hmm(0, (3, 2), p0_mixture=False), LABELS, 3) == (True, "")


def test_every_n_curve_equals_each_n_separately():
    hmm = random_block_hmm(3, (3, 1, 2))
    N, l = 5, 3
    dx, dy, xt, th = random_prompts(3, hmm, 3, N, l)
    F = factorised_arrays(hmm, LABELS, l, jnp.float64)
    A = hmm_arrays(hmm, jnp.float64)
    curve = bayes_curve(F, dx, dy, xt, th)
    every = general(A, dx, dy, xt, th, jnp.asarray(LABELS), grid=tuple(range(N + 1)))
    for name in FIELDS[:3]:
        np.testing.assert_allclose(np.moveaxis(np.asarray(getattr(curve, name)), 1, 0),
                                   np.asarray(getattr(every, name)), rtol=1e-12, atol=1e-14, err_msg=name)
    for n in (2, N):  # the n-demonstration prompt on its own, by the flat forward scan
        flat, lz = direct(A, prompt_tokens(dx, dy, xt, n, 0), 0, jnp.asarray(LABELS))
        np.testing.assert_allclose(np.asarray(curve.bayes[:, n]), np.asarray(flat), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(curve.log_evidence[:, n]), np.asarray(lz), rtol=1e-12)
    # and the factorised pass on the truncated prompt
    alone = sweep_bayes_factorised(F, dx[:, :2], dy[:, :2], xt, th, (2,))
    np.testing.assert_allclose(np.asarray(curve.bayes[:, 2]), np.asarray(alone.bayes[0]), rtol=1e-12, atol=1e-14)


def test_ten_thousand_demonstrations_stay_finite():
    hmm = random_block_hmm(4, (2, 2))
    N, l = 10_000, 2
    dx, dy, xt, th = random_prompts(4, hmm, 2, N, l)
    grid = [1, 100, N]
    ref = general(hmm_arrays(hmm, jnp.float64), dx, dy, xt, th, jnp.asarray(LABELS), grid=tuple(grid))
    lz = np.asarray(ref.log_evidence)
    assert lz.min() < -5000  # far below float64's smallest normal number as a probability (e^-708)
    for dt, rtol, atol in ((jnp.float64, 1e-10, 1e-12), (jnp.float32, 1e-5, 1e-4)):
        curve = bayes_curve(factorised_arrays(hmm, LABELS, l, dt), dx, dy, xt, th)
        for name in ("bayes", "log_evidence", "posterior", "task_mass"):
            assert np.all(np.isfinite(np.asarray(getattr(curve, name)))), (dt, name)
        np.testing.assert_allclose(np.asarray(curve.log_evidence)[:, grid].T, lz, rtol=rtol)
        np.testing.assert_allclose(np.moveaxis(np.asarray(curve.bayes)[:, grid], 1, 0), np.asarray(ref.bayes),
                                   rtol=rtol, atol=atol)


def test_sharded_batch_gives_the_same_numbers():
    hmm = random_block_hmm(9, (3, 1, 2), p0_mixture=False)
    sharding, ndev = batch_sharding()
    assert ndev == 2  # tests/sim/conftest.py
    dx, dy, xt, th = random_prompts(9, hmm, 4, 5, 3)
    F = factorised_arrays(hmm, LABELS, 3, jnp.float64)
    put = lambda a: jax.device_put(a, sharding)  # noqa: E731
    one, two = bayes_curve(F, dx, dy, xt, th), bayes_curve(F, put(dx), put(dy), put(xt), put(th))
    assert two.bayes.sharding.spec[0] == "batch"  # the prompt axis stayed split over the devices
    for name in ("bayes", "log_evidence", "posterior", "task_mass", "oracle"):
        np.testing.assert_allclose(np.asarray(getattr(two, name)), np.asarray(getattr(one, name)),
                                   rtol=1e-14, atol=1e-15, err_msg=name)


def test_padding_and_foreign_labels_give_nan_not_numbers():
    """The factorised pass has no padding token: a -1 in x, or a y outside the label set, is NaN."""
    hmm = random_block_hmm(2, (2, 2))
    dx, dy, xt, th = random_prompts(2, hmm, 2, 3, 3)
    dx[0, 1, 2] = -1
    dy[1, 2] = 4  # a token, but not one of LABELS
    ll = np.array(demo_log_likelihoods(factorised_arrays(hmm, LABELS, 3, jnp.float64), dx, dy))
    assert np.isnan(ll[0, 1]).all() and np.isnan(ll[1, 2]).all()
    ll[0, 1] = ll[1, 2] = 0.0
    assert np.all(np.isfinite(ll))
