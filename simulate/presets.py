"""Pretraining distributions: the paper's synthetic HMMs (`han`), GINC's documents (`ginc`), GINC's
concepts with a restarting delimiter (`ginc-restart`) and user files (`custom`).

All sampling uses explicit JAX PRNG keys and float64 (``simulate.runtime.setup`` enables it), so
one seed gives one HMM. Results are validated :class:`theory.hmm.HMM` objects (numpy float64).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, asdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from theory.errors import HMMError
from theory.hmm import HMM, make_hmm, ragged_message


@dataclass(frozen=True)
class HanConfig:
    """The paper's App. C setting: K tasks, each a block of hidden states with its own start state.

    Transitions are Dirichlet(trans_conc) inside each block; emissions put ``delim_rate`` on the
    delimiter (token 0; the same for every state, so the delimiter itself says nothing about the
    task) and the rest Dirichlet(emit_conc) over the other tokens. The delimiter restarts each
    state to its task's start state, leaking ``leak`` to the other tasks' starts.
    """

    num_tasks: int = 8
    num_states: int = 80
    num_tokens: int = 100
    trans_conc: float = 0.5
    emit_conc: float = 0.1
    delim_rate: float = 0.05
    leak: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class GincConfig:
    """GINC (Xie et al. 2022) as its generator makes it: the pretraining law p_pre of its documents.

    Parameters are GINC's published ones (``reference=1``: ``ginc_reference.npz``, see
    :func:`ginc_reference_path`) or drawn with GINC's construction (``reference=0``, the default:
    :func:`simulate.ginc.draw_params` with ``seed``): ``n_values`` entities × ``n_slots`` properties,
    deterministic emissions from a shared memory matrix over ``vocab`` symbols (slot 0 emits the
    delimiter '/' = 0); concept c moves with ``kron(value_T, slot_T[c])`` (a shared entity matrix,
    a per-concept property matrix, each a softmax((u-.5)/transition_temp) mixture of random
    permutations, the entity one mixed with ``value_identity_coeff``·I) and starts from its own
    softmax((u-.5)/start_temp) distribution. ``n_concepts`` pretraining concepts and ``n_ood`` held
    out (GINC's OOD prompts).

    The HMM is the block-diagonal union of the pretraining concepts: a document picks one concept
    uniformly, starts from its start distribution and runs its chain; '/' is an ordinary emission
    and the chain moves on with T (no restart: R = T, and the delimiter's weight is its emission
    probability). With ``reference=1`` the drawing fields are not used (the file's values are).
    """

    vocab: int = 50
    n_values: int = 10
    n_slots: int = 10
    n_concepts: int = 5
    n_ood: int = 5
    transition_temp: float = 0.1
    start_temp: float = 10.0
    value_identity_coeff: float = 0.9
    seed: int = 0
    reference: int = 0


@dataclass(frozen=True)
class GincRestartConfig:
    """GINC's concepts with a restarting delimiter (the paper's Assumption 1), not GINC's own law.

    Entities × properties hidden states with deterministic emissions from a shared memory matrix
    (property 0 = delimiter); a concept is a property transition matrix, a softmax((u-.5)/t)
    mixture of ``n_slots`` random permutations; a shared entity matrix (1-vic)·P + vic·I (drawn
    here with this module's own PRNG stream). The unified HMM is the block-diagonal union of the
    concepts. The delimiter '/' is emitted by the property-0 states (its weight is that emission
    probability) and restarts the concept's chain at ``start_slot`` with a uniform entity, in
    documents and prompts alike (one law for the corpus and for Bayes).
    """

    vocab: int = 50
    n_values: int = 10
    n_slots: int = 10
    n_concepts: int = 5
    transition_temp: float = 0.1
    start_temp: float = 10.0
    value_identity_coeff: float = 0.9
    start_slot: int = 1
    seed: int = 0


PRESET_CONFIGS = {"han": HanConfig, "ginc": GincConfig, "ginc-restart": GincRestartConfig}
PRESETS = ("han", "ginc", "ginc-restart", "custom")


def _check_positive(name, value, *, integer=False, allow_zero=False):
    ok = (value >= 0) if allow_zero else (value > 0)
    if integer and int(value) != value:
        ok = False
    if not ok or not np.isfinite(value):
        raise HMMError(f"{name}={value!r}, expected a {'non-negative' if allow_zero else 'positive'} {'integer' if integer else 'number'}")


# One compiled sampler (persistently cached by simulate.runtime.setup) instead of the dozens of
# small eager dispatches of jax.random.dirichlet's gamma sampler: the same draws bit for bit, ~2 s
# less per command on 2 cores.
_dirichlet = jax.jit(jax.random.dirichlet, static_argnames=("shape", "dtype"))


def han_hmm(cfg: HanConfig = HanConfig()) -> HMM:
    """Sample the paper's synthetic HMM (see :class:`HanConfig`)."""

    for name in ("num_tasks", "num_states", "num_tokens"):
        _check_positive(name, getattr(cfg, name), integer=True)
    for name in ("trans_conc", "emit_conc"):
        _check_positive(name, getattr(cfg, name))
    K, d, m = cfg.num_tasks, cfg.num_states, cfg.num_tokens
    if d % K:
        raise HMMError(f"num_states={d} is not a multiple of num_tasks={K}; expected equal task blocks")
    if m < 3:
        raise HMMError(f"num_tokens={m}, expected at least 3 (delimiter and two labels)")
    if not 0 < cfg.delim_rate < 1:
        raise HMMError(f"delim_rate={cfg.delim_rate}, expected a number in (0, 1)")
    if not 0 <= cfg.leak < 1 or (cfg.leak > 0 and K < 2):
        raise HMMError(f"leak={cfg.leak}, expected a number in [0, 1) (and > 0 only with 2+ tasks)")
    b = d // K
    key = jax.random.PRNGKey(cfg.seed)
    kT, kB = jax.random.split(key)
    blocks = _dirichlet(kT, jnp.full((b,), cfg.trans_conc, jnp.float64), shape=(K, b))
    T = np.zeros((d, d))
    for k in range(K):
        T[k * b:(k + 1) * b, k * b:(k + 1) * b] = np.asarray(blocks[k])
    emit = np.asarray(_dirichlet(kB, jnp.full((m - 1,), cfg.emit_conc, jnp.float64), shape=(d,)))
    B = np.concatenate([np.full((d, 1), cfg.delim_rate), (1 - cfg.delim_rate) * emit], axis=1)
    task_of_state = np.repeat(np.arange(K), b)
    starts = np.arange(K) * b
    task_start = np.eye(d)[starts]
    R = np.zeros((d, d))
    for s in range(d):
        k = task_of_state[s]
        R[s, starts] = cfg.leak / (K - 1) if K > 1 else 0.0
        R[s, starts[k]] = 1 - cfg.leak
    p0 = task_start.mean(axis=0)
    return make_hmm(T, B, R, p0, task_start, task_of_state, 0)


def _softmax_temp(u, temp):
    z = (u - 0.5) / temp
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def ginc_restart_hmm(cfg: GincRestartConfig = GincRestartConfig()) -> HMM:
    """GINC's concepts with a restarting delimiter as one block-diagonal HMM (see :class:`GincRestartConfig`)."""
    for name in ("vocab", "n_values", "n_slots", "n_concepts"):
        _check_positive(name, getattr(cfg, name), integer=True)
    for name in ("transition_temp", "start_temp"):
        _check_positive(name, getattr(cfg, name))
    if cfg.vocab < 3:
        raise HMMError(f"vocab={cfg.vocab}, expected at least 3")
    if not 1 <= cfg.start_slot < cfg.n_slots:
        raise HMMError(f"start_slot={cfg.start_slot}, expected 1..{cfg.n_slots - 1} (slot 0 is the delimiter)")
    if not 0 <= cfg.value_identity_coeff <= 1:
        raise HMMError(f"value_identity_coeff={cfg.value_identity_coeff}, expected a number in [0, 1]")
    nv, ns, C = cfg.n_values, cfg.n_slots, cfg.n_concepts
    key = jax.random.PRNGKey(cfg.seed)
    k_mem, k_val, k_start, k_con = jax.random.split(key, 4)

    def perm_mixture(k, n):
        ku, kp = jax.random.split(k)
        w = _softmax_temp(np.asarray(jax.random.uniform(ku, (n,))), cfg.transition_temp)
        perms = [np.asarray(jax.random.permutation(jax.random.fold_in(kp, j), n)) for j in range(n)]
        return sum(w[j] * np.eye(n)[perms[j]] for j in range(n))

    memory = np.array(jax.random.randint(k_mem, (nv, ns), 1, cfg.vocab))
    memory[:, 0] = 0
    value_T = (1 - cfg.value_identity_coeff) * perm_mixture(k_val, nv) + cfg.value_identity_coeff * np.eye(nv)
    S = nv * ns  # state i <-> (value i // ns, slot i % ns)
    B1 = np.zeros((S, cfg.vocab))
    B1[np.arange(S), memory.reshape(-1)] = 1.0
    d = C * S
    T = np.zeros((d, d))
    p0 = np.zeros(d)
    task_start = np.zeros((C, d))
    for c in range(C):
        kc = jax.random.fold_in(k_con, c)
        slot_T = perm_mixture(kc, ns)
        T[c * S:(c + 1) * S, c * S:(c + 1) * S] = np.kron(value_T, slot_T)
        start = _softmax_temp(np.asarray(jax.random.uniform(jax.random.fold_in(k_start, c), (S,))), cfg.start_temp)
        p0[c * S:(c + 1) * S] = start / C
        task_start[c, c * S + np.arange(nv) * ns + cfg.start_slot] = 1.0 / nv
    B = np.tile(B1, (C, 1))
    task_of_state = np.repeat(np.arange(C), S)
    R = task_start[task_of_state]
    return make_hmm(T, B, R, p0, task_start, task_of_state, 0)


def ginc_reference_path() -> Path:
    """Where ``--ginc-params reference`` reads GINC's published parameters: ``$ICL_KERNEL_GINC_REFERENCE``
    if set, else ``../shared/data/ginc/ginc_reference.npz`` relative to the repository root."""
    import os

    env = os.environ.get("ICL_KERNEL_GINC_REFERENCE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ginc" / "ginc_reference.npz"


def ginc_params(cfg: GincConfig = GincConfig(), path: str | Path | None = None):
    """GINC's ``(id_params, ood_params)`` (:class:`simulate.ginc.GincParams`) for ``cfg``.

    ``cfg.reference == 1``: read from ``path`` (default :func:`ginc_reference_path`); else drawn
    with GINC's construction from ``cfg.seed``. Raises a one-line error for a missing file.
    """
    from simulate import ginc

    if cfg.reference not in (0, 1):
        raise HMMError(f"ginc parameter reference={cfg.reference!r}, expected 0 (draw) or 1 (GINC's published file)")
    if cfg.reference:
        return ginc.load_reference(path if path is not None else ginc_reference_path())
    if path is not None:
        raise HMMError(f"a GINC parameter file ({path}) is given with reference=0; expected reference=1")
    return ginc.draw_params(cfg.seed, vocab=cfg.vocab, n_values=cfg.n_values, n_slots=cfg.n_slots,
                            n_id=cfg.n_concepts, n_ood=cfg.n_ood, transition_temp=cfg.transition_temp,
                            start_temp=cfg.start_temp, value_identity_coeff=cfg.value_identity_coeff)


def ginc_pretrain_hmm(params) -> HMM:
    """p_pre of GINC's documents as one HMM, from :class:`simulate.ginc.GincParams` (the ID concepts).

    Block c (states ``c·V·S + v·S + s``) is concept c: ``T = kron(value_T[c], slot_T[c])``, one-hot
    emissions of the memory matrix. ``p0 = startprob / C`` (a document picks a concept uniformly
    and starts from its start distribution); ``task_start[c] = startprob[c]`` on block c. The
    delimiter is an ordinary emission: ``R = T`` and its weight is ``B[:, '/']``, so the HMM's
    operators are those of a plain HMM and documents never restart.
    """
    from simulate import ginc

    C = params.num_concepts
    Tc = ginc.transmat(params)  # [C, S, S]
    B1 = ginc.emissions(params)
    S = Tc.shape[1]
    d = C * S
    T = np.zeros((d, d))
    task_start = np.zeros((C, d))
    start = np.asarray(params.startprob, np.float64)
    for c in range(C):
        T[c * S:(c + 1) * S, c * S:(c + 1) * S] = Tc[c]
        task_start[c, c * S:(c + 1) * S] = start[c] / start[c].sum()
    p0 = task_start.mean(axis=0)
    return make_hmm(T, np.tile(B1, (C, 1)), T.copy(), p0, task_start, np.repeat(np.arange(C), S), ginc.DELIM)


CUSTOM_KEYS = "T, B, delim (required); task_of_state, task_start or starts, R, p0, delim_weight (optional)"


def load_custom(path: str | Path) -> HMM:
    """An HMM from an ``.npz`` or ``.json`` file (keys: see ``CUSTOM_KEYS``).

    Defaults: one task holding every state (``task_of_state`` zeros) starting at ``p0`` or state
    0; ``R`` restarts each state to its task's start; ``p0`` is the mean of the task starts;
    ``delim_weight`` is ``B[:, delim]``.
    """
    path = Path(path)
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise HMMError(f"{path}: expected a JSON object with keys {CUSTOM_KEYS}")
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        else:
            raise HMMError(f"{path}: unknown suffix {path.suffix!r}, expected .npz or .json")
    except HMMError:
        raise
    except FileNotFoundError:
        raise HMMError(f"custom HMM file {path} does not exist") from None
    except Exception as exc:  # unreadable / corrupt
        raise HMMError(f"cannot read custom HMM file {path}: {type(exc).__name__}: {exc}") from None
    for k, v in raw.items():
        try:
            arr = np.asarray(v)
        except ValueError:
            raise HMMError(f"{path}: {ragged_message(k)}") from None
        if arr.dtype == object:
            raise HMMError(f"{path}: {ragged_message(k)}")
        if np.iscomplexobj(arr):
            raise HMMError(f"{path}: {k} has complex entries; expected real probabilities")
    missing = [k for k in ("T", "B", "delim") if k not in raw]
    if missing:
        raise HMMError(f"{path}: missing key(s) {missing}; expected {CUSTOM_KEYS}")
    try:
        T = np.asarray(raw["T"], float)
        d = T.shape[0] if T.ndim == 2 else 0
        tos = np.asarray(raw.get("task_of_state", np.zeros(d, int)))
        if "task_start" in raw:
            task_start = np.asarray(raw["task_start"], float)
        elif "starts" in raw:
            task_start = np.eye(d)[np.asarray(raw["starts"], int)]
        elif "p0" in raw:
            task_start = np.asarray(raw["p0"], float)[None]
        else:
            task_start = np.eye(d)[[0]]
        task_start = np.atleast_2d(task_start)
        if task_start.shape[1:] != (d,):
            raise HMMError(f"{path}: task_start/starts give shape {task_start.shape}, expected [K, {d}]")
        if tos.size and (tos.min() < 0 or tos.max() >= task_start.shape[0]):
            raise HMMError(f"{path}: task_of_state values outside 0..{task_start.shape[0] - 1}")
        R = np.asarray(raw["R"], float) if "R" in raw else task_start[tos]
        p0 = np.asarray(raw["p0"], float) if "p0" in raw else task_start.mean(axis=0)
        dw = np.asarray(raw["delim_weight"], float) if "delim_weight" in raw else None
        return make_hmm(T, raw["B"], R, p0, task_start, tos, raw["delim"], dw)
    except HMMError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise HMMError(f"{path}: invalid HMM arrays ({exc})") from None


def build_preset(preset: str, params: dict | None = None, custom_path: str | None = None) -> HMM:
    """Dispatch on the preset name; ``params`` overrides the preset's dataclass fields.

    ``custom_path``: the HMM file of ``custom``; for ``ginc`` with ``reference=1``, GINC's parameter
    file (default :func:`ginc_reference_path`).
    """
    if preset == "custom":
        if not custom_path:
            raise HMMError("preset 'custom' needs a file (--hmm-file PATH.npz|.json)")
        return load_custom(custom_path)
    cfg = preset_config(preset, params)
    if preset == "han":
        return han_hmm(cfg)
    if preset == "ginc-restart":
        return ginc_restart_hmm(cfg)
    return ginc_pretrain_hmm(ginc_params(cfg, custom_path)[0])


def preset_config(preset: str, params: dict | None = None):
    """The preset's config dataclass with ``params`` applied (one-line error for unknown keys or values)."""
    params = dict(params or {})
    cls = PRESET_CONFIGS.get(preset)
    if cls is None:
        raise HMMError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise HMMError(f"unknown {preset} parameter(s) {unknown}; expected some of {sorted(known)}")
    return cls(**{k: _param_value(preset, k, v, type(getattr(cls(), k))) for k, v in params.items()})


def _param_value(preset: str, key: str, value, kind: type):
    """A preset parameter converted to its field's type without truncation (one-line error otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise HMMError(f"{preset} parameter {key}={value!r} is not a number")
    if not np.isfinite(value):
        raise HMMError(f"{preset} parameter {key}={value!r}, expected a finite number")
    if kind is int:
        if float(value) != int(value):
            raise HMMError(f"{preset} parameter {key}={value!r}, expected an integer")
        return int(value)
    return float(value)


def preset_defaults(preset: str) -> dict:
    return asdict(PRESET_CONFIGS[preset]())
