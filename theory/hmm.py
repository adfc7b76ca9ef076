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
    for name, val in dict(T=T, B=B, R=R, p0=p0, task_start=task_start, delim_weight=delim_weight).items():
        if val is None:
            continue
        try:
            raw = np.asarray(val)
            if np.iscomplexobj(raw):
                raise HMMError(f"{name} has complex entries; expected real probabilities")
            if raw.dtype.kind not in "biuf":
                raise HMMError(f"{name} has dtype {raw.dtype}; expected a real numeric array")
            arrs[name] = raw.astype(dtype)
        except HMMError:
            raise
        except (TypeError, ValueError) as exc:
            raise HMMError(f"{name} is not a numeric array ({' '.join(str(exc).split())})") from None
    try:
        task_of_state = np.asarray(task_of_state)
        delim_raw = np.asarray(delim)
        if delim_raw.ndim != 0 or delim_raw.dtype.kind not in "biuf" or float(delim_raw) != int(delim_raw):
            raise HMMError(f"delimiter {delim_raw.tolist()!r} is not an integer token id")
        delim_i = int(delim_raw)
    except HMMError:
        raise
    except (TypeError, ValueError) as exc:
        raise HMMError(f"task_of_state/delim are not integers ({' '.join(str(exc).split())})") from None
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
    dw = Bm[:, delim_i].copy() if delim_weight is None else arrs.pop("delim_weight")
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


def check_prompt_law(hmm: HMM, labels, length: int) -> None:
    """Refuse HMMs on which ICL prompts cannot be sampled and scored as one law.

    Every task must (a) emit the delimiter with a weight that is the same for all its states — the
    sampler draws each demonstration without the delimiter that follows it, while Bayes scores that
    delimiter, and the two agree only when its weight does not depend on the state — and positive,
    so that prompts have positive probability; and (b) produce, for every label y, a delimiter-free
    x of length l followed by y (Z_θ,y = s_θᵀ (diag(1 − b_δ) T)^l b_y > 0), so that demonstrations,
    the Oracle and Bayes are defined. Raises :class:`HMMError` naming the task and the value.
    """
    B = np.asarray(hmm.B, float)
    T = np.asarray(hmm.T, float)
    tos = np.asarray(hmm.task_of_state)
    dw = np.asarray(hmm.delim_weight, float)
    for th in range(hmm.num_tasks):
        w = dw[tos == th]
        if w.size == 0:
            raise HMMError(f"task {th} has no hidden states (task_of_state never equals {th})")
        if w.max() <= 0:
            raise HMMError(f"task {th} never emits the delimiter (delim_weight is 0 on all its states), "
                           "so no prompt of that task has positive probability")
        if w.max() - w.min() > 1e-12 * max(1.0, w.max()):
            raise HMMError(f"the delimiter weight varies within task {th} ({w.min():.4g} to {w.max():.4g}); "
                           "demonstrations are sampled without the delimiter that Bayes scores, which is one "
                           "law only when the weight is the same for every state of a task")
    lab = np.asarray(labels, int)
    M = (1.0 - B[:, int(hmm.delim)])[:, None] * T
    v = B[:, lab]
    for _ in range(int(length)):
        v = M @ v
    Z = np.asarray(hmm.task_start, float) @ v  # [K, |Y|]
    bad = np.argwhere(Z <= 0)
    if bad.size:
        th, j = (int(i) for i in bad[0])
        raise HMMError(f"task {th} cannot produce a delimiter-free x of length {length} followed by label "
                       f"{int(lab[j])} (probability 0); pick other labels or another length")
