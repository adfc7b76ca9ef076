"""The exact Bayesian predictive: forward algorithm vs enumeration, one-pass sweep vs separate prompts,
dynamax as an independent reference, masking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_hmm
from simulate.forward import bayes_direct, hmm_arrays, prompt_tokens, sweep_bayes
from simulate.sampling import sample_prompts
from theory.reference import path_probability_sum, predictive_by_enumeration

LABELS = [1, 2, 3]


@pytest.mark.parametrize("n,l,seed", [(1, 1, 0), (2, 1, 1), (1, 2, 2)])
def test_forward_matches_path_enumeration(n, l, seed):
    hmm = tiny_hmm(seed)
    pr = sample_prompts(jax.random.PRNGKey(seed), hmm, LABELS, 3, n, l)
    A = hmm_arrays(hmm, jnp.float64)
    sb = sweep_bayes(A, pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(LABELS), (n,))
    toks = np.asarray(prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n, 0))
    for p in range(3):
        ref = predictive_by_enumeration(hmm, toks[p].tolist(), LABELS)
        np.testing.assert_allclose(np.asarray(sb.bayes[0, p]), ref, rtol=1e-12, atol=1e-14)
        logp = np.log(path_probability_sum(hmm, toks[p].tolist()))
        np.testing.assert_allclose(float(sb.log_evidence[0, p]), logp, rtol=1e-12)
        # Oracle: the same enumeration from the test task's start distribution.
        ref_o = predictive_by_enumeration(hmm, pr.x_test[p].tolist(), LABELS, start=hmm.task_start[pr.task[p]])
        np.testing.assert_allclose(np.asarray(sb.oracle[p]), ref_o, rtol=1e-12, atol=1e-14)


def test_one_pass_sweep_equals_separate_prompts():
    hmm = tiny_hmm(3, num_tasks=3, num_states=9, num_tokens=8)
    grid = (1, 2, 3, 5, 8)
    pr = sample_prompts(jax.random.PRNGKey(3), hmm, LABELS, 16, max(grid), 3)
    A = hmm_arrays(hmm, jnp.float64)
    sb = sweep_bayes(A, pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(LABELS), grid)
    for g, n in enumerate(grid):
        b, lz = bayes_direct(A, prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n, 0), 0, jnp.asarray(LABELS))
        np.testing.assert_allclose(np.asarray(sb.bayes[g]), np.asarray(b), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.asarray(sb.log_evidence[g]), np.asarray(lz), rtol=1e-12)


def test_float32_close_to_float64():
    hmm = tiny_hmm(4, num_tasks=4, num_states=20, num_tokens=30, emit_conc=0.3)
    grid = (1, 4, 16, 64)
    pr = sample_prompts(jax.random.PRNGKey(4), hmm, LABELS, 32, 64, 5)
    out = {}
    for dt in (jnp.float32, jnp.float64):
        A = hmm_arrays(hmm, dt)
        out[dt] = sweep_bayes(A, pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(LABELS), grid)
    np.testing.assert_allclose(np.asarray(out[jnp.float32].bayes), np.asarray(out[jnp.float64].bayes), atol=2e-5)
    # Accumulated log normalisers: no underflow after 64 * 7 tokens, relative error of float32 sums.
    lz64 = np.asarray(out[jnp.float64].log_evidence)
    assert np.all(np.isfinite(lz64)) and lz64.min() < -200
    np.testing.assert_allclose(np.asarray(out[jnp.float32].log_evidence), lz64, rtol=1e-4)


def test_padding_is_the_identity_step():
    """Prompts whose inputs are shorter (padded with -1) batch with longer ones and give the
    same numbers as the unpadded short prompt on its own."""
    hmm = tiny_hmm(5, num_tasks=2, num_states=6, num_tokens=7)
    A = hmm_arrays(hmm, jnp.float64)
    short = sample_prompts(jax.random.PRNGKey(5), hmm, LABELS, 4, 6, 2)
    long = sample_prompts(jax.random.PRNGKey(6), hmm, LABELS, 4, 6, 4)
    pad = lambda x: np.concatenate([x, -np.ones(x.shape[:-1] + (2,), np.int32)], axis=-1)
    dx = np.concatenate([pad(short.demos_x), long.demos_x])
    xt = np.concatenate([pad(short.x_test), long.x_test])
    dy = np.concatenate([short.demos_y, long.demos_y])
    task = np.concatenate([short.task, long.task])
    grid = (1, 3, 6)
    both = sweep_bayes(A, dx, dy, xt, task, jnp.asarray(LABELS), grid)
    alone = sweep_bayes(A, short.demos_x, short.demos_y, short.x_test, short.task, jnp.asarray(LABELS), grid)
    np.testing.assert_allclose(np.asarray(both.bayes[:, :4]), np.asarray(alone.bayes), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(both.log_evidence[:, :4]), np.asarray(alone.log_evidence), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(both.oracle[:4]), np.asarray(alone.oracle), rtol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_dynamax_reference(seed):
    """dynamax's hmm_filter (time-varying transitions: R after the delimiter) as an independent reference."""
    inference = pytest.importorskip("dynamax.hidden_markov_model.inference")
    hmm = tiny_hmm(seed, num_tasks=3, num_states=12, num_tokens=10, emit_conc=0.5)
    l, grid = 3, (1, 2, 4, 8)
    pr = sample_prompts(jax.random.PRNGKey(10 + seed), hmm, LABELS, 8, max(grid), l)
    A = hmm_arrays(hmm, jnp.float64)
    sb = sweep_bayes(A, pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(LABELS), grid)
    T, R, B = (jnp.asarray(a) for a in (hmm.T, hmm.R, hmm.B))
    logB = jnp.log(jnp.concatenate([jnp.asarray(hmm.delim_weight)[:, None], B[:, 1:]], axis=1))  # token 0 = δ
    for g, n in enumerate(grid):
        toks = prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n, 0)
        is_d = toks[0] == 0  # the delimiter positions are the same in every prompt

        def one(tk):
            post = inference.hmm_filter(jnp.asarray(hmm.p0), None, logB[:, tk].T,
                                        transition_fn=lambda t: jnp.where(is_d[t], R, T))
            nxt = post.filtered_probs[-1] @ T
            s = nxt @ B[:, jnp.asarray(LABELS)]
            return s / s.sum(), post.marginal_loglik

        ref, ll = jax.vmap(one)(toks)
        np.testing.assert_allclose(np.asarray(sb.bayes[g]), np.asarray(ref), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.asarray(sb.log_evidence[g]), np.asarray(ll), rtol=1e-10)


def test_posterior_concentrates_on_true_task():
    hmm = tiny_hmm(7, num_tasks=4, num_states=16, num_tokens=12, emit_conc=0.3, leak=0.0)
    grid = (1, 4, 16, 64)
    pr = sample_prompts(jax.random.PRNGKey(7), hmm, LABELS, 64, 64, 3)
    sb = sweep_bayes(hmm_arrays(hmm, jnp.float64), pr.demos_x, pr.demos_y, pr.x_test, pr.task, jnp.asarray(LABELS), grid)
    mass = np.asarray(sb.task_mass).mean(1)
    assert np.all(np.diff(mass) > -1e-3) and mass[-1] > 0.99 and mass[0] < mass[-1]
    l1 = np.abs(np.asarray(sb.bayes) - np.asarray(sb.oracle)[None]).sum(-1).mean(1)
    assert l1[-1] < 0.05 * l1[0]
