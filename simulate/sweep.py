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

import copy
import csv
import dataclasses
import hashlib
import io
import math
import time
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, RunFolderError, config_form, is_run_folder, open_existing
from simulate.evaluator import (COMMON_METRICS, FORWARDS, KERNEL_LABEL_METRICS, KERNEL_METRICS, LABEL_METRICS,
                                batch_size, choose_forward, evaluate_prompts, make_evaluator, make_ginc_evaluator,
                                prepare_kernels, prompt_metrics, zero_mask)
from simulate.metrics import bootstrap_means, loglog_slope
from simulate.presets import GincConfig, build_preset, ginc_params, ginc_reference_path, preset_config, preset_defaults
from simulate.runtime import broadcast_from_first, prompt_sharding
from simulate.sampling import Prompts, sample_prompts, task_prior
from theory import kernels as tk
from theory.hmm import HMM, check_labels, check_prompt_law, make_hmm
from simulate.sampling import prompt_law as matched_start_law

COMMAND = "sweep"
from simulate.defaults import DEFAULT_GRID, DEFAULT_KERNELS, GINC_KERNELS, PROMPT_LAWS, is_int as _is_int  # noqa: E402
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
    length: int | None = None  # None: 5, or 2 (GINC's k = 3) for GINC's prompt laws
    labels: object = "auto"
    num_labels: int = 4
    label_mode: str = "sample"
    task: int | None = None
    kernels: tuple | None = DEFAULT_KERNELS  # None: the prompt law's default (GINC: the feature kernels)
    dtype: str = "float32"
    save_predictions: int = 0
    curve: bool = False  # also every n = 1..max(grid): cells hold [P, max(grid)], the summary a mean curve
    forward: str = "auto"  # Bayes pass: auto (factorised where it applies), factorised, general
    save_prompts: bool = True  # write prompts/seed_S.npz (a seed's prompts then sit in memory: [P, N, l] int32)
    prompt_law: str = "auto"  # matched | ginc-id | ginc-ood; auto: ginc-id for the ginc preset, else matched
    ginc_params: str | None = None  # ginc preset: "reference" (GINC's file), "draw", or a path to a reference .npz

    def validate(self) -> None:
        g = list(self.grid)
        if not g or any(not _is_int(n) or n < 0 for n in g) or max(g) < 1:
            raise SweepConfigError(f"grid {g} must be a list of demonstration counts n >= 0 with at least one n >= 1")
        if self.curve and min(g) < 1:
            raise SweepConfigError(f"grid {g}: a curve runs over n = 1..N; give n = 0 as a list (--n 0,1,2,...)")
        if self.prompt_law not in ("auto", *PROMPT_LAWS):
            raise SweepConfigError(f"prompt law {self.prompt_law!r}, expected one of auto, {', '.join(PROMPT_LAWS)}")
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
        if self.length is not None and (not _is_int(self.length) or self.length < 1):
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
        labels = [tk.parse_kernel(k).label for k in (self.kernels if self.kernels is not None else DEFAULT_KERNELS)]
        if not labels:
            raise SweepConfigError("no kernels given; expected at least one, e.g. --kernels predictive")
        dup = sorted({k for k in labels if labels.count(k) > 1})
        if dup:
            raise SweepConfigError(f"kernels {list(self.kernels)} repeat {dup}; expected each kernel once")


@dataclass(frozen=True)
class SweepIdentity:
    """A resolved sweep: every value that determines its numbers (the run folder's identity).

    Built by :func:`resolve`; :meth:`to_dict` is the run folder's ``config.json`` (and the summary's
    ``config``), :meth:`from_dict` reads one back. Field order is config.json's key order.

    format_version:     int, :data:`FORMAT_VERSION` of the run-folder layout
    preset:             str, the HMM preset (``custom``: ``hmm_file``)
    preset_params:      dict, the preset's parameters with its defaults filled in ({} for custom)
    hmm_file:           str | None, the custom HMM's file
    grid:               tuple[int, ...], sorted distinct demonstration counts n (G of them)
    seeds:              tuple[int, ...], the prompt seeds, in the order given
    prompts_per_seed:   int, P prompts per seed
    length:             int, l, tokens per input x
    labels:             tuple[int, ...], the label tokens Y (GINC's laws: every symbol)
    label_mode:         str, ``sample`` | ``argmax`` | ``ginc``
    task:               int | None, the one task drawn (None: tasks from the prior)
    kernels:            tuple[str, ...], kernel labels (the cells' names)
    kernel_specs:       tuple[dict, ...], per kernel :meth:`theory.kernels.KernelSpec.to_dict`
    dtype:              str, ``float32`` | ``float64``
    save_predictions:   int, K prompts whose probability vectors are kept
    curve:              bool, also every n = 1..max(grid) (recorded only when True)
    save_prompts:       bool, prompts/seed_S.npz written (recorded only when False)
    forward:            str | None, Bayes pass (``factorised`` | ``general`` | ``ginc``; None: an old config
                        that did not record it)
    hmm_sha256:         str | None, :func:`hmm_sha256` of a custom HMM (recorded only then)
    prompt_law:         str | None, ``matched`` | ``ginc-id`` | ``ginc-ood`` (None: an old config: matched)
    scoring_law:        str | None, how prompts are scored (:data:`SCORING_LAW`)
    k:                  int | None, GINC's k = length + 1 (GINC's laws only)
    ginc_params_file:   str | None, GINC's parameter file (recorded, possibly None, for GINC's laws only)
    ginc_params_sha256: str | None, that file's sha256 (recorded when the file is)
    """

    format_version: int
    preset: str
    preset_params: dict
    hmm_file: str | None
    grid: tuple
    seeds: tuple
    prompts_per_seed: int
    length: int
    labels: tuple
    label_mode: str
    task: int | None
    kernels: tuple
    kernel_specs: tuple
    dtype: str
    save_predictions: int
    curve: bool = False
    save_prompts: bool = True
    forward: str | None = None
    hmm_sha256: str | None = None
    prompt_law: str | None = None
    scoring_law: str | None = None
    k: int | None = None
    ginc_params_file: str | None = None
    ginc_params_sha256: str | None = None

    @property
    def law(self) -> str:
        """The prompt law (``matched`` for an old config that does not record one)."""
        return self.prompt_law if self.prompt_law is not None else "matched"

    @property
    def is_ginc(self) -> bool:
        """Whether prompts follow one of GINC's laws (``ginc-id`` / ``ginc-ood``)."""
        return self.law.startswith("ginc")

    def to_dict(self) -> dict:
        """config.json's content: keys in field order; the optional ones only where recorded (see above)."""
        out = dict(format_version=self.format_version, preset=self.preset,
                   preset_params=copy.deepcopy(self.preset_params), hmm_file=self.hmm_file, grid=list(self.grid), seeds=list(self.seeds),
                   prompts_per_seed=self.prompts_per_seed, length=self.length, labels=list(self.labels),
                   label_mode=self.label_mode, task=self.task, kernels=list(self.kernels),
                   kernel_specs=[copy.deepcopy(s) for s in self.kernel_specs], dtype=self.dtype,
                   save_predictions=self.save_predictions)
        if self.curve:
            out["curve"] = True
        if not self.save_prompts:
            out["save_prompts"] = False
        for key in ("forward", "hmm_sha256", "prompt_law", "scoring_law"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.is_ginc:
            out["k"] = self.k
            out["ginc_params_file"] = self.ginc_params_file
            if self.ginc_params_file is not None:
                out["ginc_params_sha256"] = self.ginc_params_sha256
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "SweepIdentity":
        """A sweep's identity from its config.json content (``from_dict(x.to_dict()) == x``)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise SweepConfigError(f"sweep config keys {unknown} are unknown; expected some of {names}")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise SweepConfigError(f"sweep config lacks {missing}; expected a sweep's config.json")
        kw = {k: v for k, v in d.items()}
        for key in ("grid", "seeds", "labels", "kernels", "kernel_specs"):
            kw[key] = tuple(kw[key])
        kw["preset_params"] = dict(kw["preset_params"])
        return cls(**kw)

    def replace(self, **changes) -> "SweepIdentity":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def auto_labels(hmm: HMM, k: int) -> list[int]:
    """The first k non-delimiter token ids that some hidden state can emit."""
    emittable = [o for o in range(hmm.num_tokens) if o != int(hmm.delim) and np.any(np.asarray(hmm.B)[:, o] > 0)]
    if k > len(emittable):
        raise SweepConfigError(f"num_labels {k} exceeds the {len(emittable)} emittable non-delimiter tokens")
    return emittable[:k]


def resolved_law(cfg: SweepConfig) -> str:
    """The prompt law a config names (``auto``: ``ginc-id`` for the ginc preset, else ``matched``)."""
    if cfg.prompt_law != "auto":
        return cfg.prompt_law
    return "ginc-id" if cfg.preset == "ginc" else "matched"


SCORING_LAW = "p_pre: exact Bayes under the preset's pretraining HMM (hmm.npz), the prompt scored as a document prefix"


def _ginc_source(cfg: SweepConfig) -> tuple[dict, Path | None]:
    """The ginc preset's parameters and the reference file (None: drawn with GINC's construction)."""
    params = dict(cfg.preset_params)
    choice = cfg.ginc_params
    if cfg.preset != "ginc":
        if choice is not None:
            raise SweepConfigError(f"--ginc-params {choice} is given with preset {cfg.preset!r}; expected --preset ginc")
        return params, None
    if choice is None:
        return params, (ginc_reference_path() if params.get("reference", 0) == 1 else None)
    if choice == "draw":
        if params.get("reference", 0) == 1:
            raise SweepConfigError("--ginc-params draw contradicts -P reference=1; give one of them")
        return params, None
    if params.get("reference", 1) != 1:
        raise SweepConfigError(f"--ginc-params {choice} contradicts -P reference=0; give one of them")
    params["reference"] = 1
    return params, (ginc_reference_path() if choice == "reference" else Path(choice))


def resolve(cfg: SweepConfig) -> tuple[SweepIdentity, HMM]:
    """Validate everything, build the HMM, and return the run's identity (:class:`SweepIdentity`) and the HMM.

    The identity records the prompt law (``prompt_law``: how prompts are drawn) and the scoring law
    (``scoring_law``: every prompt is scored by exact Bayes under p_pre, the preset's HMM).
    """
    cfg.validate()
    law = resolved_law(cfg)
    ginc_law = law.startswith("ginc")
    if ginc_law and cfg.preset != "ginc":
        raise SweepConfigError(f"prompt law {law!r} needs --preset ginc (GINC's concepts); preset is {cfg.preset!r}")
    length = cfg.length if cfg.length is not None else (2 if ginc_law else 5)
    preset_params, ginc_file = _ginc_source(cfg)
    hmm = build_preset(cfg.preset, preset_params, cfg.hmm_file if cfg.preset == "custom" else ginc_file)
    kernel_names = cfg.kernels if cfg.kernels is not None else (GINC_KERNELS if ginc_law else DEFAULT_KERNELS)
    kernels = [tk.parse_kernel(k) for k in kernel_names]
    if ginc_law:
        if cfg.labels != "auto":
            raise SweepConfigError(f"labels {list(cfg.labels)} with prompt law {law!r}: GINC's labels are every symbol "
                                   f"(0..{hmm.num_tokens - 1}); leave --labels out")
        if cfg.label_mode != "sample":
            raise SweepConfigError(f"label mode {cfg.label_mode!r} with prompt law {law!r}: GINC's demonstration labels "
                                   "are sampled and its test label is the Oracle's argmax; leave --label-mode out")
        if cfg.task is not None:
            raise SweepConfigError(f"--task {cfg.task} with prompt law {law!r}: GINC draws the concept per prompt")
        if cfg.forward not in ("auto", "general"):
            raise SweepConfigError(f"--forward {cfg.forward} with prompt law {law!r}: expected auto (GINC's fast exact "
                                   "Bayes) or general (the prompt-long scan)")
        if law == "ginc-ood" and any(k.name == "task" for k in kernels):
            raise SweepConfigError("kernel 'task' with prompt law 'ginc-ood': an OOD concept is not a task of p_pre, "
                                   "so it has no Σ_θ; drop it")
        labels = list(range(hmm.num_tokens))
        forward = "ginc" if cfg.forward == "auto" else "general"
        label_mode = "ginc"
    else:
        labels = auto_labels(hmm, cfg.num_labels) if cfg.labels == "auto" else [int(y) for y in cfg.labels]
        labels = check_labels(hmm, labels).tolist()
        prior = task_prior(hmm)
        drawn = [cfg.task] if cfg.task is not None else [t for t in range(hmm.num_tasks) if prior[t] > 0]
        if cfg.task is not None:
            if not 0 <= cfg.task < hmm.num_tasks:
                raise SweepConfigError(f"task {cfg.task} is outside 0..{hmm.num_tasks - 1}")
            if prior[cfg.task] <= 0:
                raise SweepConfigError(f"task {cfg.task} has prior mass 0 under p0; Bayes would never consider it")
        check_prompt_law(hmm, labels, length, tasks=drawn, first_starts=matched_start_law(hmm).first_starts)
        forward = choose_forward(hmm, labels, length, cfg.forward)
        label_mode = cfg.label_mode
    params = dict(preset_defaults(cfg.preset), **preset_params) if cfg.preset != "custom" else {}
    ident = SweepIdentity(
        format_version=FORMAT_VERSION, preset=cfg.preset, preset_params=params,
        hmm_file=str(cfg.hmm_file) if cfg.hmm_file else None,
        grid=tuple(sorted(set(int(n) for n in cfg.grid))), seeds=tuple(int(s) for s in cfg.seeds),
        prompts_per_seed=int(cfg.prompts_per_seed), length=int(length), labels=tuple(labels),
        label_mode=label_mode, task=cfg.task, kernels=tuple(k.label for k in kernels),
        kernel_specs=tuple(k.to_dict() for k in kernels), dtype=cfg.dtype,
        save_predictions=int(cfg.save_predictions), curve=bool(cfg.curve), save_prompts=cfg.save_prompts,
        forward=forward, hmm_sha256=hmm_sha256(hmm) if cfg.preset == "custom" else None,
        prompt_law=law, scoring_law=SCORING_LAW,
        k=int(length) + 1 if ginc_law else None,
        ginc_params_file=str(ginc_file.resolve()) if ginc_law and ginc_file is not None else None,
        ginc_params_sha256=(hashlib.sha256(ginc_file.read_bytes()).hexdigest()
                            if ginc_law and ginc_file is not None else None))
    return ident, hmm


def hmm_sha256(hmm: HMM) -> str:
    """sha256 of an HMM's arrays (its fields in order, raw bytes): a custom HMM's identity."""
    h = hashlib.sha256()
    for a in hmm:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()



def run_ginc_params(resolved: SweepIdentity):
    """The GINC ``(id_params, ood_params)`` of a resolved ginc sweep (the file's or drawn again)."""
    cfg = preset_config("ginc", resolved.preset_params)
    f = resolved.ginc_params_file
    return ginc_params(cfg, Path(f) if f else None)


def evaluated_ns(resolved: SweepIdentity) -> list[int]:
    """The n at which a sweep evaluates: the grid, or every n = 1..max(grid) for a curve sweep."""
    return list(range(1, max(resolved.grid) + 1)) if resolved.curve else list(resolved.grid)


def grid_columns(resolved: SweepIdentity) -> list[int]:
    """Column of each grid point in a cell's ``[P, ·]`` arrays."""
    return [n - 1 for n in resolved.grid] if resolved.curve else list(range(len(resolved.grid)))


def kernel_grid(resolved: SweepIdentity) -> list[int]:
    """The grid points at which kernels are evaluated: n ≥ 1 (no demonstrations, no estimate)."""
    return [n for n in resolved.grid if n > 0]


def kernel_columns(resolved: SweepIdentity) -> list[int]:
    """Column of each :func:`kernel_grid` point in a cell's kernel arrays."""
    kg = kernel_grid(resolved)
    return [n - 1 for n in kg] if resolved.curve else list(range(len(kg)))


def make_run_evaluator(hmm: HMM, prepared, resolved: SweepIdentity):
    """The evaluator a resolved sweep uses: the matched-law one, or GINC's (with its parameters attached)."""
    if resolved.is_ginc:
        id_p, ood_p = run_ginc_params(resolved)
        ev = make_ginc_evaluator(hmm, prepared, id_p, evaluated_ns(resolved), resolved.dtype,
                                 forward=resolved.forward)
        ev.ginc_params = (id_p, ood_p)
        return ev
    return make_evaluator(hmm, prepared, resolved.labels, evaluated_ns(resolved), resolved.dtype,
                          length=resolved.length, forward=resolved.forward)


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


def _pending_seeds(out: Path, resolved: SweepIdentity) -> list[int]:
    """Seeds without a finished cell, read without locking (to decide whether kernels must be built)."""
    if not is_run_folder(out):
        return list(resolved.seeds)
    try:
        ro = open_existing(out, COMMAND)
        same = ro.read_json("config.json") == config_form(resolved.to_dict())
    except RunFolderError:
        return list(resolved.seeds)
    return [s for s in resolved.seeds if not (same and ro.is_done(_cell(s)))]


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
    specs = [tk.parse_kernel(k) for k in resolved.kernels]
    if jax.process_count() > 1 and jax.process_index() != 0:
        return _follow_first_process(hmm, resolved, specs, chunk, stop_after_cells)
    prepared = prepare_kernels(hmm, specs, resolved.length) if _pending_seeds(out, resolved) else None
    with RunFolder.create(out, command=COMMAND, config=resolved.to_dict(), overwrite=overwrite, log=log) as rf:
        if not rf.is_done("hmm.npz"):
            rf.savez("hmm.npz", **hmm._asdict())
        todo = [s for s in resolved.seeds if not rf.is_done(_cell(s))]
        for s in todo:
            if rf.is_corrupted(_cell(s)):
                log(f"{rf.path / _cell(s)} is corrupted (checksum mismatch); recomputing it")
        broadcast_from_first(np.isin(resolved.seeds, todo))  # the other processes' work list
        if todo:
            if prepared is None:
                prepared = prepare_kernels(hmm, specs, resolved.length)
            rf.write_json("kernels.json", prepared.infos)
            evaluate = make_run_evaluator(hmm, prepared, resolved)
            P, N = resolved.prompts_per_seed, max(resolved.grid)
            bar = tqdm(total=len(todo) * P, unit="prompt", disable=quiet, delay=2.0,
                       desc=f"sweep {out.name}", dynamic_ncols=True)
            save_prompts = resolved.save_prompts
            if save_prompts and P * (N + 1) * (resolved.length + 1) * 4 > PROMPTS_NOTE_BYTES:
                log(f"note: each seed's prompts take {P * (N + 1) * (resolved.length + 1) * 4 / 2**30:.1f} GiB "
                    "in memory and in prompts/seed_S.npz; --no-save-prompts keeps only one chunk's")
            for done, s in enumerate(todo, start=1):
                cell, pr = sweep_seed(evaluate, hmm, resolved, s, chunk, bar, save_prompts)
                if pr is not None:
                    rf.savez(_prompts_file(s), **pr._asdict(), **getattr(pr, "extra", {}))
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


def _follow_first_process(hmm: HMM, resolved: SweepIdentity, specs, chunk: int, stop_after_cells) -> dict:
    """A process other than 0: compute the seeds process 0 names (its shard of every batch), write nothing."""
    todo = [s for s, t in zip(resolved.seeds, broadcast_from_first(np.zeros(len(resolved.seeds), bool))) if t]
    if todo:
        evaluate = make_run_evaluator(hmm, prepare_kernels(hmm, specs, resolved.length), resolved)
        for done, s in enumerate(todo, start=1):
            sweep_seed(evaluate, hmm, resolved, s, chunk, None, keep_prompts=False)
            if stop_after_cells is not None and done >= stop_after_cells:
                break
    return {}


def sweep_seed(evaluate, hmm: HMM, resolved: SweepIdentity, seed: int, chunk: int = 256, bar=None,
               keep_prompts: bool = True) -> tuple[dict, Prompts | None]:
    """One seed's cell arrays (and its prompts if ``keep_prompts``), streamed chunk by chunk.

    Prompts ``a .. a + c - 1`` are sampled (``sample_prompts(..., start=a)``: prompt i from
    ``fold_in(key, i)``, so the same prompts as one call for all P), evaluated as one batch sharded
    over the devices, and reduced to their per-prompt metrics before the next chunk is sampled.
    Peak memory is therefore one chunk's prompts and forward pass plus the ``[P, G]`` metric arrays
    (and, with ``keep_prompts``, the seed's prompts ``[P, N, l]`` int32). The batches are those
    :func:`evaluate_prompts` forms from ``chunk``, so the numbers equal evaluating all P at once.
    """
    if resolved.is_ginc:
        return _sweep_seed_ginc(evaluate, resolved, seed, chunk, bar, keep_prompts)
    P, N, length = resolved.prompts_per_seed, max(resolved.grid), resolved.length
    c = batch_size(chunk, P, prompt_sharding()[1])  # evaluate_prompts' batch size
    K = resolved.save_predictions
    parts: dict[str, list] = {}
    prompts = None
    for a in range(0, P, c):
        real = min(c, P - a)
        # A short last chunk is sampled at full size and cut (no second compile of the sampler).
        pr = sample_prompts(prompt_key(seed), hmm, resolved.labels, c, N, length, resolved.task,
                            resolved.label_mode, start=a)
        pr = Prompts(*(x[:real] for x in pr))
        ev = evaluate_prompts(evaluate, pr.demos_x, pr.demos_y, pr.x_test, pr.task, c, bar)
        _check_finite(ev, seed, offset=a)
        for k, v in cell_arrays(ev, resolved.kernels, max(0, min(K - a, real)), pr.y_test,
                                resolved.labels).items():
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


def _sweep_seed_ginc(evaluate, resolved: SweepIdentity, seed: int, chunk: int, bar, keep_prompts: bool):
    """:func:`sweep_seed` for GINC's prompt laws: the seed's prompts drawn at once by
    :func:`simulate.ginc.sample_prompts` (prompt i from ``fold_in(key, i)``), then evaluated in
    batches of ``chunk`` (the last one padded with copies of its first prompt and cut)."""
    from simulate import ginc

    P, N, length = resolved.prompts_per_seed, max(resolved.grid), resolved.length
    law = resolved.prompt_law.removeprefix("ginc-")
    id_p, ood_p = evaluate.ginc_params
    gp = ginc.sample_prompts(prompt_key(seed), id_p if law == "id" else ood_p, length + 1, N, P, law)
    g = {k: np.asarray(v) for k, v in gp._asdict().items()}
    defined = g["oracle_defined"].astype(bool)
    oracle = np.where(defined[:, None], g["oracle"], np.nan)
    task = g["concept"].astype(np.int32) if law == "id" else np.full(P, -1, np.int32)
    pr = Prompts(g["demos_x"].astype(np.int32), g["demos_y"].astype(np.int32), g["x_test"].astype(np.int32),
                 g["label"].astype(np.int32), g["concept"].astype(np.int32))
    c = max(1, min(int(chunk), P))
    K = resolved.save_predictions
    parts: dict[str, list] = {}
    for a in range(0, P, c):
        real = min(c, P - a)
        sl = [x[a:a + c] for x in (pr.demos_x, pr.demos_y, pr.x_test, task, oracle)]
        if real < c:
            sl = [np.concatenate([x, np.repeat(x[:1], c - real, axis=0)]) for x in sl]
        ev = evaluate(*sl)
        ev = jax.tree_util.tree_map(lambda v: np.asarray(v)[:real], ev)
        _check_finite(ev, seed, offset=a, oracle=False)
        for k, v in cell_arrays(ev, resolved.kernels, max(0, min(K - a, real)), pr.y_test[a:a + real],
                                resolved.labels).items():
            parts.setdefault(k, []).append(v)
        if bar is not None:
            bar.update(real)
    cell = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
    cell["common|oracle_defined"] = np.broadcast_to(defined[:, None].astype(float),
                                                    (P, len(evaluated_ns(resolved)))).copy()
    if not keep_prompts:
        return cell, None
    out = _PromptsWithExtra(*pr)
    out.extra = dict(start_slot=g["start_slot"].astype(np.int32), sampled_y=g["sampled_y"].astype(np.int32),
                     oracle_defined=defined)
    return cell, out


class _PromptsWithExtra(Prompts):
    """:class:`Prompts` carrying extra arrays (``.extra``) for prompts/seed_S.npz (GINC: start slot, sampled test token)."""


def _check_finite(ev, seed: int, offset: int = 0, oracle: bool = True) -> None:
    """Refuse a non-finite Bayes vector on a prompt of positive probability (a numerical failure), and
    (``oracle``) a non-finite Oracle. Prompts of probability 0 under p_pre are reported, not refused."""
    zero = zero_mask(ev)
    checks = [("Bayes", ev.bayes, zero)]
    if oracle:
        checks.append(("Oracle", np.asarray(ev.oracle)[:, None], np.zeros((zero.shape[0], 1), bool)))
    for name, a, skip in checks:
        bad = ~np.isfinite(np.asarray(a)).all(-1) & ~skip
        if bad.any():
            i = offset + int(np.argwhere(bad)[0][0])
            raise SweepConfigError(f"{name} is not finite for prompt {i} of seed {seed} although the prompt has "
                                   "positive probability under p_pre; try --dtype float64")


def cell_arrays(ev, kernel_labels, save_predictions: int, label=None, label_tokens=None) -> dict:
    """One seed's per-prompt metrics ``[P, G]`` (and saved predictions), under names that say what they are.

    With ``label [P]`` and ``label_tokens`` (the token of each vector entry) also the metrics against
    the prompt's label and the zero-probability indicator."""
    pm = prompt_metrics(ev, label, label_tokens)
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


def load_cells(rf: RunFolder, resolved: SweepIdentity) -> Cells:
    """Read every finished cell (checksums verified) and pool it over seeds along the prompt axis."""
    per: dict[str, list] = {}
    seeds = []
    for s in resolved.seeds:
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


def common_metric_names(resolved: SweepIdentity, cells) -> list[str]:
    """The common metrics a sweep reports: those in its cells (OOD prompts have no θ* among p_pre's tasks)."""
    names = [k for k in (*COMMON_METRICS, *LABEL_METRICS, "oracle_defined") if f"common|{k}" in cells]
    if resolved.prompt_law == "ginc-ood":
        names.remove("posterior_mass_true_task")
    return names


def kernel_metric_names(cells, name: str) -> list[str]:
    return [k for k in (*METRICS, *KERNEL_LABEL_METRICS) if f"kernel|{name}|{k}" in cells]


def summarise(rf: RunFolder, resolved: SweepIdentity) -> dict:
    """Write metrics.csv, summary.json (and predictions.npz) from the cells; return the summary.

    Bands (95% bootstrap) at the grid points; for a curve sweep also ``summary["curve"]``: the
    mean over prompts of every metric at every n = 1..max(grid). Means leave out the prompts where
    a metric is undefined (Bayes on a prompt of probability 0 under p_pre, a kernel at n = 0); each
    band's ``count`` says how many prompts it averages, and ``zero_probability`` the fraction left
    out for Bayes. A mean over no prompt is ``null`` with count 0 (never NaN), an empty field in
    metrics.csv.
    """
    grid = resolved.grid
    cols = grid_columns(resolved)
    kgrid, kcols = kernel_grid(resolved), kernel_columns(resolved)
    cells = load_cells(rf, resolved)
    if not cells.seeds:
        raise RunFolderError(f"{rf.path} has no finished cells to summarise")
    names = resolved.kernels
    common_names = common_metric_names(resolved, cells)
    kmetrics = {name: kernel_metric_names(cells, name) for name in names}
    extra_k = [k for k in KERNEL_LABEL_METRICS if any(k in v for v in kmetrics.values())]
    rows = []
    for s_i, s in enumerate(cells.seeds):
        for c, n in zip(cols, grid):
            row = dict(n=n, seed=s)
            for k in common_names:
                row[k] = _mean(cells.per_seed[f"common|{k}"][s_i][:, c])
            for name in names:
                r = dict(row, kernel=name)
                if n > 0:
                    kc = kcols[kgrid.index(n)]
                    for k in kmetrics[name]:
                        r[k] = _mean(cells.per_seed[f"kernel|{name}|{k}"][s_i][:, kc])
                rows.append(r)
    buf = io.StringIO()
    fields = ["kernel", "n", "seed", *METRICS, *[k for k in COMMON_METRICS if k in common_names],
              *[k for k in common_names if k not in COMMON_METRICS], *extra_k]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k, "")) for k in fields})
    rf.write_bytes("metrics.csv", buf.getvalue().encode())

    def bands(name, cs, ns):  # per grid point: mean and 95% bootstrap band (one set of draws for all columns)
        return [dict(mean=_finite_or_none(m), lo=_finite_or_none(lo), hi=_finite_or_none(hi), count=c, n=n)
                for (m, lo, hi, c), n in zip(bootstrap_means(cells[name][:, cs]), ns)]

    summary = dict(config=resolved.to_dict(), seeds_done=cells.seeds,
                   num_prompts=int(cells["common|bayes_vs_oracle_l1"].shape[0]),
                   common={k: bands(f"common|{k}", cols, grid) for k in common_names},
                   kernels={})
    half = [g for g, n in enumerate(kgrid) if n <= max(1, int(np.sqrt(kgrid[0] * kgrid[-1])))] or [0]
    for name in names:
        ks = {k: bands(f"kernel|{name}|{k}", kcols, kgrid) for k in kmetrics[name]}
        e = cells[f"kernel|{name}|kernel_vs_bayes_l1"][:, kcols].T  # [G, P]
        slope = loglog_slope([kgrid[g] for g in half], e[half]) if len(half) >= 2 else (float("nan"),) * 3
        ks["slope_kernel_vs_bayes_l1"] = dict(value=_finite_or_none(slope[0]), lo=_finite_or_none(slope[1]),
                                              hi=_finite_or_none(slope[2]), fitted_n=[kgrid[g] for g in half])
        ks["floor_kernel_vs_bayes_l1"] = dict(ks["kernel_vs_bayes_l1"][-1])
        ks["floor_kernel_vs_oracle_l1"] = dict(ks["kernel_vs_oracle_l1"][-1])
        summary["kernels"][name] = ks
    if resolved.curve:
        summary["curve"] = dict(
            n=evaluated_ns(resolved),
            common={k: _column_means(cells[f"common|{k}"]) for k in common_names},
            kernels={name: {k: _column_means(cells[f"kernel|{name}|{k}"]) for k in kmetrics[name]} for name in names})
    rf.write_json("summary.json", summary)
    K = resolved.save_predictions
    if K:
        preds = {k.removeprefix("pred|"): v for k, v in cells.items() if k.startswith("pred|")}
        preds = {k: v[:K] for k, v in preds.items()}
        rf.savez("predictions.npz", grid=np.asarray(evaluated_ns(resolved)), labels=np.asarray(resolved.labels),
                 kernel_names=np.asarray(names), **preds)
    return summary


def _finite_or_none(v):
    """A float, or None where it is not finite (a mean over no prompt): strict JSON without NaN."""
    return float(v) if v is not None and math.isfinite(v) else None


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else ""
    return v


def _column_means(x) -> list:
    """Mean over prompts (axis 0) of every column, NaNs dropped: ``[P, N] -> [N]`` (None where no prompt counts)."""
    x = np.asarray(x, float)
    ok = np.isfinite(x)
    cnt = ok.sum(0)
    return [_finite_or_none(v) for v in np.where(cnt > 0, np.where(ok, x, 0.0).sum(0) / np.maximum(cnt, 1), np.nan)]


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
    return "      —" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_table(summary: dict) -> str:
    """A plain-text table: per kernel, per n, L1 to Bayes / Oracle and agreement with bands.

    Rows against the prompt's label (accuracy) and the fraction of prompts of probability 0 under
    p_pre are printed when the summary has them; an undefined mean prints as ``—``.
    """
    cfg = summary["config"]
    grid = cfg["grid"]
    kgrid = [n for n in grid if n > 0]
    pad = [None] * (len(grid) - len(kgrid))  # kernels have no estimate at n = 0
    lines = []
    c = summary["common"]
    labels = cfg["labels"]
    lab = f"all {len(labels)} symbols" if cfg.get("prompt_law", "matched").startswith("ginc") else labels
    lines.append(f"prompts: {summary['num_prompts']}  seeds: {summary['seeds_done']}  labels: {lab}  "
                 f"prompt law: {cfg.get('prompt_law', 'matched')}  scored by: exact Bayes under p_pre "
                 f"({cfg.get('forward')})")
    lines.append("n      " + "  ".join(f"{n:>7d}" for n in grid))

    def row(title, vals, spec=".3f"):
        lines.append(f"{title:<17}" + " ".join(_fmt(v, spec) for v in vals))

    def means(rs):
        return [r["mean"] for r in rs]

    if "zero_probability" in c:
        row("P(prompt)=0 frac", means(c["zero_probability"]))
    row("Bayes-Oracle L1", means(c["bayes_vs_oracle_l1"]))
    if "posterior_mass_true_task" in c:
        row("mass on θ*", means(c["posterior_mass_true_task"]))
    if "bayes_accuracy" in c:
        row("Bayes accuracy", means(c["bayes_accuracy"]))
        row("Oracle accuracy", means(c["oracle_accuracy"]))
    for name, ks in summary["kernels"].items():
        lines.append(f"[{name}]")
        for k, title in (("kernel_vs_bayes_l1", "L1 to Bayes "), ("kernel_vs_oracle_l1", "L1 to Oracle"),
                         ("argmax_agreement", "agreement   "), ("accuracy", "accuracy    ")):
            if k in ks:
                lines.append(f"  {title} " + " ".join(_fmt(v) for v in pad + means(ks[k])))
        s = ks["slope_kernel_vs_bayes_l1"]
        f = ks["floor_kernel_vs_bayes_l1"]
        neg = ks["negative_weight_frac"][-1]["mean"] or 0.0
        lines.append(f"  slope {_fmt(s['value'], '.3f')} [{_fmt(s['lo'], '.3f')}, {_fmt(s['hi'], '.3f')}] over "
                     f"n={s['fitted_n']}; floor (n={kgrid[-1]}) {_fmt(f['mean'], '.3f')} "
                     f"[{_fmt(f['lo'], '.3f')}, {_fmt(f['hi'], '.3f')}]"
                     + (f"; negative weights {neg:.1%}" if neg > 0 else ""))
    return "\n".join(lines)
