"""Convergence sweeps over n: exact Bayes, Oracle and the kernel family, in a resumable run folder.

Run folder ``runs/<name>/``::

    config.json        resolved configuration (a sweep with another config is refused)
    hmm.npz            the HMM (theory.hmm.HMM fields)
    kernels.json       per kernel: Σ rank, conditioning, Monte Carlo error
    prompts/seed_S.npz the prompts of seed S (demos_x, demos_y, x_test, y_test, task)
    cells/seed_S.npz   per-prompt metrics [G, P] of seed S (and saved predictions)
    metrics.csv        per (kernel, n, seed): mean of every metric
    summary.json       per kernel and n: mean and 95% bootstrap band; slope; floor
    predictions.npz    with --save-predictions K: Bayes, Oracle, Kernel vectors of K prompts

Every file is written to a temporary name and renamed, so an interruption loses at most the
cell in progress; a rerun skips finished cells.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from theory.errors import KernelError
from theory.hmm import HMM, check_labels, input_tokens
from theory import kernels as tk

DEFAULT_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_KERNELS = ("predictive", "belief", "predictive:beta=20", "belief:beta=20", "gram", "pretrain", "task")
METRICS = ("kernel_vs_bayes_l1", "kernel_vs_oracle_l1", "argmax_agreement", "negative_weight_frac")
COMMON_METRICS = ("bayes_vs_oracle_l1", "posterior_mass_true_task", "bayes_oracle_agreement")
FORMAT_VERSION = 1


class RunFolderError(ValueError):
    """A run folder that cannot be used (made with another config, not writable)."""


class SweepConfigError(ValueError):
    """A sweep configuration that is invalid (one-line message)."""


@dataclass
class SweepConfig:
    """Everything that determines a sweep's numbers (the run folder's identity)."""

    preset: str = "han"
    preset_params: dict = field(default_factory=dict)
    hmm_file: str | None = None
    grid: tuple = DEFAULT_GRID
    seeds: tuple = (0, 1, 2, 3, 4)
    prompts_per_seed: int = 200
    length: int = 5
    labels: object = "auto"
    num_labels: int = 4
    label_mode: str = "sample"
    task: int | None = None
    kernels: tuple = DEFAULT_KERNELS
    dtype: str = "float32"
    save_predictions: int = 0

    def validate(self) -> None:
        g = list(self.grid)
        if not g or any((not isinstance(n, (int, np.integer))) or n <= 0 for n in g):
            raise SweepConfigError(f"grid {g} must be a non-empty list of demonstration counts n >= 1")
        if self.prompts_per_seed < 1:
            raise SweepConfigError(f"prompts per seed {self.prompts_per_seed}, expected >= 1")
        if not self.seeds:
            raise SweepConfigError("no seeds given; expected at least one")
        if self.length < 1:
            raise SweepConfigError(f"input length {self.length}, expected l >= 1")
        if self.label_mode not in ("sample", "argmax"):
            raise SweepConfigError(f"label mode {self.label_mode!r}, expected 'sample' or 'argmax'")
        if self.dtype not in ("float32", "float64"):
            raise SweepConfigError(f"dtype {self.dtype!r}, expected float32 or float64")
        if self.labels == "auto" and self.num_labels < 1:
            raise SweepConfigError(f"num_labels {self.num_labels}, expected >= 1")
        if self.save_predictions < 0:
            raise SweepConfigError(f"save_predictions {self.save_predictions}, expected >= 0")
        for k in self.kernels:
            tk.parse_kernel(k)


def auto_labels(hmm: HMM, k: int) -> list[int]:
    """The first k non-delimiter token ids that some hidden state can emit."""
    emittable = [o for o in range(hmm.num_tokens) if o != int(hmm.delim) and np.any(np.asarray(hmm.B)[:, o] > 0)]
    if k > len(emittable):
        raise SweepConfigError(f"num_labels {k} exceeds the {len(emittable)} emittable non-delimiter tokens")
    return emittable[:k]


def resolve(cfg: SweepConfig) -> tuple[dict, HMM]:
    """Validate, build the HMM, and return the resolved config dict (the run's identity)."""
    from simulate.presets import build_preset, preset_defaults

    cfg.validate()
    hmm = build_preset(cfg.preset, cfg.preset_params, cfg.hmm_file)
    labels = auto_labels(hmm, cfg.num_labels) if cfg.labels == "auto" else [int(y) for y in cfg.labels]
    labels = check_labels(hmm, labels).tolist()
    if cfg.task is not None and not 0 <= cfg.task < hmm.num_tasks:
        raise SweepConfigError(f"task {cfg.task} is outside 0..{hmm.num_tasks - 1}")
    params = dict(preset_defaults(cfg.preset), **cfg.preset_params) if cfg.preset != "custom" else {}
    kernels = [tk.parse_kernel(k) for k in cfg.kernels]
    out = dict(format_version=FORMAT_VERSION, preset=cfg.preset, preset_params=params,
               hmm_file=str(cfg.hmm_file) if cfg.hmm_file else None,
               grid=sorted(set(int(n) for n in cfg.grid)), seeds=[int(s) for s in cfg.seeds],
               prompts_per_seed=int(cfg.prompts_per_seed), length=int(cfg.length), labels=labels,
               label_mode=cfg.label_mode, task=cfg.task, kernels=[k.label for k in kernels],
               kernel_specs=[k.to_dict() for k in kernels], dtype=cfg.dtype,
               save_predictions=int(cfg.save_predictions))
    if cfg.preset == "custom":
        out["hmm_sha256"] = _sha256_arrays(hmm)
    return out, hmm


def _sha256_arrays(hmm: HMM) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in hmm:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_savez(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ------------------------------------------------------------------ kernels


def prepare_kernels(hmm: HMM, specs, length: int, seed: int = 0):
    """Build what each kernel needs once per run (Σ⁺ matrices) and report on it.

    Returns (prepared list of dicts with jnp-ready numpy arrays, info list for kernels.json).
    """
    import jax

    blocks = tk.block_structure(hmm)
    F = tk.feature_dim(blocks)
    prepared, infos = [], []
    m_in = len(input_tokens(hmm))
    cache: dict = {}
    for j, spec in enumerate(specs):
        info = dict(kernel=spec.label)
        if spec.name in tk.MATRIX_KERNELS:
            if F > 4096:
                raise KernelError(f"kernel {spec.name!r}: vec(T_x) has {F} dimensions on its support "
                                  f"(> 4096) for this HMM; use belief or predictive kernels")
            starts = {"gram": [None], "pretrain": [np.asarray(hmm.p0)],
                      "task": list(np.asarray(hmm.task_start))}[spec.name]
            invs = []
            for t, start in enumerate(starts):
                exact = spec.name == "gram" or m_in ** length <= spec.enum_limit
                ck = (spec.name, t, spec.mc_samples if not exact else 0)
                if ck not in cache:
                    if spec.name == "gram":
                        S, rel = tk.gram_matrix(hmm, length, blocks), 0.0
                    elif exact:
                        S, rel = tk.second_moment_exact(hmm, start, length, blocks), 0.0
                    else:
                        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000 * j + t)
                        S, rel = tk.second_moment_from_samples(
                            mc_features(key, hmm, start, length, spec.mc_samples, blocks))
                    cache[ck] = (S, rel)
                S, rel = cache[ck]
                inv, pinfo = tk.psd_pinv(S, spec.rtol, spec.ridge, what=f"Sigma for kernel {spec.label}")
                invs.append(inv)
                info.setdefault("per_start", []).append(dict(pinfo, exact=bool(exact), mc_rel_se=rel))
            prepared.append(dict(kind="matrix", A=np.stack(invs), per_task=spec.name == "task"))
        else:
            prepared.append(dict(kind=spec.name, beta=spec.beta))
        infos.append(info)
    return prepared, infos, blocks


def mc_features(key, hmm: HMM, start, length: int, num: int, blocks) -> np.ndarray:
    """φ(x) of ``num`` inputs x ~ P(x | start, no delimiter) (``[num, K b²]``, float64)."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(key, num)
    return np.asarray(_mc_features_jit(keys, hmm, jnp.asarray(start, jnp.float64), length, blocks))


def _mc_features_impl(keys, hmm, start, length, blocks):
    import jax
    import jax.numpy as jnp
    from simulate.sampling import sample_inputs

    xs, _ = jax.vmap(lambda k: sample_inputs(k, hmm, start, length, None))(keys)
    return tk.operator_features(hmm, xs, blocks, xp=jnp)


_MC_CACHE: dict = {}


def _mc_features_jit(keys, hmm, start, length, blocks):
    import jax

    ck = (length, blocks.K, blocks.b, blocks.order.tobytes())
    f = _MC_CACHE.get(ck)
    if f is None:
        f = _MC_CACHE[ck] = jax.jit(
            lambda k, h, s: _mc_features_impl(k, h, s, length, blocks))
    return f(keys, hmm, start)


def make_evaluator(hmm: HMM, prepared, blocks, labels, grid, dtype):
    """A jitted function of one prompt batch → Bayes/Oracle and every kernel's ŷ_n."""
    import jax
    import jax.numpy as jnp
    from simulate.forward import hmm_arrays, sweep_bayes

    A = hmm_arrays(hmm, jnp.dtype(dtype))
    labels_j = jnp.asarray(labels, jnp.int32)
    grid = tuple(grid)
    mats = [jnp.asarray(p["A"], jnp.float64) if p["kind"] == "matrix" else None for p in prepared]

    def evaluate(demos_x, demos_y, x_test, task):
        sb = sweep_bayes(A, demos_x, demos_y, x_test, task, labels_j, grid)
        lab_idx = jnp.argmax(demos_y[..., None] == labels_j, axis=-1)
        out = []
        need_phi = any(p["kind"] == "matrix" for p in prepared)
        if need_phi:
            phi_d = tk.operator_features(hmm, demos_x, blocks, xp=jnp)
            phi_t = tk.operator_features(hmm, x_test, blocks, xp=jnp)
        feats = {}
        for p, M in zip(prepared, mats):
            if p["kind"] == "matrix":
                if p["per_task"]:
                    u = jnp.einsum("pf,kfg->pkg", phi_t, M)
                    u = jnp.take_along_axis(u, task[:, None, None], axis=1)[:, 0]
                else:
                    u = phi_t @ M[0]
                Kv = jnp.einsum("pf,pnf->pn", u, phi_d)
            else:
                if p["kind"] not in feats:
                    fn = tk.belief_features if p["kind"] == "belief" else tk.predictive_features
                    feats[p["kind"]] = (fn(hmm, x_test, xp=jnp), fn(hmm, demos_x, xp=jnp))
                ft, fd = feats[p["kind"]]
                Kv = tk.kernel_values_vector(ft, fd, p["beta"], xp=jnp)
            yhat, den = tk.kernel_regression(Kv, lab_idx, len(labels), grid, xp=jnp)
            neg = jnp.cumsum((Kv < 0).astype(Kv.dtype), axis=1)[:, jnp.asarray(grid) - 1].T / jnp.asarray(grid)[:, None]
            out.append((yhat, den, neg))
        return sb, out

    return jax.jit(evaluate)


def chunk_metrics(sb, kout):
    """Per-prompt metrics (numpy) from one evaluated batch."""
    from simulate.metrics import l1, argmax_agree

    bayes = np.asarray(sb.bayes, float)
    oracle = np.asarray(sb.oracle, float)[None]
    common = dict(bayes_vs_oracle_l1=l1(bayes, oracle),
                  posterior_mass_true_task=np.asarray(sb.task_mass, float),
                  bayes_oracle_agreement=argmax_agree(bayes, np.broadcast_to(oracle, bayes.shape)))
    per_kernel = []
    for yhat, den, neg in kout:
        yhat = np.asarray(yhat, float)
        per_kernel.append(dict(kernel_vs_bayes_l1=l1(yhat, bayes), kernel_vs_oracle_l1=l1(yhat, oracle),
                               argmax_agreement=argmax_agree(yhat, bayes),
                               negative_weight_frac=np.asarray(neg, float)))
    return common, per_kernel


# ------------------------------------------------------------------ the run


def _check_folder(out: Path, resolved: dict, overwrite: bool) -> None:
    cfg_path = out / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except Exception:
            raise RunFolderError(f"{cfg_path} is unreadable; remove the folder or pick another --name") from None
        new = json.loads(json.dumps(resolved))  # the form it takes on disk
        if old != new:
            if not overwrite:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise RunFolderError(f"run folder {out} was made with another config (differs in {', '.join(diff)}); "
                                     "use another --name, or --overwrite to discard it")
            import shutil

            shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise RunFolderError(f"{out} exists and is not a run folder (no config.json); use another --name")


def run_sweep(cfg: SweepConfig, out_dir, *, overwrite: bool = False, quiet: bool = False,
              chunk: int = 256, stop_after_cells: int | None = None, log=print) -> dict:
    """Run (or resume) a sweep into ``out_dir`` and return its summary.

    ``stop_after_cells`` stops after computing that many new cells (for tests of resumption).
    """
    from tqdm.auto import tqdm
    from simulate.presets import save_hmm
    from simulate.sampling import sample_prompts

    t0 = time.perf_counter()
    resolved, hmm = resolve(cfg)
    out = Path(out_dir)
    _check_folder(out, resolved, overwrite)
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    (out / "cells").mkdir(exist_ok=True)
    if not (out / "config.json").exists():
        atomic_write_json(out / "config.json", resolved)
    if not (out / "hmm.npz").exists():
        save_hmm(hmm, out / "hmm.npz")
    specs = [tk.parse_kernel(k) for k in cfg.kernels]
    labels = resolved["labels"]
    grid = resolved["grid"]
    N = max(grid)
    todo = [s for s in resolved["seeds"] if not (out / "cells" / f"seed_{s}.npz").exists()]
    if todo:
        prepared, infos, blocks = prepare_kernels(hmm, specs, cfg.length)
        atomic_write_json(out / "kernels.json", infos)
        evaluate = make_evaluator(hmm, prepared, blocks, labels, grid, resolved["dtype"])
        P = resolved["prompts_per_seed"]
        bar = tqdm(total=len(todo) * P, unit="prompt", disable=quiet, delay=2.0,
                   desc=f"sweep {out.name}", dynamic_ncols=True)
        done_cells = 0
        for s in todo:
            pr = sample_prompts(prompt_key(s), hmm, labels, P, N, cfg.length, cfg.task, cfg.label_mode)
            atomic_savez(out / "prompts" / f"seed_{s}.npz", **pr._asdict())
            pieces = evaluate_in_chunks(evaluate, (pr.demos_x, pr.demos_y, pr.x_test, pr.task), chunk, bar)
            common, per_kernel, preds = _merge(pieces, resolved["save_predictions"])
            arrays = {f"common__{k}": v for k, v in common.items()}
            for j, pk in enumerate(per_kernel):
                arrays.update({f"k{j}__{k}": v for k, v in pk.items()})
            arrays.update(preds)
            atomic_savez(out / "cells" / f"seed_{s}.npz", **arrays)
            done_cells += 1
            if stop_after_cells is not None and done_cells >= stop_after_cells:
                bar.close()
                return {}
        bar.close()
    summary = summarise(out, resolved)
    summary["wall_seconds_this_call"] = time.perf_counter() - t0
    return summary


def prompt_key(seed: int):
    """The PRNG key of a seed's prompts (shared by sweeps and phenomena: same seed, same prompts)."""
    import jax

    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x50524F4D)


def evaluate_in_chunks(evaluate, arrays, chunk: int = 256, bar=None):
    """Run an evaluator over ``arrays = (demos_x, demos_y, x_test, task)`` in prompt batches.

    Each batch is padded to a multiple of the local devices and sharded over them; outputs come
    back as numpy, trimmed to the real prompts. Returns a list of ``(sb, kout)`` pieces.
    """
    import jax
    from simulate.runtime import batch_sharding

    sharding, ndev = batch_sharding()
    P = int(np.shape(arrays[0])[0])
    chunk = max(ndev, (min(chunk, P) + ndev - 1) // ndev * ndev)
    pieces = []
    for a in range(0, P, chunk):
        sl = slice(a, min(a + chunk, P))
        batch = [np.asarray(x[sl]) for x in arrays]
        real = batch[0].shape[0]
        pad = (-real) % ndev
        if pad:
            batch = [np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) for x in batch]
        dx, dy, xt, th = [jax.device_put(x, sharding) for x in batch]
        sb, kout = evaluate(dx, dy, xt, th)
        sb = type(sb)(*[np.asarray(v)[..., :real, :] if v.ndim == 3 else np.asarray(v)[..., :real] for v in sb])
        kout = [tuple(np.asarray(v)[..., :real, :] if v.ndim == 3 else np.asarray(v)[..., :real] for v in ko)
                for ko in kout]
        pieces.append((sb, kout))
        if bar is not None:
            bar.update(real)
    return pieces


def _merge(pieces, save_k):
    commons, kernels_ = [], []
    preds = {}
    for sb, kout in pieces:
        c, pk = chunk_metrics(sb, kout)
        commons.append(c)
        kernels_.append(pk)
    common = {k: np.concatenate([c[k] for c in commons], axis=-1) for k in commons[0]}
    per_kernel = [{k: np.concatenate([kk[j][k] for kk in kernels_], axis=-1) for k in kernels_[0][j]}
                  for j in range(len(kernels_[0]))]
    if save_k:
        bayes = np.concatenate([np.asarray(p[0].bayes) for p in pieces], axis=1)[:, :save_k]
        oracle = np.concatenate([np.asarray(p[0].oracle) for p in pieces], axis=0)[:save_k]
        preds["pred__bayes"] = bayes
        preds["pred__oracle"] = oracle
        for j in range(len(pieces[0][1])):
            preds[f"pred__k{j}"] = np.concatenate([np.asarray(p[1][j][0]) for p in pieces], axis=1)[:, :save_k]
    return common, per_kernel, preds


def load_cells(out: Path, resolved: dict):
    """Per-prompt metrics of all finished seeds: dict name -> [G, P_total] (kernel j as 'k{j}__...')."""
    arrays: dict[str, list] = {}
    seeds_done = []
    for s in resolved["seeds"]:
        p = out / "cells" / f"seed_{s}.npz"
        if not p.exists():
            continue
        seeds_done.append(s)
        with np.load(p) as z:
            for k in z.files:
                arrays.setdefault(k, []).append(z[k])
    return seeds_done, arrays


def summarise(out: Path, resolved: dict) -> dict:
    """Write metrics.csv, summary.json (and predictions.npz) from the cells; return the summary."""
    from simulate.metrics import bootstrap_mean, loglog_slope

    out = Path(out)
    grid = resolved["grid"]
    seeds_done, arrays = load_cells(out, resolved)
    if not seeds_done:
        raise RunFolderError(f"{out} has no finished cells to summarise")
    rows = []
    names = resolved["kernels"]
    for s_i, s in enumerate(seeds_done):
        for g_i, n in enumerate(grid):
            row = dict(n=n, seed=s)
            for k in COMMON_METRICS:
                row[k] = float(np.nanmean(arrays[f"common__{k}"][s_i][g_i]))
            for j, name in enumerate(names):
                r = dict(row, kernel=name)
                for k in METRICS:
                    r[k] = float(np.nanmean(arrays[f"k{j}__{k}"][s_i][g_i]))
                rows.append(r)
    buf = io.StringIO()
    fields = ["kernel", "n", "seed", *METRICS, *COMMON_METRICS]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in fields})
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())

    pooled = {k: np.concatenate(v, axis=-1) for k, v in arrays.items() if not k.startswith("pred__")}

    def band(x):
        m, lo, hi, c = bootstrap_mean(x)
        return dict(mean=m, lo=lo, hi=hi, count=c)

    summary = dict(config=resolved, seeds_done=seeds_done, num_prompts=int(pooled["common__bayes_vs_oracle_l1"].shape[1]),
                   common={k: [dict(band(pooled[f"common__{k}"][g]), n=n) for g, n in enumerate(grid)] for k in COMMON_METRICS},
                   kernels={})
    half = [g for g, n in enumerate(grid) if n <= max(1, int(np.sqrt(grid[0] * grid[-1])))] or [0]
    for j, name in enumerate(names):
        ks = {k: [dict(band(pooled[f"k{j}__{k}"][g]), n=n) for g, n in enumerate(grid)] for k in METRICS}
        e = pooled[f"k{j}__kernel_vs_bayes_l1"]
        slope = loglog_slope([grid[g] for g in half], e[half]) if len(half) >= 2 else (float("nan"),) * 3
        ks["slope_kernel_vs_bayes_l1"] = dict(value=slope[0], lo=slope[1], hi=slope[2],
                                              fitted_n=[grid[g] for g in half])
        ks["floor_kernel_vs_bayes_l1"] = dict(ks["kernel_vs_bayes_l1"][-1])
        ks["floor_kernel_vs_oracle_l1"] = dict(ks["kernel_vs_oracle_l1"][-1])
        summary["kernels"][name] = ks
    atomic_write_json(out / "summary.json", summary)
    if resolved["save_predictions"]:
        preds = {k: np.concatenate(v, axis=1 if k != "pred__oracle" else 0) for k, v in arrays.items() if k.startswith("pred__")}
        K = resolved["save_predictions"]
        preds = {k.replace("pred__", ""): (v[:K] if k == "pred__oracle" else v[:, :K]) for k, v in preds.items()}
        atomic_savez(out / "predictions.npz", grid=np.asarray(grid), labels=np.asarray(resolved["labels"]),
                     kernel_names=np.asarray(names), **preds)
    return summary


def format_table(summary: dict) -> str:
    """A plain-text table: per kernel, per n, L1 to Bayes / Oracle and agreement with bands."""
    grid = summary["config"]["grid"]
    lines = []
    c = summary["common"]
    lines.append(f"prompts: {summary['num_prompts']}  seeds: {summary['seeds_done']}  labels: {summary['config']['labels']}")
    lines.append("n      " + "  ".join(f"{n:>7d}" for n in grid))
    lines.append("Bayes-Oracle L1  " + " ".join(f"{r['mean']:.3f}" for r in c["bayes_vs_oracle_l1"]))
    lines.append("mass on θ*       " + " ".join(f"{r['mean']:.3f}" for r in c["posterior_mass_true_task"]))
    for name, ks in summary["kernels"].items():
        lines.append(f"[{name}]")
        for k, lab in (("kernel_vs_bayes_l1", "L1 to Bayes "), ("kernel_vs_oracle_l1", "L1 to Oracle"),
                       ("argmax_agreement", "agreement   ")):
            lines.append(f"  {lab} " + " ".join(f"{r['mean']:7.3f}" for r in ks[k]))
        s = ks["slope_kernel_vs_bayes_l1"]
        f = ks["floor_kernel_vs_bayes_l1"]
        neg = ks["negative_weight_frac"][-1]["mean"]
        lines.append(f"  slope {s['value']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] over n={s['fitted_n']}; "
                     f"floor (n={grid[-1]}) {f['mean']:.3f} [{f['lo']:.3f}, {f['hi']:.3f}]"
                     + (f"; negative weights {neg:.1%}" if neg > 0 else ""))
    return "\n".join(lines)
