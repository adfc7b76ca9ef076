r"""The HMM with a restarting delimiter, as observable operators.

A hidden state emits a token and then moves. Ordinary tokens move with the transition matrix
``T``; the delimiter ``δ`` moves with the restart operator ``R`` (Assumption 1 made concrete:
every state of task block θ is sent back to that task's start distribution, optionally leaking
to other tasks). With ``D_o = diag(B[:, o])``:

.. math::
    M_o = D_o T \quad (o \ne δ), \qquad M_δ = \mathrm{diag}(w_δ) R,
    \qquad T_x = M_{x_0} M_{x_1} \cdots M_{x_{l-1}},

so that :math:`P(x \mid p) = p^\top T_x 1` and :math:`P(x, \text{next}=y \mid p) = p^\top T_x b_y`.
``w_δ = B[:, δ]`` for an *emitted* delimiter (the process is a proper token-dependent HMM) and
``w_δ = 1`` for a *format* delimiter that the prompt format appends (GINC's prompts).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from theory.errors import HMMError


class HMM(NamedTuple):
    """A mixture of task HMMs collapsed into one HMM (all arrays; a JAX pytree).

    Attributes:
        T: ``[d, d]`` transition matrix used after ordinary tokens (rows sum to 1).
        B: ``[d, m]`` emission matrix (rows sum to 1).
        R: ``[d, d]`` restart operator used after the delimiter (rows sum to 1).
        delim_weight: ``[d]`` weight of the delimiter step (``B[:, δ]`` or ones).
        p0: ``[d]`` pretraining initial distribution (support: the tasks' starts).
        task_start: ``[K, d]`` start distribution of each task's demonstrations.
        task_of_state: ``[d]`` int, the task block of each hidden state.
        delim: ``[]`` int, the delimiter token id.
    """

    T: np.ndarray
    B: np.ndarray
    R: np.ndarray
    delim_weight: np.ndarray
    p0: np.ndarray
    task_start: np.ndarray
    task_of_state: np.ndarray
    delim: np.ndarray

    @property
    def num_states(self) -> int:
        return int(np.shape(self.T)[0])

    @property
    def num_tokens(self) -> int:
        return int(np.shape(self.B)[1])

    @property
    def num_tasks(self) -> int:
        return int(np.shape(self.task_start)[0])


def make_hmm(T, B, R, p0, task_start, task_of_state, delim, delim_weight=None, *, dtype=np.float64) -> HMM:
    """Build and validate an :class:`HMM` from array-likes (numpy, float64 by default).

    ``delim_weight=None`` means an emitted delimiter, ``B[:, delim]``.
    Raises :class:`HMMError` with a one-line message on any invalid input.
    """
    arrs = {}
    for name, val in dict(T=T, B=B, R=R, p0=p0, task_start=task_start).items():
        try:
            arrs[name] = np.asarray(val, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise HMMError(f"{name} is not a numeric array ({exc})") from None
    try:
        task_of_state = np.asarray(task_of_state)
        delim_i = int(np.asarray(delim))
    except (TypeError, ValueError) as exc:
        raise HMMError(f"task_of_state/delim are not integers ({exc})") from None
    if task_of_state.dtype.kind not in "iu":
        raise HMMError(f"task_of_state has dtype {task_of_state.dtype}, expected integers")
    Tm, Bm = arrs["T"], arrs["B"]
    if Tm.ndim != 2 or Tm.shape[0] != Tm.shape[1]:
        raise HMMError(f"T has shape {Tm.shape}, expected a square [d, d] matrix")
    d = Tm.shape[0]
    if Bm.ndim != 2 or Bm.shape[0] != d:
        raise HMMError(f"B has shape {Bm.shape}, expected [d={d}, m]")
    m = Bm.shape[1]
    if not 0 <= delim_i < m:
        raise HMMError(f"delimiter token {delim_i} is outside the vocabulary 0..{m - 1}")
    if delim_weight is None:
        dw = Bm[:, delim_i].copy()
    else:
        dw = np.asarray(delim_weight, dtype=dtype)
    expected = dict(R=(d, d), p0=(d,))
    for name, shape in expected.items():
        if arrs[name].shape != shape:
            raise HMMError(f"{name} has shape {arrs[name].shape}, expected {shape}")
    ts = arrs["task_start"]
    if ts.ndim != 2 or ts.shape[1] != d or ts.shape[0] < 1:
        raise HMMError(f"task_start has shape {ts.shape}, expected [K, d={d}] with K >= 1")
    if task_of_state.shape != (d,):
        raise HMMError(f"task_of_state has shape {task_of_state.shape}, expected ({d},)")
    if dw.shape != (d,):
        raise HMMError(f"delim_weight has shape {dw.shape}, expected ({d},)")
    K = ts.shape[0]
    if task_of_state.min() < 0 or task_of_state.max() >= K:
        raise HMMError(f"task_of_state has values in [{task_of_state.min()}, {task_of_state.max()}], expected 0..{K - 1}")
    for name, a in [("T", Tm), ("B", Bm), ("R", arrs["R"]), ("p0", arrs["p0"]), ("task_start", ts), ("delim_weight", dw)]:
        if not np.all(np.isfinite(a)):
            raise HMMError(f"{name} contains NaN or inf")
        if np.any(a < 0):
            raise HMMError(f"{name} has a negative entry ({a.min():.3g}); probabilities must be >= 0")
    for name, a in [("T", Tm), ("B", Bm), ("R", arrs["R"]), ("task_start", ts)]:
        sums = a.sum(axis=-1)
        bad = np.argmax(np.abs(sums - 1))
        if abs(sums[bad] - 1) > 1e-6:
            raise HMMError(f"{name} is not row-stochastic: row {bad} sums to {sums[bad]:.6g}, expected 1")
    if abs(arrs["p0"].sum() - 1) > 1e-6:
        raise HMMError(f"p0 sums to {arrs['p0'].sum():.6g}, expected 1")
    if np.any(dw > 1 + 1e-12):
        raise HMMError(f"delim_weight has an entry {dw.max():.6g} > 1")
    return HMM(Tm, Bm, arrs["R"], dw, arrs["p0"], ts, task_of_state.astype(np.int32), np.asarray(delim_i, np.int32))


def operator(hmm: HMM, o: int) -> np.ndarray:
    """The observable operator ``M_o`` (``[d, d]``, numpy)."""
    if int(o) == int(hmm.delim):
        return np.asarray(hmm.delim_weight)[:, None] * np.asarray(hmm.R)
    return np.asarray(hmm.B)[:, o][:, None] * np.asarray(hmm.T)


def input_tokens(hmm: HMM) -> np.ndarray:
    """Tokens allowed inside a demonstration input x (every token but the delimiter)."""
    return np.array([o for o in range(hmm.num_tokens) if o != int(hmm.delim)], dtype=np.int32)


def check_labels(hmm: HMM, labels) -> np.ndarray:
    """Validate a label set: non-empty, distinct, in the vocabulary, not the delimiter, emittable."""
    lab = np.asarray(labels)
    if lab.size == 0:
        raise HMMError("the label set is empty; expected at least one label token")
    if lab.dtype.kind not in "iu":
        raise HMMError(f"labels {labels!r} are not integer token ids")
    lab = lab.astype(np.int32).ravel()
    if len(set(lab.tolist())) != lab.size:
        raise HMMError(f"labels {lab.tolist()} contain duplicates")
    for y in lab:
        if not 0 <= y < hmm.num_tokens:
            raise HMMError(f"label {int(y)} is outside the vocabulary 0..{hmm.num_tokens - 1}")
        if y == int(hmm.delim):
            raise HMMError(f"label {int(y)} is the delimiter; labels must be ordinary tokens")
        if not np.any(np.asarray(hmm.B)[:, y] > 0):
            raise HMMError(f"label {int(y)} cannot be emitted by any hidden state (B[:, {int(y)}] is all zero)")
    return lab
