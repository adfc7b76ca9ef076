"""The pretraining corpus (simulate.corpus): the sampler's law and the exact Bayes loss, against
enumeration over hidden-state paths on a tiny HMM (float64)."""
from __future__ import annotations

import collections
import itertools

import jax
import numpy as np

from simulate import corpus
from conftest import tiny_hmm


def _path_sum(hmm, toks):
    """P(o_0..o_{t-1}) by summing over every hidden path (the reference)."""
    d = hmm.num_states
    total = 0.0
    for path in itertools.product(range(d), repeat=len(toks)):
        p = hmm.p0[path[0]]
        for t, (s, o) in enumerate(zip(path, toks)):
            p *= hmm.B[s, o]
            if t + 1 < len(toks):
                A = hmm.R if o == int(hmm.delim) else hmm.T
                p *= A[s, path[t + 1]]
        total += p
    return total


def test_exact_loss_matches_path_enumeration():
    hmm = tiny_hmm(seed=3, leak=0.1)
    rng = np.random.default_rng(0)
    docs = rng.integers(0, hmm.num_tokens, size=(6, 5))
    docs[0, 1] = docs[1, 3] = int(hmm.delim)        # delimiters inside documents
    lp = corpus.token_log_probs(hmm, docs)
    for i, doc in enumerate(docs):
        prefix = [_path_sum(hmm, doc[:t].tolist()) if t else 1.0 for t in range(len(doc) + 1)]
        want = np.log(np.array(prefix[1:]) / np.array(prefix[:-1]))
        np.testing.assert_allclose(lp[i], want, rtol=1e-10, atol=1e-12)
    assert corpus.bayes_loss(hmm, docs) == -lp.mean()


def test_sampled_documents_follow_p_pre():
    hmm = tiny_hmm(seed=1, leak=0.0, delim_rate=0.3)
    key = corpus.split_key(0, "train")
    n = 40000
    docs = np.asarray(corpus.documents(key, hmm, 0, n, 3))
    counts = collections.Counter(map(tuple, docs.tolist()))
    for doc in itertools.product(range(hmm.num_tokens), repeat=3):
        p = _path_sum(hmm, list(doc))
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(counts.get(doc, 0) / n - p) <= 5 * sd + 1e-4, doc


def test_documents_are_a_pure_function_of_key_and_index():
    hmm = tiny_hmm(seed=2)
    key = corpus.split_key(7, "train")
    whole = np.asarray(corpus.documents(key, hmm, 0, 9, 11))
    part = np.asarray(corpus.documents(key, hmm, 4, 3, 11))
    np.testing.assert_array_equal(whole[4:7], part)
    other = np.asarray(corpus.documents(corpus.split_key(7, "heldout"), hmm, 0, 9, 11))
    assert not np.array_equal(whole, other)
    assert whole.min() >= 0 and whole.max() < hmm.num_tokens


def test_ngram_counts_and_losses_against_counter():
    rng = np.random.default_rng(1)
    docs = rng.integers(0, 4, size=(5, 7))
    model = corpus.fit_ngrams(docs, 4, alpha=0.5)
    uni = collections.Counter(docs.ravel().tolist())
    big = collections.Counter((a, b) for row in docs.tolist() for a, b in zip(row[:-1], row[1:]))
    for a in range(4):
        assert np.isclose(model.unigram[a], (uni[a] + 0.5) / (docs.size + 2.0))
        row = sum(big[(a, b)] for b in range(4)) + 2.0
        for b in range(4):
            assert np.isclose(model.bigram[a, b], (big[(a, b)] + 0.5) / row)
    held = rng.integers(0, 4, size=(3, 6))
    out = corpus.ngram_losses(model, held)
    want_uni = -np.mean([np.log(model.unigram[t]) for t in held.ravel()])
    want_bi = -np.mean([np.log(model.unigram[r[0]]) if j == 0 else np.log(model.bigram[r[j - 1], r[j]])
                        for r in held for j in range(len(r))])
    assert np.isclose(out["unigram"], want_uni) and np.isclose(out["bigram"], want_bi)
