"""Convergence sweeps over n: exact Bayes, Oracle and the kernel family, in a resumable run folder.

Run folder ``runs/<name>/`` (written through :mod:`icl_kernel.runfolder`)::

    config.json        resolved configuration (a sweep with another config is refused)
    hmm.npz            the HMM (theory.hmm.HMM fields)
    kernels.json       per kernel: Σ rank, conditioning, Monte Carlo error
    prompts/seed_S.npz the prompts of seed S (demos_x, demos_y, x_test, y_test, task); not written
                       with --no-save-prompts (config.json then says ``"save_prompts": false``)
    cells/seed_S.npz   per-prompt metrics ``[P, G]`` of seed S, named ``common|METRIC`` and
                       ``kernel|LABEL|METRIC`` (and ``pred|…`` vectors with --save-predictions)
    metrics.csv        per (kernel, n, seed): mean of every metric
    summary.json       per kernel and n: mean and 95% bootstrap band; slope; floor (strict JSON)
    predictions.npz    with --save-predictions K: Bayes, Oracle, kernel vectors of K prompts

A rerun with the same config resumes: finished cells (present and matching their checksum) are
kept; a missing or corrupted cell is recomputed.

Each seed is streamed (:func:`sweep_seed`): ``--chunk`` prompts are sampled, evaluated (sharded over
the devices, of every process under jax.distributed) and reduced to per-prompt metrics before the
next chunk is sampled, so memory is bounded by the chunk, plus the ``[P, G]`` metrics and (unless
--no-save-prompts) the seed's prompts.
The prompts do not depend on the chunk (prompt i is drawn from ``fold_in(key, i)``); the numbers
only to float rounding (XLA rounds batches of another shape differently: ~1 ulp in float32), and for
a given chunk they are those of sampling all P prompts first (tested bit for bit).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, RunFolderError, config_form, is_run_folder, open_existing
from simulate.evaluator import (COMMON_METRICS, FORWARDS, KERNEL_METRICS, batch_size, choose_forward,
                                evaluate_prompts, make_evaluator, prepare_kernels, prompt_metrics)
from simulate.metrics import bootstrap_means, loglog_slope
from simulate.presets import build_preset, preset_defaults
from simulate.runtime import broadcast_from_first, prompt_sharding
from simulate.sampling import Prompts, sample_prompts, task_prior
from theory import kernels as tk
from theory.hmm import HMM, check_labels, check_prompt_law, make_hmm

COMMAND = "sweep"
DEFAULT_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_KERNELS = ("predictive", "belief", "predictive:beta=20", "belief:beta=20", "gram", "pretrain", "task")
METRICS = KERNEL_METRICS
FORMAT_VERSION = 2
PROMPTS_NOTE_BYTES = 2**30  # a seed's prompts above this: say that --no-save-prompts exists


class SweepConfigError(UserError):
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
    curve: bool = False  # also every n = 1..max(grid): cells hold [P, max(grid)], the summary a mean curve
    forward: str = "auto"  # Bayes pass: auto (factorised where it applies), factorised, general
    save_prompts: bool = True  # write prompts/seed_S.npz (a seed's prompts then sit in memory: [P, N, l] int32)

    def validate(self) -> None:
        g = list(self.grid)
        if not g or any(not _is_int(n) or n <= 0 for n in g):
            raise SweepConfigError(f"grid {g} must be a non-empty list of demonstration counts n >= 1")
        if not _is_int(self.prompts_per_seed) or self.prompts_per_seed < 1:
            raise SweepConfigError(f"prompts per seed {self.prompts_per_seed}, expected an integer >= 1")
        seeds = list(self.seeds)
        if not seeds:
            raise SweepConfigError("no seeds given; expected at least one")
        if any(not _is_int(s) or s < 0 for s in seeds):
            raise SweepConfigError(f"seeds {seeds}, expected non-negative integers")
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise SweepConfigError(f"seeds {seeds} repeat {dup}; expected distinct seeds (a repeated seed "
                                   "would count the same prompts twice)")
        if not _is_int(self.length) or self.length < 1:
            raise SweepConfigError(f"input length {self.length}, expected an integer l >= 1")
        if self.label_mode not in ("sample", "argmax"):
            raise SweepConfigError(f"label mode {self.label_mode!r}, expected 'sample' or 'argmax'")
        if self.forward not in FORWARDS:
            raise SweepConfigError(f"forward {self.forward!r}, expected one of {', '.join(FORWARDS)}")
        if self.dtype not in ("float32", "float64"):
            raise SweepConfigError(f"dtype {self.dtype!r}, expected float32 or float64")
        if self.labels == "auto" and (not _is_int(self.num_labels) or self.num_labels < 1):
            raise SweepConfigError(f"num_labels {self.num_labels}, expected an integer >= 1")
        if not _is_int(self.save_predictions) or self.save_predictions < 0:
            raise SweepConfigError(f"save_predictions {self.save_predictions}, expected an integer >= 0")
        if not isinstance(self.save_prompts, bool):
            raise SweepConfigError(f"save_prompts {self.save_prompts!r}, expected True or False")
        if self.task is not None and (not _is_int(self.task) or self.task < 0):
            raise SweepConfigError(f"task {self.task}, expected a task index >= 0")
        if self.hmm_file is not None and self.preset != "custom":
            raise SweepConfigError(f"--hmm-file {self.hmm_file} is given with preset {self.preset!r}; "
                                   "expected --preset custom (or no --hmm-file)")
        if self.preset == "custom" and self.preset_params:
            raise SweepConfigError(f"preset parameters {sorted(self.preset_params)} do not apply to a custom HMM")
        labels = [tk.parse_kernel(k).label for k in self.kernels]
        if not labels:
            raise SweepConfigError("no kernels given; expected at least one, e.g. --kernels predictive")
        dup = sorted({k for k in labels if labels.count(k) > 1})
        if dup:
            raise SweepConfigError(f"kernels {list(self.kernels)} repeat {dup}; expected each kernel once")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def auto_labels(hmm: HMM, k: int) -> list[int]:
    """The first k non-delimiter token ids that some hidden state can emit."""
    emittable = [o for o in range(hmm.num_tokens) if o != int(hmm.delim) and np.any(np.asarray(hmm.B)[:, o] > 0)]
    if k > len(emittable):
        raise SweepConfigError(f"num_labels {k} exceeds the {len(emittable)} emittable non-delimiter tokens")
    return emittable[:k]


def resolve(cfg: SweepConfig) -> tuple[dict, HMM]:
    """Validate everything, build the HMM, and return the resolved config dict (the run's identity)."""
    cfg.validate()
    hmm = build_preset(cfg.preset, cfg.preset_params, cfg.hmm_file)
    labels = auto_labels(hmm, cfg.num_labels) if cfg.labels == "auto" else [int(y) for y in cfg.labels]
    labels = check_labels(hmm, labels).tolist()
    check_prompt_law(hmm, labels, cfg.length)
    if cfg.task is not None:
        if not 0 <= cfg.task < hmm.num_tasks:
            raise SweepConfigError(f"task {cfg.task} is outside 0..{hmm.num_tasks - 1}")
        if task_prior(hmm)[cfg.task] <= 0:
            raise SweepConfigError(f"task {cfg.task} has prior mass 0 under p0; Bayes would never consider it")
    params = dict(preset_defaults(cfg.preset), **cfg.preset_params) if cfg.preset != "custom" else {}
    kernels = [tk.parse_kernel(k) for k in cfg.kernels]
    out = dict(format_version=FORMAT_VERSION, preset=cfg.preset, preset_params=params,
               hmm_file=str(cfg.hmm_file) if cfg.hmm_file else None,
               grid=sorted(set(int(n) for n in cfg.grid)), seeds=[int(s) for s in cfg.seeds],
               prompts_per_seed=int(cfg.prompts_per_seed), length=int(cfg.length), labels=labels,
               label_mode=cfg.label_mode, task=cfg.task, kernels=[k.label for k in kernels],
               kernel_specs=[k.to_dict() for k in kernels], dtype=cfg.dtype,
               save_predictions=int(cfg.save_predictions))
    if cfg.curve:
        out["curve"] = True  # absent for grid-only sweeps: their configs (and folders) are unchanged
    if not cfg.save_prompts:
        out["save_prompts"] = False  # absent when saved (the default): those configs are unchanged
    out["forward"] = choose_forward(hmm, labels, cfg.length, cfg.forward)
    if cfg.preset == "custom":
        out["hmm_sha256"] = _sha256_arrays(hmm)
    return out, hmm


def _sha256_arrays(hmm: HMM) -> str:
    h = hashlib.sha256()
    for a in hmm:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def evaluated_ns(resolved: dict) -> list[int]:
    """The n at which a sweep evaluates: the grid, or every n = 1..max(grid) for a curve sweep."""
    return list(range(1, max(resolved["grid"]) + 1)) if resolved.get("curve") else list(resolved["grid"])


def grid_columns(resolved: dict) -> list[int]:
    """Column of each grid point in a cell's ``[P, ·]`` arrays."""
    return [n - 1 for n in resolved["grid"]] if resolved.get("curve") else list(range(len(resolved["grid"])))


def prompt_key(seed: int):
    """The PRNG key of a seed's prompts (shared by sweeps and phenomena: same seed, same prompts)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x50524F4D)


def load_run_hmm(rf: RunFolder) -> HMM:
    """The HMM a run folder saved (checksum verified)."""
    a = rf.load_npz("hmm.npz")
    try:
        return make_hmm(a["T"], a["B"], a["R"], a["p0"], a["task_start"], a["task_of_state"], a["delim"],
                        a["delim_weight"])
    except KeyError as exc:
        raise RunFolderError(f"{rf.path / 'hmm.npz'} lacks the field {exc}") from None


# ------------------------------------------------------------------ the run


def _cell(s: int) -> str:
    return f"cells/seed_{s}.npz"


def _prompts_file(s: int) -> str:
    return f"prompts/seed_{s}.npz"


def _pending_seeds(out: Path, resolved: dict) -> list[int]:
    """Seeds without a finished cell, read without locking (to decide whether kernels must be built)."""
    if not is_run_folder(out):
        return list(resolved["seeds"])
    try:
        ro = open_existing(out, COMMAND)
        same = ro.read_json("config.json") == config_form(resolved)
    except RunFolderError:
        return list(resolved["seeds"])
    return [s for s in resolved["seeds"] if not (same and ro.is_done(_cell(s)))]


def run_sweep(cfg: SweepConfig, out_dir, *, overwrite: bool = False, quiet: bool = False,
              chunk: int = 256, stop_after_cells: int | None = None, log=print) -> dict:
    """Run (or resume) a sweep into ``out_dir`` and return its summary.

    Everything is validated (config, HMM, kernels, Σ) before the folder is created or changed.
    ``stop_after_cells`` stops after computing that many new cells (for tests of resumption).

    Under ``jax.distributed`` (several processes, :func:`simulate.runtime.init_distributed`) every
    process calls this with the same arguments: each chunk is split over the devices of all
    processes, process 0 alone writes the folder (and returns the summary), the others return {}.
    """
    t0 = time.perf_counter()
    if not _is_int(chunk) or chunk < 1:
        raise SweepConfigError(f"chunk {chunk}, expected an integer >= 1 prompts per batch")
    resolved, hmm = resolve(cfg)
    out = Path(out_dir)
    specs = [tk.parse_kernel(k) for k in resolved["kernels"]]
    if jax.process_count() > 1 and jax.process_index() != 0:
        return _follow_first_process(hmm, resolved, specs, chunk, stop_after_cells)
    prepared = prepare_kernels(hmm, specs, resolved["length"]) if _pending_seeds(out, resolved) else None
    with RunFolder.create(out, command=COMMAND, config=resolved, overwrite=overwrite, log=log) as rf:
        if not rf.is_done("hmm.npz"):
            rf.savez("hmm.npz", **hmm._asdict())
        todo = [s for s in resolved["seeds"] if not rf.is_done(_cell(s))]
        for s in todo:
            if rf.is_corrupted(_cell(s)):
                log(f"{rf.path / _cell(s)} is corrupted (checksum mismatch); recomputing it")
        broadcast_from_first(np.isin(resolved["seeds"], todo))  # the other processes' work list
        if todo:
            if prepared is None:
                prepared = prepare_kernels(hmm, specs, resolved["length"])
            rf.write_json("kernels.json", prepared.infos)
            evaluate = make_evaluator(hmm, prepared, resolved["labels"], evaluated_ns(resolved), resolved["dtype"],
                                      length=resolved["length"], forward=resolved["forward"])
            P, N = resolved["prompts_per_seed"], max(resolved["grid"])
            bar = tqdm(total=len(todo) * P, unit="prompt", disable=quiet, delay=2.0,
                       desc=f"sweep {out.name}", dynamic_ncols=True)
            save_prompts = resolved.get("save_prompts", True)
            if save_prompts and P * (N + 1) * (resolved["length"] + 1) * 4 > PROMPTS_NOTE_BYTES:
                log(f"note: each seed's prompts take {P * (N + 1) * (resolved['length'] + 1) * 4 / 2**30:.1f} GiB "
                    "in memory and in prompts/seed_S.npz; --no-save-prompts keeps only one chunk's")
            for done, s in enumerate(todo, start=1):
                cell, pr = sweep_seed(evaluate, hmm, resolved, s, chunk, bar, save_prompts)
                if pr is not None:
                    rf.savez(_prompts_file(s), **pr._asdict())
                    del pr
                rf.savez(_cell(s), **cell)
                del cell
                if stop_after_cells is not None and done >= stop_after_cells:
                    bar.close()
                    return {}
            bar.close()
        summary = summarise(rf, resolved)
    summary["wall_seconds_this_call"] = time.perf_counter() - t0
    return summary


def _follow_first_process(hmm: HMM, resolved: dict, specs, chunk: int, stop_after_cells) -> dict:
    """A process other than 0: compute the seeds process 0 names (its shard of every batch), write nothing."""
    todo = [s for s, t in zip(resolved["seeds"], broadcast_from_first(np.zeros(len(resolved["seeds"]), bool))) if t]
    if todo:
        evaluate = make_evaluator(hmm, prepare_kernels(hmm, specs, resolved["length"]), resolved["labels"],
                                  evaluated_ns(resolved), resolved["dtype"], length=resolved["length"],
                                  forward=resolved["forward"])
        for done, s in enumerate(todo, start=1):
            sweep_seed(evaluate, hmm, resolved, s, chunk, None, keep_prompts=False)
            if stop_after_cells is not None and done >= stop_after_cells:
                break
    return {}


def sweep_seed(evaluate, hmm: HMM, resolved: dict, seed: int, chunk: int = 256, bar=None,
               keep_prompts: bool = True) -> tuple[dict, Prompts | None]:
    """One seed's cell arrays (and its prompts if ``keep_prompts``), streamed chunk by chunk.

    Prompts ``a .. a + c - 1`` are sampled (``sample_prompts(..., start=a)``: prompt i from
    ``fold_in(key, i)``, so the same prompts as one call for all P), evaluated as one batch sharded
    over the devices, and reduced to their per-prompt metrics before the next chunk is sampled.
    Peak memory is therefore one chunk's prompts and forward pass plus the ``[P, G]`` metric arrays
    (and, with ``keep_prompts``, the seed's prompts ``[P, N, l]`` int32). The batches are those
    :func:`evaluate_prompts` forms from ``chunk``, so the numbers equal evaluating all P at once.
    """
    P, N, length = resolved["prompts_per_seed"], max(resolved["grid"]), resolved["length"]
    c = batch_size(chunk, P, prompt_sharding()[1])  # evaluate_prompts' batch size
    K = resolved["save_predictions"]
    parts: dict[str, list] = {}
    prompts = None
    for a in range(0, P, c):
        real = min(c, P - a)
        # A short last chunk is sampled at full size and cut (no second compile of the sampler).
        pr = sample_prompts(prompt_key(seed), hmm, resolved["labels"], c, N, length, resolved["task"],
                            resolved["label_mode"], start=a)
        pr = Prompts(*(x[:real] for x in pr))
        ev = evaluate_prompts(evaluate, pr.demos_x, pr.demos_y, pr.x_test, pr.task, c, bar)
        _check_finite(ev, seed, offset=a)
        for k, v in cell_arrays(ev, resolved["kernels"], max(0, min(K - a, real))).items():
            parts.setdefault(k, []).append(v)
        if keep_prompts:
            if prompts is None:
                prompts = Prompts(*(np.empty((P, *x.shape[1:]), x.dtype) for x in pr))
            for dst, x in zip(prompts, pr):
                dst[a:a + real] = x
        del pr, ev
    cell = {}
    for k in list(parts):
        cell[k] = np.concatenate(parts.pop(k), axis=0)
    return cell, prompts


def _check_finite(ev, seed: int, offset: int = 0) -> None:
    for name, a in (("Bayes", ev.bayes), ("Oracle", ev.oracle)):
        bad = ~np.isfinite(np.asarray(a)).all(-1)
        if bad.any():
            i = offset + int(np.argwhere(bad)[0][0])
            raise SweepConfigError(f"{name} is not finite for prompt {i} of seed {seed} (a prompt of probability 0 "
                                   "under this HMM); the HMM cannot be used with these labels and length")


def cell_arrays(ev, kernel_labels, save_predictions: int) -> dict:
    """One seed's per-prompt metrics ``[P, G]`` (and saved predictions), under names that say what they are."""
    pm = prompt_metrics(ev)
    arrays = {f"common|{k}": v for k, v in pm.common.items()}
    for label, km in zip(kernel_labels, pm.kernels):
        arrays.update({f"kernel|{label}|{k}": v for k, v in km.items()})
    if save_predictions:  # the first K prompts' vectors
        K = save_predictions
        arrays["pred|bayes"] = np.asarray(ev.bayes)[:K]
        arrays["pred|oracle"] = np.asarray(ev.oracle)[:K]
        for label, k in zip(kernel_labels, ev.kernels):
            arrays[f"pred|kernel|{label}"] = np.asarray(k.yhat)[:K]
    return arrays


class Cells(dict):
    """Per-prompt arrays of all finished seeds, pooled over seeds: name -> ``[P_total, G]``.

    ``seeds`` lists the seeds in pooling order and ``per_seed[name]`` keeps one array per seed.
    """

    seeds: list
    per_seed: dict


def load_cells(rf: RunFolder, resolved: dict) -> Cells:
    """Read every finished cell (checksums verified) and pool it over seeds along the prompt axis."""
    per: dict[str, list] = {}
    seeds = []
    for s in resolved["seeds"]:
        if not rf.exists(_cell(s)):
            continue
        seeds.append(s)
        for k, v in rf.load_npz(_cell(s)).items():
            per.setdefault(k, []).append(v)
    cells = Cells({k: np.concatenate(v, axis=0) for k, v in per.items()})
    cells.seeds, cells.per_seed = seeds, per
    return cells


def load_prompts(rf: RunFolder, seed: int) -> Prompts:
    a = rf.load_npz(_prompts_file(seed))
    try:
        return Prompts(**{k: a[k] for k in Prompts._fields})
    except KeyError as exc:
        raise RunFolderError(f"{rf.path / _prompts_file(seed)} lacks the field {exc}") from None


def summarise(rf: RunFolder, resolved: dict) -> dict:
    """Write metrics.csv, summary.json (and predictions.npz) from the cells; return the summary.

    Bands (95% bootstrap) at the grid points; for a curve sweep also ``summary["curve"]``: the
    mean over prompts of every metric at every n = 1..max(grid).
    """
    grid = resolved["grid"]
    cols = grid_columns(resolved)
    cells = load_cells(rf, resolved)
    if not cells.seeds:
        raise RunFolderError(f"{rf.path} has no finished cells to summarise")
    names = resolved["kernels"]
    rows = []
    for s_i, s in enumerate(cells.seeds):
        for c, n in zip(cols, grid):
            row = dict(n=n, seed=s)
            for k in COMMON_METRICS:
                row[k] = _mean(cells.per_seed[f"common|{k}"][s_i][:, c])
            for name in names:
                r = dict(row, kernel=name)
                for k in METRICS:
                    r[k] = _mean(cells.per_seed[f"kernel|{name}|{k}"][s_i][:, c])
                rows.append(r)
    buf = io.StringIO()
    fields = ["kernel", "n", "seed", *METRICS, *COMMON_METRICS]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in fields})
    rf.write_bytes("metrics.csv", buf.getvalue().encode())

    def bands(name):  # per grid point: mean and 95% bootstrap band (one set of draws for all columns)
        return [dict(mean=m, lo=lo, hi=hi, count=c, n=n)
                for (m, lo, hi, c), n in zip(bootstrap_means(cells[name][:, cols]), grid)]

    summary = dict(config=resolved, seeds_done=cells.seeds, num_prompts=int(cells["common|bayes_vs_oracle_l1"].shape[0]),
                   common={k: bands(f"common|{k}") for k in COMMON_METRICS},
                   kernels={})
    half = [g for g, n in enumerate(grid) if n <= max(1, int(np.sqrt(grid[0] * grid[-1])))] or [0]
    for name in names:
        ks = {k: bands(f"kernel|{name}|{k}") for k in METRICS}
        e = cells[f"kernel|{name}|kernel_vs_bayes_l1"][:, cols].T  # [G, P]
        slope = loglog_slope([grid[g] for g in half], e[half]) if len(half) >= 2 else (float("nan"),) * 3
        ks["slope_kernel_vs_bayes_l1"] = dict(value=slope[0], lo=slope[1], hi=slope[2],
                                              fitted_n=[grid[g] for g in half])
        ks["floor_kernel_vs_bayes_l1"] = dict(ks["kernel_vs_bayes_l1"][-1])
        ks["floor_kernel_vs_oracle_l1"] = dict(ks["kernel_vs_oracle_l1"][-1])
        summary["kernels"][name] = ks
    if resolved.get("curve"):
        summary["curve"] = dict(
            n=evaluated_ns(resolved),
            common={k: _column_means(cells[f"common|{k}"]) for k in COMMON_METRICS},
            kernels={name: {k: _column_means(cells[f"kernel|{name}|{k}"]) for k in METRICS} for name in names})
    rf.write_json("summary.json", summary)
    K = resolved["save_predictions"]
    if K:
        preds = {k.removeprefix("pred|"): v for k, v in cells.items() if k.startswith("pred|")}
        preds = {k: v[:K] for k, v in preds.items()}
        rf.savez("predictions.npz", grid=np.asarray(evaluated_ns(resolved)), labels=np.asarray(resolved["labels"]),
                 kernel_names=np.asarray(names), **preds)
    return summary


def _column_means(x) -> list:
    """Mean over prompts (axis 0) of every column, NaNs dropped: ``[P, N] -> [N]``."""
    x = np.asarray(x, float)
    ok = np.isfinite(x)
    cnt = ok.sum(0)
    return np.where(cnt > 0, np.where(ok, x, 0.0).sum(0) / np.maximum(cnt, 1), np.nan).tolist()


def _mean(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def read_summary(run_dir) -> dict:
    """A finished sweep's summary.json (one-line errors for a missing, foreign or corrupted folder)."""
    rf = open_existing(run_dir, COMMAND)
    if not rf.exists("summary.json"):
        raise RunFolderError(f"{rf.path / 'summary.json'} not found; the sweep has not finished a seed")
    return numeric_nulls_to_nan(rf.read_json("summary.json"))


_NUMERIC_KEYS = {"mean", "lo", "hi", "value"}


def numeric_nulls_to_nan(obj):
    """Strict JSON stores NaN as null; read the band and slope numbers (mean, lo, hi, value) back as NaN."""
    if isinstance(obj, dict):
        return {k: (math.nan if v is None and k in _NUMERIC_KEYS else numeric_nulls_to_nan(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [numeric_nulls_to_nan(v) for v in obj]
    return obj


def _fmt(v, spec: str = "7.3f") -> str:
    return "    nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_table(summary: dict) -> str:
    """A plain-text table: per kernel, per n, L1 to Bayes / Oracle and agreement with bands."""
    grid = summary["config"]["grid"]
    lines = []
    c = summary["common"]
    lines.append(f"prompts: {summary['num_prompts']}  seeds: {summary['seeds_done']}  labels: {summary['config']['labels']}")
    lines.append("n      " + "  ".join(f"{n:>7d}" for n in grid))
    lines.append("Bayes-Oracle L1  " + " ".join(_fmt(r["mean"], ".3f") for r in c["bayes_vs_oracle_l1"]))
    lines.append("mass on θ*       " + " ".join(_fmt(r["mean"], ".3f") for r in c["posterior_mass_true_task"]))
    for name, ks in summary["kernels"].items():
        lines.append(f"[{name}]")
        for k, lab in (("kernel_vs_bayes_l1", "L1 to Bayes "), ("kernel_vs_oracle_l1", "L1 to Oracle"),
                       ("argmax_agreement", "agreement   ")):
            lines.append(f"  {lab} " + " ".join(_fmt(r["mean"]) for r in ks[k]))
        s = ks["slope_kernel_vs_bayes_l1"]
        f = ks["floor_kernel_vs_bayes_l1"]
        neg = ks["negative_weight_frac"][-1]["mean"] or 0.0
        lines.append(f"  slope {_fmt(s['value'], '.3f')} [{_fmt(s['lo'], '.3f')}, {_fmt(s['hi'], '.3f')}] over "
                     f"n={s['fitted_n']}; floor (n={grid[-1]}) {_fmt(f['mean'], '.3f')} "
                     f"[{_fmt(f['lo'], '.3f')}, {_fmt(f['hi'], '.3f')}]"
                     + (f"; negative weights {neg:.1%}" if neg > 0 else ""))
    return "\n".join(lines)
