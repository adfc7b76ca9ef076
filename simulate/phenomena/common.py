"""The phenomena's contract and the code they share: resolve, run per seed, summarise, figure.

A phenomenon is a :class:`Phenomenon` (one module each: ``retrieval``, ``labels``, ``ood``). It
declares its defaults and options and implements four steps; everything else is written once here:

1. :meth:`Phenomenon.resolve` checks the kind's own options (after the common prompt/kernel
   settings have been resolved by :func:`simulate.sweep.resolve`) and returns the entries it adds
   to the resolved config. Anything that can fail is checked here, before a file is written.
2. :meth:`Phenomenon.run_seed` samples one seed's prompts and evaluates them
   (:meth:`Context.evaluate`, i.e. :func:`simulate.evaluator.evaluate_prompts`): per condition
   and estimator, per-prompt metrics ``[P, G]``, plus per-prompt side arrays ``[P]``.
3. :meth:`Phenomenon.summarise` adds the kind's own entries to the summary from the pooled cells.
4. :meth:`Phenomenon.table` and :meth:`Phenomenon.plot` render the summary.

Run folder ``runs/<name>/`` (command ``phenomena``, written through :mod:`icl_kernel.runfolder`)::

    config.json          the resolved configuration (kind, prompts, kernels, the kind's options)
    cells/seed_S.npz     seed S: ``metric|COND|ESTIMATOR|METRIC`` ``[P, G]`` and ``side|NAME`` ``[P]``
    per_prompt.npz       the same names, pooled over seeds along axis 0 (``[P_total, G]``, ``[P_total]``)
    metrics.csv          per condition, estimator, metric, n, seed: the mean over prompts (NaN dropped)
    summary.json         per condition, estimator, metric, n: mean and 95% bootstrap band over
                         prompts; ``extras`` (kernel reports, the kind's measures); strict JSON

The prompt axis is first everywhere (``G`` = the n grid). A rerun with the same config resumes:
finished cells (present and matching their checksum) are kept, a missing or corrupted one is
recomputed. Side names used by the kinds: ``full_pool|EST|METRIC`` (retrieval: every estimator
on the whole pool) and ``task|COND`` (ood: the test task of each prompt).
"""
from __future__ import annotations

import abc
import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, RunFolderError
from simulate.evaluator import Evaluation, PreparedKernels, evaluate_prompts, make_evaluator, prepare_kernels
from simulate.metrics import argmax_agree, bootstrap_mean, l1
from simulate.plotting import save_figure
from simulate.sampling import Prompts
from simulate.sweep import SweepConfig, SweepIdentity, resolve
from theory import kernels as tk
from theory.hmm import HMM

COMMAND = "phenomena"
# The small exact setting: 4 tasks × 4 states, 8 tokens (7 inputs). With l = 3 there are 7³ = 343 inputs,
# so every Σ is exact by enumeration.
DEFAULT_PARAMS = dict(num_tasks=4, num_states=16, num_tokens=8)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_PROMPTS = 200
DEFAULT_CHUNK = 256


class PhenomenaError(UserError):
    """A phenomenon configuration that cannot run (one-line message naming the value)."""


@dataclass
class PhenomenonConfig:
    """A phenomenon run: the common prompt/kernel settings plus the kind's own options.

    ``options`` holds only keys of the kind's :attr:`Phenomenon.options` (others are refused);
    missing ones take the kind's defaults.
    """

    kind: str
    common: SweepConfig = field(default_factory=SweepConfig)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PhenomenonIdentity:
    """A resolved phenomenon run: every value that determines its numbers (the run folder's identity).

    :meth:`to_dict` is the run folder's ``config.json`` (and the summary's ``config``): the sweep's
    entries (less those in :data:`UNRECORDED`), then ``kind``, then the kind's entries.

    sweep:   SweepIdentity, the common prompt/kernel settings (:func:`simulate.sweep.resolve`); its
             ``save_predictions``, ``label_mode`` and ``task`` are not recorded (a phenomenon keeps no
             prediction vectors, samples its labels and draws tasks from the prior)
    kind:    str, the phenomenon's name (:attr:`Phenomenon.kind`)
    options: dict, the kind's own resolved entries (:meth:`Phenomenon.resolve`), in order, e.g.
             ood ``lambdas``: list[float]; labels ``mapping``: str, ``mapped_labels``: list[int];
             retrieval ``pool``: int
    """

    UNRECORDED = ("save_predictions", "label_mode", "task")

    sweep: SweepIdentity
    kind: str
    options: dict

    def to_dict(self) -> dict:
        out = self.sweep.to_dict()
        out["kind"] = self.kind
        for k in self.UNRECORDED:
            out.pop(k, None)
        out.update(self.options)
        return out


class SeedResult(NamedTuple):
    """One seed's per-prompt numbers.

    Attributes:
        metrics: ``{condition: {estimator: {metric: [P, G]}}}``.
        side: ``{name: [P]}`` per-prompt arrays beside the n grid (names in the module docstring).
    """

    metrics: dict
    side: dict


class Pooled(NamedTuple):
    """Per-prompt arrays of all seeds, concatenated along the prompt axis (seed order).

    Attributes:
        metrics: ``{(condition, estimator, metric): [P_total, G]}``.
        side: ``{name: [P_total]}``.
        per_seed: ``{(condition, estimator, metric): [[P, G] per seed]}`` (for metrics.csv).
        seeds: the seeds, in pooling order.
    """

    metrics: dict
    side: dict
    per_seed: dict
    seeds: list


@dataclass
class Context:
    """What :meth:`Phenomenon.run_seed` needs: the resolved config, the HMM and the evaluators.

    ``evaluators`` maps each grid of :meth:`Phenomenon.grids` (as a tuple) to a jitted evaluator.
    """

    resolved: PhenomenonIdentity
    hmm: HMM
    evaluators: dict
    chunk: int = DEFAULT_CHUNK
    bar: object = None

    @property
    def grid(self) -> tuple:
        return tuple(self.resolved.sweep.grid)

    @property
    def max_n(self) -> int:
        return max(self.resolved.sweep.grid)

    @property
    def names(self) -> list:
        return list(self.resolved.sweep.kernels)

    def evaluate(self, pr: Prompts, grid=None, progress: bool = True) -> Evaluation:
        """Bayes, Oracle and every kernel on ``pr`` at ``grid`` (default: the run's grid), numpy."""
        fn = self.evaluators[self.grid if grid is None else tuple(grid)]
        return evaluate_prompts(fn, pr.demos_x, pr.demos_y, pr.x_test, pr.task, self.chunk,
                                self.bar if progress else None)


class Phenomenon(abc.ABC):
    """The contract of one phenomenon (see the module docstring).

    Class attributes: ``kind`` (its CLI name), ``help`` (one line), ``grid``, ``length`` and
    ``kernels`` (its defaults), ``options`` (its own options and their defaults).
    """

    kind: str
    help: str
    grid: tuple
    length: int
    kernels: tuple
    options: dict = {}

    @abc.abstractmethod
    def resolve(self, hmm: HMM, resolved: SweepIdentity, options: dict) -> dict:
        """Validate the kind's options (all keys present); return the entries it adds to the config."""

    @abc.abstractmethod
    def conditions(self, resolved: PhenomenonIdentity) -> list[str]:
        """The conditions evaluated per seed, in order (each advances the progress bar by P prompts)."""

    def evaluation_labels(self, hmm: HMM, resolved: PhenomenonIdentity) -> list[int]:
        """The tokens over which the evaluator renormalises Bayes, the Oracle and the kernels."""
        return list(resolved.sweep.labels)

    def grids(self, resolved: PhenomenonIdentity) -> list[tuple]:
        """The n grids evaluated (the first is the run's grid)."""
        return [tuple(resolved.sweep.grid)]

    def extras(self, hmm: HMM, resolved: PhenomenonIdentity) -> dict:
        """Run-level measures computed before any prompt (added to ``summary['extras']``)."""
        return {}

    @abc.abstractmethod
    def run_seed(self, ctx: Context, seed: int) -> SeedResult:
        """Sample one seed's prompts and evaluate them."""

    def summarise(self, summary: dict, pooled: Pooled) -> None:
        """Add the kind's own entries to ``summary`` (in place) from the pooled cells."""

    @abc.abstractmethod
    def table(self, summary: dict) -> str:
        """The plain-text table of a summary."""

    @abc.abstractmethod
    def plot(self, summary: dict, axes) -> None:
        """Draw the kind's three panels on ``axes``."""


# ------------------------------------------------------------------ metrics shared by the kinds


def compare(pred, ref, name: str) -> dict:
    """Per-prompt L1 and argmax agreement ``[P, G]`` of ``pred [P, G, Y]`` with ``ref`` (``[P, G, Y]`` or ``[P, Y]``)."""
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    ref = np.broadcast_to(ref[:, None] if ref.ndim == pred.ndim - 1 else ref, pred.shape)
    return {f"l1_{name}": l1(pred, ref), f"agree_{name}": argmax_agree(pred, ref)}


def renorm(p, idx) -> np.ndarray:
    """p[..., idx] renormalised over idx."""
    q = np.asarray(p)[..., idx]
    return q / q.sum(-1, keepdims=True)


def estimator_metrics(bayes, oracle, task_mass, yhats, names, oracle_ref=None) -> dict:
    """Metrics per estimator ``{est: {metric: [P, G]}}``: Bayes vs Oracle (+ posterior mass on θ*),
    each kernel vs Oracle and vs Bayes. ``bayes``, ``yhats[k]``: ``[P, G, Y]``; ``oracle``: ``[P, Y]``."""
    oracle_ref = oracle if oracle_ref is None else oracle_ref
    out = {"bayes": dict(compare(bayes, oracle_ref, "oracle"), task_mass=np.asarray(task_mass))}
    for name, yh in zip(names, yhats):
        out[name] = dict(compare(yh, oracle_ref, "oracle"), **compare(yh, bayes, "bayes"))
    return out


def evaluation_metrics(ev: Evaluation, names) -> dict:
    """:func:`estimator_metrics` of an :class:`Evaluation` as it is."""
    return estimator_metrics(ev.bayes, ev.oracle, ev.task_mass, [k.yhat for k in ev.kernels], names)


def band(x, **kw) -> dict:
    """Mean and 95% bootstrap band over prompts (NaN dropped), with ``kw`` added."""
    m, lo, hi, c = bootstrap_mean(x)
    return dict(kw, mean=m, lo=lo, hi=hi, count=c)


# ------------------------------------------------------------------ resolve and run


def resolve_phenomenon(ph: Phenomenon, cfg: PhenomenonConfig) -> tuple[PhenomenonIdentity, HMM]:
    """Validate everything (before any file is written) and return the run's identity and the HMM."""
    unknown = sorted(set(cfg.options) - set(ph.options))
    if unknown:
        raise PhenomenaError(f"options {unknown} do not apply to phenomenon {ph.kind!r}; "
                             f"expected some of {sorted(ph.options)}")
    sweep, hmm = resolve(cfg.common)
    return PhenomenonIdentity(sweep, ph.kind, dict(ph.resolve(hmm, sweep, {**ph.options, **cfg.options}))), hmm


def _cell(seed: int) -> str:
    return f"cells/seed_{seed}.npz"


def cell_arrays(res: SeedResult) -> dict:
    """A seed's result as npz arrays named ``metric|COND|EST|METRIC`` and ``side|NAME``."""
    out = {}
    for cond, ests in res.metrics.items():
        for est, mets in ests.items():
            for met, arr in mets.items():
                out[f"metric|{cond}|{est}|{met}"] = np.asarray(arr)
    out.update({f"side|{k}": np.asarray(v) for k, v in res.side.items()})
    return out


def _split_cell(rf: RunFolder, rel: str, arrays: dict) -> SeedResult:
    metrics, side = {}, {}
    for key, arr in arrays.items():
        kind, _, rest = key.partition("|")
        parts = rest.split("|")
        if kind == "metric" and len(parts) == 3:
            metrics.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = arr
        elif kind == "side" and rest:
            side[rest] = arr
        else:
            raise RunFolderError(f"{rf.path / rel} has an unexpected array {key!r}; delete it and rerun")
    return SeedResult(metrics, side)


def pool_seeds(results: list[tuple[int, SeedResult]]) -> Pooled:
    """Concatenate the seeds' arrays along the prompt axis, in seed order."""
    per_seed: dict = {}
    side: dict = {}
    for _, res in results:
        for cond, ests in res.metrics.items():
            for est, mets in ests.items():
                for met, arr in mets.items():
                    per_seed.setdefault((cond, est, met), []).append(np.asarray(arr))
        for k, v in res.side.items():
            side.setdefault(k, []).append(np.asarray(v))
    return Pooled({k: np.concatenate(v, axis=0) for k, v in per_seed.items()},
                  {k: np.concatenate(v, axis=0) for k, v in side.items()}, per_seed, [s for s, _ in results])


def _check_figure_target(figure) -> None:
    path = Path(figure)
    if path.exists() and not path.is_file():
        raise PhenomenaError(f"figure {path} exists and is not a file; pick another --figures-dir or --name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write the figure {path}: {parent} is not a writable folder")


def run_phenomenon(ph: Phenomenon, cfg: PhenomenonConfig, out_dir, *, overwrite: bool = False,
                   quiet: bool = False, figure=None, chunk: int = DEFAULT_CHUNK, log=print) -> dict:
    """Run (or resume) one phenomenon into ``out_dir``; write the figure (if given); return the summary.

    Everything (config, options, kernels, the kind's run-level measures, the figure's folder) is
    validated before the run folder is created or changed.
    """
    t0 = time.perf_counter()
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise PhenomenaError(f"chunk {chunk}, expected an integer >= 1 prompts per batch")
    resolved, hmm = resolve_phenomenon(ph, cfg)
    prepared: PreparedKernels = prepare_kernels(hmm, [tk.parse_kernel(k) for k in resolved.sweep.kernels],
                                                resolved.sweep.length)
    extras = dict(kernels=prepared.infos, **ph.extras(hmm, resolved))
    if figure is not None:
        _check_figure_target(figure)
    with RunFolder.create(Path(out_dir), command=COMMAND, config=resolved.to_dict(), overwrite=overwrite, log=log) as rf:
        todo = [s for s in resolved.sweep.seeds if not rf.is_done(_cell(s))]
        for s in todo:
            if rf.is_corrupted(_cell(s)):
                log(f"{rf.path / _cell(s)} is corrupted (checksum mismatch); recomputing it")
        if todo:
            labels = ph.evaluation_labels(hmm, resolved)
            evaluators = {g: make_evaluator(hmm, prepared, labels, g, resolved.sweep.dtype) for g in ph.grids(resolved)}
            bar = tqdm(total=len(todo) * len(ph.conditions(resolved)) * resolved.sweep.prompts_per_seed,
                       unit="prompt", disable=quiet, delay=2.0, desc=f"phenomena {ph.kind}", dynamic_ncols=True)
            ctx = Context(resolved, hmm, evaluators, int(chunk), bar)
            for s in todo:
                rf.savez(_cell(s), **cell_arrays(ph.run_seed(ctx, s)))
            bar.close()
        results = [(s, _split_cell(rf, _cell(s), rf.load_npz(_cell(s)))) for s in resolved.sweep.seeds]
        summary = summarise(rf, ph, resolved, pool_seeds(results), extras)
        summary["wall_seconds"] = time.perf_counter() - t0
        rf.write_json("summary.json", summary)
    if figure is not None:
        summary["figure"] = str(plot_phenomenon(ph, summary, figure))
    return summary


def summarise(rf: RunFolder, ph: Phenomenon, resolved: PhenomenonIdentity, pooled: Pooled, extras: dict) -> dict:
    """Write metrics.csv (per seed) and per_prompt.npz; return the summary (bands over all prompts)."""
    grid = resolved.sweep.grid
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["condition", "estimator", "metric", "n", "seed", "mean"])
    for i, seed in enumerate(pooled.seeds):
        for (cond, est, met), arrs in pooled.per_seed.items():
            for g, n in enumerate(grid):
                w.writerow([cond, est, met, n, seed, f"{_nanmean(arrs[i][:, g]):.6g}"])
    rf.write_bytes("metrics.csv", buf.getvalue().encode())
    rf.savez("per_prompt.npz", **{"metric|" + "|".join(k): v for k, v in pooled.metrics.items()},
             **{f"side|{k}": v for k, v in pooled.side.items()})
    results: dict = {}
    for (cond, est, met), arr in pooled.metrics.items():
        results.setdefault(cond, {}).setdefault(est, {})[met] = [band(arr[:, g], n=n) for g, n in enumerate(grid)]
    summary = dict(config=resolved.to_dict(), num_prompts=int(next(iter(pooled.metrics.values())).shape[0]),
                   results=results, extras=extras)
    ph.summarise(summary, pooled)
    return summary


def _nanmean(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


# ------------------------------------------------------------------ tables and figures shared by the kinds


def fmt_band(r) -> str:
    return f"{r['mean']:.3f} [{r['lo']:.3f},{r['hi']:.3f}]"


def rows_by_n(summary: dict, rows, label_w: int = 40) -> list[str]:
    """Lines of a table with one column per n: ``rows`` are (label, [band per n])."""
    grid = summary["config"]["grid"]
    lines = [f"{'':{label_w}s}" + "".join(f"{'n=' + str(n):>9s}" for n in grid)]
    for label, series in rows:
        lines.append(f"{label:{label_w}s}" + "".join(f"{_num(r['mean']):>9s}" for r in series))
    return lines


def _num(v) -> str:
    return "nan" if v is None else f"{v:.3f}"


def header(summary: dict) -> str:
    c = summary["config"]
    pp = c["preset_params"]
    hmm = (f"{pp.get('num_tasks')} tasks, {pp.get('num_states')} states, {pp.get('num_tokens')} tokens"
           if c["preset"] == "han" else c["preset"])
    return (f"{c['kind']}: preset {c['preset']} ({hmm}), l={c['length']}, labels {c['labels']}, "
            f"{summary['num_prompts']} prompts (seeds {c['seeds']})")


def draw_band(ax, x, rows, **kw):
    """A mean line with its 95% band (``rows``: summary bands)."""
    m = np.array([np.nan if r["mean"] is None else r["mean"] for r in rows], float)
    lo = np.array([np.nan if r["lo"] is None else r["lo"] for r in rows], float)
    hi = np.array([np.nan if r["hi"] is None else r["hi"] for r in rows], float)
    line, = ax.plot(x, m, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    return line


def log2_n_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of demonstrations n")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def label_n_axes(axes, labels) -> None:
    """Three panels over n: (y label, title) each; the middle one is a fraction in [0, 1]."""
    for ax, (ylabel, title) in zip(axes, labels):
        log2_n_axis(ax, ylabel, title)
    axes[1].set_ylim(0, 1.02)


def color_cycle() -> list:
    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def viridis(k: int) -> list:
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0, 0.9, max(k, 1))]


def plot_phenomenon(ph: Phenomenon, summary: dict, out_path) -> Path:
    """The kind's figure (three panels, PNG, written atomically); 95% bootstrap bands over prompts."""
    fig = Figure(figsize=(17, 5.2))  # no pyplot: no backend, no global figure registry
    axes = fig.subplots(1, 3)
    ph.plot(summary, axes)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(header(summary) + "; bands: 95% bootstrap over prompts", fontsize=9)
    return save_figure(fig, out_path)
