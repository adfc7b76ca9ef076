"""Exact references by brute-force enumeration (numpy float64 and sympy rationals).

These never use the forward recursion: they sum over every hidden path, or every sequence, so
they are independent checks of the fast code on tiny models.
"""
from __future__ import annotations

import itertools

import numpy as np

from theory.hmm import HMM, operator


def path_probability_sum(hmm: HMM, tokens, start=None) -> float:
    """P(tokens, and the state after them is anything | start) by enumerating all hidden paths.

    Path s_0..s_S: s_0 ~ start (default p0); s_t emits tokens[t], then moves with T (R after δ).
    """
    T, R, B = np.asarray(hmm.T), np.asarray(hmm.R), np.asarray(hmm.B)
    dw = np.asarray(hmm.delim_weight)
    p = np.asarray(hmm.p0 if start is None else start, float)
    d = T.shape[0]
    total = 0.0
    S = len(tokens)
    for path in itertools.product(range(d), repeat=S + 1):
        w = p[path[0]]
        for t, o in enumerate(tokens):
            s, s2 = path[t], path[t + 1]
            if o == int(hmm.delim):
                w *= dw[s] * R[s, s2]
            else:
                w *= B[s, o] * T[s, s2]
            if w == 0:
                break
        total += w
    return total


def predictive_by_enumeration(hmm: HMM, tokens, labels, start=None) -> np.ndarray:
    """P(next = y | tokens) over ``labels`` renormalised, each joint by path enumeration."""
    joint = []
    for y in labels:
        # P(tokens, next = y) = Σ_paths ... * B[s_S, y]: append y as a token and sum.
        joint.append(path_probability_sum(hmm, list(tokens) + [int(y)], start))
    joint = np.asarray(joint)
    return joint / joint.sum()


def operator_product(hmm: HMM, x) -> np.ndarray:
    """T_x = M_{x_0} ⋯ M_{x_{l-1}} (``[d, d]``)."""
    out = np.eye(hmm.num_states)
    for o in x:
        out = out @ operator(hmm, int(o))
    return out


def gram_by_enumeration(hmm: HMM, length: int, alphabet=None, weights_start=None) -> np.ndarray:
    """Σ_{x ∈ alphabet^l} w(x) vec(T_x) vec(T_x)^T with row-major vec (``[d², d²]``).

    ``w(x) = 1`` (the Gram G_l), or ``P(x | start) = start^T T_x 1`` when ``weights_start`` is given.
    """
    d = hmm.num_states
    alphabet = range(hmm.num_tokens) if alphabet is None else alphabet
    G = np.zeros((d * d, d * d))
    for x in itertools.product(list(alphabet), repeat=length):
        Tx = operator_product(hmm, x)
        v = Tx.reshape(-1)
        w = 1.0 if weights_start is None else float(np.asarray(weights_start) @ Tx.sum(1))
        G += w * np.outer(v, v)
    return G
