r"""The HMM with a restarting delimiter, as observable operators.

A hidden state emits a token and then moves. Ordinary tokens move with the transition matrix
``T``; the delimiter ``δ`` moves with the restart operator ``R`` (Assumption 1 made concrete:
every state of task block θ is sent back to that task's start distribution, optionally leaking
to other tasks). With ``D_o = diag(B[:, o])``:

.. math::
    M_o = D_o T \quad (o \ne δ), \qquad M_δ = \mathrm{diag}(w_δ) R,
    \qquad T_x = M_{x_0} M_{x_1} \cdots M_{x_{l-1}},

so that :math:`P(x \mid p) = p^\top T_x 1` and :math:`P(x, \text{next}=y \mid p) = p^\top T_x b_y`.
``w_δ = B[:, δ]`` for an *emitted* delimiter (the process is a proper token-dependent HMM; every
preset uses it) and ``w_δ = 1`` for a *format* delimiter that carries no likelihood (a custom HMM
may ask for it). With ``R = T`` the delimiter does not restart anything (GINC's documents).
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


EXPECTED_SHAPES = dict(T="[d, d]", B="[d, m]", R="[d, d]", p0="[d]", task_start="[K, d]", starts="[K]",
                       task_of_state="[d]", delim_weight="[d]", delim="[] (one integer)")


def ragged_message(name: str) -> str:
    """The one-line error for an array given as nested lists of unequal lengths."""
    return (f"{name} is ragged (its rows have different lengths); expected a rectangular array of shape "
            f"{EXPECTED_SHAPES.get(name, '[...]')}")


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
            if "inhomogeneous" in str(exc) or "sequence" in str(exc):
                raise HMMError(ragged_message(name)) from None
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


def demo_end_weight(hmm: HMM) -> np.ndarray | None:
    """``T w_δ`` (``[d]``): the probability that the state after a label emits the delimiter, or None.

    A demonstration x y δ of a prompt has likelihood ``vᵀ T_x diag(b_y) T w_δ``; its last factor
    matters only when it depends on the state. It is None when ``w_δ`` is the same for every state
    (then ``T w_δ`` is that constant: the law of x y is the same without it).
    """
    dw = np.asarray(hmm.delim_weight, float)
    if np.all(dw == dw[0]):
        return None
    return np.asarray(hmm.T, float) @ dw


def demo_mass(hmm: HMM, labels, length: int, starts=None) -> np.ndarray:
    """Z[θ, y] = s_θᵀ (diag(1 − b_δ) T)^l diag(b_y) T w_δ: the mass of the demonstrations x y δ.

    ``starts [K, d]`` defaults to the task starts. x runs over delimiter-free inputs of length l.
    """
    B = np.asarray(hmm.B, float)
    T = np.asarray(hmm.T, float)
    lab = np.asarray(labels, int)
    M = (1.0 - B[:, int(hmm.delim)])[:, None] * T
    end = T @ np.asarray(hmm.delim_weight, float)
    v = B[:, lab] * end[:, None]
    for _ in range(int(length)):
        v = M @ v
    return np.asarray(hmm.task_start if starts is None else starts, float) @ v  # [K, |Y|]


def check_prompt_law(hmm: HMM, labels, length: int, tasks=None, first_starts=None) -> None:
    """Refuse an HMM on which the demonstrations of some task are undefined (probability 0).

    A demonstration of task θ is x y δ with x delimiter-free of length l and y a label, drawn with
    probability ∝ s_θᵀ T_x diag(b_y) T w_δ (the delimiter that follows it included, so any
    delimiter weight, constant or not, gives one law). That law exists when its mass
    Σ_y Z_θ,y (:func:`demo_mass`) is positive, from θ's start and (for the first demonstration)
    from ``first_starts[θ]`` when given. ``tasks``: the tasks that can be drawn (default all).
    Labels a task cannot produce are simply never drawn for it. Raises :class:`HMMError` naming
    the task.
    """
    tos = np.asarray(hmm.task_of_state)
    tasks = range(hmm.num_tasks) if tasks is None else tasks
    for th in tasks:
        if not np.any(tos == th):
            raise HMMError(f"task {th} has no hidden states (task_of_state never equals {th})")
    for what, starts in (("start", None), ("first-demonstration start (p0 on its block)", first_starts)):
        if what != "start" and starts is None:
            continue
        Z = demo_mass(hmm, labels, length, starts).sum(1)
        for th in tasks:
            if not Z[th] > 0:
                raise HMMError(f"task {th} cannot produce a demonstration from its {what}: no delimiter-free x "
                               f"of length {length} followed by a label in {np.asarray(labels).tolist()} and then "
                               "the delimiter has positive probability; pick other labels or another length")
