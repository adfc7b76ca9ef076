r"""GINC (Xie et al., ICLR 2022) exactly: its parameters, its prompt laws, its Oracle, and exact Bayes
under its pretraining documents, with a fast filter that uses GINC's structure.

**Parameters** (:class:`GincParams`). V values (entities) × S slots (properties); hidden state
``i = v * S + s`` emits the symbol ``memory[v, s]`` with probability 1 (slot 0 emits the delimiter
'/' = symbol 0). Concept ``c`` moves with ``T_c = kron(value_T[c], slot_T[c])``, i.e.
``T_c[(v, s), (v', s')] = value_T[c, v, v'] · slot_T[c, s, s']``, and starts from ``startprob[c]``.
:func:`load_reference` reads GINC's published parameters, :func:`draw_params` draws new ones with
GINC's construction.

**Pretraining law p_pre.** A document picks one of the C pretraining concepts uniformly and runs
its chain from ``startprob``; '/' is an ordinary emission (the chain moves on with T, no restart).
A prompt is scored as a document prefix.

**Fast exact filter.** Emissions are deterministic, so after the token ``a`` only the states in
``E(a) = {i : memory[i] = a}`` are alive (at most ``K = max_a |E(a)|`` of them; K = V for the
delimiter, ≤ 4 for the other symbols of GINC's published memory matrix). The filtered message is kept
as a length-K vector over ``E(a)`` and one step to the next token ``b`` is a K×K matrix-vector
product with the block ``T_c[E(a), E(b)]``; these blocks are tabulated once for all symbol pairs
(``[A·A, C, K, K]``) and gathered per step. The message is renormalised after every token and
``log`` of the normaliser accumulated, so ``log P(tokens | c)`` is exact at any length. A step
whose normaliser is exactly 0 marks the prefix impossible under that concept: its message becomes
0 forever and its log-likelihood ``-inf`` (never NaN). The next-symbol predictive after the token
``a`` is ``alpha @ Pred[a]`` with ``Pred[a, c, k, y] = Σ_j T_c[E(a)_k, j] [memory_j = y]``.
See docs/ginc_bayes.md for the maths and the prompt laws.

Symbols are GINC's indices (``'/' = 0``); ``-1`` in a token array is padding.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_kernel.errors import UserError

DELIM = 0
LAWS = ("id", "ood")
#: GINC's prompt grid: example lengths k and numbers of examples n (n with (k+1)·n > 1024 skipped).
GINC_KS = (3, 5, 8, 10)
GINC_NS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
GINC_PROMPTS = 2500
GINC_MAX_TOKENS = 1024


class GincError(UserError):
    """Bad GINC input: a missing or malformed reference file, or an argument out of range."""


class GincParams(NamedTuple):
    """One set of GINC concepts (float arrays in float64 unless cast).

    Attributes:
        memory: ``[V, S]`` int, state (v, s) emits ``memory[v, s]``; ``memory[:, 0] == 0`` ('/').
        slot_T: ``[C, S, S]`` slot (property) transition of each concept.
        value_T: ``[C, V, V]`` value (entity) transition of each concept (GINC shares one).
        startprob: ``[C, V*S]`` document start distribution, state index ``v * S + s``.
        num_symbols: the vocabulary size A (symbols ``0..A-1``, '/' = 0).
    """

    memory: np.ndarray
    slot_T: np.ndarray
    value_T: np.ndarray
    startprob: np.ndarray
    num_symbols: int

    @property
    def num_concepts(self) -> int:
        return int(np.shape(self.slot_T)[0])

    @property
    def num_values(self) -> int:
        return int(np.shape(self.memory)[0])

    @property
    def num_slots(self) -> int:
        return int(np.shape(self.memory)[1])


def transmat(params: GincParams) -> np.ndarray:
    """Dense transitions ``[C, V*S, V*S]`` = ``kron(value_T[c], slot_T[c])`` (for checks and peers)."""
    vt, st = np.asarray(params.value_T, np.float64), np.asarray(params.slot_T, np.float64)
    return np.stack([np.kron(vt[c], st[c]) for c in range(vt.shape[0])])


def emissions(params: GincParams) -> np.ndarray:
    """Dense one-hot emissions ``[V*S, A]``: row ``v*S + s`` is one-hot at ``memory[v, s]``."""
    mem = np.asarray(params.memory).reshape(-1)
    E = np.zeros((mem.size, params.num_symbols))
    E[np.arange(mem.size), mem] = 1.0
    return E


# ------------------------------------------------------------------ GINC's published parameters


def _factor_kron(T: np.ndarray, V: int, S: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a ``[V*S, V*S]`` row-stochastic ``kron(A, B)`` (B row-stochastic) into ``(A, B)``."""
    blocks = T.reshape(V, S, V, S).transpose(0, 2, 1, 3)  # [v, v', s, s']
    A = blocks.sum(-1).mean(-1)  # each row of B sums to 1, so a row of block (v, v') sums to A[v, v']
    i, j = np.unravel_index(np.argmax(A), A.shape)
    B = blocks[i, j] / A[i, j]
    if not np.allclose(np.kron(A, B), T, rtol=0, atol=1e-12):
        raise GincError(f"{what} is not a Kronecker product kron(value_T, slot_T) of a [{V},{V}] and a "
                        f"[{S},{S}] matrix (max error {np.abs(np.kron(A, B) - T).max():.2e}); expected GINC's "
                        f"combine_transmats output")
    return A, B


def load_reference(path) -> tuple[GincParams, GincParams]:
    """GINC's published parameters from ``ginc_reference.npz``: ``(id_params, ood_params)``.

    Reads ``all_values``, ``id_slot_T``, ``id_value_T``, ``id_startprob`` and the OOD concepts'
    ``ood_transmat`` (factored into value and slot blocks) and ``ood_startprob``; checks that every
    transmat equals ``kron(value_T, slot_T)`` and every emission matrix is the one-hot of the memory
    matrix. Raises :class:`GincError` (one line) for a missing or malformed file.
    """
    import os
    import zipfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise GincError(f"GINC reference file {path!r} {what}; expected ginc_reference.npz "
                        "(shared/data/ginc/ginc_reference.npz beside the repository)")
    need = ("all_values", "id_slot_T", "id_value_T", "id_startprob", "id_transmat", "id_emissionprob",
            "ood_startprob", "ood_transmat", "ood_emissionprob")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in need if k not in z.files]
            if missing:
                raise GincError(f"GINC reference file {path!r} lacks the arrays {missing}; expected GINC's "
                                f"ginc_reference.npz")
            arr = {k: np.asarray(z[k]) for k in need}
    except GincError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GincError(f"GINC reference file {path!r} is not a readable .npz ({type(e).__name__}: "
                        f"{' '.join(str(e).split())})") from None

    mem = arr["all_values"]
    if mem.ndim != 2 or not np.issubdtype(mem.dtype, np.integer) or np.any(mem[:, 0] != DELIM) or mem.min() < 0:
        raise GincError(f"all_values in {path!r} has shape {mem.shape} dtype {mem.dtype}; expected a [V, S] "
                        f"integer memory matrix with column 0 all '/' (= 0)")
    V, S = mem.shape
    A = int(arr["id_emissionprob"].shape[-1])
    if mem.max() >= A:
        raise GincError(f"all_values in {path!r} holds symbol {mem.max()} but the emission matrices have "
                        f"only {A} symbols")
    E = np.zeros((V * S, A))
    E[np.arange(V * S), mem.reshape(-1)] = 1.0
    out = []
    for law in ("id", "ood"):
        T = arr[f"{law}_transmat"].astype(np.float64)
        st = arr[f"{law}_startprob"].astype(np.float64)
        em = arr[f"{law}_emissionprob"]
        C = T.shape[0]
        if T.shape != (C, V * S, V * S) or st.shape != (C, V * S) or em.shape != (C, V * S, A):
            raise GincError(f"{law} arrays in {path!r} have shapes transmat {T.shape}, startprob {st.shape}, "
                            f"emissionprob {em.shape}; expected [C, {V * S}, {V * S}], [C, {V * S}], "
                            f"[C, {V * S}, {A}]")
        if not np.array_equal(em, np.broadcast_to(E, em.shape)):
            raise GincError(f"{law}_emissionprob in {path!r} is not the one-hot of all_values; expected "
                            f"GINC's deterministic emissions")
        if law == "id":
            vt, sl = arr["id_value_T"].astype(np.float64), arr["id_slot_T"].astype(np.float64)
            if vt.shape != (C, V, V) or sl.shape != (C, S, S):
                raise GincError(f"id_value_T / id_slot_T in {path!r} have shapes {vt.shape} / {sl.shape}; "
                                f"expected [{C}, {V}, {V}] / [{C}, {S}, {S}]")
            for c in range(C):
                if not np.allclose(np.kron(vt[c], sl[c]), T[c], rtol=0, atol=1e-12):
                    raise GincError(f"id_transmat[{c}] in {path!r} is not kron(id_value_T[{c}], id_slot_T[{c}])")
        else:
            pairs = [_factor_kron(T[c], V, S, f"ood_transmat[{c}] in {path!r}") for c in range(C)]
            vt = np.stack([p[0] for p in pairs])
            sl = np.stack([p[1] for p in pairs])
        out.append(GincParams(mem.astype(np.int32), sl, vt, st, A))
    return out[0], out[1]


# ------------------------------------------------------------------ GINC's construction


def _perm_mixture(key, n: int, num_perms: int, temp: float):
    """Σ_j w_j P_j with w = softmax((u - 0.5) / temp), u ~ U[0,1]^num_perms, P_j random permutation
    matrices (GINC's ``generate_transmat_block``): ``[n, n]``, doubly stochastic."""
    kw, kp = jax.random.split(key)
    w = jax.nn.softmax((jax.random.uniform(kw, (num_perms,), jnp.float64) - 0.5) / temp)
    perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(kp, i), n))(jnp.arange(num_perms))
    P = jax.nn.one_hot(perms, n, dtype=jnp.float64)  # [num_perms, n, n]: row r of P_j is e_{perm_j[r]}
    return jnp.einsum("j,jrc->rc", w, P)


def draw_params(seed: int, vocab: int = 50, n_values: int = 10, n_slots: int = 10, n_id: int = 5,
                n_ood: int = 5, transition_temp: float = 0.1, start_temp: float = 10.0,
                value_identity_coeff: float = 0.9) -> tuple[GincParams, GincParams]:
    """New GINC parameters drawn with GINC's construction (its law, not its numpy stream):
    ``(id_params, ood_params)`` with ``n_id`` and ``n_ood`` concepts.

    - memory ``[n_values, n_slots]`` uniform in ``1..vocab-1``, column 0 set to '/' (0);
    - one value matrix shared by all concepts: ``(1 - vic)·B + vic·I``, B a mixture of
      ``n_values`` random permutations with weights ``softmax((u - 0.5)/transition_temp)``;
    - per concept: a slot matrix, a mixture of ``n_slots`` random permutations drawn the same way,
      and ``startprob = softmax((u - 0.5)/start_temp)`` over the ``n_values·n_slots`` states;
    - concepts ``0..n_id-1`` are the pretraining (ID) ones, the next ``n_ood`` the OOD ones.
    Needs float64 enabled in JAX (``simulate.runtime.setup``) for float64 parameters.
    """
    for name, val, lo in (("vocab", vocab, 2), ("n_values", n_values, 1), ("n_slots", n_slots, 2),
                          ("n_id", n_id, 1), ("n_ood", n_ood, 0)):
        if int(val) != val or val < lo:
            raise GincError(f"{name} = {val!r}; expected an integer >= {lo}")
    for name, val in (("transition_temp", transition_temp), ("start_temp", start_temp)):
        if not np.isfinite(val) or val <= 0:
            raise GincError(f"{name} = {val!r}; expected a positive number")
    if not 0.0 <= value_identity_coeff <= 1.0:
        raise GincError(f"value_identity_coeff = {value_identity_coeff!r}; expected a number in [0, 1]")
    key = jax.random.PRNGKey(int(seed))
    mem = np.array(jax.random.randint(jax.random.fold_in(key, 0), (n_values, n_slots), 1, vocab), np.int32)
    mem[:, 0] = DELIM
    block = _perm_mixture(jax.random.fold_in(key, 1), n_values, n_values, transition_temp)
    value_T = np.asarray((1.0 - value_identity_coeff) * block + value_identity_coeff * jnp.eye(n_values),
                         np.float64)
    slots, starts = [], []
    for c in range(n_id + n_ood):
        kc = jax.random.fold_in(jax.random.fold_in(key, 2), c)
        slots.append(np.asarray(_perm_mixture(jax.random.fold_in(kc, 0), n_slots, n_slots, transition_temp),
                                np.float64))
        u = jax.random.uniform(jax.random.fold_in(kc, 1), (n_values * n_slots,), jnp.float64)
        starts.append(np.asarray(jax.nn.softmax((u - 0.5) / start_temp), np.float64))
    slots, starts = np.stack(slots), np.stack(starts)
    vts = np.broadcast_to(value_T, (n_id + n_ood, n_values, n_values)).copy()
    mk = lambda sl: GincParams(mem, slots[sl], vts[sl], starts[sl], int(vocab))  # noqa: E731
    return mk(slice(0, n_id)), mk(slice(n_id, n_id + n_ood))


# ------------------------------------------------------------------ the fast filter's tables


class GincTables(NamedTuple):
    """Tabulated blocks of the fast filter (a pytree of device arrays).

    Attributes:
        state_of: ``[A, K]`` int32, the states emitting each symbol (padded with 0).
        valid: ``[A, K]`` bool, which entries of ``state_of`` are real.
        pair: ``[A*A, C, K, K]`` ``pair[a*A + b, c] = T_c[E(a), E(b)]`` (0 on padding).
        pred: ``[A, C, K, A]`` ``pred[a, c, k, y] = Σ_j T_c[E(a)_k, j] [memory_j = y]``.
        start: ``[C, A, K]`` ``startprob_c[E(a)]`` (0 on padding).
    """

    state_of: jax.Array
    valid: jax.Array
    pair: jax.Array
    pred: jax.Array
    start: jax.Array
    compact: "GincCompact | None" = None


class GincCompact(NamedTuple):
    """Tables of the compact two-lane filter, used when the delimiter's states are exactly the slot-0
    states ``(v, 0)`` (true of every GINC memory matrix: column 0 is '/' and no other entry is).

    The message after a non-delimiter token ``a`` lives on ``E(a)`` padded only to
    ``Ks = max_{a != '/'} |E(a)|`` (4 for GINC's published memory, against ``K = V = 10``), the
    message after '/' on the V values at slot 0. Steps into and out of '/' use the Kronecker
    factorisation (a product with ``value_T[c]``, no gathered block); steps between two other
    symbols use the ``[Ks, Ks]`` block.

    Attributes:
        vidx: ``[A, Ks]`` int32, value index of the states emitting each symbol (0 on padding).
        onehot: ``[A, Ks, V]`` one-hot of ``vidx`` (0 on padding).
        pair: ``[A*A, C, Ks, Ks]`` ``T_c[E(a), E(b)]`` for non-delimiter a, b (0 elsewhere).
        to_delim: ``[A, C, Ks]`` ``slot_T[c, s(E(a)_k), 0]``.
        from_delim: ``[A, C, Ks]`` ``slot_T[c, 0, s(E(a)_k)]``.
        delim_stay: ``[C]`` ``slot_T[c, 0, 0]``.
        value_T: ``[C, V, V]``.
        pred: ``[A, C, Ks, A]`` predictive rows of ``E(a)`` (as :class:`GincTables`' ``pred``).
        pred_delim: ``[C, V, A]`` predictive rows of the slot-0 states.
        start: ``[C, A, Ks]`` ``startprob_c[E(a)]`` (0 for '/').
        start_delim: ``[C, V]`` ``startprob_c[(v, 0)]``.
    """

    vidx: jax.Array
    onehot: jax.Array
    pair: jax.Array
    to_delim: jax.Array
    from_delim: jax.Array
    delim_stay: jax.Array
    value_T: jax.Array
    pred: jax.Array
    pred_delim: jax.Array
    start: jax.Array
    start_delim: jax.Array


def tables(params: GincParams, dtype=jnp.float64) -> GincTables:
    """Build :class:`GincTables` for ``params`` (numpy in float64, then cast to ``dtype``)."""
    mem = np.asarray(params.memory).reshape(-1)
    A, S = params.num_symbols, params.num_slots
    if mem.min() < 0 or mem.max() >= A:
        raise GincError(f"memory holds symbol {int(mem.max()) if mem.max() >= A else int(mem.min())}; "
                        f"expected symbols in 0..{A - 1}")
    counts = np.bincount(mem, minlength=A)
    K = int(counts.max())
    state_of = np.zeros((A, K), np.int64)
    valid = np.zeros((A, K), bool)
    for a in range(A):
        st = np.flatnonzero(mem == a)
        state_of[a, :st.size], valid[a, :st.size] = st, True
    sv, ss = state_of // S, state_of % S
    vt, st_ = np.asarray(params.value_T, np.float64), np.asarray(params.slot_T, np.float64)
    # pair[c, a, b, k, l] = value_T[c, v(a,k), v(b,l)] * slot_T[c, s(a,k), s(b,l)]
    pv = vt[:, sv[:, None, :, None], sv[None, :, None, :]]
    ps = st_[:, ss[:, None, :, None], ss[None, :, None, :]]
    m = (valid[:, None, :, None] & valid[None, :, None, :]).astype(np.float64)
    pair = (pv * ps * m).transpose(1, 2, 0, 3, 4).reshape(A * A, -1, K, K)
    T = transmat(params)  # [C, d, d]
    rows = T[:, state_of] * valid[None, :, :, None]  # [C, A, K, d]
    pred = (rows @ emissions(params)).transpose(1, 0, 2, 3)  # [A, C, K, A]
    start = np.asarray(params.startprob, np.float64)[:, state_of] * valid[None]
    compact = None
    V = params.num_values
    delim_states = np.flatnonzero(mem == DELIM)
    if np.array_equal(delim_states, np.arange(V) * S):  # E('/') = the slot-0 states, value-major
        nd = np.arange(A) != DELIM
        Ks = max(int(counts[nd].max()) if nd.any() else 1, 1)
        so, va = state_of[:, :Ks], valid[:, :Ks] & nd[:, None]
        cv, cs = so // S, so % S
        mf = va.astype(np.float64)
        onehot = np.eye(V)[cv] * mf[..., None]  # [A, Ks, V]
        m2 = (va[:, None, :, None] & va[None, :, None, :]).astype(np.float64)
        cpair = (vt[:, cv[:, None, :, None], cv[None, :, None, :]] * st_[:, cs[:, None, :, None], cs[None, :, None, :]]
                 * m2).transpose(1, 2, 0, 3, 4).reshape(A * A, -1, Ks, Ks)
        to_d = (st_[:, cs, 0] * mf[None]).transpose(1, 0, 2)  # [A, C, Ks]
        from_d = (st_[:, 0, cs] * mf[None]).transpose(1, 0, 2)
        crows = T[:, so] * va[None, :, :, None]  # [C, A, Ks, d]
        cpred = (crows @ emissions(params)).transpose(1, 0, 2, 3)
        pred_d = T[:, delim_states] @ emissions(params)  # [C, V, A]
        sp = np.asarray(params.startprob, np.float64)
        cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
        compact = GincCompact(jnp.asarray(cv * va, jnp.int32), cast(onehot), cast(cpair), cast(to_d), cast(from_d),
                              cast(st_[:, 0, 0]), cast(vt), cast(cpred), cast(pred_d), cast(sp[:, so] * mf[None]),
                              cast(sp[:, delim_states]))
    return GincTables(jnp.asarray(state_of, jnp.int32), jnp.asarray(valid), jnp.asarray(pair, dtype),
                      jnp.asarray(pred, dtype), jnp.asarray(start, dtype), compact)


# ------------------------------------------------------------------ filter kernels (pure, jit-able)


def _normalise(a, logz):
    """Renormalise ``a [..., K]`` and accumulate ``log`` of the normaliser; 0 stays 0 with ``-inf``."""
    s = a.sum(-1)
    pos = s > 0
    safe = jnp.where(pos, s, 1.0)
    return a / safe[..., None], jnp.where(pos, logz + jnp.log(safe), -jnp.inf)


def _init(tab: GincTables, start, tok):
    """Message after the first token. ``start [P, C, d]`` (or None: the tables' startprob), ``tok [P]``.

    Returns ``alpha [P, C, K]`` (sums to 1 or is 0), ``logz [P, C]``.
    """
    t = jnp.maximum(tok, 0)
    if start is None:
        a = jnp.moveaxis(tab.start[:, t], 1, 0)  # [P, C, K]
    else:
        a = jnp.take_along_axis(start, tab.state_of[t][:, None, :], axis=-1) * tab.valid[t][:, None, :]
    return _normalise(a.astype(tab.pair.dtype), jnp.zeros(a.shape[:-1], tab.pair.dtype))


def _steps(tab: GincTables, alpha, logz, prev, tokens):
    """Filter ``tokens [P, L]`` (``-1`` = padding: the identity step) from the message after ``prev [P]``.

    Returns ``(alpha [P, C, K], logz [P, C], prev [P])``.
    """
    A = tab.pred.shape[0]

    def step(carry, tok):
        alpha, logz, prev = carry
        skip = tok < 0
        blk = tab.pair[prev * A + jnp.maximum(tok, 0)]  # [P, C, K, K]
        a, lz = _normalise(jnp.einsum("pck,pckl->pcl", alpha, blk), logz)
        return (jnp.where(skip[:, None, None], alpha, a), jnp.where(skip[:, None], logz, lz),
                jnp.where(skip, prev, tok)), None

    if tokens.shape[-1] == 0:
        return alpha, logz, prev
    (alpha, logz, prev), _ = jax.lax.scan(step, (alpha, logz, prev), jnp.moveaxis(tokens, -1, 0))
    return alpha, logz, prev


def _predict(tab: GincTables, alpha, prev):
    """P(next symbol | prefix, c) ``[P, C, A]`` from the message after the token ``prev``."""
    return jnp.einsum("pck,pcky->pcy", alpha, tab.pred[prev])


# The compact two-lane filter (GincCompact): the message is ``(a_s [P, C, Ks], a_d [P, C, V])``, the
# first over E(prev) when prev is not '/', the second over the slot-0 values when it is; the other
# lane is 0. Entering '/' from (v_k, s_k): ``a_d'[v'] = Σ_k a_s[k] slot_T[s_k, 0] value_T[v_k, v']``;
# leaving '/' to (v_l, s_l): ``a_s'[l] = (a_d value_T)[v_l] slot_T[0, s_l]``; '/' to '/':
# ``a_d' = slot_T[0, 0] a_d value_T``; otherwise the [Ks, Ks] block.


def _normalise2(a_s, a_d, logz):
    """Joint renormalisation of both lanes (as :func:`_normalise`: 0 stays 0 with ``-inf``)."""
    s = a_s.sum(-1) + a_d.sum(-1)
    pos = s > 0
    safe = jnp.where(pos, s, 1.0)
    return a_s / safe[..., None], a_d / safe[..., None], jnp.where(pos, logz + jnp.log(safe), -jnp.inf)


def _cinit(ct: GincCompact, tok):
    """Compact message after the first token ``tok [P]`` (document start)."""
    t = jnp.maximum(tok, 0)
    a_s = jnp.moveaxis(ct.start[:, t], 1, 0)  # [P, C, Ks], 0 for '/'
    a_d = jnp.where((t == DELIM)[:, None, None], ct.start_delim[None], 0.0)
    return _normalise2(a_s, a_d, jnp.zeros(a_s.shape[:-1], a_s.dtype))


def _cstep(ct: GincCompact, a_s, a_d, prev, tok):
    """One unnormalised compact step from the message after ``prev [P]`` to the token ``tok [P]`` (>= 0)."""
    A = ct.pred.shape[0]
    td, pd = (tok == DELIM)[:, None, None], (prev == DELIM)[:, None, None]
    # the vector multiplied by value_T: a_d (times slot_T[0,0] if '/' follows '/'), or the s-lane moved
    # to slot 0 and binned by value
    binned = jnp.einsum("pck,pkv->pcv", a_s * ct.to_delim[prev], ct.onehot[prev])
    z = jnp.where(pd, a_d * jnp.where(td, ct.delim_stay[None, :, None], 1.0), binned)
    y = jnp.einsum("pcv,cvw->pcw", z, ct.value_T)
    from_d = jnp.take_along_axis(y, ct.vidx[tok][:, None, :], axis=-1) * ct.from_delim[tok]
    from_s = jnp.einsum("pck,pckl->pcl", a_s, ct.pair[prev * A + tok])
    new_s = jnp.where(td, 0.0, jnp.where(pd, from_d, from_s))
    new_d = jnp.where(td, y, 0.0)
    return new_s, new_d


def _csteps(ct: GincCompact, msg, logz, prev, tokens, pad: bool = True):
    """Compact filter over ``tokens [P, L]`` from the message after ``prev``; with ``pad`` a token -1
    is padding (the identity step), without it every token must be a symbol (no selects)."""
    if tokens.shape[-1] == 0:
        return msg, logz, prev

    def step(carry, tok):
        (a_s, a_d), logz, prev = carry
        t = jnp.maximum(tok, 0) if pad else tok
        n_s, n_d, lz = _normalise2(*_cstep(ct, a_s, a_d, prev, t), logz)
        if pad:
            skip = tok < 0
            n_s = jnp.where(skip[:, None, None], a_s, n_s)
            n_d = jnp.where(skip[:, None, None], a_d, n_d)
            lz, t = jnp.where(skip[:, None], logz, lz), jnp.where(skip, prev, t)
        return ((n_s, n_d), lz, t), None

    (msg, logz, prev), _ = jax.lax.scan(step, (msg, logz, prev), jnp.moveaxis(tokens, -1, 0))
    return msg, logz, prev


def _cpredict(ct: GincCompact, msg, prev):
    a_s, a_d = msg
    ps = jnp.einsum("pck,pcky->pcy", a_s, ct.pred[prev])
    pdl = jnp.einsum("pcv,cvy->pcy", a_d, ct.pred_delim)
    return jnp.where((prev == DELIM)[:, None, None], pdl, ps)


def _f_init(tab: GincTables, tok):
    """Message ``(msg, logz)`` after the first token under p_pre (compact when the tables allow)."""
    if tab.compact is not None:
        a_s, a_d, lz = _cinit(tab.compact, tok)
        return (a_s, a_d), lz
    return _init(tab, None, tok)


def _f_steps(tab: GincTables, msg, logz, prev, tokens, pad: bool = True):
    if tab.compact is not None:
        return _csteps(tab.compact, msg, logz, prev, tokens, pad)
    return _steps(tab, msg, logz, prev, tokens)


def _f_predict(tab: GincTables, msg, prev):
    if tab.compact is not None:
        return _cpredict(tab.compact, msg, prev)
    return _predict(tab, msg, prev)


class GincBayes(NamedTuple):
    """Exact Bayes under p_pre (uniform mixture of the pretraining concepts, documents from startprob).

    Leading dims ``[...]`` are ``[P]`` for flat prompts, ``[G, P]`` for a grid of n. No NaN anywhere:
    a prompt impossible under every concept has ``zero`` True, ``bayes`` and ``posterior`` all 0 and
    ``log_evidence = -inf``; a concept under which it is impossible has ``log_lik = -inf``, posterior 0.

    Attributes:
        bayes: ``[..., A]`` P(next symbol | prompt; p_pre) over all symbols.
        per_concept: ``[..., C, A]`` P(next symbol | prompt, c) (0 where the prompt is impossible under c).
        log_lik: ``[..., C]`` log P(prompt | c) (``-inf`` when exactly 0).
        posterior: ``[..., C]`` P(c | prompt; p_pre).
        log_evidence: ``[...]`` log P(prompt; p_pre) = logsumexp_c(log_lik) - log C.
        zero: ``[...]`` bool, P(prompt; p_pre) = 0 exactly.
    """

    bayes: jax.Array
    per_concept: jax.Array
    log_lik: jax.Array
    posterior: jax.Array
    log_evidence: jax.Array
    zero: jax.Array


def _combine(logz, pred) -> GincBayes:
    C = logz.shape[-1]
    m = logz.max(-1)
    zero = jnp.isneginf(m)
    w = jnp.exp(logz - jnp.where(zero, 0.0, m)[..., None])
    tot = w.sum(-1)
    post = w / jnp.where(zero, 1.0, tot)[..., None]
    bayes = jnp.einsum("...c,...cy->...y", post, pred)
    ev = jnp.where(zero, -jnp.inf, m + jnp.log(jnp.where(zero, 1.0, tot)) - jnp.log(C))
    return GincBayes(bayes, pred, logz, post, ev, zero)


@jax.jit
def _bayes_flat_kernel(tab: GincTables, tokens, lengths):
    L = tokens.shape[1]
    toks = jnp.where(jnp.arange(L)[None, :] < lengths[:, None], tokens, -1)
    msg, logz = _f_init(tab, toks[:, 0])
    msg, logz, prev = _f_steps(tab, msg, logz, jnp.maximum(toks[:, 0], 0), toks[:, 1:])
    return _combine(logz, _f_predict(tab, msg, prev))


@partial(jax.jit, static_argnames=("grid",))
def _bayes_nested_kernel(tab: GincTables, demos_x, demos_y, x_test, grid):
    P, N, _ = demos_x.shape
    out = {}
    pos = tuple(n for n in grid if n > 0)
    if 0 in grid:
        m, lz = _f_init(tab, x_test[:, 0])
        m, lz, prev = _f_steps(tab, m, lz, x_test[:, 0], x_test[:, 1:], pad=False)
        out[0] = _combine(lz, _f_predict(tab, m, prev))
    if pos:
        toks = jnp.concatenate([demos_x, demos_y[..., None], jnp.full((P, N, 1), DELIM, demos_x.dtype)], -1)
        m0, lz0 = _f_init(tab, toks[:, 0, 0])
        m0, lz0, _ = _f_steps(tab, m0, lz0, toks[:, 0, 0], toks[:, 0, 1:], pad=False)
        delim = jnp.full((P,), DELIM, toks.dtype)

        def demo(carry, tk):
            m, lz, _ = _f_steps(tab, *carry, delim, tk, pad=False)
            return (m, lz), (m, lz)

        if N > 1:
            _, (Ms, Ls) = jax.lax.scan(demo, (m0, lz0), jnp.moveaxis(toks[:, 1:], 1, 0))
            Ms = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), m0, Ms)
            Ls = jnp.concatenate([lz0[None], Ls])
        else:
            Ms, Ls = jax.tree.map(lambda a: a[None], m0), lz0[None]
        idx = jnp.asarray([n - 1 for n in pos])
        G = len(pos)
        m = jax.tree.map(lambda a: a[idx].reshape((G * P,) + a.shape[2:]), Ms)
        lz = Ls[idx].reshape(G * P, -1)
        xt = jnp.broadcast_to(x_test, (G,) + x_test.shape).reshape(G * P, -1)
        m, lz, prev = _f_steps(tab, m, lz, jnp.full((G * P,), DELIM, xt.dtype), xt, pad=False)
        res = _combine(lz, _f_predict(tab, m, prev))
        for g, n in enumerate(pos):
            out[n] = jax.tree.map(lambda r: r.reshape((G, P) + r.shape[1:])[g], res)
    return jax.tree.map(lambda *r: jnp.stack(r), *[out[n] for n in grid])


def _check_tokens(tokens, A: int, what: str):
    t = np.asarray(tokens)
    if not np.issubdtype(t.dtype, np.integer):
        raise GincError(f"{what} has dtype {t.dtype}; expected integer symbols")
    if t.size and (t.min() < -1 or t.max() >= A):
        bad = t.max() if t.max() >= A else t.min()
        raise GincError(f"{what} holds symbol {int(bad)}; expected symbols 0..{A - 1} (-1 = padding)")


def bayes_flat(params: GincParams | GincTables, tokens, lengths, num_symbols: int | None = None,
               dtype=jnp.float64) -> GincBayes:
    """Exact Bayes under p_pre for flat prompts of mixed lengths.

    ``tokens [P, L]`` int (the first ``lengths[p]`` entries are prompt p: ``x_1 y_1 / … x_n y_n / x_test``
    or any symbol sequence; the rest is ignored), ``lengths [P]`` int in ``1..L``. ``params`` are the
    pretraining concepts (or their :func:`tables`). Returns :class:`GincBayes` with leading dim ``[P]``.
    """
    tab = params if isinstance(params, GincTables) else tables(params, dtype)
    A = tab.pred.shape[0]
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
        raise GincError(f"tokens {tokens.shape} / lengths {lengths.shape}; expected [P, L] and [P]")
    if lengths.size and (lengths.min() < 1 or lengths.max() > tokens.shape[1]):
        raise GincError(f"lengths range {lengths.min()}..{lengths.max()}; expected 1..{tokens.shape[1]}")
    valid = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    _check_tokens(np.where(valid, tokens, 0), A, "tokens")
    if np.any(valid & (tokens < 0)):
        raise GincError("tokens hold padding (-1) inside a prompt's length; expected symbols there")
    return _bayes_flat_kernel(tab, jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32))


def bayes_nested(params: GincParams | GincTables, demos_x, demos_y, x_test, grid,
                 dtype=jnp.float64) -> GincBayes:
    """Exact Bayes under p_pre at every n of ``grid`` in one pass over the demonstrations.

    The prompt for n is ``x_1 y_1 / … x_n y_n / x_test`` (n = 0: ``x_test`` alone, a document start).
    Shapes: ``demos_x [P, N, k-1]``, ``demos_y [P, N]``, ``x_test [P, k-1]`` int; ``grid`` a tuple of
    n in ``0..N``. One scan over the N demonstrations keeps the message after every '/', and each n
    of the grid branches it through x_test. Returns :class:`GincBayes` with leading dims ``[G, P]``.
    """
    tab = params if isinstance(params, GincTables) else tables(params, dtype)
    A = tab.pred.shape[0]
    dx, dy, xt = np.asarray(demos_x), np.asarray(demos_y), np.asarray(x_test)
    if dx.ndim != 3 or dy.shape != dx.shape[:2] or xt.shape != (dx.shape[0], dx.shape[2]) or xt.shape[1] < 1:
        raise GincError(f"demos_x {dx.shape}, demos_y {dy.shape}, x_test {xt.shape}; expected [P, N, k-1], "
                        f"[P, N], [P, k-1] with k >= 2")
    grid = tuple(int(n) for n in grid)
    if not grid or min(grid) < 0 or max(grid) > dx.shape[1]:
        raise GincError(f"grid {grid}; expected a non-empty tuple of n in 0..{dx.shape[1]} (the demonstrations given)")
    for arr, name in ((dx, "demos_x"), (dy, "demos_y"), (xt, "x_test")):
        _check_tokens(arr, A, name)
        if arr.size and arr.min() < 0:
            raise GincError(f"{name} holds padding (-1); expected symbols 0..{A - 1}")
    return _bayes_nested_kernel(tab, jnp.asarray(dx, jnp.int32), jnp.asarray(dy, jnp.int32),
                                jnp.asarray(xt, jnp.int32), grid)


# ------------------------------------------------------------------ GINC's score (the Oracle)


class Oracle(NamedTuple):
    """GINC's ``score``: P(next symbol | x_test) under the true concept and GINC's start distribution.

    Attributes:
        probs: ``[P, A]`` the predictive over all symbols (all 0 where x_test is impossible).
        label: ``[P]`` int, ``argmax`` of ``probs`` (first maximum, as ``np.argmax``); where x_test is
            impossible GINC's ``score`` returns NaNs and ``np.argmax`` gives 0 ('/'), so the label is 0.
        defined: ``[P]`` bool, P(x_test | concept, start) > 0.
    """

    probs: jax.Array
    label: jax.Array
    defined: jax.Array


@jax.jit
def _oracle_kernel(tab: GincTables, x_test, concept, start):
    C = tab.pair.shape[1]
    st = jnp.broadcast_to(start[:, None, :], (start.shape[0], C, start.shape[1]))
    a, lz = _init(tab, st, x_test[:, 0])
    a, lz, prev = _steps(tab, a, lz, x_test[:, 0], x_test[:, 1:])
    pred = _predict(tab, a, prev)  # [P, C, A]
    probs = jnp.take_along_axis(pred, concept[:, None, None], axis=1)[:, 0]
    defined = ~jnp.isneginf(jnp.take_along_axis(lz, concept[:, None], axis=1)[:, 0])
    label = jnp.where(defined, jnp.argmax(probs, -1), DELIM)
    return Oracle(probs, label.astype(jnp.int32), defined)


def start_id(params: GincParams, start_slot) -> np.ndarray:
    """GINC's ID start distribution ``[P, V*S]``: uniform over values at ``start_slot [P]``."""
    V, S = params.num_values, params.num_slots
    ss = np.asarray(start_slot)
    out = np.zeros(ss.shape + (V * S,))
    out[np.arange(ss.size)[:, None], np.arange(V)[None, :] * S + ss.reshape(-1, 1)] = 1.0 / V
    return out


def start_ood(params: GincParams, num: int) -> np.ndarray:
    """GINC's OOD start distribution ``[P, V*S]``: uniform over all V·S states (slot 0 included)."""
    d = params.num_values * params.num_slots
    return np.full((num, d), 1.0 / d)


def oracle(params: GincParams | GincTables, x_test, concept, start, dtype=jnp.float64) -> Oracle:
    """GINC's ``score(hmm_c, x_test, start)``: forward on x_test alone from ``start``, the last filtered
    posterior times the transition, times the emissions.

    ``x_test [P, k-1]`` int, ``concept [P]`` int (index into ``params``' concepts), ``start [P, V*S]``
    (:func:`start_id` / :func:`start_ood`). Returns :class:`Oracle`.
    """
    tab = params if isinstance(params, GincTables) else tables(params, dtype)
    xt = np.asarray(x_test)
    _check_tokens(xt, tab.pred.shape[0], "x_test")
    if xt.ndim != 2 or xt.shape[1] < 1 or (xt.size and xt.min() < 0):
        raise GincError(f"x_test {xt.shape}; expected [P, k-1] symbols with k >= 2")
    c = np.asarray(concept)
    if c.shape != xt.shape[:1] or (c.size and (c.min() < 0 or c.max() >= tab.pair.shape[1])):
        raise GincError(f"concept {c.shape} range {c.min() if c.size else None}..{c.max() if c.size else None}; "
                        f"expected [P] in 0..{tab.pair.shape[1] - 1}")
    return _oracle_kernel(tab, jnp.asarray(xt, jnp.int32), jnp.asarray(c, jnp.int32),
                          jnp.asarray(start, tab.pair.dtype))


# ------------------------------------------------------------------ GINC's prompt laws


class GincPrompts(NamedTuple):
    """Prompts of GINC's ``ID_sample`` / ``OOD_sample`` law (P prompts, n examples, length k).

    Attributes:
        demos_x: ``[P, n, k-1]`` the examples' inputs.
        demos_y: ``[P, n]`` the examples' labels: the sampled k-th tokens.
        x_test: ``[P, k-1]`` the test input (first k-1 tokens of the last example).
        label: ``[P]`` the test label: the Oracle's argmax over all symbols (GINC's rule).
        sampled_y: ``[P]`` the sampled k-th token of the test example (dropped by GINC).
        concept: ``[P]`` the concept (index into the params passed in).
        start_slot: ``[P]`` the prompt's start slot (ID), -1 for OOD.
        slots, values: ``[P, n+1, k]`` the hidden slots and values of every example.
        oracle: ``[P, A]`` GINC's score on x_test (the label's distribution).
        oracle_defined: ``[P]`` bool, x_test possible under the concept and start (always for ID).
    """

    demos_x: jax.Array
    demos_y: jax.Array
    x_test: jax.Array
    label: jax.Array
    sampled_y: jax.Array
    concept: jax.Array
    start_slot: jax.Array
    slots: jax.Array
    values: jax.Array
    oracle: jax.Array
    oracle_defined: jax.Array


def _chain_one(key, value_T, slot_T, C: int, V: int, S: int, k: int, n: int):
    """ID_sample's hidden states for one prompt: ``(concept, start_slot, values [n+1,k], slots [n+1,k])``."""
    kc, ks, kv, kt = jax.random.split(key, 4)
    c = jax.random.randint(kc, (), 0, C)
    s0 = jax.random.randint(ks, (), 1, S)
    v0 = jax.random.randint(kv, (n + 1,), 0, V)
    lv, ls = jnp.log(value_T[c]), jnp.log(slot_T[c])

    def step(carry, j):
        v, s = carry
        kj = jax.random.fold_in(kt, j)
        # a row of kron(value_T, slot_T) factorises: the next value and slot are independent
        v = jax.random.categorical(jax.random.fold_in(kj, 0), lv[v])
        s = jax.random.categorical(jax.random.fold_in(kj, 1), ls[s])
        return (v, s), (v, s)

    s_init = jnp.full((n + 1,), s0)
    _, (vs, ss) = jax.lax.scan(step, (v0, s_init), jnp.arange(k - 1))
    values = jnp.concatenate([v0[None], vs]).T
    slots = jnp.concatenate([s_init[None], ss]).T
    return c, s0, values, slots


def _ood_one(key, C: int, V: int, S: int, k: int, n: int):
    """OOD_sample's hidden states for one prompt: each example its own uniform slot pattern in
    ``1..S-1`` and one uniform value; the concept uniform."""
    kc, ks, kv = jax.random.split(key, 3)
    c = jax.random.randint(kc, (), 0, C)
    slots = jax.random.randint(ks, (n + 1, k), 1, S)
    values = jnp.broadcast_to(jax.random.randint(kv, (n + 1, 1), 0, V), (n + 1, k))
    return c, jnp.int32(-1), values, slots


@partial(jax.jit, static_argnames=("k", "n", "num", "law", "V", "S", "C"))
def _sample_hidden(key, value_T, slot_T, k, n, num, law, V, S, C):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    if law == "id":
        return jax.vmap(lambda kk: _chain_one(kk, value_T, slot_T, C, V, S, k, n))(keys)
    return jax.vmap(lambda kk: _ood_one(kk, C, V, S, k, n))(keys)


def sample_prompts(key, params: GincParams, k: int, n: int, num: int, law: str = "id",
                   dtype=jnp.float64) -> GincPrompts:
    """``num`` prompts of GINC's law with n examples of length k (k-1 inputs + 1 label), drawn from the
    concepts of ``params`` (pass the ID params for ``law="id"``, the OOD params for ``law="ood"``).

    - ``"id"`` (GINC's ``ID_sample``): a concept uniformly; one start slot uniform in ``1..S-1`` for the
      prompt; each of the n+1 examples starts at (uniform value, start slot) and runs the concept's full
      chain for k-1 transitions (k states, k tokens). Labels of the demonstrations are the sampled k-th
      tokens; the test label is the argmax over all symbols of GINC's score on x_test under the concept
      started uniformly over values at the start slot.
    - ``"ood"`` (GINC's ``OOD_sample``): a concept uniformly; each example an independent uniform slot
      pattern of length k in ``1..S-1`` with one uniform value for the whole example (not a chain);
      the test label is the argmax of GINC's score under the concept started uniformly over all states.
    Prompt p uses the key ``fold_in(key, p)``. ``n = 0`` gives prompts that are x_test alone.
    """
    if law not in LAWS:
        raise GincError(f"law = {law!r}; expected one of {LAWS}")
    for name, val, lo in (("k", k, 2), ("n", n, 0), ("num", num, 1)):
        if int(val) != val or val < lo:
            raise GincError(f"{name} = {val!r}; expected an integer >= {lo}")
    V, S, C = params.num_values, params.num_slots, params.num_concepts
    c, s0, values, slots = _sample_hidden(key, jnp.asarray(params.value_T, jnp.float64),
                                          jnp.asarray(params.slot_T, jnp.float64), int(k), int(n), int(num),
                                          law, V, S, C)
    toks = jnp.asarray(params.memory)[values, slots]  # [P, n+1, k]
    x_test = toks[:, n, :k - 1]
    start = start_id(params, np.asarray(s0)) if law == "id" else start_ood(params, int(num))
    orc = oracle(params, x_test, c, start, dtype)
    return GincPrompts(toks[:, :n, :k - 1], toks[:, :n, k - 1], x_test, orc.label, toks[:, n, k - 1], c, s0,
                       slots, values, orc.probs, orc.defined)


def prompt_tokens(demos_x, demos_y, x_test, n: int | None = None):
    """GINC's flat prompt ``x_1 y_1 / … x_n y_n / x_test``: ``(tokens [P, n(k+1) + k-1], length)``.

    ``n`` defaults to all the demonstrations given (``demos_x.shape[1]``).
    """
    dx, dy, xt = np.asarray(demos_x), np.asarray(demos_y), np.asarray(x_test)
    P, N, l = dx.shape
    n = N if n is None else int(n)
    if not 0 <= n <= N:
        raise GincError(f"n = {n}; expected 0..{N} (the demonstrations given)")
    body = np.concatenate([dx[:, :n], dy[:, :n, None], np.full((P, n, 1), DELIM, dx.dtype)], -1).reshape(P, -1)
    toks = np.concatenate([body, xt], -1)
    return toks, toks.shape[1]


def bayes_flat_kernel(tab: GincTables, tokens, lengths) -> GincBayes:
    """:func:`bayes_flat` without host-side input checks, for device arrays (e.g. a batch sharded over
    devices): ``tokens [P, L]`` int32 valid symbols, ``lengths [P]`` int32 in ``1..L``. Jitted."""
    return _bayes_flat_kernel(tab, tokens, lengths)


def bayes_nested_kernel(tab: GincTables, demos_x, demos_y, x_test, grid: tuple) -> GincBayes:
    """:func:`bayes_nested` without host-side input checks, for device arrays (int32, valid symbols;
    ``grid`` a static tuple of n in 0..N). Jitted."""
    return _bayes_nested_kernel(tab, demos_x, demos_y, x_test, tuple(grid))


def ginc_grid(ks=GINC_KS, ns=GINC_NS, max_tokens: int = GINC_MAX_TOKENS):
    """GINC's (k, n) pairs: every k with every n except those with (k+1)·n > max_tokens."""
    return [(k, n) for k in ks for n in ns if (k + 1) * n <= max_tokens]
