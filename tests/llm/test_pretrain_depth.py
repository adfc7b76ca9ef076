"""scripts/pretrain_depth.py: the per-position metrics, positions, bins and statistics on planted
arrays; the full-vocabulary Bayes predictive against simulate.corpus.token_log_probs; the model's
log-predictive against the training loss."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pretrain_depth.py"


@pytest.fixture(scope="module")
def pd():
    spec = importlib.util.spec_from_file_location("pretrain_depth", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _random_log_probs(rng, shape):
    a = rng.normal(size=shape)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def test_positions_and_bins(pd):
    # x x x y δ | x x x y δ | x x x: labels at 3 and 8, the query at 13 (l = 3, n = 2)
    toks = ["x", "x", "x", "y", "d", "x", "x", "x", "y", "d", "x", "x", "x"]
    assert pd.label_depths(2, 3).tolist() == [i for i, t in enumerate(toks) if t == "y"]
    assert pd.query_depth(2, 3) == len(toks)
    assert pd.depth_edges(128) == [0, 8, 32, 64, 128]
    assert pd.depth_edges(300) == [0, 8, 32, 64, 128, 256, 300]
    assert pd.depth_edges(5) == [0, 5]
    assert pd.bin_names([0, 8, 32]) == ["0–7", "8–31"]
    vals = np.arange(12, dtype=float).reshape(2, 6)          # 2 items, columns at depths below
    means, held = pd.bin_means(vals, np.array([3, 8, 13, 23, 43, 83]), [0, 8, 32, 64, 128])
    assert held == [[3], [8, 13, 23], [43], [83]]
    np.testing.assert_allclose(means[0], [0, 2, 4, 5])
    np.testing.assert_allclose(means[1], [6, 8, 10, 11])
    means, held = pd.bin_means(vals[:, :1], np.array([3]), [0, 8, 32])
    assert held == [[3], []] and np.isnan(means[:, 1]).all()


def test_position_metrics_planted(pd):
    rng = np.random.default_rng(0)
    D, S, m = 3, 5, 4
    bayes = _random_log_probs(rng, (D, S + 1, m))
    model = _random_log_probs(rng, (D, S + 1, m + 1))          # one extra token (BOS) in the model
    tokens = rng.integers(0, m, (D, S))
    labels = [1, 2]
    got = pd.position_metrics(bayes, model, tokens, labels)
    assert got.excess.shape == (D, S) and got.kl_full.shape == (D, S + 1) == got.kl_labels.shape
    for d in range(D):
        for t in range(S + 1):
            p, q = np.exp(bayes[d, t]), np.exp(model[d, t])
            if t < S:
                o = tokens[d, t]
                assert got.excess[d, t] == pytest.approx(np.log(p[o]) - np.log(q[o]), abs=1e-12)
            assert got.kl_full[d, t] == pytest.approx(sum(p[v] * np.log(p[v] / q[v]) for v in range(m)), abs=1e-12)
            py, qy = p[labels] / p[labels].sum(), q[labels] / q[labels].sum()
            assert got.kl_labels[d, t] == pytest.approx(float(np.sum(py * np.log(py / qy))), abs=1e-12)
    # a model equal to Bayes (zero mass on the extra token) has no excess anywhere
    same = np.concatenate([bayes, np.full((D, S + 1, 1), -np.inf)], -1)
    z = pd.position_metrics(bayes, same, tokens, labels)
    assert np.abs(z.excess).max() < 1e-12 and np.abs(z.kl_full).max() < 1e-12 and np.abs(z.kl_labels).max() < 1e-12
    # without the final prediction (R = S): the same numbers, one column fewer
    short = pd.position_metrics(bayes[:, :S], model[:, :S], tokens, labels)
    np.testing.assert_array_equal(short.excess, got.excess)
    np.testing.assert_array_equal(short.kl_full, got.kl_full[:, :S])
    with pytest.raises(ValueError, match="shapes"):
        pd.position_metrics(bayes[:, :-1], model, tokens, labels)
    with pytest.raises(ValueError, match="shapes"):
        pd.position_metrics(bayes[:, :S - 1], model[:, :S - 1], tokens, labels)


def test_bootstrap_and_compare(pd):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    b = pd.bootstrap_means(x, 500, np.random.default_rng(2))
    assert b.shape == (500, 3)
    # each resample mean is a mean of rows of x: it lies within the rows' range, and the resample
    # means scatter around the sample mean with the standard error's spread
    assert (b >= x.min(0)).all() and (b <= x.max(0)).all()
    np.testing.assert_allclose(b.std(0), x.std(0) / np.sqrt(400), rtol=0.15)
    const = pd.mean_ci(np.full(50, 0.25), 100, np.random.default_rng(3))
    assert const == dict(mean=0.25, lo=0.25, hi=0.25, n=50)
    # a planted difference of 0.5 between two samples: found, with an interval that covers it
    a = rng.normal(0.5, 1.0, 3000)
    d = rng.normal(0.0, 1.0, 2000)
    c = pd.compare(a, d, 1000, np.random.default_rng(4))
    assert c["diff"] == pytest.approx(a.mean() - d.mean())
    assert c["diff_ci"][0] < 0.5 < c["diff_ci"][1] and c["welch_p"] < 1e-10
    assert c["n_prompts"] == 3000 and c["n_docs"] == 2000
    # the same distribution on both sides: the interval covers 0
    c0 = pd.compare(rng.normal(size=3000), rng.normal(size=2000), 1000, np.random.default_rng(5))
    assert c0["diff_ci"][0] < 0 < c0["diff_ci"][1]


def test_bayes_predictive_matches_corpus(pd):
    from simulate import corpus
    from theory.hmm import make_hmm

    rng = np.random.default_rng(0)
    d, m = 4, 6                                   # 2 tasks x 2 states, token 0 the delimiter
    T, B, R = (rng.dirichlet(np.ones(k), d) for k in (d, m, d))
    starts = np.array([[0.7, 0.3, 0, 0], [0, 0, 0.4, 0.6]])
    hmm = make_hmm(T, B, R, starts.mean(0), starts, np.array([0, 0, 1, 1]), 0)
    docs = np.asarray(corpus.documents(corpus.split_key(0, "heldout"), hmm, 0, 8, 24))
    assert (docs == int(hmm.delim)).any()               # the delimiter branch is exercised
    lp = pd.bayes_log_predictive(hmm, docs)
    assert lp.shape == (8, 25, 6)
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, atol=1e-12)
    assert pd.check_bayes(hmm, docs, lp) < 1e-12          # the observed tokens' log-probs are corpus's
    bad = lp.copy()
    bad[0, 3] += 1e-3
    with pytest.raises(pd.DepthError, match="differs from corpus.token_log_probs"):
        pd.check_bayes(hmm, docs, bad)


def test_model_predictive_matches_training_loss(pd):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from llm_check.synthetic import train

    cfg = train.PretrainConfig(size="tiny", n_embd=16, n_layer=1, n_head=2, context=12)
    mcfg = train.model_config(cfg, 7)
    model = train.init_model(mcfg, 0)
    docs = np.random.default_rng(0).integers(0, 6, (4, 12))
    # context-long documents, two chunks of 2 (both calls below compile one input shape [2, 12])
    lp = pd.model_log_predictive(model, docs, bos=6, final=False, chunk=2)
    assert lp.shape == (4, 12, 7)
    graphdef, params = nnx.split(model)
    losses = jax.jit(lambda p, d: train.token_losses(graphdef, p, d, 6, jnp.float32, "einsum"))
    ref = np.asarray(losses(params, docs))
    got = -np.take_along_axis(lp, docs[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # with the final prediction: the same rows (causal), one more after the last token
    lp_final = pd.model_log_predictive(model, docs[:, :11], bos=6, chunk=2)
    assert lp_final.shape == (4, 12, 7)
    np.testing.assert_allclose(lp_final, lp, atol=1e-5)
