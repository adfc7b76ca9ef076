"""GINC's exact Bayes and Oracle (simulate/ginc.py) against independent references: enumeration of
hidden paths on a tiny GINC, a dense numpy forward on GINC's published parameters, dynamax's
hmm_filter, and GINC's own labels of its 1000 reference prompts."""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simulate import ginc as G

REF = "/work/shared/data/ginc/ginc_reference.npz"
need_ref = pytest.mark.skipif(not os.path.isfile(REF), reason="GINC reference data not present")


@pytest.fixture(scope="module")
def ref():
    z = np.load(REF)
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def params():
    return G.load_reference(REF)


# ------------------------------------------------------------------ references computed here


def dense_forward(start, T, E, seq):
    """Plain forward on dense matrices: (log P(seq), P(next | seq) [A]) with exact zeros kept."""
    a = start * E[:, seq[0]]
    ll = 0.0
    for t in seq[1:]:
        s = a.sum()
        if s == 0:
            return -np.inf, np.zeros(E.shape[1])
        ll += np.log(s)
        a = (a / s @ T) * E[:, t]
    s = a.sum()
    if s == 0:
        return -np.inf, np.zeros(E.shape[1])
    return ll + np.log(s), (a / s) @ T @ E


def enumerate_paths(start, T, E, seq):
    """Sum over every hidden path: (P(seq), P(seq, next = y) [A])."""
    d = T.shape[0]
    tot, nxt = 0.0, np.zeros(E.shape[1])
    for path in itertools.product(range(d), repeat=len(seq)):
        p = start[path[0]] * E[path[0], seq[0]]
        for i in range(1, len(seq)):
            p *= T[path[i - 1], path[i]] * E[path[i], seq[i]]
        if p:
            tot += p
            nxt += p * (T[path[-1]] @ E)
    return tot, nxt


def tiny_params(seed):
    """A tiny GINC (2 values x 3 slots, 4 symbols, 2 concepts) whose slot matrices have exact zeros."""
    rng = np.random.default_rng(seed)
    mem = rng.integers(1, 4, size=(2, 3)).astype(np.int32)
    mem[:, 0] = 0
    slots = []
    for _ in range(2):
        P1, P2 = np.eye(3)[rng.permutation(3)], np.eye(3)[rng.permutation(3)]
        slots.append(0.7 * P1 + 0.3 * P2)
    vt = 0.8 * np.eye(2) + 0.2 * np.eye(2)[rng.permutation(2)]
    start = rng.dirichlet(np.ones(6), size=2)
    return G.GincParams(mem, np.stack(slots), np.stack([vt, vt]), start, 4)


# ------------------------------------------------------------------ parameters


@need_ref
def test_reference_params_are_kron_and_memory_one_hot(params, ref):
    idp, oodp = params
    for law, p in (("id", idp), ("ood", oodp)):
        np.testing.assert_allclose(G.transmat(p), ref[f"{law}_transmat"], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(np.broadcast_to(G.emissions(p), ref[f"{law}_emissionprob"].shape),
                                      ref[f"{law}_emissionprob"])
        np.testing.assert_array_equal(p.startprob, ref[f"{law}_startprob"])
    np.testing.assert_array_equal(idp.memory, ref["all_values"])
    np.testing.assert_array_equal(idp.slot_T, ref["id_slot_T"])
    # GINC shares one value matrix across all concepts; the OOD one comes from factoring the transmat
    np.testing.assert_allclose(oodp.value_T, np.broadcast_to(ref["id_value_T"][0], oodp.value_T.shape), atol=1e-14)


def test_load_reference_refuses_bad_files(tmp_path):
    with pytest.raises(G.GincError, match="does not exist"):
        G.load_reference(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(G.GincError, match="not a readable"):
        G.load_reference(bad)
    part = tmp_path / "part.npz"
    np.savez(part, all_values=np.zeros((2, 2), int))
    with pytest.raises(G.GincError, match="lacks the arrays"):
        G.load_reference(part)


@need_ref
def test_load_reference_refuses_non_kron_transmat(tmp_path, ref):
    z = dict(ref)
    t = z["ood_transmat"].copy()
    t[0, 0, :2] = t[0, 0, 1::-1]  # swap two entries of one row: no longer a Kronecker product
    z["ood_transmat"] = t
    p = tmp_path / "t.npz"
    np.savez(p, **z)
    with pytest.raises(G.GincError, match="not a Kronecker product"):
        G.load_reference(p)


def test_draw_params_follows_gincs_construction():
    idp, oodp = G.draw_params(3, vocab=30, n_values=6, n_slots=7, n_id=3, n_ood=2, value_identity_coeff=0.9)
    assert idp.num_concepts == 3 and oodp.num_concepts == 2 and idp.num_symbols == 30
    mem = np.asarray(idp.memory)
    assert mem.shape == (6, 7) and np.all(mem[:, 0] == 0) and mem[:, 1:].min() >= 1 and mem.max() <= 29
    for p in (idp, oodp):
        for M in (p.slot_T, p.value_T):
            np.testing.assert_allclose(M.sum(-1), 1, atol=1e-12)  # doubly stochastic
            np.testing.assert_allclose(M.sum(-2), 1, atol=1e-12)
        np.testing.assert_allclose(p.startprob.sum(-1), 1, atol=1e-12)
        assert np.all(np.diagonal(p.value_T, axis1=-2, axis2=-1) >= 0.9 - 1e-12)
    np.testing.assert_array_equal(oodp.value_T[0], idp.value_T[0])  # one value matrix for all concepts
    assert not np.allclose(idp.slot_T[0], idp.slot_T[1])  # a fresh slot matrix per concept
    again = G.draw_params(3, vocab=30, n_values=6, n_slots=7, n_id=3, n_ood=2)
    np.testing.assert_array_equal(again[0].slot_T, idp.slot_T)
    with pytest.raises(G.GincError, match="transition_temp"):
        G.draw_params(0, transition_temp=0)
    with pytest.raises(G.GincError, match="n_slots"):
        G.draw_params(0, n_slots=1)


# ------------------------------------------------------------------ Bayes vs references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayes_equals_path_enumeration_on_tiny_ginc(seed):
    p = tiny_params(seed)
    T, E = G.transmat(p), G.emissions(p)
    rng = np.random.default_rng(100 + seed)
    lengths = rng.integers(1, 6, size=24)
    toks = rng.integers(0, 4, size=(24, 5))
    b = G.bayes_flat(p, toks, lengths)
    zeros = 0
    for i in range(24):
        seq = toks[i, :lengths[i]].tolist()
        lik, nxt = zip(*[enumerate_paths(p.startprob[c], T[c], E, seq) for c in range(2)])
        lik, nxt = np.array(lik), np.array(nxt)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(np.asarray(b.log_lik[i]), np.log(lik), rtol=1e-12)
        per = np.where(lik[:, None] > 0, nxt / np.where(lik > 0, lik, 1)[:, None], 0)
        np.testing.assert_allclose(np.asarray(b.per_concept[i]), per, rtol=1e-12, atol=1e-15)
        assert bool(b.zero[i]) == (lik.sum() == 0)
        zeros += lik.sum() == 0
        if lik.sum() > 0:
            np.testing.assert_allclose(np.asarray(b.bayes[i]), nxt.sum(0) / lik.sum(), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(np.asarray(b.posterior[i]), lik / lik.sum(), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(float(b.log_evidence[i]), np.log(lik.mean()), rtol=1e-12)
    assert 0 < zeros < 24  # both cases exercised
    for leaf in b:
        assert not np.any(np.isnan(np.asarray(leaf)))


@need_ref
def test_bayes_equals_dense_forward_on_reference_prompts(params, ref):
    idp, _ = params
    b = G.bayes_flat(idp, ref["prompt_tok"], ref["prompt_len"])
    T, E, sp = ref["id_transmat"], ref["id_emissionprob"][0], ref["id_startprob"]
    for i in range(0, 1000, 7):
        seq = ref["prompt_tok"][i, :ref["prompt_len"][i]].astype(int)
        ll, pred = zip(*[dense_forward(sp[c], T[c], E, seq) for c in range(5)])
        np.testing.assert_allclose(np.asarray(b.log_lik[i]), np.array(ll), rtol=1e-11)
        np.testing.assert_allclose(np.asarray(b.per_concept[i]), np.array(pred), rtol=1e-10, atol=1e-13)
        assert bool(b.zero[i]) == np.all(np.isneginf(ll))
    zero = np.asarray(b.zero)
    assert zero.any() and not zero.all()
    for leaf in b:
        assert not np.any(np.isnan(np.asarray(leaf)))
    ok = ~zero
    np.testing.assert_allclose(np.asarray(b.bayes)[ok].sum(-1), 1, atol=1e-12)
    np.testing.assert_allclose(np.asarray(b.posterior)[ok].sum(-1), 1, atol=1e-12)
    assert np.all(np.asarray(b.bayes)[zero] == 0) and np.all(np.isneginf(np.asarray(b.log_evidence)[zero]))


def smallest_positive_prediction(start, T, E, seq):
    """The smallest positive entry of the predicted-and-masked message u_t (dynamax's ``_normalize``
    raises entries of u below 1e-15 to 1e-15, so it is exact only where this is >= 1e-15)."""
    a, low = start * E[:, seq[0]], np.inf
    for t in list(seq[1:]) + [None]:
        if a.sum() == 0:
            return 0.0
        low = min(low, a[a > 0].min())
        if t is not None:
            a = (a / a.sum() @ T) * E[:, t]
    return low


@need_ref
def test_bayes_equals_dynamax_hmm_filter(params, ref):
    from dynamax.hidden_markov_model.inference import hmm_filter

    idp, _ = params
    b = G.bayes_flat(idp, ref["prompt_tok"], ref["prompt_len"])
    T, E, sp = ref["id_transmat"], ref["id_emissionprob"][0], ref["id_startprob"]
    with np.errstate(divide="ignore"):
        logE = jnp.log(jnp.asarray(E))
    nz = ~np.asarray(b.zero)
    compared = 0
    for n in np.unique(ref["prompt_n"]):
        for i in np.flatnonzero(nz & (ref["prompt_n"] == n))[:2]:
            seq = ref["prompt_tok"][i, :ref["prompt_len"][i]].astype(int)
            for c in np.flatnonzero(np.isfinite(np.asarray(b.log_lik[i]))):  # dynamax is undefined at P = 0
                if smallest_positive_prediction(sp[c], T[c], E, seq) < 1e-15:
                    continue  # dynamax clamps there (its _normalize eps); the dense test covers these
                post = hmm_filter(jnp.asarray(sp[c]), jnp.asarray(T[c]), logE[:, seq].T)
                np.testing.assert_allclose(float(b.log_lik[i, c]), float(post.marginal_loglik), rtol=1e-10)
                np.testing.assert_allclose(np.asarray(b.per_concept[i, c]),
                                           np.asarray(post.filtered_probs[-1]) @ T[c] @ E, atol=1e-12)
                compared += 1
    assert compared >= 10


def test_nested_grid_equals_flat_prompts():
    idp, _ = G.draw_params(5, vocab=20, n_values=4, n_slots=5, n_id=3, n_ood=1, transition_temp=0.2)
    grid = (0, 1, 2, 4, 7)
    pr = G.sample_prompts(jax.random.PRNGKey(5), idp, 4, max(grid), 40)
    nb = G.bayes_nested(idp, pr.demos_x, pr.demos_y, pr.x_test, grid)
    assert nb.bayes.shape == (len(grid), 40, 20)
    for g, n in enumerate(grid):
        toks, L = G.prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n)
        fb = G.bayes_flat(idp, toks, np.full(40, L))
        for name in G.GincBayes._fields:
            np.testing.assert_allclose(np.asarray(getattr(nb, name)[g]), np.asarray(getattr(fb, name)),
                                       rtol=1e-12, atol=1e-14, err_msg=f"{name} at n={n}")
    assert np.asarray(nb.zero).any() and not np.asarray(nb.zero).all()


@need_ref
def test_float32_option_stays_accurate(params, ref):
    idp, _ = params
    b64 = G.bayes_flat(idp, ref["prompt_tok"], ref["prompt_len"])
    b32 = G.bayes_flat(G.tables(idp, jnp.float32), ref["prompt_tok"], ref["prompt_len"])
    np.testing.assert_array_equal(np.asarray(b32.zero), np.asarray(b64.zero))
    np.testing.assert_allclose(np.asarray(b32.bayes), np.asarray(b64.bayes), atol=1e-4)
    np.testing.assert_allclose(np.asarray(b32.posterior), np.asarray(b64.posterior), atol=1e-4)
    ok = ~np.asarray(b64.zero)
    np.testing.assert_allclose(np.asarray(b32.log_evidence)[ok], np.asarray(b64.log_evidence)[ok], rtol=1e-4)


# ------------------------------------------------------------------ the Oracle (GINC's score)


@need_ref
def test_oracle_reproduces_gincs_reference_labels(params, ref):
    idp, _ = params
    start = G.start_id(idp, ref["prompt_slot_pattern"][:, 0])
    o = G.oracle(idp, ref["prompt_x"], ref["prompt_hmm"], start)
    np.testing.assert_array_equal(np.asarray(o.label), ref["prompt_label"])
    assert np.asarray(o.defined).all()
    T, E = ref["id_transmat"], ref["id_emissionprob"][0]
    for i in range(0, 1000, 11):
        _, pred = dense_forward(start[i], T[ref["prompt_hmm"][i]], E, ref["prompt_x"][i])
        np.testing.assert_allclose(np.asarray(o.probs[i]), pred, rtol=1e-10, atol=1e-14)


@need_ref
def test_ood_oracle_uniform_start_and_nan_label_rule(params, ref):
    _, oodp = params
    pr = G.sample_prompts(jax.random.PRNGKey(7), oodp, 3, 0, 600, law="ood")
    T, E = ref["ood_transmat"], ref["ood_emissionprob"][0]
    start = np.full(100, 0.01)
    defined = np.asarray(pr.oracle_defined)
    assert defined.any() and not defined.all()  # GINC's OOD x_test can be impossible under its concept
    for i in range(600):
        ll, pred = dense_forward(start, T[int(pr.concept[i])], E, np.asarray(pr.x_test[i]))
        assert defined[i] == np.isfinite(ll)
        np.testing.assert_allclose(np.asarray(pr.oracle[i]), pred, rtol=1e-10, atol=1e-14)
        # GINC: score returns NaNs where x_test is impossible, and np.argmax of NaNs is 0
        want = int(np.argmax(pred)) if np.isfinite(ll) else int(np.argmax(np.full(50, np.nan)))
        assert int(pr.label[i]) == want


def test_bad_inputs_get_one_line_errors():
    idp, _ = G.draw_params(1, vocab=10, n_values=3, n_slots=3, n_id=2, n_ood=1)
    with pytest.raises(G.GincError, match="symbol 10"):
        G.bayes_flat(idp, np.array([[1, 10]]), np.array([2]))
    with pytest.raises(G.GincError, match="lengths"):
        G.bayes_flat(idp, np.array([[1, 2]]), np.array([0]))
    with pytest.raises(G.GincError, match="padding"):
        G.bayes_flat(idp, np.array([[1, -1]]), np.array([2]))
    with pytest.raises(G.GincError, match="grid"):
        G.bayes_nested(idp, np.zeros((1, 2, 2), int), np.zeros((1, 2), int), np.zeros((1, 2), int), (3,))
    with pytest.raises(G.GincError, match="law"):
        G.sample_prompts(jax.random.PRNGKey(0), idp, 3, 1, 2, law="matched")
    with pytest.raises(G.GincError, match="k = 1"):
        G.sample_prompts(jax.random.PRNGKey(0), idp, 1, 1, 2)
    with pytest.raises(G.GincError, match="concept"):
        G.oracle(idp, np.zeros((1, 2), int), np.array([5]), G.start_ood(idp, 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_compact_filter_equals_padded_filter(seed):
    """The compact two-lane filter (used when '/' is emitted exactly by the slot-0 states) equals the
    padded K x K filter on random symbol sequences with runs of '/', padding, and nested GINC prompts."""
    idp, _ = G.draw_params(seed, vocab=12, n_values=4, n_slots=5, n_id=3, n_ood=1, transition_temp=0.3)
    tab = G.tables(idp)
    assert tab.compact is not None
    pad = tab._replace(compact=None)
    rng = np.random.default_rng(seed)
    toks = np.where(rng.random((60, 12)) < 0.3, 0, rng.integers(1, 12, size=(60, 12)))  # many '/' runs
    lengths = rng.integers(1, 13, size=60)
    a, b = G.bayes_flat(tab, toks, lengths), G.bayes_flat(pad, toks, lengths)
    assert np.asarray(b.zero).any() and not np.asarray(b.zero).all()
    for name in G.GincBayes._fields:
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), rtol=1e-12,
                                   atol=1e-14, err_msg=name)
    pr = G.sample_prompts(jax.random.PRNGKey(seed), idp, 4, 6, 50)
    a = G.bayes_nested(tab, pr.demos_x, pr.demos_y, pr.x_test, (0, 1, 3, 6))
    b = G.bayes_nested(pad, pr.demos_x, pr.demos_y, pr.x_test, (0, 1, 3, 6))
    for name in G.GincBayes._fields:
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), rtol=1e-12,
                                   atol=1e-14, err_msg=name)


def test_compact_tables_fall_back_when_delimiter_is_not_slot_zero():
    p = tiny_params(0)
    mem = np.asarray(p.memory).copy()
    mem[1, 2] = 0  # '/' also emitted outside slot 0: the compact filter does not apply
    q = p._replace(memory=mem)
    assert G.tables(q).compact is None
    T, E = G.transmat(q), G.emissions(q)
    seq = [0, 0, 1, 0]
    b = G.bayes_flat(q, np.array([seq]), np.array([4]))
    lik = np.array([enumerate_paths(q.startprob[c], T[c], E, seq)[0] for c in range(2)])
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(np.asarray(b.log_lik[0]), np.log(lik), rtol=1e-12)
